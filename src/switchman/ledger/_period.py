"""Calendar arithmetic for budgets (UTC days and months) and `--since` values for reports."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Literal

__all__ = ["Period", "parse_since", "period_bounds"]

Period = Literal["day", "month"]

_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.IGNORECASE)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def period_bounds(now: float, period: Period) -> tuple[float, float]:
    """The start and end (epoch seconds) of the UTC day or month that contains `now`."""
    moment = datetime.fromtimestamp(now, UTC)
    if period == "day":
        start = moment.replace(hour=0, minute=0, second=0, microsecond=0)
        end = start + timedelta(days=1)
    elif period == "month":
        start = moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        end = start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)
    else:
        raise ValueError(f"unknown budget period {period!r}: use 'day' or 'month'")
    return start.timestamp(), end.timestamp()


def parse_since(text: str, *, now: datetime | None = None) -> datetime:
    """A report's start time: `30m`, `24h`, `7d`, `2w` before `now`, or an ISO date or datetime (UTC if naive)."""
    now = now or datetime.now(UTC)
    match = _RELATIVE.match(text)
    if match:
        amount, unit = float(match.group(1)), match.group(2).lower()
        try:
            return now - timedelta(seconds=amount * _UNIT_SECONDS[unit])
        except OverflowError:  # 99999999d: before the year 1
            raise ValueError(f"cannot read --since {text!r}: it reaches back before the year 1") from None
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"cannot read --since {text!r}: use a duration like 30m, 24h, 7d, 2w or a date like 2025-01-31"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
