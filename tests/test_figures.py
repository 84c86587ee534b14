"""Every figure the scripts draw is free of layout defects, and the figure fixes of issue 14 hold.

:func:`layout_defects` is the check: it draws a figure with the Agg renderer,
records every text matplotlib actually draws (tick labels, titles, legends,
annotations, heatmap cells) with its bounding box from the renderer
(``Text.get_window_extent``), and reports

* two texts whose boxes overlap,
* a legend that covers a text that is not its own,
* a text placed inside a plot (``ax.text``/``ax.annotate``) that sticks out of
  that plot's area (cut by the frame, like a label below the last bar).

The module fixture runs the three scripts once on tiny data, with
:func:`utils.io.save_figure` wrapped so that every figure they save goes
through the check before it is written.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.legend import Legend  # noqa: E402
from matplotlib.text import Text  # noqa: E402

from tests.conftest import train_args, write_features  # noqa: E402
from utils import constants as C  # noqa: E402
from utils import plotting as P  # noqa: E402
from utils import run_plots as RP  # noqa: E402

TOLERANCE_PX = 1.0  # a text may touch its plot's frame by this much (anti-aliasing)
MIN_GAP_PX = 2.0  # two texts closer than this (at 100 dpi) read as one: "ConscientiousnessExtraversion"


# --------------------------------------------------------------------------- the check


def _drawn_texts(fig: Any) -> list[tuple[Text, Any]]:
    """(text, window extent) of every non-empty text drawn when ``fig`` is rendered."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    if not hasattr(fig.canvas, "get_renderer"):  # a figure closed by pyplot keeps a bare canvas
        FigureCanvasAgg(fig)
    drawn: list[tuple[Text, Any]] = []
    original = Text.draw

    def recording_draw(self: Text, renderer: Any) -> None:
        original(self, renderer)
        if self.get_visible() and self.get_text().strip():
            drawn.append((self, self.get_window_extent(renderer)))

    Text.draw = recording_draw  # type: ignore[method-assign]
    try:
        fig.canvas.draw()
    finally:
        Text.draw = original  # type: ignore[method-assign]
    return drawn


def _overlap(a: Any, b: Any, gap: float = MIN_GAP_PX) -> bool:
    """True when the boxes overlap or come closer than ``gap`` pixels (both ways at once)."""
    width = min(a.x1, b.x1) - max(a.x0, b.x0)
    height = min(a.y1, b.y1) - max(a.y0, b.y0)
    return width > -gap and height > -gap


def _owner_legend(text: Text, legends: list[Legend]) -> Legend | None:
    for legend in legends:
        if text in legend.get_texts() or text is legend.get_title():
            return legend
    return None


def layout_defects(fig: Any) -> list[str]:
    """Overlapping texts, legends over texts and texts cut by their plot's frame; [] if none."""
    texts = _drawn_texts(fig)
    renderer = fig.canvas.get_renderer()
    legends = [a for a in fig.findobj(Legend) if a.get_visible()]
    problems: list[str] = []
    for i, (t1, b1) in enumerate(texts):
        for t2, b2 in texts[i + 1:]:
            if _overlap(b1, b2):
                problems.append(f"texts overlap: {t1.get_text()!r} and {t2.get_text()!r}")
    for legend in legends:
        box = legend.get_window_extent(renderer)
        for text, tbox in texts:
            if _owner_legend(text, [legend]) is None and _overlap(box, tbox, gap=-TOLERANCE_PX):
                problems.append(f"legend covers {text.get_text()!r}")
    for ax in fig.axes:
        if not ax.axison:
            continue
        frame = ax.get_window_extent(renderer)
        for text, tbox in texts:
            if text in ax.texts and (
                tbox.x0 < frame.x0 - TOLERANCE_PX or tbox.x1 > frame.x1 + TOLERANCE_PX
                or tbox.y0 < frame.y0 - TOLERANCE_PX or tbox.y1 > frame.y1 + TOLERANCE_PX
            ):
                problems.append(f"{text.get_text()!r} sticks out of its plot")
    return problems


