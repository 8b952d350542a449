"""`switchman replay`: a router over logged traffic (or outcome data), printed next to what actually ran."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from .._exceptions import ConfigError
from ..evaluate import ledger_records, load_data, replay_data, replay_ledger
from ..learn import TrainedRouter

__all__ = ["replay_command"]


def _print(report: dict[str, Any], console: Console) -> None:
    table = Table(title=f"replay of {report['requests']} requests")
    for col in ("", "cost (USD)", "$/1k", "predicted quality", "share per model"):
        table.add_column(col, justify="left" if col in ("", "share per model") else "right")
    for name in ("router", "actual"):
        entry = report.get(name)
        if entry is None:
            continue
        quality = entry.get("predicted_quality")
        shares = ", ".join(f"{m} {s:.1%}" for m, s in entry["share"].items())
        table.add_row("would have run" if name == "router" else "actually ran", f"{entry['cost_usd']:.6f}",
                      f"{entry['cost_per_1k']:.4f}", "—" if quality is None else f"{quality:.3f}", shares)
    console.print(table)
    if report.get("saving_pct") is not None:
        console.print(f"saving: ${report['saving_usd']:.6f} ({report['saving_pct']:.1f}%)")
    if report["router"].get("true_quality") is not None:
        console.print(f"true quality of the router's choices: {report['router']['true_quality']:.3f}")


def replay_command(
    *, router: Path, ledger: str | None = None, data: Sequence[Path] = (), since: str | None = "7d",
    models: Sequence[str] = (), json_path: Path | None = None, console: Console | None = None,
) -> dict[str, Any]:
    """Replay a router over logged traffic (or outcome data); print and optionally write the report."""
    console = console or Console()
    if (ledger is None) == (not data):
        raise ConfigError("give exactly one of --ledger URL or --data DIR")
    trained = TrainedRouter.load(router)
    started = time.perf_counter()
    with console.status("replaying"):
        if data:
            result = replay_data(trained, load_data(list(data)), models)
            source = ", ".join(str(d) for d in data)
        else:
            records, _, source = ledger_records(ledger or None, since)
            result = replay_ledger(trained, records, models=models, source=source)
    report = {"router_file": str(router), "source": source, **result.summary(),
              "seconds": round(time.perf_counter() - started, 3)}
    _print(report, console)
    if json_path is not None:
        json_path.write_text(json.dumps(report, indent=2))
    return report
