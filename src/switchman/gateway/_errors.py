"""Every error the gateway answers with, rendered in one place, in the envelope of the API spoken.

OpenAI's `{"error": {"message", "type", "param", "code"}}` (chat completions, Responses, embeddings)
or Anthropic's `{"type": "error", "error": {"type", "message"}}` (`/v1/messages`), with the status a
client library maps to the right exception class. Messages pass through the `Scrubber`, so a key an
upstream echoed back never reaches the client. A budget refusal says `x-should-retry: false`: the
openai and anthropic clients honour it instead of retrying a 429 that waiting will not fix.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import partial
from types import MemberDescriptorType
from typing import Any, TypeVar, cast

import orjson
from starlette.responses import Response

from .._urls import secret_query_name, shown_url
from ._rate_headers import Dialect, rate_limit_headers
from .._exceptions import (
    BudgetExceededError,
    CallerLimitError,
    ConfigError,
    ContentPolicyViolationError,
    ContextWindowExceededError,
    DeploymentLimitError,
    InvalidRequestError,
    LedgerUnavailableError,
    NoCapableModelError,
    PolicyDeniedError,
    RateLimitError,
    SwitchmanError,
    UnknownModelError,
    UpstreamBadRequestError,
    UpstreamConnectionError,
    UpstreamError,
    UpstreamServerError,
    UpstreamTimeout,
)

__all__ = [
    "Scrubber",
    "scrubbed",
    "anthropic_error_payload",
    "dialect_for_path",
    "dialect_for_scope",
    "error_payload",
    "error_response",
]


# (status, type, code, param) by class; the most specific class listed first wins.
_ENVELOPES: tuple[tuple[type[SwitchmanError], int, str, str | None, str | None], ...] = (
    (UnknownModelError, 404, "invalid_request_error", "model_not_found", "model"),
    (NoCapableModelError, 400, "invalid_request_error", "no_capable_model", "model"),
    (PolicyDeniedError, 403, "permission_error", "model_not_allowed", "model"),
    (BudgetExceededError, 429, "insufficient_quota", "budget_exceeded", None),
    (CallerLimitError, 429, "rate_limit_error", "rate_limit_exceeded", None),
    (RateLimitError, 429, "rate_limit_error", "rate_limit_exceeded", None),
    (ContextWindowExceededError, 400, "invalid_request_error", "context_length_exceeded", "messages"),
    (ContentPolicyViolationError, 400, "invalid_request_error", "content_policy_violation", None),
    (UpstreamBadRequestError, 400, "invalid_request_error", "upstream_bad_request", None),
    (UpstreamTimeout, 504, "api_error", "upstream_timeout", None),
    (UpstreamConnectionError, 502, "api_error", "upstream_connection_error", None),
    (UpstreamServerError, 502, "api_error", "upstream_server_error", None),
    (UpstreamError, 502, "api_error", "upstream_error", None),
    (ConfigError, 503, "api_error", "not_configured", None),
    (LedgerUnavailableError, 503, "api_error", "ledger_unavailable", None),
)

_SECRET_PATTERNS = re.compile(r"(sk-[A-Za-z0-9_\-]{6,}|(?:Bearer|Basic)\s+[A-Za-z0-9._~+/=\-]{6,})")
#: A credential written into a URL in text, whoever's it is (an embedder's, a proxy's, one no configuration lists):
#: a query value whose name says it is one (`secret_query_name`), and a URL's password. Only the value goes; the URL
#: stays readable. Both run on client-echoed text on the event loop, so each is linear in the text's length: a scheme
#: is tried only where a word starts, names and passwords are matched possessively (no backtracking).
_QUERY_NAME = re.compile(r"[?&;]([\w.%\-]++)=")
_QUERY_VALUE = re.compile(r"[^&#\s'\"<>]*+")
_URL_PASSWORD = re.compile(r"(?<![\w+.\-])([a-z][a-z0-9+.\-]*+://[^/@\s:'\"<>]*+:)[^/@\s'\"<>]++(?=@)", re.IGNORECASE)


class Scrubber:
    """Removes the configured secrets, and anything shaped like a key, from text."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        #: The secrets this scrubber redacts by value (those long enough to match safely).
        self.secrets = frozenset(s for s in secrets if s and len(s) >= 4)
        found = sorted(self.secrets, key=len, reverse=True)
        self._secrets = re.compile("|".join(re.escape(s) for s in found)) if found else None

    def __or__(self, other: Scrubber) -> Scrubber:
        """A scrubber redacting both's secrets (a gateway's, across reloads: a retired dispatcher's keys too)."""
        return self if other.secrets <= self.secrets else Scrubber(self.secrets | other.secrets)

    def __call__(self, text: str) -> str:
        if self._secrets is not None:
            text = self._secrets.sub("[redacted]", text)
        text = _SECRET_PATTERNS.sub("[redacted]", text)
        return _without_query_secrets(_URL_PASSWORD.sub(r"\1[redacted]", text))


