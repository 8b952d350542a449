"""`JsonObjectPrefix` against the parser the anthropic SDK reads input_json_deltas with (jiter, partial mode): text
it lets through, cut anywhere, never makes that parser raise; every JSON object, cut anywhere, is let through."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from typing import Any

import jiter
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from switchman.gateway._dialects._json_prefix import JsonObjectPrefix

_SCALARS = st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=False, allow_infinity=False) \
    | st.text(max_size=8)
_VALUES = st.recursive(_SCALARS, lambda inner: st.lists(inner, max_size=4)
                       | st.dictionaries(st.text(max_size=5), inner, max_size=4), max_leaves=12)
_OBJECTS = st.dictionaries(st.text(max_size=5), _VALUES, max_size=5)


def _fed(pieces: list[str]) -> tuple[JsonObjectPrefix, list[bool]]:
    check = JsonObjectPrefix()
    return check, [check.feed(piece) for piece in pieces]


def _cut(text: str, cuts: list[int]) -> list[str]:
    points = sorted({min(c, len(text)) for c in cuts} | {0, len(text)})
    return [text[a:b] for a, b in zip(points, points[1:], strict=False)]


@settings(max_examples=300, deadline=None)
@given(_OBJECTS, st.lists(st.integers(0, 400), max_size=6), st.booleans())
def test_every_object_cut_anywhere_goes_through_whole(value: dict[str, Any], cuts: list[int], spaced: bool) -> None:
    text = json.dumps(value, indent=1 if spaced else None, ensure_ascii=not spaced)
    check, results = _fed(_cut(text, cuts))
    assert all(results) and check.complete, text


@settings(max_examples=600, deadline=None)
@given(_OBJECTS, st.integers(0, 400), st.text(alphabet='{}[]",:\\ u0123456789.eE+-tfnalrsxdbc\x00\n', max_size=6))
def test_what_goes_through_never_makes_the_sdk_parser_raise(value: dict[str, Any], at: int, noise: str) -> None:
    text = json.dumps(value)
    text = text[:at] + noise + text[at:]  # the object with noise somewhere: valid or not
    check = JsonObjectPrefix()
    for end in range(1, len(text) + 1):
        if not check.feed(text[end - 1]):
            break
        if text[:end].strip():  # (the stream translator sends no whitespace before the object: it drops it)
            jiter.from_json(text[:end].encode(), partial_mode=True)  # raises on what Anthropic's SDK would
    if check.complete:
        assert isinstance(json.loads(text), dict)


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", '"a string"', "42", '{"a": 1}}', '{"a" 1}', '{"a": tru}',
                                  '{"a": 01}', '{"a": \u0663', '{"a": "\x01"}', '{"a": "\\x"}', "{,}", '{"a": 1,}',
                                  "{]", "null",
                                  r'{"a": "\udc00"}', r'{"a": "\ud83dx"}', r'{"a": "\ud83d\u0041"}'])
def test_what_cannot_begin_an_object_is_stopped(text: str) -> None:
    assert _fed(list(text))[1][-1] is False


def test_a_long_number_costs_the_same_per_character() -> None:
    """Numbers of 200,000 digits (fraction, exponent), fed a character at a time and whole, in a child allowed 20 CPU
    seconds after its imports: linear, well under a second; matching the whole number again at each digit (as
    before) took minutes, on the event loop. CPU seconds, not wall-clock: a loaded machine does not matter."""
    code = textwrap.dedent("""
        import resource, time
        from switchman.gateway._dialects._json_prefix import JsonObjectPrefix
        used = int(time.process_time()) + 20
        resource.setrlimit(resource.RLIMIT_CPU, (used, used))
        digits = "7" * 200_000
        for text in ['{"a": 0.' + digits + '}', '{"a": -1.5e+' + digits + '}', '{"a": [1E' + digits + ']}']:
            whole, pieces = JsonObjectPrefix(), JsonObjectPrefix()
            assert whole.feed(text) and whole.complete
            assert all(pieces.feed(c) for c in text) and pieces.complete
        print("done")
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0 and done.stdout == "done\n", (done.returncode, done.stderr[-2000:])


@pytest.mark.parametrize(("head", "tail"), [('{"a": ', "}"), ('{"a": -', ".5}"), ('{"a": [', "e3]}")])
def test_an_integer_part_longer_than_the_sdk_parser_takes_is_stopped(head: str, tail: str) -> None:
    """jiter raises "number out of range" past 4300 digits of an integer part: the last that goes through is the
    4300th, and with it the text is still one the parser takes."""
    longest = head + "9" * 4300
    jiter.from_json(longest.encode(), partial_mode=True)
    results = _fed(list(longest + "9" + tail))[1]
    assert all(results[:len(longest)]) and results[len(longest)] is False
    with pytest.raises(ValueError, match="number out of range"):
        jiter.from_json((longest + "9").encode(), partial_mode=True)
    assert _fed([longest + tail])[0].complete  # 4300 digits and the rest: whole


def test_a_long_fraction_or_exponent_goes_through() -> None:
    """Only the integer part is bounded: jiter takes a fraction and an exponent of any length."""
    text = '{"a": 1.' + "5" * 20_000 + "e-" + "9" * 20_000 + "}"
    jiter.from_json(text.encode(), partial_mode=True)
    assert _fed([text])[0].complete


def test_nesting_deeper_than_the_sdk_parser_takes_is_stopped() -> None:
    """jiter raises "recursion limit exceeded" on a value inside more than 200 open brackets: `{"a":` and 200 `[`
    go through, the 201st does not, nor a value in the 200th; an empty array there, and a key, are fine."""
    deepest = '{"a":' + "[" * 200
    jiter.from_json(deepest.encode(), partial_mode=True)
    for after in ["[", "1", '"', "t", "{", "-"]:
        with pytest.raises(ValueError, match="recursion limit"):
            jiter.from_json((deepest + after).encode(), partial_mode=True)
        assert _fed([deepest, after])[1] == [True, False], after
    assert _fed([deepest + "]" * 200 + "}"])[0].complete
    assert _fed(['{"a":' * 200 + '{"key"'])[1] == [True]


_NESTS = st.sampled_from(["[", '{"k":', "[1,", '{"k":"v","j":', "[[],", "[ "])
_ENDS = st.sampled_from(["1", "-2.5", '"s"', "[]", "{}", "true", "[", "]", '{"x"', '{"x":', " ", "}"])


@settings(max_examples=60, deadline=None)
@given(st.lists(_NESTS, min_size=196, max_size=206), _ENDS, st.integers(4295, 4305), st.booleans())
def test_at_the_sdk_parsers_limits_it_goes_as_far_as_the_parser_takes(
        nests: list[str], end: str, digits: int, number: bool) -> None:
    """Nesting about 200 deep, or an integer part about 4300 digits long: what goes through parses with jiter, and
    all of it goes through when jiter takes it all (the checker holds no more than it must)."""
    text = '{"a":' + ("-" + "7" * digits + ".5}" if number else "".join(nests) + end)
    check = JsonObjectPrefix()
    went = 0
    while went < len(text) and check.feed(text[went]):
        went += 1
    if went:
        jiter.from_json(text[:went].encode(), partial_mode=True)  # raises if the checker let too much through
    for cut in range(went + 1, min(went + 3, len(text)) + 1):  # and the parser refuses the next (or this piece fails)
        try:
            jiter.from_json(text[:cut].encode(), partial_mode=True)
        except ValueError:
            break
    else:
        assert went == len(text), text[max(0, went - 30):went + 5]
