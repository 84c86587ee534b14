"""Prediction analysis of a trained model: validate, predict in batches, compare, report.

:func:`run_analysis` is what ``scripts/analyze_model_predictions.py`` calls.
It works in two phases so that a bad input leaves nothing behind:

1. everything that can fail on the user's input happens first: the files are
   validated (:func:`utils.data.load_dataset`), the model is loaded and its
   input shapes are checked against the features, the split and the
   baseline are resolved, and the predictions and attention maps are
   computed;
2. only then is the output folder created and filled (metrics.json,
   predictions.csv/.npy and the figures of :mod:`utils.plotting`), every file
   atomically.

The metric math is :mod:`utils.metrics` (one implementation); this module
only feeds it.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from utils import constants as C
from utils.bootstrap import bootstrap_report
from utils.config import AnalysisConfig  # the settings (one source of the flags)
from utils.data import (
    Dataset,
    EpochBatches,
    label_means,
    load_dataset,
    load_labels,
    sha256_file,
)
from utils.errors import InputError
from utils.heldout import clips_sharing_training_groups, held_out_rows
from utils.ids import resolve_groups
from utils.io import save_npy, write_json, write_text
from utils.metrics import METRIC_NAMES, StreamingRegressionSums, baseline_predictions, regression_report

logger = logging.getLogger(__name__)

SPLITS = C.ANALYSIS_SPLITS
MODEL_SUFFIXES = C.MODEL_SUFFIXES
# Metrics where a smaller value is better; for the others larger is better.
LOWER_IS_BETTER: tuple[str, ...] = ("mae", "mse", "rmse")
METRICS_FILE = C.METRICS_FILE
PREDICTIONS_CSV = C.PREDICTIONS_CSV
PREDICTIONS_NPY = C.PREDICTIONS_NPY
PREDICTION_COLUMNS: tuple[str, ...] = (
    "index",
    *(f"{kind}_{trait}" for trait in C.TRAITS for kind in ("true", "pred")),
)


# ----------------------------------------------------------------- validation


def check_model_path(path: str | Path) -> Path:
    """Refuse a missing model file or a suffix Keras cannot load (before TensorFlow starts)."""
    p = Path(path)
    if not p.exists():
        raise InputError("model file not found (expected a model saved by train_personality_model.py)", str(p))
    if not p.is_file():
        raise InputError("expected a model file (.h5 or .keras), found a directory", str(p))
    if p.suffix.lower() not in MODEL_SUFFIXES:
        raise InputError(f"expected a model file ending in .h5 or .keras, found '{p.suffix or 'no'}' extension", str(p))
    return p


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:300]}" if text else type(exc).__name__


def load_trained_model(path: str | Path) -> Any:
    """Load a saved model for inference; anything unloadable becomes one InputError line."""
    p = check_model_path(path)
    import keras

    import models.cross_attention  # noqa: F401  (registers the custom layers)
    import utils.keras_metrics  # noqa: F401  (registers the custom metrics a compiled model refers to)
    try:
        # Inference only: the optimizer state and the compiled metrics are not needed.
        model = keras.models.load_model(p, compile=False)
    except Exception as exc:  # h5py, Keras and zipfile raise many types for a bad file
        raise InputError(
            f"expected a Keras model saved by train_personality_model.py, found a file that cannot be "
            f"loaded ({_one_line(exc)})",
            str(p),
        ) from None
    if not isinstance(model, keras.Model) or len(model.inputs) != 2:
        found = f"{len(model.inputs)} input(s)" if isinstance(model, keras.Model) else type(model).__name__
        raise InputError(f"expected a model with two inputs (static, dynamic features), found {found}", str(p))
    return model


def model_input_shapes(model: Any) -> dict[str, tuple[int | None, ...]]:
    """Per-sample input shapes of the model, by position (static first, as ``build_model`` makes it)."""
    return {
        stream: tuple(None if d is None else int(d) for d in tensor.shape[1:])
        for stream, tensor in zip(("static", "dynamic"), model.inputs)
    }


def check_feature_shapes(model: Any, data: Dataset, model_path: str) -> None:
    """The features must have the per-sample shapes the model was built for."""
    expected = model_input_shapes(model)
    for stream, found in (("static", data.static_shape), ("dynamic", data.dynamic_shape)):
        want = expected[stream]
        matches = len(want) == len(found) and all(w is None or w == f for w, f in zip(want, found))
        if not matches:
            path = data.paths[f"{stream}_features"]
            raise InputError(
                f"expected {stream} features of per-sample shape {want} (the input of the model "
                f"{model_path}), found {found} (array shape {(len(data), *found)})",
                path,
            )


def read_training_summary(model_path: str | Path) -> tuple[dict[str, Any] | None, Path]:
    """The ``training_summary.json`` beside the model, or None when there is none."""
    path = Path(model_path).parent / C.TRAINING_SUMMARY_FILE
    if not path.is_file():
        return None, path
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"expected a JSON training summary, found invalid JSON ({exc})", str(path)) from None
    if not isinstance(summary, dict):
        raise InputError(f"expected a JSON object, found {type(summary).__name__}", str(path))
    return summary, path


def select_indices(
    split: str, n: int, summary: dict[str, Any] | None, summary_path: Path, data: Dataset
) -> tuple[np.ndarray, dict[str, Any]]:
    """Rows to evaluate and a description of the choice for metrics.json (see :mod:`utils.heldout`).

    "These are the training files" is decided by content (SHA-256 and N
    against the training run's record), from any folder and for copied
    files; ``validation``/``train`` take the run's own row files.
    """
    if split not in SPLITS:
        raise InputError(f"expected --split to be one of {SPLITS}, found {split!r}")
    held = held_out_rows(split, data, summary, summary_path)
    return held.rows, held.info


def resolve_baseline(
    cfg: AnalysisConfig, summary: dict[str, Any] | None, summary_path: Path, eval_labels: np.ndarray
) -> tuple[np.ndarray, str]:
    """Per-trait means of the mean-predictor baseline and where they come from.

    In order: ``--train_labels`` when given (an explicit request), the
    ``train_label_means`` recorded in the training summary, else the mean of
    the evaluated labels (then the baseline's R² is 0 by construction).
    """
    if cfg.train_labels:
        labels = load_labels(cfg.train_labels)
        means = label_means(labels, np.arange(len(labels)))
        return means, f"--train_labels {cfg.train_labels} (mean of its {len(labels)} rows)"
    recorded = (summary or {}).get("train_label_means")
    if recorded is not None:
        if not isinstance(recorded, dict) or set(recorded) != set(C.TRAITS):
            raise InputError(
                f"expected 'train_label_means' with one value per trait ({', '.join(C.TRAITS)}), "
                f"found {recorded!r}",
                str(summary_path),
            )
        try:
            means = np.array([float(recorded[t]) for t in C.TRAITS], dtype="float64")
        except (TypeError, ValueError):
            raise InputError(f"expected numeric 'train_label_means', found {recorded!r}", str(summary_path)) from None
        return means, f"train_label_means recorded in {summary_path}"
    logger.warning(
        "no training summary beside the model and no --train_labels: the baseline predicts the "
        "mean of the evaluated labels (its R² is 0 by construction)"
    )
    return np.asarray(eval_labels, dtype="float64").mean(axis=0), (
        "mean of the evaluated labels (no training summary and no --train_labels; its R² is 0 by construction)"
    )


# ----------------------------------------------------------------- computation


def predict(
    model: Any, data: Dataset, indices: np.ndarray, batch_size: int = 64, verbose: int = 1
) -> tuple[np.ndarray, np.ndarray, StreamingRegressionSums]:
    """Predict the given rows batch by batch from the (memory-mapped) arrays.

    Returns the labels and predictions of those rows (float64, ``(n, 5)``, in
    ``indices`` order) and the streaming metric sums over them. Only one batch
    of features is in memory at a time. Without labels (``data.labels`` of
    shape ``(N, 0)``, as :func:`load_dataset` gives) the labels returned are
    ``(n, 0)`` and the sums stay empty.
    """
    import keras

    batches = EpochBatches(indices, batch_size, shuffle=False, seed=0)
    from utils.console import progress_verbosity

    progress = keras.utils.Progbar(len(indices), unit_name="sample") if progress_verbosity(verbose) else None
    sums = StreamingRegressionSums()
    y_parts: list[np.ndarray] = []
    p_parts: list[np.ndarray] = []
    done = 0
    for idx in batches():
        static = np.asarray(data.static[idx], dtype="float32")
        dynamic = np.asarray(data.dynamic[idx], dtype="float32")
        pred = np.asarray(model.predict_on_batch([static, dynamic]), dtype="float64")
        y = np.asarray(data.labels[idx], dtype="float64")  # (batch, 0) when there are no labels
        if pred.shape != (len(idx), C.NUM_TRAITS):
            raise InputError(f"expected a model with {C.NUM_TRAITS} outputs, found predictions of shape {pred.shape[1:]}")
        if y.shape[1]:
            sums.update(y, pred)
        y_parts.append(y)
        p_parts.append(pred)
        done += len(idx)
        if progress is not None:
            progress.update(done)
    return np.concatenate(y_parts), np.concatenate(p_parts), sums


def fusion_mode(model: Any) -> str | None:
    """The fusion mode of a model built by ``models.cross_attention``, else None."""
    try:
        return str(model.get_layer("fusion").config.fusion)
    except (ValueError, AttributeError):
        return None


def attention_summary(
    model: Any, data: Dataset, indices: np.ndarray, n_samples: int
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Attention of the first ``n_samples`` evaluated rows: JSON summary and mean maps.

    Returns ``(summary, mean_maps)``; ``mean_maps`` is ``block ->
    (heads, query_tokens, key_tokens)`` averaged over the samples, empty when
    the model has no attention (then ``summary["skipped"]`` says why).
    """
    from models.cross_attention import attention_entropy, attention_scores

    mode = fusion_mode(model)
    if mode is None:
        return {"skipped": "the model has no 'fusion' layer of models.cross_attention"}, {}
    if not model.get_layer("fusion").config.directions:
        return {"fusion": mode, "skipped": f"fusion mode '{mode}' has no attention layers"}, {}
    if n_samples == 0:
        return {"fusion": mode, "skipped": "--attention_samples 0"}, {}
    chosen = np.asarray(indices[:n_samples], dtype=np.int64)
    scores = attention_scores(model, data.static[chosen], data.dynamic[chosen])
    blocks: dict[str, Any] = {}
    mean_maps: dict[str, np.ndarray] = {}
    for key, value in scores.items():  # value: (samples, heads, query_tokens, key_tokens)
        entropy = attention_entropy(value)
        k = value.shape[-1]
        uniform = math.log(k)
        blocks[key] = {
            "heads": int(value.shape[1]),
            "query_tokens": int(value.shape[2]),
            "key_tokens": int(k),
            "entropy_per_head": [float(v) for v in entropy],
            "uniform_entropy": uniform,
            "normalized_entropy_per_head": [float(v / uniform) for v in entropy],
            "max_weight_mean": float(value.max(axis=-1).mean()),
        }
        mean_maps[key] = value.mean(axis=0)
    summary = {
        "fusion": mode,
        "samples": [int(i) for i in chosen],
        "n_samples": len(chosen),
        "entropy_units": "nats; mean over samples and query tokens; uniform_entropy = log(key_tokens)",
        "blocks": blocks,
    }
    return summary, mean_maps


def gain_over_baseline(model: dict[str, Any], baseline: dict[str, Any]) -> dict[str, Any]:
    """Model minus baseline for every metric, per trait and overall."""

    def diff(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
        return {m: float(a[m]) - float(b[m]) for m in METRIC_NAMES}

    return {
        "definition": "model minus baseline, per metric",
        "lower_is_better": list(LOWER_IS_BETTER),
        "higher_is_better": [m for m in METRIC_NAMES if m not in LOWER_IS_BETTER],
        "note": "for mae, mse and rmse a negative gain is an improvement; for the others a positive one. "
        "The pearson gain is null: a constant predictor has no Pearson correlation",
        "per_trait": {t: diff(model["per_trait"][t], baseline["per_trait"][t]) for t in C.TRAITS},
        "overall": diff(model["overall"], baseline["overall"]),
    }


def _file_entry(path: str) -> dict[str, Any]:
    return {"path": str(path), "sha256": sha256_file(path)}


def build_report(
    cfg: AnalysisConfig,
    model: Any,
    data: Dataset,
    split_info: dict[str, Any],
    sums: StreamingRegressionSums,
    y_true: np.ndarray,
    baseline_means: np.ndarray,
    baseline_source: str,
    attention: dict[str, Any],
) -> dict[str, Any]:
    """The content of metrics.json."""
    report = sums.report()
    baseline = regression_report(y_true, baseline_predictions(baseline_means, len(y_true)))
    inputs = {key: _file_entry(path) for key, path in data.paths.items()}
    inputs["static_features"]["shape"] = list(data.static.shape)
    inputs["dynamic_features"]["shape"] = list(data.dynamic.shape)
    inputs["labels"]["shape"] = list(data.labels.shape)
    if cfg.train_labels:
        inputs["train_labels"] = _file_entry(cfg.train_labels)
    return {
        "n": report["n"],
        "split": split_info,
        "traits": list(C.TRAITS),
        "metric_definitions": {
            "mae": "mean absolute error",
            "mse": "mean squared error",
            "rmse": "square root of the MSE (overall: mean of the per-trait RMSEs)",
            "r_squared": "1 - SS_res / SS_tot, SS_tot about the evaluated mean; not clipped",
            "pearson": "Pearson correlation of prediction and label",
            "ccc": "Lin's concordance correlation coefficient (population moments)",
            "accuracy": "ChaLearn accuracy, 1 - MAE",
            "overall": "uniform mean over the five traits",
        },
        "model": {
            **_file_entry(cfg.model),
            "name": getattr(model, "name", None),
            "fusion": fusion_mode(model),
            "input_shapes": {k: list(v) for k, v in model_input_shapes(model).items()},
        },
        "inputs": inputs,
        "metrics": {"per_trait": report["per_trait"], "overall": report["overall"]},
        "baseline_source": baseline_source,
        "baseline": {
            "predictor": "a constant: the per-trait training-label mean",
            "train_label_means": dict(zip(C.TRAITS, map(float, baseline_means))),
            "per_trait": baseline["per_trait"],
            "overall": baseline["overall"],
        },
        "gain_over_baseline": gain_over_baseline(report, baseline),
        "attention": attention,
        "predictions": {
            "csv": PREDICTIONS_CSV,
            "npy": PREDICTIONS_NPY,
            "columns": list(PREDICTION_COLUMNS),
            "npy_format": "structured array, one row per sample; field 'index' (int64, the row in "
            "the input files), then float64 fields true_<trait> and pred_<trait>; "
            "np.load(path, allow_pickle=False)",
        },
    }


def predictions_table(
    indices: np.ndarray, y_true: np.ndarray, y_pred: np.ndarray, ids: np.ndarray | None = None
) -> np.ndarray:
    """Structured array of :data:`PREDICTION_COLUMNS` (index int64, values float64), with ids an ``id`` column second."""
    id_field = [] if ids is None else [(C.PREDICTION_ID_COLUMN, str(np.asarray(ids).dtype))]
    dtype = [("index", "int64"), *id_field] + [(name, "float64") for name in PREDICTION_COLUMNS[1:]]
    table = np.zeros(len(indices), dtype=dtype)
    table["index"] = indices
    if ids is not None:
        table[C.PREDICTION_ID_COLUMN] = np.asarray(ids)[indices]
    for j, trait in enumerate(C.TRAITS):
        table[f"true_{trait}"] = y_true[:, j]
        table[f"pred_{trait}"] = y_pred[:, j]
    return table


def write_predictions(folder: Path, table: np.ndarray) -> list[Path]:
    """predictions.csv (shortest round-trip float text, full precision) and predictions.npy."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(table.dtype.names)
    for row in table.tolist():  # Python ints and floats: str(float) round-trips exactly
        writer.writerow(row)
    write_text(folder / PREDICTIONS_CSV, buffer.getvalue())
    save_npy(folder / PREDICTIONS_NPY, table)
    return [folder / PREDICTIONS_CSV, folder / PREDICTIONS_NPY]


def write_figures(
    folder: Path,
    y_true: np.ndarray,
    y_pred: np.ndarray,
    report: dict[str, Any],
    baseline_means: np.ndarray,
    attention: dict[str, Any],
    mean_maps: dict[str, np.ndarray],
) -> list[Path]:
    """Every prediction-analysis figure; returns the files written."""
    from utils import plotting as P

    written = []
    for j, trait in enumerate(C.TRAITS):
        written.append(
            P.plot_trait_scatter(
                trait, y_true[:, j], y_pred[:, j], report["metrics"]["per_trait"][trait],
                folder / P.scatter_file(trait), baseline_mean=float(baseline_means[j]),
                split=report["split"]["name"], intervals=report.get("intervals", {}).get("per_trait", {}).get(trait),
            )
        )
    baseline_pred = baseline_predictions(baseline_means, len(y_true))
    written.append(P.plot_residuals(y_true, y_pred, folder / P.RESIDUALS_FILE))
    written.append(P.plot_error_distribution(y_true, y_pred, baseline_pred, folder / P.ERROR_DISTRIBUTION_FILE))
    written.append(P.plot_trait_correlations(y_true, y_pred, folder / P.TRAIT_CORRELATIONS_FILE))
    written.append(P.plot_model_vs_baseline(report["metrics"], report["baseline"], folder / P.MODEL_VS_BASELINE_FILE))
    if mean_maps:
        written.append(P.plot_attention_maps(mean_maps, attention["n_samples"], folder / P.ATTENTION_MAPS_FILE))
        written.append(P.plot_attention_entropy(attention["blocks"], attention["n_samples"], folder / P.ATTENTION_ENTROPY_FILE))
    return written


@dataclasses.dataclass
class AnalysisResult:
    report: dict[str, Any]
    written: list[Path]


def run_analysis(cfg: AnalysisConfig) -> AnalysisResult:
    """Validate, predict, then write metrics.json, the predictions and the figures."""
    from utils.io import InputWatch, check_writable

    # 1. Validate everything and compute; nothing is written in this phase.
    check_model_path(cfg.model)
    data = load_dataset(cfg.static_features, cfg.dynamic_features, cfg.labels)
    watch = InputWatch(data.paths)  # sizes and modification times, checked before writing
    ids, groups, _ = resolve_groups(len(data), cfg.ids, cfg.groups, cfg.group_pattern)
    summary, summary_path = read_training_summary(cfg.model)
    if cfg.split not in SPLITS:
        raise InputError(f"expected --split to be one of {SPLITS}, found {cfg.split!r}")
    held = held_out_rows(cfg.split, data, summary, summary_path)
    indices, split_info = held.rows, held.info
    output = Path(cfg.output)
    check_writable(output)
    if cfg.train_labels:
        load_labels(cfg.train_labels)  # validate before the (slow) model load
    model = load_trained_model(cfg.model)
    check_feature_shapes(model, data, cfg.model)
    logger.info("Predicting %d samples (%s split) with %s", len(indices), cfg.split, cfg.model)
    y_true, y_pred, sums = predict(model, data, indices, cfg.batch_size, cfg.verbose)
    baseline_means, baseline_source = resolve_baseline(cfg, summary, summary_path, y_true)
    attention, mean_maps = attention_summary(model, data, indices, cfg.attention_samples)
    report = build_report(cfg, model, data, split_info, sums, y_true, baseline_means, baseline_source, attention)
    report["leakage"] = clips_sharing_training_groups(groups, indices, held.train_rows, summary_path.parent)
    report["intervals"] = bootstrap_report(y_true, y_pred, None if groups is None else groups[indices])

    watch.stop_if_changed("the analysis")

    # 2. Write.
    output.mkdir(parents=True, exist_ok=True)
    written = write_predictions(output, predictions_table(indices, y_true, y_pred, ids))
    written += write_figures(output, y_true, y_pred, report, baseline_means, attention, mean_maps)
    report["figures"] = [p.name for p in written if p.suffix == ".png"]
    write_json(output / METRICS_FILE, report)
    written.insert(0, output / METRICS_FILE)
    return AnalysisResult(report, written)


def format_intervals(intervals: dict[str, Any]) -> str:
    """One console line: the model's 95% bootstrap intervals of the trait-mean headline metrics."""
    cells = []
    for key, label in (("r_squared", "R²"), ("ccc", "CCC"), ("mae", "MAE")):
        low, high = intervals["overall"][key]
        if low is not None and np.isfinite(low):
            cells.append(f"{label} [{low:.3f}, {high:.3f}]")
    unit = "groups" if intervals["resampled_unit"] == "group" else "clips"
    return f"  model 95% interval ({intervals['n_resamples']} bootstrap resamples of {intervals['n_units']} {unit}): " + ", ".join(cells)


def format_summary(result: AnalysisResult) -> str:
    """The console summary: headline metrics beside the baseline, then the files."""
    r = result.report
    m, b = r["metrics"]["overall"], r["baseline"]["overall"]
    lines = [
        "",
        f"Evaluated {r['n']} samples ({r['split']['name']} split); baseline: {r['baseline_source']}",
        f"  {'':10s}{'MAE':>9s}{'accuracy':>10s}{'R²':>9s}{'CCC':>9s}{'Pearson':>9s}",
    ]
    for label, values in (("model", m), ("baseline", b)):
        cells = [values[k] for k in ("mae", "accuracy", "r_squared", "ccc", "pearson")]
        widths = (9, 10, 9, 9, 9)
        lines.append(
            f"  {label:10s}" + "".join(
                f"{v:>{w}.4f}" if v is not None and np.isfinite(v) else f"{'n/a':>{w}s}" for v, w in zip(cells, widths)
            )
        )
    lines.append(format_intervals(r["intervals"]))
    if r["split"].get("held_out") in ("unknown", "other files") or r["split"]["held_out"].startswith("no"):
        lines.append(f"Held out: {r['split']['held_out']}. {r['split'].get('note', '')}".rstrip())
    shared = r["leakage"].get("evaluated_clips_sharing_a_group_with_train")
    if shared is not None:
        lines.append(f"Evaluated clips sharing a group with the training split: {shared} of {r['leakage']['evaluated_clips']}")
    if "skipped" in r["attention"]:
        lines.append(f"Attention: skipped ({r['attention']['skipped']})")
    lines.append(f"Wrote {len(result.written)} file(s):")
    lines += [f"  {p}" for p in result.written]
    return "\n".join(lines)


__all__ = ["AnalysisConfig", "AnalysisResult", "run_analysis", "format_summary", "SPLITS"]
