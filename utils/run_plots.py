"""Figures of the Phase 4.3 run logs: learning rate, epoch time, batch loss, attention, dashboard.

:func:`plot_run_logs` reads the files :mod:`utils.run_logging` writes beside
the training history and draws one figure per aspect of the run, plus a
one-page dashboard. A figure whose logs are missing (an older run, a fusion
mode without attention, ``--batch_log_frequency 0``) is skipped, never an
error; the function returns the paths it wrote.

Colors come from :mod:`utils.plotting` (one palette for the whole toolkit).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, never a window

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from utils import constants as C  # noqa: E402
from utils.errors import InputError  # noqa: E402
from utils.history import History, load_history  # noqa: E402
from utils.io import save_figure  # noqa: E402
from utils.plotting import (  # noqa: E402
    DIRECTION_COLORS,
    DIRECTION_LABELS,
    DPI,
    LR_COLOR,
    TRAIN_COLOR,
    TRAIT_COLORS,
    VAL_COLOR,
)
from utils.run_logging import (  # noqa: E402
    ATTENTION_ENTROPY_FILE,
    ATTENTION_PLOT_FILE,
    BATCH_LOG_FILE,
    BATCH_LOSS_PLOT_FILE,
    CAUSE_OTHER,
    CAUSE_PLATEAU,
    CAUSE_SCHEDULE,
    DASHBOARD_PLOT_FILE,
    EPOCH_LOG_FILE,
    EPOCH_TIME_PLOT_FILE,
    LR_CHANGES_FILE,
    LR_PLOT_FILE,
    MANIFEST_FILE,
    TIMING_FILE,
    read_jsonl,
)

logger = logging.getLogger(__name__)

CAUSE_COLORS: dict[str, str] = {CAUSE_PLATEAU: "#D55E00", CAUSE_SCHEDULE: LR_COLOR, CAUSE_OTHER: "#7F7F7F"}
CAUSE_LABELS: dict[str, str] = {
    CAUSE_PLATEAU: "plateau cut (ReduceLROnPlateau)",
    CAUSE_SCHEDULE: "cosine schedule",
    CAUSE_OTHER: "other change",
}
STACK_COLORS = {"train": "#0072B2", "validation": "#E69F00", "attention": "#009E73", "other": "#BBBBBB"}
MAX_ANNOTATED_CHANGES = 8  # more learning-rate changes than this get markers, not text


@dataclasses.dataclass
class RunLogs:
    """Everything one run folder holds; a missing or unreadable file is None / empty."""

    folder: Path
    history: History | None = None
    epochs: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    batches: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    lr_changes: list[dict[str, Any]] | None = None
    attention: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    manifest: dict[str, Any] | None = None
    timing: dict[str, Any] | None = None
    summary: dict[str, Any] | None = None

    @property
    def epoch_numbers(self) -> list[float]:
        if self.history and "epoch" in self.history:
            return list(self.history["epoch"])
        return [float(r["epoch"]) for r in self.epochs]

    def series(self, key: str) -> list[float] | None:
        """Per-epoch values of ``key`` from the history, else the epoch log."""
        if self.history and key in self.history:
            return list(self.history[key])
        if self.epochs and all(key in r for r in self.epochs):
            return [math.nan if r[key] is None else float(r[key]) for r in self.epochs]
        return None


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        logger.warning("skipping unreadable %s: %s", path, exc)
        return None


def _read_lines(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    try:
        return read_jsonl(path)
    except (OSError, ValueError) as exc:
        logger.warning("skipping unreadable %s: %s", path, exc)
        return []


def load_run_logs(history_path: str | Path) -> RunLogs:
    """Read the history and every run log found in its folder (``history_path`` may be the folder)."""
    p = Path(history_path)
    folder = p if p.is_dir() else p.parent
    logs = RunLogs(folder=folder)
    candidates = [p] if p.is_file() else [folder / C.HISTORY_JSON_FILE, folder / C.HISTORY_FILE]
    for candidate in candidates:
        if candidate.is_file():
            try:
                logs.history = load_history(candidate)
                break
            except InputError as exc:
                logger.warning("skipping the history %s: %s", candidate, exc)
    logs.epochs = _read_lines(folder / EPOCH_LOG_FILE)
    logs.batches = _read_lines(folder / BATCH_LOG_FILE)
    logs.attention = _read_lines(folder / ATTENTION_ENTROPY_FILE)
    changes = _read_json(folder / LR_CHANGES_FILE)
    logs.lr_changes = changes.get("changes") if isinstance(changes, dict) else None
    logs.manifest = _read_json(folder / MANIFEST_FILE)
    logs.timing = _read_json(folder / TIMING_FILE)
    logs.summary = _read_json(folder / C.TRAINING_SUMMARY_FILE)
    return logs


# ---------------------------------------------------------------------------
# Panels (each draws into one axes and returns False when it has no data)
# ---------------------------------------------------------------------------


def _no_data(ax: Any, title: str, message: str) -> None:
    ax.set_title(title)
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, fontsize=10, color="#555555")
    ax.set_xticks([])
    ax.set_yticks([])


def _epoch_axis(ax: Any) -> None:
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(True, alpha=0.3)


def _lr_segments(logs: RunLogs) -> tuple[list[float], list[float], list[float], list[float]] | None:
    """The learning rate as a step line: epoch E runs from x = E - 0.5 to E + 0.5.

    Returns the line's x and y (a rate that changes between epochs jumps
    vertically at the boundary, never a ramp across it; NaN breaks the line
    at a gap in the epochs) and one point per epoch at x = E (the rate the
    epoch ran at; the middle of the epoch for a rate that moves within it).
    """
    rows: list[tuple[float, float, float]] = []  # (epoch, rate at its start, rate at its end)
    if logs.epochs and all("learning_rate" in r for r in logs.epochs):
        for r in logs.epochs:
            end = float(r["learning_rate"])
            start = r.get("learning_rate_start")
            rows.append((float(r["epoch"]), end if start is None else float(start), end))
    else:
        lr = logs.series("learning_rate")
        if lr is None:
            return None
        rows = [(float(e), float(v), float(v)) for e, v in zip(logs.epoch_numbers, lr)]
    xs: list[float] = []
    ys: list[float] = []
    for i, (epoch, start, end) in enumerate(rows):
        if i and epoch != rows[i - 1][0] + 1:
            xs.append(math.nan)
            ys.append(math.nan)
        xs += [epoch - 0.5, epoch + 0.5]
        ys += [start, end]
    mid = [math.sqrt(a * b) if a > 0 and b > 0 else (a + b) / 2 for _, a, b in rows]
    return xs, ys, [e for e, _, _ in rows], mid


def _lr_ticks(ax: Any, rates: Sequence[float]) -> None:
    """Log axis with a labelled tick at every rate used (a few), else at the first and final rate too."""
    from matplotlib.ticker import NullLocator

    finite = sorted({float(v) for v in rates if v and v > 0 and math.isfinite(v)})
    if not finite:
        return
    lo, hi = finite[0], finite[-1]
    pad = max(math.log10(hi / lo) * 0.08, 0.06)
    ax.set_ylim(lo / 10**pad, hi * 10**pad)
    if len(finite) <= 8:
        ticks = finite
    else:  # decades inside the range, plus the first and the final rate
        ends = [float(rates[0]), float(rates[-1])]
        decades = [10.0**k for k in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)]
        inside = [d for d in decades if lo <= d <= hi and all(abs(math.log10(d / e)) > 0.15 for e in ends)]
        ticks = sorted(ends + inside)
    ax.set_yticks(ticks, [f"{v:.3g}" for v in ticks])
    ax.yaxis.set_minor_locator(NullLocator())


def _draw_lr(ax: Any, logs: RunLogs, annotate: bool = True) -> bool:
    line = _lr_segments(logs)
    if line is None:
        return False
    xs, ys, epochs, mid = line
    ax.plot(xs, ys, "-", color=LR_COLOR, lw=1.8, label="learning rate (each epoch, start to end)")
    ax.plot(epochs, mid, "o", color=LR_COLOR, ms=4)
    steps = _steps_per_epoch(logs)
    batch = [b for b in logs.batches if b.get("learning_rate") is not None and b["epoch"] in steps]
    if batch:
        bx = [b["epoch"] - 0.5 + b["step"] / steps[b["epoch"]] for b in batch]
        ax.plot(bx, [b["learning_rate"] for b in batch], ".", color=LR_COLOR, ms=3, alpha=0.5,
                label="learning rate at logged steps")
    changes = logs.lr_changes or []
    last = max(epochs)
    firsts: dict[str, list[int]] = {}
    for change in changes:
        firsts.setdefault(change.get("cause", CAUSE_OTHER), []).append(_first_epoch_at_new_rate(change))
    for cause, first in firsts.items():
        color = CAUSE_COLORS.get(cause, CAUSE_COLORS[CAUSE_OTHER])
        used = [str(e) for e in first if e <= last]
        label = CAUSE_LABELS.get(cause, cause) + (f", new rate from epoch {', '.join(used)}" if used else "")
        if len(used) < len(first):
            label += ("; " if used else ", ") + "one after the last epoch (never used)"
        for i, e in enumerate(first):
            ax.axvline(e - 0.5, color=color, ls=":", lw=1.2, label=label if i == 0 else None)
    if annotate and len(changes) <= MAX_ANNOTATED_CHANGES:
        for change in changes:
            if change["old"] and change["new"] and _first_epoch_at_new_rate(change) <= last:
                color = CAUSE_COLORS.get(change.get("cause", CAUSE_OTHER), CAUSE_COLORS[CAUSE_OTHER])
                x = _first_epoch_at_new_rate(change) - 0.5
                right = x > (min(epochs) + last) / 2  # in the right half the text goes left of the cut, inside
                ax.annotate(
                    f"×{change['new'] / change['old']:.2g}",
                    xy=(x, math.sqrt(change["old"] * change["new"])),
                    xytext=(-4 if right else 4, 0), textcoords="offset points", va="center",
                    ha="right" if right else "left", fontsize=8, color=color,
                )
    if any(y > 0 for y in ys if math.isfinite(y)):
        ax.set_yscale("log")
        _lr_ticks(ax, [y for y in ys if math.isfinite(y)])
    finite_x = [x for x in xs if math.isfinite(x)]
    ax.set_xlim(min(finite_x) - 0.3, max(finite_x) + 0.3)
    ax.set_xlabel("Epoch")
    ax.set_ylabel("Learning rate")
    _epoch_axis(ax)
    if len(epochs) <= 20:
        ax.set_xticks([int(e) for e in epochs])
    if annotate:  # the figure of its own: the legend below the plot, clear of the line
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=1, frameon=False)
    else:  # a falling rate leaves the lower left empty
        ax.legend(fontsize=8, loc="lower left")
    return True


def _first_epoch_at_new_rate(change: dict[str, Any]) -> int:
    """The epoch that first ran at a change's new rate (``effective_epoch``; else the one after ``epoch``)."""
    effective = change.get("effective_epoch")
    return int(effective) if effective is not None else int(change["epoch"]) + 1