def all_text(fig: Any) -> str:
    """Every drawn text of ``fig``, one per line (for checking what a figure says)."""
    return "\n".join(t.get_text() for t, _ in _drawn_texts(fig))


# --------------------------------------------------------------------------- the check can fail


def test_the_check_finds_overlapping_texts_a_covering_legend_and_a_cut_label():
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1], label="a line with a long legend label")
    ax.legend(loc="upper left")
    ax.text(0.5, 0.5, "first label", transform=ax.transAxes)
    ax.text(0.52, 0.5, "second label", transform=ax.transAxes)
    ax.text(0.02, 0.97, "under the legend", transform=ax.transAxes, va="top")
    ax.text(0.5, -0.01, "cut by the frame", transform=ax.transAxes, va="center")
    problems = layout_defects(fig)
    plt.close(fig)
    assert any("'first label' and 'second label'" in p for p in problems), problems
    assert any("legend covers 'under the legend'" in p for p in problems), problems
    assert any("'cut by the frame' sticks out" in p for p in problems), problems


def test_the_check_passes_a_clean_figure():
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1], label="line")
    ax.set_title("title")
    ax.set_xlabel("x")
    ax.legend(loc="lower right")
    ax.text(0.1, 0.8, "one note", transform=ax.transAxes)
    assert layout_defects(fig) == []
    plt.close(fig)


# --------------------------------------------------------------------------- every figure of the scripts


@pytest.fixture(scope="module")
def figures(tmp_path_factory) -> Iterator[dict[str, dict[str, Any]]]:
    """Run the three scripts on tiny data; every saved figure's defects and texts, by file name."""
    import scripts.analyze_model_predictions as analyze
    import scripts.visualize_training_metrics as viz
    import utils.io
    from scripts.train_personality_model import main as train_main

    seen: dict[str, dict[str, Any]] = {}
    original = utils.io.save_figure

    def checked_save(fig: Any, path: str | Path, dpi: int = 150) -> None:
        seen[Path(path).name] = {"defects": layout_defects(fig), "text": all_text(fig), "path": Path(path)}
        original(fig, path, dpi=dpi)

    root = tmp_path_factory.mktemp("figures")
    paths = write_features(root / "data", n=64)
    out = root / "results"
    with pytest.MonkeyPatch.context() as mp:
        for module in (utils.io, P, RP):
            mp.setattr(module, "save_figure", checked_save)
        # a high rate and lr_patience 1: learning-rate cuts within 4 epochs
        assert train_main(train_args(
            paths, out, "--epochs", "4", "--learning_rate", "0.05", "--lr_patience", "1", "--patience", "5",
            "--batch_log_frequency", "3",
        )) == 0
        assert viz.main(["--history", str(out / C.HISTORY_FILE), "--output", str(out / "viz")]) == 0
        assert analyze.main([
            "--model", str(out / "personality_model_trained.h5"),
            "--static_features", paths["static_features"], "--dynamic_features", paths["dynamic_features"],
            "--labels", paths["labels"], "--output", str(out / "analysis"),
        ]) == 0
    yield seen


def test_every_figure_of_the_scripts_is_free_of_overlaps(figures):
    expected = {*P.TRAINING_FIGURES, P.MODEL_VS_BASELINE_FILE, P.TRAIT_CORRELATIONS_FILE, P.RESIDUALS_FILE,
                P.ERROR_DISTRIBUTION_FILE, P.ATTENTION_MAPS_FILE, P.ATTENTION_ENTROPY_FILE,
                *(P.scatter_file(t) for t in C.TRAITS), *(name for name, _ in RP.FIGURES)}
    assert expected <= set(figures), sorted(expected - set(figures))
    defects = {name: info["defects"] for name, info in figures.items() if info["defects"]}
    assert defects == {}


# --------------------------------------------------------------------------- the fixes, one by one


