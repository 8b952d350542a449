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


@pytest.mark.parametrize("body", [{}, {"metadata": {"trace": "t"}}, {"metadata": None}, {"metadata": {}}])
def test_no_context_given_is_the_empty_context(body: dict[str, object]) -> None:
    """No context header and none of switchman's metadata keys: the same context as through every check."""
    other = {"x-unrelated": "1"}  # a header context_from does not read: the general path
    slow = context_from(other, dict(body), request_id="r", key_id="k", body_bytes=120, api="messages")
    given = dict(body)
    fast = context_from({}, given, request_id="r", key_id="k", body_bytes=120, api="messages")
    assert fast == slow and given == body
    assert (fast.request_id, fast.key_id, fast.body_bytes, fast.api, fast.tags, fast.escalate, fast.cache) == (
        "r", "k", 120, "messages", (), False, None)
