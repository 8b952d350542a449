"""A caller's or a deployment's rate limit as headers, in the spelling of the API spoken: the one place that decides.

    openai     (chat completions, /v1/responses, /v1/embeddings)
        x-ratelimit-limit-requests / -remaining-requests / -reset-requests   (and -tokens; reset: a duration, 6m0s)
    anthropic  (/v1/messages)
        anthropic-ratelimit-requests-limit / -remaining / -reset             (and tokens-; reset: an RFC 3339 time)

Both are spelled from the same values (`Admission.limits()`: limit, remaining and seconds to a full bucket), so they
say the same thing. switchman's `tpm` counts one total per request (its prompt tokens plus `max_tokens`): the
`tokens` headers carry it, and Anthropic's separate `input-tokens` / `output-tokens` headers are not sent.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Literal

from ..state import Admission

__all__ = ["Dialect", "rate_headers", "rate_limit_headers"]

#: The API spoken, as far as its errors and rate-limit headers go: "anthropic" (/v1/messages), else "openai".
Dialect = Literal["openai", "anthropic"]

#: `Admission.limits()`'s names (OpenAI's header suffixes) → Anthropic's.
_ANTHROPIC_NAMES = {"limit-requests": "requests-limit", "remaining-requests": "requests-remaining",
                    "reset-requests": "requests-reset", "limit-tokens": "tokens-limit",
                    "remaining-tokens": "tokens-remaining", "reset-tokens": "tokens-reset"}


def _duration(seconds: float) -> str:
    """A reset time as OpenAI writes it (Go's spelling): 20ms, 1.5s, 6m0s, 1h2m3s.

    The unit is picked after rounding, so 0.9996 s is 1s (not 1000ms) and 59.96 s is 1m0s (not 60s)."""
    millis = max(round(seconds * 1000), 0)
    if millis < 1000:
        return f"{millis}ms"
    short = f"{seconds:.3g}"
    if float(short) < 60:
        return f"{short}s"
    hours, rest = divmod(round(seconds), 3600)
    minutes, rest = divmod(rest, 60)
    return f"{hours}h{minutes}m{rest}s" if hours else f"{minutes}m{rest}s"


def _rfc3339(at: float) -> str:
    """`at` (seconds since the epoch) in UTC, whole seconds rounded up: waiting until then never finds the bucket
    short of what the header promised."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(math.ceil(at)))


def rate_limit_headers(limits: Mapping[str, float | None], dialect: Dialect = "openai", *,
                       measured_at: float | None = None, now: float | None = None) -> dict[str, str]:
    """The rate-limit headers of limit-/remaining-/reset- values in `dialect`'s spelling: "anthropic" (/v1/messages)
    or "openai" (every other API).

    The resets are seconds from `measured_at`, the wall-clock time the buckets were read (None: `now`, the wall
    clock by default). An answer's headers are spelled after the model answered: Anthropic's reset is the time
    `measured_at` + reset, OpenAI's duration what is left of it `now` (never below 0)."""
    headers: dict[str, str] = {}
    if dialect == "anthropic":
        if measured_at is None:
            measured_at = time.time() if now is None else now
        for name, value in limits.items():
            spelled = _ANTHROPIC_NAMES.get(name)
            if value is None or spelled is None:
                continue
            if name.startswith("reset-"):
                headers[f"anthropic-ratelimit-{spelled}"] = _rfc3339(measured_at + value)
            else:
                headers[f"anthropic-ratelimit-{spelled}"] = str(int(value))
        return headers
    elapsed = 0.0 if measured_at is None else max((time.time() if now is None else now) - measured_at, 0.0)
    for name, value in limits.items():
        if value is not None:
            headers[f"x-ratelimit-{name}"] = (_duration(max(value - elapsed, 0.0)) if name.startswith("reset-")
                                              else str(int(value)))
    return headers


def rate_headers(admission: Admission | None, dialect: Dialect = "openai") -> dict[str, str]:
    """The rate-limit headers of an admitted request in `dialect`'s spelling, its resets counted from its admission
    (none when no caller limit applied)."""
    if admission is None:
        return {}
    return rate_limit_headers(admission.limits(), dialect, measured_at=admission.measured_at)
