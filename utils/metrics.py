"""Regression metrics for the Big Five, defined once for NumPy and Keras.

The math lives in two pure functions written against an array namespace
``xp`` (``numpy`` or ``keras.ops``):

* :func:`batch_sums` turns one batch into additive sufficient statistics,
  one column per output (trait);
* :func:`metrics_from_sums` derives MAE, MSE, RMSE, R², Pearson, CCC and
  ChaLearn accuracy from the accumulated sums.

Because the sums are additive, every streaming result is exact whatever the
batch sizes or order (see ``docs`` "Metric definitions"). The NumPy one-shot
API (:func:`regression_report`, :class:`StreamingRegressionSums`) and the Keras
metrics of :mod:`utils.keras_metrics` (``PersonalityMetrics``, the one compiled
for training, ``RSquared``, ``PerTraitMetric``) all call these two functions.

This module does not import TensorFlow or Keras, nor :mod:`utils.keras_metrics`
(which imports this one): import the Keras metrics from there.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from utils.constants import NUM_TRAITS, TRAITS

__all__ = [
    "METRIC_NAMES",
    "SUM_FIELDS",
    "StreamingRegressionSums",
    "baseline_predictions",
    "batch_sums",
    "metrics_from_sums",
    "regression_report",
]

# Rows of the sufficient-statistics array, each an additive per-output sum.
SUM_FIELDS: tuple[str, ...] = (
    "count",  # number of rows (sum of weights when weighted)
    "sum_y",
    "sum_y2",
    "sum_p",
    "sum_p2",
    "sum_yp",
    "sum_abs_err",
    "sum_sq_err",
)
# Keys of the dict returned by metrics_from_sums, in report order.
METRIC_NAMES: tuple[str, ...] = (
    "mae",
    "mse",
    "rmse",
    "r_squared",
    "pearson",
    "ccc",
    "accuracy",
)
# A sum of squares about the mean (or a variance) at or below this fraction of
# the raw sum of squares is floating-point cancellation noise: the column is
# treated as constant. In float64 the one-pass formula's rounding error is a
# few 1e-16 of sum_y2, so values this small carry no correct digit anyway.
CONSTANT_RTOL = 1e-12



def _to_float64(x: Any, xp: Any) -> Any:
    """``x`` as a float64 array of the namespace ``xp``."""
    if xp is np:
        return np.asarray(x, dtype=np.float64)
    return xp.cast(x, "float64")


def _safe_div(num: Any, den: Any, ok: Any, fill: float, xp: Any) -> Any:
    """``num / den`` where ``ok``, else ``fill``; never divides by zero."""
    return xp.where(ok, num / xp.where(ok, den, 1.0), fill)


def batch_sums(y_true: Any, y_pred: Any, sample_weight: Any = None, xp: Any = np) -> Any:
    """Sufficient statistics of one batch, shape ``(len(SUM_FIELDS), n_outputs)``.

    Args:
        y_true: labels, shape ``(batch, n_outputs)``.
        y_pred: predictions, same shape.
        sample_weight: optional non-negative row weights, shape ``(batch,)``
            or ``(batch, 1)``; every sum (the count included) is then weighted,
            which matches scikit-learn's ``sample_weight``.
        xp: ``numpy`` or ``keras.ops``.

    Returns:
        float64 array whose rows follow :data:`SUM_FIELDS`.
    """
    y = _to_float64(y_true, xp)
    p = _to_float64(y_pred, xp)
    err = y - p
    terms = [xp.ones_like(y), y, xp.square(y), p, xp.square(p), y * p, xp.abs(err), xp.square(err)]
    if sample_weight is not None:
        w = xp.reshape(_to_float64(sample_weight, xp), (-1, 1))
        terms = [w * t for t in terms]
    return xp.stack([xp.sum(t, axis=0) for t in terms], axis=0)


def metrics_from_sums(
    sums: Any,
    xp: Any = np,
    empty_value: float = float("nan"),
    names: tuple[str, ...] | list[str] | None = None,
) -> dict[str, Any]:
    """Per-output metrics from accumulated :func:`batch_sums`.

    Args:
        sums: array of shape ``(len(SUM_FIELDS), n_outputs)``.
        xp: ``numpy`` or ``keras.ops``.
        empty_value: value of every metric for an output with no data
            (count 0); the Keras metrics pass 0.0.
        names: return only these metrics (a subset of :data:`METRIC_NAMES`,
            in this order); ``None`` returns all. Values do not depend on the
            choice. Inside a ``tf.function`` (Keras' train step) the ops of the
            metrics left out are pruned from the graph, so the fused training
            metric pays only for ``mae``, ``mse`` and ``r_squared``.

    Returns:
        Dict from each name in :data:`METRIC_NAMES` (or ``names``) to a vector
        of length ``n_outputs``:

        * ``r_squared`` = 1 - SS_res / SS_tot, not clipped. A constant target
          column (SS_tot <= ``CONSTANT_RTOL`` * sum_y2) follows
          ``sklearn.metrics.r2_score``: 1.0 if SS_res == 0, else 0.0.
        * ``pearson`` and ``ccc`` use population moments; Pearson is NaN when
          either column is constant, CCC is NaN only when its denominator is
          zero (both columns constant and equal). Both are clipped to [-1, 1]
          against rounding.
        * ``accuracy`` is the ChaLearn accuracy 1 - MAE.
    """
    wanted = METRIC_NAMES if names is None else tuple(names)
    if not set(wanted) <= set(METRIC_NAMES):
        raise ValueError(
            f"Invalid value for argument `names`. Expected a subset of {METRIC_NAMES}. Received: names={wanted}"
        )
    count, sum_y, sum_y2, sum_p, sum_p2, sum_yp, sum_abs, sum_sq = (sums[i] for i in range(len(SUM_FIELDS)))
    has_data = count > 0
    mae = _safe_div(sum_abs, count, has_data, 0.0, xp)
    mse = _safe_div(sum_sq, count, has_data, 0.0, xp)

    # Sums of squares / products about the mean (one pass, from the sums).
    ss_y = sum_y2 - _safe_div(sum_y * sum_y, count, has_data, 0.0, xp)
    ss_p = sum_p2 - _safe_div(sum_p * sum_p, count, has_data, 0.0, xp)
    sp_yp = sum_yp - _safe_div(sum_y * sum_p, count, has_data, 0.0, xp)
    varying_y = ss_y > CONSTANT_RTOL * sum_y2
    varying_p = ss_p > CONSTANT_RTOL * sum_p2
    ss_y = xp.where(varying_y, ss_y, 0.0)
    ss_p = xp.where(varying_p, ss_p, 0.0)
    both_vary = xp.logical_and(varying_y, varying_p)
    sp_yp = xp.where(both_vary, sp_yp, 0.0)  # |cov| <= sqrt(var_y var_p)

    r2_constant = xp.where(sum_sq == 0.0, 1.0, 0.0)
    r_squared = xp.where(varying_y, 1.0 - _safe_div(sum_sq, ss_y, varying_y, 0.0, xp), r2_constant)

    nan = float("nan")
    pearson = _safe_div(sp_yp, xp.sqrt(ss_y * ss_p), both_vary, nan, xp)
    mean_diff = _safe_div(sum_y - sum_p, count, has_data, 0.0, xp)
    # CCC = 2 cov / (var_y + var_p + (mean_y - mean_p)^2); n cancels out.
    ccc_den = ss_y + ss_p + count * mean_diff * mean_diff
    ccc = _safe_div(2.0 * sp_yp, ccc_den, ccc_den > 0.0, nan, xp)

    values = {
        "mae": mae,
        "mse": mse,
        "rmse": xp.sqrt(mse),
        "r_squared": r_squared,
        "pearson": xp.clip(pearson, -1.0, 1.0),
        "ccc": xp.clip(ccc, -1.0, 1.0),
        "accuracy": 1.0 - mae,
    }
    return {name: xp.where(has_data, values[name], empty_value) for name in wanted}


def _check_pair(y_true: Any, y_pred: Any, num_outputs: int) -> tuple[np.ndarray, np.ndarray]:
    """Both arrays as float64 of shape ``(n, num_outputs)``, or ValueError."""
    y = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(y_pred, dtype=np.float64)
    if y.shape != p.shape or y.ndim != 2 or y.shape[1] != num_outputs:
        raise ValueError(
            "Invalid shapes for `y_true` and `y_pred`. Expected two arrays of the "
            f"same shape (n, {num_outputs}). Received: y_true.shape={y.shape}, "
            f"y_pred.shape={p.shape}"
        )
    return y, p


class StreamingRegressionSums:
    """NumPy accumulator of :func:`batch_sums` for prediction runs done in batches.

    Example::

        acc = StreamingRegressionSums()
        for x, y in batches:
            acc.update(y, model.predict_on_batch(x))
        report = acc.report()
    """

    def __init__(self, num_outputs: int = NUM_TRAITS) -> None:
        self.num_outputs = num_outputs
        self.sums = np.zeros((len(SUM_FIELDS), num_outputs), dtype=np.float64)

    def update(self, y_true: Any, y_pred: Any) -> StreamingRegressionSums:
        """Add one batch of shape ``(batch, num_outputs)``; returns ``self``."""
        y, p = _check_pair(y_true, y_pred, self.num_outputs)
        self.sums += batch_sums(y, p)
        return self

    @property
    def count(self) -> int:
        """Number of rows seen so far."""
        return int(self.sums[0, 0]) if self.num_outputs else 0

    def result(self) -> dict[str, np.ndarray]:
        """Per-output metric vectors (see :func:`metrics_from_sums`)."""
        return metrics_from_sums(self.sums)

    def report(self, traits: tuple[str, ...] | list[str] = TRAITS) -> dict[str, Any]:
        """The :func:`regression_report` dict of everything seen so far."""
        if len(traits) != self.num_outputs:
            raise ValueError(
                f"Invalid value for argument `traits`. Expected {self.num_outputs} "
                f"names. Received: traits={tuple(traits)}"
            )
        per_output = self.result()
        return {
            "per_trait": {
                trait: {name: float(v[i]) for name, v in per_output.items()} for i, trait in enumerate(traits)
            },
            # Uniform average over traits (overall RMSE is the mean of the
            # per-trait RMSEs, not sqrt of the overall MSE).
            "overall": {name: float(np.mean(v)) for name, v in per_output.items()},
            "n": self.count,
        }


def regression_report(
    y_true: Any, y_pred: Any, traits: tuple[str, ...] | list[str] = TRAITS
) -> dict[str, Any]:
    """All metrics of a prediction set, per trait and averaged over traits.

    Args:
        y_true: labels, shape ``(n, len(traits))``.
        y_pred: predictions, same shape.
        traits: output names, in column order.

    Returns:
        ``{"per_trait": {trait: {metric: float}}, "overall": {metric: float},
        "n": int}`` with the metrics of :data:`METRIC_NAMES`; ``overall`` is
        the uniform average over traits.
    """
    return StreamingRegressionSums(len(traits)).update(y_true, y_pred).report(traits)


def baseline_predictions(train_label_means: Any, n: int) -> np.ndarray:
    """The mean-predictor baseline: ``train_label_means`` repeated on ``n`` rows."""
    means = np.asarray(train_label_means, dtype=np.float64)
    if means.ndim != 1:
        raise ValueError(
            "Invalid value for argument `train_label_means`. Expected a 1-D array "
            f"(one mean per trait). Received: shape={means.shape}"
        )
    return np.tile(means, (n, 1))
