"""`header_value`'s ASCII shortcut gives what the full translation (the reference below, the code before it) gives."""

from __future__ import annotations

import random
import unicodedata

from switchman.gateway import _endpoints
from switchman.gateway._endpoints import header_value


def _reference(text: str) -> str:
    """`header_value` before the shortcut: every text through the whole table, normalisation and encoding."""
    text = text.translate(_endpoints._ASCII)
    if not text.isascii():
        text = unicodedata.normalize("NFKD", text)
        text = "".join(c for c in text if not unicodedata.combining(c))
    return text.encode("ascii", "backslashreplace").decode("ascii")[:300]


# Every ASCII character (controls included), the table's keys, accents, a surrogate, wide characters.
_ALPHABET = [chr(i) for i in range(128)] + [chr(k) for k in _endpoints._ASCII] + ["é", "ñ", "\u0301", "\udc00",
                                                                                  "日", "😀", "\x85", "\u2028"]


def test_every_ascii_character_alone_and_around_text() -> None:
    for i in range(128):
        for text in (chr(i), f"cheapest{chr(i)}of 2", chr(i) * 301):
            assert header_value(text) == _reference(text), repr(text)


def test_random_texts_match_the_full_translation() -> None:
    draw = random.Random(11)
    for n in range(20_000):
        ascii_only = n % 2 == 0  # half take the shortcut
        pool = _ALPHABET[:128] if ascii_only else _ALPHABET
        text = "".join(draw.choice(pool) for _ in range(draw.choice([0, 1, 5, 40, 299, 300, 301, 700])))
        assert header_value(text) == _reference(text), repr(text)
        assert type(header_value(text)) is str


def test_no_control_character_reaches_a_header() -> None:
    # A reason can carry a name a client wrote (an agent from the body's metadata): NUL, ESC or DEL in it went
    # into the response header as they were, which the server does not check and clients refuse.
    for text in ("agent a\x00b is pinned", "\x1b[31mred", "del\x7f", "é\x00\x0b", "\x01" * 400):
        out = header_value(text)
        assert out.isascii() and out.isprintable() and len(out) <= 300, repr(out)
    assert header_value("agent a\x00b\x7fc") == "agent a b c"


def test_route_reasons_as_the_router_writes_them() -> None:
    for reason in ("cheapest of 2 candidates: small at $0.000012", "agent a rule 0", "budget downgrade from large",
                   "line\nbreak\r\tand tab", "quality 0.91 ≥ 0.9 → small", "model requested by name"):
        assert header_value(reason) == _reference(reason)
