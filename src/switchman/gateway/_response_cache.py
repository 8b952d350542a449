"""The response cache: exact-match answers, opt-in, kept per virtual key, stored by a pluggable backend.

    cache = ResponseCache.from_config(config)                # None when `cache.enabled` is false
    hit = await cache.lookup(exchange, body, stream=False)   # sets exchange.cache to "hit"/"miss"
    ...on a miss, answer as usual, then: await cache.store(exchange, content)

A request is looked up only when the cache is enabled, its route has not opted out
(`routes.<name>.cache: false`), the caller has not (`X-Switchman-Cache: off`), and it asks for a
deterministic answer (`temperature: 0`) or the caller opts in (`X-Switchman-Cache: on`).

The key is a SHA-256 of the normalised request: the model the decision chose, every body field
that can change the answer (messages, tools, tool_choice, response_format, temperature, top_p,
seed, max_tokens, stop, penalties, logprobs, n, ...) with JSON key order ignored (and a top-level
whole number written as a float, `0.0`, read as the integer), whether it
streams and whether the stream carries usage; prefixed by the virtual key's id unless
`shared_across_keys`. `user`, `metadata` and `store` are left out: they label a request without
changing its answer.

A streamed answer is kept as the SSE bytes the client was sent and replayed as such; a
non-streamed one as its JSON body. Only complete, successful, non-empty answers are kept; a hit
costs $0 in the ledger (`cache = "hit"`), reserves no budget (it is looked up before the reservation, so a
spent budget does not refuse it), and never touches a provider or a deployment's rate limit (a caller's
rpm/tpm still counts it, as a request to the gateway).
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from .._config import CacheConfig, Config
from .._exceptions import UpstreamError
from ..state import CacheBackend, MemoryCache, RedisCache
from ._exchange import CUT_BY_SERVER, Exchange, ExchangeFacts
from ._sessions import TRUNCATED
from ._wire import Usage

if TYPE_CHECKING:
    from ._dispatcher import Dispatcher

__all__ = ["CachedAnswer", "ReplayStream", "ResponseCache", "cache_key"]

#: Body fields that label a request without changing its answer.
_IGNORED = frozenset({"model", "stream", "stream_options", "user", "metadata", "store"})


@dataclass(frozen=True, slots=True)
class CachedAnswer:
    """An answer as kept: which model gave it, its tokens, and the bytes the client was sent."""

    model: str
    usage: Usage
    content: bytes

    def encode(self) -> bytes:
        """One line of JSON header, then the content."""
        u = self.usage
        head = orjson.dumps({"model": self.model, "usage": [u.input_tokens, u.output_tokens, u.cached_input_tokens]})
        return head + b"\n" + self.content

    @classmethod
    def decode(cls, data: bytes) -> CachedAnswer | None:
        """The answer, or None when the bytes are not one (a foreign or damaged entry is a miss)."""
        head, sep, content = data.partition(b"\n")
        try:
            meta = orjson.loads(head)
            tokens = [int(t) for t in meta["usage"]]
            return cls(str(meta["model"]), Usage(*tokens), content) if sep else None
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return None


def cache_key(body: Mapping[str, Any], model: str, scope: str, *, stream: bool) -> str:
    """The entry's key: `<scope>:<sha256 of the normalised request on this model>`."""
    usage = bool((body.get("stream_options") or {}).get("include_usage")) if stream else False
    normal = {"model": model, "stream": stream, "usage": usage,
              "body": {k: _whole(v) for k, v in body.items() if k not in _IGNORED}}
    return f"{scope}:{hashlib.sha256(orjson.dumps(normal, option=orjson.OPT_SORT_KEYS)).hexdigest()}"


def _whole(value: Any) -> Any:
    """A top-level float that is a whole number as an int: `temperature: 0.0` is `temperature: 0` to a model."""
    if type(value) is float and value.is_integer() and abs(value) < 2.0**53:
        return int(value)
    return value


