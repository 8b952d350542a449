"""Placement-hedge calibration methods compared by leave-models-out CV inside RouterBench's train split.

    python benchmarks/bench_hedge_methods.py train --triples 24   # train and cache the inner routers (CPU heavy)
    python benchmarks/bench_hedge_methods.py eval --triples 24    # every method on the cached routers

The cells are those of `bench_routing.py hedge` (triples: seed 1; folds: seed 2): the default recipe
trained on two folds without the triple, the route over all 11 calibrated by each method on the
router's population and measured on the third fold (relative to the inner-train best model).
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_routing import DATA, OUT, RB, RB_MODELS, _profiles  # noqa: E402

from switchman.evaluate import load_data, predict_with_router  # noqa: E402
from switchman.evaluate._run import _data_specs  # noqa: E402
from switchman.learn import fit_prices, parse_target, prompt_draws, train_router, train_settings  # noqa: E402
from switchman.learn._artifact import TrainedRouter  # noqa: E402
from switchman.learn._calibrate import CalibrationResult, SweepPoint, calibrate, knob_grid  # noqa: E402
from switchman.learn._placement_hedge import hedged_worlds  # noqa: E402
from switchman.learn._route_calibration import RoutePopulation, route_knob, route_population  # noqa: E402
from switchman.routing import select  # noqa: E402

CACHE = OUT / "hedgecv"
TARGET = 0.95


def cells(triples: int, folds: int = 3) -> list[tuple[int, int, tuple[str, ...]]]:
    rng = np.random.default_rng(1)
    draws = [tuple(sorted(rng.choice(RB_MODELS, 3, replace=False))) for _ in range(triples)]
    return [(t, f, held) for t, held in enumerate(draws) for f in range(folds)]


def split(table: Any, folds: int = 3) -> list[np.ndarray]:
    return np.array_split(np.random.default_rng(2).permutation(len(table)), folds)


def train_cells(triples: int) -> None:
    settings = replace(train_settings(), folds=2, nested=False)
    table = load_data([DATA / RB], split="train").complete()
    parts = split(table)
    CACHE.mkdir(parents=True, exist_ok=True)
    for t, f, held in cells(triples):
        path = CACHE / f"{t}-{f}.safetensors"
        if path.exists():
            continue
        fold = parts[f]
        rest = np.setdiff1d(np.arange(len(table)), fold)
        inner, val = table.subset(rest), table.subset(fold)
        kept = [m for m in table.models if m not in held]
        trained = train_router(inner.select_models(kept), settings, source=[RB], split="train")
        pred = predict_with_router(trained, val, name="hedge")
        best = int(np.argmax(np.nanmean(inner.quality, axis=0)))
        np.savez(CACHE / f"{t}-{f}.npz", quality=pred.quality, cost=pred.cost, true_quality=val.quality,
                 true_cost=val.cost_usd, best=best, draws=prompt_draws(val.prompts))
        trained.save(path)
        print(f"trained cell {t}-{f} ({', '.join(m.split('/')[-1] for m in held)})", flush=True)


class Cell:
    """One (triple, fold): the route's population and what any knob gives on the held-out fold."""

    def __init__(self, t: int, f: int, held: tuple[str, ...], val_models: tuple[str, ...], specs: Any) -> None:
        self.held = held
        self.router = TrainedRouter.load(CACHE / f"{t}-{f}.safetensors")
        data = np.load(CACHE / f"{t}-{f}.npz")
        self.pred_q, self.pred_c = data["quality"], data["cost"]
        self.true_q, self.true_c, self.best, self.draws = (data["true_quality"], data["true_cost"], int(data["best"]),
                                                           data["draws"])
        profiles = _profiles(self.router, val_models)
        self.names = [p.name for p in profiles]
        self.pop: RoutePopulation = route_population(self.router, profiles, specs)
        pop = self.pop
        self.w = pop.weights / pop.weights.sum()
        self.knobs = knob_grid(self.router.rule)
        rows = np.arange(len(self.w))
        self.chosen = np.array([select(pop.quality, pop.cost, float(k), self.router.rule) for k in self.knobs])
        self.cost_k = (pop.cost[rows[None, :], self.chosen] @ self.w) * 1000
        self.shares = [np.bincount(c, weights=self.w, minlength=pop.quality.shape[1]) for c in self.chosen]
        self._cols: dict[tuple[int, float], np.ndarray] = {}
        self.target = TARGET
        self._delta: float | None = None
        self._own = (profiles, specs)

    @property
    def delta(self) -> float:
        """How far above its target the router's own knob lands on the population, over its own models (its
        knob was calibrated out of fold, so this is the population's in-sample optimism, in shares)."""
        if self._delta is None:
            profiles, specs = self._own
            own = [j for j, p in enumerate(profiles) if p.column is not None]
            order = sorted(own, key=lambda j: profiles[j].column)
            pop = route_population(self.router, [profiles[j] for j in order], [specs[j] for j in order])
            w = pop.weights / pop.weights.sum()
            rows = np.arange(len(w))
            knob = self.router.knob

            def at(value: float) -> float:
                return float(pop.truth[rows, select(pop.quality, pop.cost, value, self.router.rule)] @ w)

            q = at(knob.value)
            if knob.alternate is not None and knob.alternate_share > 0:
                q = (1 - knob.alternate_share) * q + knob.alternate_share * at(knob.alternate)
            self._delta = q / float(np.max(w @ pop.truth)) - TARGET
        return self._delta

    def column(self, j: int, d: float) -> np.ndarray:
        """Placed candidate j's predicted quality at θ̂ + d·σ."""
        key = (j, round(d, 6))
        if key not in self._cols:
            offsets = [d if i == j else 0.0 for i in self.pop.placed]
            self._cols[key] = self.pop.placed_at(self.router, offsets)[:, self.pop.placed.index(j)]
        return self._cols[key]

    def world(self, offsets: Sequence[float]) -> np.ndarray:
        truth = self.pop.truth.copy()
        for j, d in zip(self.pop.placed, offsets, strict=True):
            truth[:, j] = self.column(j, d)
        return truth

    def q(self, truth: np.ndarray) -> np.ndarray:
        """Mean quality of each knob of the grid in a world."""
        rows = np.arange(len(self.w))
        return truth[rows[None, :], self.chosen] @ self.w

    def ref(self, truth: np.ndarray) -> float:
        return float(np.max(self.w @ truth))

    def points(self, quality: np.ndarray) -> list[SweepPoint]:
        return [SweepPoint(float(k), float(q), float(c), s)
                for k, q, c, s in zip(self.knobs, quality, self.cost_k, self.shares, strict=True)]

    def calibrate(self, quality: np.ndarray, reference: float) -> CalibrationResult:
        return calibrate(self.points(quality), [parse_target(f"quality={self.target}")], self.names, reference)

    def plain(self) -> CalibrationResult:
        return self.calibrate(self.q(self.pop.truth), self.ref(self.pop.truth))

    def measure(self, result: CalibrationResult) -> tuple[float, float]:
        chosen = result.knob.choose(self.pred_q, self.pred_c, self.router.rule, self.draws)
        rows = np.arange(len(chosen))
        rel_q = float(np.mean(self.true_q[rows, chosen]) / np.mean(self.true_q[:, self.best]))
        rel_c = float(np.mean(self.true_c[rows, chosen]) / np.mean(self.true_c[:, self.best]))
        return rel_q - TARGET, rel_c


