"""Predictions on unlabeled clips, and a SavedModel for TensorFlow Serving.

:func:`run_prediction` is what ``scripts/predict_personality.py`` calls and
:func:`run_export` what ``scripts/export_model.py`` calls. Both work in two
phases, like :mod:`utils.analysis`, whose loaders and checks they reuse:

1. everything that can fail on the user's input happens first: the paths,
   the feature files (validated, memory-mapped), the ids, the model and its
   input shapes against the features; then the computation;
2. only then is anything written, and atomically: the three prediction files
   are written to temporary names and renamed into place only when all three
   are complete; the SavedModel is written into a temporary folder beside the
   target, checked against the Keras model, and renamed into place.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import datetime as _dt
import importlib.metadata
import json
import logging
import platform
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from utils import constants as C
from utils.analysis import (
    check_feature_shapes,
    check_model_path,
    fusion_mode,
    load_trained_model,
    model_input_shapes,
    predict,
)
from utils.config import ExportConfig, PredictionConfig
from utils.data import Dataset, load_dataset, sha256_file
from utils.errors import InputError
from utils.io import InputWatch, atomic_path, check_writable

logger = logging.getLogger(__name__)

# A progress bar is drawn when the console is a terminal, or for inputs this long
# (a batch job's log then shows how far it got); never for short runs in a pipe.
PROGRESS_MIN_SAMPLES = 10_000
# The SavedModel must reproduce the Keras model to this absolute tolerance.
EXPORT_TOLERANCE = 1e-5
EXPORT_CHECK_SAMPLES = 8
EXPORT_INFO_FILE = "export_info.json"  # in the SavedModel's assets.extra/ (TF Serving ignores it)
PREDICTION_COLUMNS: tuple[str, ...] = (C.PREDICTION_ID_COLUMN, *C.TRAITS)


@dataclasses.dataclass
class PredictionResult:
    predictions: np.ndarray  # (N, 5) float32, trait order C.TRAITS
    ids: np.ndarray | None
    info: dict[str, Any]
    written: list[Path]


# ----------------------------------------------------------------- shared


def software_versions() -> dict[str, str | None]:
    """Versions of the software that produced an output (TensorFlow must be imported already)."""

    def version(name: str) -> str | None:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return None

    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "tensorflow": version("tensorflow"),
        "keras": version("keras"),
        "h5py": version("h5py"),
    }


def _file_entry(path: str | Path, array: np.ndarray | None = None) -> dict[str, Any]:
    p = Path(path)
    entry: dict[str, Any] = {"path": str(p.resolve()), "bytes": p.stat().st_size, "sha256": sha256_file(p)}
    if array is not None:
        entry.update(shape=[int(n) for n in array.shape], dtype=str(array.dtype))
    return entry


def model_entry(model_path: str | Path, model: Any) -> dict[str, Any]:
    """The model file's identity and what it expects, plus its training summary if one is beside it."""
    summary = Path(model_path).parent / C.TRAINING_SUMMARY_FILE
    return {
        **_file_entry(model_path),
        "name": getattr(model, "name", None),
        "fusion": fusion_mode(model),
        "input_shapes": {k: list(v) for k, v in model_input_shapes(model).items()},
        "training_summary": str(summary.resolve()) if summary.is_file() else None,
    }


# ----------------------------------------------------------------- prediction


def output_paths(output: str | Path) -> dict[str, Path]:
    """The three files of a prediction run: the ``--output`` .csv and, beside it, .npy and _info.json."""
    csv_path = Path(output)
    if csv_path.suffix.lower() != ".csv":
        raise InputError(
            f"expected --output to be a .csv file path (the .npy and {C.PREDICTIONS_INFO_SUFFIX} go beside it), "
            f"found '{csv_path.suffix or 'no'}' extension",
            str(csv_path),
        )
    if csv_path.is_dir():
        raise InputError("expected --output to be a .csv file path, found a directory", str(csv_path))
    stem = csv_path.with_suffix("")
    return {
        "csv": csv_path,
        "npy": stem.with_name(stem.name + C.PREDICTIONS_NPY_SUFFIX),
        "info": stem.with_name(stem.name + C.PREDICTIONS_INFO_SUFFIX),
    }


def show_progress(verbose: int, n: int) -> bool:
    """Progress bar: asked for, and on a terminal or a long input."""
    return bool(verbose) and (sys.stderr.isatty() or n >= PROGRESS_MIN_SAMPLES)


def predictions_csv(predictions: np.ndarray, ids: np.ndarray | None) -> str:
    """``id`` then the five traits; floats as the shortest text that reads back as the same float32."""
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(PREDICTION_COLUMNS)
    names = ids if ids is not None else range(len(predictions))
    for name, row in zip(names, predictions):
        writer.writerow([str(name), *(np.format_float_positional(v, unique=True, trim="-") for v in row)])
    return buffer.getvalue()


