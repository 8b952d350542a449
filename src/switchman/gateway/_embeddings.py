"""Embeddings: `POST /v1/embeddings` passed through to the named model, with budgets and a ledger row.

Embedding models are not interchangeable (each has its own vector space), so nothing is routed
by quality: the request names a configured model, whose OpenAI-compatible provider answers it,
with the usual retries and circuit breaker, budget reservation, metrics and one ledger row priced
at the model's input price.

    completion = await embed(dispatcher, body, RequestContext(api="embeddings"))
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

import orjson

from .._exceptions import InvalidRequestError, UnknownModelError, UpstreamServerError
from .._tokens import count_tokens_for_routing
from ..routing import Decision, RouteRequest
from ._context import RequestContext
from ._dispatcher import Completion, Dispatcher
from ._offload import OFFLOAD_BYTES, run_offloaded
from ._providers import Deployment
from ._wire import Usage, reported_usage

__all__ = ["check_embeddings", "embed"]

_REASON = "embeddings: model requested by name"


def _inputs(value: Any) -> list[str] | None:
    """The texts to embed (token arrays counted as text of their ids), or None when malformed."""
    if isinstance(value, str):
        return [value] if value else None
    if not isinstance(value, list) or not value:
        return None
    if all(isinstance(v, int) for v in value):
        return [" ".join(map(str, value))]
    if all(isinstance(v, str) and v for v in value):
        return list(value)
    if all(isinstance(v, list) and v and all(isinstance(t, int) for t in v) for v in value):
        return [" ".join(map(str, v)) for v in value]
    return None


def check_embeddings(data: dict[str, Any]) -> dict[str, Any]:
    """`data` when it is a valid embeddings body; InvalidRequestError naming the problem otherwise."""
    model = data.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequestError("missing required parameter: 'model'", param="model",
                                  code="missing_required_parameter")
    if "input" not in data:
        raise InvalidRequestError("missing required parameter: 'input'", param="input",
                                  code="missing_required_parameter")
    if _inputs(data["input"]) is None:
        raise InvalidRequestError("input must be a non-empty string, a list of non-empty strings, or token arrays",
                                  param="input", code="invalid_value")
    return data


def _decide(dispatcher: Dispatcher, body: Mapping[str, Any], context: RequestContext) -> tuple[RouteRequest, Decision]:
    model = str(body["model"])
    specs = dispatcher.decider.models
    if model not in specs:
        raise UnknownModelError(f"unknown embedding model {model!r}: embeddings go to the model named, one of: "
                                f"{', '.join(sorted(specs))}")
    for deployment in dispatcher.deployments[model]:
        if deployment.provider.kind != "openai":
            raise InvalidRequestError(f"model {model!r} is served by provider {deployment.provider.name!r} "
                                      f"({deployment.provider.kind} API), which has no embeddings endpoint",
                                      param="model", code="unsupported_model")
    texts = _inputs(body["input"]) or []
    request = RouteRequest(prompt=texts[0][:2000] if texts else "",
                           input_tokens=sum(count_tokens_for_routing(t) for t in texts), max_tokens=0,
                           agent=context.agent, tags=frozenset(context.tags), task="embedding")
    return request, Decision(model=model, reason=_REASON, strategy="fixed", fallbacks=())


async def _call(dispatcher: Dispatcher, deployment: Deployment, body: Mapping[str, Any]) -> tuple[bytes, Usage | None]:
    pool, adapter, name = deployment.provider.pool, deployment.adapter, deployment.name
    request = pool.request("POST", "/embeddings", orjson.dumps({**body, "model": deployment.wire_name}))
    with adapter.map_errors(name):
        response = await pool.send(request, connect_timeout=deployment.connect_s, read_timeout=deployment.total_s)
        try:
            content = await response.aread()
        finally:
            await response.aclose()
        if response.status_code >= 400:
            raise adapter.error(response.status_code, content, response.headers, name)
        data = orjson.loads(content)
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise UpstreamServerError(f"{name}: upstream answered without embeddings", model=name)
    usage = data.get("usage")
    if not isinstance(usage, dict):
        return content, None
    return content, reported_usage(usage.get("prompt_tokens") or usage.get("total_tokens"), 0)


async def embed(dispatcher: Dispatcher, body: Mapping[str, Any], context: RequestContext) -> Completion:
    """Embed through the named model (raises a SwitchmanError when it cannot, after recording it)."""
    decide: Callable[[], tuple[RouteRequest, Decision]] = partial(_decide, dispatcher, body, context)
    if context.body_bytes > OFFLOAD_BYTES:  # counting the tokens of many inputs must not hold the event loop
        decide = await dispatcher.decide_with(context, run_offloaded(decide))
    exchange = await dispatcher._begin(body, context, decide=decide)
    try:
        content, usage = await dispatcher._attempts(exchange, lambda d: _call(dispatcher, d, body))
    except BaseException as exc:  # every failure, cancellation included, still writes the one ledger row
        dispatcher.finish(exchange, exc)
        raise
    if usage is None:
        usage = Usage(exchange.request.input_tokens if exchange.request else 0, 0)
        exchange.usage_estimated = True
    exchange.usage = usage
    assert exchange.decision is not None and exchange.model is not None
    cost = exchange.cost(dispatcher.decider.models)
    dispatcher.finish(exchange)
    return Completion(content, exchange.model, exchange.decision, cost, context.request_id,
                      deployment=exchange.deployment, limits=exchange.admission)
