"""Helpers for the hostile-client tests: a gateway on loopback with chosen limits, raw HTTP, `switchman serve`."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import yaml
from serve_support import serving
from server_support import LoopbackServer

from switchman._config import parse_config
from switchman.gateway import Gateway, build_app
from switchman.testing import FakeUpstream

UPSTREAM_KEY = "sk-upstream-security-0123456789abcdef"
MASTER_KEY = "sk-master-security-0f0f0f0f0f0f0f0f"
ENV = {"FAKE_KEY": UPSTREAM_KEY}
ASK = [{"role": "user", "content": "hello"}]


def config_data(upstream: FakeUpstream, ledger_url: str, **server: Any) -> dict[str, Any]:
    """Two priced models on the fake upstream (cheap < big), one route, an agent that denies big."""
    provider = {"kind": "openai", "base_url": upstream.openai_base_url, "api_key_env": "FAKE_KEY"}
    caps = ["tools", "json", "vision"]
    return {
        "providers": {"fake": provider},
        "models": {
            "cheap": {"provider": "fake", "input_price": 1.0, "output_price": 2.0, "context_window": 10_000_000,
                      "capabilities": caps},
            "big": {"provider": "fake", "input_price": 10.0, "output_price": 20.0, "context_window": 10_000_000,
                    "capabilities": caps},
        },
        "routes": {"default": {"candidates": ["cheap", "big"], "strategy": "cheapest"}},
        "server": {"ledger_url": ledger_url, "retries": {"attempts": 0},
                   "circuit_breaker": {"failures": 3, "cooldown_s": 60.0}, **server},
    }


@contextmanager
def running_gateway(data: Mapping[str, Any], env: Mapping[str, str] = ENV) -> Iterator[tuple[Gateway, LoopbackServer]]:
    """A Gateway built from `data`, served on loopback with the limits the data configures."""
    config = parse_config(dict(data))
    gateway = Gateway.from_config(config, env=dict(env))
    with LoopbackServer(build_app(gateway), config.server.limits, log_level="warning") as server:
        yield gateway, server


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes
    closed: bool  # the server closed the connection after this answer

    def json(self) -> Any:
        return orjson.loads(self.body)


def read_response(sock: socket.socket, timeout: float = 10.0) -> RawResponse:
    """One HTTP/1.1 response with a Content-Length body, read from a raw socket."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"connection closed before a full response head: {data!r}")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        rest += chunk
    try:
        sock.settimeout(0.5)
        closed = sock.recv(1) == b""
    except TimeoutError:
        closed = False
    except OSError:
        closed = True
    return RawResponse(status, headers, rest[:length], closed)


def connect(port: int, *, source: str = "127.0.0.1", rcvbuf: int | None = None) -> socket.socket:
    """A raw TCP connection to the gateway (optionally from another loopback address, with a tiny receive buffer)."""
    sock = socket.socket()
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    return sock


def request_bytes(method: str, path: str, body: Any = None, headers: Mapping[str, str] | None = None, *,
                  host: str = "test") -> bytes:
    payload = b"" if body is None else body if isinstance(body, bytes) else orjson.dumps(body)
    head = [f"{method} {path} HTTP/1.1", f"host: {host}", *(f"{k}: {v}" for k, v in (headers or {}).items())]
    if body is not None:
        head += ["content-type: application/json", f"content-length: {len(payload)}"]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + payload


def post_head(path: str, *lines: bytes) -> bytes:
    """A POST's head (JSON body, host "test") with these header lines; the body is the caller's to append."""
    return b"\r\n".join([f"POST {path} HTTP/1.1".encode(), b"host: test", b"content-type: application/json",
                          *lines]) + b"\r\n\r\n"


def answer_to(port: int, *pieces: bytes) -> RawResponse:
    """The first answer to bytes sent as they are, piece by piece, on a fresh connection."""
    with connect(port) as sock:
        for piece in pieces:
            sock.sendall(piece)
        return read_response(sock)


def answers_to(port: int, *pieces: bytes) -> list[tuple[int, bytes]]:
    """Every (status, body) the server wrote to bytes sent piece by piece on a fresh connection, until it closed."""
    with connect(port) as sock:
        for piece in pieces:
            sock.sendall(piece)
        return _answers_until_closed(sock)


def _answers_until_closed(sock: socket.socket) -> list[tuple[int, bytes]]:
    """Every (status, body) the server wrote before closing: Content-Length answers, back to back."""
    sock.settimeout(10)
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    answers = []
    while data:
        head, _, rest = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        length = next(int(v) for k, _, v in (line.partition(":") for line in lines[1:])
                      if k.strip().lower() == "content-length")
        answers.append((int(lines[0].split(" ")[1]), rest[:length]))
        data = rest[length:]
    return answers


def assert_openai_error(response: RawResponse, status: int, code: str) -> dict[str, Any]:
    """The response is `status` with the OpenAI error envelope and this code."""
    assert response.status == status, (response.status, response.body)
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["code"] == code, error
    assert error["message"]
    return error  # type: ignore[no-any-return]


def wait_until(predicate: Callable[[], bool], *, timeout: float = 10.0, what: str = "condition") -> None:
    """Poll until `predicate()` holds; raise AssertionError naming `what` if it never does."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


@contextmanager
def serve_process(data: Mapping[str, Any], folder: Path, env: Mapping[str, str] = ENV) -> Iterator[
        tuple[subprocess.Popen[bytes], str]]:
    """`switchman serve` in a process of its own (nothing else shares its interpreter), with this configuration."""
    config = folder / "switchman.yaml"
    config.write_text(yaml.safe_dump(dict(data)))
    with serving(folder, config, env=env) as served:
        yield served.process, served.base