def prediction_info(
    cfg: PredictionConfig, model: Any, data: Dataset, paths: dict[str, Path], started: str
) -> dict[str, Any]:
    """The provenance JSON written beside the predictions."""
    inputs = {
        "static_features": _file_entry(cfg.static_features, data.static),
        "dynamic_features": _file_entry(cfg.dynamic_features, data.dynamic),
    }
    if cfg.ids:
        inputs["ids"] = _file_entry(cfg.ids)
    return {
        "n": len(data),
        "traits": list(C.TRAITS),
        "files": {
            "csv": paths["csv"].name,
            "npy": paths["npy"].name,
            "columns": list(PREDICTION_COLUMNS),
            "id": f"the name in row i of {cfg.ids}" if cfg.ids else "the row index i in the feature files",
            "npy_format": "float32 array of shape (N, 5), row i = clip i, columns in the order of 'traits'; "
            "np.load(path, allow_pickle=False)",
        },
        "model": model_entry(cfg.model, model),
        "inputs": inputs,
        "batch_size": cfg.batch_size,
        "started_at": started,
        "finished_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "software": software_versions(),
    }


def write_prediction_files(
    paths: dict[str, Path], predictions: np.ndarray, ids: np.ndarray | None, info: dict[str, Any]
) -> list[Path]:
    """All three files, or none: each goes to a temporary name, renamed only when every one is complete."""
    writers = {
        "csv": lambda tmp: tmp.write_text(predictions_csv(predictions, ids), encoding="utf-8"),
        "npy": lambda tmp: np.save(tmp, predictions, allow_pickle=False),
        "info": lambda tmp: tmp.write_text(json.dumps(info, indent=2, allow_nan=False) + "\n", encoding="utf-8"),
    }
    with contextlib.ExitStack() as stack:
        for key, write in writers.items():  # a failure names its own file and unwinds the ones before
            write(stack.enter_context(atomic_path(paths[key])))
    return [paths[key] for key in writers]


def check_prediction_paths(cfg: PredictionConfig) -> dict[str, Path]:
    """The checks that need no TensorFlow (the script runs them before it starts TensorFlow)."""
    paths = output_paths(cfg.output)
    check_model_path(cfg.model)
    return paths


def run_prediction(cfg: PredictionConfig) -> PredictionResult:
    """Validate, predict in batches from the memory-mapped files, then write the three files."""
    from utils.ids import read_ids

    started = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    # 1. Validate everything and compute; nothing is written in this phase.
    paths = check_prediction_paths(cfg)
    data = load_dataset(cfg.static_features, cfg.dynamic_features, None)
    ids = read_ids(cfg.ids, len(data)) if cfg.ids else None
    watch = InputWatch(
        {"static_features": cfg.static_features, "dynamic_features": cfg.dynamic_features, "ids": cfg.ids or ""}
    )
    check_writable(paths["csv"].parent)
    model = load_trained_model(cfg.model)
    check_feature_shapes(model, data, cfg.model)
    n = len(data)
    logger.info("Predicting %d clips with %s", n, cfg.model)
    _, pred, _ = predict(model, data, np.arange(n), cfg.batch_size, verbose=int(show_progress(cfg.verbose, n)))
    predictions = pred.astype("float32")  # the model's own float32 outputs, exactly
    if not np.isfinite(predictions).all():
        row = int(np.argwhere(~np.isfinite(predictions))[0, 0])
        raise InputError(f"expected finite predictions, found a non-finite one for clip {row}", cfg.model)
    info = prediction_info(cfg, model, data, paths, started)
    watch.stop_if_changed("the prediction")
    # 2. Write.
    written = write_prediction_files(paths, predictions, ids, info)
    return PredictionResult(predictions, ids, info, written)


def format_prediction_summary(result: PredictionResult) -> str:
    p = result.predictions
    lines = [
        f"Predicted {len(p)} clips; per-trait mean (min-max):",
        *(f"  {t:18s}{p[:, j].mean():.4f} ({p[:, j].min():.4f}-{p[:, j].max():.4f})" for j, t in enumerate(C.TRAITS)),
        f"Wrote {len(result.written)} file(s):",
        *(f"  {path}" for path in result.written),
    ]
    return "\n".join(lines)


# ----------------------------------------------------------------- export


def check_export_target(output: str | Path, overwrite: bool) -> Path:
    """Refuse an existing target (unless ``overwrite``) or an unwritable parent, before TensorFlow starts."""
    target = Path(output)
    if target.exists() and not target.is_dir():
        raise InputError("expected a folder path for the SavedModel, found a file", str(target))
    if target.exists() and any(target.iterdir()) and not overwrite:
        raise InputError("expected a new or empty folder for the SavedModel, found one with files (pass --overwrite)", str(target))
    check_writable(target.parent)
    return target


