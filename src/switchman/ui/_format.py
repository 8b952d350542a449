"""How numbers and times read on the dashboard (Jinja filters): money, shares, durations, UTC times."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from .._money import usd as money

__all__ = ["FILTERS", "count", "duration", "ms", "pct", "quality", "usd", "utc"]


def usd(value: float | None) -> str:
    """Dollars as the command line shows them ($12.34, $0.0042, $0.000013: see switchman._money)."""
    return "—" if value is None else money(value)


def pct(value: float | None, *, places: int = 1, ratio: bool = False) -> str:
    """A percentage (give `ratio=True` for a 0..1 value)."""
    if value is None:
        return "—"
    return f"{value * 100 if ratio else value:.{places}f}%"


def count(value: float | None) -> str:
    """A whole number with thousands separators."""
    return "—" if value is None else f"{int(value):,}"


def ms(value: float | None) -> str:
    """A duration in ms, or seconds beyond ten of them."""
    if value is None:
        return "—"
    if value >= 10_000:
        return f"{value / 1000:.1f} s"
    return f"{value:.0f} ms" if value >= 10 else f"{value:.1f} ms"


def quality(value: float | None) -> str:
    """A predicted quality or feedback score (0..1)."""
    return "—" if value is None else f"{value:.3f}"


def utc(moment: float | None, *, seconds: bool = True) -> str:
    """An epoch time as 'YYYY-MM-DD HH:MM:SS UTC'."""
    if moment is None:
        return "—"
    fmt = "%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M"
    return datetime.fromtimestamp(moment, UTC).strftime(fmt) + " UTC"


def iso(moment: float | None) -> str:
    """An epoch time in ISO 8601 (for <time datetime=...>)."""
    return "" if moment is None else datetime.fromtimestamp(moment, UTC).isoformat(timespec="seconds")


def duration(seconds: float | None) -> str:
    """A span such as '5h 12m' or '3d 4h' (for 'resets in')."""
    if seconds is None:
        return "—"
    seconds = max(int(seconds), 0)
    days, rest = divmod(seconds, 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes = rest // 60
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m"


FILTERS: dict[str, Any] = {
    "usd": usd, "pct": pct, "count": count, "ms": ms, "quality": quality, "utc": utc, "iso": iso,
    "duration": duration,
}
