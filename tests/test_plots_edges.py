"""Every plotting helper that draws intervals or error bars, on edge values (issue 14).

matplotlib refuses a negative error-bar length, so a bound that lands a rounding error on the wrong
side of its value crashes the figure (and `make demo` with it). These tests draw each helper at 0%
and 100%, with one sample a class, one class, one seed and, where it can occur, no data at all.
"""
import io

import numpy as np
import pandas as pd
import pytest

from tdsm_core.figures import plots


def _render(fig) -> None:
    fig.savefig(io.BytesIO(), format="png", dpi=40)


@pytest.mark.parametrize("n", [1, 2, 6, 11, 21, 22, 27, 31, 44, 60, 240, 997])
@pytest.mark.parametrize("successes", ["none", "all", "one"])
def test_wilson_bounds_contain_the_value_at_every_count(n, successes):
    k = {"none": 0, "all": n, "one": 1}[successes]
    value = 100.0 * k / n
    low, high = plots.wilson_interval(value, n)
    assert 0.0 <= low <= value <= high <= 100.0
    if k == n:
        assert high == 100.0
    if k == 0:
        assert low == 0.0


def test_wilson_six_of_six_was_the_failing_case():
    # On main at a9755c3 the upper bound of 6/6 came out 99.99999999999999: below the bar itself.
    low, high = plots.wilson_interval(100.0, 6)
    assert high == 100.0 and low == pytest.approx(60.97, abs=0.01)


def test_interval_errors_are_never_negative():
    errors = plots.interval_errors([100.0, 0.0, 50.0], [60.0, 0.0 + 1e-13, 40.0], [100.0 - 1e-13, 30.0, 60.0])
    assert errors.shape == (2, 3) and (errors >= 0).all()
    assert errors[:, 2].tolist() == [10.0, 10.0]
    assert plots.interval_errors([], [], []).shape == (2, 0)


def test_spread_errors_drop_missing_and_negative_stds():
    assert plots.spread_errors([1.5, float("nan"), -0.0, -2.0]).tolist() == [1.5, 0.0, 0.0, 0.0]


@pytest.mark.parametrize("per_class, counts", [
    ({"a": 100.0, "b": 0.0, "c": 100.0}, {"a": 6, "b": 11, "c": 21}),    # the counts that broke make demo
    ({"a": 100.0, "b": 0.0}, {"a": 1, "b": 1}),                           # one sample a class
    ({"only": 100.0}, {"only": 44}),                                      # a single class
    ({"a": 100.0, "b": 50.0}, {"a": 0, "b": 2}),                          # a class without test samples
    ({}, {}),                                                             # nothing to draw
])
def test_per_class_bars_draw_at_the_edges(per_class, counts):
    fig = plots.per_class_accuracy(per_class, 50.0, 50.0, counts=counts or None)
    _render(fig)
    for collection in fig.axes[0].collections:  # the error bars, one segment per class
        for segment in collection.get_segments():
            assert np.isfinite(segment).all() and segment[:, 0].min() >= 0 and segment[:, 0].max() <= 100


def test_per_class_bar_at_100_percent_ends_at_100():
    fig = plots.per_class_accuracy({"a": 100.0}, 50.0, 100.0, counts={"a": 6})
    (segment,) = [s for c in fig.axes[0].collections for s in c.get_segments()]
    assert segment[:, 0].max() == 100.0 and segment[:, 0].min() == pytest.approx(60.97, abs=0.01)


def _rows(values_per_row):
    rows = []
    for i, values in enumerate(values_per_row):
        array = np.asarray(values, dtype=float)
        rows.append({"variant": f"v{i}", "metric": f"m{i}", "mean": float(array.mean()) if len(array) else 0.0,
                     "std": float(array.std(ddof=1)) if len(array) > 1 else 0.0, "values": list(array)})
    return rows


@pytest.mark.parametrize("values", [
    [[100.0, 100.0, 100.0], [0.0, 0.0, 0.0]],   # no spread at either edge
    [[100.0], [0.0]],                           # one seed
    [[42.0, 58.0]],                             # a single variant
])
def test_ablation_and_seed_figures_draw_at_the_edges(values):
    rows = _rows(values)
    _render(plots.plot_ablation({"rows": rows, "study": "loss", "name": "x", "num_seeds": len(values[0]),
                                 "protocol": "(a)", "chance_top1": 8.3}))
    _render(plots.seed_spread(rows, chance=8.3))


