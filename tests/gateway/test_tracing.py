"""OpenTelemetry traces: the attribute contract (in-memory exporter) and a real OTLP/HTTP export.

A real gateway on loopback, the real openai client, the fake upstream; the OTLP receiver is a
plain HTTP server that decodes the protobuf body with opentelemetry-proto.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import anyio
import httpx
import openai
import pytest
from server_support import serving_handler
import yaml
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from switchman._config import parse_config
from switchman._exceptions import ConfigError
from switchman.gateway import ConfigReloader, Gateway, build_app
from switchman.gateway._tracing import Tracing
from switchman.testing import FakeUpstream

from .conftest import ASK, ENV, OPENAI_KEY, WRONG_KEY, ServerThread, config_data, ledger_row

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT_ID = "b7ad6b7169203331"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"


def _gateway(upstream: FakeUpstream, tmp_path: Path, *, store_prompts: bool = False,
             env: dict[str, str] | None = None) -> Gateway:
    data = config_data(upstream, f"sqlite:///{tmp_path / 'ledger.sqlite3'}")
    data["server"]["store_prompts"] = store_prompts
    return Gateway.from_config(parse_config(data), env={**ENV, **(env or {})})


@pytest.fixture
def traced(upstream: FakeUpstream, tmp_path: Path) -> Iterator[tuple[str, Gateway, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    gateway = _gateway(upstream, tmp_path)
    gateway.dispatcher.tracing = Tracing(provider)
    upstream.clear()
    with ServerThread(build_app(gateway)) as url:
        yield url, gateway, exporter
    upstream.clear()


def _chat(url: str, model: str = "auto", headers: dict[str, str] | None = None,
          messages: list[dict[str, str]] = ASK) -> httpx.Response:
    """A chat request (one message unless told) to the gateway at `url`."""
    return httpx.post(url + "/v1/chat/completions", json={"model": model, "messages": messages}, headers=headers,
                      timeout=30)


def _by_name(spans: tuple[ReadableSpan, ...], prefix: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name.startswith(prefix)]


def test_request_span_follows_the_genai_conventions(traced: tuple[str, Gateway, InMemorySpanExporter],
                                                    upstream: FakeUpstream) -> None:
    url, gateway, exporter = traced
    client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="auto", messages=ASK, max_tokens=30, temperature=0.2,
        extra_headers={"traceparent": TRACEPARENT, "x-switchman-agent": "triage", "x-switchman-session": "s-1"})
    request_id = raw.headers["x-switchman-request-id"]
    record = ledger_row(gateway, request_id)
    spans = exporter.get_finished_spans()
    (root,) = [s for s in spans if s.kind == SpanKind.SERVER]
    assert root.name == "chat auto"
    # Parented on the caller's trace.
    assert format(root.context.trace_id, "032x") == TRACE_ID
    assert root.parent is not None and format(root.parent.span_id, "016x") == PARENT_ID
    attrs = root.attributes or {}
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.request.model"] == "auto"
    assert attrs["gen_ai.response.model"] == record.model == "cheap"
    assert attrs["gen_ai.request.max_tokens"] == 30 and attrs["gen_ai.request.temperature"] == 0.2
    assert attrs["gen_ai.usage.input_tokens"] == record.input_tokens > 0
    assert attrs["gen_ai.usage.output_tokens"] == record.output_tokens > 0
    assert attrs["gen_ai.agent.name"] == attrs["switchman.agent"] == "triage"
    assert attrs["gen_ai.conversation.id"] == attrs["switchman.session"] == "s-1"
    assert attrs["switchman.route"] == "default"
    assert attrs["switchman.decision.reason"] == record.reason
    assert attrs["switchman.candidates.count"] == 3
    assert attrs["switchman.cost_usd"] == pytest.approx(record.cost_usd)
    assert attrs["switchman.fallback.count"] == 0
    assert attrs["switchman.request_id"] == request_id
    assert "gen_ai.input.messages" not in attrs  # store_prompts is off
    assert root.status.status_code != StatusCode.ERROR
    # Children: the decision and one upstream attempt, in the same trace.
    (decide,) = _by_name(spans, "switchman.decide")
    (attempt,) = [s for s in spans if s.kind == SpanKind.CLIENT]
    for child in (decide, attempt):
        assert child.parent is not None and child.parent.span_id == root.context.span_id
        assert child.context.trace_id == root.context.trace_id
    assert (decide.attributes or {})["switchman.decision.model"] == "cheap"
    assert attempt.name == "chat cheap"
    a = attempt.attributes or {}
    assert a["gen_ai.provider.name"] == "openai" and a["server.address"] == "127.0.0.1"
    # The attempt's traceparent went upstream.
    (sent,) = upstream.requests_for("cheap")
    assert sent.headers["traceparent"] == f"00-{TRACE_ID}-{format(attempt.context.span_id, '016x')}-01"


def test_each_retry_is_a_span_and_failures_are_marked(traced: tuple[str, Gateway, InMemorySpanExporter],
                                                      upstream: FakeUpstream) -> None:
    url, gateway, exporter = traced
    upstream.inject("server_error", model="cheap", times=1)
    response = _chat(url)
    assert response.status_code == 200
    spans = exporter.get_finished_spans()
    attempts = sorted((s for s in spans if s.kind == SpanKind.CLIENT), key=lambda s: s.start_time or 0)
    assert [s.name for s in attempts] == ["chat cheap", "chat cheap"]
    assert attempts[0].status.status_code == StatusCode.ERROR
    assert (attempts[0].attributes or {})["error.type"] == "UpstreamServerError"
    assert attempts[1].status.status_code != StatusCode.ERROR
    assert [(s.attributes or {})["switchman.attempt"] for s in attempts] == [1, 2]
    (root,) = [s for s in spans if s.kind == SpanKind.SERVER]
    assert root.parent is None  # no traceparent from the caller: a new trace
    # A new trace still reaches the provider.
    assert all(r.headers["traceparent"].split("-")[1] == format(root.context.trace_id, "032x")
               for r in upstream.requests_for("cheap"))


def test_a_failed_attempt_span_names_no_key(traced: tuple[str, Gateway, InMemorySpanExporter]) -> None:
    url, _, exporter = traced
    # The upstream refuses the key and echoes it in its error, as OpenAI's 401 does.
    response = _chat(url, "locked")
    assert response.status_code == 502
    spans = exporter.get_finished_spans()
    (attempt,) = [s for s in spans if s.kind == SpanKind.CLIENT]
    assert attempt.status.status_code == StatusCode.ERROR
    assert "[redacted]" in (attempt.status.description or "")
    for span in spans:
        exported = f"{span.to_json()}"
        assert WRONG_KEY not in exported and OPENAI_KEY not in exported


def test_a_failed_request_span_is_an_error(traced: tuple[str, Gateway, InMemorySpanExporter],
                                           upstream: FakeUpstream) -> None:
    url, _, exporter = traced
    upstream.inject("bad_request", model="cheap", times=1)
    response = _chat(url, "auto:strict")
    assert response.status_code == 400
    (root,) = [s for s in exporter.get_finished_spans() if s.kind == SpanKind.SERVER]
    assert root.status.status_code == StatusCode.ERROR
    assert (root.attributes or {})["switchman.status"] == "bad_request"
    assert (root.attributes or {})["error.type"] == "UpstreamBadRequestError"


def test_a_streamed_request_span_ends_with_the_stream(traced: tuple[str, Gateway, InMemorySpanExporter]) -> None:
    url, gateway, exporter = traced
    client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
    chunks = list(client.chat.completions.create(model="auto", messages=ASK, stream=True,
                                                 stream_options={"include_usage": True}))
    assert chunks
    deadline = time.monotonic() + 5  # the span ends when the server has finished the stream, a moment after the client
    while not [s for s in exporter.get_finished_spans() if s.kind == SpanKind.SERVER] and time.monotonic() < deadline:
        time.sleep(0.01)
    (root,) = [s for s in exporter.get_finished_spans() if s.kind == SpanKind.SERVER]
    attrs = root.attributes or {}
    assert attrs["switchman.stream"] is True
    assert attrs["switchman.ttft_ms"] > 0
    assert attrs["gen_ai.usage.output_tokens"] > 0


def test_prompt_text_only_when_store_prompts_allows(upstream: FakeUpstream, tmp_path: Path) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    gateway = _gateway(upstream, tmp_path, store_prompts=True)
    gateway.dispatcher.tracing = Tracing(provider, record_prompts=True)
    with ServerThread(build_app(gateway)) as url:
        _chat(url, messages=[{"role": "user", "content": "what is the capital of Peru?"}]).raise_for_status()
    (root,) = [s for s in exporter.get_finished_spans() if s.kind == SpanKind.SERVER]
    assert "capital of Peru" in str((root.attributes or {})["gen_ai.input.messages"])


def test_store_prompts_turned_off_by_a_reload_stops_prompts_in_spans(upstream: FakeUpstream, tmp_path: Path) -> None:
    # The ledger stops keeping prompts at once; spans, which leave for a collector, must stop too.
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    data = config_data(upstream, f"sqlite:///{tmp_path / 'ledger.sqlite3'}")
    data["server"]["store_prompts"] = True
    path = tmp_path / "switchman.yaml"
    path.write_text(yaml.safe_dump(data))
    gateway = Gateway.from_config(parse_config(data), base_dir=tmp_path, env=ENV)
    gateway.dispatcher.tracing = Tracing(provider, record_prompts=True)
    data["server"]["store_prompts"] = False
    path.write_text(yaml.safe_dump(data))
    assert anyio.run(ConfigReloader(gateway, path).reload) is True
    with ServerThread(build_app(gateway)) as url:
        _chat(url, messages=[{"role": "user", "content": "what is the capital of Peru?"}]).raise_for_status()
    (root,) = [s for s in exporter.get_finished_spans() if s.kind == SpanKind.SERVER]
    assert "gen_ai.input.messages" not in (root.attributes or {})


class _Receiver(BaseHTTPRequestHandler):
    """An OTLP/HTTP collector: decodes each export with opentelemetry-proto."""

    exports: list[ExportTraceServiceRequest] = []
    paths: list[str] = []
    headers_seen: list[dict[str, str]] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers["content-length"]))
        message = ExportTraceServiceRequest()
        message.ParseFromString(body)
        type(self).exports.append(message)
        type(self).paths.append(self.path)
        type(self).headers_seen.append({k.lower(): v for k, v in self.headers.items()})
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        """Quiet."""


@pytest.fixture
def receiver() -> Iterator[str]:
    _Receiver.exports, _Receiver.paths, _Receiver.headers_seen = [], [], []
    with serving_handler(_Receiver) as port:
        yield f"http://127.0.0.1:{port}"


def test_spans_reach_an_otlp_http_collector(upstream: FakeUpstream, tmp_path: Path, receiver: str) -> None:
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver, "OTEL_SERVICE_NAME": "switchman-under-test",
           "OTEL_EXPORTER_OTLP_HEADERS": "x-tenant=acme%20corp", "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=ci"}
    gateway = _gateway(upstream, tmp_path, env=env)
    assert gateway.dispatcher.tracing.enabled
    with ServerThread(build_app(gateway)) as url:  # leaving it shuts the gateway down, which flushes the spans
        response = _chat(url, headers={"traceparent": TRACEPARENT})
        assert response.status_code == 200
    assert _Receiver.paths and set(_Receiver.paths) == {"/v1/traces"}
    assert all(h.get("content-type") == "application/x-protobuf" for h in _Receiver.headers_seen)
    assert _Receiver.headers_seen[0].get("x-tenant") == "acme corp"
    spans = []
    for export in _Receiver.exports:
        for resource_spans in export.resource_spans:
            resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            assert resource["service.name"] == "switchman-under-test"
            assert resource["deployment.environment"] == "ci"
            for scope in resource_spans.scope_spans:
                assert scope.scope.name == "switchman"
                spans += list(scope.spans)
    names = sorted(s.name for s in spans)
    assert names == ["chat auto", "chat cheap", "switchman.decide"]
    root = next(s for s in spans if s.name == "chat auto")
    assert root.trace_id.hex() == TRACE_ID and root.parent_span_id.hex() == PARENT_ID
    attrs = {a.key: a.value for a in root.attributes}
    assert attrs["gen_ai.response.model"].string_value == "cheap"
    assert attrs["gen_ai.usage.output_tokens"].int_value > 0
    assert attrs["switchman.cost_usd"].double_value > 0


@pytest.mark.parametrize(("env", "enabled"), [
    ({}, False),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"}, True),
    ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:9/v1/traces"}, True),
    ({"OTEL_TRACES_EXPORTER": "console"}, True),
    ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"}, False),
    ({"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"}, False),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, True),
])
def test_the_environment_switches_tracing(env: dict[str, str], enabled: bool) -> None:
    tracing = Tracing.from_environment(env)
    try:
        assert tracing.enabled is enabled
    finally:
        tracing.shutdown()


@pytest.mark.parametrize("env", [
    {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"},
    {"OTEL_TRACES_EXPORTER": "zipkin"},
    {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_TRACES_SAMPLER": "sometimes"},
    {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "half"},
])
def test_unusable_otel_settings_are_named(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match="OTEL_"):
        Tracing.from_environment(env)


def test_sampled_out_requests_make_no_spans(upstream: FakeUpstream, tmp_path: Path, receiver: str) -> None:
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver, "OTEL_TRACES_SAMPLER": "always_off"}
    gateway = _gateway(upstream, tmp_path, env=env)
    with ServerThread(build_app(gateway)) as url:
        assert _chat(url).status_code == 200
    assert _Receiver.exports == []


def test_spans_reach_an_otlp_grpc_collector(upstream: FakeUpstream, tmp_path: Path) -> None:
    from concurrent import futures

    import grpc
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

    received: list[ExportTraceServiceRequest] = []

    class Collector(trace_service_pb2_grpc.TraceServiceServicer):  # type: ignore[misc]
        def Export(self, request: ExportTraceServiceRequest, context: Any) -> Any:  # noqa: N802 - the proto's name
            received.append(request)
            return trace_service_pb2.ExportTraceServiceResponse()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Collector(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}
        gateway = _gateway(upstream, tmp_path, env=env)
        with ServerThread(build_app(gateway)) as url:
            assert _chat(url).status_code == 200
    finally:
        server.stop(grace=None)
    names = sorted(s.name for export in received for rs in export.resource_spans for ss in rs.scope_spans
                   for s in ss.spans)
    assert names == ["chat auto", "chat cheap", "switchman.decide"]
