"""The gateway's endpoints: chat completions, models, route, health, metrics."""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Mapping
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope

from .._exceptions import InvalidRequestError
from ._rate_headers import Dialect, rate_headers
from ._context import RequestContext, bind_agent, context_from, context_headers
from ._direct import read_body
from ._dispatcher import Completion, Dispatcher
from ._offload import OFFLOAD_BYTES, run_offloaded
from ._gateway import Gateway
from ._items import item_check
from ._middleware import MASTER_KEY_ID
from ._schema import check_body, check_prompt_size, read_json
from ._response_cache import ReplayStream
from ._stream import ChatStream, RelayResponse

__all__ = ["Endpoints", "completion_response", "header_value", "parse_request", "read_request", "route_headers"]

_JSON = "application/json"


#: The only ASCII characters `_ASCII` maps: the controls (line breaks, tabs, NUL, ESC, DEL...), each to a space
#: (the HTTP server does not check the headers it sends, and reasons carry names a client wrote).
_ASCII_CONTROLS = str.maketrans({chr(c): " " for c in (*range(32), 127)})

#: Symbols route reasons use, spelled in ASCII (an HTTP header is Latin-1 at best; clients show "?").
_ASCII = str.maketrans({"→": "->", "←": "<-", "≤": "<=", "≥": ">=", "≠": "!=", "≈": "~", "×": "x", "−": "-",
                        "–": "-", "—": "-", "…": "...", "‘": "'", "’": "'", "“": '"', "”": '"', "·": "*",
                        "λ": "lambda", "Δ": "delta"}) | _ASCII_CONTROLS


def header_value(text: str) -> str:
    """Text safe for an HTTP header: ASCII spelled out (≤ → <=, é → e, else \\uXXXX), one line, bounded."""
    if text.isascii():  # the usual reason and deployment: only controls to map (str.translate with a dict
        # looks every character up, ~3 µs for a route reason), and encoding changes nothing
        if not text.isprintable():  # in ASCII, exactly the controls (C0 and DEL)
            text = text.translate(_ASCII_CONTROLS)
        return text[:300]
    text = text.translate(_ASCII)
    if not text.isascii():
        text = unicodedata.normalize("NFKD", text)
        text = "".join(c for c in text if not unicodedata.combining(c))
    return text.encode("ascii", "backslashreplace").decode("ascii")[:300]


def route_headers(model: str, reason: str, *, deployment: str | None = None, cache: str | None = None) -> dict[str, str]:
    """The headers that say which model (and deployment) answered, why, and whether from the response cache."""
    headers = {"x-switchman-model": model, "x-switchman-route-reason": header_value(reason)}
    if deployment is not None:
        headers["x-switchman-deployment"] = header_value(deployment)
    if cache is not None:
        headers["x-switchman-cache"] = cache
    return headers


def stream_headers(stream: ChatStream | ReplayStream, dialect: Dialect = "openai") -> dict[str, str]:
    """A stream's headers, whichever API opened it: the route and the caller's rate limits (in `dialect`'s
    spelling)."""
    headers = route_headers(stream.model, stream.reason, deployment=stream.deployment, cache=stream.cache)
    return headers | rate_headers(stream.limits, dialect)


def _route_raw(model: str, reason: str, deployment: str | None, cache: str | None) -> list[tuple[bytes, bytes]]:
    """`route_headers` as a Response's raw headers. Not memoized: the default route's reason holds the
    request's estimated cost, so a memo would mostly miss on real traffic and only help a benchmark that
    sends one body over and over."""
    headers = route_headers(model, reason, deployment=deployment, cache=cache)
    return [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]


class _JSONAnswer(Response):
    """A 200 JSON answer whose raw headers the endpoint built: what `Response(content, media_type=_JSON,
    headers=...)` sends (the given headers, content-length, content-type), without re-encoding the
    headers that repeat from one request to the next."""

    media_type = _JSON

    def __init__(self, content: bytes, raw_headers: list[tuple[bytes, bytes]]) -> None:
        self.status_code = 200
        self.background = None
        self.body = content
        self.raw_headers = raw_headers


_JSON_TYPE = (b"content-type", _JSON.encode("latin-1"))


def completion_response(completion: Completion) -> Response:
    """The 200 answer to a non-stream request: its body, the route, rate-limit and cost headers."""
    content = completion.content
    raw = _route_raw(completion.model, completion.decision.reason, completion.deployment, completion.cache)
    if completion.limits is not None:
        raw += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in rate_headers(completion.limits).items()]
    raw += [(b"x-switchman-cost-usd", f"{completion.cost_usd:.8f}".encode("latin-1")),
            (b"content-length", str(len(content)).encode("latin-1")), _JSON_TYPE]
    return _JSONAnswer(content, raw)


async def read_request(
    dispatcher: Dispatcher, request: Request, parse: Callable[[dict[str, Any]], dict[str, Any]] = check_body,
    *, api: str = "chat.completions", record: bool = True,
) -> tuple[dict[str, Any], RequestContext]:
    """The request's body in the dispatcher's shape (`parse` translates and validates it) and its context.

    The body is held to the server's limits (nesting, prompt size; a large one is parsed off the event
    loop) and the context's agent to what the caller's key allows. A request refused here still gets
    its ledger row (unless `record` is false: /v1/route calls no model and keeps no record).
    """
    return await parse_request(dispatcher, request.scope.get("state", {}), await request.body(), request.headers,
                               parse, api=api, record=record)


