"""switchman.evaluate: outcome datasets and router quality-vs-cost metrics."""

from switchman._exceptions import DatasetError

from ._datasets import OutcomeTable, concat_tables, load_outcomes
from ._cost_quality import (
    aiq,
    apgr,
    cost_at_quality,
    cpt,
    evaluate_choices,
    nondecreasing_convex_hull,
    oracle_choices,
    oracle_point,
    pareto_frontier,
    pgr_curve,
    random_mix_points,
    savings_at,
    single_model_points,
)

__all__ = [
    "DatasetError",
    "OutcomeTable",
    "aiq",
    "apgr",
    "concat_tables",
    "cost_at_quality",
    "cpt",
    "evaluate_choices",
    "load_outcomes",
    "nondecreasing_convex_hull",
    "oracle_choices",
    "oracle_point",
    "pareto_frontier",
    "pgr_curve",
    "random_mix_points",
    "savings_at",
    "single_model_points",
]
