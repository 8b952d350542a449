"""The dashboard's charts write dollars as its tables and the command line do (`switchman._money.usd`)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

import switchman.ui
from switchman._money import usd

NODE = shutil.which("node")
AMOUNTS = [0.0, 1234.5, 2.5, 0.5, 0.0234567, 0.0042, 0.05, 0.000012, 0.0099999, 0.99999, 1.2e-7, 1e-7, -0.000012]


def _chart_money() -> str:
    """The source of app.js's `money` function."""
    source = (Path(switchman.ui.__file__).parent / "static" / "app.js").read_text(encoding="utf-8")
    found = re.search(r"^  function money\(v\) \{\n.*?^  \}\n", source, re.MULTILINE | re.DOTALL)
    assert found is not None, "app.js has no money(v) function"
    return found.group(0)


@pytest.mark.skipif(NODE is None, reason="needs node")
def test_the_charts_money_is_the_tables() -> None:
    assert NODE is not None
    script = f"{_chart_money()}\nconsole.log(JSON.stringify({json.dumps(AMOUNTS)}.map(money)));"
    out = subprocess.run([NODE, "-e", script], capture_output=True, text=True, check=True, timeout=60).stdout
    assert json.loads(out) == [usd(amount) for amount in AMOUNTS]