def _without_query_secrets(text: str) -> str:
    """`text` with the value of every credential-named query parameter redacted (`?api-key=[redacted]&q=1`).

    A scan, not one substitution: a value not redacted is not consumed, so `?q=1?key=v` still finds `key`."""
    parts: list[str] = []
    done = pos = 0
    while (found := _QUERY_NAME.search(text, pos)) is not None:
        pos = found.end()
        value = _QUERY_VALUE.match(text, pos)
        assert value is not None  # (matches the empty string)
        if value.end() > pos and secret_query_name(found.group(1)):
            parts += [text[done:pos], "[redacted]"]
            done = pos = value.end()
    return "".join([*parts, text[done:]]) if parts else text


def error_payload(exc: BaseException, scrub: Scrubber | None = None) -> tuple[int, dict[str, object]]:
    """Status and envelope for an exception; anything not ours is an opaque 500."""
    if isinstance(exc, InvalidRequestError):
        status, kind, code, param = exc.status, exc.kind, exc.code, exc.param
        message = str(exc)
    elif isinstance(exc, SwitchmanError):
        status, kind, code, param = 500, "api_error", "internal_error", None
        for cls, s, k, c, p in _ENVELOPES:
            if isinstance(exc, cls):
                status, kind, code, param = s, k, c, p
                break
        message = str(exc)
    else:
        status, kind, code, param = 500, "api_error", "internal_error", None
        message = "internal error in the switchman gateway; see the server log"
    if scrub is not None:
        message = scrub(message)
    return status, {"error": {"message": message, "type": kind, "param": param, "code": code}}


#: HTTP status → Anthropic's error type (https://docs.anthropic.com/en/api/errors).
_ANTHROPIC_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                    404: "not_found_error", 405: "invalid_request_error", 408: "invalid_request_error",
                    413: "request_too_large", 415: "invalid_request_error", 431: "request_too_large",
                    429: "rate_limit_error", 529: "overloaded_error"}


def anthropic_error_payload(status: int, payload: dict[str, object]) -> dict[str, object]:
    """Anthropic's envelope for an OpenAI-shaped error payload (same message, type by status)."""
    error = payload["error"]
    assert isinstance(error, dict)
    kind = _ANTHROPIC_TYPES.get(status, "api_error")
    return {"type": "error", "error": {"type": kind, "message": error["message"]}}


#: The paths Anthropic's clients call (and those below them: `/v1/messages/count_tokens`).
_ANTHROPIC_PATHS = ("/v1/messages", "/messages")


def dialect_for_path(path: str, root_path: str = "") -> Dialect:
    """Which envelope (and rate-limit headers) a path's clients expect: "anthropic" for /v1/messages and the paths
    below it, else "openai". `root_path` is the prefix the app is served under (a Starlette `Mount`, a proxy's root
    path): stripped first, as the router does, so `/gw/v1/messages` under `/gw` (or `/gw/`) is Anthropic's too. Only
    at a segment's end (without its trailing slash): `/` strips nothing, and `/gwx/...` is not under `/gw`."""
    root = root_path.rstrip("/")
    if root and path.startswith(root) and path.startswith("/", len(root)):
        path = path[len(root):]
    for base in _ANTHROPIC_PATHS:
        if path.startswith(base) and (len(path) == len(base) or path[len(base)] == "/"):  # not /v1/messagesX
            return "anthropic"
    return "openai"


