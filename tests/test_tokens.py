"""Token counting: exact cl100k counts offline, the documented fallback, and the bounded routing count."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from switchman._tokens import (
    ROUTING_HEAD_CHARS,
    ROUTING_TAIL_CHARS,
    count_tokens,
    count_tokens_for_routing,
    estimate_tokens,
)


def test_exact_count_works_offline_and_matches_known_cl100k_counts() -> None:
    # cl100k splits "hello world" into "hello" + " world"; plain cl100k_base would need the network.
    assert count_tokens("hello world") == 2
    assert count_tokens("") == 0
    # Special-token text is counted as ordinary text instead of raising.
    assert count_tokens("<|endoftext|>") > 1


def test_estimate_is_four_utf8_bytes_per_token() -> None:
    assert estimate_tokens("abcd") == 1
    assert estimate_tokens("abcde") == 2
    assert estimate_tokens("é" * 4) == math.ceil(8 / 4)  # two bytes each


def test_routing_count_of_english_text_is_within_twenty_percent_of_cl100k() -> None:
    text = ("Classify this support ticket as billing, outage or other. The customer says the printer "
            "caught fire after the last firmware update, and asks for a refund of $129.99. ") * 20
    assert abs(count_tokens_for_routing(text) / count_tokens(text) - 1) < 0.20
    assert count_tokens_for_routing("") == 0


def test_routing_count_reads_only_the_ends_of_a_long_text_and_scales_by_length() -> None:
    unit = "The quick brown fox jumps over the lazy dog. "
    sample = ROUTING_HEAD_CHARS + ROUTING_TAIL_CHARS
    short = unit * (sample // len(unit))
    long = unit * (40 * sample // len(unit))
    # Same text repeated: the long one's count is its length times the short one's rate.
    assert count_tokens_for_routing(long) == pytest.approx(count_tokens_for_routing(short) * len(long) / len(short),
                                                           rel=0.01)
    # Only the ends are read: what lies between them does not change the count (only the length does).
    middle = "x" * (len(long) - sample)
    mixed = long[:ROUTING_HEAD_CHARS] + middle + long[-ROUTING_TAIL_CHARS:]
    assert count_tokens_for_routing(mixed) == count_tokens_for_routing(long)


def test_a_4_mb_prompt_is_counted_from_its_ends_alone() -> None:
    # Work bounded by the sample, not the prompt: two 4 MB prompts with the same ends count the same.
    ends_head, ends_tail = "Summarise: " * 400, " Thanks!" * 600
    filler = 4_000_000 - len(ends_head) - len(ends_tail)
    a = ends_head + "lorem ipsum " * (filler // 12) + ends_tail
    b = ends_head + "0" * (len(a) - len(ends_head) - len(ends_tail)) + ends_tail
    assert len(a) == len(b) > 3_990_000
    assert count_tokens_for_routing(a) == count_tokens_for_routing(b)


def test_routing_count_handles_every_script_and_lone_surrogates() -> None:
    for text in ("敏捷的棕色狐狸跳过了懒狗。" * 30, "Быстрая коричневая лиса " * 30, "🙂" * 50, "a\udc80b"):
        assert count_tokens_for_routing(text) > 0
    chinese = "敏捷的棕色狐狸跳过了懒狗。" * 30
    assert 0.5 < count_tokens_for_routing(chinese) / count_tokens(chinese) < 1.5  # documented: 0.6–1.1 on Chinese


def test_routing_count_on_the_dev_prompts_matches_cl100k_closely(shared_data: Path) -> None:
    import pandas as pd

    prompts = pd.read_csv(shared_data / "routerbench" / "prompts.csv.gz")["prompt"].head(300).tolist()
    ratios = np.array([count_tokens_for_routing(p) / max(count_tokens(p), 1) for p in prompts])
    assert 0.95 < float(np.median(ratios)) < 1.10


def test_routing_a_prompt_never_loads_the_cl100k_ranks() -> None:
    code = (
        "import sys\n"
        "from switchman import Router\n"
        "r = Router.from_dict({'models': {'a': {'provider': 'p', 'input_price': 1, 'output_price': 1}},"
        " 'routes': {'default': {'candidates': ['a']}}})\n"
        "assert r.route('hi there').model == 'a'\n"
        "assert r.route('a long prompt ' * 10000).model == 'a'\n"
        "print('tiktoken' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
