"""Routing quality and cost on the development data: the numbers in docs/benchmarks.md.

    python benchmarks/bench_routing.py selection   # predictors compared by 5-fold CV inside the train splits
    python benchmarks/bench_routing.py final       # default recipe trained on train, knob fixed there, test once
    python benchmarks/bench_routing.py lmo         # leave-models-out: 3 RouterBench models placed by score alone
    python benchmarks/bench_routing.py lodo        # leave-one-dataset-out: train on one, route the other's models
    python benchmarks/bench_routing.py bundled     # bundled recipe (train splits) vs the best public score in its spend
    python benchmarks/bench_routing.py identity    # eval's and serving's decisions on every test prompt
    python benchmarks/bench_routing.py nested      # the nested-check correction: full, shrunk or none (CV in train)
    python benchmarks/bench_routing.py placement   # placing a model by score: leave-one-model-out inside train
    python benchmarks/bench_routing.py hedge       # the placement hedge's k (and offset): leave-models-out CV in train
    python benchmarks/bench_routing.py costs       # predicted vs true per-prompt cost in the route (CV inside train)
    python benchmarks/bench_routing.py recalibrate # knob recalibrated on unlabeled prompts (other folds of the same split)

Needs ../shared/data (RouterBench and AlpacaEval 2 outcome tables). Writes JSON under runs/bench_routing/.
Every router is trained on a train split only; its knob is fixed there; the test split is measured
once per configuration. Frontier numbers (AIQ, saved @) are swept on the test split and secondary.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from switchman.cli._eval import eval_command
from switchman.cli._train import train_command
from switchman.evaluate import EvalPlan, EvalReport, load_data, predict_with_router, reference_points
from switchman.learn import TrainedRouter, fit_prices, prompt_draws, train_settings

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
OUT = Path("runs/bench_routing")
QUIET = Console(file=io.StringIO(), width=200)
RB, AE = "routerbench", "alpacaeval2"
RB_MODELS = ("WizardLM/WizardLM-13B-V1.2", "claude-instant-v1", "claude-v1", "claude-v2", "gpt-3.5-turbo-1106",
             "gpt-4-1106-preview", "meta/code-llama-instruct-34b-chat", "meta/llama-2-70b-chat",
             "mistralai/mistral-7b-chat", "mistralai/mixtral-8x7b-chat", "zero-one-ai/Yi-34B-Chat")


def pct(value: float | None) -> str:
    return "—" if value is None else f"{value:.1%}"


def train(name: str, data: list[str], *, models: tuple[str, ...] = (), **options: Any) -> tuple[Path, float]:
    path = OUT / f"{name}.safetensors"
    started = time.perf_counter()
    train_command(data=[DATA / d for d in data], out=path, models=models, settings=train_settings(**options),
                  console=QUIET)
    return path, time.perf_counter() - started


def evaluate(routers: list[Path], dataset: str, tag: str, **plan: Any) -> EvalReport:
    report = eval_command(EvalPlan(routers=tuple(routers), split="test", **plan), data=[DATA / dataset], console=QUIET,
                          json_path=OUT / f"{tag}.json")
    return report


def row(label: str, report: EvalReport, name: str, extra: str = "") -> str:
    r = report.routers[name]
    f, cal = r.frontier, r.calibrated
    miss = getattr(cal, "miss", None)
    return (f"| {label} | {pct(r.point.rel_quality)} | {pct(r.point.rel_cost)} | "
            f"{'—' if miss is None else f'{miss * 100:+.2f}'} | {f.aiq if f else float('nan'):.4f} | "
            f"{pct(f.savings_at_95 if f else None)} | {pct(f.savings_at_100 if f else None)} |{extra}")


HEADER = ("| router | quality (rel. best) | cost (rel. best) | achieved − target (pts) | AIQ* | saved @95%* | "
          "saved @100%* |\n|---|---:|---:|---:|---:|---:|---:|")


def selection() -> None:
    """Each predictor, 5-fold CV inside the train split (each fold's knob chosen on the other folds)."""
    for dataset in (RB, AE):
        print(f"\n### {dataset}: 5-fold CV inside the train split, target quality=0.95\n\n{HEADER}")
        for algorithm in ("ability", "knn", "mf", "ensemble"):
            started = time.perf_counter()
            plan = EvalPlan(strategies=("learned",), split="train", cv=5, settings=train_settings(algorithm=algorithm))
            report = eval_command(plan, data=[DATA / dataset], console=QUIET,
                                  json_path=OUT / f"selection-{dataset}-{algorithm}.json")
            print(row(algorithm, report, "learned-cv5", f" {time.perf_counter() - started:.0f} s"), flush=True)


def final() -> None:
    """The default (ensemble), the shippable `ability` and kNN, each trained on a train split, measured on its test split."""
    for dataset in (RB, AE):
        paths = {}
        for algorithm in ("ensemble", "ability", "knn"):
            paths[algorithm], seconds = train(f"final-{dataset}-{algorithm}", [dataset], algorithm=algorithm)
            print(f"trained {algorithm} on {dataset} train in {seconds:.0f} s", flush=True)
        report = evaluate(list(paths.values()), dataset, f"final-{dataset}", strategies=("cheapest", "random"),
                          overlap="exclude")
        print(f"\n### {dataset} test split ({report.n_prompts} prompts; best single model {report.best_model}, "
              f"chosen on {report.best_model_from}); notes: {list(report.warnings)}\n\n{HEADER}")
        for algorithm, path in paths.items():
            r = report.routers[path.stem]
            shares = ", ".join(f"{m.split('/')[-1]} {s:.0%}" for m, s in sorted((r.shares or {}).items(),
                                                                                 key=lambda kv: -kv[1])[:4])
            print(row(f"{algorithm} (knob {r.calibrated.knob if r.calibrated else ''})", report, path.stem,
                      f" shares: {shares}"))
        for name in ("cheapest", "random"):
            p = report.routers[name].point
            print(f"| strategy: {name} | {pct(p.rel_quality)} | {pct(p.rel_cost)} | | | | |")
        base = report.baselines
        assert base is not None
        print(f"| baseline: hull of single models | — | — | | {base.hull_frontier.aiq:.4f} | "
              f"{pct(base.hull_frontier.savings_at_95)} | {pct(base.hull_frontier.savings_at_100)} |")
        print(f"| baseline: oracle | {pct(base.oracle.rel_quality)} | {pct(base.oracle.rel_cost)} | | | | |")


def lmo(draws: int = 5, algorithm: str = "ensemble") -> None:
    """RouterBench: train on 8 models (train split), route all 11 on the test split, 3 placed by public score."""
    rng = np.random.default_rng(0)
    print(f"\n### leave-models-out on RouterBench ({algorithm}; {draws} random triples, seed 0)\n\n"
          "| held out (placed by score) | quality (rel. best) | cost (rel. best) | achieved − target | "
          "saved @95%* |\n|---|---:|---:|---:|---:|")
    results = []
    for i in range(draws):
        held = tuple(sorted(rng.choice(RB_MODELS, 3, replace=False)))
        kept = tuple(m for m in RB_MODELS if m not in held)
        path, _ = train(f"lmo-{algorithm}-{i}", [RB], models=kept, algorithm=algorithm)
        report = evaluate([path], RB, f"lmo-{algorithm}-{i}", overlap="exclude")
        r = report.routers[path.stem]
        assert set(r.placed) == set(held)
        miss = getattr(r.calibrated, "miss", None)
        results.append((r.point.rel_quality, r.point.rel_cost))
        print(f"| {', '.join(m.split('/')[-1] for m in held)} | {pct(r.point.rel_quality)} | {pct(r.point.rel_cost)} | "
              f"{'—' if miss is None else f'{miss * 100:+.2f}'} | {pct(r.frontier.savings_at_95 if r.frontier else None)} |",
              flush=True)
    q, c = np.mean(results, axis=0)
    print(f"| **mean of {draws}** | {pct(q)} | {pct(c)} | | |")


def lodo() -> None:
    """Train on one dataset's train split; route the other's test split, its models placed by score where unseen."""
    from switchman.learn import ScoreTable

    scores = ScoreTable.bundled()
    scored_ae = tuple(m for m in load_data([DATA / AE]).models if scores.find(m) is not None)
    print(f"\n### leave-one-dataset-out (the routers of `final`)\n\n{HEADER}")
    path = OUT / f"final-{RB}-ensemble.safetensors"
    report = eval_command(EvalPlan(routers=(path,), split="test", overlap="exclude"), data=[DATA / AE],
                          models=scored_ae, console=QUIET, json_path=OUT / "lodo-rb-on-ae.json")
    print(row(f"trained on RouterBench → AlpacaEval 2 test, its {len(scored_ae)} models with a public score "
              f"({len(report.routers[path.stem].placed)} placed by score alone)", report, path.stem))
    path = OUT / f"final-{AE}-ensemble.safetensors"
    report = evaluate([path], RB, "lodo-ae-on-rb", overlap="exclude")
    print(row(f"trained on AlpacaEval 2 → RouterBench test, 11 models ({len(report.routers[path.stem].placed)} placed "
              "by score alone)", report, path.stem))


def bundled() -> None:
    """The bundled recipe trained on both train splits, on each test split, against the best public score in its spend."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    from build_bundled_router import build  # type: ignore[import-not-found]

    path = OUT / "bundled-train.safetensors"
    build(DATA, [RB, AE], path, split="train")
    print("\n### the bundled recipe (both train splits) vs the best single model within its spend, chosen by public "
          "score\n\n| test split | router quality | router $/1k | best public score within that spend | its quality | "
          "its $/1k |\n|---|---:|---:|---|---:|---:|")
    for dataset in (RB, AE):
        report = evaluate([path], dataset, f"bundled-{dataset}", overlap="exclude")
        r = report.routers[path.stem]
        pick = r.score_pick
        print(f"| {dataset} ({report.n_prompts}) | {r.point.quality:.4f} ({pct(r.point.rel_quality)}) | "
              f"{r.point.cost_per_1k:.4f} ({pct(r.point.rel_cost)}) | "
              + (f"{pick.model} ({pick.score:g}) | {pick.point.quality:.4f} | {pick.point.cost_per_1k:.4f} |"
                 if pick else "none affordable | | |"), flush=True)


def identity() -> None:
    """Eval's calibrated choice vs the served decision (Router.route) for every test prompt of a router file."""
    from switchman import Router

    for dataset, path in [(d, OUT / f"final-{d}-{a}.safetensors") for d in (RB, AE) for a in ("ensemble", "ability")]:
        trained = TrainedRouter.load(path)
        table = load_data([DATA / dataset], split="test").complete()
        evaluated = predict_with_router(trained, table)
        config = {"models": {m: {"provider": "p", "input_price": trained.prices[m][0],
                                 "output_price": trained.prices[m][1]} for m in trained.models},
                  "routes": {"default": {"candidates": list(trained.models), "strategy": "learned",
                                         "router": str(path)}}}
        router = Router.from_dict(config)
        served = np.array([table.models.index(router.route(p).model) for p in table.prompts])
        differ = int((served != evaluated.chosen).sum())
        print(f"{path.stem}: {differ} of {len(table)} decisions differ between eval and serving", flush=True)
        (OUT / f"identity-{path.stem}.json").write_text(json.dumps({"prompts": len(table), "differ": differ}))


def nested(folds: int = 5) -> None:
    """Outer K-fold CV inside each train split: the default recipe is trained on the other folds (its own
    out-of-fold predictions and nested check), then its knob is calibrated from those same predictions for
    target − bias (the full correction), target − shrunk bias (`shrunk_bias`, shipped) and the bare target,
    and each knob is applied to the held-out fold."""
    from dataclasses import replace

    from switchman.learn import _train
    from switchman.learn._calibrate import Target

    captured: dict[str, Any] = {}
    calibrate_rows = _train._Calibration.result

    def capture(self: Any, rows: np.ndarray, q_hat: np.ndarray, out_hat: np.ndarray, settings: Any,
                targets: Any) -> Any:
        if len(rows) == len(self.quality):  # the final calibration, on all of the training prompts
            captured["final"] = (self, rows, q_hat, out_hat, settings)
        return calibrate_rows(self, rows, q_hat, out_hat, settings, targets)

    measure_nested = _train._nested_bias

    def keep(*args: Any, **kwargs: Any) -> Any:
        captured["nested"] = measure_nested(*args, **kwargs)
        return captured["nested"]

    _train._Calibration.result = capture  # type: ignore[method-assign]
    _train._nested_bias = keep
    settings = train_settings()
    target = settings.targets[0].value
    for dataset in (RB, AE):
        table = load_data([DATA / dataset], split="train")
        misses: dict[str, list[tuple[float, float]]] = {"full": [], "shrunk": [], "none": []}
        for fold in np.array_split(np.random.default_rng(12345).permutation(len(table)), folds):
            rest = np.setdiff1d(np.arange(len(table)), fold)
            part, held = table.subset(rest), table.subset(fold)
            trained = _train.train_router(part, settings, source=[part.source], split="train")
            cal, rows, q_hat, out_hat, st = captured["final"]
            bias, se = captured["nested"]
            best = int(np.nanargmax(np.nanmean(part.quality, axis=0)))
            for label, aim in (("full", target - bias), ("shrunk", target - _train.shrunk_bias(bias, se)),
                               ("none", target)):
                knob = cal.result(rows, q_hat, out_hat, st, [Target("quality", aim)]).knob
                chosen = predict_with_router(replace(trained, knob=knob), held, name=label).chosen
                picked = np.arange(len(held)), chosen
                rel_q = np.nanmean(held.quality[picked]) / np.nanmean(held.quality[:, best])
                rel_c = np.nanmean(held.cost_usd[picked]) / np.nanmean(held.cost_usd[:, best])
                misses[label].append((float(rel_q - target), float(rel_c)))
            print(f"{dataset} fold: nested miss {bias * 100:+.2f} ± {se * 100:.2f} pts; " + "; ".join(
                f"{k} {v[-1][0] * 100:+.2f} pts at {v[-1][1]:.1%}" for k, v in misses.items()), flush=True)
        for label, values in misses.items():
            m, c = np.array(values).T
            print(f"| {dataset} | {label} | {m.mean() * 100:+.2f} | {np.abs(m).mean() * 100:.2f} | "
                  f"{np.sqrt((m ** 2).mean()) * 100:.2f} | {c.mean():.1%} |", flush=True)


def placement() -> None:
    """Leave-one-model-out inside each train split: the ability model fitted without a scored model, that model's
    mean predicted quality on the train prompts (placed at θ = z, z + the others' residual trend, z + their
    median residual) against its true mean."""
    from switchman.learn import _train
    from switchman.learn._ability import AbilityModel

    settings = train_settings()
    for dataset in (RB, AE):
        table = load_data([DATA / dataset], split="train")
        x = _train.features_for(table, settings, ())
        z = _train._abilities_to_fit(table.models, settings, None)
        errors = []
        for j, model in enumerate(table.models):
            if np.isnan(z[j]):
                continue
            keep = [k for k in range(len(table.models)) if k != j]
            fitted = AbilityModel().fit(x, table.quality[:, keep], z[keep])
            scored = ~np.isnan(z[keep])
            residual = fitted.theta[scored] - z[keep][scored]
            slope, offset = np.polyfit(z[keep][scored], residual, 1)
            true = float(np.nanmean(table.quality[:, j]))
            placed = [float(fitted.predict(x, np.array([theta]))[:, 0].mean()) for theta in
                      (z[j], z[j] + offset + slope * z[j], z[j] + np.median(residual))]
            errors.append([p - true for p in placed])
            print(f"| {dataset} | {model} | {z[j]:+.2f} | {true:.3f} | " + " | ".join(f"{p:.3f}" for p in placed) + " |",
                  flush=True)
        e = np.array(errors)
        print(f"| {dataset} | mean absolute error | | | " + " | ".join(f"{v:.4f}" for v in np.abs(e).mean(axis=0)) + " |")


def hedge(triples: int = 8, folds: int = 3, grid: tuple[float, ...] = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0)) -> None:
    """Leave-models-out CV inside RouterBench's train split, for k of the placement hedge, with and without the
    population-optimism offset: for random triples (seed 1, not the test benchmark's draws) and prompt folds, the
    default recipe is trained on the other folds with the triple left out; the route over all 11 models is
    calibrated by `route_knob` (its fallbacks included) and measured on the fold (quality and cost relative to
    the inner-train best model). The setting is the one of least RMS miss. (`bench_hedge_methods.py` compares
    other ways to hedge on the same cells.)"""
    from dataclasses import replace

    from switchman.evaluate._run import _data_specs
    from switchman.learn import parse_target, route_knob, train_router

    settings = replace(train_settings(), folds=2, nested=False)  # the router's own knob: out of fold, no nested check
    targets = [parse_target("quality=0.95")]
    table = load_data([DATA / RB], split="train").complete()
    rng = np.random.default_rng(1)
    draws = [tuple(sorted(rng.choice(RB_MODELS, 3, replace=False))) for _ in range(triples)]
    split = np.array_split(np.random.default_rng(2).permutation(len(table)), folds)
    settings_grid = [(offset, k) for offset in (True, False) for k in grid]
    results: dict[tuple[bool, float], list[tuple[float, float]]] = {s: [] for s in settings_grid}
    print(f"\n### placement hedge: leave-models-out CV inside RouterBench train ({triples} triples × {folds} folds)\n")
    for held in draws:
        kept = [m for m in table.models if m not in held]
        for f, fold in enumerate(split):
            rest = np.setdiff1d(np.arange(len(table)), fold)
            inner, val = table.subset(rest), table.subset(fold)
            best = int(np.argmax(np.nanmean(inner.quality, axis=0)))
            trained = train_router(inner.select_models(kept), settings, source=[RB], split="train")
            pred = predict_with_router(trained, val, name="hedge")
            profiles = _profiles(trained, val.models)
            specs = _data_specs(val.models, fit_prices(val))
            draws_val = prompt_draws(val.prompts)
            rows = np.arange(len(val))
            line = []
            for offset, k in settings_grid:
                calibrated = route_knob(trained, profiles, specs, targets, hedge=k, offset=offset)
                chosen = calibrated.knob.choose(pred.quality, pred.cost, trained.rule, draws_val)
                rel_q = float(np.mean(val.quality[rows, chosen]) / np.mean(val.quality[:, best]))
                rel_c = float(np.mean(val.cost_usd[rows, chosen]) / np.mean(val.cost_usd[:, best]))
                results[offset, k].append((rel_q - 0.95, rel_c))
                line.append(f"{'offset ' if offset else ''}k={k:g} {rel_q:.1%}/{rel_c:.1%}")
            print(f"{', '.join(m.split('/')[-1] for m in held)} fold {f}: " + "; ".join(line), flush=True)
    print("\n| offset | k | mean miss (pts) | RMS miss | worst miss | cost (rel. best) |\n|---|---:|---:|---:|---:|---:|")
    for (offset, k), values in results.items():
        miss, cost = np.array(values).T
        print(f"| {'yes' if offset else 'no'} | {k:g} | {miss.mean() * 100:+.2f} | {np.sqrt((miss ** 2).mean()) * 100:.2f} | "
              f"{miss.min() * 100:+.2f} | {cost.mean():.1%} |", flush=True)
    chosen_setting = min(results, key=lambda s: float(np.sqrt((np.array(results[s])[:, 0] ** 2).mean())))
    print(f"\nleast RMS miss: offset {'on' if chosen_setting[0] else 'off'}, k = {chosen_setting[1]:g}")
    (OUT / "hedge.json").write_text(json.dumps({f"{'offset' if o else 'plain'} {k:g}": v
                                                for (o, k), v in results.items()}))


