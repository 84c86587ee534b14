"""Moment start of the pooled-query attention and bilinear product (NumPy only, no Keras).

The ridge warm start (:mod:`models.linear_init`) puts the untrained model at
ridge on the pooled features. What ridge leaves, its residual ``r``, holds the
cross-modal part of the signal, and two cross-moments of the training rows
point at it:

* the **segment moment** ``E[s_a dev_tb r_i]`` (``s``: the pooled static
  stream; ``dev_t``: dynamic segment ``t`` minus the clip's mean segment). A
  static cue that weights the segments' content enters it as
  ``sum_j C_aj P_tj V_bi`` (the first-order expansion of the softmax), which
  is rank one between ``(a, t)`` and ``(b, i)``: its leading singular pair
  gives the static-by-position map ``A`` (then cut to rank ``k`` for the
  query and the position keys of the first attention head) and the value
  readout ``V`` (five value columns of that head);
* the **pooled moment** ``E[s_a d_b r_i]`` (``d``: the pooled dynamic stream):
  a static x dynamic product enters it as ``sum_k L_ik a_k b_k``; the leading
  left singular vectors of its two unfoldings give the static and dynamic
  directions whose pairwise products start the ``bilinear_rank`` columns.

Directions fitted to the training residual look better on those rows than
they are. So whether a block is used, and its output weights, come from
cross-fitting: the directions of each half of the training rows (aligned to
the directions of all rows) give the features of the other half; ridge with
leave-one-out penalties on the pooled features plus those out-of-fold
features picks the blocks that lower the leave-one-out error and gives the
output-layer rows. With no cross-modal signal the start is the ridge start.
``docs/accuracy.md`` ("Moment start") has what this changes.

All passes over the features read them in chunks (memory-mapped input is fine).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any

import numpy as np

from models.linear_init import RIDGE_ALPHAS, pooled_features, read_rows, ridge_loo

logger = logging.getLogger(__name__)

_CHUNK_ROWS = 2048
_MAX_SEGMENT_MOMENT = 4_000_000  # entries of E[s dev r] (D_s * T * D_d * 5) per fold; above it the attention keeps its init
ATTENTION_RANKS = (4, 8)  # candidate ranks of the static-by-position map written into the first head
LOGIT_SCALES = (0.5, 1.0, 2.0)  # candidate standard deviations of the first head's start logits
_FOLDS = 5  # cross-fitting folds of the training rows


@dataclasses.dataclass
class MomentStart:
    """Initial weights for :func:`apply_moment_start`; ``None`` where a block is not used."""

    skip_kernel: np.ndarray  # output-kernel rows for [s, d, attended (width), bilinear (rank)], logit units
    offset: np.ndarray  # (5,) subtracted from the output bias: the mean of (features @ skip_kernel)
    query: np.ndarray | None = None  # (D_s, k): first head's query columns
    position_key: np.ndarray | None = None  # (T, k): first head's position-key dimensions
    value: np.ndarray | None = None  # (D_d, 5): first head's value columns
    bilinear_static: np.ndarray | None = None  # (D_s, rank)
    bilinear_dynamic: np.ndarray | None = None  # (D_d, rank)
    blocks: tuple[str, ...] = ()


def _rows(features: Any, indices: np.ndarray, mean: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Normalized tokens ``(n, T, D)`` of ``indices`` (in their order)."""
    return (read_rows(features, indices) - mean) / scale


def _chunks(indices: np.ndarray) -> Any:
    for start in range(0, len(indices), _CHUNK_ROWS):
        yield slice(start, start + _CHUNK_ROWS)


def _leading(matrix: np.ndarray, k: int) -> np.ndarray:
    return np.linalg.svd(matrix, full_matrices=False)[0][:, :k]


