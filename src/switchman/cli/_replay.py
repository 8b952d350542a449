"""`switchman replay`: a router over logged traffic (or outcome data), printed next to what actually ran.

Names are compared through the configuration's aliases (a router trained on `gpt-4-1106-preview`
replays as the configured `gpt-4o`) and `--alias`; when the router and the traffic still share no
model, the report says so instead of presenting a "saving" between unrelated models.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

from .._config import load_config
from .._exceptions import ConfigError
from .._money import usd
from ..evaluate import ledger_records, load_data, replay_data, replay_ledger
from ..learn import TrainedRouter
from ._outputs import check_outputs
from ._progress import ProgressBars
from ._tables import Field, print_table

__all__ = ["config_aliases", "replay_command"]

_FIELDS = (Field("", numeric=False), Field("cost (USD)"), Field("$/1k"), Field("predicted quality"),
           Field("share per model", numeric=False))


def _print(report: dict[str, Any], console: Console) -> None:
    rows = []
    for name in ("router", "actual"):
        entry = report.get(name)
        if entry is None:
            continue
        quality = entry.get("predicted_quality")
        shares = ", ".join(f"{m} {s:.1%}" for m, s in entry["share"].items())
        rows.append(["would have run" if name == "router" else "actually ran", usd(entry["cost_usd"], symbol=False),
                     usd(entry["cost_per_1k"], symbol=False), "—" if quality is None else f"{quality:.3f}", shares])
    print_table(console, f"replay of {report['requests']} requests", _FIELDS, rows)
    for warning in report.get("warnings", ()):
        console.print(f"[yellow]warning:[/] {warning}", highlight=False)
    if report.get("saving_pct") is not None and not report.get("warnings"):
        console.print(f"saving: {usd(report['saving_usd'])} ({report['saving_pct']:.1f}%)")
    if report["router"].get("true_quality") is not None:
        console.print(f"true quality of the router's choices: {report['router']['true_quality']:.3f}")


def config_aliases(config: Path) -> tuple[dict[str, str], dict[str, tuple[float, float]]]:
    """Every route's aliases (trained name → configured name) and each configured model's prices, from a config."""
    settings = load_config(config)
    aliases: dict[str, str] = {}
    for route in settings.routes.values():
        aliases.update(route.aliases)
    prices = {name: (spec.input_price, spec.output_price) for name, spec in settings.model_specs().items()}
    return aliases, prices


def _shared_model_warning(trained: TrainedRouter, ran: Sequence[str | None]) -> str | None:
    """The warning for a replay whose router and traffic have no model in common, else None."""
    served = sorted({m for m in ran if m})
    if not served or set(served) & set(trained.model_names):
        return None
    return (f"the router's models ({', '.join(trained.model_names)}) and the ones that ran ({', '.join(served)}) "
            "share no model, so the cost and saving compare unrelated models; map trained names to configured "
            "ones with --config FILE (its routes' aliases) or --alias trained=configured")


def replay_command(
    *, router: Path, ledger: str | None = None, data: Sequence[Path] = (), since: str | None = "7d",
    models: Sequence[str] = (), json_path: Path | None = None, console: Console | None = None,
    config: Path | None = None, aliases: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Replay a router over logged traffic (or outcome data); print and optionally write the report.

    `config` gives its routes' aliases and its models' prices; `aliases` (trained → configured) adds to them.
    """
    check_outputs(json=json_path)
    console = console or Console()
    if (ledger is None) == (not data):
        raise ConfigError("give exactly one of --ledger URL or --data DIR")
    names, prices = config_aliases(config) if config is not None else ({}, {})
    names.update(aliases or {})
    trained = TrainedRouter.load(router)
    known = {a: b for a, b in names.items() if a in trained.models and a != b}
    if known:
        trained = trained.with_aliases(known)
    started = time.perf_counter()
    with ProgressBars(console) as progress:
        if data:
            result = replay_data(trained, load_data(list(data)), models, progress=progress)
            source = ", ".join(str(d) for d in data)
        else:
            records, _, source = ledger_records(ledger or None, since, feedback=False)
            result = replay_ledger(trained, records, models=models, source=source, progress=progress,
                                   prices={m: p for m, p in prices.items() if m in trained.model_names} or None)
    report = {"router_file": str(router), "source": source, **result.summary(),
              "seconds": round(time.perf_counter() - started, 3)}
    if known:
        report["aliases"] = known
    warning = _shared_model_warning(trained, result.actual_models)
    if warning is not None:
        report["warnings"] = [warning]
    _print(report, console)
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(report, indent=2))
    return report