class ResponseCache:
    """Decides what is cacheable and under which key; the backend keeps the bytes."""

    def __init__(self, backend: CacheBackend, options: CacheConfig, opted_out_routes: frozenset[str] = frozenset()):
        self.backend = backend
        self.options = options
        self._opted_out = opted_out_routes

    @classmethod
    def from_config(cls, config: Config) -> ResponseCache | None:
        """The configured cache, or None when it is not enabled."""
        options = config.cache
        if not options.enabled:
            return None
        backend: CacheBackend
        if options.backend == "redis":
            assert options.redis_url is not None
            backend = RedisCache(options.redis_url, prefix=options.key_prefix, timeout_s=options.timeout_s)
        else:
            backend = MemoryCache(max_entries=options.max_entries, max_bytes=options.max_bytes)
        return cls(backend, options, frozenset(name for name, route in config.routes.items() if not route.cache))

    def _key(self, exchange: Exchange, body: Mapping[str, Any], stream: bool) -> str | None:
        decision, context = exchange.decision, exchange.context
        if decision is None or context.cache is False or decision.route in self._opted_out:
            return None
        if context.cache is not True and body.get("temperature") != 0:
            return None
        scope = "shared" if self.options.shared_across_keys else f"key={context.key_id or '-'}"
        return cache_key(body, decision.model, scope, stream=stream)

    async def lookup(self, exchange: Exchange, body: Mapping[str, Any], *, stream: bool) -> CachedAnswer | None:
        """The cached answer for a cacheable request (noting hit or miss on the exchange), else None."""
        key = self._key(exchange, body, stream)
        if key is None:
            return None
        data = await self.backend.get(key)
        hit = CachedAnswer.decode(data) if data is not None else None
        exchange.cache, exchange.cache_key = ("hit", None) if hit is not None else ("miss", key)
        if hit is not None:
            exchange.model, exchange.usage = hit.model, hit.usage
        return hit

    def keeps(self, size: int) -> bool:
        """Whether an answer this large may be kept."""
        return size <= self.options.max_entry_bytes

    async def store(self, exchange: Exchange, content: bytes, signal: str | None = None) -> None:
        """Keep the answer to a request that missed, if it succeeded, is not empty and not too large.

        `signal` is the answer's escalation signal (`answer_signal`); an answer cut at a length limit is kept.
        A fallback's answer (the model the key was made for failed) is not: kept, it would stand in for that
        model's answer for the whole TTL once the model is back. (A cascade's decision ends on the rung that
        answered, so its answer is kept.)
        """
        key, usage, decision = exchange.cache_key, exchange.usage, exchange.decision
        if key is None or exchange.model is None or usage is None or exchange.status != "ok":
            return
        if decision is not None and exchange.model != decision.model:
            return
        if signal is not None and signal != TRUNCATED:
            return
        if self.keeps(len(content)):
            await self.backend.set(key, CachedAnswer(exchange.model, usage, content).encode(), self.options.ttl_s)

    async def aclose(self) -> None:
        """Release the backend's connections."""
        await self.backend.aclose()


class ReplayStream(ExchangeFacts):
    """A cached streamed answer, relayed event by event as the original was; recorded once, as a hit."""

    def __init__(self, dispatcher: Dispatcher, exchange: Exchange, answer: CachedAnswer) -> None:
        self._dispatcher = dispatcher
        self._exchange = exchange
        self._answer = answer
        self._closed = False

    @property
    def model(self) -> str:
        """The model whose answer this is."""
        return self._answer.model

    @property
    def deployment(self) -> str | None:
        """None: no deployment was called."""
        return None

    @property
    def cache(self) -> str:
        """Always "hit"."""
        return "hit"

    @property
    def input_tokens(self) -> int:
        """The cached answer's input tokens."""
        return self._answer.usage.input_tokens

    @property
    def error(self) -> UpstreamError | None:
        """None: a replay does not fail."""
        return None

    @property
    def usage(self) -> Usage | None:
        """The cached answer's token counts, once the replay is closed."""
        return self._answer.usage if self._closed else None

    @property
    def cost_usd(self) -> float | None:
        """0.0 once closed: a hit costs nothing."""
        return 0.0 if self._closed else None

    async def relay(self, send: Callable[[bytes], Awaitable[None]]) -> None:
        """Send the kept events, one at a time."""
        events = [e + b"\n\n" for e in self._answer.content.split(b"\n\n") if e]
        for i, event in enumerate(events):
            await send(event)
            if i == 0:
                self._exchange.first_token_at = self._dispatcher.clock()

    async def aclose(self, *, disconnected: bool = False, cut: bool = False) -> None:
        """Write the ledger record (idempotent); `cut`: the server cancelled the replay (see ChatStream.aclose)."""
        if self._closed:
            return
        self._closed = True
        if disconnected:
            self._exchange.status = "client_disconnected"
        elif cut:
            self._exchange.status, self._exchange.error = "error", CUT_BY_SERVER
        self._dispatcher.finish(self._exchange)
