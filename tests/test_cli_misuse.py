"""The command line misused as a new user would: each mistake is one `error:` line and a non-zero exit, never a traceback."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from typer.testing import CliRunner

from switchman.cli import app


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "400"})
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result.exit_code, result.output


def test_a_directory_given_as_the_configuration_is_one_error_line(tmp_path: Path) -> None:
    code, out = _run("models", "--config", str(tmp_path))
    assert code == 2
    assert "cannot read the configuration file" in out and "Is a directory" in out


def test_init_into_a_missing_folder_or_over_a_directory_is_one_error_line(tmp_path: Path) -> None:
    code, out = _run("init", str(tmp_path / "no-such-folder" / "switchman.yaml"))
    assert code == 2 and "cannot write the configuration file" in out
    code, out = _run("init", str(tmp_path), "--force")
    assert code == 2 and "cannot write the configuration file" in out


def test_init_from_a_litellm_file_that_is_a_directory_or_binary_is_one_error_line(tmp_path: Path) -> None:
    code, out = _run("init", "--from-litellm", str(tmp_path), str(tmp_path / "out.yaml"))
    assert code == 2 and "cannot read the file" in out
    binary = tmp_path / "config.yaml"
    binary.write_bytes(b"\x00\xff\xfe model_list: []")
    code, out = _run("init", "--from-litellm", str(binary), str(tmp_path / "out.yaml"))
    assert code == 2 and "not UTF-8 text" in out
    assert not (tmp_path / "out.yaml").exists()


def _bundled_router() -> str:
    from importlib import resources

    return str(resources.files("switchman.learn").joinpath("data/router.safetensors"))


def test_an_unparseable_ledger_url_is_one_error_line(tmp_path: Path) -> None:
    code, out = _run("spend", "--ledger", "garbage")
    assert code == 1 and "cannot parse the ledger URL" in out
    code, out = _run("replay", "--router", _bundled_router(), "--ledger", "garbage")
    assert code == 2 and "cannot parse the ledger URL" in out


def test_a_ledger_that_cannot_be_read_is_one_error_line_for_replay_and_train(tmp_path: Path) -> None:
    not_a_db = tmp_path / "ledger.db"
    not_a_db.write_bytes(b"\x00\xff" * 512)
    url = f"sqlite:///{not_a_db}"
    code, out = _run("replay", "--router", _bundled_router(), "--ledger", url)
    assert code == 2 and "cannot read the ledger at" in out and "not a database" in out
    code, out = _run("train", "--from-ledger", url, "--out", str(tmp_path / "r.safetensors"))
    assert code == 2 and "cannot read the ledger at" in out and "not a database" in out


def test_since_too_far_back_is_one_error_line(tmp_path: Path) -> None:
    code, out = _run("spend", "--since", "99999999d", "--ledger", f"sqlite:///{tmp_path / 'l.db'}")
    assert code == 1 and "cannot read --since '99999999d'" in out


def test_what_the_user_typed_is_not_read_as_markup_in_a_ledger_error(tmp_path: Path) -> None:
    code, out = _run("spend", "--by", "[/red]", "--ledger", f"sqlite:///{tmp_path / 'l.db'}")
    assert code == 1 and "cannot group spend by '[/red]'" in out


def test_keys_update_with_a_bad_configuration_is_one_error_line(tmp_path: Path) -> None:
    config = tmp_path / "switchman.yaml"
    config.write_text("surprise: 1\n")
    code, out = _run("keys", "update", "key-x", "--budget", "3", "--config", str(config))
    assert code == 2 and "unknown key 'surprise'" in out


def test_a_nan_or_infinite_key_budget_is_refused_not_stored_as_no_budget(tmp_path: Path) -> None:
    ledger = f"sqlite:///{tmp_path / 'l.db'}"
    for budget in ("nan", "inf"):
        code, out = _run("keys", "create", "bob", "--budget", budget, "--ledger", ledger)
        assert code == 1 and "finite amount more than $0" in out and "sk-" not in out
    code, out = _run("keys", "create", "bob", "--budget", "5", "--ledger", ledger)
    assert code == 0
    key_id = out.split("Created key ")[1].split()[0]
    code, out = _run("keys", "update", key_id, "--budget", "nan", "--ledger", ledger)
    assert code == 1 and "finite amount more than $0" in out
    code, out = _run("keys", "list", "--ledger", ledger)
    assert "$5.00/day" in out


def test_serve_with_a_port_out_of_range_is_a_usage_error_not_a_traceback() -> None:
    for port in ("-1", "99999"):
        code, out = _run("serve", "--port", port)
        assert code == 2 and "Invalid value for '--port'" in out


def test_serve_with_a_redis_url_of_another_scheme_stops_before_starting(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWITCHMAN_REDIS_URL", "redis://127.0.0.1:1/0")  # serve exports --redis-url: undone after
    code, out = _run("serve", "--redis-url", "nope://user:hunter2@10.0.0.5", "--port", "0")
    assert code == 2 and "--redis-url: a Redis URL starts with one of redis://" in out and "'nope'" in out
    assert "hunter2" not in out
    config = tmp_path / "switchman.yaml"
    config.write_text("server: {redis_url: 'localhost:6379'}\n")
    code, out = _run("serve", "--config", str(config), "--port", "0")
    assert code == 2 and "server.redis_url: a Redis URL starts with one of" in out


def test_route_with_a_prompt_that_is_not_utf8_is_one_error_line(tmp_path: Path) -> None:
    config = tmp_path / "switchman.yaml"
    config.write_text("models: {gpt-4o-mini: {provider: p}, claude-sonnet-4-5: {provider: p}}\n"
                      "routes: {default: {candidates: [gpt-4o-mini, claude-sonnet-4-5], strategy: learned}}\n")
    prompt = b"ab\xff\xfe hello".decode("utf-8", "surrogateescape")  # what Python makes of such bytes in argv
    code, out = _run("route", prompt, "--config", str(config))
    assert code == 2 and "the prompt is not UTF-8 text (byte 0xff at character 2)" in out
    code, out = _run("route", "héllo wörld", "--config", str(config))
    assert code == 0 and "why: learned" in out


def test_a_dataset_whose_header_is_not_utf8_is_one_error_line(tmp_path: Path) -> None:
    (tmp_path / "prompts.csv").write_bytes(b"prompt_id,prompt\xff\n1,hi\n")
    (tmp_path / "outcomes.csv").write_bytes(b"prompt_id,model,quality,input_tokens,output_tokens\n1,m,0.5,1,1\n")
    code, out = _run("eval", "--data", str(tmp_path), "--strategy", "cheapest")
    assert code == 2 and "prompts.csv, header row: bytes that are not UTF-8" in out
    code, out = _run("train", "--data", str(tmp_path), "--out", str(tmp_path / "r.safetensors"))
    assert code == 2 and "prompts.csv, header row: bytes that are not UTF-8" in out


def _tiny_data(folder: Path) -> Path:
    folder.mkdir()
    (folder / "prompts.csv").write_text("prompt_id,prompt,split\n" + "".join(
        f"{i},question {i} about {'code' if i % 2 else 'poems'},{'train' if i < 30 else 'test'}\n" for i in range(40)))
    (folder / "outcomes.csv").write_text("prompt_id,model,quality,input_tokens,output_tokens\n" + "".join(
        f"{i},{m},{(i * 7 + len(m)) % 10 / 10},10,20\n" for i in range(40) for m in ("gpt-4o-mini", "claude-sonnet-4-5")))
    return folder


def test_an_output_path_that_cannot_be_a_file_is_refused_before_the_work(tmp_path: Path) -> None:
    data = _tiny_data(tmp_path / "data")
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    code, out = _run("train", "--data", str(data), "--out", str(tmp_path))
    assert code == 2 and f"--out {tmp_path}: is a directory" in out and "calibration" not in out
    code, out = _run("eval", "--data", str(data), "--strategy", "cheapest", "--json", str(tmp_path))
    assert code == 2 and f"--json {tmp_path}: is a directory" in out
    code, out = _run("eval", "--data", str(data), "--strategy", "cheapest", "--decisions", str(a_file / "d.csv"))
    assert code == 2 and f"{a_file} is not a folder" in out
    code, out = _run("replay", "--router", _bundled_router(), "--data", str(data), "--json", str(tmp_path))
    assert code == 2 and f"--json {tmp_path}: is a directory" in out


def test_fewer_than_two_folds_is_a_usage_error() -> None:
    code, out = _run("eval", "--data", "x", "--strategy", "cheapest", "--cv", "1")
    assert code == 2 and "Invalid value for '--cv'" in out
    code, out = _run("train", "--data", "x", "--out", "r.safetensors", "--folds", "0")
    assert code == 2 and "Invalid value for '--folds'" in out


def test_eval_with_a_reference_model_not_in_the_data_is_one_error_line(tmp_path: Path) -> None:
    data = _tiny_data(tmp_path / "data")
    code, out = _run("eval", "--data", str(data), "--strategy", "cheapest", "--reference", "nope")
    assert code == 2 and "--reference: model 'nope' is not in the evaluated data" in out


def test_key_names_and_agents_that_look_like_markup_are_shown_as_typed(tmp_path: Path) -> None:
    ledger = f"sqlite:///{tmp_path / 'l.db'}"
    code, out = _run("keys", "create", "[/red]", "--agent", "[bold]x", "--ledger", ledger)
    assert code == 0 and "([/red])" in out and "acting as [bold]x" in out and "sk-sw-" in out  # the secret is shown
    code, out = _run("keys", "list", "--ledger", ledger)
    assert code == 0 and "[/red]" in out and "[bold]x" in out


def test_spend_by_an_agent_named_like_markup_is_shown_as_typed(tmp_path: Path) -> None:
    import time

    from switchman.ledger import Ledger, LedgerRecord

    url = f"sqlite:///{tmp_path / 'l.db'}"
    ledger = Ledger(url)
    ledger.record(LedgerRecord(time=time.time() - 60, model="small", agent="[/oops]", cost_usd=0.01))
    ledger.close_sync()
    code, out = _run("spend", "--by", "agent", "--ledger", url)
    assert code == 0 and "[/oops]" in out


def test_model_names_that_look_like_markup_are_shown_as_typed_in_tables(tmp_path: Path) -> None:
    config = tmp_path / "switchman.yaml"
    config.write_text('models: {"[/x]": {provider: p, input_price: 1, output_price: 2}}\n'
                      'routes: {default: {candidates: ["[/x]"], strategy: cheapest}}\n')
    code, out = _run("route", "hi", "--config", str(config))
    assert code == 0 and "route default (cheapest): [/x]" in out and "→   [/x]" in out
    code, out = _run("models", "--config", str(config))
    assert code == 0 and "[/x]" in out


@pytest.mark.parametrize(("url", "error"), [
    ("nope://u:s3cret@x", "a Redis URL starts with one of"),
    # before, this one passed: redis-py's ValueError (the password read as the port) came out as a traceback
    # quoting it, after the key was revoked
    ("redis://:s3c/ret@127.0.0.1:1/0", "cannot read the Redis URL"),
])
def test_keys_revoke_with_a_redis_url_it_cannot_use_fails_before_revoking(tmp_path: Path, url: str, error: str) -> None:
    ledger = f"sqlite:///{tmp_path / 'l.db'}"
    code, out = _run("keys", "create", "bob", "--ledger", ledger)
    key_id = out.split("Created key ")[1].split()[0]
    code, out = _run("keys", "revoke", key_id, "--ledger", ledger, "--redis-url", url)
    assert code == 2 and f"--redis-url: {error}" in out and "s3c" not in out
    code, out = _run("keys", "list", "--ledger", ledger)
    assert "active" in out  # not revoked by the command that failed


def test_serve_with_a_ledger_url_it_cannot_use_is_one_error_line(tmp_path: Path) -> None:
    config = tmp_path / "switchman.yaml"
    config.write_text("server: {ledger_url: 'mysql://user:hunter2@db/x'}\n")
    code, out = _run("serve", "--config", str(config), "--port", "0")
    assert code == 2 and "the ledger: unsupported ledger URL 'mysql://user:***@db/x'" in out and "hunter2" not in out


def test_a_ledger_url_sqlalchemy_refuses_or_a_folder_it_cannot_make_is_one_error_line(tmp_path: Path) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    for url, message in (("sqlite://u:hunter2@/x", "invalid ledger URL 'sqlite+pysqlite://u:***@/x'"),
                         ("postgresql://u:hunter2@h:abc/db", "cannot parse the ledger URL"),
                         (f"sqlite:///{a_file}/l.db", f"cannot create the ledger's folder {a_file}")):
        code, out = _run("replay", "--router", _bundled_router(), "--ledger", url)
        assert code == 2 and message in out and "hunter2" not in out
        code, out = _run("keys", "list", "--ledger", url)
        assert code == 1 and message in out and "hunter2" not in out


def test_train_out_and_replay_json_create_missing_folders(tmp_path: Path) -> None:
    data = _tiny_data(tmp_path / "data")
    out = tmp_path / "new" / "deeper" / "r.safetensors"
    code, _ = _run("train", "--data", str(data), "--out", str(out))
    assert code == 0 and out.is_file()
    report = tmp_path / "other" / "replay.json"
    code, _ = _run("replay", "--router", str(out), "--data", str(data), "--json", str(report))
    assert code == 0 and report.is_file()


def test_an_output_path_that_cannot_be_written_is_refused_before_the_work(tmp_path: Path) -> None:
    data = _tiny_data(tmp_path / "data")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    read_only = tmp_path / "read-only.json"
    read_only.write_text("{}")
    read_only.chmod(0o400)
    try:
        # Root writes through permission bits: /proc refuses new files to everyone.
        folder = Path("/proc") if os.geteuid() == 0 else locked
        code, out = _run("train", "--data", str(data), "--out", str(folder / "r.safetensors"))
        assert code == 2 and f"--out {folder / 'r.safetensors'}: cannot write there" in out
        assert "calibration" not in out
        code, out = _run("eval", "--data", str(data), "--strategy", "cheapest", "--json",
                         str(folder / "deeper" / "e.json"))
        assert code == 2 and "cannot write there" in out
        if os.geteuid() != 0:
            code, out = _run("replay", "--router", _bundled_router(), "--data", str(data), "--json", str(read_only))
            assert code == 2 and f"--json {read_only}: cannot write there" in out
        code, out = _run("eval", "--data", str(data), "--strategy", "cheapest", "--json", str(tmp_path / "ok.json"))
        assert code == 0 and (tmp_path / "ok.json").exists()
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(".switchman-probe-")]
    finally:
        locked.chmod(0o700)


@pytest.mark.parametrize("command", ["train", "eval"])
def test_a_parameter_the_predictor_does_not_take_fails_before_the_data_is_read(tmp_path: Path, command: str) -> None:
    """`--param k=100` with the ensemble (it wants knn.k) is refused at once, not after minutes of embedding."""
    empty = tmp_path / "empty-data"  # no outcome data: reading it would be the error, were it read first
    empty.mkdir()
    out_args = ["--out", str(tmp_path / "router.safetensors")] if command == "train" else []
    code, out = _run(command, "--data", str(empty), *out_args, "--param", "k=100")
    assert code != 0
    assert "knn.NAME or mf.NAME" in out and "empty-data" not in out
    code, out = _run(command, "--data", str(empty), *out_args, "--algorithm", "knn", "--param", "kk=3")
    assert code != 0
    assert "unknown knn parameter(s) ['kk']" in out


def test_a_ledger_file_that_does_not_exist_is_named_not_created(tmp_path: Path) -> None:
    """A mistyped --ledger (or a relative sqlite:/// path run from another folder) made each reading command create an
    empty database there and report on it: 0 requests, or "turn on store_prompts", the wrong fix."""
    missing = tmp_path / "no-such" / "ledger.sqlite3"
    url = f"sqlite:///{missing}"
    for args, code in ((("spend", "--ledger", url), 1), (("keys", "list", "--ledger", url), 1),
                       (("keys", "revoke", "key-1", "--ledger", url), 1),
                       (("replay", "--router", _bundled_router(), "--ledger", url), 2),
                       (("train", "--from-ledger", url, "--out", str(tmp_path / "r.safetensors")), 2)):
        got, out = _run(*args)
        assert (got, f"no ledger at {missing}" in out, "store_prompts" in out) == (code, True, False), (args, out)
    assert not missing.exists() and not missing.parent.exists()


def test_python_dash_m_switchman_runs_the_command() -> None:
    """`python -m switchman` failed ("No module named switchman.__main__") where the scripts folder is not on PATH."""
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "switchman", "--help"], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "COLUMNS": "200"})
    assert result.returncode == 0, result.stderr
    assert "Usage: switchman" in result.stdout and "serve" in result.stdout


def test_an_unknown_eval_strategy_lists_every_strategy_the_help_offers(tmp_path: Path) -> None:
    """The help offers `cascade` and it works; the error for a typo listed every strategy but it."""
    code, out = _run("eval", "--data", str(_tiny_data(tmp_path / "data")), "--strategy", "cascad")
    assert code == 2 and "unknown strategy 'cascad'" in out
    assert all(name in out for name in ("learned", "cascade", "cheapest", "random", "fixed:MODEL")), out


def test_train_given_both_data_and_a_ledger_says_to_pick_one(tmp_path: Path) -> None:
    """`--data` was ignored without a word when `--from-ledger` was given too: the router trained on something else."""
    code, out = _run("train", "--data", str(_tiny_data(tmp_path / "data")), "--from-ledger",
                     f"sqlite:///{tmp_path / 'l.db'}", "--out", str(tmp_path / "r.safetensors"))
    assert code == 2 and "--data" in out and "--from-ledger" in out and "not both" in out, out
    assert not (tmp_path / "r.safetensors").exists()


def _option_help(command: str, option: str) -> str:
    """The help text of `command`'s `option`, as typer builds it (not as the terminal wraps it)."""
    import typer.core
    import typer.main

    group = typer.main.get_command(app)
    assert isinstance(group, typer.core.TyperGroup)
    found = [p for p in group.commands[command].params if option in getattr(p, "opts", ())]
    assert len(found) == 1, (command, option)
    return str(getattr(found[0], "help", None) or "")


def test_the_seed_help_says_what_it_seeds_and_where_clustering_and_mf_seeds_are_set() -> None:
    """--seed said it seeded the clustering; it shuffles folds (and in eval draws the random baselines), while the
    clustering and MF seeds are predictor parameters: a user varying --seed to vary the clusters changed nothing."""
    for command in ("train", "eval"):
        text = _option_help(command, "--seed")
        assert "calibration" in text and "evidence.seed=N" in text and "mf.seed=N" in text, (command, text)
    assert "random baselines" in _option_help("eval", "--seed") and "--cv" in _option_help("eval", "--seed")
    assert "random baselines" not in _option_help("train", "--seed")
