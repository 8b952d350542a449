"""Why leave-models-out CV inside train and the `lmo` test benchmark disagree (issue 9).

    python benchmarks/bench_lmo_gap.py cv [--draw test|hedge] [--triples N] [--folds K]  # the hedge's CV protocol, per triple
    python benchmarks/bench_lmo_gap.py test                                   # the `lmo` routers on the test split
    python benchmarks/bench_lmo_gap.py cvtest                                 # cv's inner routers on the test split

`cv` runs `bench_routing.py hedge`'s protocol (RouterBench train split, 3 prompt folds of seed 2, the default
recipe trained on two folds without the triple, the route over all 11 calibrated by `route_knob` and measured on
the third fold, relative to the inner best model) but for chosen triples: `--draw test` takes the 5 triples of
`bench_routing.py lmo` (seed 0) — only their names, nothing of the test split — and `--draw hedge` the CV's
(seed 1). `test` reads the routers `bench_routing.py lmo` wrote and prints, per triple, the k the route's
calibration used, what that calibration expected on the population and what the test split gave.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_routing import DATA, OUT, RB, RB_MODELS, _profiles  # noqa: E402

from switchman.evaluate import load_data, predict_with_router  # noqa: E402
from switchman.evaluate._run import _data_specs  # noqa: E402
from switchman.learn import TrainedRouter, fit_prices, parse_target, prompt_draws, train_router, train_settings  # noqa: E402
from switchman.learn._calibrate import CalibrationResult  # noqa: E402
from switchman.learn._placement_hedge import PLACEMENT_HEDGE  # noqa: E402
from switchman.learn._route_calibration import HEDGE_STEPS, _hedged, route_population  # noqa: E402

CACHE = OUT / "lmogap"
TARGETS = [parse_target("quality=0.95")]
GPT4 = "gpt-4-1106-preview"


def draws(which: str, n: int) -> list[tuple[str, ...]]:
    rng = np.random.default_rng(0 if which == "test" else 1)
    return [tuple(sorted(rng.choice(RB_MODELS, 3, replace=False))) for _ in range(n)]


def short(held: tuple[str, ...]) -> str:
    return ", ".join(m.split("/")[-1].replace("-1106-preview", "").replace("-instruct", "") for m in held)


def calibration(router: TrainedRouter, models: tuple[str, ...], specs: Any,
                hedge: float = PLACEMENT_HEDGE) -> tuple[str, CalibrationResult]:
    """`route_knob`'s result and which of its branches gave it (the k used, or 'plain')."""
    profiles = _profiles(router, models)
    pop = route_population(router, profiles, specs)
    names = [s.name for s in specs]
    if pop.hedged:
        for k in (hedge, *(step for step in HEDGE_STEPS if step < hedge)):
            result = _hedged(router, pop, TARGETS, names, k)
            if result is None:
                break
            if result.met:
                return f"k={k:g}", result
    result = _hedged(router, pop, TARGETS, names, 0.0)
    assert result is not None
    return "plain", result


def measure(router: TrainedRouter, table: Any, best: int, specs: Any, hedge: float = PLACEMENT_HEDGE) -> dict[str, Any]:
    """The route over `table`'s models calibrated as serving does (at placement hedge `hedge`), applied to `table`:
    relative quality and cost, gpt-4's share, and what the calibration expected."""
    used, result = calibration(router, table.models, specs, hedge)
    pred = predict_with_router(router, table, name="gap")
    chosen = result.knob.choose(pred.quality, pred.cost, router.rule, prompt_draws(table.prompts))
    if hedge == PLACEMENT_HEDGE:
        assert np.array_equal(chosen, pred.chosen), "calibration() must reproduce route_knob"
    rows = np.arange(len(table))
    rel_q = float(np.mean(table.quality[rows, chosen]) / np.mean(table.quality[:, best]))
    rel_c = float(np.mean(table.cost_usd[rows, chosen]) / np.mean(table.cost_usd[:, best]))
    gpt4 = float(np.mean(chosen == table.models.index(GPT4)))
    return {"used": used, "met": result.met, "expected": result.rel_quality, "rel_q": rel_q, "rel_c": rel_c,
            "gpt4_share": gpt4}