def _steps_per_epoch(logs: RunLogs) -> dict[int, int]:
    """Steps each epoch ran (epoch log; else the largest logged step)."""
    if logs.epochs and all("steps" in r for r in logs.epochs):
        return {int(r["epoch"]): int(r["steps"]) for r in logs.epochs if r["steps"]}
    out: dict[int, int] = {}
    for b in logs.batches:
        out[int(b["epoch"])] = max(out.get(int(b["epoch"]), 0), int(b["step"]))
    return out


def _draw_epoch_time(ax: Any, logs: RunLogs, legend: bool = True) -> bool:
    if not logs.epochs or not all("epoch_seconds" in r for r in logs.epochs):
        return False
    epochs = np.array([r["epoch"] for r in logs.epochs], dtype=float)
    total = np.array([r["epoch_seconds"] for r in logs.epochs], dtype=float)
    parts = {
        "train": np.array([r.get("train_seconds") or 0.0 for r in logs.epochs], dtype=float),
        "validation": np.array([r.get("validation_seconds") or 0.0 for r in logs.epochs], dtype=float),
        "attention": np.array([r.get("attention_seconds") or 0.0 for r in logs.epochs], dtype=float),
    }
    parts["other"] = np.maximum(total - sum(parts.values()), 0.0)
    labels = {
        "train": "training steps",
        "validation": "validation",
        "attention": "attention probe",
        "other": "other (epoch start, logging)",
    }
    bottom = np.zeros_like(total)
    handles = []
    for name, values in parts.items():
        if name == "attention" and not values.any():
            continue
        handles.append(ax.bar(epochs, values, bottom=bottom, color=STACK_COLORS[name], width=0.7, label=labels[name]))
        bottom += values
    ax.set_xlabel("Epoch")
    ax.set_ylabel("Wall time (s)")
    _epoch_axis(ax)
    rest = total[1:]
    if rest.size and total[0] > 3 * np.nanmax(rest):
        # epoch 1 (tracing) would flatten every other bar: clip it and print its value
        top = 2.0 * float(np.nanmax(rest))
        ax.set_ylim(0, top)
        ax.text(epochs[0], top * 0.97, f"{total[0]:.1f} s\n(tracing)", ha="center", va="top", fontsize=7,
                bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8, "pad": 1})
    rate = [r.get("samples_per_second") for r in logs.epochs]
    if any(v is not None for v in rate):
        twin = ax.twinx()
        (line,) = twin.plot(
            epochs, [math.nan if v is None else v for v in rate], "o-", color="#1A1A1A", ms=4,
            label="training samples / s",
        )
        twin.set_ylabel("Training samples per second")
        twin.set_ylim(bottom=0)
        handles.append(line)
    if legend:  # below the axes: the bars and the throughput line fill the plot area
        ax.legend(handles=handles, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=3, frameon=False)
    return True


