"""Logged traffic as offline input: the ledger's records (and feedback) for `train --from-ledger` and `replay`."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from ._exceptions import ConfigError, DatasetError
from .evaluate._datasets import OutcomeTable
from .evaluate._ledger_outcomes import NO_PROMPTS_HINT, outcomes_from_ledger
from .evaluate._replay import ReplayResult, replay_choices
from .learn._artifact import TrainedRouter
from .learn._embedders import get_embedder
from .ledger import Ledger, LedgerRecord, parse_since
from .ledger._db import display_url
from .routing._request import RouteRequest
from .routing._tasks import detect_task

__all__ = ["ledger_outcomes", "ledger_records", "replay_command", "replay_ledger"]


def ledger_records(url: str | None, since: str | None) -> tuple[list[LedgerRecord], dict[str, float], str]:
    """Records from `since` on (e.g. 7d), the latest feedback score per request, and the URL to show."""
    try:
        start = parse_since(since) if since else None
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    ledger = Ledger.from_url(url)
    try:
        return ledger.records(since=start), ledger.feedback_scores(), display_url(ledger.url)
    finally:
        ledger.close_sync()


def ledger_outcomes(url: str | None, since: str | None) -> OutcomeTable:
    """The outcome table of logged requests with a stored prompt and feedback."""
    records, scores, shown = ledger_records(url, since)
    return outcomes_from_ledger(records, scores, source=shown)


def _features(trained: TrainedRouter, prompts: Sequence[str], tasks: Sequence[str | None]) -> np.ndarray:
    """Embeddings of the prompts (never cached on disk: logged prompts stay in the ledger only)."""
    embedder = get_embedder(trained.embedder)
    return trained.features(embedder.embed(trained.texts(list(prompts))), list(tasks))


def replay_ledger(trained: TrainedRouter, records: Sequence[LedgerRecord], *, models: Sequence[str] = (),
                  prices: dict[str, tuple[float, float]] | None = None, source: str = "ledger") -> ReplayResult:
    """Replay answered requests that have a stored prompt."""
    rows = [r for r in records if r.status == "ok" and r.model is not None and r.prompt]
    if not rows:
        skipped = sum(1 for r in records if r.status == "ok" and not r.prompt)
        raise DatasetError(f"{source}: no answered request with a stored prompt to replay "
                           f"({len(records)} records, {skipped} answered without a prompt); {NO_PROMPTS_HINT}")
    # The task as serving resolves it (detected from the prompt), for routers trained with tasks.
    tasks = [detect_task(RouteRequest(prompt=r.prompt or "")) for r in rows]
    features = _features(trained, [r.prompt or "" for r in rows], tasks)
    try:
        return replay_choices(
            trained, features, np.array([r.input_tokens for r in rows]), actual_models=[r.model for r in rows],
            actual_cost_usd=np.array([r.cost_usd for r in rows]), prices=prices, models=models or None,
        )
    except ValueError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def _replay_data(trained: TrainedRouter, table: OutcomeTable, models: Sequence[str]) -> ReplayResult:
    keep = list(models) or [m for m in trained.model_names if m in table.models]
    missing = [m for m in keep if m not in table.models]
    if missing or not keep:
        raise ConfigError(f"the data has no outcomes for {missing or list(trained.model_names)}; "
                          f"its models are {list(table.models)}")
    features = _features(trained, table.prompts, table.tasks)
    quality = table.select_models(keep).quality
    return replay_choices(trained, features, table.prompt_input_tokens(), models=keep, true_quality=quality)


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
            from ._offline import load_data

            result = _replay_data(trained, load_data(list(data)), models)
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
