"""Ridge warm start of the output layer's linear path (NumPy only: no Keras, no scikit-learn).

With ``ModelConfig.head_skip`` the output layer reads the fused vector
directly beside the hidden layer. For the ``pooled_query`` fusion the first
columns of that vector are the pooled, normalized streams
(``mean_t((x - mu) / sigma)``; a pooled ``(N, D)`` input is used whole), so a
ridge regression on exactly those features, fitted on the training split, can
be written into the output kernel: the untrained model then predicts (to first
order in the sigmoid) what ridge on pooled features predicts, and training
(with early stopping on the validation split) starts from the linear baseline
instead of from the mean. :func:`pooled_ridge_kernel` computes those rows.

The ridge fit is :func:`ridge_loo`, scikit-learn's ``RidgeCV(alphas,
alpha_per_target=True)`` (efficient leave-one-out, unpenalized intercept)
written in NumPy: importing scikit-learn costs a training run about 1.5 s
of start-up (docs/performance.md). ``tests/test_model.py`` checks the two agree.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

RIDGE_ALPHAS = np.logspace(-3, 5, 17)  # the grid of utils.synthetic.ridge_baseline
_CHUNK_ROWS = 4096


def read_rows(features: Any, indices: np.ndarray) -> np.ndarray:
    """``features[indices]`` as float64, in the order of ``indices``, read in ascending order (memory maps)."""
    order = np.argsort(indices)
    rows = np.empty((len(indices),) + tuple(features.shape[1:]), dtype="float64")
    rows[order] = np.asarray(features[indices[order]], dtype="float64")
    return rows


def pooled_features(
    features: Any, indices: np.ndarray, stats: tuple[np.ndarray, np.ndarray] | None
) -> np.ndarray:
    """The model's pooled summary of one stream for ``indices``: ``(n, D)`` float64.

    ``(N, T, D)`` tokens: the token mean of the normalized tokens; ``(N, D)``
    vectors: the normalized vector. Read chunk by chunk (memory-mapped input is fine).
    """
    dim = int(features.shape[-1])
    mean, var = stats if stats is not None else (np.zeros(dim), np.ones(dim))
    scale = np.sqrt(np.maximum(np.asarray(var, dtype="float64"), 1e-12))
    indices = np.asarray(indices)
    out = []
    for start in range(0, len(indices), _CHUNK_ROWS):
        rows = read_rows(features, indices[start : start + _CHUNK_ROWS])
        pooled = rows.mean(axis=1) if rows.ndim == 3 else rows
        out.append((pooled - np.asarray(mean, dtype="float64")) / scale)
    return np.concatenate(out) if out else np.zeros((0, dim))


def pooled_ridge_kernel(
    static: Any,
    dynamic: Any,
    labels: np.ndarray,
    train_idx: np.ndarray,
    static_stats: tuple[np.ndarray, np.ndarray] | None,
    dynamic_stats: tuple[np.ndarray, np.ndarray] | None,
) -> np.ndarray:
    """Output-kernel rows ``(D_s + D_d, 5)`` that make the linear path equal ridge on pooled features.

    ``RidgeCV`` (one penalty per trait by leave-one-out, on standardized
    features) is fitted on ``train_idx``. Its coefficients are mapped to the
    unstandardized pooled features and divided by ``p (1 - p)`` (``p``: the
    training-label mean), the slope of the sigmoid at the output bias, so that
    ``sigmoid(logit(p) + f @ kernel) ~= p + ridge(f) - mean(ridge)``.
    """
    train_idx = np.asarray(train_idx)
    features = np.hstack(
        [pooled_features(static, train_idx, static_stats), pooled_features(dynamic, train_idx, dynamic_stats)]
    )
    y = np.asarray(labels, dtype="float64")[train_idx]
    center = features.mean(axis=0)
    std = features.std(axis=0)
    std[std < 1e-12] = 1.0
    coef, alphas = ridge_loo((features - center) / std, y, RIDGE_ALPHAS)
    coef = coef / std[:, None]  # (features, 5) in pooled-feature units
    p = np.clip(y.mean(axis=0), 1e-3, 1 - 1e-3)
    logger.debug("ridge warm start: alphas %s", alphas.tolist())
    return coef / (p * (1.0 - p))[None, :]


def ridge_loo(
    x: np.ndarray, y: np.ndarray, alphas: np.ndarray, return_errors: bool = False
) -> tuple[np.ndarray, ...]:
    """Ridge with an unpenalized intercept, one penalty per target chosen by leave-one-out error.

    What ``sklearn.linear_model.RidgeCV(alphas, alpha_per_target=True).fit(x, y)``
    computes (its default generalized-CV mode, squared error): from one SVD of
    the centred ``x``, the leave-one-out residual of every clip is
    ``(y - y_hat) / (1 - h)`` with ``h`` the hat matrix diagonal (``1/n`` of it
    from the intercept); the first alpha with the lowest mean squared residual
    wins. Returns the coefficients ``(features, targets)`` and the chosen alphas
    (and with ``return_errors`` each target's mean squared leave-one-out residual at its alpha).
    """
    x = np.asarray(x, dtype="float64")
    y = np.asarray(y, dtype="float64")
    n = len(x)
    xc = x - x.mean(axis=0)
    yc = y - y.mean(axis=0)
    u, s, vt = np.linalg.svd(xc, full_matrices=False)
    s2 = s * s
    uty = u.T @ yc
    u2 = u * u
    best = np.full(y.shape[1], np.inf)
    chosen = np.zeros(y.shape[1])
    for alpha in np.asarray(alphas, dtype="float64"):
        shrink = s2 / (s2 + alpha)
        fitted = u @ (shrink[:, None] * uty)
        leverage = u2 @ shrink + 1.0 / n
        error = (((yc - fitted) / (1.0 - leverage)[:, None]) ** 2).mean(axis=0)
        better = error < best
        best[better], chosen[better] = error[better], alpha
    factors = s[:, None] / (s2[:, None] + chosen[None, :])  # (rank, targets)
    if return_errors:
        return vt.T @ (factors * uty), chosen, best
    return vt.T @ (factors * uty), chosen
