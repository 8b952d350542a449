"""The in-process SDK's errors carry no secret: an upstream that echoes the key it was sent (as providers do in
their 401s) is scrubbed from the exception the caller sees, as the gateway scrubs it from its HTTP answers."""

from __future__ import annotations

import sys
import traceback
from collections.abc import Iterator, Mapping
from pathlib import Path

import httpx
import pytest

from switchman import Router, UpstreamConnectionError, UpstreamError
from switchman.gateway import Scrubber
from switchman.gateway._errors import scrubbed
from switchman.testing import FakeUpstream, exception_text

from .conftest import OPENAI_KEY, WRONG_KEY, sdk_config

#: A key not shaped like one (no sk- prefix): only the configured secrets can catch it.
ODD_KEY = "gq-odd-provider-key-7e7e7e7e7e7e7e"


@pytest.fixture
def router(upstream: FakeUpstream, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Router:
    monkeypatch.setenv("FAKE_WRONG_KEY", WRONG_KEY)
    monkeypatch.setenv("FAKE_ODD_KEY", ODD_KEY)
    data = sdk_config(upstream, tmp_path, monkeypatch)
    data["providers"]["odd"] = {**data["providers"]["fake-wrong-key"], "api_key_env": "FAKE_ODD_KEY"}
    data["models"]["odd"] = {"provider": "odd", "input_price": 0.01, "output_price": 0.01}
    return Router.from_dict(data)


@pytest.mark.parametrize("model", ["locked", "odd"])
@pytest.mark.parametrize("stream", [False, True])
def test_an_upstream_echoing_its_key_is_scrubbed_from_the_error(router: Router, model: str, stream: bool) -> None:
    try:
        with pytest.raises(UpstreamError) as caught:
            if stream:
                list(router.chat("hello", model=model, stream=True))
            else:
                router.chat("hello", model=model)
        assert "401" in str(caught.value)
        text = exception_text(caught.value)
        assert WRONG_KEY not in text and ODD_KEY not in text, text
    finally:
        router.close()


@pytest.mark.anyio
async def test_an_async_caller_gets_the_scrubbed_error_too(router: Router) -> None:
    try:
        with pytest.raises(UpstreamError) as caught:
            await router.achat("hello", model="odd")
        assert ODD_KEY not in exception_text(caught.value)
        with pytest.raises(UpstreamError) as streamed:
            async for _ in await router.achat("hello", model="locked", stream=True):
                pass
        assert WRONG_KEY not in exception_text(streamed.value)
    finally:
        await router.aclose()


def test_a_mid_stream_error_echoing_the_key_is_scrubbed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from .raw_upstream import RawUpstream, sse

    monkeypatch.setenv("FAKE_ODD_KEY", ODD_KEY)
    with RawUpstream() as raw:
        raw.answer(sse(
            {"type": "message_start", "message": {"id": "m1", "type": "message", "role": "assistant", "model": "c",
                                                  "content": [], "usage": {"input_tokens": 3, "output_tokens": 0}}},
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hel"}},
            {"type": "error", "error": {"type": "api_error", "message": f"key {ODD_KEY} was revoked mid-answer"}},
        ), stream=True)
        router = Router.from_dict({
            "providers": {"raw": {"kind": "anthropic", "base_url": raw.url, "api_key_env": "FAKE_ODD_KEY"}},
            "models": {"c": {"provider": "raw", "input_price": 1.0, "output_price": 1.0}},
            "routes": {"default": {"candidates": ["c"], "strategy": "cheapest"}},
            "server": {"ledger_url": f"sqlite:///{tmp_path / 'ledger.sqlite3'}", "retries": {"attempts": 0}},
        })
        try:
            with pytest.raises(UpstreamError) as caught:
                list(router.chat("hello", model="c", stream=True))
            assert "revoked" in str(caught.value) and ODD_KEY not in exception_text(caught.value)
        finally:
            router.close()


@pytest.mark.parametrize("stream", [False, True])
def test_a_client_library_error_holding_the_request_gives_no_key(router: Router, upstream: FakeUpstream,
                                                                stream: bool) -> None:
    """aiohttp's error for an answer it cannot parse keeps the request it sent, key header included: the caller
    gets its type and message, not its headers, in any chained exception, note or attribute."""
    upstream.inject("bad_head", model="cheap", times=None)
    try:
        with pytest.raises(UpstreamError) as caught:
            if stream:
                list(router.chat("hello", model="cheap", stream=True))
            else:
                router.chat("hello", model="cheap")
        causes = []
        error: BaseException | None = caught.value
        while error is not None:
            causes.append(type(error).__name__)
            error = error.__cause__ or error.__context__
        assert "ClientResponseError" in causes, causes  # the fault reached the client library as meant
        text = exception_text(caught.value)
        assert OPENAI_KEY not in text and "[redacted]" in text, text
        assert upstream.requests_for("cheap")[0].headers["authorization"] == f"Bearer {OPENAI_KEY}"  # the key was sent
    finally:
        upstream.clear()
        router.close()


def test_scrubbed_reaches_every_exception_a_caller_can_read(upstream: FakeUpstream) -> None:
    """httpx's error keeps the request it sent (`.request`, Authorization header included); a key can also sit in a
    note, a context, an exception-group member or an exception held in an attribute. None of them keeps it."""
    upstream.inject("reset", times=1)
    try:
        with httpx.Client() as http:
            http.post(upstream.openai_base_url + "/chat/completions", json={"model": "cheap"},
                      headers={"authorization": f"Bearer {OPENAI_KEY}", "x-api-key": ODD_KEY})
    except httpx.HTTPError as exc:
        library_error = exc
    else:
        pytest.fail("the reset did not reach httpx")
    finally:
        upstream.clear()
    assert ODD_KEY in repr(library_error.request.headers)  # what the test is about (httpx shows Authorization
    assert library_error.request.headers["authorization"] == f"Bearer {OPENAI_KEY}"  # as [secure] in a repr)
    library_error.add_note(f"while sending with {ODD_KEY}")
    try:
        try:
            raise ValueError(f"first attempt used {ODD_KEY}")
        except ValueError:
            raise UpstreamConnectionError("cheap: upstream connection failed", model="cheap") from library_error
    except UpstreamConnectionError as exc:
        ours = exc
    held = KeyError(ODD_KEY)
    library_error.held = held  # type: ignore[attr-defined]
    group = ExceptionGroup("attempts", [ours, RuntimeError(f"second {ODD_KEY}")])
    assert scrubbed(group, Scrubber([ODD_KEY])) is group
    text = exception_text(group) + repr(library_error.request) + repr(held)
    assert ODD_KEY not in text and OPENAI_KEY not in text and "[redacted]" in text, text
    assert ours.__cause__ is library_error and isinstance(ours.__context__, ValueError)  # the chain keeps its types
    assert ours.model == "cheap" and library_error.__traceback__ is None and ours.__traceback__ is None


@pytest.mark.anyio
async def test_the_caught_error_carries_only_the_callers_frames(router: Router, upstream: FakeUpstream) -> None:
    """The scrub blocks at the SDK's boundary are plain try/except: a context manager there would hand the error
    back with the loop thread's traceback re-attached (contextlib restores it), whose frames' locals hold the
    request's headers. What the caller catches has its own frames and the SDK's boundary, nothing from the loop."""
    upstream.inject("bad_head", model="cheap", times=None)
    try:
        caught: list[BaseException] = []
        for call in ("chat", "stream", "achat", "astream"):
            try:
                if call == "chat":
                    router.chat("hello", model="cheap")
                elif call == "stream":
                    list(router.chat("hello", model="cheap", stream=True))
                elif call == "achat":
                    await router.achat("hello", model="cheap")
                else:
                    async for _ in await router.achat("hello", model="cheap", stream=True):
                        pass
            except UpstreamError as exc:
                caught.append(exc)
        assert len(caught) == 4
        for exc in caught:
            files = {Path(frame.f_code.co_filename).name for frame, _ in traceback.walk_tb(exc.__traceback__)}
            assert files <= {Path(__file__).name, "_router.py", "_inprocess.py", "_boundary.py", "_feed.py"}, files
            assert exc.__cause__ is not None and exc.__cause__.__traceback__ is None
    finally:
        upstream.clear()
        await router.aclose()


class _ArgsProperty(Exception):
    """An exception whose args are a read-only property: assigning them raises."""

    @property  # type: ignore[override]
    def args(self) -> tuple[str, ...]:
        return (f"computed from {ODD_KEY}",)


class _UnreadableMapping(Mapping[str, str]):
    """A mapping argument whose iteration raises."""

    def __getitem__(self, key: str) -> str:
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        raise RuntimeError(f"cannot iterate {ODD_KEY}")

    def __len__(self) -> int:
        return 1


@pytest.mark.parametrize("link", ["cause", "context", "group_member"])
@pytest.mark.parametrize("broken", ["args_property", "unreadable_mapping", "group_message"])
def test_an_exception_scrubbed_cannot_clean_is_cut_off_not_raised(link: str, broken: str) -> None:
    """An exception in the chain that cannot be cleaned (read-only args, an argument that raises when read, an
    exception group's message holding the key) is cut from the chain: scrubbed returns the real error, keeping
    its message, and the key is nowhere."""
    bad: BaseException = {"args_property": lambda: _ArgsProperty(),
                          "unreadable_mapping": lambda: ValueError(_UnreadableMapping()),
                          "group_message": lambda: ExceptionGroup(f"with {ODD_KEY}", [ValueError("x")])}[broken]()
    ours = UpstreamError("cheap: upstream failed", model="cheap")
    holder = ExceptionGroup("attempts", [bad]) if link == "group_member" else bad
    if link == "context":
        ours.__context__ = holder
    else:
        ours.__cause__ = holder
    assert scrubbed(ours, Scrubber([ODD_KEY])) is ours
    assert str(ours) == "cheap: upstream failed" and ours.model == "cheap"
    assert ODD_KEY not in exception_text(ours), exception_text(ours)


def test_scrubbed_cleans_an_os_errors_file_names() -> None:
    """OSError keeps the paths it names outside its args (`filename`, `filename2`)."""
    ours = UpstreamError("cheap: upstream failed", model="cheap")
    ours.__cause__ = OSError(2, "No such file", f"/tmp/{ODD_KEY}", f"/tmp/{ODD_KEY}.2")
    scrubbed(ours, Scrubber([ODD_KEY]))
    assert ODD_KEY not in exception_text(ours) and "[redacted]" in exception_text(ours)


def test_scrubbed_drops_a_held_requests_query_a_key_the_scrubber_does_not_know_may_be_in() -> None:
    """A request held by a foreign exception is shown by where it went, without its URL's query: an Azure-style
    `?api-key=` the scrubber was not told of (an embedder's, a proxy's) stays out."""
    ours = UpstreamError("cheap: upstream failed", model="cheap")
    request = httpx.Request("POST", "https://x.openai.azure.com/openai/deployments/d/chat?api-key=unlisted-s3cret")
    ours.__cause__ = httpx.ConnectError("connection refused", request=request)
    scrubbed(ours, Scrubber([ODD_KEY]))
    text = exception_text(ours)
    assert "unlisted-s3cret" not in text and "x.openai.azure.com/openai/deployments/d/chat" in text


def test_exception_text_reads_a_long_chain() -> None:
    """A chain longer than the recursion limit (retries each raising from the last) is read whole."""
    error: BaseException = ValueError(f"first {ODD_KEY}")
    for i in range(3 * sys.getrecursionlimit()):
        newer = ValueError(f"retry {i}")
        newer.__context__ = error
        error = newer
    assert ODD_KEY in exception_text(error)


def test_scrubbed_cleans_an_exception_groups_attributes() -> None:
    """An exception group (a subclass may carry more) keeps its attributes outside its args: they are cleaned."""

    class Attempts(ExceptionGroup):  # type: ignore[type-arg]
        pass

    group = Attempts("attempts", [ValueError("x")])
    group.headers = {"authorization": f"Bearer {ODD_KEY}"}  # type: ignore[attr-defined]
    ours = UpstreamError("cheap: upstream failed", model="cheap")
    ours.__cause__ = group
    scrubbed(ours, Scrubber([ODD_KEY]))
    assert ours.__cause__ is group and ODD_KEY not in exception_text(ours), exception_text(ours)