def _draw_attention(ax: Any, logs: RunLogs, block: str | None = None) -> bool:
    """Per head of one block (``"<direction>_<level>"``) or per direction mean (None), with log k.

    The axis spans the values (not 0 to log k), so heads a few hundredths of a
    nat apart stay apart; the uniform level log k is drawn when it is near
    the values and named in the legend otherwise. Heads are numbered from 1.
    """
    if not logs.attention:
        return False
    epochs = [r["epoch"] for r in logs.attention]
    drawn: list[float] = []
    uniform: list[tuple[float, str, str]] = []  # (log k, label, color)
    if block is None:
        directions = sorted({d for r in logs.attention for d in r.get("directions", {})})
        if not directions:
            return False
        for d in directions:
            color = DIRECTION_COLORS.get(d, "#333333")
            values = [r["directions"].get(d, {}).get("mean", math.nan) for r in logs.attention]
            ax.plot(epochs, values, "o-", color=color, ms=4, label=DIRECTION_LABELS.get(d, d))
            drawn += values
            top = logs.attention[-1]["directions"][d]["max_entropy"]
            uniform.append((top, f"uniform ({DIRECTION_LABELS.get(d, d)}): log k = {top:.2f}", color))
    else:
        info = logs.attention[-1]["blocks"][block]
        heads = len(info["per_head"])
        if not heads:
            return False
        cmap = plt.get_cmap("viridis")
        for h in range(heads):
            values = [r["blocks"][block]["per_head"][h] if block in r["blocks"] else math.nan for r in logs.attention]
            ax.plot(epochs, values, "o-", ms=3, lw=1.2, color=cmap((h + 0.5) / heads), label=f"head {h + 1}")
            drawn += values
        mean = [r["blocks"][block]["mean"] if block in r["blocks"] else math.nan for r in logs.attention]
        color = DIRECTION_COLORS.get(info["direction"], "#333333")
        ax.plot(epochs, mean, "-", lw=2.5, color=color, alpha=0.6, label="mean of heads")
        top = info["max_entropy"]
        uniform.append((top, f"uniform: log k = {top:.2f} (k = {info['key_tokens']})", "#1A1A1A"))
    _entropy_axis(ax, drawn, uniform)
    ax.set_xlabel("Epoch")
    ax.set_ylabel("Attention entropy (nats)")
    _epoch_axis(ax)
    ax.legend(fontsize=7, loc="lower left", ncol=2)
    return True