def _cost_at(points: list[tuple[float, float]], target: float) -> float:
    """Cost at `target` relative quality, interpolated between the two (quality, cost) points around it."""
    qs, cs = np.array(sorted(points)).T
    if qs.max() < target:
        return float("nan")
    i = int(np.searchsorted(qs, target))
    return float(cs[0] if i == 0 else cs[i - 1] + (target - qs[i - 1]) / (qs[i] - qs[i - 1]) * (cs[i] - cs[i - 1]))


def costs(targets: tuple[float, ...] = tuple(np.round(np.arange(0.90, 0.991, 0.005), 3))) -> None:
    """How much of the gap is cost prediction: the default's out-of-fold quality routed with the predicted cost
    (today), the TRUE per-prompt cost (oracle output lengths) or each model's mean output length. 5-fold CV
    inside each train split: in each fold the knob is calibrated on the other folds' own out-of-fold predictions
    (as the nested check does) and applied to the fold. "frontier" reads cost @95% off the out-of-fold sweep
    (mixing two knobs, an upper bound); "calibrated" is target 0.95; "held-out @95%" sweeps the target and
    interpolates the held-out (quality, cost) curve at 95%, which removes the calibration miss from the
    comparison."""
    from switchman.learn import _train
    from switchman.learn._calibrate import Target, sweep
    from switchman.learn._knob import Knob

    settings = train_settings()
    print("\n| train split | output lengths in ĉ | frontier cost @95%* | calibrated (0.95): quality / cost | "
          "held-out cost @95% |\n|---|---|---:|---:|---:|")
    for dataset in (RB, AE):
        table = load_data([DATA / dataset], split="train")
        x = _train.features_for(table, settings, ())
        prices = fit_prices(table)
        price_matrix = np.array([prices[m] for m in table.models])
        inputs = _train.routing_input_tokens(table.prompts)
        true_cost = np.where(np.isnan(table.cost_usd), _train.predicted_cost(
            _train.filled_input_tokens(table), table.output_tokens, price_matrix), table.cost_usd)
        cal = _train._Calibration(table.quality, true_cost, inputs, price_matrix, prompt_draws(table.prompts),
                                  tuple(table.models))
        z = _train._abilities_to_fit(table.models, settings, None)
        n, present = len(table), ~np.isnan(table.quality)
        best = int(np.nanargmax(np.nanmean(table.quality, axis=0)))
        best_q, best_c = np.nanmean(table.quality[:, best]), np.mean(true_cost[:, best])
        q_oof, out_oof = _train.out_of_fold(x, table.quality, table.output_tokens, settings, z, inputs)
        folds = np.array_split(np.random.default_rng(settings.seed).permutation(n), max(settings.folds, 2))
        rests = [np.setdiff1d(np.arange(n), fold) for fold in folds]
        inner = [_train.out_of_fold(x, table.quality, table.output_tokens, settings, z, inputs, rows=rest,
                                    seed=settings.seed + 1 + k) for k, rest in enumerate(rests)]
        means = [np.broadcast_to(np.nanmean(table.output_tokens[rest], axis=0), (n, len(table.models)))
                 for rest in rests]
        variants: dict[str, tuple[np.ndarray, list[np.ndarray]]] = {
            "predicted (today: the kNN's neighbours)": (out_oof, [o for _, o in inner]),
            "TRUE (oracle)": (np.asarray(table.output_tokens), [table.output_tokens[rest] for rest in rests]),
            "each model's mean (no per-prompt length)": (
                np.concatenate([means[k][fold] for k, fold in enumerate(folds)])[np.argsort(np.concatenate(folds))],
                [means[k][rest] for k, rest in enumerate(rests)]),
        }
        for label, (lengths, inner_lengths) in variants.items():
            c_hat = np.where(present, _train.predicted_cost(inputs[:, None], lengths, price_matrix), 0.0)
            q_masked = np.where(present, q_oof, -np.inf)
            swept = sweep(q_masked, c_hat, np.where(present, table.quality, 0.0), np.where(present, true_cost, 0.0),
                          settings.rule)
            hull = [(p.quality / best_q, p.cost_per_1k / 1000 / best_c) for p in swept]
            frontier = min([c for q, c in hull if q >= 0.95] + [
                c1 + (0.95 - q1) / (q2 - q1) * (c2 - c1) for q1, c1 in hull for q2, c2 in hull if q1 < 0.95 <= q2])
            curve, at_target = [], (float("nan"), float("nan"))
            for target in targets:
                chosen = np.zeros(n, dtype=int)
                for k, fold in enumerate(folds):
                    knob: Knob = cal.result(rests[k], inner[k][0], inner_lengths[k], settings,
                                            [Target("quality", float(target))]).knob
                    chosen[fold] = knob.choose(q_masked[fold], c_hat[fold], settings.rule, cal.draws[fold])
                picked = np.arange(n), chosen
                point = (float(np.nanmean(table.quality[picked]) / best_q), float(np.mean(true_cost[picked]) / best_c))
                curve.append(point)
                if abs(target - 0.95) < 1e-9:
                    at_target = point
            print(f"| {dataset} ({n}) | {label} | {frontier:.1%} | {at_target[0]:.1%} / {at_target[1]:.1%} | "
                  f"{_cost_at(curve, 0.95):.1%} |", flush=True)


