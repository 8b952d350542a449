"""shown_url: a URL as messages, /health and the dashboard show it, without the credentials written into it."""

from __future__ import annotations

import pytest

from switchman._urls import shown_url


@pytest.mark.parametrize(("url", "shown"), [
    ("https://api.openai.com/v1", "https://api.openai.com/v1"),
    ("https://user:s3cret@proxy.example.com:8443/v1", "https://proxy.example.com:8443/v1"),
    ("https://:s3cret@proxy.example.com/v1", "https://proxy.example.com/v1"),
    ("https://a@b:s3cret@proxy.example.com/v1", "https://proxy.example.com/v1"),
    ("https://x.openai.azure.com/openai?api-version=2024-06-01&api-key=s3cret", "https://x.openai.azure.com/openai"),
    ("https://generativelanguage.googleapis.com/v1beta?key=s3cret#frag", "https://generativelanguage.googleapis.com/v1beta"),
    ("http://user:s3cret@[::1]:8080/v1", "http://[::1]:8080/v1"),
    ("http://[::1:8080/v1?key=s3cret", "<not a URL>"),
    # A password with `/`, `?` or `#` unescaped ends the host early: read naively, `user:pa` is the host.
    ("http://proxyuser:hun/s3cret@127.0.0.1:9/v1", "<not a URL>"),
    ("http://proxyuser:hun?s3cret@127.0.0.1:9/v1", "<not a URL>"),
    ("http://proxyuser:hun#s3cret@127.0.0.1:9/v1", "<not a URL>"),
    ("http://proxy.example.com/a/b@s3cret/v1", "<not a URL>"),
    ("http://proxy.example.com/v1;key=s3cret", "<not a URL>"),
    ("user:s3cret@proxy.example.com/v1", "<not a URL>"),
    ("unix:///run/redis.sock?db=0&password=s3cret", "unix:///run/redis.sock"),  # no host: its `//` kept
    ("unix:///run/r@1;x.sock?password=s3cret", "unix:///run/r@1;x.sock"),  # no host: `@` and `;` name the file
    ("unix://:pa/s3cret@/run/redis.sock", "<not a URL>"),  # a host (the password's start): `@` in the path is not
    ("redis://:s3c%2Fret@127.0.0.1:1/0", "redis://127.0.0.1:1/0"),
    ("redis://:s3c/ret@127.0.0.1:1/0", "<not a URL>"),
])
def test_a_url_is_shown_without_its_credentials(url: str, shown: str) -> None:
    assert shown_url(url) == shown
    assert "s3cret" not in shown_url(url)
