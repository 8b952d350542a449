"""The nesting check (`server.limits.max_json_depth`) counts objects and arrays alike, at any position, and walks a
body of a million tiny arrays level by level (it walked one value at a time: seconds of CPU for 4 MB)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from switchman._exceptions import InvalidRequestError
from switchman.gateway._schema import read_json


def _nested(levels: int, *, at: int = 0) -> Any:
    """`levels` levels of alternating objects and arrays, the deepest `at` items into the outer array."""
    value: Any = {}
    for level in range(levels - 3):
        value = {"k": value} if level % 2 else [value]
    return {"m": [0] * at + [value]}


@pytest.mark.parametrize("at", [0, 3])
def test_the_depth_counts_objects_and_arrays_anywhere(at: int) -> None:
    assert read_json(orjson.dumps(_nested(8, at=at)), 8)["m"]
    with pytest.raises(InvalidRequestError, match="deeper than 8 levels"):
        read_json(orjson.dumps(_nested(9, at=at)), 8)


def test_many_shallow_arrays_pass_and_one_deep_one_among_them_does_not() -> None:
    flat: dict[str, Any] = {"a": [[]] * 20_000}
    assert len(read_json(orjson.dumps(flat), 3)["a"]) == 20_000
    flat["a"] = [*flat["a"], [[]]]
    with pytest.raises(InvalidRequestError, match="deeper than 3 levels"):
        read_json(orjson.dumps(flat), 3)
