"""`switchman train`: outcome data (or logged traffic with feedback) in, a calibrated router file out."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

from rich.console import Console

from ..evaluate import ledger_outcomes, load_data
from ..learn import DEFAULT_SETTINGS, TrainedRouter, TrainSettings, bundled_router, train_router
from ._outputs import check_outputs
from ._progress import ProgressBars

__all__ = ["train_command"]


def train_command(
    *,
    data: Sequence[Path],
    out: Path,
    settings: TrainSettings = DEFAULT_SETTINGS,
    split: str | None = "train",
    task: str | None = None,
    models: Sequence[str] = (),
    aliases: Mapping[str, str] | None = None,
    from_ledger: str | None = None,
    since: str | None = None,
    console: Console | None = None,
) -> TrainedRouter:
    """Train, calibrate and save a router file; print its training summary.

    `from_ledger` trains on logged requests with feedback instead of `data` (one outcome per
    request, so calibration fills the other models' cells with out-of-fold predictions). It starts
    from the bundled router: its prompt-difficulty heads and ability scale are kept and only the
    logged models' abilities and the clusters' evidence are fitted, so a few hundred labelled
    requests are enough (with `--algorithm ability`, the default).
    """
    check_outputs(out=out)
    console = console or Console()
    prior = None
    with console.status("loading data"):
        if from_ledger is not None:
            table = ledger_outcomes(from_ledger or None, since)
            table = table.select_models(list(models)) if models else table
            settings = replace(settings, impute_missing=True)
            if settings.algorithm == "ability":
                prior = bundled_router()
                settings = replace(settings, embedder=prior.embedder, window=prior.window or settings.window)
        else:
            table = load_data(data, split=split, task=task, models=models, aliases=dict(aliases or {}))
    with ProgressBars(console) as progress:
        source = [table.source] if from_ledger is not None else [str(d) for d in data]
        trained = train_router(table, settings, source=source, split=None if from_ledger is not None else split,
                               prior=prior, progress=progress)
    out.parent.mkdir(parents=True, exist_ok=True)
    trained.save(out)
    _print_summary(trained, out, settings, console)
    return trained


def _print_summary(trained: TrainedRouter, out: Path, settings: TrainSettings, console: Console) -> None:
    cal = trained.summary["calibration"]
    console.print(
        f"[bold]{out}[/]: {trained.algorithm} router over {len(trained.models)} models, "
        f"{trained.summary['n_prompts']} prompts, trained in {trained.summary['train_seconds']:.1f}s", soft_wrap=True
    )
    met = "[green]met[/]" if cal["met"] else "[red]not reachable; closest point kept[/]"
    bias = cal.get("nested_bias")
    nested = "" if bias is None else f"; nested CV measured a {bias:+.2%} miss, so calibrated for {cal['calibrated_for'][0]}"
    console.print(
        f"calibration ({', '.join(cal['targets'])}; {settings.folds}-fold, training data only{nested}): knob "
        f"{trained.knob} → {cal['rel_quality']:.1%} of {trained.summary['best_model']}'s quality at "
        f"${cal['cost_per_1k']:.4f}/1k — {met}",
        soft_wrap=True,
    )