def _train_capturing(table: Any, settings: Any) -> tuple[TrainedRouter, dict[str, Any]]:
    """Train the recipe on `table`, keeping its out-of-fold predictions (the final calibration's inputs)."""
    from switchman.learn import _train

    captured: dict[str, Any] = {}
    calibrate_rows = _train._Calibration.result

    def capture(self: Any, rows: np.ndarray, q_hat: np.ndarray, out_hat: np.ndarray, st: Any, targets: Any) -> Any:
        if len(rows) == len(self.quality):  # the final calibration, on all of the training prompts
            captured.update(cal=self, q_hat=q_hat, out_hat=out_hat, targets=targets)
        return calibrate_rows(self, rows, q_hat, out_hat, st, targets)

    _train._Calibration.result = capture  # type: ignore[method-assign]
    try:
        trained = _train.train_router(table, settings, source=[table.source], split="train")
    finally:
        _train._Calibration.result = calibrate_rows  # type: ignore[method-assign]
    return trained, captured


def _predicted_rel(q_hat: np.ndarray, c_hat: np.ndarray, rule: Any, present: np.ndarray | None = None) -> np.ndarray:
    """(knobs × 2): predicted quality relative to the best predicted single model, and predicted cost per call,
    for every knob of `knob_grid` — from predictions alone, no labels."""
    from switchman.learn._calibrate import knob_grid
    from switchman.routing import select

    present = np.ones(q_hat.shape, dtype=bool) if present is None else present
    masked = np.where(present, q_hat, -np.inf)
    best = float(np.nanmax(np.nanmean(np.where(present, q_hat, np.nan), axis=0)))
    rows = np.arange(len(q_hat))
    out = []
    for knob in knob_grid(rule):
        chosen = select(masked, c_hat, float(knob), rule)
        out.append((float(np.mean(q_hat[rows, chosen])) / best, float(np.mean(c_hat[rows, chosen]))))
    return np.array(out)


