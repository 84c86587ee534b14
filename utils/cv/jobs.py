"""One (variant, fold, seed) job of a cross-validation experiment.

A job trains on the training folds and scores the test fold with
:func:`utils.metrics.regression_report`. Its folder
``runs/<variant>/fold<k>/seed<s>/`` holds, for a network variant, a normal
training run (model, history, TensorBoard, run logs, ``training_summary.json``)
plus the row files it used, and for every variant ``test_predictions.csv``
and ``cv_result.json``. The result file is written last and atomically: a job
is finished exactly when it exists.

Variants:

* a fusion mode of :data:`utils.constants.FUSION_MODES`: the network, early
  stopped on an inner validation split carved from the training folds
  (group-disjoint when groups are known), never on the test fold;
* ``ridge``: ridge regression on pooled features (tokens mean-pooled per
  stream, concatenated, standardized with training statistics), one alpha
  per trait chosen by an inner (group) 5-fold search inside the training
  folds, predictions clipped to [0, 1] like the labels;
* ``mean``: the training-fold label mean (the ChaLearn baseline).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from utils import constants as C
from utils.cv.folds import inner_split
from utils.data import Dataset, label_means
from utils.ids import clips_sharing_a_group
from utils.io import save_npy, write_json, write_text
from utils.metrics import baseline_predictions, regression_report

logger = logging.getLogger(__name__)

# Row files of a network job (inputs of its training run: --train_rows, --val_rows).
TRAIN_ROWS_FILE = "rows/train.npy"
VAL_ROWS_FILE = "rows/val.npy"
TEST_ROWS_FILE = "rows/test.npy"
TEST_PREDICTIONS_FILE = "test_predictions.csv"
RIDGE_ALPHAS: tuple[float, ...] = tuple(float(a) for a in np.logspace(-3, 5, 17))
RIDGE_INNER_FOLDS = 5
# Rows pooled at once when mean-pooling memory-mapped token features.
_POOL_ROWS = 4096
_POOLED: dict[tuple, np.ndarray] = {}  # per process, keyed by the files (path, mtime, size)


@dataclasses.dataclass(frozen=True)
class Job:
    variant: str
    fold: int
    seed: int

    def folder(self, root: str | Path) -> Path:
        return Path(root) / C.CV_RUNS_DIR / self.variant / f"fold{self.fold}" / f"seed{self.seed}"

    def result_path(self, root: str | Path) -> Path:
        return self.folder(root) / C.CV_JOB_RESULT_FILE

    def finished(self, root: str | Path) -> bool:
        return self.result_path(root).is_file()

    def __str__(self) -> str:
        return f"{self.variant} fold {self.fold} seed {self.seed}"


@dataclasses.dataclass
class JobContext:
    """What every job needs besides the data (picklable, so a spawned worker gets it whole)."""

    output: str
    paths: dict[str, str]  # static_features, dynamic_features, labels
    fold: np.ndarray  # test fold of every row
    ids: np.ndarray | None
    groups: np.ndarray | None
    grouped: bool  # folds (and inner splits) are group-disjoint
    val_split: float
    train: dict[str, Any]  # TrainConfig settings of the network variants
    id_flags: dict[str, Any] = dataclasses.field(default_factory=dict)  # ids, groups, group_pattern


def job_list(variants: list[str] | tuple[str, ...], k: int, seeds: list[int]) -> list[Job]:
    """Every job in a fixed order (variant, then fold, then seed): the basis of ``--jobs i/n``."""
    return [Job(v, f, s) for v in variants for f in range(k) for s in seeds]


def slice_jobs(jobs: list[Job], i: int, n: int) -> list[Job]:
    """The i-th (1-based) of n interleaved slices: jobs i-1, i-1+n, i-1+2n, ..."""
    return jobs[i - 1 :: n]


def pooled_features(data: Dataset) -> np.ndarray:
    """Static and dynamic features mean-pooled over tokens and concatenated, ``(N, D_s + D_d)`` float64."""
    key = tuple(
        (str(Path(path).resolve()), Path(path).stat().st_mtime_ns, Path(path).stat().st_size)
        for path in (data.paths["static_features"], data.paths["dynamic_features"])
    )
    if key not in _POOLED:
        parts = []
        for array in (data.static, data.dynamic):
            pooled = np.empty((len(array), array.shape[-1]))
            for start in range(0, len(array), _POOL_ROWS):
                chunk = np.asarray(array[start : start + _POOL_ROWS], dtype=np.float64)
                pooled[start : start + len(chunk)] = chunk.mean(axis=1) if chunk.ndim == 3 else chunk
            parts.append(pooled)
        _POOLED[key] = np.concatenate(parts, axis=1)
    return _POOLED[key]


def ridge_path(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, alphas: np.ndarray) -> np.ndarray:
    """Ridge predictions on ``x_test`` for every alpha at once, shape ``(n_alphas, n_test, n_outputs)``.

    Features are standardized with the training rows' statistics and the
    intercept is the training label mean (unpenalized), as scikit-learn's
    ``make_pipeline(StandardScaler(), Ridge(alpha))``; one SVD serves every alpha.
    """
    mean, std = x_train.mean(axis=0), x_train.std(axis=0)
    std[std < 1e-12] = 1.0
    xs, xt = (x_train - mean) / std, (x_test - mean) / std
    y_mean = y_train.mean(axis=0)
    u, sv, vt = np.linalg.svd(xs, full_matrices=False)
    uty = u.T @ (y_train - y_mean)  # (rank, n_outputs)
    shrink = sv[None, :] / (sv[None, :] ** 2 + np.asarray(alphas)[:, None])  # (n_alphas, rank)
    coef = np.einsum("kr,ro->kro", shrink, uty)  # (n_alphas, rank, n_outputs)
    return np.einsum("tr,kro->kto", xt @ vt.T, coef) + y_mean


def fit_ridge(
    x: np.ndarray, y: np.ndarray, train: np.ndarray, test: np.ndarray, groups: np.ndarray | None, seed: int
) -> tuple[np.ndarray, dict[str, Any]]:
    """Ridge on the training rows, one alpha per trait by an inner (group) k-fold search; test predictions in [0, 1]."""
    from sklearn.model_selection import GroupKFold, KFold

    alphas = np.asarray(RIDGE_ALPHAS)
    if groups is not None:
        k = min(RIDGE_INNER_FOLDS, len(np.unique(groups[train])))
        inner: Any = GroupKFold(n_splits=k, shuffle=True, random_state=seed)
    else:
        k = min(RIDGE_INNER_FOLDS, len(train))
        inner = KFold(n_splits=k, shuffle=True, random_state=seed)
    sq_err = np.zeros((len(alphas), y.shape[1]))
    for fit, val in inner.split(train, groups=None if groups is None else groups[train]):
        a, b = train[fit], train[val]
        sq_err += ((ridge_path(x[a], y[a], x[b], alphas) - y[b]) ** 2).sum(axis=1)
    best = np.argmin(sq_err, axis=0)  # one alpha per trait (the first of ties: the smallest)
    path = ridge_path(x[train], y[train], x[test], alphas)
    pred = path[best, :, np.arange(y.shape[1])].T  # (n_test, n_outputs)
    chosen = alphas[best]
    info = {
        "alpha_per_trait": dict(zip(C.TRAITS, map(float, chosen))),
        "alphas_searched": list(RIDGE_ALPHAS),
        "inner_cv": f"{type(inner).__name__}(n_splits={k}, shuffle=True) on the training folds, squared error",
        "alpha_at_edge_of_grid": bool(np.isin(chosen, [alphas[0], alphas[-1]]).any()),
    }
    return np.clip(pred, 0.0, 1.0), info


def train_network(
    ctx: JobContext, job: Job, data: Dataset, train: np.ndarray, test: np.ndarray
) -> tuple[np.ndarray, dict[str, Any]]:
    """A normal training run in the job folder, early-stopped on an inner split; test-fold predictions."""
    import keras

    from utils.analysis import load_trained_model, predict
    from utils.config import TrainConfig
    from utils.training import prepare, run_training

    folder = job.folder(ctx.output)
    groups = ctx.groups if ctx.grouped else None
    fit, val = inner_split(train, groups, ctx.val_split, seed=job.seed * 1000 + job.fold)
    for name, rows in ((TRAIN_ROWS_FILE, fit), (VAL_ROWS_FILE, val), (TEST_ROWS_FILE, test)):
        save_npy(folder / name, rows.astype(np.int64))
    cfg = TrainConfig.from_dict({
        **ctx.paths,
        **ctx.train,
        **ctx.id_flags,  # the run records its training groups and counts leaks into its validation rows
        "output": str(folder / C.MODEL_FILE),
        "seed": job.seed,
        "fusion": job.variant,
        "val_split": ctx.val_split,
        "train_rows": str(folder / TRAIN_ROWS_FILE),
        "val_rows": str(folder / VAL_ROWS_FILE),
    })
    keras.backend.clear_session()
    result = run_training(cfg, prepare(cfg))
    model = load_trained_model(cfg.output)
    _, pred, _ = predict(model, data, test, batch_size=cfg.batch_size, verbose=0)
    keras.backend.clear_session()
    info = {
        "n_fit": len(fit),
        "n_val": len(val),
        "val_clips_sharing_a_group_with_fit": clips_sharing_a_group(ctx.groups, fit, val),
        "best_epoch": result.best_epoch,
        "epochs_run": len(result.history.get("epoch", [])),
        "training_seconds": result.seconds,
    }
    return pred, info


def predictions_text(rows: np.ndarray, ctx: JobContext, y: np.ndarray, pred: np.ndarray) -> str:
    """``test_predictions.csv``: row, id, group, then true_<trait>, pred_<trait>."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["row", "id", "group", *(f"{k}_{t}" for t in C.TRAITS for k in ("true", "pred"))])
    for i, row in enumerate(rows.tolist()):
        values = [float(v) for j in range(C.NUM_TRAITS) for v in (y[i, j], pred[i, j])]
        ident = "" if ctx.ids is None else ctx.ids[row]
        group = "" if ctx.groups is None else ctx.groups[row]
        writer.writerow([row, ident, group, *values])
    return buffer.getvalue()


