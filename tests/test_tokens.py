"""Token counting offline: exact cl100k counts, the documented estimate, and the serving-path mix."""

from __future__ import annotations

import math
import subprocess
import sys

from switchman._tokens import (
    EXACT_ABOVE_CHARS,
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


def test_routing_count_estimates_short_texts_and_counts_long_ones_exactly() -> None:
    short = "Classify this ticket: the printer is on fire."
    assert count_tokens_for_routing(short) == estimate_tokens(short)
    long = "The quick brown fox jumps over the lazy dog. " * (EXACT_ABOVE_CHARS // 40)
    assert len(long) > EXACT_ABOVE_CHARS
    assert count_tokens_for_routing(long) == count_tokens(long)
    assert count_tokens(long) != estimate_tokens(long)  # so the branch taken is observable


def test_routing_a_short_prompt_never_loads_the_cl100k_ranks() -> None:
    code = (
        "import sys\n"
        "from switchman import Router\n"
        "r = Router.from_dict({'models': {'a': {'provider': 'p', 'input_price': 1, 'output_price': 1}},"
        " 'routes': {'default': {'candidates': ['a']}}})\n"
        "assert r.route('hi there').model == 'a'\n"
        "print('tiktoken' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"

