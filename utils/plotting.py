"""Figures of the toolkit: one shared style, the training curves and the prediction analysis.

Style facts live here once: the color of each trait (the same in every
figure), the colors of training/validation, model/baseline and the two
attention directions, the resolution (:data:`DPI`) and the figure file names.
Every figure is drawn with the non-interactive ``Agg`` backend, saved
atomically through :func:`utils.io.save_figure` and closed.

Two families of figures:

* training curves from a history dict (:func:`plot_training_history`), used by
  ``scripts/visualize_training_metrics.py``;
* the prediction analysis (scatter, residuals, error distributions, trait
  correlations, model vs baseline, attention), used by
  ``scripts/analyze_model_predictions.py`` through :mod:`utils.analysis`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, never a window

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import FixedLocator, MaxNLocator  # noqa: E402

from utils import constants as C  # noqa: E402
from utils.io import save_figure  # noqa: E402

logger = logging.getLogger(__name__)

DPI = 150  # resolution of every saved figure (dots per inch)

# One color per trait, everywhere (Okabe-Ito, readable with color-vision deficiency).
TRAIT_COLORS: dict[str, str] = dict(
    zip(C.TRAITS, ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#D55E00"))
)
TRAIN_COLOR = "#8C8C8C"  # training curves: gray, dashed
VAL_COLOR = "#1A1A1A"  # validation curves: black, solid
TRAIN_STYLE = "--"
VAL_STYLE = "-"
BEST_COLOR = "#C0392B"  # best-epoch marker
LR_COLOR = "#6A3D9A"  # learning-rate cuts
OVERALL_COLOR = "#4D4D4D"  # trait-averaged values in per-trait charts
MODEL_COLOR = "#332288"
BASELINE_COLOR = "#BBBBBB"
DIRECTION_COLORS: dict[str, str] = {"static_to_dynamic": "#117733", "dynamic_to_static": "#882255"}
DIRECTION_LABELS: dict[str, str] = {
    "static_to_dynamic": "static → dynamic",
    "dynamic_to_static": "dynamic → static",
}
# Correlation heatmaps share this diverging scale.
CORRELATION_CMAP = "vlag"

# Figure file names (one source of truth; the tests and the docs use these).
CURVE_METRICS: dict[str, str] = {  # history key -> axis label
    "loss": "Loss (MSE)",
    "mae": "Mean absolute error",
    "mse": "Mean squared error",
    "r_squared": "R²",
}
# File names: utils.constants.
CURVE_FILES: dict[str, str] = {name: C.CURVE_FIGURE_PATTERN.format(metric=name) for name in CURVE_METRICS}
PER_TRAIT_R2_FILE = C.PER_TRAIT_R2_FIGURE
R2_COMPARISON_FILE = C.R2_COMPARISON_FIGURE
METRIC_CORRELATION_FILE = C.METRIC_CORRELATION_FIGURE
TRAINING_FIGURES: tuple[str, ...] = (
    *CURVE_FILES.values(),
    PER_TRAIT_R2_FILE,
    R2_COMPARISON_FILE,
    METRIC_CORRELATION_FILE,
)

RESIDUALS_FILE = C.RESIDUALS_FIGURE
ERROR_DISTRIBUTION_FILE = C.ERROR_DISTRIBUTION_FIGURE
TRAIT_CORRELATIONS_FILE = C.TRAIT_CORRELATIONS_FIGURE
MODEL_VS_BASELINE_FILE = C.MODEL_VS_BASELINE_FIGURE
ATTENTION_MAPS_FILE = C.ATTENTION_MAPS_FIGURE
ATTENTION_ENTROPY_FILE = C.ATTENTION_HEADS_FIGURE
# At most this many points are drawn in a scatter (metrics always use every sample).
MAX_SCATTER_POINTS = 20_000


def scatter_file(trait: str) -> str:
    """File name of the predicted-vs-true scatter of one trait."""
    return C.SCATTER_FIGURE_PATTERN.format(trait=trait)


def trait_label(trait: str) -> str:
    """``"Openness (O)"``."""
    return f"{trait.capitalize()} ({C.TRAIT_ABBREVIATIONS[C.TRAITS.index(trait)]})"


def _two_line_labels() -> list[str]:
    """``"Openness\\n(O)"`` for every trait: tick labels that fit under a bar pair."""
    return [f"{t.capitalize()}\n({a})" for t, a in zip(C.TRAITS, C.TRAIT_ABBREVIATIONS)]


def save(fig: Any, path: str | Path) -> Path:
    """Save ``fig`` atomically at :data:`DPI` and close it (also on failure)."""
    try:
        save_figure(fig, path, dpi=DPI)
    finally:
        plt.close(fig)
    return Path(path)


def note_figure(title: str, message: str, path: str | Path) -> Path:
    """A figure that says, in words, why there is nothing to plot."""
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.set_title(title)
    ax.text(0.5, 0.5, message, ha="center", va="center", wrap=True, fontsize=11, transform=ax.transAxes)
    ax.set_axis_off()
    return save(fig, path)


def _finite(values: Any) -> bool:
    return bool(np.isfinite(np.asarray(values, dtype="float64")).any())


def _heatmap(data: Any, **kwargs: Any) -> Any:
    """``seaborn.heatmap`` without its matplotlib 3.11 ``set_bad`` PendingDeprecationWarning."""
    import seaborn as sns

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PendingDeprecationWarning)
        return sns.heatmap(data, **kwargs)


# ----------------------------------------------------------------- training curves


@dataclasses.dataclass
class Curves:
    """A history made ready for plotting: rows in epoch order, one per epoch.

    Attributes:
        epoch: epoch numbers (1-based, as recorded; may start above 1 or have gaps).
        columns: every history column, aligned with ``epoch``.
        best: row index of the best epoch (lowest ``val_loss``, else lowest ``loss``).
        best_by: the column that chose it.
        lr_cuts: the first epoch run at each lowered learning rate (empty
            for a continuous schedule, see ``lr_note``); figures draw the cut
            at ``epoch - 0.5``, between the last epoch at the old rate and the
            first at the new one (:func:`lr_cut_label`).
        lr_note: a sentence about the learning rate for the figures, or "".
        notes: what was done to the raw history (duplicates dropped, ...).
    """

    epoch: np.ndarray
    columns: dict[str, np.ndarray]
    best: int | None
    best_by: str
    lr_cuts: list[float]
    lr_note: str
    notes: list[str]

    @property
    def best_epoch(self) -> float | None:
        return None if self.best is None else float(self.epoch[self.best])

    def get(self, key: str) -> np.ndarray | None:
        """A column with at least one finite value, else None."""
        values = self.columns.get(key)
        return values if values is not None and _finite(values) else None


def _with_start(history: Mapping[str, Sequence[float]], start: Mapping[str, float]) -> dict[str, list[float]]:
    """The history with an epoch-0 row: the validation metrics of the model as built, NaN elsewhere."""
    epochs = list(history.get("epoch", []))
    if not epochs or 0 in epochs:
        return {k: list(v) for k, v in history.items()}
    return {
        k: [float(start.get(k, float("nan"))) if k != "epoch" else 0.0, *v] for k, v in history.items()
    }


def prepare_curves(history: Mapping[str, Sequence[float]], start: Mapping[str, float] | None = None) -> Curves:
    """Sort a history by its ``epoch`` column and find the best epoch and the LR cuts.

    ``start`` (the run's ``start_validation.json``) adds epoch 0, the model as
    built: its validation metrics are drawn there and it can be the best
    epoch, as it is for the run when no epoch improved on it.

    A resumed run can record epochs that start above 1, skip epochs, or repeat
    one (the epoch redone after a crash); rows are ordered by epoch and, for a
    repeated epoch, the last row recorded wins. A history without an ``epoch``
    column (older pickled dicts) is numbered 1..n.
    """
    if start:
        history = _with_start(history, start)
    raw = {k: np.asarray(v, dtype="float64") for k, v in history.items()}
    n = max((len(v) for v in raw.values()), default=0)
    notes: list[str] = []
    if "epoch" in raw and np.isfinite(raw["epoch"]).all():
        epoch = raw.pop("epoch")
    else:
        raw.pop("epoch", None)
        epoch = np.arange(1, n + 1, dtype="float64")
        notes.append("no usable 'epoch' column: rows numbered 1..n")
    # Keep the last row of each epoch, in epoch order.
    last = {e: i for i, e in enumerate(epoch)}
    rows = np.array([last[e] for e in sorted(last)], dtype=np.int64)
    if len(rows) < len(epoch):
        notes.append(f"{len(epoch) - len(rows)} repeated epoch row(s): the last one recorded is used")
    epoch = epoch[rows]
    columns = {k: v[rows] for k, v in raw.items() if len(v) == n}

    best, best_by = None, ""
    for key in ("val_loss", "loss"):
        values = columns.get(key)
        if values is not None and _finite(values):
            best, best_by = int(np.nanargmin(values)), key
            break

    lr_cuts: list[float] = []
    lr_note = ""
    lr = columns.get("learning_rate")
    if lr is not None and len(lr) > 1 and _finite(lr):
        drops = [i for i in range(1, len(lr)) if lr[i] < lr[i - 1] * (1.0 - 1e-6)]
        if drops and len(drops) > (len(lr) - 1) / 2:
            lr_note = "learning rate decays continuously (no step cuts marked)"
        else:
            lr_cuts = [float(epoch[i]) for i in drops]
    return Curves(epoch, columns, best, best_by, lr_cuts, lr_note, notes)


def _decorate_epochs(ax: Any, curves: Curves, mark_best: bool = True) -> None:
    """Integer epoch ticks, the best-epoch line and the learning-rate cuts."""
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("Epoch")
    if len(curves.epoch) == 1:
        e = float(curves.epoch[0])
        ax.set_xlim(e - 0.5, e + 0.5)
    if mark_best and curves.best is not None:
        ax.axvline(
            curves.best_epoch,
            color=BEST_COLOR,
            ls=":",
            lw=1.5,
            label=f"best epoch {curves.best_epoch:g} (lowest {curves.best_by})",
        )
    for i, e in enumerate(curves.lr_cuts):
        ax.axvline(
            e - 0.5, color=LR_COLOR, ls="-.", lw=1.0, alpha=0.7, label=lr_cut_label(curves.lr_cuts) if i == 0 else None
        )
    ax.grid(alpha=0.3)


def lr_cut_label(first_epochs: Sequence[float]) -> str:
    """Legend text of the cut lines: ``"learning-rate cut (from epoch 6, 9)"``."""
    epochs = ", ".join(f"{e:g}" for e in first_epochs)
    return f"learning-rate cut (lower rate from epoch {epochs})"


def _subtitle(curves: Curves) -> str:
    trained = curves.epoch[curves.epoch > 0]
    if len(trained) == 0:
        text = "epoch 0 only"
    else:
        first, last = trained[0], trained[-1]
        text = f"{len(trained)} epoch(s), {first:g}–{last:g}" if len(trained) > 1 else f"epoch {first:g} only"
    if len(trained) < len(curves.epoch):
        text += "; epoch 0: the model as built"
    extra = [s for s in (curves.lr_note, *curves.notes) if s]
    return text + ("; " + "; ".join(extra) if extra else "")


def plot_metric_curve(curves: Curves, name: str, path: str | Path) -> Path | None:
    """Training and validation curve of one overall metric; None if the history lacks it."""
    train, val = curves.get(name), curves.get(f"val_{name}")
    if train is None and val is None:
        logger.warning("history has no '%s' or 'val_%s' values: %s not written", name, name, Path(path).name)
        return None
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    if train is not None:
        ax.plot(curves.epoch, train, TRAIN_STYLE, color=TRAIN_COLOR, marker="o", ms=4, label="training")
    if val is not None:
        ax.plot(curves.epoch, val, VAL_STYLE, color=VAL_COLOR, marker="o", ms=4, label="validation")
    if name == "r_squared":
        ax.axhline(0.0, color=BASELINE_COLOR, lw=1.0, label="R² = 0 (mean predictor)")
    _decorate_epochs(ax, curves)
    if curves.best is not None:
        best_values = val if val is not None else train
        if np.isfinite(best_values[curves.best]):
            ax.plot(curves.best_epoch, best_values[curves.best], "*", color=BEST_COLOR, ms=14, zorder=5)
    ax.set_ylabel(CURVE_METRICS.get(name, name))
    ax.set_title(f"{CURVE_METRICS.get(name, name)} per epoch\n{_subtitle(curves)}", fontsize=11)
    ax.legend(loc="best", fontsize=9)
    return save(fig, path)


def plot_per_trait_r_squared(curves: Curves, path: str | Path) -> Path | None:
    """R² of each trait over epochs: validation solid, training dashed, one color per trait."""
    found = False
    fig, ax = plt.subplots(figsize=(8.5, 5))
    for trait in C.TRAITS:
        key = C.per_trait_metric_name(trait, "r_squared")
        for prefix, style in (("val_", VAL_STYLE), ("", TRAIN_STYLE)):
            values = curves.get(prefix + key)
            if values is not None:
                found = True
                ax.plot(curves.epoch, values, style, color=TRAIT_COLORS[trait], marker="o", ms=3, lw=1.6)
    if not found:
        plt.close(fig)
        logger.warning("history has no per-trait R² columns: %s not written", Path(path).name)
        return None
    ax.axhline(0.0, color=BASELINE_COLOR, lw=1.0)
    _decorate_epochs(ax, curves)
    handles = [Line2D([], [], color=TRAIT_COLORS[t], lw=2.5, label=trait_label(t)) for t in C.TRAITS]
    handles += [
        Line2D([], [], color=VAL_COLOR, ls=VAL_STYLE, label="validation"),
        Line2D([], [], color=VAL_COLOR, ls=TRAIN_STYLE, label="training"),
        Line2D([], [], color=BASELINE_COLOR, label="R² = 0 (mean predictor)"),
    ]
    if curves.best is not None:
        handles.append(Line2D([], [], color=BEST_COLOR, ls=":", label=f"best epoch {curves.best_epoch:g}"))
    if curves.lr_cuts:
        handles.append(Line2D([], [], color=LR_COLOR, ls="-.", label=lr_cut_label(curves.lr_cuts)))
    ax.legend(handles=handles, loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=9)
    ax.set_ylabel("R²")
    ax.set_title(f"R² per trait over epochs\n{_subtitle(curves)}", fontsize=11)
    return save(fig, path)


def _bar_labels(ax: Any, bars: Any, values: Sequence[float]) -> None:
    for bar, value in zip(bars, values):
        if np.isfinite(value):
            y = bar.get_height()
            ax.annotate(
                f"{value:.3f}",
                (bar.get_x() + bar.get_width() / 2, y),
                xytext=(0, 3 if y >= 0 else -3),
                textcoords="offset points",
                ha="center",
                va="bottom" if y >= 0 else "top",
                fontsize=7,
            )


def plot_r2_comparison(curves: Curves, path: str | Path) -> Path | None:
    """Per-trait R² at the best epoch, training vs validation, with the overall value."""
    if curves.best is None:
        logger.warning("history has no loss values to choose a best epoch: %s not written", Path(path).name)
        return None
    i = curves.best
    keys = [C.per_trait_metric_name(t, "r_squared") for t in C.TRAITS] + ["r_squared"]
    labels = [*_two_line_labels(), "Overall\n(mean)"]
    colors = [TRAIT_COLORS[t] for t in C.TRAITS] + [OVERALL_COLOR]

    def at_best(key: str) -> float:
        values = curves.columns.get(key)
        return float(values[i]) if values is not None else math.nan

    train = [at_best(k) for k in keys]
    val = [at_best(f"val_{k}") for k in keys]
    if not (_finite(train) or _finite(val)):
        logger.warning("history has no R² values: %s not written", Path(path).name)
        return None
    x = np.arange(len(keys))
    width = 0.38
    fig, ax = plt.subplots(figsize=(10.5, 4.8))
    bars_t = ax.bar(x - width / 2, np.nan_to_num(train), width, color=colors, alpha=0.45, hatch="//", edgecolor="white")
    bars_v = ax.bar(x + width / 2, np.nan_to_num(val), width, color=colors, edgecolor="black", lw=0.6)
    _bar_labels(ax, bars_t, train)
    _bar_labels(ax, bars_v, val)
    ax.axhline(0.0, color="black", lw=0.8)
    ax.set_xticks(x, labels)
    ax.set_ylabel("R²")
    ax.set_xlabel("Trait")
    ax.margins(y=0.15)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(
        handles=[
            Patch(facecolor=OVERALL_COLOR, alpha=0.45, hatch="//", edgecolor="white",
                  label="training (running average over the epoch's batches, dropout on)"),
            Patch(facecolor=OVERALL_COLOR, edgecolor="black",
                  label="validation (whole split at the epoch's end, dropout off)"),
        ],
        loc="upper center",
        bbox_to_anchor=(0.5, -0.2),
        ncol=1,
        fontsize=9,
        frameon=False,
    )
    overall = val[-1] if np.isfinite(val[-1]) else train[-1]
    ax.set_title(
        f"R² per trait at the best epoch ({curves.best_epoch:g}, lowest {curves.best_by})\n"
        f"overall {'validation' if np.isfinite(val[-1]) else 'training'} R² = {overall:.3f}",
        fontsize=11,
    )
    return save(fig, path)


def correlation_columns(curves: Curves) -> list[str]:
    """History columns compared in the metric-correlation heatmap, in display order."""
    keys = [*CURVE_METRICS, *(f"val_{m}" for m in CURVE_METRICS)]
    keys += [f"val_{C.per_trait_metric_name(t, 'r_squared')}" for t in C.TRAITS]
    keys.append("learning_rate")
    return [k for k in keys if k in curves.columns]


_METRIC_WORDS = {"loss": "loss", "mae": "MAE", "mse": "MSE", "r_squared": "R²", "learning_rate": "learning rate"}


def metric_label(key: str) -> str:
    """A history key in words: ``"val_openness_r_squared"`` -> ``"validation R², openness"``."""
    if key == "learning_rate":
        return "learning rate"
    split, name = ("validation", key[4:]) if key.startswith("val_") else ("training", key)
    for trait in C.TRAITS:
        if name.startswith(trait + "_"):
            return f"{split} {_METRIC_WORDS.get(name[len(trait) + 1:], name)}, {trait}"
    return f"{split} {_METRIC_WORDS.get(name, name)}"


def _distinct_columns(frame: Any, levels: Any) -> tuple[list[str], list[str], list[str]]:
    """(varying and distinct, constant or missing, 'a = b' duplicates) among ``frame``'s columns.

    Two columns are duplicates when their ``levels`` agree to float32 precision
    (the MSE loss and the MSE metric, summed in a different order).
    """
    usable: list[str] = []
    left_out: list[str] = []
    same: list[str] = []
    for key in frame.columns:
        values = frame[key].to_numpy(dtype="float64")
        finite = values[np.isfinite(values)]
        if len(finite) < 2 or np.ptp(finite) == 0:
            left_out.append(key)
            continue
        level = levels[key].to_numpy(dtype="float64")
        twin = next(
            (k for k in usable
             if np.allclose(levels[k].to_numpy(dtype="float64"), level, rtol=1e-5, atol=0.0, equal_nan=True)),
            None,
        )
        if twin is None:
            usable.append(key)
        else:
            same.append(f"{metric_label(key)} = {metric_label(twin)}")
    return usable, left_out, same


def plot_metric_correlation(curves: Curves, path: str | Path) -> Path:
    """Do the metrics improve in the same epochs? Correlation of their epoch-to-epoch changes.

    Levels of metrics that all trend over training correlate whatever their
    relation; the changes from one epoch to the next do not share that trend,
    so the heatmap answers "when the training loss falls, does the validation
    R² of each trait rise in the same epoch?". Columns that are identical
    (the MSE loss and the MSE metric) are shown once and named; constant ones
    are left out and named. Fewer than three epochs, or fewer than two varying
    metrics, give a figure that says so.
    """
    import pandas as pd

    title = "Do the metrics change together from one epoch to the next?"
    if len(curves.epoch) < 3:
        return note_figure(
            title,
            f"Only {len(curves.epoch)} epoch(s) were recorded ({', '.join(f'{e:g}' for e in curves.epoch)}).\n"
            "Correlations of epoch-to-epoch changes need at least three epochs.",
            path,
        )
    levels = pd.DataFrame({k: curves.columns[k] for k in correlation_columns(curves)})
    changes = levels.diff().iloc[1:]
    usable, left_out, same = _distinct_columns(changes, levels)
    if len(usable) < 2:
        return note_figure(
            title,
            f"Fewer than two metrics change across the {len(curves.epoch)} epochs\n"
            f"(constant or missing: {', '.join(map(metric_label, left_out)) or 'none'}).",
            path,
        )
    corr = changes[usable].corr(min_periods=2)
    corr.index = corr.columns = [metric_label(k) for k in usable]
    corr = corr.iloc[1:, :-1]  # the lower triangle without the diagonal of ones
    mask = np.triu(np.ones(corr.shape, dtype=bool), k=1)
    size = 2.6 + 0.6 * len(corr)
    fig, ax = plt.subplots(figsize=(size + 2.0, size))
    _heatmap(
        corr, mask=mask, vmin=-1, vmax=1, center=0, cmap=CORRELATION_CMAP, annot=True, fmt=".2f",
        annot_kws={"fontsize": 8}, square=True, linewidths=0.5,
        cbar_kws={"label": "Pearson r of the epoch-to-epoch changes", "shrink": 0.8}, ax=ax,
    )
    ax.set_xlabel("")
    ax.set_ylabel("")
    n = len(changes)
    lines = [
        title,
        f"n = {n} changes between {len(curves.epoch)} epochs ({curves.epoch[0]:g}–{curves.epoch[-1]:g}); "
        + (f"|r| above {_critical_r(n):.2f} differs from 0 at p < 0.05" if n > 2 else "r is ±1 by construction"),
    ]
    if {"loss", "val_loss"} <= set(usable) and n > 2:
        r = float(changes["loss"].corr(changes["val_loss"]))
        verdict = (
            "epochs that lower the training loss lower the validation loss too" if r >= _critical_r(n)
            else "no evidence that epochs that lower the training loss lower the validation loss"
        )
        lines.append(f"training vs validation loss: r = {r:+.2f}, {verdict}")
    if same:
        lines.append("shown once (identical): " + "; ".join(same))
    if left_out:
        lines.append("constant, left out: " + ", ".join(map(metric_label, left_out)))
    ax.set_title("\n".join(lines), fontsize=9.5)
    return save(fig, path)


def _critical_r(n: int, alpha: float = 0.05) -> float:
    """Smallest |Pearson r| of ``n`` pairs that is significant at ``alpha`` (two-sided t test)."""
    from scipy import stats

    t = stats.t.ppf(1.0 - alpha / 2.0, n - 2)
    return float(t / math.sqrt(n - 2 + t * t))


def plot_training_history(
    history: Mapping[str, Sequence[float]], output_dir: str | Path, start: Mapping[str, float] | None = None
) -> list[Path]:
    """Every training-curve figure of :data:`TRAINING_FIGURES`; returns the files written.

    ``start``: the run's epoch-0 validation metrics (:func:`utils.history.load_start_validation`).
    """
    out = Path(output_dir)
    curves = prepare_curves(history, start)
    for note in curves.notes:
        logger.info("history: %s", note)
    written: list[Path | None] = [plot_metric_curve(curves, m, out / f) for m, f in CURVE_FILES.items()]
    written.append(plot_per_trait_r_squared(curves, out / PER_TRAIT_R2_FILE))
    written.append(plot_r2_comparison(curves, out / R2_COMPARISON_FILE))
    written.append(plot_metric_correlation(curves, out / METRIC_CORRELATION_FILE))
    return [p for p in written if p is not None]


# ----------------------------------------------------------------- prediction analysis


def _subsample(n: int, limit: int = MAX_SCATTER_POINTS, seed: int = 0) -> np.ndarray:
    if n <= limit:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=limit, replace=False))


def _shown_note(n: int) -> str:
    return f" (random {MAX_SCATTER_POINTS} of {n} shown)" if n > MAX_SCATTER_POINTS else ""


def plot_trait_scatter(
    trait: str,
    y_true: np.ndarray,
    y_pred: np.ndarray,
    metrics: Mapping[str, float],
    path: str | Path,
    baseline_mean: float | None = None,
    split: str | None = None,
    intervals: Mapping[str, Sequence[float | None]] | None = None,
) -> Path:
    """Predicted vs true for one trait: identity line, least-squares fit, R² and CCC.

    ``split`` names the clips the points are (``"validation"``, ``"train"``,
    ``"all"``); the title says it. ``intervals`` (metric -> [low, high], the
    95% bootstrap intervals of ``metrics.json``) are shown beside R², CCC and MAE.
    """
    y = np.asarray(y_true, dtype="float64")
    p = np.asarray(y_pred, dtype="float64")
    shown = _subsample(len(y))
    color = TRAIT_COLORS[trait]
    fig, ax = plt.subplots(figsize=(5.6, 7.0))
    ax.scatter(
        y[shown], p[shown], s=14, color=color, alpha=0.55, edgecolor="none",
        label=f"samples (N = {len(y)})",
    )
    lo = float(min(y.min(), p.min(), 0.0))
    hi = float(max(y.max(), p.max(), 1.0))
    ax.plot([lo, hi], [lo, hi], color="black", lw=1.0, ls="--", label="identity (perfect prediction)")
    if np.ptp(y) > 0:
        slope, intercept = np.polyfit(y, p, 1)
        xs = np.array([lo, hi])
        ax.plot(xs, intercept + slope * xs, color=color, lw=2.0, label=f"least-squares fit: p = {slope:.2f} y + {intercept:.2f}")
    if baseline_mean is not None:
        ax.axhline(baseline_mean, color=BASELINE_COLOR, lw=1.5, label=f"mean-predictor baseline ({baseline_mean:.3f})")
    def value(name: str) -> str:
        low, high = (intervals or {}).get(name) or (None, None)
        ci = f" [{low:.3f}, {high:.3f}]" if low is not None and np.isfinite(low) else ""
        return f"{metrics[name]:.3f}{ci}"

    if intervals:
        ax.plot([], [], " ", label="brackets: 95% bootstrap interval")
    ax.plot([], [], " ", label=f"R² = {value('r_squared')}, CCC = {value('ccc')}")
    ax.plot([], [], " ", label=f"MAE = {value('mae')}, accuracy (1 − MAE) = {metrics['accuracy']:.3f}")
    pad = 0.02 * (hi - lo)  # keeps the two "0.0" tick labels at the corner apart
    ax.set_xlim(lo - pad, hi + pad)
    ax.set_ylim(lo - pad, hi + pad)
    ax.set_aspect("equal")
    ax.set_xlabel(f"True {trait}")
    ax.set_ylabel(f"Predicted {trait}")
    clips = f"{split} split, " if split else ""
    ax.set_title(
        f"{trait_label(trait)}: predicted vs true\n{clips}{len(y)} clips{_shown_note(len(y))}", fontsize=11
    )
    ax.grid(alpha=0.3)
    # below the plot: a good model's points fill the diagonal, corners included
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), fontsize=7.5, frameon=False)
    return save(fig, path)


def plot_residuals(y_true: np.ndarray, y_pred: np.ndarray, path: str | Path) -> Path:
    """Residual (true − predicted) against the prediction, one panel per trait."""
    y = np.asarray(y_true, dtype="float64")
    p = np.asarray(y_pred, dtype="float64")
    res = y - p
    shown = _subsample(len(y))
    bound = float(np.abs(res).max()) * 1.05 or 1.0
    fig, axes = plt.subplots(1, C.NUM_TRAITS, figsize=(3.2 * C.NUM_TRAITS, 3.9), sharey=True)
    for j, (trait, ax) in enumerate(zip(C.TRAITS, axes)):
        ax.scatter(p[shown, j], res[shown, j], s=10, alpha=0.5, color=TRAIT_COLORS[trait], edgecolor="none")
        ax.axhline(0.0, color="black", lw=1.0, ls="--")
        ax.axhline(res[:, j].mean(), color=TRAIT_COLORS[trait], lw=1.8)
        ax.set_ylim(-bound, bound)
        # the value in the title, the line key once below the panels: no legend over the points
        ax.set_title(f"{trait_label(trait)}\nmean residual {res[:, j].mean():+.3f}", fontsize=10)
        ax.set_xlabel("Predicted value")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("Residual (true − predicted)")
    handles = [
        Line2D([], [], ls="", marker="o", ms=4, alpha=0.6, color="grey", label="clips (trait colour)"),
        Line2D([], [], color="black", lw=1.0, ls="--", label="zero residual"),
        Line2D([], [], color="grey", lw=1.8, label="mean residual (trait colour)"),
    ]
    fig.legend(handles=handles, loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.suptitle(f"Residuals against predictions{_shown_note(len(y))}", fontsize=12)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return save(fig, path)


def plot_error_distribution(
    y_true: np.ndarray, y_pred: np.ndarray, baseline_pred: np.ndarray, path: str | Path
) -> Path:
    """Violin of the absolute errors per trait, model beside the mean-predictor baseline."""
    import pandas as pd
    import seaborn as sns

    y = np.asarray(y_true, dtype="float64")
    shown = _subsample(len(y))
    parts = []
    for source, pred in (("model", y_pred), ("mean-predictor baseline", baseline_pred)):
        err = np.abs(y - np.asarray(pred, dtype="float64"))[shown]
        for j, trait in enumerate(C.TRAITS):
            parts.append(pd.DataFrame({"trait": trait_label(trait), "source": source, "absolute error": err[:, j]}))
    frame = pd.concat(parts, ignore_index=True)
    fig, ax = plt.subplots(figsize=(10, 4.8))
    sns.violinplot(
        data=frame, x="trait", y="absolute error", hue="source", split=True, inner="quart",
        cut=0, density_norm="width", palette={"model": MODEL_COLOR, "mean-predictor baseline": BASELINE_COLOR},
        ax=ax,
    )
    # Trait color as a band under each trait's label, the same color as everywhere else.
    for k, trait in enumerate(C.TRAITS):
        ax.axvspan(k - 0.5, k + 0.5, color=TRAIT_COLORS[trait], alpha=0.08, zorder=0)
        mae = float(np.abs(y[:, k] - np.asarray(y_pred, dtype="float64")[:, k]).mean())
        ax.plot(k, mae, "D", color=TRAIT_COLORS[trait], mec="black", ms=7, zorder=5, label="model MAE" if k == 0 else None)
    ax.set_xlabel("Trait")
    ax.set_ylabel("Absolute error |true − predicted|")
    ax.set_ylim(bottom=0)
    ax.set_title(f"Distribution of absolute errors per trait{_shown_note(len(y))}", fontsize=11)
    ax.legend(loc="upper right", fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return save(fig, path)


def _corr(values: np.ndarray) -> np.ndarray:
    """Trait correlation matrix; NaN where a column is constant."""
    v = np.asarray(values, dtype="float64")
    centered = v - v.mean(axis=0)
    norms = np.sqrt((centered**2).sum(axis=0))
    with np.errstate(divide="ignore", invalid="ignore"):
        corr = (centered.T @ centered) / np.outer(norms, norms)
    corr[~np.isfinite(corr)] = np.nan
    return np.clip(corr, -1.0, 1.0)


def _mean_off_diagonal(corr: np.ndarray) -> float:
    off = corr[~np.eye(len(corr), dtype=bool)]
    off = off[np.isfinite(off)]
    return float(off.mean()) if off.size else math.nan


def _first_component_share(corr: np.ndarray) -> float:
    """Share of the total (standardized) variance on the first principal component."""
    if not np.isfinite(corr).all():
        return math.nan
    return float(np.linalg.eigvalsh(corr)[-1] / len(corr))


# The predictions' mean trait correlation exceeds the labels' by at least this: one general factor.
GENERAL_FACTOR_MARGIN = 0.15


def trait_correlation_note(y_true: np.ndarray, y_pred: np.ndarray) -> str:
    """The sentence under the trait-correlation heatmaps ("" when there is nothing to point out)."""
    true_corr, pred_corr = _corr(y_true), _corr(y_pred)
    r_true, r_pred = _mean_off_diagonal(true_corr), _mean_off_diagonal(pred_corr)
    lines = []
    if np.isfinite(r_true) and np.isfinite(r_pred) and r_pred - r_true >= GENERAL_FACTOR_MARGIN:
        lines.append(
            f"The predictions move together far more than the labels (mean r {r_pred:.2f} against {r_true:.2f}; "
            f"first principal component {_first_component_share(pred_corr):.0%} of the variance against "
            f"{_first_component_share(true_corr):.0%}):\nthe model predicts mostly one general factor, "
            "not five separate traits."
        )
    blank = [name for name, values in (("labels", y_true), ("predictions", y_pred)) if np.isnan(_corr(values)).any()]
    if blank:
        lines.append(f"Blank cells: a constant column in the {' and the '.join(blank)} (no correlation defined).")
    return "\n".join(lines)


def plot_trait_correlations(y_true: np.ndarray, y_pred: np.ndarray, path: str | Path) -> Path:
    """Trait-by-trait Pearson correlations of the true and of the predicted values, same scale."""
    names = list(C.TRAIT_ABBREVIATIONS)
    fig, axes = plt.subplots(1, 2, figsize=(11, 5.2), layout="constrained")
    n = len(np.asarray(y_true))
    for ax, values, title in ((axes[0], y_true, "True labels"), (axes[1], y_pred, "Predictions")):
        _heatmap(
            _corr(values), vmin=-1, vmax=1, center=0, cmap=CORRELATION_CMAP, annot=True, fmt=".2f",
            square=True, xticklabels=names, yticklabels=names, linewidths=0.5, ax=ax,
            cbar=ax is axes[1], cbar_kws={"label": "Pearson r"},
        )
        ax.set_title(title)
        ax.set_xlabel("Trait")
        ax.set_ylabel("Trait")
        for tick, trait in zip(ax.get_xticklabels(), C.TRAITS):
            tick.set_color(TRAIT_COLORS[trait])
        for tick, trait in zip(ax.get_yticklabels(), C.TRAITS):
            tick.set_color(TRAIT_COLORS[trait])
    fig.suptitle(f"Correlations between traits over the same {n} clips", fontsize=12)
    note = trait_correlation_note(y_true, y_pred)
    if note:
        fig.text(0.5, 0.0, note, ha="center", va="top", fontsize=9.5, transform=fig.transFigure)
    return save(fig, path)


def plot_model_vs_baseline(
    model: Mapping[str, Any], baseline: Mapping[str, Any], path: str | Path
) -> Path:
    """MAE, R² and CCC per trait and overall: the model beside the mean-predictor baseline.

    One metric per row, so that the value printed above each bar has the
    width of a bar pair to itself.
    """
    metrics = (
        ("mae", "MAE (lower is better)"), ("r_squared", "R² (higher is better)"), ("ccc", "CCC (higher is better)")
    )
    labels = [*_two_line_labels(), "All traits\n(mean)"]
    colors = [TRAIT_COLORS[t] for t in C.TRAITS] + [OVERALL_COLOR]
    x = np.arange(len(labels))
    width = 0.38
    fig, axes = plt.subplots(len(metrics), 1, figsize=(10, 3.1 * len(metrics) + 1.0), sharex=True, layout="constrained")
    for ax, (name, label) in zip(axes, metrics):
        m = [model["per_trait"][t][name] for t in C.TRAITS] + [model["overall"][name]]
        b = [baseline["per_trait"][t][name] for t in C.TRAITS] + [baseline["overall"][name]]
        m = [math.nan if v is None else float(v) for v in m]
        b = [math.nan if v is None else float(v) for v in b]
        bars_m = ax.bar(x - width / 2, np.nan_to_num(m), width, color=colors, edgecolor="black", lw=0.6)
        bars_b = ax.bar(x + width / 2, np.nan_to_num(b), width, color=BASELINE_COLOR, edgecolor="black", lw=0.6)
        _bar_labels(ax, bars_m, m)
        _bar_labels(ax, bars_b, b)
        ax.axhline(0.0, color="black", lw=0.8)
        ax.set_ylabel(label.split(" (")[0])
        ax.set_title(label, fontsize=10, loc="left")
        ax.margins(y=0.22)
        ax.grid(axis="y", alpha=0.3)
    axes[-1].set_xticks(x, labels, fontsize=9)
    axes[-1].set_xlabel("Trait")
    fig.suptitle("Model vs mean-predictor baseline", fontsize=12)
    fig.legend(
        handles=[
            Patch(facecolor=OVERALL_COLOR, edgecolor="black", label="model (bars in the trait's color)"),
            Patch(facecolor=BASELINE_COLOR, edgecolor="black", label="mean-predictor baseline"),
        ],
        fontsize=9,
        loc="outside lower center",
        ncol=2,
    )
    return save(fig, path)


def _block_title(key: str) -> str:
    """``"static_to_dynamic_0"`` -> ``"static → dynamic (block 1)"``."""
    direction, _, level = key.rpartition("_")
    return f"{DIRECTION_LABELS.get(direction, direction)} (block {int(level) + 1})"


def _block_direction(key: str) -> str:
    return key.rpartition("_")[0]


def plot_attention_maps(mean_maps: Mapping[str, np.ndarray], n_samples: int, path: str | Path) -> Path:
    """Mean attention of each head (rows) in each block/direction (columns).

    ``mean_maps``: ``block -> (heads, query_tokens, key_tokens)``, averaged
    over the chosen samples. Each column has its own color scale (key counts
    differ between directions); the title gives the uniform value 1/k.
    """
    keys = list(mean_maps)
    heads = max(m.shape[0] for m in mean_maps.values())
    row = 3.3 if max(m.shape[1] for m in mean_maps.values()) > 1 else 1.7  # one query token: a strip per head
    fig, axes = plt.subplots(
        heads, len(keys), figsize=(4.6 * len(keys) + 1.0, row * heads + 0.6), squeeze=False, layout="constrained"
    )
    for col, key in enumerate(keys):
        maps = mean_maps[key]
        query_stream, _, key_stream = _block_direction(key).partition("_to_")
        vmax = float(maps.max())
        image = None
        for h in range(heads):
            ax = axes[h, col]
            if h >= maps.shape[0]:
                ax.set_axis_off()
                continue
            image = ax.imshow(maps[h], aspect="auto", cmap="viridis", vmin=0.0, vmax=vmax, interpolation="nearest")
            ax.set_title(f"{_block_title(key)}, head {h + 1}", fontsize=9, color=DIRECTION_COLORS.get(_block_direction(key), "black"))
            ax.set_ylabel(f"query token ({query_stream})", fontsize=8)
            ax.set_xlabel(f"key token ({key_stream})", fontsize=8)
            for axis, count in ((ax.xaxis, maps.shape[2]), (ax.yaxis, maps.shape[1])):
                # token indices: every one while they fit, never a fractional tick (one query token: just 0)
                axis.set_major_locator(FixedLocator(range(count)) if count <= 16 else MaxNLocator(integer=True))
        if image is not None:
            fig.colorbar(image, ax=axes[:, col].tolist(), shrink=0.5, aspect=30,
                         label=f"attention weight (uniform = 1/{maps.shape[-1]})")
    fig.suptitle(f"Mean attention per head over {n_samples} sample(s)", fontsize=12)
    return save(fig, path)


def plot_attention_entropy(blocks: Mapping[str, Mapping[str, Any]], n_samples: int, path: str | Path) -> Path:
    """Mean attention entropy per head, per block, with log(k) (uniform attention) as reference."""
    keys = list(blocks)
    heads = max(len(b["entropy_per_head"]) for b in blocks.values())
    x = np.arange(heads)
    width = 0.8 / len(keys)
    fig, ax = plt.subplots(figsize=(max(7.5, 1.6 * heads + 4.5), 4.5))
    for i, key in enumerate(keys):
        values = np.asarray(blocks[key]["entropy_per_head"], dtype="float64")
        color = DIRECTION_COLORS.get(_block_direction(key), OVERALL_COLOR)
        level = int(key.rpartition("_")[2])
        offset = (i - (len(keys) - 1) / 2) * width
        bars = ax.bar(
            x[: len(values)] + offset, values, width, color=color, alpha=1.0 / (1 + 0.5 * level),
            edgecolor="black", lw=0.5, label=_block_title(key),
        )
        _bar_labels(ax, bars, values)
    key_counts = sorted({int(b["key_tokens"]) for b in blocks.values()})
    for j, k in enumerate(key_counts):
        ax.axhline(
            math.log(k), color="black", ls=("--", ":", "-.")[j % 3], lw=1.2,
            label=f"uniform attention over {k} keys: log({k}) = {math.log(k):.2f}",
        )
    ax.set_xticks(x, [f"head {h + 1}" for h in range(heads)])
    ax.set_xlabel("Attention head")
    ax.set_ylabel("Mean entropy per query (nats)")
    ax.set_ylim(0, max(math.log(max(key_counts)), 1e-3) * 1.15)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title(f"Attention entropy per head over {n_samples} sample(s)\n0 = all weight on one key, log(k) = uniform", fontsize=11)
    return save(fig, path)
