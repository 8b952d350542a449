"""What `switchman eval` shows people: one row per distinct result, a legend of the columns, a readable plot."""

from __future__ import annotations

import io
import matplotlib
import pytest
from rich.console import Console

from switchman.cli._eval import _print_report, _rows
from switchman.evaluate import EvalPlan, EvalReport, OutcomeTable, evaluate_table
from switchman.evaluate._plot import draw_report, plot_title, quality_targets
from switchman.learn._artifact import TrainedRouter

matplotlib.use("Agg")


@pytest.fixture(scope="module")
def report(math_greeting_table: OutcomeTable, math_greeting_router: TrainedRouter,
           tmp_path_factory: pytest.TempPathFactory) -> EvalReport:
    path = math_greeting_router.save(tmp_path_factory.mktemp("eval") / "synthetic.safetensors")
    plan = EvalPlan(routers=(path,), strategies=("cheapest", "random", "fixed:strong-model"), split=None)
    return evaluate_table(math_greeting_table, plan)


def test_a_strategy_on_a_single_models_point_shares_its_row(report: EvalReport) -> None:
    labels = [row[0] for row in _rows(report)[0]]
    assert "cheapest (= model:cheap-model)" in labels and "fixed:strong-model (= model:strong-model)" in labels
    assert "model:cheap-model" not in labels and "model:strong-model" not in labels
    assert labels.count("random") == 1  # the strategy asked for; the baseline of the same name gives way
    assert {"synthetic", "oracle", "hull of single models", "random mix"} <= set(labels)


def test_the_table_has_a_legend_and_fits_80_columns(report: EvalReport) -> None:
    out = io.StringIO()
    _print_report(report, Console(file=out, width=80, color_system=None))
    text = out.getvalue()
    assert "…" not in text
    assert "AIQ: mean quality along the cost–quality frontier" in text
    assert "saved @95% / @100%: cost saved against the best single model" in text
    assert "60 prompts (all); best single model strong-model" in text
    synthetic = report.routers["synthetic"].point
    assert f"{synthetic.quality:.4f}" in text and f"{synthetic.cost_per_1k:.4f}" in text


def test_the_plot_names_the_data_draws_the_target_and_keeps_the_legend_clear(report: EvalReport) -> None:
    import matplotlib.pyplot as plt

    assert plot_title(report, "synthetic (math)") == "synthetic (math): all prompts, 60 prompts"
    assert quality_targets(report) == [0.95]
    fig, ax = plt.subplots(figsize=(9, 5.5), dpi=100)
    try:
        draw_report(ax, report, title=plot_title(report, "synthetic"))
        _, labels = ax.get_legend_handles_labels()
        assert "synthetic frontier" in labels and "synthetic calibrated" in labels
        assert "cheapest" in labels and "cheapest frontier" not in labels  # nothing undrawn in the legend
        assert "target: 95% of strong-model" in labels
        target = next(line for line in ax.get_lines() if line.get_label() == "target: 95% of strong-model")
        best = report.baselines.models["strong-model"].quality if report.baselines else 0.0
        assert target.get_ydata()[0] == pytest.approx(0.95 * best)
        fig.canvas.draw()
        legend = ax.get_legend()
        assert legend is not None
        assert legend.get_window_extent().x0 >= ax.get_window_extent().x1  # beside the axes, not over points
        assert ax.get_title() == "synthetic: all prompts, 60 prompts"
    finally:
        plt.close(fig)