@pytest.fixture
def drawn(monkeypatch) -> dict[str, Any]:
    """Figures saved by the plotting modules, by file name (closed, but still readable)."""
    import utils.io

    seen: dict[str, Any] = {}
    original = utils.io.save_figure

    def keep(fig: Any, path: str | Path, dpi: int = 150) -> None:
        seen[Path(path).name] = fig
        original(fig, path, dpi=dpi)

    for module in (utils.io, P, RP):
        monkeypatch.setattr(module, "save_figure", keep)
    return seen


def _report(values: dict[str, float]) -> dict[str, Any]:
    return {"per_trait": {t: dict(values) for t in C.TRAITS}, "overall": dict(values)}


def test_model_vs_baseline_labels_stay_apart_when_model_and_baseline_are_close(tmp_path, drawn):
    # the values of the figure: 0.117 beside 0.115, -0.006 beside -0.004
    P.plot_model_vs_baseline(
        _report({"mae": 0.117, "r_squared": -0.006, "ccc": 0.064}),
        _report({"mae": 0.115, "r_squared": -0.004, "ccc": 0.0}),
        tmp_path / P.MODEL_VS_BASELINE_FILE,
    )
    fig = drawn[P.MODEL_VS_BASELINE_FILE]
    assert layout_defects(fig) == []
    assert "0.117" in all_text(fig) and "0.115" in all_text(fig)


def _plateau_logs(tmp_path: Path, rates: list[float], cuts: list[tuple[int, int | None]]) -> RP.RunLogs:
    """Run logs of a plateau run: the rate of each epoch, and (after epoch, first epoch at the new rate) cuts."""
    epochs = [
        {"epoch": e, "learning_rate_start": r, "learning_rate": r, "steps": 10} for e, r in enumerate(rates, start=1)
    ]
    batches = [{"epoch": e, "step": s, "global_step": 10 * (e - 1) + s, "learning_rate": r, "loss": 0.1}
               for e, r in enumerate(rates, start=1) for s in (5, 10)]
    changes = []
    for after, first in cuts:
        old = rates[after - 1]
        changes.append({"epoch": after, "effective_epoch": first, "old": old, "new": old / 2, "cause": "plateau"})
    return RP.RunLogs(folder=tmp_path, epochs=epochs, batches=batches, lr_changes=changes)


def test_learning_rate_is_a_step_line_with_a_tick_at_every_rate(tmp_path, drawn):
    rates = [1e-3] * 5 + [5e-4] * 3 + [2.5e-4] * 3 + [1.25e-4]
    logs = _plateau_logs(tmp_path, rates, [(5, 6), (8, 9), (11, 12)])
    RP.plot_learning_rate(logs, tmp_path / "learning_rate.png")
    fig = drawn["learning_rate.png"]
    ax = fig.axes[0]
    assert layout_defects(fig) == []
    line = ax.lines[0]
    x, y = np.asarray(line.get_xdata(), float), np.asarray(line.get_ydata(), float)
    for i in range(len(x) - 1):  # every segment flat or vertical: no ramp across a cut
        if np.isfinite([x[i], x[i + 1], y[i], y[i + 1]]).all():
            assert x[i] == x[i + 1] or y[i] == y[i + 1], (x[i:i + 2], y[i:i + 2])
    # the rate each epoch ran at, read back at the epoch's centre
    for epoch, rate in enumerate(rates, start=1):
        inside = (x > epoch - 0.5) & (x < epoch + 0.5)
        at = np.interp(epoch, x[np.isfinite(x)], y[np.isfinite(x)]) if not inside.any() else y[inside][0]
        assert math.isclose(at, rate, rel_tol=1e-9)
    ticks = [float(t) for t in ax.get_yticks()]
    for rate in sorted(set(rates)):
        assert any(math.isclose(t, rate, rel_tol=1e-9) for t in ticks), (rate, ticks)
    lo, hi = ax.get_ylim()
    assert lo < min(rates) and hi > max(rates)
    cut_lines = sorted(
        float(v.get_xdata()[0]) for v in ax.lines if v.get_linestyle() == ":" and len(set(v.get_xdata())) == 1
    )
    assert cut_lines == [5.5, 8.5, 11.5]  # between the last epoch at the old rate and the first at the new