# --- methods: each maps (cell, parameter) to a calibration, None where its target cannot be met -------------

def worst(cell: Cell, k_dest: float, k_ref: float) -> CalibrationResult | None:
    """The shipped hedge's worlds with placed destinations low at k_dest and a possible-best placed model high at k_ref."""
    pop = cell.pop
    n = len(pop.placed)
    upper, lower = pop.quality.copy(), pop.quality.copy()
    for j in pop.placed:
        upper[:, j], lower[:, j] = cell.column(j, k_ref), cell.column(j, -k_dest)
    worlds = hedged_worlds(pop.truth, upper, lower, pop.placed, pop.weights)
    if not worlds or n == 0:
        return cell.plain()
    shares = np.min([cell.q(t) / r for t, r in worlds], axis=0)
    top = max(r for _, r in worlds)
    result = cell.calibrate(shares * top, top)
    return result if result.met else None


GH = {3: (np.array([-np.sqrt(3), 0.0, np.sqrt(3)]), np.array([1 / 6, 2 / 3, 1 / 6]))}


def quadrature(cell: Cell, s: float) -> list[tuple[np.ndarray, float]]:
    nodes, weights = GH[3]
    out = []
    for combo in itertools.product(range(3), repeat=len(cell.pop.placed)):
        out.append((cell.world([s * nodes[i] for i in combo]), float(np.prod([weights[i] for i in combo]))))
    return out


