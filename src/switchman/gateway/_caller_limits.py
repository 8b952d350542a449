"""Per-key and per-agent requests and tokens per minute, checked before a request reserves budget or is sent.

    callers = CallerLimits(limiter, config)
    admission = await callers.admit(context, tokens=1_200)   # raises CallerLimitError (429) when one is used up
    headers = rate_headers(admission)                        # x-ratelimit-* for the answer (_rate_headers)

Limits come from `server.key_limits` (each virtual key its own buckets; the master key has none) and
each agent's `rpm`/`tpm`. The buckets live in the gateway's `RateLimiter`: in the process, or in
Redis (`server.redis_url`) so a limit holds across replicas. A request under both a key's and an
agent's limit takes from both, and one refused by either takes from neither (both checked, then both
taken, in one step: one Redis script); the answer's headers describe, for requests and for tokens
separately, the limit with the least left.
"""

from __future__ import annotations

import time

from .._config import Config
from .._exceptions import CallerLimitError
from ..state import Admission, RateLimit, RateLimiter
from ._context import RequestContext
from ._middleware import MASTER_KEY_ID

__all__ = ["CallerLimits"]


class CallerLimits:
    """The rpm/tpm limits of keys and agents, admitted against one rate limiter."""

    def __init__(self, limiter: RateLimiter, config: Config) -> None:
        self.limiter = limiter
        limits = config.server.key_limits
        self.key_limit = RateLimit(limits.rpm, limits.tpm)
        self.agent_limits = {name: RateLimit(a.rpm, a.tpm) for name, a in config.agents.items() if a.rpm or a.tpm}

    def __bool__(self) -> bool:
        return bool(self.key_limit) or bool(self.agent_limits)

    def _applying(self, context: RequestContext) -> list[tuple[str, RateLimit]]:
        applying = []
        if self.key_limit and context.key_id is not None and context.key_id != MASTER_KEY_ID:
            applying.append((f"key:{context.key_id}", self.key_limit))
        agent_limit = self.agent_limits.get(context.agent or "")
        if agent_limit is not None:
            applying.append((f"agent:{context.agent}", agent_limit))
        return applying

    async def admit(self, context: RequestContext, tokens: int) -> Admission | None:
        """The admission the answer's headers describe, combined per kind from the limits that apply (`_tightest`:
        for requests and for tokens, the limit with the least left; None: none applies); raises CallerLimitError.

        All of them at once (`admit_all`): a request one limit refuses takes nothing from the others, not even
        for the moment an admit-then-refund would hold it (concurrent requests would see 429s meanwhile)."""
        applying = self._applying(context)
        if not applying:
            return None
        admissions = await self.limiter.admit_all(applying, tokens)
        if not admissions[0].admitted:  # (all admitted or none)
            # The first limit that has no room (in order: the key's, then the agent's) is the one reported.
            (key, limit), admission = next(
                ((each, admission) for each, admission in zip(applying, admissions, strict=True)
                 if admission.retry_after_s > 0),
                (applying[0], admissions[0]))
            scope = key.partition(":")[0]
            raise CallerLimitError(
                f"this {scope}'s rate limit ({_describe(limit)}) is used up; retry in "
                f"{admission.retry_after_s:.2f}s", retry_after=admission.retry_after_s, limits=admission.limits())
        # The wall-clock time of the admission, which the resets count from: the headers are spelled after the answer.
        return _tightest(admissions, time.time())


def _tightest(admissions: list[Admission], measured_at: float) -> Admission:
    """The admission the headers describe: for requests and for tokens separately, the limit that applies with the
    least left (its limit, remaining and reset; the first of equals). Per kind, not one whole admission: a key's rpm
    and an agent's tpm both show, each where it binds."""
    requests = tokens = None
    for admission in admissions:
        if admission.limit_requests is not None and (
                requests is None or (admission.remaining_requests or 0) < (requests.remaining_requests or 0)):
            requests = admission
        if admission.limit_tokens is not None and (
                tokens is None or (admission.remaining_tokens or 0) < (tokens.remaining_tokens or 0)):
            tokens = admission
    return Admission(
        True,
        limit_requests=None if requests is None else requests.limit_requests,
        remaining_requests=None if requests is None else requests.remaining_requests,
        reset_requests_s=0.0 if requests is None else requests.reset_requests_s,
        limit_tokens=None if tokens is None else tokens.limit_tokens,
        remaining_tokens=None if tokens is None else tokens.remaining_tokens,
        reset_tokens_s=0.0 if tokens is None else tokens.reset_tokens_s,
        measured_at=measured_at)


def _describe(limit: RateLimit) -> str:
    parts = [f"{limit.rpm} requests" if limit.rpm else "", f"{limit.tpm} tokens" if limit.tpm else ""]
    return " and ".join(p for p in parts if p) + " per minute"
