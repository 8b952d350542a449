"""OpenAI's reset headers are durations (20ms, 1.5s, 6m0s): a value that rounds up to the next unit is written in it."""

from __future__ import annotations

import pytest

from switchman.gateway._rate_headers import rate_limit_headers


@pytest.mark.parametrize(
    ("seconds", "spelled"),
    [
        (0.0, "0ms"),
        (0.1563, "156ms"),
        (0.9994, "999ms"),
        (0.9996, "1s"),  # not 1000ms
        (1.5, "1.5s"),
        (20.0, "20s"),
        (59.94, "59.9s"),
        (59.96, "1m0s"),  # not 60s
        (59.9996, "1m0s"),
        (60.0, "1m0s"),
        (360.0, "6m0s"),
        (3599.4, "59m59s"),
        (3599.6, "1h0m0s"),  # not 60m0s
        (3723.0, "1h2m3s"),
    ],
)
def test_a_reset_duration_as_openai_writes_it(seconds: float, spelled: str) -> None:
    assert rate_limit_headers({"reset-requests": seconds}) == {"x-ratelimit-reset-requests": spelled}