def _knob_bias(captured: dict[str, Any], rule: Any) -> np.ndarray:
    """Per knob of `knob_grid`: predicted − true relative quality on the training prompts' out-of-fold predictions."""
    from switchman.learn import _train
    from switchman.learn._calibrate import knob_grid
    from switchman.routing import select

    cal, q_hat = captured["cal"], captured["q_hat"]
    c_hat = _train.predicted_cost(cal.inputs[:, None], captured["out_hat"], cal.prices)
    present = ~np.isnan(cal.quality)
    predicted = _predicted_rel(q_hat, c_hat, rule, present)[:, 0]
    masked = np.where(present, q_hat, -np.inf)
    best = _train._best_single_model(cal.quality)[0]
    rows = np.arange(len(q_hat))
    true = np.array([float(np.nanmean(cal.quality[rows, select(masked, c_hat, float(k), rule)])) / best
                     for k in knob_grid(rule)])
    return np.asarray(predicted - true)


def _recalibrated_knob(q_hat: np.ndarray, c_hat: np.ndarray, rule: Any, target: float, bias: np.ndarray) -> Any:
    """The knob (a mix of two) whose predicted relative quality on these unlabeled prompts, less `bias` (per knob of
    `knob_grid`), meets `target` at the least predicted cost."""
    from switchman.learn._calibrate import SweepPoint, Target, calibrate, knob_grid

    rel = _predicted_rel(q_hat, c_hat, rule)
    points = [SweepPoint(float(k), float(q - b), float(c) * 1000, np.zeros(q_hat.shape[1]))
              for k, (q, c), b in zip(knob_grid(rule), rel, bias, strict=True)]
    return calibrate(points, [Target("quality", target)], [str(j) for j in range(q_hat.shape[1])], 1.0).knob


