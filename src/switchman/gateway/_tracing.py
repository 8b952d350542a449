"""OpenTelemetry traces of each request (extra `switchman[otel]`), in the GenAI semantic conventions.

One span per request ("chat auto", kind SERVER, parented on the caller's `traceparent`), with a
child for the decision ("switchman.decide") and one per upstream attempt ("chat gpt-4o-mini",
kind CLIENT; a retry or fallback is another child). Each attempt's `traceparent` goes upstream, so a
provider that traces sees the same trace. Attributes follow the GenAI conventions
(`gen_ai.operation.name`, `gen_ai.request.model`, `gen_ai.response.model`,
`gen_ai.usage.input_tokens` / `output_tokens`, `gen_ai.agent.name`, `gen_ai.conversation.id`) plus
switchman's own (`switchman.route`, `.decision.reason`, `.candidates.count`, `.cost_usd`,
`.fallback.count`, ...). The routed prompt is attached (`gen_ai.input.messages`) only when
`server.store_prompts` is on.

Configured by the standard variables, read once from the environment the gateway was given:
tracing is on when `OTEL_TRACES_EXPORTER` names an exporter (otlp, console) or an OTLP endpoint is
set (`OTEL_EXPORTER_OTLP_ENDPOINT` / `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`), and off with
`OTEL_SDK_DISABLED=true`. Also read: `OTEL_EXPORTER_OTLP[_TRACES]_PROTOCOL` (http/protobuf, the
default, or grpc), `OTEL_EXPORTER_OTLP[_TRACES]_HEADERS`, `OTEL_SERVICE_NAME`,
`OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER[_ARG]`; the batch processor reads `OTEL_BSP_*`.
Without the extra installed, a configuration that asks for traces is logged and ignored.
"""

from __future__ import annotations

import contextlib
import logging
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import orjson

from ..__version__ import __version__
from .._exceptions import ConfigError
from ._http import OUTBOUND_HEADERS

if TYPE_CHECKING:
    from ..ledger import LedgerRecord
    from ..routing import Decision
    from ._context import RequestContext
    from ._providers import Deployment

__all__ = ["Tracing"]

logger = logging.getLogger("switchman.gateway")

_HTTP_TRACES_PATH = "/v1/traces"
_NULL = contextlib.nullcontext()


def _parse_pairs(text: str) -> dict[str, str]:
    """`k1=v1,k2=v2` (values URL-encoded), as OTEL_*_HEADERS and OTEL_RESOURCE_ATTRIBUTES are written."""
    pairs: dict[str, str] = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        if sep and key.strip():
            pairs[key.strip()] = urllib.parse.unquote(value.strip())
    return pairs


def _first(env: Mapping[str, str], *names: str) -> str | None:
    return next((env[n] for n in names if env.get(n)), None)