def test_curve_figures_draw_the_cuts_where_the_learning_rate_figure_does(tmp_path, drawn):
    rates = [1e-3] * 3 + [5e-4] * 2
    history = {"epoch": [1, 2, 3, 4, 5], "loss": [0.5, 0.4, 0.35, 0.3, 0.28],
               "val_loss": [0.6, 0.5, 0.52, 0.49, 0.5], "learning_rate": rates}
    P.plot_metric_curve(P.prepare_curves(history), "loss", tmp_path / "loss.png")
    RP.plot_learning_rate(_plateau_logs(tmp_path, rates, [(3, 4)]), tmp_path / "learning_rate.png")

    def cut_lines(fig: Any) -> list[float]:
        return sorted(float(v.get_xdata()[0]) for v in fig.axes[0].lines
                      if "cut" in str(v.get_label()) or v.get_linestyle() in (":", "-.") and len(set(v.get_xdata())) == 1
                      and "best" not in str(v.get_label()))

    assert 3.5 in cut_lines(drawn["loss.png"])
    assert cut_lines(drawn["loss.png"]) == cut_lines(drawn["learning_rate.png"]) == [3.5]


def test_a_cut_after_the_last_epoch_is_named_as_unused(tmp_path, drawn):
    rates = [1e-3] * 3 + [5e-4] * 2
    RP.plot_learning_rate(_plateau_logs(tmp_path, rates, [(3, 4), (5, None)]), tmp_path / "learning_rate.png")
    fig = drawn["learning_rate.png"]
    assert layout_defects(fig) == []
    assert "new rate from epoch 4; one after the last epoch (never used)" in all_text(fig)


def _attention_logs(tmp_path: Path) -> RP.RunLogs:
    records = []
    for e in range(1, 6):
        blocks = {}
        for d in C.ATTENTION_DIRECTIONS:
            per_head = [2.55 - 0.01 * e - 0.03 * h for h in range(4)]
            blocks[f"{d}_0"] = {"direction": d, "level": 0, "key_tokens": 16, "max_entropy": math.log(16),
                                "per_head": per_head, "mean": float(np.mean(per_head))}
        directions = {d: {"mean": blocks[f"{d}_0"]["mean"], "max_entropy": math.log(16)} for d in C.ATTENTION_DIRECTIONS}
        records.append({"epoch": e, "n_samples": 8, "blocks": blocks, "directions": directions})
    return RP.RunLogs(folder=tmp_path, attention=records)


def test_attention_entropy_axis_spans_the_heads_and_numbers_them_from_one(tmp_path, drawn):
    RP.plot_attention_entropy(_attention_logs(tmp_path), tmp_path / "attention_entropy.png")
    fig = drawn["attention_entropy.png"]
    assert layout_defects(fig) == []
    for ax in fig.axes:
        lo, hi = ax.get_ylim()
        values = np.concatenate([np.asarray(line.get_ydata(), float) for line in ax.lines
                                 if str(line.get_label()).startswith("head")])
        assert lo < values.min() and hi > math.log(16)  # every head and the uniform level are in view
        # the heads fill a fifth of the axis at least (0..2.8 gave them 5 %)
        assert (values.max() - values.min()) / (hi - lo) > 0.2, (lo, hi)
        labels = [t.get_text() for t in ax.get_legend().get_texts()]
        assert [lab for lab in labels if lab.startswith("head")] == ["head 1", "head 2", "head 3", "head 4"]


