"""Rate-limit headers in Anthropic's spelling, for `/v1/messages` answers (its 429s included).

    anthropic-ratelimit-requests-limit / -remaining / -reset
    anthropic-ratelimit-tokens-limit   / -remaining / -reset      (reset: an RFC 3339 time, 2026-12-02T12:01:00Z)

Spelled from the same values as OpenAI's `x-ratelimit-*` (`Admission.limits()`, see `rate_limit_headers`), so the
two say the same thing: OpenAI writes a reset as a duration ("6m0s"), Anthropic as the time the bucket is full.
switchman's `tpm` counts one total per request (its prompt tokens plus `max_tokens`): the `tokens` headers carry
it, and Anthropic's separate `input-tokens` / `output-tokens` headers are not sent (no such split is kept).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping

from ...state import Admission

__all__ = ["anthropic_rate_headers", "anthropic_rate_limit_headers"]

#: `Admission.limits()`'s names (OpenAI's header suffixes) → Anthropic's.
_NAMES = {"limit-requests": "requests-limit", "remaining-requests": "requests-remaining",
          "reset-requests": "requests-reset", "limit-tokens": "tokens-limit",
          "remaining-tokens": "tokens-remaining", "reset-tokens": "tokens-reset"}


def _rfc3339(at: float) -> str:
    """`at` (seconds since the epoch) in UTC, whole seconds rounded up: waiting until then never finds the bucket
    short of what the header promised."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(math.ceil(at)))


def anthropic_rate_limit_headers(limits: Mapping[str, float | None], now: float | None = None) -> dict[str, str]:
    """Anthropic's anthropic-ratelimit-* headers from limit-/remaining-/reset- values (resets in seconds from
    `now`, the wall clock by default)."""
    headers: dict[str, str] = {}
    for name, value in limits.items():
        spelled = _NAMES.get(name)
        if value is None or spelled is None:
            continue
        if name.startswith("reset-"):
            headers[f"anthropic-ratelimit-{spelled}"] = _rfc3339((time.time() if now is None else now) + value)
        else:
            headers[f"anthropic-ratelimit-{spelled}"] = str(int(value))
    return headers


def anthropic_rate_headers(admission: Admission | None) -> dict[str, str]:
    """The anthropic-ratelimit-* headers of an admitted request (none when no caller limit applied)."""
    return anthropic_rate_limit_headers(admission.limits()) if admission is not None else {}