async def parse_request(
    dispatcher: Dispatcher, state: Mapping[str, Any], raw: bytes, headers: Mapping[str, str],
    parse: Callable[[dict[str, Any]], dict[str, Any]] = check_body, *, api: str = "chat.completions",
    record: bool = True,
) -> tuple[dict[str, Any], RequestContext]:
    """`read_request` for a body already read: `state` is the scope's, `headers` the request's (lowercase names)."""
    request_id, key_id = state.get("request_id", ""), state.get("key_id")
    limits = dispatcher.decider.config.server.limits
    items = item_check(raw, limits, api)
    try:
        if len(raw) > OFFLOAD_BYTES:
            body = await run_offloaded(lambda: parse(read_json(raw, limits.max_json_depth, items)))
        else:
            body = parse(read_json(raw, limits.max_json_depth, items))
        check_prompt_size(body, limits.max_prompt_chars, "input" if api == "responses" else "messages")
        context = context_from(headers, body, request_id=request_id, key_id=key_id, api=api, body_bytes=len(raw))
        return body, bind_agent(context, state.get("key"))
    except InvalidRequestError as exc:
        if record:
            dispatcher.reject(RequestContext(request_id=request_id, key_id=key_id, api=api), exc)
        raise


class Endpoints:
    """Request handlers bound to one Gateway."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self._models = orjson.dumps(self._model_list())
        self._models_of = gateway.config
        # Read once, as the authentication layer reads it (which decides whether /metrics needs a key at all):
        # a reload that changes it is logged as needing a restart, so neither half may follow it.
        self._metrics_access = gateway.config.server.metrics_access

    @property
    def dispatcher(self) -> Dispatcher:
        """The gateway's current dispatcher (a configuration reload replaces it)."""
        return self.gateway.dispatcher

    def _model_list(self) -> dict[str, Any]:
        config = self.gateway.config
        data: list[dict[str, Any]] = [
            {"id": name, "object": "model", "created": 0, "owned_by": spec.provider}
            for name, spec in self.gateway.decider.models.items()
        ]
        if config.default_route_name is not None:
            data.append({"id": "auto", "object": "model", "created": 0, "owned_by": "switchman",
                         "route": config.default_route_name})
        data += [
            {"id": f"auto:{name}", "object": "model", "created": 0, "owned_by": "switchman", "route": name,
             "candidates": list(route.candidates), "strategy": route.strategy}
            for name, route in config.routes.items()
        ]
        return {"object": "list", "data": data}

    async def chat_completions(self, request: Request) -> Response:
        """POST /v1/chat/completions."""
        return await self.answer_chat(request.scope.get("state", {}), await request.body(), request.headers)

    async def chat_completions_direct(self, scope: Scope, receive: Receive) -> Response:
        """POST /v1/chat/completions as `DirectRoutes` serves it: the body read from `receive`, no Request object."""
        return await self.answer_chat(scope.get("state", {}), await read_body(receive),
                                      context_headers(scope["headers"]))

    async def answer_chat(self, state: Mapping[str, Any], raw: bytes, headers: Mapping[str, str]) -> Response:
        """The answer to a chat completions request: its body `raw`, its `headers`, its scope's `state`."""
        dispatcher = self.dispatcher  # once: a reload while the body is parsed must not answer with the next one
        body, context = await parse_request(dispatcher, state, raw, headers)
        if body.get("stream"):
            stream = await dispatcher.open_stream(body, context)
            return RelayResponse(stream, stream_headers(stream))
        return completion_response(await dispatcher.complete(body, context))

    async def route(self, request: Request) -> Response:
        """POST /v1/route: the Decision, without calling any model."""
        dispatcher = self.dispatcher  # once: the body is read under one configuration and decided under it
        body, context = await read_request(dispatcher, request, record=False)
        _, decision = await dispatcher.adecide(body, context)
        return Response(orjson.dumps(decision.to_dict()), media_type=_JSON,
                        headers=route_headers(decision.model, decision.reason))

    async def models(self, request: Request) -> Response:
        """GET /v1/models: every model and route."""
        if self._models_of is not self.gateway.config:  # reloaded
            self._models, self._models_of = orjson.dumps(self._model_list()), self.gateway.config
        return Response(self._models, media_type=_JSON)

    async def health(self, request: Request) -> Response:
        """GET /health: liveness for anyone; each model's and deployment's state for the admin (or with auth off)."""
        state = request.scope.get("state", {})
        if state.get("auth_enabled") and state.get("key_id") != MASTER_KEY_ID:
            return Response(b'{"status":"ok"}', media_type=_JSON)
        balancer = self.dispatcher.balancer
        states = {name: balancer.model_state(name) for name in self.gateway.decider.models}
        deployments = {
            s.id: {"model": s.model, "provider": s.provider, "state": s.state, "ttft_ms": s.ttft_ms,
                   "tokens_per_s": s.tokens_per_s, "in_flight": s.in_flight, "weight": s.weight}
            for s in balancer.status()
        }
        return Response(orjson.dumps({"status": "ok", "models": states, "deployments": deployments}),
                        media_type=_JSON)

    async def metrics(self, request: Request) -> Response:
        """GET /metrics: Prometheus text (spend across every tenant: the master key only, by default)."""
        state = request.scope.get("state", {})
        if state.get("auth_enabled") and self._metrics_access == "admin" and state.get("key_id") != MASTER_KEY_ID:
            raise InvalidRequestError("/metrics needs the master key (or server.metrics_access: keys | open)",
                                      status=403, code="admin_only", kind="permission_error")
        if self.gateway.metrics is None:
            return Response(b"", status_code=204)
        content, content_type = self.gateway.metrics.render()
        return Response(content, media_type=content_type)
