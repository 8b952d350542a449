"""Whether text arriving piece by piece is still the start of a JSON object: one pass, each character once.

An Anthropic client parses the input_json_deltas of a tool_use block so far as (partial) JSON at every delta,
and its SDK raises on text that cannot begin a JSON object. An OpenAI-compatible upstream's tool arguments are
relayed as those deltas, and some (small local models) are not JSON; this tells the stream translator when to
stop relaying them, without parsing the whole text again at each piece, and each character at the same cost (a
number too, however long). It also stops what JSON allows but that parser refuses: an integer part of more than
4300 digits, a value inside more than 200 open brackets.

    check = JsonObjectPrefix()
    check.feed('{"city": "Pa')   # True: still the start of an object
    check.feed('ris"}')          # True, and check.complete
    JsonObjectPrefix().feed("{not json")   # False
"""

from __future__ import annotations

import re

__all__ = ["JsonObjectPrefix"]

_PLAIN = re.compile(r'[^"\\\x00-\x1f]*')  # a string's characters up to a quote, a backslash or a control
#: A number's grammar as states, so each character costs the same however long the number (matching the whole
#: number again at each digit was quadratic: a model repeating digits to max_tokens stalled the event loop).
_CLASS = {**dict.fromkeys("123456789", "1"), "0": "0", ".": ".", "e": "e", "E": "e", "+": "+", "-": "-"}
_NEXT = {
    ("sign", "0"): "zero", ("sign", "1"): "int",
    ("zero", "."): "dot", ("zero", "e"): "exp",
    ("int", "0"): "int", ("int", "1"): "int", ("int", "."): "dot", ("int", "e"): "exp",
    ("dot", "0"): "frac", ("dot", "1"): "frac",
    ("frac", "0"): "frac", ("frac", "1"): "frac", ("frac", "e"): "exp",
    ("exp", "+"): "exp_sign", ("exp", "-"): "exp_sign", ("exp", "0"): "exp_digits", ("exp", "1"): "exp_digits",
    ("exp_sign", "0"): "exp_digits", ("exp_sign", "1"): "exp_digits",
    ("exp_digits", "0"): "exp_digits", ("exp_digits", "1"): "exp_digits",
}
_NUMBER_ENDS = frozenset({"zero", "int", "frac", "exp_digits"})  # the states a number may end in
#: jiter (partial mode, the anthropic SDK's parser) raises "number out of range" on an integer part of more digits
#: (jiter 0.19: 4300 pass, 4301 raise; a fraction or an exponent of 200,000 digits pass).
_MAX_INTEGER_DIGITS = 4300
#: jiter raises "recursion limit exceeded" on a value (a bracket, a string, a number, a literal) inside more open
#: brackets than this (jiter 0.19: `{"a":` and 200 `[` pass, a 201st `[` or a value in the 200th raises); a key
#: inside them does not count.
_MAX_DEPTH = 200
_LITERALS = {"t": "true", "f": "false", "n": "null"}
_HEX = frozenset("0123456789abcdefABCDEF")


class JsonObjectPrefix:
    """Fed the text in pieces; `feed` is False from the first piece that cannot continue a JSON object (and
    stays False). `complete` once the object has closed."""

    def __init__(self) -> None:
        self._stack: list[str] = []  # the open "{" and "["
        self._expect = "value"  # value | key | colon | comma (or a close) | done
        self._first = False  # just after an open bracket: it may close at once
        self._string: bool | None = None  # inside a string: True for a key
        self._escape = 0  # 1 after a backslash, 2 to 5 inside a \\u escape
        self._hex = ""  # the \\u escape's digits so far
        self._low = False  # a high surrogate's escape went before: a low one's must follow
        self._number = ""  # the number's state (`_NEXT`), "" outside one
        self._digits = 0  # its integer part's digits so far
        self._literal = ""  # what is left of true / false / null
        self.ok = True

    @property
    def complete(self) -> bool:
        """The text so far is one whole JSON object."""
        return self.ok and self._expect == "done"

    def feed(self, text: str) -> bool:
        """True while the text so far (this piece included) can begin a JSON object."""
        i, end = 0, len(text)
        while self.ok and i < end:
            if self._string is not None and not self._escape and not self._low:
                plain = _PLAIN.match(text, i)
                i = plain.end() if plain is not None else i  # (it matches the empty string: never None)
                if i == end:
                    break
            self.ok = self._char(text[i])
            i += 1
        return self.ok

    def _char(self, c: str) -> bool:
        if self._string is not None:
            return self._in_string(c)
        if self._literal:
            if c != self._literal[0]:
                return False
            self._literal = self._literal[1:]
            if not self._literal:
                self._expect = "comma"
            return True
        if self._number:
            state = _NEXT.get((self._number, _CLASS.get(c, "")))
            if state is not None:
                self._number = state
                if state == "int":
                    self._digits += 1
                    return self._digits <= _MAX_INTEGER_DIGITS
                return True
            if self._number not in _NUMBER_ENDS:
                return False
            self._number, self._expect = "", "comma"
        if c in " \t\r\n":
            return True
        return self._token(c)

    def _in_string(self, c: str) -> bool:
        if self._escape == 1:
            if c == "u":
                self._escape = 2
                return True
            self._escape = 0
            return c in '"\\/bfnrt' and not self._low
        if self._escape:
            if c not in _HEX:
                return False
            self._hex += c
            if self._escape < 5:
                self._escape += 1
                return True
            return self._code_unit()
        if c == "\\":
            self._escape = 1
            return True
        if self._low:
            return False  # a high surrogate's escape and no low one after it
        if c == '"':
            self._expect = "colon" if self._string else "comma"
            self._string = None
            return True
        return c >= " "

    def _code_unit(self) -> bool:
        """A \\u escape's four digits are in: a surrogate must come as a high one, then a low one (the SDK's parser
        refuses one alone)."""
        unit, low = int(self._hex, 16), self._low
        self._escape, self._hex, self._low = 0, "", 0xD800 <= unit <= 0xDBFF
        return (0xDC00 <= unit <= 0xDFFF) == low

    def _token(self, c: str) -> bool:
        expect, first = self._expect, self._first
        self._first = False
        if expect == "value":
            if not self._stack and c != "{":
                return False  # a tool's input is an object
            if len(self._stack) > _MAX_DEPTH and not (c == "]" and first):
                return False
            if c in "{[":
                self._stack.append(c)
                self._expect, self._first = ("key" if c == "{" else "value"), True
            elif c == '"':
                self._string = False
            elif c == "-" or "0" <= c <= "9":
                self._number = "sign" if c == "-" else "zero" if c == "0" else "int"
                self._digits = 0 if c == "-" else 1
            elif c in _LITERALS:
                self._literal = _LITERALS[c][1:]
            elif c == "]" and first:
                return self._close("[")
            else:
                return False
            return True
        if expect == "key":
            if c == '"':
                self._string = True
                return True
            return c == "}" and first and self._close("{")
        if expect == "colon":
            self._expect = "value"
            return c == ":"
        if expect == "comma" and self._stack:
            if c == ",":
                self._expect = "key" if self._stack[-1] == "{" else "value"
                return True
            return self._close("{" if c == "}" else "[" if c == "]" else "")
        return False

    def _close(self, bracket: str) -> bool:
        if not bracket or self._stack[-1] != bracket:
            return False
        self._stack.pop()
        self._expect = "comma" if self._stack else "done"
        return True