def cv(which: str, triples: int, folds: int = 3) -> None:
    settings = replace(train_settings(), folds=2, nested=False)  # as `bench_routing.py hedge`
    table = load_data([DATA / RB], split="train").complete()
    parts = np.array_split(np.random.default_rng(2).permutation(len(table)), folds)
    CACHE.mkdir(parents=True, exist_ok=True)
    print(f"\n### leave-models-out CV inside RouterBench train, {which} triples, {folds} folds, k = {PLACEMENT_HEDGE:g}\n\n"
          "| held out | fold | k used | expected (pop.) | quality | cost | gpt-4 share |\n|---|---:|---|---:|---:|---:|---:|")
    summary = []
    for t, held in enumerate(draws(which, triples)):
        kept = [m for m in table.models if m not in held]
        cells = []
        for f, fold in enumerate(parts):
            rest = np.setdiff1d(np.arange(len(table)), fold)
            inner, val = table.subset(rest), table.subset(fold)
            best = int(np.argmax(np.nanmean(inner.quality, axis=0)))
            path = CACHE / f"{which}-{t}-{f}{'' if folds == 3 else f'-of{folds}'}.safetensors"
            if path.exists():
                trained = TrainedRouter.load(path)
            else:
                trained = train_router(inner.select_models(kept), settings, source=[RB], split="train")
                trained.save(path)
            r = measure(trained, val, best, _data_specs(val.models, fit_prices(val)))
            cells.append(r)
            print(f"| {short(held)} | {f} | {r['used']}{'' if r['met'] else ' (unmet)'} | {r['expected']:.1%} | "
                  f"{r['rel_q']:.1%} | {r['rel_c']:.1%} | {r['gpt4_share']:.1%} |", flush=True)
        q, c = np.mean([(r["rel_q"], r["rel_c"]) for r in cells], axis=0)
        summary.append((held, q, c))
    print("\n| held out | CV quality (mean of folds) | CV cost |\n|---|---:|---:|")
    for held, q, c in summary:
        print(f"| {short(held)} | {q:.1%} | {c:.1%} |")
    q, c = np.mean([(q, c) for _, q, c in summary], axis=0)
    print(f"| **mean** | {q:.1%} | {c:.1%} |")


def test(triples: int = 5, cv_routers: bool = False, hedge: float = PLACEMENT_HEDGE) -> None:
    """The `lmo` routers (or, with `cv_routers`, the CV's inner routers of `cv --draw test`: a diagnostic that
    separates the training-set size from the split) on the test split. Nothing is chosen from these numbers."""
    from switchman.evaluate._evaluation import EvalPlan, _overlap

    everything = load_data([DATA / RB])
    train_best = everything.where_split("train").complete()
    best_name = train_best.models[int(np.argmax(np.nanmean(train_best.quality, axis=0)))]
    print(f"\n### the {'CV inner' if cv_routers else '`lmo`'} routers on the test split (reference {best_name}; "
          f"k = {hedge:g})\n\n"
          "| held out | k used | expected (pop.) | quality | cost | gpt-4 share |\n|---|---|---:|---:|---:|---:|")
    paths = [(held, CACHE / f"test-{i}-{f}.safetensors") for i, held in enumerate(draws("test", triples))
             for f in range(3)] if cv_routers else [
        (held, OUT / f"lmo-ensemble-{i}.safetensors") for i, held in enumerate(draws("test", triples))]
    results = []
    for held, path in paths:
        router = TrainedRouter.load(path)
        table = everything.where_split("test").complete()
        table, _ = _overlap({path: router}, table, EvalPlan(routers=(path,), overlap="exclude"))
        names = dict(zip(router.model_names, router.models, strict=True))
        fitted = fit_prices(table)
        prices = {m: router.prices[names[m]] if m in names else fitted[m] for m in table.models}
        r = measure(router, table, table.models.index(best_name), _data_specs(table.models, prices), hedge)
        print(f"| {short(held)} | {r['used']}{'' if r['met'] else ' (unmet)'} | {r['expected']:.1%} | "
              f"{r['rel_q']:.1%} | {r['rel_c']:.1%} | {r['gpt4_share']:.1%} |", flush=True)
        results.append((r["rel_q"], r["rel_c"]))
    q, c = np.mean(results, axis=0)
    print(f"| **mean of {len(results)}** | | | {q:.1%} | {c:.1%} | |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["cv", "test", "cvtest"])
    parser.add_argument("--draw", choices=["test", "hedge"], default="test")
    parser.add_argument("--triples", type=int, default=5)
    parser.add_argument("--hedge", type=float, default=PLACEMENT_HEDGE, help="test/cvtest: the placement hedge's k")
    parser.add_argument("--folds", type=int, default=3, help="cv: prompt folds (the inner routers train on the rest)")
    args = parser.parse_args()
    from switchman._threads import limit_blas_threads

    limit_blas_threads()
    if args.what == "cv":
        cv(args.draw, args.triples, args.folds)
    else:
        test(args.triples, cv_routers=args.what == "cvtest", hedge=args.hedge)
    return 0


if __name__ == "__main__":
    sys.exit(main())