def serving_signature(model: Any) -> tuple[Any, list[Any]]:
    """The serving function (two named float32 inputs -> one output per trait) and its input signature."""
    import tensorflow as tf

    shapes = model_input_shapes(model)
    signature = [
        tf.TensorSpec(shape=(None, *shapes["static"]), dtype=tf.float32, name="static_features"),
        tf.TensorSpec(shape=(None, *shapes["dynamic"]), dtype=tf.float32, name="dynamic_features"),
    ]

    def serve(static_features: Any, dynamic_features: Any) -> dict[str, Any]:
        traits = model([static_features, dynamic_features], training=False)
        return {trait: traits[:, j] for j, trait in enumerate(C.TRAITS)}

    return serve, signature


def check_export(folder: Path, model: Any, seed: int = 0) -> float:
    """Load the SavedModel with TensorFlow alone and compare it with the Keras model; return the max difference."""
    import tensorflow as tf

    shapes = model_input_shapes(model)
    rng = np.random.default_rng(seed)
    static = rng.normal(size=(EXPORT_CHECK_SAMPLES, *shapes["static"])).astype("float32")
    dynamic = rng.normal(size=(EXPORT_CHECK_SAMPLES, *shapes["dynamic"])).astype("float32")
    served = tf.saved_model.load(str(folder)).signatures[C.SERVING_SIGNATURE](
        static_features=tf.constant(static), dynamic_features=tf.constant(dynamic)
    )
    got = np.stack([served[t].numpy() for t in C.TRAITS], axis=1)
    want = np.asarray(model.predict_on_batch([static, dynamic]))
    return float(np.max(np.abs(got - want)))


def _replace_folder(tmp: Path, target: Path) -> None:
    """Move the finished export into place; an old export is swapped out first, then removed."""
    old = None
    if target.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", dir=target.parent))
        target.replace(old / target.name)
    tmp.replace(target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def check_export_paths(cfg: ExportConfig) -> Path:
    """The checks that need no TensorFlow (the script runs them before it starts TensorFlow)."""
    check_model_path(cfg.model)
    return check_export_target(cfg.output, cfg.overwrite)


def run_export(cfg: ExportConfig) -> dict[str, Any]:
    """Load the Keras model, write a SavedModel with a named serving signature, check it, move it into place."""
    target = check_export_paths(cfg)
    import keras  # after the checks: a bad flag answers without starting TensorFlow

    model = load_trained_model(cfg.model)
    serve, signature = serving_signature(model)
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(name=C.SERVING_SIGNATURE, fn=serve, input_signature=signature)
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp.", dir=target.parent))
    try:
        staged = work / target.name
        tf_logger = logging.getLogger("tensorflow")
        level = tf_logger.level
        tf_logger.setLevel(logging.WARNING)  # "Assets written to: <temporary folder>" would mislead
        try:
            archive.write_out(str(staged), verbose=False)
        finally:
            tf_logger.setLevel(level)
        difference = check_export(staged, model)
        if not difference <= EXPORT_TOLERANCE:
            raise RuntimeError(
                f"the SavedModel differs from the Keras model by {difference:.3g} (> {EXPORT_TOLERANCE}); nothing was exported"
            )
        info = {
            "signature": C.SERVING_SIGNATURE,
            "inputs": {
                spec.name: {"shape": [d for d in spec.shape.as_list()], "dtype": spec.dtype.name} for spec in signature
            },
            "outputs": {t: {"shape": [None], "dtype": "float32"} for t in C.TRAITS},
            "traits": list(C.TRAITS),
            "max_abs_difference_to_keras": difference,
            "model": model_entry(cfg.model, model),
            "exported_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "software": software_versions(),
        }
        (staged / "assets.extra").mkdir(exist_ok=True)
        (staged / "assets.extra" / EXPORT_INFO_FILE).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
        _replace_folder(staged, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    info["path"] = str(target)
    return info


def format_export_summary(info: dict[str, Any]) -> str:
    inputs = ", ".join(f"{name} {tuple(v['shape'])}" for name, v in info["inputs"].items())
    return "\n".join(
        [
            f"Exported SavedModel to {info['path']}",
            f"  signature '{info['signature']}': inputs {inputs} float32 -> outputs {', '.join(info['traits'])} (N,) float32",
            f"  largest difference to the Keras model on {EXPORT_CHECK_SAMPLES} random clips: {info['max_abs_difference_to_keras']:.2g}",
        ]
    )


__all__ = [
    "PredictionResult",
    "run_prediction",
    "run_export",
    "format_prediction_summary",
    "format_export_summary",
]