def _entropy_axis(ax: Any, values: Sequence[float], uniform: Sequence[tuple[float, str, str]]) -> None:
    """Y range around ``values``; each log k line drawn if it is within twice their spread, else named."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return
    lo, hi = min(finite), max(finite)
    spread = max(hi - lo, 0.02)
    for top, label, color in uniform:
        if top - hi <= 2 * spread:
            ax.axhline(top, color=color, ls="--", lw=1, label=label)
            hi = max(hi, top)
        else:
            ax.plot([], [], " ", label=f"{label}, above the plot")
    pad = 0.12 * max(hi - lo, 0.02)
    ax.set_ylim(lo - 0.6 * pad - 0.25 * (hi - lo), hi + pad)  # room at the bottom for the legend


def _best_epoch(logs: RunLogs) -> tuple[int | None, dict[str, float]]:
    val = logs.series("val_loss")
    epochs = logs.epoch_numbers
    kept_start = bool(logs.summary) and logs.summary.get("best_epoch") == 0  # no epoch beat the model as built
    if val and np.isfinite(val).any() and not kept_start:
        i = int(np.nanargmin(np.asarray(val, dtype=float)))
        best = {k: v[i] for k, v in (logs.history or {}).items() if k.startswith("val_")}
        if not best and logs.epochs:
            best = {k: v for k, v in logs.epochs[i].items() if k.startswith("val_") and v is not None}
        return int(epochs[i]), best
    if logs.summary:
        recorded = logs.summary.get("best_validation", {})  # val_ keys; unprefixed in runs before the rename
        best = {k if k.startswith("val_") else f"val_{k}": v for k, v in recorded.items()}
        return logs.summary.get("best_epoch"), best
    return None, {}


def _draw_loss(ax: Any, logs: RunLogs) -> bool:
    loss, val = logs.series("loss"), logs.series("val_loss")
    if loss is None and val is None:
        return False
    epochs = logs.epoch_numbers
    if loss is not None:
        ax.plot(epochs, loss, "o--", color=TRAIN_COLOR, ms=3, label="training")
    if val is not None:
        ax.plot(epochs, val, "o-", color=VAL_COLOR, ms=3, label="validation")
    best, _ = _best_epoch(logs)
    if best is not None:
        ax.axvline(best, color="#C0392B", ls=":", label=f"best epoch {best}")
    ax.set_xlabel("Epoch")
    ax.set_ylabel("Loss (MSE)")
    _epoch_axis(ax)
    ax.legend(fontsize=8)
    return True


def _draw_r2(ax: Any, logs: RunLogs) -> bool:
    drawn = False
    epochs = logs.epoch_numbers
    for trait in C.TRAITS:
        values = logs.series(f"val_{C.per_trait_metric_name(trait, 'r_squared')}")
        if values is not None:
            ax.plot(epochs, values, "-", color=TRAIT_COLORS[trait], lw=1.5, label=trait)
            drawn = True
    overall = logs.series("val_r_squared")
    if overall is not None:
        ax.plot(epochs, overall, "-", color="#1A1A1A", lw=2.5, label="mean of traits")
        drawn = True
    if not drawn:
        return False
    ax.axhline(0.0, color="#999999", lw=0.8, ls="--")
    ax.set_xlabel("Epoch")
    ax.set_ylabel("Validation R²")
    _epoch_axis(ax)
    ax.legend(fontsize=7, ncol=2)
    return True


def manifest_text(logs: RunLogs) -> str:
    """The dashboard's text box: date, commit, data, parameters, best epoch, timing."""
    m = logs.manifest or {}
    lines: list[str] = []
    if m:
        started = str(m.get("started_at", "?")).replace("T", " ")[:19]
        seconds = m.get("logged_seconds", m.get("seconds"))  # "seconds" in runs before the rename
        lines.append(f"Run: {started} UTC, {m.get('status', '?')}" + (f", {seconds:.1f} s" if seconds else ""))
        git = m.get("git")
        if git:
            dirty = " (uncommitted changes)" if git.get("dirty") else ""
            lines.append(f"Commit: {str(git.get('commit'))[:12]} on {git.get('branch')}{dirty}")
        else:
            lines.append("Commit: not a git checkout")
        host, versions = m.get("host", {}), m.get("versions", {})
        devices = ", ".join(str(d.get("name", "?")).replace("/device:", "") for d in m.get("devices", []))
        lines.append(
            f"Host: {host.get('hostname', '?')}; TF {versions.get('tensorflow', '?')}, "
            f"Keras {versions.get('keras', '?')}; {devices or '?'}"
        )
        for role, info in m.get("inputs", {}).items():
            shape = "×".join(str(n) for n in info.get("shape", []))
            lines.append(f"{role}: {shape} {info.get('dtype', '')}, sha256 {str(info.get('sha256'))[:10]}…")
        data = m.get("data", {})
        model = m.get("model", {})
        params = model.get("parameters", {})
        lines.append(f"Split: {data.get('n_train', '?')} train / {data.get('n_val', '?')} validation")
        lines.append(
            f"Model: {model.get('fusion', '?')}, {params.get('trainable', 0):,} trainable / "
            f"{params.get('frozen', 0):,} frozen parameters"
        )
        cfg = m.get("config", {})
        if cfg:
            lr = cfg.get("learning_rate")
            lr_text = f"{lr:.2g}" if isinstance(lr, (int, float)) else "?"
            lines.append(
                f"Settings: batch {cfg.get('batch_size')}, lr {lr_text} ({cfg.get('schedule')}), "
                f"{cfg.get('epochs')} epochs max, seed {cfg.get('seed')}"
            )
    else:
        lines.append("No run manifest (run_manifest.json) in this folder")
    best, values = _best_epoch(logs)
    if best is not None:
        loss, r2 = values.get("val_loss"), values.get("val_r_squared")
        detail = ", ".join(
            part for part in (
                f"val loss {loss:.4g}" if loss is not None else "",
                f"val R² {r2:.3f}" if r2 is not None else "",
            ) if part
        )
        lines.append(f"Best epoch: {best} of {len(logs.epoch_numbers)}" + (f" ({detail})" if detail else ""))
    t = logs.timing or {}
    if t.get("epoch_seconds", {}).get("median") is not None:
        rate = (t.get("samples_per_second") or {}).get("median")
        lines.append(
            f"Timing: median epoch {t['epoch_seconds']['median']:.2f} s"
            + (f", {rate:.0f} samples/s" if rate else "")
            + (f", step p95 {t['step_seconds']['p95'] * 1000:.1f} ms" if t.get("step_seconds", {}).get("p95") else "")
        )
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------


