"""Credentials written into a provider's base URL (`?api-key=`, `user:password@`) are secrets like the keys:
an upstream that echoes the URL it was called at leaks none of them."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import httpx
import pytest
from server_support import serving_handler

from switchman._config import parse_config
from switchman._exceptions import ConfigError
from switchman.gateway import Gateway, Scrubber, build_app
from switchman.gateway._http import UpstreamPool
from switchman.gateway._providers import provider_keys, url_credentials

from .conftest import ASK, ServerThread

AZURE_KEY = "azq0123456789abcdefkey"
URL_PASSWORD = "hunter2-url-password"
PG_PASSWORD = "pg-secret-password-77"
REDIS_PASSWORD = "redis-secret-password-55"
URL_SECRETS = (AZURE_KEY, URL_PASSWORD)


class _Echo(BaseHTTPRequestHandler):
    """Refuses every call and says where it was called, with which headers (as some proxies do)."""

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        self.rfile.read(int(self.headers.get("content-length", 0)))
        body = json.dumps({"error": {"message": f"denied: {self.path} headers={dict(self.headers)}",
                                     "type": "invalid_request_error"}}).encode()
        self.send_response(401)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def echo() -> Iterator[str]:
    with serving_handler(_Echo) as port:
        yield f"127.0.0.1:{port}"


def _data(echo: str, tmp_path: Path) -> dict[str, object]:
    return {
        "providers": {
            "azure": {"kind": "openai", "base_url": f"http://{echo}/openai/deployments/d?api-key={AZURE_KEY}"},
            "basic": {"kind": "openai", "base_url": f"http://proxyuser:{URL_PASSWORD}@{echo}/v1"},
        },
        "models": {"az": {"provider": "azure", "input_price": 1, "output_price": 1},
                   "proxied": {"provider": "basic", "input_price": 1, "output_price": 1}},
        "routes": {"default": {"candidates": ["az", "proxied"], "strategy": "cheapest"}},
        "server": {"ledger_url": f"sqlite:///{tmp_path / 'ledger.sqlite3'}", "retries": {"attempts": 0}},
    }


def test_credentials_in_urls_never_leave_the_gateway(echo: str, tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    gateway = Gateway.from_config(parse_config(_data(echo, tmp_path)), env={})
    seen: list[str] = []
    ids: list[str] = []
    with ServerThread(build_app(gateway)) as base, httpx.Client(base_url=base, timeout=30) as http:
        for model, stream in (("az", False), ("az", True), ("proxied", False), ("proxied", True)):
            response = http.post("/v1/chat/completions", json={"model": model, "messages": ASK, "stream": stream})
            assert response.status_code == 502, response.text
            seen.append(response.text)
            ids.append(response.headers["x-switchman-request-id"])
        assert "denied" in seen[0] and "[redacted]" in seen[0]  # the upstream's words reach the caller, scrubbed
        for path in ("/metrics", "/health", "/v1/models"):
            seen.append(http.get(path).text)
    assert gateway.ledger is not None
    gateway.ledger.flush_sync(timeout=10)
    records = [gateway.ledger.find(i) for i in ids]
    assert all(r is not None and r.status == "error" for r in records)
    seen += [repr(records), caplog.text, repr(gateway.dispatcher.providers)]
    for secret in URL_SECRETS:
        assert secret not in "\n".join(seen)


@pytest.mark.parametrize("base_url", [f"ftp://proxyuser:{URL_PASSWORD}@127.0.0.1:9/v1",
                                      f"http://proxyuser:{URL_PASSWORD}@[::1/v1"])  # an unclosed IPv6 bracket
def test_an_unusable_base_url_is_a_config_error_without_its_password(tmp_path: Path, base_url: str) -> None:
    data = _data("127.0.0.1:9", tmp_path)
    data["providers"]["basic"]["base_url"] = base_url  # type: ignore[index]
    with pytest.raises(ConfigError, match="providers.basic.base_url") as caught:
        Gateway.from_config(parse_config(data), env={"OPENAI_API_KEY": "sk-test-0123456789"})
    assert URL_PASSWORD not in str(caught.value)


def test_database_and_redis_passwords_are_no_oracle_for_clients(tmp_path: Path) -> None:
    # Those passwords never go upstream and switchman's own lines show their URLs without them, so they can
    # reach a response only when the client sent them. Scrubbing them there would answer the client's guess:
    # a model named like the password would come back '[redacted]', and any other name as written.
    data = _data("127.0.0.1:9", tmp_path)
    data["server"] = {"ledger_url": f"sqlite:///{tmp_path / 'ledger.sqlite3'}",
                      "redis_url": f"redis://:{REDIS_PASSWORD}@127.0.0.1:9/0"}
    env = {"SWITCHMAN_REDIS_URL": f"redis://u:{PG_PASSWORD}@127.0.0.1:9/0?password=query-secret-22"}
    secrets = set(provider_keys(parse_config(data), env))
    assert URL_PASSWORD in secrets and AZURE_KEY in secrets  # the providers' credentials are still scrubbed
    assert not secrets & {REDIS_PASSWORD, PG_PASSWORD, "query-secret-22"}
    gateway = Gateway.from_config(parse_config(data), env={})
    with ServerThread(build_app(gateway)) as base, httpx.Client(base_url=base, timeout=30) as http:
        answers = [http.post("/v1/chat/completions", json={"model": name, "messages": ASK})
                   for name in (REDIS_PASSWORD, "not-the-password")]
    assert [a.status_code for a in answers] == [404, 404]
    assert REDIS_PASSWORD in answers[0].text and "not-the-password" in answers[1].text
    assert "[redacted]" not in answers[0].text


def test_a_url_password_and_a_key_for_the_same_header_are_refused_at_start(tmp_path: Path) -> None:
    data = _data("127.0.0.1:9", tmp_path)
    data["providers"]["basic"]["api_key_env"] = "PROXY_KEY"  # type: ignore[index]
    with pytest.raises(ConfigError, match="providers.basic: .* keep one") as caught:
        Gateway.from_config(parse_config(data), env={"PROXY_KEY": "sk-proxy-0123456789"})
    assert URL_PASSWORD not in str(caught.value)


def test_a_query_key_is_scrubbed_as_written(echo: str, tmp_path: Path) -> None:
    # A SAS-style signature written with a raw '+' and lower-case escapes: the pool sends the query verbatim,
    # so an upstream that echoes its URL shows it in exactly that form.
    sig = "ab+cd/ef%2bgh0123=="
    data = _data(echo, tmp_path)
    data["providers"]["azure"]["base_url"] = f"http://{echo}/openai/deployments/d?api-version=1&sig={sig}"  # type: ignore[index]
    gateway = Gateway.from_config(parse_config(data), env={})
    with ServerThread(build_app(gateway)) as base, httpx.Client(base_url=base, timeout=30) as http:
        response = http.post("/v1/chat/completions", json={"model": "az", "messages": ASK})
    assert response.status_code == 502 and "denied: /openai/deployments/d/chat/completions?" in response.text
    assert "api-version=1" in response.text  # only the secret goes
    for shown in (sig, "ab+cd", "ab cd", "ef+gh0123"):
        assert shown not in response.text


def test_a_query_key_is_scrubbed_in_the_form_the_pool_sends() -> None:
    # A space is escaped on the way out ('+' and the escapes already written are not): that form is a secret too.
    base_url = "https://x.example/openai?api-version=1&sig=ab+cd ef%2bgh0123=="
    request = UpstreamPool(base_url, {}).request("POST", "/chat/completions")
    sent = str(request.url)
    assert "sig=ab+cd%20ef%2bgh0123==" in sent
    assert Scrubber(url_credentials(base_url))(sent) == (
        "https://x.example/openai/chat/completions?api-version=1&sig=[redacted]")


@pytest.mark.parametrize("name", ["subscriptionKey", "accessKeyId", "apiKey2", "AWSAccessKeyId", "appKey",
                                  "masterKey", "userToken", "key1"])
def test_a_configured_query_secret_named_in_camel_case_is_a_credential(name: str) -> None:
    """A configured URL's secret under a camelCase or run-together name is taken out, whatever the casing."""
    found = set(url_credentials(f"https://h.example/v1?{name}=SECRETVALUE123&x=1"))
    assert "SECRETVALUE123" in found and "1" not in found


@pytest.mark.parametrize("name", ["subscriptionKey", "accessKeyId", "apiKey2", "AWSAccessKeyId", "key1"])
def test_a_query_secret_named_in_camel_case_is_scrubbed_from_text(name: str) -> None:
    """The free-text scrub (no configuration) splits camelCase and allows a trailing number too."""
    text = f"GET https://h.example/v1?{name}=SECRETVALUE123&keyword=a&design=b&country_code=c"
    assert Scrubber()(text) == (
        f"GET https://h.example/v1?{name}=[redacted]&keyword=a&design=b&country_code=c")
