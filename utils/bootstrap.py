"""Percentile bootstrap intervals for every metric of one prediction set.

The metric math is :func:`utils.metrics.batch_sums` and
:func:`utils.metrics.metrics_from_sums`; this module only resamples. Because
the sums are additive, a resample's sums are a weighted sum of per-unit sums
(a unit is a clip, or a whole group when groups are known): ``counts @
unit_sums``, one matrix product for all resamples and traits at once.

Resampling whole groups (a cluster bootstrap) keeps the clips of one person
together, so the interval reflects how many people were evaluated, not how
many clips: clips of one person are not independent.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

import numpy as np

from utils.constants import BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, CONFIDENCE_LEVEL, TRAITS
from utils.metrics import METRIC_NAMES, SUM_FIELDS, batch_sums, metrics_from_sums

logger = logging.getLogger(__name__)

# Resamples handled per matrix product (bounds memory at about chunk x units floats).
_CHUNK = 250

__all__ = ["bootstrap_report", "percentile_interval", "resample_counts", "resample_indices", "unit_sums"]


def resample_indices(n_units: int, n_resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED) -> np.ndarray:
    """The drawn units of every resample, shape ``(n_resamples, n_units)``, reproducible from ``seed``."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, n_units, size=(n_resamples, n_units))


def resample_counts(indices: np.ndarray, n_units: int) -> np.ndarray:
    """How often each unit is drawn in each resample, shape ``(n_resamples, n_units)``."""
    b = len(indices)
    flat = (indices + np.arange(b)[:, None] * n_units).ravel()
    return np.bincount(flat, minlength=b * n_units).reshape(b, n_units).astype(np.float64)


def unit_sums(y_true: np.ndarray, y_pred: np.ndarray, units: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Per-unit :func:`batch_sums`, shape ``(n_units, len(SUM_FIELDS), n_outputs)``, and the unit labels.

    ``units`` is one label per row (a group); None makes every row its own unit.
    """
    y = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(y_pred, dtype=np.float64)
    # batch_sums sums over its first axis: on (1, n, outputs) it returns every row's own terms.
    terms = np.moveaxis(batch_sums(y[None], p[None]), 0, 1)  # (n, len(SUM_FIELDS), outputs)
    if units is None:
        return terms, np.arange(len(y))
    labels, inverse = np.unique(np.asarray(units), return_inverse=True)
    sums = np.zeros((len(labels), len(SUM_FIELDS), y.shape[1]))
    np.add.at(sums, inverse.ravel(), terms)
    return sums, labels


def percentile_interval(values: np.ndarray, level: float = CONFIDENCE_LEVEL, axis: int = 0) -> np.ndarray:
    """Percentile interval along ``axis`` (NaN resamples ignored), shape ``(2, ...)``.

    Where every resample is NaN (e.g. Pearson of a constant predictor) the
    interval is NaN, which the JSON writer turns into null.
    """
    tail = 100.0 * (1.0 - level) / 2.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices
        return np.nanpercentile(values, [tail, 100.0 - tail], axis=axis)


def resampled_metrics(sums: np.ndarray, counts: np.ndarray) -> dict[str, np.ndarray]:
    """Every metric of every resample, ``name -> (n_resamples, n_outputs)``."""
    n_units, n_fields, n_out = sums.shape
    flat = sums.reshape(n_units, n_fields * n_out)
    out: dict[str, list[np.ndarray]] = {name: [] for name in METRIC_NAMES}
    for start in range(0, len(counts), _CHUNK):
        block = (counts[start : start + _CHUNK] @ flat).reshape(-1, n_fields, n_out)
        values = metrics_from_sums(np.moveaxis(block, 1, 0))  # fields first, as metrics_from_sums wants
        for name in METRIC_NAMES:
            out[name].append(values[name])
    return {name: np.concatenate(parts) for name, parts in out.items()}


def bootstrap_report(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    groups: np.ndarray | None = None,
    n_resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    level: float = CONFIDENCE_LEVEL,
    traits: tuple[str, ...] | list[str] = TRAITS,
) -> dict[str, Any]:
    """Percentile bootstrap intervals of every metric, per trait and for the trait mean.

    Args:
        y_true, y_pred: arrays of shape ``(n, len(traits))``.
        groups: one group per row; when given, whole groups are resampled.
        n_resamples, seed, level: the resampling; the same seed gives the
            same interval.

    Returns:
        ``{"per_trait": {trait: {metric: [low, high]}}, "overall": {metric:
        [low, high]}, "method": ..., "n_resamples", "seed", "level",
        "resampled_unit", "n_units"}``. ``overall`` is the interval of the
        uniform trait mean (computed per resample, not from the per-trait
        bounds). An interval is ``[None, None]`` where the metric is
        undefined in every resample.
    """
    sums, labels = unit_sums(y_true, y_pred, groups)
    n_units = len(labels)
    counts = resample_counts(resample_indices(n_units, n_resamples, seed), n_units)
    values = resampled_metrics(sums, counts)
    per_trait: dict[str, dict[str, list[float]]] = {t: {} for t in traits}
    overall: dict[str, list[float]] = {}
    for name, v in values.items():
        bounds = percentile_interval(v, level)  # (2, n_outputs)
        for j, trait in enumerate(traits):
            per_trait[trait][name] = [float(bounds[0, j]), float(bounds[1, j])]
        mean_bounds = percentile_interval(np.mean(v, axis=1), level)
        overall[name] = [float(mean_bounds[0]), float(mean_bounds[1])]
    return {
        "method": f"percentile bootstrap, {n_resamples} resamples of whole "
        + ("groups" if groups is not None else "clips")
        + " with replacement; the metric is recomputed on each resample",
        "level": level,
        "n_resamples": n_resamples,
        "seed": seed,
        "resampled_unit": "group" if groups is not None else "clip",
        "n_units": n_units,
        "per_trait": per_trait,
        "overall": overall,
    }