def _hash_folds(prompt_ids: Any, k: int) -> np.ndarray:
    """Fold of each prompt: a hash of its id (no labels, no order)."""
    import hashlib

    return np.array([int.from_bytes(hashlib.blake2b(str(p).encode(), digest_size=8).digest(), "little") % k
                     for p in prompt_ids])


SWEEP_TARGETS = tuple(np.round(np.arange(0.92, 0.981, 0.005), 3))
RECAL_PROTOCOLS = (("fixed on train", 0), ("all of them (transductive)", 1), ("other half", 2), ("other 4 of 5 folds", 5))


def _recal_choices(pred: Any, prompt_ids: Any, draws: np.ndarray, rule: Any, target: float,
                   biases: dict[str, np.ndarray],
                   protocols: tuple[tuple[str, int], ...] = RECAL_PROTOCOLS) -> dict[tuple[str, str], np.ndarray]:
    """Chosen column per prompt for each protocol × bias correction; each prompt decided by a knob recalibrated on
    the predictions (only) of the prompts outside its fold."""
    out: dict[tuple[str, str], np.ndarray] = {}
    for protocol, k in protocols:
        if k == 0:
            out[protocol, "—"] = pred.chosen
            continue
        folds = _hash_folds(prompt_ids, k) if k > 1 else np.zeros(len(prompt_ids), dtype=int)
        for label, bias in biases.items():
            chosen = np.zeros(len(prompt_ids), dtype=int)
            for f in range(k):
                measure = folds == f
                fit = ~measure if k > 1 else measure
                knob = _recalibrated_knob(pred.quality[fit], pred.cost[fit], rule, target, bias)
                chosen[measure] = knob.choose(pred.quality[measure], pred.cost[measure], rule, draws[measure])
            out[protocol, label] = chosen
    return out