def run_job(ctx: JobContext, job: Job, data: Dataset) -> dict[str, Any]:
    """Train, predict the test fold, score, write the job's files; return its result."""
    start = time.perf_counter()
    test = np.flatnonzero(ctx.fold == job.fold)
    train = np.flatnonzero(ctx.fold != job.fold)
    labels = np.asarray(data.labels, dtype=np.float64)
    if job.variant == "mean":
        pred, info = baseline_predictions(label_means(data.labels, train), len(test)), {}
    elif job.variant == "ridge":
        pred, info = fit_ridge(
            pooled_features(data), labels, train, test, ctx.groups if ctx.grouped else None, job.seed
        )
    else:
        pred, info = train_network(ctx, job, data, train, test)
    y = labels[test]
    folder = job.folder(ctx.output)
    write_text(folder / TEST_PREDICTIONS_FILE, predictions_text(test, ctx, y, pred))
    result = {
        "variant": job.variant,
        "fold": job.fold,
        "seed": job.seed,
        "n_train": len(train),
        "n_test": len(test),
        "test_clips_sharing_a_group_with_train": clips_sharing_a_group(ctx.groups, train, test),
        "metrics": regression_report(y, pred),
        "details": info,
        "seconds": time.perf_counter() - start,
    }
    write_json(job.result_path(ctx.output), result)  # last: the job is finished once this exists
    return result
