"""Figures and the console table of a cross-validation summary."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from utils import constants as C
from utils.cv.summary import TRAIT_NAMES
from utils.io import save_figure

logger = logging.getLogger(__name__)

_LABELS = {**{t: t.capitalize() for t in C.TRAITS}, "mean": "Mean"}


def _interval_points(ax: Any, series: dict[str, list[tuple[float, float, float]]], title: str, ylabel: str) -> None:
    """One marker with an error bar per (series, trait), series side by side within a trait."""
    x = np.arange(len(TRAIT_NAMES))
    width = 0.8 / max(1, len(series))
    for i, (name, points) in enumerate(series.items()):
        mean = np.array([p[0] for p in points], dtype=float)
        low = np.array([p[1] for p in points], dtype=float)
        high = np.array([p[2] for p in points], dtype=float)
        err = np.vstack([mean - low, high - mean])
        err = np.where(np.isfinite(err), err, 0.0)
        offset = (i - (len(series) - 1) / 2) * width
        ax.errorbar(x + offset, mean, yerr=err, fmt="o", capsize=3, markersize=5, label=name)
    ax.axhline(0.0, color="0.4", linewidth=0.8, linestyle="--")
    ax.axvline(len(C.TRAITS) - 0.5, color="0.8", linewidth=0.8)
    ax.set_xticks(x, [_LABELS[t] for t in TRAIT_NAMES], fontsize=9)
    ax.set_title(title)
    ax.set_xlabel("trait")
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)  # outside: no bar hidden


def _subtitle(summary: dict[str, Any]) -> str:
    p = summary["protocol"]
    return f"{p['folds']} folds ({p['fold_splitter']}), {len(p['seeds'])} seed(s), N={p['n']}"


def write_figures(summary: dict[str, Any], folder: Path) -> list[Path]:
    """Per-trait R² with intervals for every variant; paired R² differences against the reference."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    variants = summary["variants"]
    series = {
        v: [(m["mean"], *m["ci95"]) for m in (variants[v][t]["r2"] for t in TRAIT_NAMES)] for v in variants
    }
    fig, ax = plt.subplots(figsize=(11, 4.8))
    _interval_points(ax, series, f"Test-fold R² per trait, mean and 95% t interval over folds\n{_subtitle(summary)}", "R²")
    path = folder / C.CV_R2_FIGURE
    save_figure(fig, path)
    plt.close(fig)
    written.append(path)

    comp = summary["comparisons"]
    if comp["variants"]:
        diffs = {
            f"{v} − {comp['reference']}": [
                (d["mean_difference"], *d["ci95"]) for d in (comp["variants"][v][t]["r2"] for t in TRAIT_NAMES)
            ]
            for v in comp["variants"]
        }
        fig, ax = plt.subplots(figsize=(11, 4.8))
        _interval_points(
            ax, diffs,
            f"Paired R² difference against {comp['reference']}, 95% Nadeau-Bengio corrected interval\n"
            f"{_subtitle(summary)}; an interval crossing 0 is within noise",
            "R² difference",
        )
        path = folder / C.CV_DIFFERENCE_FIGURE
        save_figure(fig, path)
        plt.close(fig)
        written.append(path)
    return written


def _cell(stat: dict[str, Any], key: str = "mean") -> str:
    value, (low, high) = stat[key], stat["ci95"]
    if value is None or not np.isfinite(value):
        return "n/a"
    if low is None or not np.isfinite(low):
        return f"{value:+.3f}"
    return f"{value:+.3f} [{low:+.3f}, {high:+.3f}]"


def format_table(summary: dict[str, Any]) -> str:
    """The one-screen console summary: headline metrics per variant, then R² per trait."""
    p, variants, comp = summary["protocol"], summary["variants"], summary["comparisons"]
    leak = summary["leakage"]
    width = max(len("variant"), *(len(v) for v in variants)) + 2
    lines = [
        "",
        f"Cross-validation: {_subtitle(summary)}; "
        + (f"{p['n_groups']} groups" if p["groups_known"] else "no groups (clips assumed independent)"),
    ]
    if leak["groups_known"]:
        lines.append(
            f"Test clips sharing a group with their training folds: {leak['test_clips_sharing_a_group_with_train']} "
            f"of {leak['test_clips']}"
        )
    lines.append("Mean over traits; mean over folds [95% t interval]:")
    lines.append(f"  {'variant'.ljust(width)}{'R²':<26s}{'CCC':<26s}{'accuracy':<26s}Δ R² vs {comp['reference']} (NB-corrected)")
    for v in variants:
        m = variants[v]["mean"]
        diff = comp["variants"].get(v, {}).get("mean", {}).get("r2")
        dcell = "reference" if diff is None else _cell(diff, "mean_difference") + (
            "  within noise" if diff.get("within_noise") else ""
        )
        lines.append(f"  {v.ljust(width)}{_cell(m['r2']):<26s}{_cell(m['ccc']):<26s}{_cell(m['accuracy']):<26s}{dcell}")
    lines.append("R² per trait (mean over folds):")
    lines.append("  " + "variant".ljust(width) + "".join(f"{C.TRAIT_ABBREVIATIONS[i]:>9s}" for i in range(C.NUM_TRAITS)))
    for v in variants:
        lines.append("  " + v.ljust(width) + "".join(f"{variants[v][t]['r2']['mean']:>+9.3f}" for t in C.TRAITS))
    return "\n".join(lines)
