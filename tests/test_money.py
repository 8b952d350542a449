"""Dollar amounts read the same in every CLI table and on the dashboard, and cheap calls never read $0."""

from __future__ import annotations

import math

import pytest

from switchman._money import usd
from switchman.ui._format import usd as dashboard_usd


@pytest.mark.parametrize(
    ("amount", "text"),
    [
        (0.0, "$0"),
        (1234.5, "$1,234.50"),
        (2.5, "$2.50"),
        (0.5, "$0.50"),
        (0.0234567, "$0.0235"),
        (0.0042, "$0.0042"),
        (0.05, "$0.05"),
        (0.000012, "$0.000012"),
        (0.0099999, "$0.01"),  # rounding carries
        (0.99999, "$1.00"),
        (1.2e-7, "$1.2e-07"),
        (-0.000012, "-$0.000012"),
        (1.125, "$1.13"),  # an exact binary half rounds up, as the dashboard's JavaScript rounds it
        (0.3125, "$0.313"),
        (2.675, "$2.67"),  # 2.67499… in binary
        (1e30, "$1,000,000,000,000,000,019,884,624,838,656.00"),  # past Decimal's default 28 digits
        (-1.1e-16, "$0"),  # float noise (equal costs subtracted) is nothing, not -$1.1e-16
        (5e-324, "$0"),
        (9.94e-7, "$9.9e-07"),
        (9.96e-7, "$0.000001"),  # rounds to a millionth, so reads as one does, not $1e-06
        (-9.9999e-7, "-$0.000001"),
        (math.inf, "$inf"),
        (-math.inf, "-$inf"),  # the sign before the $, as for every amount
        (math.nan, "—"),  # no amount, as the dashboard shows a missing one
    ],
)
def test_usd(amount: float, text: str) -> None:
    assert usd(amount) == text


def test_usd_without_the_symbol_for_a_per_unit_column() -> None:
    assert usd(0.000012, symbol=False) == "0.000012"
    assert [usd(a, symbol=False) for a in (-math.inf, math.nan, -1e-16)] == ["-inf", "—", "0"]


@pytest.mark.parametrize("amount", [1.2e-7, 3e-6, 0.000012, 0.0042])
def test_the_dashboard_shows_what_a_cheap_call_costs(amount: float) -> None:
    text = dashboard_usd(amount)
    assert text == usd(amount) and text.strip("$0.") != ""
