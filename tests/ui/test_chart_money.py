"""The dashboard's charts write dollars as its tables and the command line do (`switchman._money.usd`)."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
from pathlib import Path

import pytest

import switchman.ui
from switchman._money import usd

NODE = shutil.which("node")
AMOUNTS = [0.0, 1234.5, 2.5, 0.5, 0.0234567, 0.0042, 0.05, 0.000012, 0.0099999, 0.99999, 1.2e-7, 1e-7, -0.000012]
#: Where the two used to part: decimal halves that are not binary ones (2.675 is 2.67499…), exact binary
#: halves (1.125, 0.3125: both must round them up), and just under a millionth (toPrecision went fixed).
EDGES = [2.675, 1.005, 47.055, 9.96e-7, 9.9999e-7, 1.125, 0.3125]
#: Not amounts one means to show, yet one arrives: float noise, a rounding to the next format, no amount at all.
ODD = [-1.1e-16, 5e-324, 1e-12, 9.94e-7, 1e-6, -9.96e-7, 3e-100, math.inf, -math.inf, math.nan]


def _node_money(amounts: list[float]) -> list[str]:
    """What app.js's `money` writes for each amount."""
    assert NODE is not None
    script = f"{_chart_money()}\nconsole.log(JSON.stringify({json.dumps(amounts)}.map(money)));"
    out = subprocess.run([NODE, "-e", script], capture_output=True, text=True, check=True, timeout=60).stdout
    texts = json.loads(out)
    assert isinstance(texts, list)
    return texts


def _chart_money() -> str:
    """The source of app.js's `money` function."""
    source = (Path(switchman.ui.__file__).parent / "static" / "app.js").read_text(encoding="utf-8")
    found = re.search(r"^  function money\(v\) \{\n.*?^  \}\n", source, re.MULTILINE | re.DOTALL)
    assert found is not None, "app.js has no money(v) function"
    return found.group(0)


@pytest.mark.skipif(NODE is None, reason="needs node")
def test_the_charts_money_is_the_tables() -> None:
    assert _node_money(AMOUNTS) == [usd(amount) for amount in AMOUNTS]


@pytest.mark.skipif(NODE is None, reason="needs node")
@pytest.mark.parametrize("amount", EDGES)
def test_the_charts_round_as_the_tables_at_the_edges(amount: float) -> None:
    assert _node_money([amount]) == [usd(amount)]


@pytest.mark.skipif(NODE is None, reason="needs node")
def test_the_charts_write_noise_infinities_and_nan_as_the_tables() -> None:
    assert _node_money(ODD) == [usd(amount) for amount in ODD]
