"""Request context from headers and metadata."""

from __future__ import annotations

import pytest

from switchman import InvalidRequestError
from switchman.gateway._context import context_from


def test_headers_win_and_own_metadata_is_stripped() -> None:
    body = {"metadata": {"agent": "meta", "tags": ["m"], "task": "code", "trace": "t"}}
    ctx = context_from({"x-switchman-agent": "hdr", "x-switchman-tags": " a,,b "}, body, request_id="r")
    assert (ctx.agent, ctx.tags, ctx.task, ctx.request_id) == ("hdr", ("a", "b"), "code", "r")
    assert body == {"metadata": {"trace": "t"}}
    body = {"metadata": {"session": "s"}}
    assert context_from({}, body).session == "s" and body == {}
    assert context_from({}, {"metadata": {"tags": "x, y"}}).tags == ("x", "y")


@pytest.mark.parametrize("body", [{"metadata": "x"}, {"metadata": {"agent": ["a"]}}, {"metadata": {"tags": 3}}])
def test_bad_metadata(body: dict[str, object]) -> None:
    with pytest.raises(InvalidRequestError):
        context_from({}, body)
