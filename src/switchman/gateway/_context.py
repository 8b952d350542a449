"""Who is asking: agent, session, tags, task, escalation and cache wishes, from `X-Switchman-*` headers or metadata.

Headers win over metadata. Switchman's own metadata keys are removed from the body before it is
forwarded; the caller's other metadata keys pass through untouched.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, MutableMapping
from dataclasses import dataclass, replace
from typing import Any

from .._context_values import clean_value as _clean
from .._exceptions import InvalidRequestError
from .._slots import slot_init
from ..ledger import KeyInfo

__all__ = ["CONTEXT_HEADERS", "OWN_METADATA_KEYS", "RequestContext", "bind_agent", "context_from", "context_headers",
           "scoped_session"]

#: Keys of the body's `metadata` that are switchman's, never the provider's.
OWN_METADATA_KEYS = ("agent", "session", "tags", "task", "escalate", "cache")
#: The request headers `context_from` reads.
CONTEXT_HEADERS = frozenset({b"x-switchman-agent", b"x-switchman-session", b"x-switchman-tags", b"x-switchman-task",
                             b"x-switchman-escalate", b"x-switchman-cache", b"traceparent", b"tracestate"})
_MAX_TAGS = 32


@slot_init
@dataclass(frozen=True, slots=True)
class RequestContext:
    """The caller's context for one request."""

    request_id: str = ""
    agent: str | None = None
    session: str | None = None
    tags: tuple[str, ...] = ()
    task: str | None = None
    key_id: str | None = None
    escalate: bool = False
    body_bytes: int = 0  # the request body's size: a quarter of it bounds the input tokens a budget reserves
    api: str = "chat.completions"  # the API the client spoke, for the ledger
    cache: bool | None = None  # X-Switchman-Cache: on (use the response cache), off (never), None (by the rule)
    #: The caller's W3C trace context (`traceparent` / `tracestate` headers), parent of the request's span.
    traceparent: str | None = None
    tracestate: str | None = None


def _tags(value: object, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        items: list[object] = list(value.split(","))
    elif isinstance(value, list):
        items = value
    else:
        raise InvalidRequestError(f"{where} must be a list of strings or a comma-separated string",
                                  param=where, code="invalid_value")
    tags = tuple(t for t in (_clean(item, where) for item in items) if t)
    if len(tags) > _MAX_TAGS:
        raise InvalidRequestError(f"{where} has more than {_MAX_TAGS} tags", param=where, code="invalid_value")
    return tags


def _flag(value: object, where: str) -> bool:
    if value is None or isinstance(value, bool):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("1", "true", "yes", "0", "false", "no", ""):
        return value.strip().lower() in ("1", "true", "yes")
    raise InvalidRequestError(f"{where} must be 1/0 or true/false", param=where, code="invalid_value")


_ON, _OFF = ("on", "1", "true", "yes"), ("off", "0", "false", "no")


def _switch(value: object, where: str) -> bool | None:
    """on/off (or 1/0, true/false) as True/False; absent or empty as None."""
    if value is None or isinstance(value, bool):
        return value
    word = value.strip().lower() if isinstance(value, str) else None
    if word is not None and word in _ON + _OFF + ("",):
        return None if not word else word in _ON
    raise InvalidRequestError(f"{where} must be on or off", param=where, code="invalid_value")


def context_from(
    headers: Mapping[str, Any], body: MutableMapping[str, Any], *, request_id: str = "", key_id: str | None = None,
    body_bytes: int = 0,
    api: str = "chat.completions",
) -> RequestContext:
    """Read the context and strip switchman's keys from `body["metadata"]` (in place).

    `headers` are the request's (strings); the SDK passes its keyword arguments under the same names, as
    their own values (a bool, a list of tags), so both read metadata alike.
    """
    metadata = body.get("metadata")
    own: dict[str, Any] = {}
    if metadata is not None:
        if not isinstance(metadata, dict):
            raise InvalidRequestError("metadata must be an object", param="metadata", code="invalid_type")
        own = {k: metadata[k] for k in OWN_METADATA_KEYS if k in metadata}
        if own:
            rest = {k: v for k, v in metadata.items() if k not in OWN_METADATA_KEYS}
            if rest:
                body["metadata"] = rest
            else:
                del body["metadata"]
    if not own and not headers:  # most requests: no context given (`context_headers` found none of its names)
        return RequestContext(request_id, None, None, (), None, key_id, False, body_bytes, api)
    header_tags = headers.get("x-switchman-tags")
    return RequestContext(
        request_id=request_id,
        agent=_clean(headers.get("x-switchman-agent"), "X-Switchman-Agent") or _clean(own.get("agent"),
                                                                                       "metadata.agent"),
        session=_clean(headers.get("x-switchman-session"), "X-Switchman-Session")
        or _clean(own.get("session"), "metadata.session"),
        tags=_tags(header_tags, "X-Switchman-Tags") if header_tags is not None else _tags(own.get("tags"),
                                                                                         "metadata.tags"),
        task=_clean(headers.get("x-switchman-task"), "X-Switchman-Task") or _clean(own.get("task"), "metadata.task"),
        key_id=key_id,
        escalate=_flag(headers.get("x-switchman-escalate"), "X-Switchman-Escalate")
        or _flag(own.get("escalate"), "metadata.escalate"),
        body_bytes=body_bytes,
        api=api,
        cache=_switch(headers.get("x-switchman-cache"), "X-Switchman-Cache")
        if "x-switchman-cache" in headers else _switch(own.get("cache"), "metadata.cache"),
        traceparent=_trace_header(headers.get("traceparent")),
        tracestate=_trace_header(headers.get("tracestate")),
    )


def context_headers(raw: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    """The headers `context_from` reads, from an ASGI scope's (lowercase names; the first of a name counts).

    What Starlette's `Headers` gives for these names, without building it for every request.
    """
    found: dict[str, str] = {}
    for name, value in raw:
        if name in CONTEXT_HEADERS:
            key = name.decode("latin-1")
            if key not in found:
                found[key] = value.decode("latin-1")
    return found


def bind_agent(context: RequestContext, key: KeyInfo | None) -> RequestContext:
    """The context with its agent as the key allows: a key bound to agents acts only as one of them.

    A key with `agents` may name one of them (header or metadata); naming none gives its
    `default_agent`, or its only agent; naming another is a 403. A key with only a `default_agent`
    gives that agent to requests that name none. The master key and unbound keys name any agent.
    """
    if key is None or (key.agents is None and key.default_agent is None):
        return context
    agent = context.agent or key.default_agent
    if agent is None and key.agents is not None and len(key.agents) == 1:
        agent = key.agents[0]
    if key.agents is not None:
        allowed = ", ".join(key.agents)
        if agent is None:
            raise InvalidRequestError(f"this key acts for the agents {allowed}: name one with X-Switchman-Agent",
                                      param="X-Switchman-Agent", code="agent_required")
        if agent not in key.agents:
            raise InvalidRequestError(f"key {key.id} may not act as agent {agent!r} (its agents: {allowed})",
                                      status=403, param="X-Switchman-Agent", code="agent_not_allowed",
                                      kind="permission_error")
    return replace(context, agent=agent)


def scoped_session(key_id: str | None, session: str | None) -> str | None:
    """The session id as the gateway keeps it: a virtual key's sessions apart from every other key's."""
    if session is None or key_id is None or key_id == "master":
        return session
    return f"{key_id}/{session}"


def _trace_header(value: str | None) -> str | None:
    """A trace-context header kept only when short and printable (the propagator checks its format)."""
    if value is None or len(value) > 512 or not value.isprintable():
        return None
    return value