def test_metric_correlation_is_of_epoch_changes_without_duplicates(tmp_path, drawn):
    rng = np.random.default_rng(0)
    n = 9
    loss = np.cumsum(-np.abs(rng.normal(0.05, 0.02, n))) + 1
    val_loss = 1 + rng.normal(0, 0.05, n)
    history = {"epoch": list(range(1, n + 1)), "loss": loss, "mse": loss * (1 + 1e-8), "val_loss": val_loss,
               "val_mse": val_loss, "val_r_squared": 0.3 - val_loss + rng.normal(0, 0.01, n),
               "mae": np.sqrt(loss) + rng.normal(0, 0.01, n), "learning_rate": [1e-3] * n}
    P.plot_metric_correlation(P.prepare_curves(history), tmp_path / P.METRIC_CORRELATION_FILE)
    fig = drawn[P.METRIC_CORRELATION_FILE]
    assert layout_defects(fig) == []
    text = all_text(fig)
    assert f"n = {n - 1} changes between {n} epochs" in text
    assert "training MSE = training loss" in text and "validation MSE = validation loss" in text
    assert "constant, left out: learning rate" in text
    labels = {t.get_text() for t in fig.axes[0].get_yticklabels() + fig.axes[0].get_xticklabels()}
    assert "training MSE" not in labels and "training loss" in labels and "validation R²" in labels
    # the value shown for training loss vs validation loss is numpy's correlation of the changes
    expected = np.corrcoef(np.diff(loss), np.diff(val_loss))[0, 1]
    assert f"r = {expected:+.2f}" in text
    from scipy import stats

    r_crit = P._critical_r(n - 1)
    assert stats.pearsonr(np.arange(n - 1), np.arange(n - 1) + 0.0).pvalue < 0.05  # the reference works
    t = r_crit * math.sqrt((n - 3) / (1 - r_crit**2))
    assert math.isclose(2 * stats.t.sf(t, n - 3), 0.05, rel_tol=1e-6)


def test_trait_correlations_point_out_one_general_factor(tmp_path, drawn):
    rng = np.random.default_rng(1)
    y = rng.uniform(size=(200, 5))
    general = rng.normal(size=(200, 1))
    p = 0.5 + 0.1 * general + 0.01 * rng.normal(size=(200, 5))
    P.plot_trait_correlations(y, p, tmp_path / P.TRAIT_CORRELATIONS_FILE)
    fig = drawn[P.TRAIT_CORRELATIONS_FILE]
    text = all_text(fig)
    assert layout_defects(fig) == []
    assert "blank" not in text.lower()
    assert "one general factor" in text
    r_pred = np.corrcoef(p, rowvar=False)[np.triu_indices(5, 1)].mean()
    r_true = np.corrcoef(y, rowvar=False)[np.triu_indices(5, 1)].mean()
    assert f"mean r {r_pred:.2f} against {r_true:.2f}" in text


def test_trait_correlations_name_a_constant_column_and_stay_quiet_otherwise(tmp_path):
    rng = np.random.default_rng(2)
    y = rng.uniform(size=(100, 5))
    p = y + 0.3 * rng.normal(size=(100, 5))  # as correlated as the labels: nothing to point out
    assert P.trait_correlation_note(y, p) == ""
    p[:, 2] = 0.5
    assert P.trait_correlation_note(y, p) == (
        "Blank cells: a constant column in the predictions (no correlation defined)."
    )


# --------------------------------------------------------------------------- what the scripts' figures say


def test_scatter_plots_name_the_split_and_define_accuracy(figures):
    for trait in C.TRAITS:
        text = figures[P.scatter_file(trait)]["text"]
        assert "validation split" in text  # the analysis default on the training files
        assert "accuracy (1 − MAE)" in text


def test_batch_loss_states_the_true_spacing(figures):
    out = figures["batch_loss.png"]["path"].parent.parent
    steps = [json.loads(line)["global_step"] for line in (out / "batch_log.jsonl").read_text().splitlines()]
    text = figures["batch_loss.png"]["text"]
    gaps = sorted({b - a for a, b in zip(steps, steps[1:])})
    assert f"{len(steps)} logged steps ({', '.join(map(str, steps[:4]))}" in text
    assert (f"every {gaps[0]} steps" if len(gaps) == 1 else f"{gaps[0]} to {gaps[-1]} steps apart") in text
    assert "every 3 steps)" not in text  # the requested spacing is not claimed for the points


def test_r2_comparison_says_what_the_training_bars_are(figures):
    text = figures[P.R2_COMPARISON_FILE]["text"]
    assert "running average over the epoch's batches, dropout on" in text
