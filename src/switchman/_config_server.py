"""The `server:` section of the configuration: how the gateway listens, times out, retries, breaks circuits, limits
callers and reaches Redis.

    server: {port: 8080, timeouts: {first_byte: 30}, redis_url: redis://10.0.0.5:6379/0}

Kept apart from `_config` (the file's other sections and their cross-checks): these settings concern one
gateway process and refer to no model, route or agent.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ._limits import ServerLimits
from ._urls import NOT_A_URL, shown_url

__all__ = [
    "CLUSTER_SCHEMES",
    "REDIS_SCHEMES",
    "CallerLimits",
    "CircuitBreaker",
    "LiveLatency",
    "RedisOptions",
    "Retries",
    "ServerConfig",
    "Strict",
    "Timeouts",
    "check_redis_url",
]


class Strict(BaseModel):
    """The base of every configuration section: unknown keys are refused, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Timeouts(Strict):
    """Seconds to wait: to connect, for the first byte of the answer, for the whole call."""

    connect: float = Field(default=5.0, gt=0)
    first_byte: float = Field(default=60.0, gt=0)
    total: float = Field(default=600.0, gt=0)


class Retries(Strict):
    """Retries of one model on 429/5xx/connection errors before moving to the next fallback."""

    attempts: int = Field(default=2, ge=0)
    backoff_s: float = Field(default=0.25, ge=0)
    max_backoff_s: float = Field(default=4.0, ge=0)


class CircuitBreaker(Strict):
    """A model that fails `failures` times in a row cools down, then takes one probe request."""

    failures: int = Field(default=5, ge=1)
    cooldown_s: float = Field(default=30.0, gt=0)


class LiveLatency(Strict):
    """How live time-to-first-token marks are kept fresh.

        server: {live_latency: {reprobe_s: 10, half_life_s: 5}}

    Each answer folds its TTFT into a moving average whose old value counts for less the older it
    is (`half_life_s`), so after a pause one new answer mostly replaces it; what it folds in is the
    median of the last three answers younger than `reprobe_s` (of two, the lower), so one slow answer
    among fast ones moves nothing; a lone answer, and a mark taken from another replica, count as they
    are. A mark older than `reprobe_s` reads as unmeasured until one request has been sent there (the re-probe), so a
    deployment set aside as slow is re-measured once per `reprobe_s` and wins its traffic back.
    """

    reprobe_s: float = Field(default=10.0, gt=0)
    half_life_s: float = Field(default=5.0, gt=0)
    smoothing: float = Field(default=0.2, gt=0, le=1, description="weight of a new answer in a fresh average")


class CallerLimits(Strict):
    """Requests and tokens per minute one caller may send (None: unlimited).

        server: {key_limits: {rpm: 600, tpm: 200000}}      # each virtual key, its own buckets
        agents: {triage: {rpm: 120}}                        # one agent, whatever key it comes with

    Tokens are counted as providers count them when they admit a request: the prompt plus
    `max_tokens` (or a default when the request sets none). A request over a limit is answered 429
    with `retry-after` and OpenAI's `x-ratelimit-*` headers; every answer carries those headers for
    the tightest limit that applied. With `server.redis_url` a limit holds across every replica.
    """

    rpm: int | None = Field(default=None, gt=0)
    tpm: int | None = Field(default=None, gt=0)


class RedisOptions(Strict):
    """How the gateway talks to the Redis `server.redis_url` names (state shared by every replica).

        server: {redis_url: redis://10.0.0.5:6379/0, redis: {timeout_s: 0.05, key_prefix: "sm:"}}

    Every call is bounded by `timeout_s` (well under a request's budget) and never retried; a slow
    call fails alone, and after a connection error (or nothing answered for 2 x `ping_s` + `timeout_s`)
    the replica serves from its local state and pings every `ping_s` until Redis answers, then
    resyncs. A `redis+cluster://` (or `rediss+cluster://`) URL names one node of a Redis Cluster. `key_prefix`
    starts every key (one Redis can serve several deployments or tests).
    """

    timeout_s: float = Field(default=0.05, gt=0, le=5, description="a Redis call slower than this fails over to local")
    ping_s: float = Field(default=1.0, gt=0, description="how often a degraded replica checks whether Redis is back")
    key_prefix: str = Field(default="sm:", description="prefix of every key switchman writes")


#: The URL schemes the Redis clients take (redis-py's three and the Cluster spellings).
#: redis-py's own URL schemes (it checks them case-sensitively: `url.startswith("redis://")`).
REDIS_SCHEMES = ("redis", "rediss", "unix")
#: Ours, for Redis Cluster (any case), each with the scheme its nodes are reached by.
CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")


def check_redis_url(url: str | None) -> str | None:
    """The URL, or ValueError naming only its scheme (not the password): caught here, not as a startup traceback.
    Empty stays allowed: it means no Redis, as unset does.

    A URL that `shown_url` cannot show is refused too: a password holding `/`, `?` or `#` unescaped ends the host
    early, and redis-py's error then quotes part of the password as the port (and every message would show it)."""
    if not url:
        return url
    match = _SCHEME.match(url)
    scheme = match.group(1) if match else None
    if not (scheme in REDIS_SCHEMES or (scheme is not None and scheme.lower() in CLUSTER_SCHEMES)):
        shown = "a URL without a scheme" if scheme is None else repr(scheme)
        known = ", ".join(f"{s}://" for s in (*REDIS_SCHEMES, *CLUSTER_SCHEMES))
        raise ValueError(f"a Redis URL starts with one of {known}, not {shown}")
    if shown_url(url) == NOT_A_URL:
        raise ValueError("cannot read the Redis URL (not shown: it may hold a password): percent-escape any '/', "
                         "'?' or '#' in its user or password (%2F, %3F, %23); its port is a number")
    return url


class ServerConfig(Strict):
    """Gateway settings (`switchman serve`)."""

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    max_body_bytes: int = Field(default=4_000_000, gt=0)
    master_key_env: str = "SWITCHMAN_MASTER_KEY"
    ledger_url: str | None = Field(default=None, description="sqlite:///path or postgresql://...; default: user data dir")
    timeouts: Timeouts = Field(default_factory=Timeouts)
    retries: Retries = Field(default_factory=Retries)
    circuit_breaker: CircuitBreaker = Field(default_factory=CircuitBreaker)
    live_latency: LiveLatency = Field(default_factory=LiveLatency)
    store_prompts: bool = Field(
        default=False, description="keep each request's routed prompt in the ledger (needed by train --from-ledger)")
    limits: ServerLimits = Field(default_factory=ServerLimits)
    key_refresh_s: float = Field(
        default=5.0, gt=0, description="new, changed and revoked virtual keys and key budgets apply within this")
    auth: Literal["auto", "required", "off"] = Field(
        default="auto", description="auto: on once a master key is set or a virtual key was ever created")
    metrics_access: Literal["admin", "keys", "open"] = Field(
        default="admin", description="who may read /metrics: the master key, any key, or anyone")
    durability: Literal["batched", "sync"] = Field(
        default="batched", description="sync: a request's ledger row is committed before its answer's last byte")
    redis_url: str | None = Field(
        default=None, description="redis://host:port/db (redis+cluster://host:port for a Redis Cluster): sessions, "
                                  "budgets, rate limits and key revocations shared "
                                  "by every replica; unset: each process keeps its own")
    redis: RedisOptions = Field(default_factory=RedisOptions)
    key_limits: CallerLimits = Field(
        default_factory=CallerLimits, description="requests/tokens per minute each virtual key may send")

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, url: str | None) -> str | None:
        return check_redis_url(url)