def _rel(quality: np.ndarray, cost: np.ndarray, chosen: np.ndarray, best: int) -> tuple[float, float]:
    picked = np.arange(len(chosen)), chosen
    return (float(np.nanmean(quality[picked]) / np.nanmean(quality[:, best])),
            float(np.nanmean(cost[picked]) / np.nanmean(cost[:, best])))


def recalibrate(folds: int = 5) -> None:
    """The knob recalibrated on UNLABELED prompts: a deployed router sees its users' prompts, not their outcomes.
    The knob is re-chosen so that the router's predicted quality (relative to the best predicted single model) on
    those prompts, less the predictor's bias (predicted − true, per knob, on the training split's out-of-fold
    predictions), meets the target. Honest protocol: the test prompts are split by a hash of their id; each part
    is routed with the knob recalibrated on the other parts' predictions and measured with its true outcomes;
    pooled. Bias corrections: none, the bias at the train-calibrated knob (one number), or per knob. The same
    protocol inside each train split (outer K-fold CV) shows whether it works beyond the test split."""

    settings = train_settings()
    target = settings.targets[0].value
    for dataset in (RB, AE):
        # the test split, with the router of `final` (the default recipe on all of train)
        train_table = load_data([DATA / dataset], split="train")
        trained, captured = _train_capturing(train_table, settings)
        test = load_data([DATA / dataset], split="test").complete()
        assert trained.training is not None
        test = test.subset(~trained.training.overlap(test.prompt_ids, test.prompts))
        best = test.models.index(reference_points(train_table.complete()).best_model)
        results = _recal_dataset(trained, captured, test, best, target, settings)
        print(f"\n### {dataset} test split ({len(test)} prompts), knob recalibrated on unlabeled test prompts "
              f"(load {_load()})\n\n| knob chosen on | bias correction | quality (rel. best) | cost (rel. best) | "
              "achieved − target (pts) |\n|---|---|---:|---:|---:|")
        for (protocol, label), (q, c) in results.items():
            if protocol == "diagnostic":
                print(f"| {protocol}: at the train knob, {label} | | {q:.1%} | {c:.1%} | {(q - c) * 100:+.2f} (bias) |")
            elif protocol.startswith("held-out"):
                print(f"| {protocol} | {label} | {q:.1%} | {c:.1%} | |")
            else:
                print(f"| {protocol} | {label} | {q:.1%} | {c:.1%} | {(q - target) * 100:+.2f} |", flush=True)
        # the same protocol inside the train split: outer K-fold CV
        pooled: dict[tuple[str, str], list[tuple[float, float]]] = {}
        for fold in np.array_split(np.random.default_rng(12345).permutation(len(train_table)), folds):
            rest = np.setdiff1d(np.arange(len(train_table)), fold)
            part, held = train_table.subset(rest), train_table.subset(fold)
            inner, inner_captured = _train_capturing(part, settings)
            inner_best = int(np.nanargmax(np.nanmean(part.quality, axis=0)))
            for key, value in _recal_dataset(inner, inner_captured, held, inner_best, target, settings).items():
                pooled.setdefault(key, []).append(value)
            print(f"{dataset} train, outer fold done (load {_load()})", flush=True)
        print(f"\n### {dataset} train split, outer {folds}-fold CV (each outer fold: the recipe trained on the other "
              f"four, the protocol applied to the held-out fold)\n\n| knob chosen on | bias correction | mean miss (pts) | "
              "mean \\|miss\\| | RMS | cost (rel. best) |\n|---|---|---:|---:|---:|---:|")
        for (protocol, label), values in pooled.items():
            q, c = np.array(values).T
            if protocol == "diagnostic":
                print(f"| {protocol}: at the train knob, {label} | | {q.mean():.1%} | {c.mean():.1%} | "
                      f"bias {(q - c).mean() * 100:+.2f} ± {(q - c).std(ddof=1) / np.sqrt(len(q)) * 100:.2f} | |")
                continue
            if protocol.startswith("held-out"):
                print(f"| {protocol} | {label} | | | | {np.nanmean(c):.1%} (per fold: "
                      f"{', '.join(f'{v:.1%}' for v in c)}) |")
                continue
            m = q - target
            print(f"| {protocol} | {label} | {m.mean() * 100:+.2f} | {np.abs(m).mean() * 100:.2f} | "
                  f"{np.sqrt((m ** 2).mean()) * 100:.2f} | {c.mean():.1%} |", flush=True)
        (OUT / f"recalibrate-{dataset}.json").write_text(json.dumps(
            {"test": {" / ".join(k): v for k, v in results.items()},
             "train_cv": {" / ".join(k): v for k, v in pooled.items()}}))


