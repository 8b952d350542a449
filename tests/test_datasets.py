"""Outcome tables: reading every format, rejecting bad files precisely, and the real data."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from switchman import _tokens
from switchman._exceptions import SwitchmanError
from switchman._tokens import count_tokens
from switchman.evaluate import (
    DatasetError,
    OutcomeTable,
    concat_tables,
    load_outcomes,
    oracle_point,
    single_model_points,
)

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
needs_data = pytest.mark.skipif(
    not DATA.is_dir(), reason=f"real outcome data not found at {DATA} (the repository's sibling ../shared/data)"
)

PROMPTS = pd.DataFrame(
    {
        "prompt_id": ["p1", "p2", "p3"],
        "prompt": ["What is 2+2?", "Name a colour, café-style.", "Write a haiku."],
        "task": ["math", "chat", "chat"],
        "split": ["train", "test", "test"],
        "extra": [1, 2, 3],  # ignored
    }
)
# (p3, b) is missing on purpose.
OUTCOMES = pd.DataFrame(
    {
        "prompt_id": ["p1", "p1", "p2", "p2", "p3"],
        "model": ["a", "b", "a", "b", "a"],
        "quality": [1.0, 0.0, 0.5, 1.0, 0.25],
        "input_tokens": [10, 10, 20, 20, 30],
        "output_tokens": [5, 6, 7, 8, 9],
        "cost_usd": [0.001, 0.002, 0.003, 0.004, 0.005],
        "note": ["", "x", "", "", ""],  # ignored
    }
)
FORMATS = ["csv", "csv.gz", "jsonl", "jsonl.gz", "parquet"]


def write_table(frame: pd.DataFrame, path: Path) -> None:
    if path.name.endswith((".csv", ".csv.gz")):
        frame.to_csv(path, index=False)
    elif path.name.endswith((".jsonl", ".jsonl.gz")):
        frame.to_json(path, orient="records", lines=True, force_ascii=False)
    else:
        frame.to_parquet(path, index=False)


def write_dataset(
    directory: Path, fmt: str, prompts: pd.DataFrame = PROMPTS, outcomes: pd.DataFrame = OUTCOMES
) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    write_table(prompts, directory / f"prompts.{fmt}")
    write_table(outcomes, directory / f"outcomes.{fmt}")
    return directory


def write_csvs(directory: Path, prompts: str, outcomes: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "prompts.csv").write_text(prompts, encoding="utf-8")
    (directory / "outcomes.csv").write_text(outcomes, encoding="utf-8")
    return directory


PROMPTS_CSV = "prompt_id,prompt,task,split\np1,hello,math,train\np2,hi there,chat,test\n"
OUTCOMES_HEADER = "prompt_id,model,quality,input_tokens,output_tokens,cost_usd\n"


def small_table(ids: tuple[str, ...], models: tuple[str, ...], source: str, offset: float = 0.0) -> OutcomeTable:
    n, m = len(ids), len(models)
    values = offset + np.arange(n * m, dtype=float).reshape(n, m) / 100
    return OutcomeTable(
        prompt_ids=ids,
        prompts=tuple(f"prompt {i}" for i in ids),
        tasks=("math",) * n,
        splits=("test",) * n,
        models=models,
        quality=values,
        input_tokens=values * 100,
        output_tokens=values * 10,
        cost_usd=values / 1000,
        source=source,
    )


# --- good files ------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_loads_the_same_table(tmp_path: Path, fmt: str) -> None:
    table = load_outcomes(write_dataset(tmp_path / fmt, fmt))
    assert table.prompt_ids == ("p1", "p2", "p3")
    assert table.prompts[1] == "Name a colour, café-style."
    assert table.tasks == ("math", "chat", "chat")
    assert table.splits == ("train", "test", "test")
    assert table.models == ("a", "b")
    np.testing.assert_array_equal(table.quality, [[1.0, 0.0], [0.5, 1.0], [0.25, np.nan]])
    np.testing.assert_array_equal(table.input_tokens, [[10, 10], [20, 20], [30, np.nan]])
    np.testing.assert_array_equal(table.output_tokens, [[5, 6], [7, 8], [9, np.nan]])
    np.testing.assert_allclose(table.cost_usd, [[0.001, 0.002], [0.003, 0.004], [0.005, np.nan]])
    assert table.source == str(tmp_path / fmt)
    assert len(table) == 3


def test_optional_columns_may_be_absent(tmp_path: Path) -> None:
    table = load_outcomes(write_dataset(tmp_path, "csv", prompts=PROMPTS[["prompt_id", "prompt"]]))
    assert table.tasks == (None, None, None)
    assert table.splits == (None, None, None)


def test_bom_and_numeric_ids_are_read_as_text(tmp_path: Path) -> None:
    (tmp_path / "prompts.csv").write_bytes("\ufeffprompt_id,prompt\n007,x\n".encode())
    (tmp_path / "outcomes.csv").write_text(OUTCOMES_HEADER + "007,m,1,1,1,0.1\n", encoding="utf-8")
    assert load_outcomes(tmp_path).prompt_ids == ("007",)


def test_missing_cost_is_computed_from_prices(tmp_path: Path) -> None:
    prices = {"a": (1.0, 2.0), "b": (10.0, 30.0)}
    write_dataset(tmp_path, "csv", outcomes=OUTCOMES.drop(columns="cost_usd"))
    table = load_outcomes(tmp_path, price_of=prices.get)
    # (p1, a): (10 * 1 + 5 * 2) / 1e6 = 2e-5; (p2, b): (20 * 10 + 8 * 30) / 1e6 = 4.4e-4
    assert table.cost_usd[0, 0] == pytest.approx(2e-5)
    assert table.cost_usd[1, 1] == pytest.approx(4.4e-4)


def test_only_empty_cost_cells_are_computed(tmp_path: Path) -> None:
    write_csvs(tmp_path, PROMPTS_CSV, OUTCOMES_HEADER + "p1,a,1,10,5,0.5\np2,a,1,20,5,\n")
    table = load_outcomes(tmp_path, price_of={"a": (1.0, 1.0)}.get)
    np.testing.assert_allclose(table.cost_usd[:, 0], [0.5, 25 / 1e6])


def test_missing_price_names_the_model(tmp_path: Path) -> None:
    write_dataset(tmp_path, "csv", outcomes=OUTCOMES.drop(columns="cost_usd"))
    with pytest.raises(DatasetError, match=r"outcomes\.csv.*'b'") as info:
        load_outcomes(tmp_path, price_of={"a": (1.0, 2.0)}.get)
    assert "'a'" not in str(info.value)
    with pytest.raises(DatasetError, match="price_of"):
        load_outcomes(tmp_path)


# --- bad files -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rows", "row", "column", "detail"),
    [
        ("p1,a,1,10,5,0.1\np1,b,0,10,5,0.1\np2,a,1.5,10,5,0.1\n", 3, "quality", "outside [0, 1]"),
        ("p1,a,1,10,5,0.1\np2,a,high,10,5,0.1\n", 2, "quality", "not a number"),
        ("p1,a,1,10,5,0.1\np2,a,-0.1,10,5,0.1\n", 2, "quality", "outside [0, 1]"),
        ("p1,a,,10,5,0.1\n", 1, "quality", "empty"),
        ("p1,a,1,10,5,0.1\np2,a,1,10,5,0.1\np1,a,0,10,5,0.1\n", 3, "model", "first in row 1"),
        ("p1,a,1,10,5,0.1\np9,a,1,10,5,0.1\n", 2, "prompt_id", "'p9' is not in prompts.csv"),
        ("p1,a,1,-10,5,0.1\n", 1, "input_tokens", "outside"),
        ("p1,a,1,10,five,0.1\n", 1, "output_tokens", "not a number"),
        ("p1,a,1,10,5,cheap\n", 1, "cost_usd", "not a number"),
        ("p1,,1,10,5,0.1\n", 1, "model", "empty"),
    ],
)
def test_bad_outcome_cells_name_file_row_and_column(
    tmp_path: Path, rows: str, row: int, column: str, detail: str
) -> None:
    write_csvs(tmp_path, PROMPTS_CSV, OUTCOMES_HEADER + rows)
    with pytest.raises(DatasetError) as info:
        load_outcomes(tmp_path)
    message = str(info.value)
    assert "outcomes.csv" in message
    assert f"row {row}," in message
    assert f"column '{column}'" in message
    assert detail in message


def test_missing_column_names_file_and_column(tmp_path: Path) -> None:
    write_csvs(tmp_path, PROMPTS_CSV, "prompt_id,model,input_tokens,output_tokens\np1,a,1,1\n")
    with pytest.raises(DatasetError, match=r"outcomes\.csv, header row: missing column\(s\) 'quality'"):
        load_outcomes(tmp_path)
    write_csvs(tmp_path, "id,prompt\np1,x\n", OUTCOMES_HEADER + "p1,a,1,1,1,1\n")
    with pytest.raises(DatasetError, match=r"prompts\.csv, header row: missing column\(s\) 'prompt_id'"):
        load_outcomes(tmp_path)


def test_duplicate_prompt_id_in_prompts(tmp_path: Path) -> None:
    write_csvs(tmp_path, PROMPTS_CSV + "p1,again,math,test\n", OUTCOMES_HEADER + "p1,a,1,1,1,1\n")
    with pytest.raises(DatasetError, match=r"prompts\.csv, row 3, column 'prompt_id': duplicate prompt_id 'p1'"):
        load_outcomes(tmp_path)


def test_undecodable_csv_bytes_name_row_and_column(tmp_path: Path) -> None:
    write_csvs(tmp_path, PROMPTS_CSV, OUTCOMES_HEADER + "p1,a,1,1,1,1\n")
    (tmp_path / "prompts.csv").write_bytes(b"prompt_id,prompt,task\np1,ok,math\np2,caf\xe9 latin-1,chat\n")
    with pytest.raises(DatasetError, match=r"prompts\.csv, row 2, column 'prompt': .*not UTF-8"):
        load_outcomes(tmp_path)


def test_undecodable_gzipped_jsonl_bytes_name_row_and_column(tmp_path: Path) -> None:
    write_dataset(tmp_path, "jsonl.gz")
    lines = b'{"prompt_id": "p1", "prompt": "ok"}\n{"prompt_id": "p2", "prompt": "caf\xe9"}\n'
    (tmp_path / "prompts.jsonl.gz").write_bytes(gzip.compress(lines))
    with pytest.raises(DatasetError, match=r"prompts\.jsonl\.gz, row 2, column 'prompt': .*not UTF-8"):
        load_outcomes(tmp_path)


def test_invalid_jsonl_line_is_named(tmp_path: Path) -> None:
    write_dataset(tmp_path, "jsonl")
    (tmp_path / "outcomes.jsonl").write_text('{"prompt_id": "p1"}\n{"prompt_id": \n', encoding="utf-8")
    with pytest.raises(DatasetError, match=r"outcomes\.jsonl, row 2: not valid JSON"):
        load_outcomes(tmp_path)


def test_bad_quality_in_jsonl_and_parquet(tmp_path: Path) -> None:
    bad = OUTCOMES.assign(quality=[1.0, 0.0, 2.0, 1.0, 0.25])
    for fmt in ("jsonl", "parquet"):
        write_dataset(tmp_path / fmt, fmt, outcomes=bad)
        with pytest.raises(DatasetError, match=rf"outcomes\.{fmt}, row 3, column 'quality': '2.0' is outside"):
            load_outcomes(tmp_path / fmt)


def test_corrupt_parquet_is_named(tmp_path: Path) -> None:
    write_dataset(tmp_path, "parquet")
    (tmp_path / "outcomes.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(DatasetError, match=r"outcomes\.parquet: cannot read parquet"):
        load_outcomes(tmp_path)


def test_empty_tables(tmp_path: Path) -> None:
    write_csvs(tmp_path, PROMPTS_CSV, OUTCOMES_HEADER)
    with pytest.raises(DatasetError, match=r"outcomes\.csv: no data rows"):
        load_outcomes(tmp_path)
    write_csvs(tmp_path, "", OUTCOMES_HEADER + "p1,a,1,1,1,1\n")
    with pytest.raises(DatasetError, match=r"prompts\.csv: file is empty"):
        load_outcomes(tmp_path)


def test_missing_or_incomplete_directories(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no such directory"):
        load_outcomes(tmp_path / "nowhere")
    (tmp_path / "file.txt").write_text("x", encoding="utf-8")
    with pytest.raises(DatasetError, match="not a directory"):
        load_outcomes(tmp_path / "file.txt")
    with pytest.raises(DatasetError, match="no outcome data found"):
        load_outcomes(tmp_path)
    (tmp_path / "prompts.csv").write_text(PROMPTS_CSV, encoding="utf-8")
    with pytest.raises(DatasetError, match="found prompts.csv but no outcomes table"):
        load_outcomes(tmp_path)


def test_two_formats_of_one_table_are_ambiguous(tmp_path: Path) -> None:
    write_dataset(tmp_path, "csv")
    write_table(PROMPTS, tmp_path / "prompts.jsonl")
    with pytest.raises(DatasetError, match="prompts.csv, prompts.jsonl"):
        load_outcomes(tmp_path)


def test_dataset_error_is_a_switchman_error() -> None:
    assert issubclass(DatasetError, SwitchmanError)


# --- table operations ----------------------------------------------------------------------


@pytest.fixture()
def table(tmp_path: Path) -> OutcomeTable:
    return load_outcomes(write_dataset(tmp_path, "csv"))


def test_subset_by_mask_and_indices(table: OutcomeTable) -> None:
    assert table.subset([True, False, True]).prompt_ids == ("p1", "p3")
    picked = table.subset([2, 0])
    assert picked.prompt_ids == ("p3", "p1")
    np.testing.assert_array_equal(picked.quality[:, 0], [0.25, 1.0])
    assert len(table.subset([])) == 0
    with pytest.raises(ValueError):
        table.subset([True, False])


def test_where_split_and_task(table: OutcomeTable) -> None:
    assert table.where_split("test").prompt_ids == ("p2", "p3")
    assert table.where_task("math").prompt_ids == ("p1",)
    with pytest.raises(DatasetError, match=r"no prompt has task 'code'; tasks present: 'chat', 'math'"):
        table.where_task("code")
    with pytest.raises(DatasetError, match=r"splits present: 'test', 'train'"):
        table.where_split("val")


def test_select_and_rename_models(table: OutcomeTable) -> None:
    swapped = table.select_models(["b", "a"])
    assert swapped.models == ("b", "a")
    np.testing.assert_array_equal(swapped.quality[0], [0.0, 1.0])
    with pytest.raises(DatasetError, match=r"unknown model\(s\) 'zz'; models present: 'a', 'b'"):
        table.select_models(["a", "zz"])
    renamed = table.rename_models({"a": "gpt-x", "not-here": "ignored"})
    assert renamed.models == ("gpt-x", "b")
    np.testing.assert_array_equal(renamed.quality, table.quality)
    with pytest.raises(DatasetError, match="duplicate model"):
        table.rename_models({"a": "b"})


def test_complete_and_prompt_input_tokens(table: OutcomeTable) -> None:
    assert table.complete().prompt_ids == ("p1", "p2")
    np.testing.assert_array_equal(table.prompt_input_tokens(), [10, 20, 30])


def test_tables_are_immutable(table: OutcomeTable) -> None:
    with pytest.raises(ValueError):
        table.quality[0, 0] = 0.0
    with pytest.raises(AttributeError):
        table.models = ("x",)  # type: ignore[misc]


def test_table_checks_its_shapes() -> None:
    with pytest.raises(ValueError, match="shape"):
        OutcomeTable(
            ("p",), ("x",), (None,), (None,), ("a", "b"),
            np.zeros((1, 1)), np.zeros((1, 2)), np.zeros((1, 2)), np.zeros((1, 2)),
        )


def test_concat_unions_models_and_rejects_repeated_prompts() -> None:
    first = small_table(("x1", "x2"), ("a", "b"), "first")
    second = small_table(("y1",), ("b", "c"), "second", offset=0.5)
    both = concat_tables([first, second])
    assert both.prompt_ids == ("x1", "x2", "y1")
    assert both.models == ("a", "b", "c")
    np.testing.assert_array_equal(both.quality[:2, :2], first.quality)
    np.testing.assert_array_equal(both.quality[2], [np.nan, 0.5, 0.51])
    assert np.isnan(both.cost_usd[:2, 2]).all()
    assert both.source == "first + second"
    with pytest.raises(DatasetError, match=r"'x2'.*'first'.*'clash'"):
        concat_tables([first, small_table(("x2",), ("a",), "clash")])


# --- RouterBench native files ----------------------------------------------------------------

NATIVE_HEADER = (
    "sample_id,prompt,eval_name,m1,m2,m3,"
    "m1|model_response,m2|model_response,m3|model_response,m1|total_cost,m2|total_cost,m3|total_cost\n"
)


def write_native(directory: Path, train_rows: str, test_rows: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "quiz_train.csv").write_text(NATIVE_HEADER + train_rows, encoding="utf-8")
    with gzip.open(directory / "quiz_test.csv.gz", "wt", encoding="utf-8") as handle:
        handle.write(NATIVE_HEADER + test_rows)
    return directory


def test_native_reader_merges_duplicate_sample_ids(tmp_path: Path) -> None:
    # s1 has m1, m2 in the train file and m3 (with the prompt doubled) in the test file.
    train = "s1,\"['Q one']\",quiz,1,0,,\"['A']\",\"['B']\",\"['x']\",0.1,0.2,0.3\n"
    test = (
        "s1,\"['Q one', 'Q one']\",quiz,,,1,\"['x']\",\"['x']\",\"['C c']\",0.9,0.9,0.6\n"
        "s2,\"['Q two']\",quiz,0,1,1,\"['no']\",\"['yes']\",\"['yes']\",0.01,0.02,0.03\n"
    )
    table = load_outcomes(write_native(tmp_path, train, test))
    # Files are read in name order (quiz_test.csv.gz first); prompts in order of first appearance.
    assert table.prompt_ids == ("s1", "s2")
    assert table.models == ("m1", "m2", "m3")
    assert table.prompts == ("Q one", "Q two")  # s1's text from the row with most results
    assert table.tasks == ("quiz", "quiz")
    assert table.splits == ("train", "test")  # s1 is in a train file -> train
    np.testing.assert_array_equal(table.quality, [[1, 0, 1], [0, 1, 1]])
    # Costs come from the row holding each model's result (0.9 filler values are ignored).
    np.testing.assert_allclose(table.cost_usd, [[0.1, 0.2, 0.6], [0.01, 0.02, 0.03]])
    q = count_tokens("Q one")
    np.testing.assert_array_equal(table.input_tokens[0], [q, q, count_tokens("Q one\nQ one")])
    np.testing.assert_array_equal(table.output_tokens[0], [count_tokens("A"), count_tokens("B"), count_tokens("C c")])


def test_native_reader_rejects_two_results_for_one_model(tmp_path: Path) -> None:
    train = "s1,\"['Q']\",quiz,1,0,1,\"['A']\",\"['B']\",\"['C']\",0.1,0.2,0.3\n"
    test = "s1,\"['Q']\",quiz,,,0,\"['x']\",\"['x']\",\"['C']\",0.1,0.2,0.3\n"
    write_native(tmp_path, train, test)
    expected = r"'s1' has results for model 'm3' in more than one row .*quiz_test\.csv\.gz, row 1.*quiz_train\.csv, row 1"
    with pytest.raises(DatasetError, match=expected):
        load_outcomes(tmp_path)


def test_native_reader_names_bad_cells(tmp_path: Path) -> None:
    good = "s1,\"['Q']\",quiz,1,0,1,\"['A']\",\"['B']\",\"['C']\",0.1,0.2,0.3\n"
    write_native(tmp_path, good, "s2,Q plain,quiz,1,0,1,\"['A']\",\"['B']\",\"['C']\",0.1,0.2,0.3\n")
    expected = r"quiz_test\.csv\.gz, row 1, column 'prompt': expected the str\(\) of a list"
    with pytest.raises(DatasetError, match=expected):
        load_outcomes(tmp_path)
    bad_quality = "s3,\"['Q']\",quiz,1,0,maybe,\"['A']\",\"['B']\",\"['C']\",0.1,0.2,0.3\n"
    write_native(tmp_path, good + bad_quality, good.replace("s1", "s2"))
    with pytest.raises(DatasetError, match=r"quiz_train\.csv, row 2, column 'm3': expected a number in \[0, 1\]"):
        load_outcomes(tmp_path)


def test_native_reader_names_a_truncated_gzip_file(tmp_path: Path) -> None:
    """A .csv.gz cut short (a partial download) is a DatasetError naming the file, as for an outcome CSV."""
    from switchman.evaluate._routerbench import read_routerbench

    rows = "".join(f"s{i},\"['Q {i} {'x' * 40}']\",quiz,1,0,1,\"['A']\",\"['B']\",\"['C']\",0.1,0.2,0.3\n"
                   for i in range(2000))
    write_native(tmp_path, rows, rows)
    whole = (tmp_path / "quiz_test.csv.gz").read_bytes()
    (tmp_path / "quiz_test.csv.gz").write_bytes(whole[: len(whole) // 2])  # the header still reads
    with pytest.raises(DatasetError, match=r"quiz_test\.csv\.gz: cannot read"):
        read_routerbench([tmp_path / "quiz_test.csv.gz"])


def damage_gzip(path: Path, keep: int) -> None:
    """Rewrite the gzipped `path` with its deflate data damaged after the first `keep` bytes of text: a bit flip
    in the middle, not a cut (zlib's own error, which is neither an OSError nor an EOFError)."""
    text = gzip.decompress(path.read_bytes())
    packer = zlib.compressobj(wbits=31)  # gzip framing
    intact = packer.compress(text[:keep]) + packer.flush(zlib.Z_FULL_FLUSH)  # ends on a byte boundary
    rest = packer.compress(text[keep:]) + packer.flush()
    path.write_bytes(intact + bytes([0b110]) + rest[1:])  # the next block's type bits 11: reserved, invalid


@pytest.mark.parametrize("fmt", ["csv.gz", "jsonl.gz"])
def test_damaged_gzip_outcome_tables_name_the_file(tmp_path: Path, fmt: str) -> None:
    write_dataset(tmp_path, fmt)
    damage_gzip(tmp_path / f"outcomes.{fmt}", keep=40)
    with pytest.raises(DatasetError, match=rf"outcomes\.{fmt.replace('.', '[.]')}: cannot read"):
        load_outcomes(tmp_path)


def test_native_reader_names_a_damaged_gzip_file(tmp_path: Path) -> None:
    from switchman.evaluate._routerbench import read_routerbench

    write_native(tmp_path, "", "".join(f"s{i},\"['Q {i}']\",quiz,1,0,1,\"['A']\",\"['B']\",\"['C']\",0.1,0.2,0.3\n"
                                       for i in range(50)))
    damage_gzip(tmp_path / "quiz_test.csv.gz", keep=len(NATIVE_HEADER) + 100)
    with pytest.raises(DatasetError, match=r"quiz_test\.csv\.gz: cannot read"):
        read_routerbench([tmp_path / "quiz_test.csv.gz"])


def test_a_directory_scan_names_a_gzip_file_damaged_in_its_header(tmp_path: Path) -> None:
    """A dataset file whose header cannot be read (damaged, cut short) is a DatasetError naming it, as for an outcome
    CSV: before, the scan passed over it as "not RouterBench" and the folder was read without its rows."""
    from switchman.evaluate._routerbench import routerbench_files

    write_native(tmp_path, "", "s1,\"['Q']\",quiz,1,0,1,\"['A']\",\"['B']\",\"['C']\",0.1,0.2,0.3\n")
    damage_gzip(tmp_path / "quiz_test.csv.gz", keep=10)
    hint = r"\(fix it, or move it out of the folder\)"
    with pytest.raises(DatasetError, match=rf"quiz_test\.csv\.gz: cannot read: .*{hint}"):
        routerbench_files(tmp_path)
    with pytest.raises(DatasetError, match=r"quiz_test\.csv\.gz: cannot read"):
        load_outcomes(tmp_path)
    plain = write_native(tmp_path / "plain", "", "")
    (plain / "saved_as.csv.gz").write_text(NATIVE_HEADER, encoding="utf-8")  # plain text under a .gz name
    with pytest.raises(DatasetError, match=rf"saved_as\.csv\.gz: cannot read: Not a gzipped file.*{hint}"):
        routerbench_files(plain)


def test_a_directory_scan_passes_over_csv_files_that_are_not_routerbench(tmp_path: Path) -> None:
    """Other CSVs in the folder (other columns, no header at all, an empty .csv.gz) are not RouterBench files: passed
    over, no error."""
    from switchman.evaluate._routerbench import routerbench_files

    write_native(tmp_path, "", "s1,\"['Q']\",quiz,1,0,1,\"['A']\",\"['B']\",\"['C']\",0.1,0.2,0.3\n")
    (tmp_path / "notes.csv").write_text("what,when\nrun,monday\n", encoding="utf-8")
    (tmp_path / "empty.csv").write_text("", encoding="utf-8")
    (tmp_path / "empty.csv.gz").write_bytes(b"")  # 0 bytes: gzip reads it as no text, an empty file
    with gzip.open(tmp_path / "no_text.csv.gz", "wb"):
        pass  # a whole gzip stream of no text
    assert routerbench_files(tmp_path) == [tmp_path / "quiz_test.csv.gz", tmp_path / "quiz_train.csv"]


# --- token counts ----------------------------------------------------------------------------


def test_count_tokens_uses_cl100k() -> None:
    assert count_tokens("hello world") == 2
    assert count_tokens("") == 0
    assert count_tokens("<|endoftext|>") > 1  # special tokens are counted as plain text


def test_count_tokens_falls_back_to_bytes_over_four(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_tokens, "_encoder", lambda: None)
    assert count_tokens("abcdefghi") == 3  # ceil(9 / 4)
    assert count_tokens("é") == 1  # 2 UTF-8 bytes -> ceil(2 / 4)


# --- the real data ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def routerbench() -> OutcomeTable:
    return load_outcomes(DATA / "routerbench")


@pytest.fixture(scope="module")
def alpaca() -> OutcomeTable:
    return load_outcomes(DATA / "alpacaeval2")


# README "Test-split summary" for routerbench: model -> (mean quality, mean cost per 1k prompts).
ROUTERBENCH_TEST = {
    "mistralai/mistral-7b-chat": (0.5920, 0.0811),
    "WizardLM/WizardLM-13B-V1.2": (0.5655, 0.1226),
    "mistralai/mixtral-8x7b-chat": (0.7474, 0.2467),
    "meta/code-llama-instruct-34b-chat": (0.6142, 0.3105),
    "zero-one-ai/Yi-34B-Chat": (0.7791, 0.3298),
    "claude-instant-v1": (0.6839, 0.3647),
    "meta/llama-2-70b-chat": (0.6290, 0.3745),
    "gpt-3.5-turbo-1106": (0.7505, 0.4185),
    "claude-v1": (0.7378, 3.5397),
    "claude-v2": (0.5677, 3.7768),
    "gpt-4-1106-preview": (0.8795, 5.0032),
}
FOUR_DECIMALS = 5.0001e-5


@needs_data
def test_routerbench_shape_matches_readme(routerbench: OutcomeTable) -> None:
    assert len(routerbench) == 3164
    assert sorted(routerbench.models) == sorted(ROUTERBENCH_TEST)
    assert not np.isnan(routerbench.quality).any()
    assert set(np.unique(routerbench.quality)) == {0.0, 1.0}
    counts = pd.Series(list(zip(routerbench.tasks, routerbench.splits, strict=True))).value_counts()
    assert counts.to_dict() == {
        ("arc-challenge", "train"): 1032,
        ("winogrande", "train"): 887,
        ("arc-challenge", "test"): 438,
        ("winogrande", "test"): 380,
        ("mbpp", "train"): 299,
        ("mbpp", "test"): 128,
    }


@needs_data
def test_routerbench_test_split_matches_readme_summary(routerbench: OutcomeTable) -> None:
    test = routerbench.where_split("test").complete()
    assert len(test) == 946
    points = single_model_points(test.quality, test.cost_usd, test.models)
    for model, (quality, cost) in ROUTERBENCH_TEST.items():
        assert points[model] == pytest.approx((cost, quality), abs=FOUR_DECIMALS), model
    cost, quality = oracle_point(test.quality, test.cost_usd)
    assert (quality, cost) == pytest.approx((0.9757, 0.2110), abs=FOUR_DECIMALS)


@needs_data
def test_routerbench_native_files_agree_with_tidy_tables(routerbench: OutcomeTable) -> None:
    native = load_outcomes(DATA / "routerbench" / "native")
    assert sorted(native.prompt_ids) == sorted(routerbench.prompt_ids)
    position = {pid: i for i, pid in enumerate(native.prompt_ids)}
    aligned = native.subset([position[pid] for pid in routerbench.prompt_ids]).select_models(routerbench.models)
    np.testing.assert_array_equal(aligned.quality, routerbench.quality)
    np.testing.assert_allclose(aligned.cost_usd, routerbench.cost_usd, rtol=1e-9, atol=0)
    np.testing.assert_array_equal(aligned.input_tokens, routerbench.input_tokens)
    np.testing.assert_array_equal(aligned.output_tokens, routerbench.output_tokens)
    assert aligned.prompts == routerbench.prompts
    assert aligned.tasks == routerbench.tasks
    assert aligned.splits == routerbench.splits


@needs_data
def test_alpacaeval_shape_matches_readme(alpaca: OutcomeTable) -> None:
    assert (len(alpaca), len(alpaca.models)) == (805, 48)
    assert int((~np.isnan(alpaca.quality)).sum()) == 38_634
    missing = dict(zip(alpaca.models, np.isnan(alpaca.quality).sum(axis=0).tolist(), strict=True))
    assert {m: k for m, k in missing.items() if k} == {
        "gpt35_turbo_instruct": 1,
        "minotaur-13b": 1,
        "phi-2": 2,
        "text_davinci_001": 2,
    }
    assert len(alpaca.where_split("test")) == 242
    assert len(alpaca.where_split("train")) == 563
    assert len(alpaca.where_task("koala").where_split("test")) == 46
    assert set(alpaca.models) & set(ROUTERBENCH_TEST) == {"gpt-4-1106-preview", "gpt-3.5-turbo-1106"}


@needs_data
def test_alpacaeval_test_split_matches_readme_summary(alpaca: OutcomeTable) -> None:
    test = alpaca.where_split("test").complete()
    assert len(test) == 241
    points = single_model_points(test.quality, test.cost_usd, test.models)
    assert points["FuseChat-Gemma-2-9B-Instruct"] == pytest.approx((0.1537, 0.7059), abs=FOUR_DECIMALS)
    assert points["gpt-4-1106-preview"] == pytest.approx((13.6122, 0.5000), abs=FOUR_DECIMALS)
    assert points["phi-2"] == pytest.approx((0.0183, 0.0143), abs=FOUR_DECIMALS)
    assert points["claude"] == pytest.approx((5.8797, 0.1648), abs=FOUR_DECIMALS)
    cost, quality = oracle_point(test.quality, test.cost_usd)
    assert (quality, cost) == pytest.approx((0.8895, 2.3974), abs=FOUR_DECIMALS)


@needs_data
def test_alpacaeval_costs_follow_prices_csv(alpaca: OutcomeTable) -> None:
    prices = pd.read_csv(DATA / "alpacaeval2" / "prices.csv").set_index("model")
    table = alpaca.select_models(list(prices.index))
    expected = (
        table.input_tokens * prices["input_usd_per_mtok"].to_numpy()
        + table.output_tokens * prices["output_usd_per_mtok"].to_numpy()
    ) / 1e6
    np.testing.assert_allclose(table.cost_usd, expected, rtol=1e-9)


@needs_data
def test_both_datasets_concatenate(routerbench: OutcomeTable, alpaca: OutcomeTable) -> None:
    both = concat_tables([routerbench, alpaca])
    assert len(both) == 3164 + 805
    assert len(both.models) == 11 + 48 - 2  # gpt-4-1106-preview and gpt-3.5-turbo-1106 are shared
    # RouterBench prompts lack the 46 AlpacaEval-only models; AlpacaEval prompts lack the 9
    # RouterBench-only ones; plus the 6 rows the data README says AlpacaEval itself is missing
    # (48 × 805 − 38,634).
    assert np.isnan(both.quality).sum() == 3164 * 46 + 805 * 9 + (48 * 805 - 38_634)
