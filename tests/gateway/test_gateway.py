"""Gateway assembly: budgets follow spend that other workers write to the shared ledger."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from switchman._config import parse_config
from switchman.gateway import Gateway
from switchman.ledger import Ledger, LedgerRecord
from switchman.testing import FakeUpstream

from .conftest import ENV, config_data


@pytest.mark.anyio
async def test_budgets_count_other_workers_spend(upstream: FakeUpstream, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
    gateway = Gateway.from_config(parse_config(config_data(upstream, url)), env=ENV)
    await gateway.start()
    other = Ledger.from_url(url)  # another worker's writer
    other.record(LedgerRecord(agent="frugal", model="mid", cost_usd=0.0019))
    other.close_sync()
    refresher = asyncio.create_task(gateway.refresh_budgets(every_s=0.01))
    try:
        assert gateway.budgets is not None
        deadline = time.monotonic() + 10
        while not any(b.name == "frugal" and spent >= 0.0019 for b, spent, _ in gateway.budgets.usage()):
            assert time.monotonic() < deadline, gateway.budgets.usage()
            await asyncio.sleep(0.02)
    finally:
        refresher.cancel()
        await asyncio.gather(refresher, return_exceptions=True)
        await gateway.aclose()