def test_seed_figures_tolerate_a_missing_std():
    rows = _rows([[50.0, 60.0]])
    rows[0]["std"] = float("nan")
    _render(plots.plot_ablation({"rows": rows, "study": "loss", "name": "x", "num_seeds": 2,
                                 "protocol": "(a)", "chance_top1": 8.3}))
    _render(plots.seed_spread(rows, chance=8.3))


@pytest.mark.parametrize("rows", [1, 2])
def test_feature_statistics_band_with_one_row_or_constant_features(rows):
    constant = np.ones((rows, 8), dtype=np.float32)
    _render(plots.feature_statistics({"train": constant, "ztest": np.zeros((rows, 8), dtype=np.float32)}))


def test_split_summary_with_one_split_at_the_edges():
    summary = {"name": "x", "num_splits": 1, "chance_top1": 20.0,
               "tdsm_top1": {"mean": 100.0, "std": 0.0}, "baseline_top1": {"mean": 0.0, "std": 0.0},
               "splits": [{"split": 0, "unseen_names": ["a"], "tdsm_top1": 100.0, "baseline_top1": 0.0,
                           "encoder_val_seen_top1": 100.0}]}
    _render(plots.split_summary(summary))


def test_sensitivity_with_one_setting_each():
    table = pd.DataFrame([{"setting": "timestep", "value": 25, "top1": 100.0, "top5": 100.0},
                          {"setting": "noises", "value": 3, "top1": 0.0, "top5": 100.0}])
    _render(plots.sensitivity(table, timestep=25, num_noise=3, chance=20.0, num_samples=5, num_total=5))


# ----------------------------------------------------------------------------------------------
# interactive views


def test_hover_rows_name_each_points_sample_classes_and_nearest_texts():
    from tdsm_core.workbook.analysis import RunScores, class_hover, hover_table

    scores = np.array([[0.3, 0.1, 0.2], [0.5, 0.6, 0.4]])
    run = RunScores(scores, labels=np.array([7, 9]), classes=np.array([7, 8, 9]), predictions=np.array([8, 9]))
    names = {7: "wave", 8: "clap", 9: "kick"}
    table = hover_table(run, np.array([1, 0]), names, k=2)
    assert table["sample"].tolist() == [1, 0] and table["true"].tolist() == ["kick", "wave"]
    assert table["predicted"].tolist() == ["kick", "clap"] and table["correct"].tolist() == [True, False]
    assert table["top2"].tolist() == ["kick (0.4000) | wave (0.5000)", "clap (0.1000) | kick (0.2000)"]
    hover = class_hover(np.array([7, 8]), [8], names)
    assert hover.to_dict("list") == {"class": ["wave", "clap"], "status": ["seen", "unseen"]}


def test_the_interactive_scatter_carries_every_hover_column_and_refuses_a_row_count_mismatch():
    pytest.importorskip("plotly")
    table = pd.DataFrame({"sample": [0, 1, 2], "true": ["a", "b", "a"], "top3": ["x", "y", "z"]})
    fig = plots.interactive_scatter(np.arange(6.0).reshape(3, 2), table, colour="true", title="t")
    assert sum(len(trace.x) for trace in fig.data) == 3
    assert all(name in fig.data[0].hovertemplate for name in ("sample", "true", "top3"))
    with pytest.raises(ValueError, match="3 points but 2 hover rows"):
        plots.interactive_scatter(np.zeros((3, 2)), table.iloc[:2], colour="true", title="t")


@pytest.mark.parametrize("scores", [np.array([0.2, 0.1, 0.3]), np.array([0.5, 0.5, 0.5]), np.array([1.0])])
def test_one_samples_errors_are_drawn_smallest_first_with_the_true_class_black(scores):
    classes = np.arange(len(scores)) + 4
    fig = plots.sample_errors(scores, classes, {c: f"c{c}" for c in classes}, true=int(classes[-1]), sample=0)
    ax = fig.axes[0]
    widths = [bar.get_width() for bar in ax.patches]
    assert widths == sorted(widths) and len(widths) == len(scores)
    black = [bar for bar in ax.patches if bar.get_facecolor()[:3] == (0.0, 0.0, 0.0)]
    assert len(black) == 1
    fig.savefig(io.BytesIO(), format="png")  # equal errors (an empty range) still draw
