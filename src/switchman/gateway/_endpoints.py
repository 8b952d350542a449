"""The gateway's endpoints: chat completions, models, route, health, metrics."""

from __future__ import annotations

from typing import Any

import anyio.to_thread
import orjson
from starlette.requests import Request
from starlette.responses import Response

from .._exceptions import InvalidRequestError
from ._context import RequestContext, bind_agent, context_from
from ._middleware import MASTER_KEY_ID
from ._gateway import Gateway
from ._schema import check_prompt_size, parse_body
from ._stream import RelayResponse

__all__ = ["Endpoints"]

_JSON = "application/json"
#: Bodies larger than this are parsed and validated in a worker thread, off the event loop.
OFFLOAD_BYTES = 64 * 1024


def _header_value(text: str) -> str:
    """Text safe for an HTTP header: ASCII, one line, bounded."""
    text = text.replace("→", "->").replace("\n", " ").replace("\r", " ")
    return text.encode("ascii", "replace").decode()[:300]


def _route_headers(model: str, reason: str) -> dict[str, str]:
    return {"x-switchman-model": model, "x-switchman-route-reason": _header_value(reason)}


class Endpoints:
    """Request handlers bound to one Gateway."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.dispatcher = gateway.dispatcher
        self._models = orjson.dumps(self._model_list())

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

    async def _parse(self, request: Request) -> dict[str, Any]:
        """The validated chat body, its prompt within the size limit (large bodies parsed off the loop)."""
        limits = self.gateway.config.server.limits
        raw = await request.body()
        if len(raw) > OFFLOAD_BYTES:
            body = await anyio.to_thread.run_sync(parse_body, raw, limits.max_json_depth)
        else:
            body = parse_body(raw, limits.max_json_depth)
        check_prompt_size(body, limits.max_prompt_chars)
        return body

    async def _read(self, request: Request) -> tuple[dict[str, Any], RequestContext]:
        """The body and the caller's context, its agent as the caller's key allows (rejections are recorded)."""
        state = request.scope.get("state", {})
        request_id, key_id = state.get("request_id", ""), state.get("key_id")
        try:
            body = await self._parse(request)
            context = context_from(request.headers, body, request_id=request_id, key_id=key_id,
                                   body_bytes=len(await request.body()))
            return body, bind_agent(context, state.get("key"))
        except InvalidRequestError as exc:
            self.dispatcher.reject(RequestContext(request_id=request_id, key_id=key_id), exc)
            raise

    async def chat_completions(self, request: Request) -> Response:
        """POST /v1/chat/completions."""
        body, context = await self._read(request)
        if body.get("stream"):
            stream = await self.dispatcher.open_stream(body, context)
            return RelayResponse(stream, _route_headers(stream.model, stream.reason))
        completion = await self.dispatcher.complete(body, context)
        headers = _route_headers(completion.model, completion.decision.reason)
        headers["x-switchman-cost-usd"] = f"{completion.cost_usd:.8f}"
        return Response(completion.content, media_type=_JSON, headers=headers)

    async def route(self, request: Request) -> Response:
        """POST /v1/route: the Decision, without calling any model."""
        state = request.scope.get("state", {})
        body = await self._parse(request)
        context = context_from(request.headers, body, request_id=state.get("request_id", ""), key_id=state.get("key_id"))
        _, decision = await self.dispatcher.adecide(body, bind_agent(context, state.get("key")))
        return Response(orjson.dumps(decision.to_dict()), media_type=_JSON,
                        headers=_route_headers(decision.model, decision.reason))

    async def models(self, request: Request) -> Response:
        """GET /v1/models: every model and route."""
        return Response(self._models, media_type=_JSON)

    async def health(self, request: Request) -> Response:
        """GET /health: liveness for anyone; each model's circuit state for the admin (or with auth off)."""
        state = request.scope.get("state", {})
        if state.get("auth_enabled") and state.get("key_id") != MASTER_KEY_ID:
            return Response(b'{"status":"ok"}', media_type=_JSON)
        board = self.dispatcher.health
        states = {name: board.state(name) for name in self.gateway.decider.models}
        return Response(orjson.dumps({"status": "ok", "models": states}), media_type=_JSON)

    async def metrics(self, request: Request) -> Response:
        """GET /metrics: Prometheus text (spend across every tenant: the master key only, by default)."""
        state = request.scope.get("state", {})
        access = self.gateway.config.server.metrics_access
        if state.get("auth_enabled") and access == "admin" and state.get("key_id") != MASTER_KEY_ID:
            raise InvalidRequestError("/metrics needs the master key (or server.metrics_access: keys | open)",
                                      status=403, code="admin_only", kind="permission_error")
        if self.gateway.metrics is None:
            return Response(b"", status_code=204)
        content, content_type = self.gateway.metrics.render()
        return Response(content, media_type=content_type)
