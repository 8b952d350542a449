"""How an amount of dollars reads, in every CLI table and on the dashboard.

A fixed number of decimals hides what cheap and local models cost: at four places a $0.000012 call
reads $0.0000, as if nothing were spent or saved. Below a dollar, amounts keep three significant
digits instead (trailing zeros past the cents dropped); below a millionth they go to e-notation.
Rounding takes the float's exact binary value and rounds halves up, as JavaScript's toFixed does, so the
dashboard's charts (app.js money()) write the same text ($1.125 → $1.13 in both, not $1.12 here).
"""

from __future__ import annotations

import math
from decimal import ROUND_HALF_UP, Context, Decimal

__all__ = ["usd"]

#: Significant digits kept below a dollar.
_DIGITS = 3
#: Below this, e-notation ($1.2e-07) rather than a run of zeros.
_TINY = 1e-6
#: Below this an amount is float noise (a saving of -1.1e-16 left by subtracting equal costs): $0.
_NOISE = 1e-12
#: Room for every digit of any float's whole part and its rounded decimals (the default 28 digits make
#: `quantize` raise from $1e26 up).
_EXACT = Context(prec=400)
#: E-notation's digits, rounded as JavaScript's toExponential rounds them.
_MANTISSA = Context(prec=_DIGITS - 1, rounding=ROUND_HALF_UP)


def usd(amount: float, *, symbol: bool = True) -> str:
    """$1,234.50, $0.50, $0.0042, $0.000012, $1.2e-07, $0, -$0.50, -$inf; — for NaN, an amount there is not.

    `symbol=False` drops the `$`, for a `$/…` column.
    """
    dollar = "$" if symbol else ""
    if math.isnan(amount):
        return "—"
    sign = "-" if amount < 0 else ""
    size = abs(amount)
    if size < _NOISE:
        return f"{dollar}0"
    if math.isinf(size):
        return f"{sign}{dollar}inf"
    if size < _TINY:
        mantissa = _MANTISSA.create_decimal_from_float(size)
        if mantissa < _TINY:
            return f"{sign}{dollar}{float(mantissa):.{_DIGITS - 1}g}"
        size = _TINY  # 9.96e-07 rounds to a millionth, so it reads as 1e-06 does: $0.000001, not $1e-06
    if size >= 1:
        return f"{sign}{dollar}{_rounded(size, 2):,}"
    places = _DIGITS - 1 - math.floor(math.log10(size))
    text = str(_rounded(size, places))
    whole, _, fraction = text.partition(".")
    fraction = fraction.rstrip("0").ljust(2, "0")  # 0.0420 → 0.042, 0.500 → 0.50, 0.01000 → 0.01
    return f"{sign}{dollar}{whole}.{fraction}"


def _rounded(size: float, places: int) -> Decimal:
    """`size` (its exact binary value) to `places` decimals, halves up: what JavaScript's toFixed does."""
    return Decimal(size).quantize(Decimal(1).scaleb(-places), ROUND_HALF_UP, _EXACT)