def expected(cell: Cell, s: float) -> CalibrationResult | None:
    """Expected quality over θ ~ N(θ̂, (sσ)²) of each placed model against the expected reference."""
    worlds = quadrature(cell, s)
    q = sum(p * cell.q(t) for t, p in worlds)
    r = sum(p * cell.ref(t) for t, p in worlds)
    result = cell.calibrate(np.asarray(q), float(r))
    return result if result.met else None


def expected_share(cell: Cell, s: float) -> CalibrationResult | None:
    """Expected share of each world's reference (E[q/ref])."""
    worlds = quadrature(cell, s)
    share = sum(p * cell.q(t) / cell.ref(t) for t, p in worlds)
    result = cell.calibrate(np.asarray(share), 1.0)
    return result if result.met else None


_SAMPLES: dict[int, np.ndarray] = {}


def samples(n_placed: int, m: int = 64) -> np.ndarray:
    if n_placed not in _SAMPLES:
        _SAMPLES[n_placed] = np.random.default_rng(0).standard_normal((m, n_placed))
    return _SAMPLES[n_placed]


def chance(cell: Cell, p: float, s: float = 1.0) -> CalibrationResult | None:
    """Meet the target in at least a share p of sampled worlds θ ~ N(θ̂, (sσ)²)."""
    shares = []
    for offsets in samples(len(cell.pop.placed)):
        truth = cell.world([round(float(o) * s, 3) for o in offsets])
        shares.append(cell.q(truth) / cell.ref(truth))
    quantile = np.quantile(np.array(shares), 1 - p, axis=0, method="lower")
    result = cell.calibrate(quantile, 1.0)
    return result if result.met else None


def ref_expected_dest_low(cell: Cell, k_dest: float, s: float = 1.0) -> CalibrationResult | None:
    """Reference: its expectation over the placed models' N(θ̂, σ²); destinations: placed models low at k_dest
    except that, in each quadrature world, a placed model is the destination it is in that world if higher."""
    worlds = quadrature(cell, s)
    r = sum(p * cell.ref(t) for t, p in worlds)
    low = cell.world([-k_dest] * len(cell.pop.placed))
    result = cell.calibrate(cell.q(low), float(r))
    return result if result.met else None


def loo_errors(cell: Cell) -> np.ndarray:
    """Leave-one-model-out placement errors of the router's scored models, in units of σ (as `placement_spread`)."""
    pl = cell.router.placement
    z = np.asarray(pl.z if pl.public_z is None else pl.public_z, dtype=np.float64)
    theta = np.asarray(pl.ability.theta, dtype=np.float64)
    r = (theta - z)[~np.isnan(z)]
    e = np.array([x - np.median(np.delete(r, i)) for i, x in enumerate(r)])
    return e / np.sqrt(np.mean(e ** 2))


def worst_robust(cell: Cell, k: float) -> CalibrationResult | None:
    """The shipped worlds with σ replaced by a robust spread (1.4826 × median absolute LOO error)."""
    scale = 1.4826 * float(np.median(np.abs(loo_errors(cell))))
    return worst(cell, k * scale, k * scale)