def dialect_for_scope(scope: Mapping[str, Any]) -> Dialect:
    """`dialect_for_path` of a request's ASGI scope (its path under its root path): what every renderer asks."""
    return dialect_for_path(scope["path"], scope.get("root_path", ""))


def retry_after_headers(seconds: float) -> dict[str, str]:
    """A wait as `retry-after` (RFC 9110 delay-seconds: whole seconds, rounded up, never sooner; a fraction
    makes urllib3's Retry raise) and `retry-after-ms` (the precise wait, read first by the openai SDK)."""
    millis = math.ceil(max(seconds, 0.0) * 1000.0)
    return {"retry-after": str(-(-millis // 1000)), "retry-after-ms": str(millis)}


def error_response(
    exc: BaseException, scrub: Scrubber | None = None, headers: dict[str, str] | None = None, *,
    dialect: Dialect = "openai",
) -> Response:
    """The HTTP response for an exception (Retry-After for rate limits, x-should-retry: false for budgets), in
    `dialect`'s envelope and rate-limit headers ("anthropic" for /v1/messages, else "openai")."""
    status, payload = error_payload(exc, scrub)
    headers = dict(headers or {})
    if isinstance(exc, UpstreamError) and status == 429 and exc.retry_after is not None:
        headers.update(retry_after_headers(exc.retry_after))
    if isinstance(exc, DeploymentLimitError | CallerLimitError):
        headers.update(rate_limit_headers(exc.limits, dialect))
    if isinstance(exc, CallerLimitError):
        headers.update(retry_after_headers(exc.retry_after))
    if isinstance(exc, BudgetExceededError):
        headers["x-should-retry"] = "false"
    body = anthropic_error_payload(status, payload) if dialect == "anthropic" else payload
    return Response(orjson.dumps(body), status_code=status, headers=headers, media_type="application/json")


_E = TypeVar("_E", bound=BaseException)

#: Header names whose values are credentials, redacted by name wherever a foreign exception holds headers.
_CREDENTIAL_HEADERS = frozenset({"authorization", "proxy-authorization", "x-api-key", "api-key", "x-goog-api-key"})
#: Values kept as they are in a foreign exception's state; anything else is rebuilt (containers) or replaced by
#: its scrubbed text (a request, a response, a URL).
_PLAIN = (int, float, bool, type(None))


def scrubbed(exc: _E, scrub: Callable[[str], str]) -> _E:
    """`exc` and every exception it reaches, scrubbed of secrets and stripped of tracebacks, keeping their types.

    An upstream may echo the key it was sent (as a 401 does), and a client library's exception keeps the request
    it sent, headers and all (aiohttp's `request_info`, httpx's `request`): the caller's traceback, log or error
    tracker must get neither, in a message, a note, a frame's locals (a tracker capturing locals sends them) or an
    attribute. So for `exc`, its causes and contexts, exception-group members and exceptions held in attributes:
    messages and notes are scrubbed, tracebacks dropped, and a foreign exception's state (args, `__dict__`,
    `__slots__` and a built-in's own fields: OSError's file names, AttributeError's `obj`, ...) is rebuilt from
    scrubbed text (credential headers redacted by name). The gateway scrubs its HTTP answers the same way.

    In place, except an exception group whose own message or members must change (read-only): it is replaced by a
    copy of the same type, so the result may not be `exc` (`raise scrubbed(exc, scrub)`). An exception that cannot
    be cleaned (read-only args, an argument that raises when read) is cut from the chain, never shown: a group's
    member is replaced by an empty one of its type, the top one emptied; nothing here ever raises instead of `exc`.
    """
    result: list[BaseException] = [exc]

    def top(new: BaseException | None) -> None:
        result[0] = _gut(exc) if new is None else new

    try:
        _walk(exc, top, scrub)
    except Exception:  # noqa: BLE001 - the walk itself failed: the caller still gets its error, emptied
        return cast("_E", _gut(exc))
    return cast("_E", result[0])  # `exc`, or a group of its type


def _walk(exc: BaseException, put: Callable[[BaseException | None], None], scrub: Callable[[str], str]) -> None:
    """`scrubbed`'s walk. Each exception goes with `put`, which replaces it where it was reached from (None: cut
    it off): its link from the one that reached it (a cause, a context), its place in a group (read-only: the group
    is rebuilt), or for an exception held in an attribute, which cannot be replaced, the cut of its holder."""
    seen: set[int] = set()
    queue: list[tuple[BaseException | None, Callable[[BaseException | None], None]]] = [(exc, put)]
    while queue:
        error, put = queue.pop()
        if error is None or id(error) in seen:
            continue
        seen.add(id(error))
        try:
            held = _scrub_one(error, scrub)
            if isinstance(error, BaseExceptionGroup) and scrub(error.message) != error.message:
                error = _regrouped(error, scrub(error.message))
                seen.add(id(error))
                put(error)
        except Exception:  # noqa: BLE001 - one that cannot be cleaned is cut off, never shown, never raised instead
            put(None)
            continue
        slot = _Slot(error, put)
        queue += [(error.__cause__, partial(slot.link, "__cause__")),
                  (error.__context__, partial(slot.link, "__context__")),
                  *((found, slot.cut) for found in held)]
        if isinstance(error, BaseExceptionGroup):
            queue += [(member, partial(slot.member, index)) for index, member in enumerate(error.exceptions)]


class _Slot:
    """An exception `_walk` reached and where it goes: its current version (a group is rebuilt for each change of
    its read-only message and members, never changed in place) and the `put` that hands a new one, or a cut, on."""

    def __init__(self, error: BaseException, put: Callable[[BaseException | None], None]) -> None:
        self.error, self.put, self.cut_off = error, put, False

    def link(self, name: str, new: BaseException | None) -> None:
        """Its cause or context replaced (or dropped)."""
        if not self.cut_off:
            setattr(self.error, name, new)

    def cut(self, _new: BaseException | None) -> None:
        """An exception it holds in an attribute could not be cleaned: it is cut itself, once for all."""
        if not self.cut_off:
            self.cut_off = True
            self.put(None)

    def member(self, index: int, new: BaseException | None) -> None:
        """Its member at `index` replaced; a member that cannot be cleaned by an empty one of its type."""
        group = self.error
        if self.cut_off or not isinstance(group, BaseExceptionGroup):
            return
        members = list(group.exceptions)
        members[index] = _bare(members[index]) if new is None else new
        self.error = _regrouped(group, group.message, members)
        self.put(self.error)


def _scrub_one(error: BaseException, scrub: Callable[[str], str]) -> list[BaseException]:
    """`scrubbed` for one exception (raises if it cannot be cleaned): the exceptions it holds in attributes (not a
    group's members), to clean next."""
    error.__traceback__ = None
    found: list[BaseException] = []
    if isinstance(error, SwitchmanError):  # ours: typed values, only its message can hold an echoed key
        if error.args and isinstance(error.args[0], str):
            error.args = (scrub(error.args[0]), *error.args[1:])
    else:
        if not isinstance(error, BaseExceptionGroup):  # a group's args are its message and members (read-only)
            error.args = tuple(_clean(arg, scrub, found) for arg in error.args)
        for name, value in list(getattr(error, "__dict__", {}).items()):
            if name != "__notes__":
                error.__dict__[name] = _clean(value, scrub, found)
        for name in _fields(type(error)):  # kept outside args and __dict__
            try:
                value = getattr(error, name)
            except AttributeError:  # an empty slot
                continue
            cleaned = _clean(value, scrub, found)
            if cleaned is not value:
                setattr(error, name, cleaned)  # (refused: cut off)
    notes = getattr(error, "__notes__", None)
    if isinstance(notes, list):
        error.__notes__ = [scrub(str(note)) for note in notes]
    return found


def _fields(kind: type[BaseException]) -> list[str]:
    """The writable fields an exception keeps outside args and `__dict__`: `__slots__`, and a built-in's own
    (OSError's `filename`, AttributeError's `obj`, UnicodeError's `object`, StopIteration's `value`, ...);
    not BaseException's (its links) nor a group's (read-only: `_regrouped`)."""
    return [name for cls in kind.__mro__ if cls not in (BaseException, BaseExceptionGroup, object)
            for name, field in vars(cls).items() if isinstance(field, MemberDescriptorType)]


def _regrouped(group: BaseExceptionGroup[BaseException], message: str,
               members: Sequence[BaseException] | None = None) -> BaseExceptionGroup[BaseException]:
    """`group` with another message or members (read-only in place): the same type, links, notes and attributes.
    Built by BaseExceptionGroup's own constructor, so a subclass's constructor of another signature does not
    matter."""
    new = BaseExceptionGroup.__new__(type(group), message, group.exceptions if members is None else members)
    if hasattr(group, "__dict__"):
        new.__dict__.update(vars(group))
    for name in _fields(type(group)):
        if hasattr(group, name):
            setattr(new, name, getattr(group, name))
    new.__cause__, new.__context__ = group.__cause__, group.__context__
    new.__suppress_context__ = group.__suppress_context__
    return new


def _gut(error: BaseException) -> BaseException:
    """The error the caller gets could not be cleaned (or holds one that cannot): keep its type, drop the rest. In
    place, but for a group (its message and members are read-only): an empty one of its type instead."""
    if isinstance(error, BaseExceptionGroup):
        return _bare(error)
    error.__traceback__ = error.__cause__ = error.__context__ = None
    drops = [lambda: setattr(error, "args", ()), getattr(error, "__dict__", {}).clear,
             *(partial(setattr, error, name, None) for name in _fields(type(error)))]
    for drop in drops:
        try:
            drop()
        except Exception:  # noqa: BLE001,S110 - read-only: nothing more can be dropped
            pass
    return error


def _bare(error: BaseException) -> BaseException:
    """A new, empty exception of `error`'s type (so `except*` still sorts it); a group's members likewise. A type
    that cannot be made without arguments becomes a plain Exception (or BaseException)."""
    if isinstance(error, BaseExceptionGroup):
        return BaseExceptionGroup.__new__(type(error), "", [_bare(member) for member in error.exceptions])
    try:
        bare = type(error).__new__(type(error))
        if isinstance(bare, type(error)) and not bare.args:
            return bare
    except Exception:  # noqa: BLE001,S110 - a constructor that needs its arguments: a plain stand-in below
        pass
    return Exception() if isinstance(error, Exception) else BaseException()


def _clean(value: object, scrub: Callable[[str], str], found: list[BaseException], depth: int = 0) -> object:
    """A foreign exception's attribute or argument without secrets: text scrubbed, containers rebuilt (a named
    tuple as itself), credential headers redacted by name, any other object as its scrubbed text."""
    if isinstance(value, _PLAIN):
        return value
    if isinstance(value, BaseException):
        found.append(value)
        return value
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, bytes | bytearray):
        return scrub(bytes(value).decode("utf-8", "replace")).encode()
    if depth < 4 and isinstance(value, Mapping):
        return {k: "[redacted]" if str(k).lower() in _CREDENTIAL_HEADERS else _clean(v, scrub, found, depth + 1)
                for k, v in value.items()}
    if depth < 4 and isinstance(value, tuple | list):
        items = [_clean(v, scrub, found, depth + 1) for v in value]
        make = getattr(value, "_make", None)  # a named tuple (aiohttp's RequestInfo): its fields stay readable
        return make(items) if make is not None else tuple(items) if isinstance(value, tuple) else items
    try:
        if hasattr(value, "headers") and hasattr(value, "url"):  # a request or a response: where it went
            return scrub(f"{type(value).__name__}({shown_url(str(value.url))})")  # no query: `?api-key=` there
        return scrub(str(value))
    except Exception:  # noqa: BLE001 - an object that cannot print holds nothing the caller can read
        return f"<{type(value).__name__}>"