def _wanted_exporter(env: Mapping[str, str]) -> str | None:
    """The exporter the environment asks for, or None when tracing is off."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    named = env.get("OTEL_TRACES_EXPORTER", "").split(",")[0].strip().lower()
    if named:
        return None if named == "none" else named
    if _first(env, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"):
        return "otlp"
    return None


def _exporter(kind: str, env: Mapping[str, str]) -> Any:
    if kind == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    if kind != "otlp":
        raise ConfigError(f"OTEL_TRACES_EXPORTER={kind!r}: switchman exports traces with 'otlp' or 'console'")
    protocol = (_first(env, "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL") or "http/protobuf")
    headers = _parse_pairs(_first(env, "OTEL_EXPORTER_OTLP_TRACES_HEADERS", "OTEL_EXPORTER_OTLP_HEADERS") or "")
    endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    base = env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    if protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        if endpoint is None:
            endpoint = (base or "http://localhost:4318").rstrip("/") + _HTTP_TRACES_PATH
        return OTLPSpanExporter(endpoint=endpoint, headers=headers or None)
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

        return GrpcExporter(endpoint=endpoint or base or "http://localhost:4317", headers=headers or None)
    raise ConfigError(f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r}: use 'http/protobuf' or 'grpc'")


def _sampler(env: Mapping[str, str]) -> Any:
    from opentelemetry.sdk.trace import sampling

    name = (env.get("OTEL_TRACES_SAMPLER") or "parentbased_always_on").strip().lower()
    try:
        ratio = float(env.get("OTEL_TRACES_SAMPLER_ARG") or 1.0)
    except ValueError:
        raise ConfigError(f"OTEL_TRACES_SAMPLER_ARG={env.get('OTEL_TRACES_SAMPLER_ARG')!r} is not a number") from None
    samplers = {
        "always_on": sampling.ALWAYS_ON, "always_off": sampling.ALWAYS_OFF,
        "traceidratio": sampling.TraceIdRatioBased(ratio),
        "parentbased_always_on": sampling.ParentBased(sampling.ALWAYS_ON),
        "parentbased_always_off": sampling.ParentBased(sampling.ALWAYS_OFF),
        "parentbased_traceidratio": sampling.ParentBased(sampling.TraceIdRatioBased(ratio)),
    }
    if name not in samplers:
        raise ConfigError(f"OTEL_TRACES_SAMPLER={name!r}: use one of {', '.join(samplers)}")
    return samplers[name]


class Tracing:
    """Spans for the dispatcher; with no tracer provider every method is a no-op costing ~nothing.

        tracing = Tracing.from_environment(os.environ)          # or Tracing(provider) in tests
        span = tracing.start(body, context)
        with tracing.decision(span) as decide: ...; tracing.decided(decide, decision)
        with tracing.attempt(span, deployment, n, scrub): ...  # traceparent goes upstream
        tracing.finish(span, record)
    """

    def __init__(self, provider: Any = None, *, record_prompts: bool = False, owns_provider: bool = False) -> None:
        self.provider = provider
        self.record_prompts = record_prompts
        self._owns = owns_provider
        self._tracer: Any = None
        if provider is not None:
            from opentelemetry import trace
            from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

            self._tracer = provider.get_tracer("switchman", __version__)
            self._trace = trace
            self._propagator = TraceContextTextMapPropagator()

    @classmethod
    def from_environment(cls, env: Mapping[str, str], *, record_prompts: bool = False) -> Tracing:
        """Tracing as the OTEL_* variables in `env` configure it (off when they ask for nothing)."""
        kind = _wanted_exporter(env)
        if kind is None:
            return cls()
        try:
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor
        except ImportError:
            logger.warning("OTEL_* variables ask for traces but OpenTelemetry is not installed: "
                           "pip install 'switchman[otel]'; tracing is off")
            return cls()
        attributes: dict[str, Any] = _parse_pairs(env.get("OTEL_RESOURCE_ATTRIBUTES", ""))
        attributes["service.name"] = env.get("OTEL_SERVICE_NAME") or attributes.get("service.name") or "switchman"
        attributes.setdefault("service.version", __version__)
        provider = TracerProvider(resource=Resource.create(attributes), sampler=_sampler(env))
        provider.add_span_processor(BatchSpanProcessor(_exporter(kind, env)))
        return cls(provider, record_prompts=record_prompts, owns_provider=True)

    @property
    def enabled(self) -> bool:
        """Whether spans are made at all."""
        return self._tracer is not None

    def shutdown(self) -> None:
        """Export what is still buffered and stop (only a provider this object made)."""
        if self._owns and self.provider is not None:
            self.provider.shutdown()

    # -- the request span ----------------------------------------------------------------------
    def start(self, body: Mapping[str, Any], context: RequestContext) -> Any:
        """The request's span (None when tracing is off), parented on the caller's traceparent."""
        if self._tracer is None:
            return None
        parent = None
        if context.traceparent:
            carrier = {"traceparent": context.traceparent}
            if context.tracestate:
                carrier["tracestate"] = context.tracestate
            parent = self._propagator.extract(carrier)
        requested = str(body.get("model", ""))
        attributes: dict[str, Any] = {"gen_ai.operation.name": "chat", "gen_ai.request.model": requested,
                                      "switchman.request_id": context.request_id}
        for name, key in (("gen_ai.request.max_tokens", "max_tokens"), ("gen_ai.request.temperature", "temperature"),
                          ("gen_ai.request.top_p", "top_p")):
            value = body.get(key)
            if isinstance(value, int | float) and not isinstance(value, bool):
                attributes[name] = value
        if body.get("max_completion_tokens") is not None:
            attributes["gen_ai.request.max_tokens"] = body["max_completion_tokens"]
        if context.agent:
            attributes["gen_ai.agent.name"] = attributes["switchman.agent"] = context.agent
        if context.session:
            attributes["gen_ai.conversation.id"] = attributes["switchman.session"] = context.session
        if body.get("stream"):
            attributes["switchman.stream"] = True
        return self._tracer.start_span(f"chat {requested}", context=parent, kind=self._trace.SpanKind.SERVER,
                                       attributes=attributes)

    def finish(self, span: Any, record: LedgerRecord, error: BaseException | None = None,
               prompt: str | None = None) -> None:
        """Close the request's span with what the ledger recorded about it."""
        if span is None:
            return
        attributes: dict[str, Any] = {
            "switchman.status": record.status, "switchman.cost_usd": record.cost_usd,
            "switchman.fallback.count": max(len(record.fallback_chain) - 1, 0),
            "switchman.candidates.count": len(record.candidates),
        }
        if record.model:
            attributes["gen_ai.response.model"] = record.model
        if record.route:
            attributes["switchman.route"] = record.route
        if record.reason:
            attributes["switchman.decision.reason"] = record.reason
        if record.strategy:
            attributes["switchman.decision.strategy"] = record.strategy
        if record.baseline_cost_usd is not None:
            attributes["switchman.baseline_cost_usd"] = record.baseline_cost_usd
        if record.task:
            attributes["switchman.task"] = record.task
        if record.input_tokens or record.output_tokens:
            attributes["gen_ai.usage.input_tokens"] = record.input_tokens
            attributes["gen_ai.usage.output_tokens"] = record.output_tokens
        if record.ttft_ms is not None:
            attributes["switchman.ttft_ms"] = record.ttft_ms
        if record.deployment:
            attributes["switchman.deployment"] = record.deployment
        if record.cache:
            attributes["switchman.cache"] = record.cache
        if self.record_prompts and prompt:
            attributes["gen_ai.input.messages"] = orjson.dumps(
                [{"role": "user", "parts": [{"type": "text", "content": prompt}]}]).decode()
        span.set_attributes(attributes)
        if record.status != "ok":
            span.set_attribute("error.type", type(error).__name__ if error is not None else record.status)
            span.set_status(self._trace.Status(self._trace.StatusCode.ERROR, record.error or record.status))
        span.end()

    # -- children ------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _child(self, parent: Any, name: str, kind: Any, attributes: dict[str, Any],
               scrub: Callable[[str], str] = str) -> Iterator[Any]:
        ctx = self._trace.set_span_in_context(parent)
        span = self._tracer.start_span(name, context=ctx, kind=kind, attributes=attributes)
        try:
            yield span
        except BaseException as exc:
            span.set_attribute("error.type", type(exc).__name__)
            span.set_status(self._trace.Status(self._trace.StatusCode.ERROR, scrub(str(exc))[:200]))
            raise
        finally:
            span.end()

    def decision(self, parent: Any) -> contextlib.AbstractContextManager[Any]:
        """A child span around the decision (policy, strategy, session, budget)."""
        if parent is None:
            return _NULL
        return self._child(parent, "switchman.decide", self._trace.SpanKind.INTERNAL, {})

    def decided(self, span: Any, decision: Decision) -> None:
        """Note the decision on its span."""
        if span is not None:
            span.set_attributes({"switchman.decision.model": decision.model, "switchman.route": decision.route or "",
                                 "switchman.decision.strategy": decision.strategy,
                                 "switchman.decision.reason": decision.reason,
                                 "switchman.candidates.count": len(decision.candidates),
                                 "switchman.excluded.count": len(decision.excluded)})

    @contextlib.contextmanager
    def _attempt(self, parent: Any, deployment: Deployment, number: int, scrub: Callable[[str], str]) -> Iterator[Any]:
        provider = deployment.provider
        host = urllib.parse.urlsplit(provider.base_url)
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "chat", "gen_ai.request.model": deployment.wire_name,
            "gen_ai.provider.name": provider.kind, "gen_ai.system": provider.kind,
            "switchman.model": deployment.name, "switchman.deployment": deployment.id,
            "switchman.provider": provider.name, "switchman.attempt": number,
        }
        if host.hostname:
            attributes["server.address"] = host.hostname
            attributes["server.port"] = host.port or (443 if host.scheme == "https" else 80)
        with self._child(parent, f"chat {deployment.wire_name}", self._trace.SpanKind.CLIENT,
                         attributes, scrub) as span:
            carrier: dict[str, str] = {}
            self._propagator.inject(carrier, context=self._trace.set_span_in_context(span))
            token = OUTBOUND_HEADERS.set(carrier)
            try:
                yield span
            finally:
                OUTBOUND_HEADERS.reset(token)
            span.set_attribute("gen_ai.response.model", deployment.wire_name)

    def attempt(self, parent: Any, deployment: Deployment, number: int,
                scrub: Callable[[str], str]) -> contextlib.AbstractContextManager[Any]:
        """A child span around one upstream call; its traceparent goes out with the request.

        `scrub` cleans a failure's message before it becomes the span's status: an upstream's error
        may quote the key it refused, and spans leave for a collector.
        """
        if parent is None:
            return _NULL
        return self._attempt(parent, deployment, number, scrub)