def _recal_dataset(trained: TrainedRouter, captured: dict[str, Any], table: Any, best: int, target: float,
                   settings: Any) -> dict[tuple[str, str], tuple[float, float]]:
    """(quality, cost) relative to column `best`, on `table`'s prompts, for each protocol × bias correction (and two
    diagnostic rows: (predicted, true) quality at the train knob relative to the best single model, on the training
    split's out-of-fold predictions and on `table`)."""
    from switchman.learn import _train
    from switchman.learn._calibrate import Target, knob_grid

    per_knob = _knob_bias(captured, trained.rule)
    at_knob = float(per_knob[int(np.argmin(np.abs(knob_grid(trained.rule) - trained.knob.value)))])
    biases = {"none": np.zeros_like(per_knob), "at the train knob": np.full_like(per_knob, at_knob),
              "per knob": per_knob}
    pred = predict_with_router(trained, table, name="recal")
    draws = prompt_draws(table.prompts)
    choices = _recal_choices(pred, table.prompt_ids, draws, trained.rule, target, biases)
    results = {key: _rel(table.quality, table.cost_usd, chosen, best) for key, chosen in choices.items()}
    # diagnostic: at the train knob, predicted and true quality relative to the best single model on these prompts
    # (the calibrator's definition), on the training split's out-of-fold predictions and on `table`
    cal = captured["cal"]
    c_oof = _train.predicted_cost(cal.inputs[:, None], captured["out_hat"], cal.prices)
    present = ~np.isnan(cal.quality)
    rows = np.arange(len(cal.quality))
    oof_chosen = trained.knob.choose(np.where(present, captured["q_hat"], -np.inf), c_oof, trained.rule, cal.draws)
    oof_pred = float(np.mean(captured["q_hat"][rows, oof_chosen]) / np.nanmax(
        np.nanmean(np.where(present, captured["q_hat"], np.nan), axis=0)))
    oof_true = float(np.nanmean(cal.quality[rows, oof_chosen]) / _train._best_single_model(cal.quality)[0])
    picked = np.arange(len(table)), pred.chosen
    eval_pred = float(np.mean(pred.quality[picked]) / np.max(np.mean(pred.quality, axis=0)))
    eval_true = float(np.nanmean(table.quality[picked]) / np.nanmax(np.nanmean(table.quality, axis=0)))
    results["diagnostic", "train out-of-fold: predicted, true"] = (oof_pred, oof_true)
    results["diagnostic", "evaluated prompts: predicted, true"] = (eval_pred, eval_true)
    # the target swept (the train knob re-calibrated on the training prompts' out-of-fold predictions for each, no
    # nested correction; the recalibrated knobs on the other half), each curve's held-out cost at `target` quality
    curves: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for aim in SWEEP_TARGETS:
        knob = cal.result(rows, captured["q_hat"], captured["out_hat"], settings, [Target("quality", float(aim))]).knob
        curves.setdefault(("held-out cost at target, target swept: fixed on train", "—"), []).append(
            _rel(table.quality, table.cost_usd, knob.choose(pred.quality, pred.cost, trained.rule, draws), best))
        for (protocol, label), chosen in _recal_choices(pred, table.prompt_ids, draws, trained.rule, float(aim), biases,
                                                        (("other half", 2),)).items():
            curves.setdefault((f"held-out cost at target, target swept: {protocol}", label), []).append(
                _rel(table.quality, table.cost_usd, chosen, best))
    for key, curve in curves.items():
        results[key] = (target, _cost_at(curve, target))
    return results


