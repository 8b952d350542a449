"""Every exception leaving the SDK is scrubbed, not only switchman's own: a client library's error (openai's, httpx's)
escaping `Router.chat`/`achat`/their streams keeps its type (`except openai.APIError` still catches it) but not the
key an upstream echoed into it; and the shapes `scrubbed` used to miss (an exception group's own message,
AttributeError's `obj`/`name`, `__slots__`) are cleaned too."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, NoReturn

import httpx
import openai
import pytest

from switchman import Router
from switchman.gateway import Scrubber
from switchman.gateway._errors import scrubbed
from switchman.gateway._openai import OpenAIAdapter
from switchman.testing import FakeUpstream, exception_text

from .conftest import ANTHROPIC_KEY, OPENAI_KEY, config_data

#: A key not shaped like one (no sk- prefix): only the configured secrets can catch it.
ODD_KEY = "gq-odd-provider-key-7e7e7e7e7e7e7e"


@pytest.fixture
def router(upstream: FakeUpstream, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Router]:
    """The shared configuration plus a provider whose key is ODD_KEY (so the router's scrubber knows it), and an
    adapter that, after the real upstream call, makes a second real call with that key that the upstream refuses,
    echoing the key (as providers do): the openai client's error escapes the dispatcher as it is."""
    monkeypatch.setenv("FAKE_OPENAI_KEY", OPENAI_KEY)
    monkeypatch.setenv("FAKE_ANTHROPIC_KEY", ANTHROPIC_KEY)
    monkeypatch.setenv("FAKE_ODD_KEY", ODD_KEY)
    data = config_data(upstream, f"sqlite:///{tmp_path / 'ledger.sqlite3'}")
    data["providers"]["odd"] = {**data["providers"]["fake-openai"], "api_key_env": "FAKE_ODD_KEY"}
    upstream.clear()

    def refused(*_: object, **__: object) -> NoReturn:
        upstream.inject("auth_error", model="probe", times=1)
        with openai.OpenAI(base_url=upstream.openai_base_url, api_key=ODD_KEY, max_retries=0) as client:
            client.chat.completions.create(model="probe", messages=[{"role": "user", "content": "x"}])
        raise AssertionError("the upstream did not refuse the probe")

    monkeypatch.setattr(OpenAIAdapter, "decode", refused)
    monkeypatch.setattr(OpenAIAdapter, "stream", refused)
    made = Router.from_dict(data)
    yield made
    upstream.clear()
    made.close()


def _check(error: BaseException) -> None:
    assert isinstance(error, openai.AuthenticationError)  # the caller's `except openai.APIError` still works
    assert error.status_code == 401
    text = exception_text(error)
    assert ODD_KEY not in text and OPENAI_KEY not in text, text
    assert "Incorrect API key provided" in str(error)  # what it says, less the key


@pytest.mark.parametrize("stream", [False, True])
def test_a_client_librarys_error_escaping_chat_is_scrubbed(router: Router, stream: bool) -> None:
    with pytest.raises(openai.APIError) as caught:
        if stream:
            list(router.chat("hello", model="cheap", stream=True))
        else:
            router.chat("hello", model="cheap")
    _check(caught.value)


@pytest.mark.anyio
@pytest.mark.parametrize("stream", [False, True])
async def test_a_client_librarys_error_escaping_achat_is_scrubbed(router: Router, stream: bool) -> None:
    with pytest.raises(openai.APIError) as caught:
        if stream:
            async for _ in await router.achat("hello", model="cheap", stream=True):
                pass
        else:
            await router.achat("hello", model="cheap")
    _check(caught.value)


class _Slotted(Exception):
    __slots__ = ("url", "unset")

    def __init__(self, url: str) -> None:
        super().__init__("slotted")
        self.url = url


class _Attempts(ExceptionGroup):  # type: ignore[type-arg]
    """A group subclass whose constructor takes more than a message and members."""

    def __new__(cls, message: str, errors: Any, *, where: str) -> _Attempts:
        group = super().__new__(cls, message, errors)
        group.where = where  # type: ignore[attr-defined]
        return group

    def __init__(self, message: str, errors: Any, *, where: str) -> None:
        super().__init__(message, errors)

    def derive(self, errors: Any) -> _Attempts:
        return _Attempts(self.message, errors, where=self.where)  # type: ignore[attr-defined]


def _shapes() -> Mapping[str, BaseException]:
    attribute = AttributeError(f"no attribute {ODD_KEY}", name=ODD_KEY, obj={"api_key": ODD_KEY})
    decode = UnicodeDecodeError("utf-8", f"x{ODD_KEY}".encode(), 0, 1, "bad byte")
    http = httpx.HTTPStatusError(f"401 for url 'https://h/v1?api-key={ODD_KEY}'",
                                 request=httpx.Request("GET", f"https://h/v1?api-key={ODD_KEY}"),
                                 response=httpx.Response(401))
    return {
        "group_message": ExceptionGroup(f"attempts with {ODD_KEY}", [ValueError("one"), KeyError("two")]),
        "group_subclass_message": _Attempts(f"attempts with {ODD_KEY}", [ValueError("one")], where="here"),
        "attribute_error": attribute,
        "name_error": NameError(f"name {ODD_KEY!r}", name=ODD_KEY),
        "import_error": ImportError("no module", name=ODD_KEY, path=f"/x/{ODD_KEY}"),
        "slots": _Slotted(f"https://h/v1?key={ODD_KEY}"),
        "unicode_decode": decode,
        "stop_iteration": StopIteration(ODD_KEY),
        "httpx_status": http,
    }


@pytest.mark.parametrize("shape", list(_shapes()))
@pytest.mark.parametrize("where", ["top", "cause", "context"])
def test_scrubbed_cleans_each_shape(shape: str, where: str) -> None:
    error = _shapes()[shape]
    if where == "top":
        clean = scrubbed(error, Scrubber([ODD_KEY]))
        assert type(clean) is type(error)  # the same type, whatever it had to rebuild
    else:
        clean = RuntimeError("outer")
        setattr(clean, f"__{where}__", error)
        assert scrubbed(clean, Scrubber([ODD_KEY])) is clean
        assert type(getattr(clean, f"__{where}__")) is type(error)
    assert ODD_KEY not in exception_text(clean), exception_text(clean)


def test_a_group_keeps_its_members_and_links_when_its_message_is_scrubbed() -> None:
    members = [ValueError("one"), KeyError("two")]
    group = ExceptionGroup(f"attempts with {ODD_KEY}", members)
    cause = OSError("the cause")
    group.__cause__ = cause
    group.add_note("a note")
    clean = scrubbed(group, Scrubber([ODD_KEY]))
    assert isinstance(clean, ExceptionGroup) and list(clean.exceptions) == members
    assert clean.message == "attempts with [redacted]" and clean.__cause__ is cause
    assert clean.__notes__ == ["a note"]


def test_the_scrubber_never_raises() -> None:
    """A scrubber that itself fails leaves the exception gutted (its type kept), never raises instead."""

    def broken(_: str) -> str:
        raise RuntimeError(f"scrubber broke on {ODD_KEY}")

    error = ValueError(f"with {ODD_KEY}")
    clean = scrubbed(error, broken)
    assert type(clean) is ValueError and ODD_KEY not in exception_text(clean)


@pytest.mark.parametrize(("text", "kept"), [
    ("Client error '401' for url 'https://x.openai.azure.com/openai/d/chat?api-version=2024-06-01&api-key=unlisted9'",
     "api-version=2024-06-01&api-key=[redacted]'"),
    ("GET https://maps.example/v1?key=unlisted9&q=1 failed", "?key=[redacted]&q=1 failed"),
    ("blob https://acct.blob.example/c/b?sv=2024&sig=unlisted9%2Bx&se=1", "&sig=[redacted]&se=1"),
    ("connect to postgresql://app:unlisted9@db/ledger refused", "postgresql://app:[redacted]@db/ledger refused"),
])
def test_a_credential_in_a_url_the_scrubber_was_not_told_of_is_redacted(text: str, kept: str) -> None:
    """A foreign error's message may name a URL carrying a credential no configuration listed (an embedder's, a
    proxy's): the credential-named query values and a URL's password go, the rest of the URL stays."""
    error = httpx.HTTPStatusError(text, request=httpx.Request("GET", "https://h/"), response=httpx.Response(401))
    clean = scrubbed(error, Scrubber([ODD_KEY]))
    assert "unlisted9" not in exception_text(clean) and str(clean).endswith(kept), str(clean)


@pytest.mark.anyio
@pytest.mark.parametrize("call", ["chat", "achat"])
async def test_a_group_escaping_the_router_is_not_linked_to_its_unscrubbed_original(
        router: Router, monkeypatch: pytest.MonkeyPatch, call: str) -> None:
    """A group whose own message holds a key is replaced by a scrubbed copy: re-raised inside the `except` that caught
    the original, Python linked the original (key and all) as the copy's `__context__`."""

    def failed(*_: object, **__: object) -> NoReturn:
        raise ExceptionGroup(f"attempts with {ODD_KEY}", [ValueError("one")])

    monkeypatch.setattr(OpenAIAdapter, "decode", failed)
    with pytest.raises(ExceptionGroup) as caught:
        if call == "chat":
            router.chat("hello", model="cheap")
        else:
            await router.achat("hello", model="cheap")
    assert caught.value.message == "attempts with [redacted]"
    assert ODD_KEY not in exception_text(caught.value), exception_text(caught.value)


class _ReadOnlyArgs(Exception):
    """An exception whose args cannot be replaced (so it cannot be cleaned in place)."""

    @property
    def args(self) -> tuple[Any, ...]:  # type: ignore[override]
        return BaseException.args.__get__(self)  # type: ignore[attr-defined,no-any-return]


def _members(group: BaseException) -> list[BaseException]:
    assert isinstance(group, BaseExceptionGroup)
    return list(group.exceptions)


def test_a_member_group_holding_a_key_is_replaced_by_a_scrubbed_copy() -> None:
    kept = ValueError("kept")
    clean = scrubbed(ExceptionGroup("outer", [ExceptionGroup(f"inner {ODD_KEY}", [kept])]), Scrubber([ODD_KEY]))
    assert ODD_KEY not in exception_text(clean), exception_text(clean)
    [inner] = _members(clean)
    assert type(clean) is ExceptionGroup and clean.message == "outer"  # type: ignore[attr-defined]
    assert type(inner) is ExceptionGroup and inner.message == "inner [redacted]" and _members(inner) == [kept]


@pytest.mark.parametrize("depth", [1, 2])
def test_a_member_that_cannot_be_cleaned_is_replaced_by_an_empty_one(depth: int) -> None:
    kept = KeyError("kept")
    group: BaseException = ExceptionGroup("outer", [_ReadOnlyArgs(f"frozen {ODD_KEY}"), kept])
    for _ in range(depth - 1):
        group = ExceptionGroup("wrapper", [group])
    clean = scrubbed(group, Scrubber([ODD_KEY]))
    assert ODD_KEY not in exception_text(clean), exception_text(clean)
    for _ in range(depth - 1):
        [clean] = _members(clean)
    frozen, same = _members(clean)
    assert type(frozen) is _ReadOnlyArgs and frozen.args == () and same is kept


def test_a_group_whose_only_member_cannot_be_cleaned_keeps_its_type_and_an_empty_member() -> None:
    group = _Attempts("attempts", [_ReadOnlyArgs(f"frozen {ODD_KEY}")], where=ODD_KEY)
    clean = scrubbed(group, Scrubber([ODD_KEY]))
    assert ODD_KEY not in exception_text(clean), exception_text(clean)
    assert type(clean) is _Attempts and [type(member) for member in _members(clean)] == [_ReadOnlyArgs]
