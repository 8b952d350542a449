"""switchman.evaluate: outcome datasets and router quality-vs-cost metrics."""

from switchman._exceptions import DatasetError

from ._cascade_eval import cascade_report
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
from ._datasets import OutcomeTable, concat_tables, load_outcomes
from ._ledger_outcomes import ledger_outcomes, ledger_records, outcomes_from_ledger
from ._load import catalog_price, load_data, parse_aliases
from ._plot import plot_report
from ._replay import ReplayResult, replay_choices, replay_data, replay_ledger
from ._evaluation import EvalPlan, evaluate_table, training_part
from ._report import (
    Baselines,
    CascadeCalibration,
    EqualQuality,
    EvalReport,
    Frontier,
    OperatingPoint,
    RouterPredictions,
    RouterResult,
    TargetCalibration,
    baselines,
    evaluate_predictions,
    reference_points,
)
from ._run import cross_validate, predict_with_router, strategy_choices, train_and_predict

__all__ = [
    "Baselines",
    "CascadeCalibration",
    "DatasetError",
    "EqualQuality",
    "EvalPlan",
    "EvalReport",
    "Frontier",
    "OperatingPoint",
    "OutcomeTable",
    "ReplayResult",
    "RouterPredictions",
    "RouterResult",
    "TargetCalibration",
    "aiq",
    "apgr",
    "baselines",
    "cascade_report",
    "catalog_price",
    "concat_tables",
    "cost_at_quality",
    "cpt",
    "cross_validate",
    "evaluate_choices",
    "evaluate_predictions",
    "evaluate_table",
    "ledger_outcomes",
    "ledger_records",
    "load_data",
    "load_outcomes",
    "nondecreasing_convex_hull",
    "oracle_choices",
    "oracle_point",
    "outcomes_from_ledger",
    "pareto_frontier",
    "parse_aliases",
    "pgr_curve",
    "plot_report",
    "predict_with_router",
    "random_mix_points",
    "reference_points",
    "replay_choices",
    "replay_data",
    "replay_ledger",
    "savings_at",
    "single_model_points",
    "strategy_choices",
    "train_and_predict",
    "training_part",
]