def worst_points(cell: Cell, points: float) -> CalibrationResult | None:
    """The shipped worlds with a fixed band of `points` public-score points instead of k·σ."""
    return worst(cell, points / cell.pop.spread, points / cell.pop.spread)


def empirical(cell: Cell, p: float, sign: float = 1.0) -> CalibrationResult | None:
    """Meet the target in at least a share p of worlds where each placed model is off by a LOO error of a
    scored model (every combination, equally likely): the placed models err as the known ones did."""
    e = loo_errors(cell)
    n = len(cell.pop.placed)
    combos = list(itertools.product(range(len(e)), repeat=n))
    if len(combos) > 512:
        combos = [combos[i] for i in np.random.default_rng(0).choice(len(combos), 512, replace=False)]
    shares = []
    for combo in combos:
        truth = cell.world([round(float(sign * e[i]), 4) for i in combo])
        shares.append(cell.q(truth) / cell.ref(truth))
    quantile = np.quantile(np.array(shares), 1 - p, axis=0, method="lower")
    result = cell.calibrate(quantile, 1.0)
    return result if result.met else None


def offset_worst(cell: Cell, k: float, shrink: float = 1.0) -> CalibrationResult | None:
    """The target raised by the population's optimism measured on the router's own models (`Cell.delta`),
    then the shipped hedge at k (0: none)."""
    cell.target = TARGET + shrink * max(cell.delta, 0.0)
    try:
        if k <= 0 or not cell.pop.placed:
            result = cell.plain()
            return result if result.met else None
        return worst(cell, k, k)
    finally:
        cell.target = TARGET


def library(cell: Cell, k: float, offset: bool = True) -> CalibrationResult | None:
    """`route_knob` itself (its own fallbacks), as serving and eval call it."""
    profiles, specs = cell._own
    return route_knob(cell.router, profiles, specs, [parse_target(f"quality={TARGET}")], hedge=k, offset=offset)


def run(cell: Cell, method: Callable[..., CalibrationResult | None], params: Sequence[tuple[float, ...]]
        ) -> dict[str, tuple[float, float, bool]]:
    """Each parameter (ordered from the least to the most cautious), with the shipped fallback: an unmet one
    takes the most cautious smaller one that is met, else the plain calibration."""
    out: dict[str, tuple[float, float, bool]] = {}
    results = [method(cell, *p) for p in params]
    for i, p in enumerate(params):
        use = next((results[j] for j in range(i, -1, -1) if results[j] is not None), None)
        miss, cost = cell.measure(use if use is not None else cell.plain())
        out[",".join(f"{v:g}" for v in p)] = (miss, cost, results[i] is not None)
    return out


METHODS: dict[str, tuple[Callable[..., CalibrationResult | None], list[tuple[float, ...]]]] = {
    "worst k": (lambda c, k: worst(c, k, k), [(k,) for k in (0.5, 1.0, 1.5, 2.0, 3.0, 4.0)]),
    **{f"worst k_ref={kr:g}, k_dest": (lambda c, kd, kr=kr: worst(c, kd, kr), [(k,) for k in (0.0, 1.0, 2.0, 3.0, 4.0)])
       for kr in (0.0, 1.0, 2.0, 3.0)},
    "expected s": (expected, [(s,) for s in (0.5, 1.0, 1.5, 2.0, 3.0)]),
    "expected share s": (expected_share, [(s,) for s in (0.5, 1.0, 1.5, 2.0, 3.0)]),
    "chance p (s=1)": (chance, [(p,) for p in (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0)]),
    "chance p (s=1.5)": (lambda c, p: chance(c, p, 1.5), [(p,) for p in (0.5, 0.7, 0.8, 0.9, 0.95, 1.0)]),
    "robust-σ worst k": (worst_robust, [(k,) for k in (1.0, 2.0, 3.0, 4.0, 5.0, 6.0)]),
    "fixed-band worst points": (worst_points, [(d,) for d in (20.0, 40.0, 60.0, 80.0, 100.0, 120.0)]),
    "empirical LOO errors p": (empirical, [(p,) for p in (0.5, 0.7, 0.8, 0.9, 0.95, 1.0)]),
    "offset + worst k": (offset_worst, [(k,) for k in (0.0, 0.5, 1.0, 1.5, 2.0, 3.0)]),
    "offset/2 + worst k": (lambda c, k: offset_worst(c, k, 0.5), [(k,) for k in (0.0, 0.5, 1.0, 1.5, 2.0, 3.0)]),
    "library route_knob k": (library, [(k,) for k in (1.0, 2.0, 3.0)]),
    "library route_knob, no offset, k": (lambda c, k: library(c, k, False), [(k,) for k in (2.0, 3.0)]),
    "ref expected, dest low k": (ref_expected_dest_low, [(k,) for k in (0.0, 1.0, 2.0, 3.0, 4.0)]),
}