def _procrustes(directions: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """``directions`` rotated to best match ``reference`` (orthogonal Procrustes)."""
    u, _, vt = np.linalg.svd(directions.T @ reference)
    return directions @ (u @ vt)


def _segment_map(moment: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Leading singular pair of the ``(a, t) x (b, i)`` unfolding: ``A`` (D_s, T) and ``V`` (D_d, 5), standardized units."""
    ds, t, dd, traits = moment.shape
    u, sv, vt = np.linalg.svd(moment.reshape(ds * t, dd * traits), full_matrices=False)
    return u[:, 0].reshape(ds, t) * sv[0], vt[0].reshape(dd, traits)


def _segment_directions(
    pair: tuple[np.ndarray, np.ndarray], s_std: np.ndarray, dev_std: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """``A`` cut to rank ``k`` and ``V``, both for unstandardized ``s`` and ``dev``."""
    a, v = pair
    ua, sa, vta = np.linalg.svd(a, full_matrices=False)
    a = (ua[:, :k] * sa[:k]) @ vta[:k]
    return a / s_std[:, None], v / dev_std[:, None]


def _pair_directions(moment: np.ndarray, s_std: np.ndarray, d_std: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    ds, dd, traits = moment.shape
    u = _leading(moment.reshape(ds, dd * traits), k)
    w = _leading(moment.transpose(1, 0, 2).reshape(dd, ds * traits), k)
    return u / s_std[:, None], w / d_std[:, None]


def _pairs(rank: int) -> tuple[int, list[tuple[int, int]]]:
    """``k`` directions per stream and the first ``rank`` index pairs (by ``max(j, l)``)."""
    k = math.isqrt(rank - 1) + 1
    pairs = sorted(((j, m) for j in range(k) for m in range(k)), key=lambda p: (max(p), p))
    return k, pairs[:rank]


def _bilinear_kernels(u: np.ndarray, w: np.ndarray, pairs: list[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
    return u[:, [j for j, _ in pairs]], w[:, [m for _, m in pairs]]


def _attended(s: np.ndarray, x: np.ndarray, a: np.ndarray, v: np.ndarray) -> np.ndarray:
    """The first head's attended value columns ``(n, 5)``: softmax over segments of ``s @ a``, times ``x @ v``."""
    logits = s @ a
    weights = np.exp(logits - logits.max(axis=1, keepdims=True))
    weights /= weights.sum(axis=1, keepdims=True)
    return np.einsum("nt,ntb,bi->ni", weights, x, v)


def _loo_error(x: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Ridge (LOO penalty per trait) on standardized ``x``: mean LOO error, coefficients for ``x - centre``, centre."""
    center, std = x.mean(axis=0), x.std(axis=0)
    std[std < 1e-12] = 1.0
    coef, _, errors = ridge_loo((x - center) / std, y, RIDGE_ALPHAS, return_errors=True)
    return float(np.mean(errors)), coef / std[:, None], center


@dataclasses.dataclass
class _Moments:
    """The training rows' pooled streams, ridge residual and cross-moments (per fold)."""

    s: np.ndarray  # (n, D_s) pooled static
    d: np.ndarray  # (n, D_d) pooled dynamic
    y: np.ndarray  # (n, 5) labels
    fold: np.ndarray  # (n,) fold of each row
    base_error: float  # ridge on pooled features: mean LOO error
    pair: np.ndarray  # (folds, D_s, D_d, 5) sums of s d r
    segment: np.ndarray | None  # (folds, D_s, T, D_d, 5) sums of s dev r, None when too large
    dev_std: np.ndarray  # (D_d,) standard deviation of the segment deviations

    @property
    def pooled(self) -> np.ndarray:
        return np.hstack([self.s, self.d])


def _moments(
    static: Any, dynamic: Any, y: np.ndarray, idx: np.ndarray, static_stats: Any, dynamic_stats: Any, segments: bool
) -> _Moments:
    s = pooled_features(static, idx, static_stats)
    d = pooled_features(dynamic, idx, dynamic_stats)
    pooled = np.hstack([s, d])
    base_error, coef, center = _loo_error(pooled, y)
    residual = y - y.mean(axis=0) - (pooled - center) @ coef
    residual /= np.maximum(residual.std(axis=0), 1e-12)
    fold = np.arange(len(idx)) % _FOLDS
    tokens, dd = int(dynamic.shape[1]), int(dynamic.shape[2])
    pair = np.stack([np.einsum("na,nb,ni->abi", s[fold == f], d[fold == f], residual[fold == f], optimize=True)
                     for f in range(_FOLDS)])
    dev_sq = np.zeros(dd)
    segment = None
    if segments and s.shape[1] * tokens * dd * y.shape[1] <= _MAX_SEGMENT_MOMENT:
        segment = np.zeros((_FOLDS, s.shape[1], tokens, dd, y.shape[1]))
        for part, x in _token_chunks(dynamic, idx, dynamic_stats):
            dev = x - x.mean(axis=1, keepdims=True)
            dev_sq += np.einsum("ntb,ntb->b", dev, dev)
            for f in range(_FOLDS):
                rows = fold[part] == f
                segment[f] += np.einsum("na,ntb,ni->atbi", s[part][rows], dev[rows], residual[part][rows], optimize=True)
    dev_std = np.sqrt(np.maximum(dev_sq / max(len(idx) * tokens, 1), 1e-12))
    return _Moments(s, d, y, fold, base_error, pair, segment, dev_std)


def _token_chunks(features: Any, idx: np.ndarray, stats: Any) -> Any:
    """``(slice, normalized tokens)`` over ``idx`` in chunks."""
    mean = np.asarray(stats[0], dtype="float64")
    scale = np.sqrt(np.maximum(np.asarray(stats[1], dtype="float64"), 1e-12))
    for part in _chunks(idx):
        yield part, _rows(features, idx[part], mean, scale)


def _bilinear_candidate(m: _Moments, rank: int) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """Out-of-fold bilinear features ``(n, rank)`` and the kernels from all rows."""
    s_std, d_std = np.maximum(m.s.std(axis=0), 1e-12), np.maximum(m.d.std(axis=0), 1e-12)
    k, pairs = _pairs(rank)
    k = min(k, m.s.shape[1], m.d.shape[1])
    pairs = [(j, m_) for j, m_ in pairs if j < k and m_ < k]
    total = m.pair.sum(axis=0)
    u_all, w_all = _pair_directions(total, s_std, d_std, k)
    oof = np.zeros((len(m.s), rank))
    for f in range(_FOLDS):
        u_f, w_f = _pair_directions(total - m.pair[f], s_std, d_std, k)
        bs, bd = _bilinear_kernels(_procrustes(u_f, u_all), _procrustes(w_f, w_all), pairs)
        rows = m.fold == f
        oof[rows, : len(pairs)] = (m.s[rows] @ bs) * (m.d[rows] @ bd)
    # fewer pairs than the rank when a stream has fewer than k features: the other columns keep their init
    return oof[:, : len(pairs)], _bilinear_kernels(u_all, w_all, pairs)


def _attention_candidates(
    m: _Moments, dynamic: Any, idx: np.ndarray, dynamic_stats: Any, head_dim: int
) -> dict[tuple[float, float, int], tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]]:
    """Out-of-fold first-head features ``(n, 5)`` and ``(A, V)`` from all rows, per (sign, logit scale, rank)."""
    s_std = np.maximum(m.s.std(axis=0), 1e-12)
    total = m.segment.sum(axis=0)
    maps = [_segment_map(total)] + [_segment_map(total - m.segment[f]) for f in range(_FOLDS)]
    tokens = m.segment.shape[2]
    plans = {}  # (sign, scale, rank) -> (per-fold (A, V) with the logit scale, all-rows (A, V))
    for rank in sorted({min(r, head_dim, m.s.shape[1], tokens) for r in ATTENTION_RANKS}):
        a_all, v_all = _segment_directions(maps[0], s_std, m.dev_std, rank)
        folds = []
        for f in range(_FOLDS):
            a_f, v_f = _segment_directions(maps[f + 1], s_std, m.dev_std, rank)
            sign = 1.0 if np.sum(a_f * a_all) >= 0 else -1.0
            folds.append((sign * a_f, sign * v_f))
        z_std = max(float((m.s @ a_all).std()), 1e-12)
        for sign in (1.0, -1.0):
            for scale in LOGIT_SCALES:
                plans[(sign, scale, rank)] = (
                    [(sign * a_f * scale / z_std, v_f) for a_f, v_f in folds],
                    (sign * a_all * scale / z_std, v_all),
                )
    features = {key: np.zeros((len(m.s), m.y.shape[1])) for key in plans}
    for part, x in _token_chunks(dynamic, idx, dynamic_stats):  # one pass over the tokens for every candidate
        for f in range(_FOLDS):
            rows = m.fold[part] == f
            s_rows, x_rows = m.s[part][rows], x[rows]
            for key, (folds, _) in plans.items():
                features[key][part][rows] = _attended(s_rows, x_rows, *folds[f])
    return {key: (features[key], plans[key][1]) for key in plans}


def moment_start(
    static: Any,
    dynamic: Any,
    labels: np.ndarray,
    train_idx: np.ndarray,
    static_stats: tuple[np.ndarray, np.ndarray],
    dynamic_stats: tuple[np.ndarray, np.ndarray],
    width: int,
    head_dim: int,
    bilinear_rank: int,
    attention: bool = True,
) -> MomentStart | None:
    """The cross-fitted moment start for ``(N, T, D)`` token inputs, or ``None`` (ridge start).

    ``width`` and ``bilinear_rank``: the attended vector's and the bilinear
    product's widths in the fused vector (their rows of the skip kernel).
    ``attention``: whether the first head may be started (its keys must be
    position codes alone, so that its logits are the start's; it needs at
    least five dimensions, one value column per trait).
    """
    if static.ndim != 3 or dynamic.ndim != 3 or len(train_idx) < 8 * _FOLDS:
        return None
    idx = np.asarray(train_idx)
    y = np.asarray(labels, dtype="float64")[idx]
    attention = attention and head_dim >= y.shape[1]
    m = _moments(static, dynamic, y, idx, static_stats, dynamic_stats, segments=attention)
    bilinear = _bilinear_candidate(m, bilinear_rank) if bilinear_rank else None
    heads = _attention_candidates(m, dynamic, idx, dynamic_stats, head_dim) if m.segment is not None else {}
    # every combination: no block, the bilinear block, one attention candidate, both; lowest LOO error wins
    best: tuple[float, Any, bool] = (m.base_error * (1.0 - 1e-4), None, False)
    for key in [None, *heads]:
        for use_bilinear in (False, True) if bilinear is not None else (False,):
            blocks = ([heads[key][0]] if key else []) + ([bilinear[0]] if use_bilinear else [])
            if blocks:
                error = _loo_error(np.hstack([m.pooled, *blocks]), m.y)[0]
                if error < best[0]:
                    best = (error, key, use_bilinear)
    error, key, use_bilinear = best
    if key is None and not use_bilinear:
        return None
    blocks = ([heads[key][0]] if key else []) + ([bilinear[0]] if use_bilinear else [])
    _, coef, center = _loo_error(np.hstack([m.pooled, *blocks]), m.y)
    p = np.clip(m.y.mean(axis=0), 1e-3, 1 - 1e-3)
    coef = coef / (p * (1.0 - p))[None, :]
    raw = m.pooled.shape[1]
    start = MomentStart(skip_kernel=np.zeros((raw + width + bilinear_rank, m.y.shape[1])), offset=center @ coef)
    start.skip_kernel[:raw] = coef[:raw]
    used = raw
    if key is not None:
        a, v = heads[key][1]
        ua, sa, vta = np.linalg.svd(a, full_matrices=False)
        root = np.sqrt(sa[: key[2]] * math.sqrt(head_dim))  # the layer divides its logits by sqrt(head_dim)
        start.query, start.position_key, start.value = ua[:, : key[2]] * root, vta[: key[2]].T * root, v
        start.skip_kernel[raw : raw + v.shape[1]] = coef[used : used + v.shape[1]]
        used += v.shape[1]
        start.blocks += (f"attention (sign {key[0]:+.0f}, logit scale {key[1]}, rank {key[2]})",)
    if use_bilinear:
        start.bilinear_static, start.bilinear_dynamic = bilinear[1]
        count = bilinear[0].shape[1]
        start.skip_kernel[raw + width : raw + width + count] = coef[used : used + count]
        start.blocks += (f"bilinear ({count} products)",)
    logger.info("moment start: %s (LOO error %.5f, pooled ridge %.5f)", "; ".join(start.blocks), error, m.base_error)
    return start


def apply_moment_start(model: Any, start: MomentStart) -> None:
    """Write ``start`` into a built pooled-query model (first head, bilinear kernels, output layer)."""
    fusion = model.get_layer("fusion")
    if start.query is not None:
        k = start.query.shape[1]
        head_dim = fusion.head_dim
        kernel = np.array(fusion.query.kernel.numpy())
        kernel[:, :head_dim] = 0.0
        kernel[:, :k] = start.query
        fusion.query.kernel.assign(kernel)
        keys = np.array(fusion.position_key.numpy())
        keys[:, 0, :] = 0.0
        keys[:, 0, :k] = start.position_key
        fusion.position_key.assign(keys)
        value = np.array(fusion.value.kernel.numpy())
        value[:, : start.value.shape[1]] = start.value
        fusion.value.kernel.assign(value)
    if start.bilinear_static is not None:
        rank = start.bilinear_static.shape[1]
        for dense, columns in zip(fusion.bilinear, (start.bilinear_static, start.bilinear_dynamic)):
            kernel = np.array(dense.kernel.numpy())
            kernel[:, :rank] = columns
            dense.kernel.assign(kernel)
    output = model.get_layer("traits")
    bias = np.array(output.bias.numpy()) - start.offset
    output.bias.assign(bias.astype("float32"))


__all__ = ["ATTENTION_RANKS", "LOGIT_SCALES", "MomentStart", "apply_moment_start", "moment_start"]
