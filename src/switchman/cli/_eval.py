"""`switchman train` and `switchman eval`: outcome data in, a router file or a report out."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from .._exceptions import ConfigError
from ..evaluate import (
    OutcomeTable,
    RouterPredictions,
    baselines,
    cross_validate,
    evaluate_choices,
    evaluate_predictions,
    load_data,
    parse_aliases,
    predict_with_router,
    reference_points,
    strategy_choices,
    summary_rows,
    train_and_predict,
)
from ..learn import ALGORITHMS, TrainedRouter, TrainSettings, parse_target, train_router

__all__ = ["eval_command", "train_command"]


def parse_params(pairs: Sequence[str]) -> dict[str, Any]:
    """`k=100`, `mf.rank=32` → nested numeric parameters for the predictor."""
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"bad --param {pair!r}: use name=value, e.g. k=100 or mf.rank=32")
        try:
            value: Any = int(raw) if raw.strip().lstrip("-").isdigit() else float(raw)
        except ValueError:
            raise ConfigError(f"bad --param {pair!r}: the value must be a number") from None
        *parents, leaf = key.strip().split(".")
        node = params
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return params


def _settings(
    *, embedder: str, algorithm: str, targets: Sequence[str], use_task: bool, focus: str, rule: str, folds: int,
    seed: int, params: Sequence[str] = (),
) -> TrainSettings:
    if rule not in ("tradeoff", "tolerance"):
        raise ConfigError(f"bad --rule {rule!r}: use tradeoff or tolerance")
    if focus not in ("full", "last_block"):
        raise ConfigError(f"bad --focus {focus!r}: use full or last_block")
    if algorithm not in ALGORITHMS:
        raise ConfigError(f"bad --algorithm {algorithm!r}: use one of {', '.join(ALGORITHMS)}")
    return TrainSettings(
        embedder=embedder, algorithm=algorithm, targets=tuple(parse_target(t) for t in targets) or TrainSettings().targets,
        use_task=use_task, focus=focus, rule=rule, folds=folds, seed=seed, params=parse_params(params),  # type: ignore[arg-type]
    )


def train_command(
    *,
    data: Sequence[Path],
    out: Path,
    split: str | None = "train",
    task: str | None = None,
    models: Sequence[str] = (),
    aliases: Sequence[str] = (),
    algorithm: str = "knn",
    embedder: str = "wordllama-256",
    targets: Sequence[str] = ("quality=0.95",),
    use_task: bool = False,
    focus: str = "full",
    rule: str = "tradeoff",
    folds: int = 5,
    seed: int = 0,
    params: Sequence[str] = (),
    from_ledger: str | None = None,
    since: str | None = None,
    console: Console | None = None,
) -> TrainedRouter:
    """Train, calibrate and save a router file; print its training summary.

    `from_ledger` trains on logged requests with feedback instead of `data` (one outcome per
    request, so calibration fills the other models' cells with out-of-fold predictions).
    """
    console = console or Console()
    settings = _settings(embedder=embedder, algorithm=algorithm, targets=targets, use_task=use_task, focus=focus,
                         rule=rule, folds=folds, seed=seed, params=params)
    with console.status("loading data"):
        if from_ledger is not None:
            from ..evaluate import ledger_outcomes

            table = ledger_outcomes(from_ledger or None, since)
            table = table.select_models(list(models)) if models else table
            settings = replace(settings, impute_missing=True)
        else:
            table = load_data(data, split=split, task=task, models=models, aliases=parse_aliases(aliases))
    with console.status("training") as status:
        source = [table.source] if from_ledger is not None else [str(d) for d in data]
        trained = train_router(table, settings, source=source,
                               progress=lambda msg: status.update(msg))
    trained.save(out)
    cal = trained.summary["calibration"]
    console.print(
        f"[bold]{out}[/]: {trained.algorithm} router over {len(trained.models)} models, "
        f"{trained.summary['n_prompts']} prompts, trained in {trained.summary['train_seconds']:.1f}s"
    )
    met = "[green]met[/]" if cal["met"] else "[red]not reachable; closest point kept[/]"
    console.print(
        f"calibration ({', '.join(cal['targets'])}; {settings.folds}-fold, training data only): knob {cal['knob']:.4g} → "
        f"{cal['rel_quality']:.1%} of {trained.summary['best_model']}'s quality at ${cal['cost_per_1k']:.4f}/1k — {met}"
    )
    return trained


def _fmt(value: Any, pct: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:.1%}" if pct else f"{value:.4f}"


def _print_report(report: dict[str, Any], console: Console) -> None:
    table = Table(title=f"{report['n_prompts']} prompts; best single model {report['best_model']}")
    table.add_column("router / baseline", no_wrap=True)
    for col in ("quality", "$/1k", "rel quality", "rel cost", "AIQ", "saved @95%", "saved @100%"):
        table.add_column(col, justify="right")
    for name, entry in summary_rows(report):
        table.add_row(
            name, _fmt(entry["quality"]), _fmt(entry["cost_per_1k"]), _fmt(entry["rel_quality"], True),
            _fmt(entry["rel_cost"], True), _fmt(entry.get("aiq")), _fmt(entry.get("savings_at_95"), True),
            _fmt(entry.get("savings_at_100"), True),
        )
    for name in ("single_model_hull", "random_mix"):
        entry = report["baselines"][name]
        table.add_row(f"baseline: {name}", "", "", "", "", _fmt(entry["aiq"]), _fmt(entry["savings_at_95"], True),
                      _fmt(entry["savings_at_100"], True))
    console.print(table)
    for name, entry in report["routers"].items():
        if entry.get("apgr") is not None:
            console.print(f"{name}: APGR {entry['apgr']:.3f}, CPT(50%) {_fmt(entry['cpt50'], True)}, "
                          f"CPT(80%) {_fmt(entry['cpt80'], True)}")


def _print_equal_quality(cascades: dict[str, Any], console: Console) -> None:
    for name, entry in cascades.items():
        eq = entry.get("equal_quality")
        if eq is None:
            continue
        cal = entry["calibrated"]
        console.print(
            f"{name}: threshold {cal['threshold']:g}, adequate {cal['adequate']:g}, ≤{cal['max_attempts']} attempts "
            f"(mean {cal['mean_attempts']:.2f}, {cal['accepted_on_first_rung']:.0%} on the first rung); at its quality "
            f"{entry['quality']:.4f} the single-shot router costs ${_fmt(eq['single_shot_cost_at_cascade_quality'])}/1k "
            f"vs ${entry['cost_per_1k']:.4f}; at single-shot's quality {eq['single_shot']['quality']:.4f} the cascade "
            f"costs ${_fmt(eq['cascade_cost_at_single_shot_quality'])}/1k vs ${eq['single_shot']['cost_per_1k']:.4f}"
        )


def _training_part(everything: OutcomeTable, evaluation: OutcomeTable) -> OutcomeTable:
    """The train split minus every prompt being evaluated, so in-process training never sees them."""
    held_out = set(evaluation.prompt_ids)
    train = everything.where_split("train")
    train = train.subset([p not in held_out for p in train.prompt_ids])
    if len(train) == 0:
        raise ConfigError("no training prompts outside the evaluated ones; evaluate --split test, or use --cv K")
    return train


def eval_command(
    *,
    data: Sequence[Path],
    routers: Sequence[Path] = (),
    strategies: Sequence[str] = (),
    split: str | None = "test",
    cv: int | None = None,
    task: str | None = None,
    models: Sequence[str] = (),
    aliases: Sequence[str] = (),
    targets: Sequence[str] = ("quality=0.95",),
    algorithm: str = "knn",
    embedder: str = "wordllama-256",
    use_task: bool = False,
    focus: str = "full",
    rule: str = "tradeoff",
    seed: int = 0,
    params: Sequence[str] = (),
    json_path: Path | None = None,
    plot_path: Path | None = None,
    console: Console | None = None,
) -> dict[str, Any]:
    """Evaluate routers and strategies against baselines; print a table, write JSON and a plot."""
    console = console or Console()
    if not routers and not strategies:
        raise ConfigError("give --router FILE or --strategy NAME (learned, cascade, cheapest, random, fixed:MODEL)")
    alias_map = parse_aliases(aliases)
    settings = _settings(embedder=embedder, algorithm=algorithm, targets=targets, use_task=use_task, focus=focus,
                         rule=rule, folds=5, seed=seed, params=params)
    with console.status("loading data"):
        everything = load_data(data, task=task, models=models, aliases=alias_map)
    evaluation = (everything.where_split(split) if split else everything).complete()
    if len(evaluation) == 0:
        raise ConfigError("no prompts to evaluate after filtering (every model must have answered a prompt)")
    ref = reference_points(evaluation)
    predictions: list[RouterPredictions] = []
    with console.status("evaluating") as status:
        for path in routers:
            trained = TrainedRouter.load(path)
            trained_aliases = {a: b for a, b in alias_map.items() if a in trained.models}
            if trained_aliases:
                trained = trained.with_aliases(trained_aliases)
            predictions.append(predict_with_router(trained, evaluation, name=Path(path).stem))
        simple: dict[str, Any] = {}
        cascades: dict[str, Any] = {}
        for name in strategies:
            if name == "cascade":
                if cv:
                    raise ConfigError("--strategy cascade is measured on a split (train → test), not with --cv")
                from ..evaluate import cascade_report

                cascades = cascade_report(_training_part(everything, evaluation), evaluation, settings,
                                          progress=lambda m: status.update(f"cascade: {m}"))
            elif name == "learned":
                if cv:
                    predictions.append(cross_validate(evaluation, settings, cv, name=f"learned-cv{cv}",
                                                      progress=lambda m: status.update(f"learned: {m}")))
                else:
                    train = _training_part(everything, evaluation)
                    pred, _ = train_and_predict(train, evaluation, settings, name="learned",
                                                progress=lambda m: status.update(f"learned: {m}"))
                    predictions.append(pred)
            else:
                choice = strategy_choices(name, evaluation, seed=seed)
                cost, quality = evaluate_choices(choice, evaluation.quality, evaluation.cost_usd)
                simple[name] = {"quality": quality, "cost_per_1k": cost, "rel_quality": quality / ref.best_quality,
                                "rel_cost": cost / ref.best_cost}
    report: dict[str, Any] = {
        "n_prompts": len(evaluation),
        "best_model": ref.best_model,
        "most_expensive_model": ref.priciest_model,
        "split": split,
        "cv": cv,
        "routers": {p.name: evaluate_predictions(p, evaluation, ref) for p in predictions},
        "baselines": baselines(evaluation, ref, seed=seed),
    }
    report["routers"].update(cascades)
    for name, entry in simple.items():
        report["routers"][name] = {**entry, "aiq": None, "savings_at_95": None, "savings_at_100": None,
                                   "calibrated": None, "apgr": None, "cpt50": None, "cpt80": None, "frontier": []}
    _print_report(report, console)
    _print_equal_quality(cascades, console)
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(report, indent=2))
    if plot_path is not None:
        from ..evaluate import plot_report

        plot_report(report, plot_path)
    return report