def eval_cells(triples: int, only: str | None) -> None:
    table = load_data([DATA / RB], split="train").complete()
    parts = split(table)
    specs = _data_specs(table.models, fit_prices(table.subset(parts[0])))
    out_path = CACHE / f"methods-{triples}.json"
    results: dict[str, Any] = json.loads(out_path.read_text()) if out_path.exists() else {}
    for t, f, held in cells(triples):
        key = f"{t}-{f}"
        val = table.subset(parts[f])
        specs = _data_specs(val.models, fit_prices(val))
        cell = Cell(t, f, held, val.models, specs)
        row = results.setdefault(key, {"held": held, "plain": cell.measure(cell.plain())})
        row["delta"] = cell.delta
        for name, (method, params) in METHODS.items():
            if only and not any(o in name for o in only.split(",")):
                continue
            row[name] = run(cell, method, params)
        print(f"cell {key} done", flush=True)
        out_path.write_text(json.dumps(results))
    summarise(results)


def summarise(results: dict[str, Any]) -> None:
    names = sorted({n for r in results.values() for n in r if n not in ("held", "plain", "delta")})
    gpt4 = [k for k, r in results.items() if "gpt-4-1106-preview" in r["held"]]
    print(f"\n{len(results)} cells, {len(gpt4)} with gpt-4 placed\n")
    print("| method | param | mean miss | RMS | worst | cost | unmet | gpt-4 placed: miss / cost | other: miss / cost |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    plain = np.array([r["plain"] for r in results.values()])
    print(f"| plain | — | {plain[:, 0].mean() * 100:+.2f} | {np.sqrt((plain[:, 0] ** 2).mean()) * 100:.2f} | "
          f"{plain[:, 0].min() * 100:+.2f} | {plain[:, 1].mean():.1%} | | | |")
    for name in names:
        params = list(next(r[name] for r in results.values() if name in r))
        for p in params:
            v = {k: r[name][p] for k, r in results.items() if name in r}
            a = np.array([x[:2] for x in v.values()])
            g = np.array([v[k][:2] for k in v if k in gpt4]) if gpt4 else np.zeros((0, 2))
            o = np.array([v[k][:2] for k in v if k not in gpt4])
            unmet = sum(not x[2] for x in v.values())
            print(f"| {name} | {p} | {a[:, 0].mean() * 100:+.2f} | {np.sqrt((a[:, 0] ** 2).mean()) * 100:.2f} | "
                  f"{a[:, 0].min() * 100:+.2f} | {a[:, 1].mean():.1%} | {unmet} | "
                  + (f"{g[:, 0].mean() * 100:+.2f} / {g[:, 1].mean():.1%}" if len(g) else "—")
                  + f" | {o[:, 0].mean() * 100:+.2f} / {o[:, 1].mean():.1%} |")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("what", choices=["train", "eval", "table"])
    parser.add_argument("--triples", type=int, default=24)
    parser.add_argument("--only", default=None)
    args = parser.parse_args()
    from switchman._threads import limit_blas_threads

    limit_blas_threads()
    if args.what == "train":
        train_cells(args.triples)
    elif args.what == "eval":
        eval_cells(args.triples, args.only)
    else:
        summarise(json.loads((CACHE / f"methods-{args.triples}.json").read_text()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
