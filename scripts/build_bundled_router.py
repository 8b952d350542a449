"""Build the router that ships inside the package (src/switchman/learn/data/router.safetensors).

    python scripts/build_bundled_router.py ../shared/data                     # RouterBench + AlpacaEval 2
    python scripts/build_bundled_router.py ../shared/data --without alpacaeval2   # no CC BY-NC data

Trains the default recipe (`ability`: wordllama-256 embeddings of each prompt's window, the
ability model, per-cluster aggregates; calibrated to quality=0.95 with nested CV) on every prompt
of the named datasets, both splits. The two datasets score answers on different scales:
RouterBench's is correctness, AlpacaEval's the judge's preference over GPT-4-Turbo's answer (a
model exactly as good scores 0.5). The bundled router reads a good answer as one at least as good
as GPT-4-Turbo's, so AlpacaEval's preference p enters as min(1, 2p); otherwise every chat prompt
would look like one only the strongest model answers well. The file holds parameters and per-cluster aggregates only (see
learn/data/NOTICE); this script checks that before writing it, and that it stays under 10 MB.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np

from switchman._threads import limit_blas_threads
from switchman.evaluate import concat_tables, load_data
from switchman.learn import AbilityPredictor, TrainedRouter, TrainSettings, train_router

OUT = Path(__file__).resolve().parents[1] / "src" / "switchman" / "learn" / "data" / "router.safetensors"
DATASETS = ("routerbench", "alpacaeval2")
MAX_BYTES = 10 * 1024 * 1024


def build(data: Path, names: list[str], out: Path, *, split: str | None = None) -> TrainedRouter:
    """Train the bundled recipe on `names` under `data` (all prompts, or one split) and save it to `out`."""
    tables = []
    for name in names:
        table = load_data([data / name], split=split)
        if name == "alpacaeval2":
            table = dataclasses.replace(table, quality=np.minimum(1.0, 2.0 * table.quality))
        tables.append(table)
    table = concat_tables(tables) if len(tables) > 1 else tables[0]
    router = train_router(table, TrainSettings(algorithm="ability"), source=names, split=split, progress=print)
    router.summary["name"] = "bundled"
    assert isinstance(router.predictor, AbilityPredictor) and router.lengths is router.predictor
    assert min(router.predictor.evidence.sizes) >= router.predictor.evidence.min_size, "a cluster of too few prompts"
    router.save(out)
    return router


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path, nargs="?", default=Path("../shared/data"))
    parser.add_argument("--without", action="append", default=[], choices=DATASETS)
    parser.add_argument("--split", default=None, help="train on this split only (benchmarks; the bundled file: all)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    limit_blas_threads()
    started = time.perf_counter()
    router = build(args.data, [d for d in DATASETS if d not in args.without], args.out, split=args.split)
    size = args.out.stat().st_size
    print(f"{args.out}: {size / 1024:.0f} KiB, {len(router.models)} models, {router.summary['n_prompts']} prompts, "
          f"{time.perf_counter() - started:.0f} s; calibration {router.summary['calibration']}")
    if size > MAX_BYTES:
        print(f"{args.out} is over {MAX_BYTES} bytes", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