def _load() -> str:
    import os

    return " ".join(f"{v:.1f}" for v in os.getloadavg())


def _profiles(trained: TrainedRouter, models: tuple[str, ...]) -> list[Any]:
    from switchman.learn import ScoreTable, profiles_for

    return profiles_for(models, router=trained, table=ScoreTable.bundled(), config_scores={}, score_names={},
                        upstream={})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["selection", "final", "lmo", "lodo", "bundled", "identity", "nested",
                                             "placement", "hedge", "costs", "recalibrate"])
    parser.add_argument("--algorithm", default="ensemble", help="lmo: the predictor of the routers trained")
    parser.add_argument("--triples", type=int, default=8, help="hedge: random triples of models held out")
    parser.add_argument("--folds", type=int, default=3, help="hedge: prompt folds (the inner routers train on the rest)")
    args = parser.parse_args()
    from switchman._threads import limit_blas_threads

    limit_blas_threads()
    if not DATA.exists():
        print(f"{DATA} is missing: this benchmark needs the shared outcome data", file=sys.stderr)
        return 1
    OUT.mkdir(parents=True, exist_ok=True)
    if args.what == "lmo":
        lmo(algorithm=args.algorithm)
    elif args.what == "hedge":
        hedge(triples=args.triples, folds=args.folds)
    else:
        {"selection": selection, "final": final, "lodo": lodo, "bundled": bundled, "identity": identity,
         "nested": nested, "placement": placement, "costs": costs,
         "recalibrate": recalibrate}[args.what]()
    return 0


if __name__ == "__main__":
    sys.exit(main())
