"""Build the LMArena score table that ships inside the package (src/switchman/learn/data/lmarena_text.csv).

    python scripts/build_model_scores.py ../shared/data/model_scores

The scale is LMArena's style-controlled text score of the 2025-12-11 snapshot: style control corrects
for answer length and formatting, which the raw score rewards (raw puts gpt-4o-mini above gpt-4o and
claude-3-5-haiku; style control does not). Models that snapshot does not list (claude-1, claude-2.x,
claude-instant-1, gpt-3.5-turbo-0613, ...) come from the 2025-08-04 raw scores, moved onto it in two
documented steps fitted on the models both sides list: the median raw difference between the
snapshots, then the least-squares line from raw to style-controlled scores. Every row keeps its
source (repository@commit:path) and date; converted rows say how in `note`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

OUT = Path(__file__).resolve().parents[1] / "src" / "switchman" / "learn" / "data" / "lmarena_text.csv"
RAW, STYLE = "lmarena_text_overall_raw_BT", "lmarena_text_overall_style_control_BT"


def main(folder: Path) -> int:
    new = pd.read_csv(folder / "lmarena_text_2025-12-11.csv")
    old = pd.read_csv(folder / "lmarena_text_2025-08-04.csv")
    style = new[new["score_type"] == STYLE]
    raw = new[new["score_type"] == RAW].set_index("model")["score"]
    old = old[old["score_type"] == RAW]
    both = raw.index.intersection(style.set_index("model").index)
    slope, intercept = np.polyfit(raw[both].to_numpy(), style.set_index("model")["score"][both].to_numpy(), 1)
    raw_lower = {m.lower(): s for m, s in raw.items()}
    shared = [o - raw_lower[m.lower()] for m, o in zip(old["model"], old["score"], strict=True) if m.lower() in raw_lower]
    offset = float(np.median(shared))
    rows = [{"model": m, "score": round(float(s), 1), "source": src, "date": str(d)[:10], "note": ""}
            for m, s, src, d in zip(style["model"], style["score"], style["source"], style["date"], strict=True)]
    known = {r["model"].lower() for r in rows}
    for m, s, src, d in zip(old["model"], old["score"], old["source"], old["date"], strict=True):
        if m.lower() in known or m.lower() in raw_lower:
            continue
        converted = slope * (float(s) - offset) + intercept
        rows.append({"model": m.lower(), "score": round(converted, 1), "source": src, "date": str(d)[:10],
                     "note": f"raw score {s:g} of the {d} snapshot, minus {offset:g} (median raw difference between "
                             f"the snapshots over {len(shared)} models), times {slope:.3f} plus {intercept:.1f} "
                             f"(raw to style-controlled, least squares over {len(both)} models)"})
    OUT.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).sort_values("score", ascending=False).to_csv(OUT, index=False)
    print(f"{OUT}: {len(rows)} models ({len(style)} style-controlled; raw offset {offset:g}, "
          f"style = {slope:.3f} raw + {intercept:.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("../shared/data/model_scores")))
