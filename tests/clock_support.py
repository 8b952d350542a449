"""A clock the test moves by hand, for the parts that take a `clock` (limiters, health boards, caches, balancers):
the state and gateway tests' one copy (importable from every test folder: tests/ is on sys.path)."""

from __future__ import annotations

__all__ = ["Clock"]


class Clock:
    """Monotonic seconds, moved by the test (`clock.now += 5`)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now