def _save(fig: Any, path: Path) -> Path:
    try:
        save_figure(fig, path, dpi=DPI)
    finally:
        plt.close(fig)
    return path


def _subtitle(logs: RunLogs) -> str:
    m = logs.manifest or {}
    model = m.get("model", {}).get("name")
    started = str(m.get("started_at", ""))[:10]
    return " — ".join(p for p in (model, started) if p)


def plot_learning_rate(logs: RunLogs, path: Path) -> Path | None:
    fig, ax = plt.subplots(figsize=(8, 4.5))
    if not _draw_lr(ax, logs):
        plt.close(fig)
        return None
    ax.set_title("Learning rate over training, changes marked with their cause\n" + _subtitle(logs))
    fig.tight_layout()
    return _save(fig, path)


def plot_epoch_time(logs: RunLogs, path: Path) -> Path | None:
    fig, ax = plt.subplots(figsize=(8, 4.5))
    if not _draw_epoch_time(ax, logs):
        plt.close(fig)
        return None
    note = "epoch 1 includes tracing the train function\n" if len(logs.epochs) > 1 else ""
    ax.set_title(f"Epoch wall time by phase and training throughput\n{note}" + _subtitle(logs), pad=10)
    fig.tight_layout()
    return _save(fig, path)


def plot_batch_loss(logs: RunLogs, path: Path) -> Path | None:
    batches = [b for b in logs.batches if b.get("loss") is not None]
    if not batches:
        return None
    fig, (ax, ax_trait) = plt.subplots(2, 1, figsize=(9, 7), sharex=True, height_ratios=(3, 2))
    steps = [b["global_step"] for b in batches]
    ax.plot(steps, [b["loss"] for b in batches], "-", color=TRAIN_COLOR, lw=1.2, marker="." if len(steps) < 200 else None,
            label="training loss (running mean within the epoch)")
    # epoch boundaries at the last step of each epoch
    last_step: dict[int, int] = {}
    for b in logs.batches:
        last_step[int(b["epoch"])] = max(last_step.get(int(b["epoch"]), 0), int(b["global_step"]))
    ends = logs.epochs and {int(r["epoch"]): r for r in logs.epochs}
    boundaries = sorted(last_step.items())
    if ends:
        cumulative = 0
        boundaries = []
        for e in sorted(ends):
            cumulative += int(ends[e].get("steps") or 0)
            boundaries.append((e, cumulative))
    val = logs.series("val_loss")
    val_points = []
    for i, (e, step) in enumerate(boundaries):
        for a in (ax, ax_trait):
            a.axvline(step + 0.5, color="#BBBBBB", ls=":", lw=1, label="epoch boundary" if (i == 0 and a is ax) else None)
        if val is not None and e - 1 < len(val):
            val_points.append((step, val[e - 1]))
    if val_points:
        ax.plot(*zip(*val_points), "s", color=VAL_COLOR, ms=5, label="validation loss (epoch end)")
    ax.set_ylabel("Loss (MSE)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    drawn = False
    for trait in C.TRAITS:
        key = C.per_trait_metric_name(trait, "mae")
        values = [b.get(key) for b in batches]
        if any(v is not None for v in values):
            ax_trait.plot(steps, [math.nan if v is None else v for v in values], "-", lw=1.2,
                          color=TRAIT_COLORS[trait], label=trait)
            drawn = True
    if drawn:
        ax_trait.legend(fontsize=7, ncol=3)
    ax_trait.set_ylabel("Training MAE per trait\n(running mean)")
    ax_trait.set_xlabel("Global training step")
    ax_trait.grid(True, alpha=0.3)
    ax_trait.xaxis.set_major_locator(MaxNLocator(integer=True))
    note = batch_spacing_note(logs, steps)
    ax.set_title(f"Training loss at the logged steps\n{note}\n" + _subtitle(logs), fontsize=11)
    fig.tight_layout()
    return _save(fig, path)


def batch_spacing_note(logs: RunLogs, steps: Sequence[int]) -> str:
    """Where the logged points really are: their spacing, and why when it is not the requested one."""
    shown = ", ".join(str(s) for s in steps[:4]) + (", …" if len(steps) > 4 else "")
    gaps = sorted({int(b) - int(a) for a, b in zip(steps, steps[1:])})
    if not gaps:
        return f"{len(steps)} logged step ({shown})"
    spacing = f"every {gaps[0]} steps" if len(gaps) == 1 else f"{gaps[0]} to {gaps[-1]} steps apart"
    text = f"{len(steps)} logged steps ({shown}), {spacing}"
    cfg = (logs.manifest or {}).get("config", {})
    every, per_call = cfg.get("batch_log_frequency"), cfg.get("steps_per_execution")
    if every and per_call and int(per_call) > 1 and len(gaps) > 1:
        text += (
            f":\nasked for every {every} steps, but Keras reports only after each call of {per_call} steps\n"
            "(and at the epoch's end), so each point is the first report past a requested step"
        )
    return text


def plot_attention_entropy(logs: RunLogs, path: Path) -> Path | None:
    if not logs.attention:
        return None
    last = logs.attention[-1]["blocks"]
    directions = [d for d in C.ATTENTION_DIRECTIONS if any(b["direction"] == d for b in last.values())]
    levels = sorted({int(b["level"]) for b in last.values()})
    if not directions:
        return None
    fig, axes = plt.subplots(
        len(levels), len(directions), figsize=(6.5 * len(directions), 4.6 * len(levels)), squeeze=False
    )
    for row, level in enumerate(levels):
        for col, direction in enumerate(directions):
            ax = axes[row, col]
            block = f"{direction}_{level}"
            label = DIRECTION_LABELS.get(direction, direction)
            title = f"{label}, block {level + 1}" if len(levels) > 1 else f"{label} (queries → keys)"
            if block in last and _draw_attention(ax, logs, block):
                ax.set_title(title)
            else:
                _no_data(ax, title, "not logged")
    n = logs.attention[-1].get("n_samples", "?")
    fig.suptitle(
        f"Attention entropy per head on {n} fixed validation samples\n"
        "(0 = collapse onto one key, log k = uniform attention; the axis spans the values, not 0 to log k)\n"
        + _subtitle(logs)
    )
    fig.tight_layout()
    return _save(fig, path)


def plot_dashboard(logs: RunLogs, path: Path) -> Path | None:
    if logs.history is None and not logs.epochs:
        return None
    fig, axes = plt.subplots(3, 2, figsize=(15, 13.5))
    panels: list[tuple[Any, str, Callable[[Any], bool], str]] = [
        (axes[0, 0], "Loss", lambda a: _draw_loss(a, logs), "no loss in the history"),
        (axes[0, 1], "Validation R² per trait", lambda a: _draw_r2(a, logs), "no per-trait R² logged"),
        (axes[1, 0], "Learning rate", lambda a: _draw_lr(a, logs, annotate=False), "no learning rate logged"),
        (axes[1, 1], "Epoch wall time and throughput", lambda a: _draw_epoch_time(a, logs, legend=True),
         "no epoch timing logged (older run)"),
        (axes[2, 0], "Attention entropy (mean of heads)", lambda a: _draw_attention(a, logs),
         "no attention entropy (fusion without attention, or an older run)"),
    ]
    for ax, title, draw, missing in panels:
        if draw(ax):
            ax.set_title(title)
        else:
            _no_data(ax, title, missing)
    box = axes[2, 1]
    box.set_axis_off()
    box.set_title("Run summary")
    box.text(0.0, 1.0, manifest_text(logs), va="top", ha="left", family="monospace", fontsize=8.5,
             transform=box.transAxes, wrap=True,
             bbox={"boxstyle": "round,pad=0.6", "facecolor": "#F4F4F4", "edgecolor": "#BBBBBB"})
    fig.suptitle("Training run dashboard" + (f" — {_subtitle(logs)}" if _subtitle(logs) else ""), fontsize=15)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    return _save(fig, path)


FIGURES: tuple[tuple[str, Callable[[RunLogs, Path], Path | None]], ...] = (
    (LR_PLOT_FILE, plot_learning_rate),
    (EPOCH_TIME_PLOT_FILE, plot_epoch_time),
    (BATCH_LOSS_PLOT_FILE, plot_batch_loss),
    (ATTENTION_PLOT_FILE, plot_attention_entropy),
    (DASHBOARD_PLOT_FILE, plot_dashboard),
)


def plot_run_logs(history_path: str | Path, output_dir: str | Path) -> list[Path]:
    """Draw the run-log figures of the run whose history is ``history_path``; return the written paths.

    The logs are looked up in the folder of ``history_path``. Figures whose
    logs are missing are skipped (logged at INFO); a malformed log skips its
    figure with a warning instead of failing the whole call.
    """
    logs = load_run_logs(history_path)
    out = Path(output_dir)
    written: list[Path] = []
    for name, draw in FIGURES:
        try:
            path = draw(logs, out / name)
        except (KeyError, ValueError, TypeError, IndexError) as exc:
            plt.close("all")
            logger.warning("skipping %s: the logs in %s are not in the expected format (%s)", name, logs.folder, exc)
            continue
        if path is None:
            logger.info("skipping %s: its logs are not in %s", name, logs.folder)
        else:
            written.append(path)
    return written


__all__ = ["plot_run_logs", "load_run_logs", "RunLogs", "manifest_text", "FIGURES"]

