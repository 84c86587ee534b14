"""Synthetic Big Five data with a planted, partly fusion-only signal.

The generator writes the three files the toolkit reads (static tokens
``(N, T_s, D_s)``, dynamic tokens ``(N, T_d, D_d)``, labels ``(N, 5)`` in
[0, 1]) so that a model has something real to learn, and so that we know how
much there is to learn.

Features
    Every token is ``sqrt(rho) * u + sqrt(1 - rho) * e``: a clip-level vector
    ``u`` shared by all tokens of a stream plus token-level variation ``e``,
    both standard normal (``rho`` = ``token_correlation``). Each element thus
    has mean 0 and variance 1.

Signal (per trait, three parts, each of unit variance)
    * static part: read out from the mean-pooled static vector, a linear
      projection plus (``nonlinearity`` of its variance) a centred square of a
      second projection;
    * dynamic part: the same kind of readout of the mean-pooled dynamic vector;
    * interaction part: a planted attention. A query computed from the pooled
      static vector scores every dynamic token (its deviation from the token
      mean, through a fixed key projection); a softmax with a low temperature
      picks a few tokens; a fixed value projection of the attended deviations
      is the readout. Values are orthogonal to keys and pooled vectors, so the
      part has conditional mean 0 given both pooled vectors: no function of the
      pooled features (linear or not) predicts it, while it is a deterministic
      function of the tokens. Averaged over the static query it keeps about 5%
      of its variance, so a dynamic-only model does not recover it either.

Labels
    ``signal = sqrt(f_s) S + sqrt(f_d) D + sqrt(f_i) I`` (unit variance;
    fractions default 0.3 / 0.3 / 0.4), latent
    ``z = sqrt(1 - noise_fraction) * signal + sqrt(noise_fraction) * eps``,
    traits correlated by ``z @ L.T`` with ``L`` the Cholesky factor of the
    First Impressions trait correlation matrix (applied to signal and noise
    alike, so each trait keeps its signal fraction), scaled to the First
    Impressions means and standard deviations and clipped to [0, 1] (about
    0.1% of values). The Bayes predictor ``E[y | x]`` (``SyntheticData.signal``)
    accounts for the clipping exactly; its R² is the noise ceiling, about
    ``1 - noise_fraction``.

Reproducibility
    Fixed projections come from ``seed``; the per-sample randomness comes in
    blocks of :data:`BLOCK_SIZE` samples, block ``b`` from a generator seeded
    with ``(seed, b)``, and every block is drawn and computed whole. So the
    arrays do not depend on how they are chunked, a larger ``n_samples`` only
    appends samples, and :func:`write_dataset` (chunked, memory-mapped) writes
    the same bytes as :func:`generate` followed by ``np.save``.

No TensorFlow here.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from utils.constants import (
    DYNAMIC_FEATURES_FILE,
    LABELS_FILE,
    NUM_TRAITS,
    STATIC_FEATURES_FILE,
    TRAITS,
)
from utils.data import split_indices  # the trainer's split, so figures compare

logger = logging.getLogger(__name__)

# ChaLearn First Impressions V2 training labels (docs/domain.md), OCEAN order.
FIRST_IMPRESSIONS_MEANS = np.array([0.566, 0.523, 0.476, 0.548, 0.520])
FIRST_IMPRESSIONS_STDS = np.array([0.147, 0.155, 0.152, 0.136, 0.154])
FIRST_IMPRESSIONS_CORRELATION = np.array(
    [
        [1.000, 0.583, 0.774, 0.649, 0.774],
        [0.583, 1.000, 0.589, 0.658, 0.720],
        [0.774, 0.589, 1.000, 0.711, 0.796],
        [0.649, 0.658, 0.711, 1.000, 0.733],
        [0.774, 0.720, 0.796, 0.733, 1.000],
    ]
)
# Token shapes of the real features: VGG-Face conv5 7x7 grid, I3D segments.
FIRST_IMPRESSIONS_SHAPES: dict[str, int] = {
    "static_tokens": 49,
    "static_dim": 512,
    "dynamic_tokens": 16,
    "dynamic_dim": 1024,
}

# Samples per unit of randomness: block b is drawn from a generator seeded by
# (seed, b) and always computed whole, whatever the chunking.
BLOCK_SIZE = 64
# Default chunk of write_dataset: about this many bytes of features.
DEFAULT_CHUNK_BYTES = 256 * 2**20
SUPPORTED_DTYPES: tuple[str, ...] = ("float16", "float32", "float64")
COMPONENTS: tuple[str, ...] = ("static", "dynamic", "interaction", "noise")
# Kinds of the fusion-only ("interaction") part of the signal:
#   attention:   softmax over dynamic tokens of (pooled-static query . content key),
#                value readout of the attended deviations (third order, the seed's design);
#   product:     (pooled static . a) x (pooled dynamic . b), one pair of directions per trait;
#   cue_segment: softmax over dynamic segments of (pooled-static cue . fixed position code),
#                value readout of the chosen segment's deviation (a cue picks the segment).
INTERACTION_KINDS: tuple[str, ...] = ("attention", "product", "cue_segment")

_WEIGHTS_STREAM = 0
_BLOCK_STREAM = 1
# Weights of the product and cue_segment kinds (a stream of their own, so the
# "attention" data sets keep their bytes).
_EXTRA_WEIGHTS_STREAM = 2
# The attention normalising constant is a Monte Carlo estimate with its own
# fixed seed, so it depends only on (dynamic_tokens, key_dim, temperature).
_CALIBRATION_SEED = 20240601
_CALIBRATION_DRAWS = 2**17


@dataclass(frozen=True)
class SyntheticSpec:
    """Everything that determines a synthetic data set (same spec, same bytes).

    Attributes:
        n_samples: number of clips N.
        static_tokens, static_dim: static token grid ``(T_s, D_s)``.
        dynamic_tokens, dynamic_dim: dynamic token sequence ``(T_d, D_d)``.
        seed: non-negative integer seed of everything random.
        dtype: feature dtype on disk (labels are always float32).
        static_fraction, dynamic_fraction, interaction_fraction: shares of the
            signal variance from each part; they must sum to 1.
        noise_fraction: share of each trait's latent variance that is
            independent noise; the noise ceiling R² is about ``1 - noise_fraction``.
        nonlinearity: share of each single-stream part from a centred square
            (the rest is linear in the pooled features).
        token_correlation: variance share of the clip-level vector in each token.
        key_dim: width of the planted attention's query and keys.
        attention_temperature: softmax temperature of the planted attention
            (scores have unit variance before it; 0.3 puts about 0.6 of the
            weight on the top token of 16).
        interaction: kind of the fusion part (:data:`INTERACTION_KINDS`):
            ``"attention"`` (content keys, third order, the seed's design),
            ``"product"`` (pooled static x pooled dynamic) or
            ``"cue_segment"`` (a static cue picks a dynamic segment by its
            position). ``interaction_fraction=0`` gives a pooled-only set.
    """

    n_samples: int
    static_tokens: int = 16
    static_dim: int = 64
    dynamic_tokens: int = 16
    dynamic_dim: int = 128
    seed: int = 0
    dtype: str = "float32"
    static_fraction: float = 0.3
    dynamic_fraction: float = 0.3
    interaction_fraction: float = 0.4
    noise_fraction: float = 0.35
    nonlinearity: float = 0.2
    token_correlation: float = 0.5
    key_dim: int = 8
    attention_temperature: float = 0.3
    interaction: str = "attention"

    def __post_init__(self) -> None:
        for name in ("n_samples", "static_tokens", "static_dim", "dynamic_tokens", "dynamic_dim", "key_dim"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(
                    f"Invalid value for `{name}`. Expected a positive integer. Received: {name}={value!r}"
                )
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise ValueError(
                f"Invalid value for `seed`. Expected an integer >= 0. Received: seed={self.seed!r}"
            )
        for name in ("static_tokens", "dynamic_tokens"):
            if getattr(self, name) < 2:
                raise ValueError(
                    f"Invalid value for `{name}`. Expected at least 2 tokens (attention over one token is "
                    f"degenerate). Received: {name}={getattr(self, name)}"
                )
        if self.interaction not in INTERACTION_KINDS:
            raise ValueError(
                f"Invalid value for `interaction`. Expected one of {INTERACTION_KINDS}. "
                f"Received: interaction={self.interaction!r}"
            )
        if self.dtype not in SUPPORTED_DTYPES:
            raise ValueError(
                f"Invalid value for `dtype`. Expected one of {SUPPORTED_DTYPES}. Received: dtype={self.dtype!r}"
            )
        min_static = 2 * NUM_TRAITS + self.key_dim
        if self.static_dim < min_static:
            raise ValueError(
                f"Invalid value for `static_dim`. Expected at least {min_static} (2 x {NUM_TRAITS} readout "
                f"directions + key_dim={self.key_dim} query directions). Received: static_dim={self.static_dim}"
            )
        min_dynamic = max(2 * NUM_TRAITS, self.key_dim + NUM_TRAITS)
        if self.dynamic_dim < min_dynamic:
            raise ValueError(
                f"Invalid value for `dynamic_dim`. Expected at least {min_dynamic} (key_dim={self.key_dim} key "
                f"+ {NUM_TRAITS} value directions). Received: dynamic_dim={self.dynamic_dim}"
            )
        fractions = (self.static_fraction, self.dynamic_fraction, self.interaction_fraction)
        if any(not (f >= 0.0) for f in fractions) or abs(sum(fractions) - 1.0) > 1e-9:
            raise ValueError(
                "Invalid signal fractions. Expected three non-negative numbers summing to 1. Received: "
                f"static_fraction={self.static_fraction}, dynamic_fraction={self.dynamic_fraction}, "
                f"interaction_fraction={self.interaction_fraction}"
            )
        for name in ("noise_fraction", "nonlinearity", "token_correlation"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(
                    f"Invalid value for `{name}`. Expected a number in [0, 1). Received: {name}={value!r}"
                )
        if not (self.attention_temperature > 0.0) or not math.isfinite(self.attention_temperature):
            raise ValueError(
                "Invalid value for `attention_temperature`. Expected a positive finite number. "
                f"Received: attention_temperature={self.attention_temperature!r}"
            )

    @property
    def static_shape(self) -> tuple[int, int, int]:
        """Shape of the static feature array."""
        return (self.n_samples, self.static_tokens, self.static_dim)

    @property
    def dynamic_shape(self) -> tuple[int, int, int]:
        """Shape of the dynamic feature array."""
        return (self.n_samples, self.dynamic_tokens, self.dynamic_dim)

    @property
    def feature_bytes_per_sample(self) -> int:
        """Bytes of static plus dynamic features per clip."""
        size = self.static_tokens * self.static_dim + self.dynamic_tokens * self.dynamic_dim
        return size * np.dtype(self.dtype).itemsize


@dataclass(frozen=True)
class SyntheticData:
    """A generated data set held in memory.

    Attributes:
        static: ``(N, T_s, D_s)`` features in ``spec.dtype``.
        dynamic: ``(N, T_d, D_d)`` features in ``spec.dtype``.
        labels: ``(N, 5)`` float32 in [0, 1].
        signal: ``(N, 5)`` float64, ``E[labels | features]`` (the Bayes predictor).
        components: ``(N, 5)`` float64 unit-variance parts before mixing and
            trait correlation: ``static``, ``dynamic``, ``interaction``, ``noise``.
    """

    static: np.ndarray
    dynamic: np.ndarray
    labels: np.ndarray
    signal: np.ndarray
    components: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass(frozen=True)
class _Weights:
    """Fixed projections drawn from the seed (columns orthonormal per stream)."""

    static_linear: np.ndarray  # (D_s, 5)
    static_square: np.ndarray  # (D_s, 5)
    query: np.ndarray  # (D_s, key_dim)
    dynamic_linear: np.ndarray  # (D_d, 5)
    dynamic_square: np.ndarray  # (D_d, 5)
    key: np.ndarray  # (D_d, key_dim)
    value: np.ndarray  # (D_d, 5)
    interaction_scale: float
    cholesky: np.ndarray  # (5, 5) lower triangular
    product_static: np.ndarray  # (D_s, 5)
    product_dynamic: np.ndarray  # (D_d, 5)
    cue: np.ndarray  # (D_s, key_dim)
    positions: np.ndarray  # (T_d, key_dim), rows of norm sqrt(key_dim)
    cue_value: np.ndarray  # (D_d, 5)
    cue_scale: float


def _orthonormal(rng: np.random.Generator, dim: int, count: int) -> np.ndarray:
    """``count`` orthonormal columns in ``dim`` dimensions (sign-fixed QR)."""
    q, r = np.linalg.qr(rng.standard_normal((dim, count)))
    return q * np.where(np.diag(r) < 0, -1.0, 1.0)


@functools.lru_cache(maxsize=32)
def _interaction_scale(tokens: int, key_dim: int, temperature: float) -> float:
    """Constant that gives the attention readout unit variance.

    Given the attention weights ``a``, the readout of standardized token
    deviations has variance ``(T |a|^2 - 1) / (T - 1)``; its expectation over
    queries and keys is estimated once by Monte Carlo with a fixed seed.
    """
    rng = np.random.default_rng(_CALIBRATION_SEED)
    total = 0.0
    draws_per_batch = 2**14
    for _ in range(_CALIBRATION_DRAWS // draws_per_batch):
        tokens_ = rng.standard_normal((draws_per_batch, tokens, key_dim))
        keys = (tokens_ - tokens_.mean(axis=1, keepdims=True)) / math.sqrt(1.0 - 1.0 / tokens)
        query = rng.standard_normal((draws_per_batch, key_dim))
        weights = _softmax(np.einsum("ntk,nk->nt", keys, query) / (math.sqrt(key_dim) * temperature))
        total += float(np.sum((tokens * np.sum(weights**2, axis=1) - 1.0) / (tokens - 1.0)))
    return 1.0 / math.sqrt(total / _CALIBRATION_DRAWS)


def _softmax(scores: np.ndarray) -> np.ndarray:
    """Softmax over the last axis."""
    shifted = np.exp(scores - scores.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


@functools.lru_cache(maxsize=8)
def _weights(spec: SyntheticSpec) -> _Weights:
    """The fixed projections of ``spec`` (they depend on its seed and shapes only)."""
    rng = np.random.default_rng(np.random.SeedSequence(spec.seed, spawn_key=(_WEIGHTS_STREAM,)))
    k, t = spec.key_dim, NUM_TRAITS
    static = _orthonormal(rng, spec.static_dim, 2 * t + k)
    pooled_dynamic = _orthonormal(rng, spec.dynamic_dim, 2 * t)
    deviations = _orthonormal(rng, spec.dynamic_dim, k + t)
    extra = np.random.default_rng(np.random.SeedSequence(spec.seed, spawn_key=(_EXTRA_WEIGHTS_STREAM,)))
    product_static = _orthonormal(extra, spec.static_dim, t)
    product_dynamic = _orthonormal(extra, spec.dynamic_dim, t)
    cue = _orthonormal(extra, spec.static_dim, k)
    positions = extra.standard_normal((spec.dynamic_tokens, k))
    positions *= math.sqrt(k) / np.linalg.norm(positions, axis=1, keepdims=True)
    cue_value = _orthonormal(extra, spec.dynamic_dim, t)
    return _Weights(
        static_linear=static[:, :t],
        static_square=static[:, t : 2 * t],
        query=static[:, 2 * t :],
        dynamic_linear=pooled_dynamic[:, :t],
        dynamic_square=pooled_dynamic[:, t:],
        key=deviations[:, :k],
        value=deviations[:, k:],
        interaction_scale=_interaction_scale(spec.dynamic_tokens, k, spec.attention_temperature),
        cholesky=np.linalg.cholesky(FIRST_IMPRESSIONS_CORRELATION),
        product_static=product_static,
        product_dynamic=product_dynamic,
        cue=cue,
        positions=positions,
        cue_value=cue_value,
        cue_scale=_cue_scale(positions, spec.attention_temperature),
    )


def _cue_attention(cue: np.ndarray, positions: np.ndarray, temperature: float) -> np.ndarray:
    """``(n, T_d)`` softmax over segments of ``cue . position_t`` (unit-variance scores / temperature)."""
    k = positions.shape[1]
    return _softmax(cue @ positions.T / (k * temperature))


def _cue_scale(positions: np.ndarray, temperature: float) -> float:
    """Constant that gives the cue-selected readout unit variance (Monte Carlo, fixed seed).

    The readout ``sum_t a_t v.dev_t`` of standardized deviations has variance
    ``(T |a|^2 - 1) / (T - 1)`` given the weights ``a``; averaged over cues.
    """
    rng = np.random.default_rng(_CALIBRATION_SEED)
    tokens = positions.shape[0]
    weights = _cue_attention(rng.standard_normal((_CALIBRATION_DRAWS // 4, positions.shape[1])), positions, temperature)
    variance = float(np.mean((tokens * np.sum(weights**2, axis=1) - 1.0) / (tokens - 1.0)))
    return 1.0 / math.sqrt(variance)


def _pooled_readout(
    pooled: np.ndarray, linear: np.ndarray, square: np.ndarray, nonlinearity: float
) -> np.ndarray:
    """Unit-variance readout: linear projection plus a centred square of another."""
    return math.sqrt(1.0 - nonlinearity) * (pooled @ linear) + math.sqrt(nonlinearity / 2.0) * (
        (pooled @ square) ** 2 - 1.0
    )


def _components_from_features(
    spec: SyntheticSpec, static: np.ndarray, dynamic: np.ndarray
) -> dict[str, np.ndarray]:
    """Static, dynamic and interaction parts (each ``(n, 5)``, unit variance) of stored features."""
    w = _weights(spec)
    rho = spec.token_correlation
    # Pooled vectors, standardized with their known variance rho + (1 - rho) / T.
    static_pooled = static.mean(axis=1, dtype=np.float64) / math.sqrt(rho + (1.0 - rho) / spec.static_tokens)
    dynamic_mean = dynamic.mean(axis=1, dtype=np.float64)
    dynamic_pooled = dynamic_mean / math.sqrt(rho + (1.0 - rho) / spec.dynamic_tokens)
    # Token deviations from the clip's token mean: independent of both pooled vectors.
    deviations = (dynamic.astype(np.float64) - dynamic_mean[:, None, :]) / math.sqrt(
        (1.0 - rho) * (1.0 - 1.0 / spec.dynamic_tokens)
    )
    if spec.interaction == "product":
        # Both factors are standard normal and independent: unit variance, mean 0.
        interaction = (static_pooled @ w.product_static) * (dynamic_pooled @ w.product_dynamic)
    elif spec.interaction == "cue_segment":
        attention = _cue_attention(static_pooled @ w.cue, w.positions, spec.attention_temperature)
        interaction = w.cue_scale * np.einsum("nt,ntj->nj", attention, deviations @ w.cue_value)
    else:
        query = static_pooled @ w.query  # (n, key_dim)
        keys = deviations @ w.key  # (n, T_d, key_dim)
        values = deviations @ w.value  # (n, T_d, 5)
        scores = np.einsum("ntk,nk->nt", keys, query) / (math.sqrt(spec.key_dim) * spec.attention_temperature)
        attention = _softmax(scores)  # (n, T_d), rows sum to 1
        interaction = w.interaction_scale * np.einsum("nt,ntj->nj", attention, values)
    return {
        "static": _pooled_readout(static_pooled, w.static_linear, w.static_square, spec.nonlinearity),
        "dynamic": _pooled_readout(dynamic_pooled, w.dynamic_linear, w.dynamic_square, spec.nonlinearity),
        "interaction": interaction,
    }


def _mixed_signal(spec: SyntheticSpec, components: dict[str, np.ndarray]) -> np.ndarray:
    """Unit-variance signal per trait before trait correlation."""
    return (
        math.sqrt(spec.static_fraction) * components["static"]
        + math.sqrt(spec.dynamic_fraction) * components["dynamic"]
        + math.sqrt(spec.interaction_fraction) * components["interaction"]
    )


def _expected_clipped(mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """``E[clip(X, 0, 1)]`` for ``X ~ N(mean, std^2)`` (elementwise, std > 0)."""
    from scipy.special import ndtr

    alpha = (0.0 - mean) / std
    beta = (1.0 - mean) / std
    pdf_alpha = np.exp(-0.5 * alpha**2) / math.sqrt(2.0 * math.pi)
    pdf_beta = np.exp(-0.5 * beta**2) / math.sqrt(2.0 * math.pi)
    inside = mean * (ndtr(beta) - ndtr(alpha)) + std * (pdf_alpha - pdf_beta)
    return inside + (1.0 - ndtr(beta))


def _bayes_predictor(spec: SyntheticSpec, mixed: np.ndarray) -> np.ndarray:
    """``E[label | features]`` from the mixed signal, clipping included."""
    w = _weights(spec)
    mean = FIRST_IMPRESSIONS_MEANS + FIRST_IMPRESSIONS_STDS * math.sqrt(1.0 - spec.noise_fraction) * (
        mixed @ w.cholesky.T
    )
    if spec.noise_fraction == 0.0:
        return np.clip(mean, 0.0, 1.0)
    noise_std = FIRST_IMPRESSIONS_STDS * math.sqrt(spec.noise_fraction)  # rows of L have unit norm
    return _expected_clipped(mean, np.broadcast_to(noise_std, mean.shape))


def _generate_block(spec: SyntheticSpec, block: int) -> SyntheticData:
    """All ``BLOCK_SIZE`` samples of block ``block`` (drawn and computed whole)."""
    rng = np.random.default_rng(np.random.SeedSequence(spec.seed, spawn_key=(_BLOCK_STREAM, block)))
    shared, own = math.sqrt(spec.token_correlation), math.sqrt(1.0 - spec.token_correlation)
    n = BLOCK_SIZE
    static_clip = rng.standard_normal((n, spec.static_dim), dtype=np.float32)
    static = shared * static_clip[:, None, :] + own * rng.standard_normal(
        (n, spec.static_tokens, spec.static_dim), dtype=np.float32
    )
    dynamic_clip = rng.standard_normal((n, spec.dynamic_dim), dtype=np.float32)
    dynamic = shared * dynamic_clip[:, None, :] + own * rng.standard_normal(
        (n, spec.dynamic_tokens, spec.dynamic_dim), dtype=np.float32
    )
    noise = rng.standard_normal((n, NUM_TRAITS))
    static = static.astype(spec.dtype, copy=False)
    dynamic = dynamic.astype(spec.dtype, copy=False)

    components = _components_from_features(spec, static, dynamic)
    components["noise"] = noise
    mixed = _mixed_signal(spec, components)
    latent = math.sqrt(1.0 - spec.noise_fraction) * mixed + math.sqrt(spec.noise_fraction) * noise
    correlated = latent @ _weights(spec).cholesky.T
    labels = np.clip(FIRST_IMPRESSIONS_MEANS + FIRST_IMPRESSIONS_STDS * correlated, 0.0, 1.0).astype(
        np.float32
    )
    return SyntheticData(static, dynamic, labels, _bayes_predictor(spec, mixed), components)


def _slice(data: SyntheticData, lo: int, hi: int) -> SyntheticData:
    """Rows ``lo:hi`` of ``data`` (views)."""
    return SyntheticData(
        static=data.static[lo:hi],
        dynamic=data.dynamic[lo:hi],
        labels=data.labels[lo:hi],
        signal=data.signal[lo:hi],
        components={name: array[lo:hi] for name, array in data.components.items()},
    )


def _iter_pieces(spec: SyntheticSpec, start: int, stop: int) -> Iterator[tuple[int, SyntheticData]]:
    """``(first_row, rows)`` pieces covering ``start:stop``, one block at a time."""
    if not 0 <= start <= stop <= spec.n_samples:
        raise ValueError(
            f"Invalid range. Expected 0 <= start <= stop <= {spec.n_samples}. Received: start={start}, stop={stop}"
        )
    for block in range(start // BLOCK_SIZE, -(-stop // BLOCK_SIZE)):
        first = block * BLOCK_SIZE
        lo, hi = max(start - first, 0), min(stop - first, BLOCK_SIZE)
        yield first + lo, _slice(_generate_block(spec, block), lo, hi)


def generate_range(spec: SyntheticSpec, start: int, stop: int) -> SyntheticData:
    """Samples ``start:stop`` of the data set ``spec`` describes.

    The result equals the same rows of :func:`generate` bit for bit: the
    blocks overlapping the range are generated whole and then sliced.
    """
    pieces = [piece for _, piece in _iter_pieces(spec, start, stop)]
    if not pieces:
        pieces = [_slice(_generate_block(spec, 0), 0, 0)]

    def cat(arrays: list[np.ndarray]) -> np.ndarray:
        return arrays[0].copy() if len(arrays) == 1 else np.concatenate(arrays)

    return SyntheticData(
        static=cat([p.static for p in pieces]),
        dynamic=cat([p.dynamic for p in pieces]),
        labels=cat([p.labels for p in pieces]),
        signal=cat([p.signal for p in pieces]),
        components={name: cat([p.components[name] for p in pieces]) for name in COMPONENTS},
    )


def generate(spec: SyntheticSpec) -> SyntheticData:
    """The whole data set in memory (for sizes that fit; see :func:`write_dataset`)."""
    return generate_range(spec, 0, spec.n_samples)


def _chunk_rows(spec: SyntheticSpec, chunk_size: int | None) -> int:
    """Samples per chunk: ``chunk_size`` or about DEFAULT_CHUNK_BYTES of features."""
    if chunk_size is None:
        rows = DEFAULT_CHUNK_BYTES // spec.feature_bytes_per_sample
        return max(BLOCK_SIZE, rows // BLOCK_SIZE * BLOCK_SIZE)
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1:
        raise ValueError(
            f"Invalid value for `chunk_size`. Expected a positive integer or None. Received: chunk_size={chunk_size!r}"
        )
    return int(chunk_size)


def write_dataset(
    spec: SyntheticSpec, output_dir: str | os.PathLike[str], chunk_size: int | None = None
) -> dict[str, Path]:
    """Write the three ``.npy`` files of ``spec`` into ``output_dir``, chunk by chunk.

    Each file is written through ``np.lib.format.open_memmap`` under a hidden
    temporary name in ``output_dir`` and moved into place with ``os.replace``
    once all three are complete, so readers never see a partial file. At most
    one chunk of features is mapped at a time (``chunk_size`` samples; by
    default about 256 MiB), and only one block of :data:`BLOCK_SIZE` samples
    is generated in memory at a time (blocks cut by a chunk edge are generated
    for both chunks). The bytes equal ``np.save`` of
    :func:`generate` for any chunk size.

    Returns:
        ``{"static": path, "dynamic": path, "labels": path}``.
    """
    rows = _chunk_rows(spec, chunk_size)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    final = {
        "static": out / STATIC_FEATURES_FILE,
        "dynamic": out / DYNAMIC_FEATURES_FILE,
        "labels": out / LABELS_FILE,
    }
    shapes = {
        "static": spec.static_shape,
        "dynamic": spec.dynamic_shape,
        "labels": (spec.n_samples, NUM_TRAITS),
    }
    dtypes = {"static": np.dtype(spec.dtype), "dynamic": np.dtype(spec.dtype), "labels": np.dtype(np.float32)}
    needed = sum(math.prod(shapes[k]) * dtypes[k].itemsize for k in final)
    free = shutil.disk_usage(out).free
    if needed > free:
        raise OSError(
            f"{out}: not enough disk space for the synthetic data set: need {needed} bytes, {free} free"
        )

    temporary = {key: path.with_name(f".{path.name}.tmp-{os.getpid()}") for key, path in final.items()}
    logger.info(
        "Writing %d samples (%.1f MB) to %s in chunks of %d",
        spec.n_samples,
        needed / 1e6,
        out,
        min(rows, spec.n_samples),
    )
    try:
        for key in final:  # header and full size; the mapping is dropped at once
            np.lib.format.open_memmap(temporary[key], mode="w+", dtype=dtypes[key], shape=shapes[key]).flush()
        for start in range(0, spec.n_samples, rows):
            stop = min(start + rows, spec.n_samples)
            # Map the files only while writing this chunk, so its pages leave
            # the process afterwards (the page cache may keep them).
            targets = {key: np.lib.format.open_memmap(temporary[key], mode="r+") for key in final}
            for first, piece in _iter_pieces(spec, start, stop):
                last = first + len(piece.labels)
                targets["static"][first:last] = piece.static
                targets["dynamic"][first:last] = piece.dynamic
                targets["labels"][first:last] = piece.labels
            for key in list(targets):
                targets[key].flush()
                del targets[key]
            logger.debug("wrote samples %d:%d of %d", start, stop, spec.n_samples)
        for key, path in final.items():
            os.replace(temporary[key], path)
    except BaseException:
        for path in temporary.values():
            path.unlink(missing_ok=True)
        raise
    return final


def planted_signal(
    spec: SyntheticSpec, static: np.ndarray, dynamic: np.ndarray
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Recompute ``E[labels | features]`` and the signal parts from stored features.

    Works block by block (:data:`BLOCK_SIZE` samples), so memory-mapped arrays
    of any size are fine. This shows that the signal is a deterministic
    function of the features; it equals ``SyntheticData.signal`` (bit for bit
    except, possibly, in a last partial block).

    Returns:
        ``(signal, {"static": ..., "dynamic": ..., "interaction": ...})``, all ``(N, 5)`` float64.
    """
    if static.shape != spec.static_shape or dynamic.shape != spec.dynamic_shape:
        raise ValueError(
            f"Feature shapes do not match the spec. Expected static {spec.static_shape} and dynamic "
            f"{spec.dynamic_shape}. Received: static {static.shape}, dynamic {dynamic.shape}"
        )
    signal = np.empty((spec.n_samples, NUM_TRAITS))
    parts = {name: np.empty((spec.n_samples, NUM_TRAITS)) for name in COMPONENTS[:3]}
    for start in range(0, spec.n_samples, BLOCK_SIZE):
        stop = min(start + BLOCK_SIZE, spec.n_samples)
        block = _components_from_features(
            spec, np.asarray(static[start:stop]), np.asarray(dynamic[start:stop])
        )
        for name, array in block.items():
            parts[name][start:stop] = array
        signal[start:stop] = _bayes_predictor(spec, _mixed_signal(spec, block))
    return signal, parts


def _per_trait(values: np.ndarray) -> dict[str, float]:
    """``{trait: value, ..., "mean": mean}`` from a length-5 vector."""
    result = {trait: float(v) for trait, v in zip(TRAITS, values)}
    result["mean"] = float(np.mean(values))
    return result


def _check_targets(labels: np.ndarray, name: str = "labels") -> np.ndarray:
    labels = np.asarray(labels, dtype=np.float64)
    if labels.ndim != 2 or labels.shape[1] != NUM_TRAITS:
        raise ValueError(
            f"Invalid `{name}`. Expected shape (N, {NUM_TRAITS}). Received: shape {labels.shape}"
        )
    return labels


def noise_ceiling(labels: np.ndarray, signal: np.ndarray) -> dict[str, float]:
    """R² of the Bayes predictor ``signal`` against ``labels``: the best any model can do.

    Returns:
        ``{trait: R², ..., "mean": average over traits}`` (sklearn ``r2_score``).
    """
    from sklearn.metrics import r2_score

    labels, signal = _check_targets(labels), _check_targets(signal, "signal")
    if labels.shape != signal.shape:
        raise ValueError(
            f"Shapes differ. Expected labels and signal alike. Received: {labels.shape} and {signal.shape}"
        )
    return _per_trait(r2_score(labels, signal, multioutput="raw_values"))


def pool_tokens(features: np.ndarray, chunk_size: int = 4096) -> np.ndarray:
    """Mean over the token axis of ``(N, T, D)`` features, in float64, chunk by chunk.

    ``(N, D)`` input is returned as float64 unchanged (already pooled).
    """
    if features.ndim == 2:
        return np.asarray(features, dtype=np.float64)
    if features.ndim != 3:
        raise ValueError(f"Invalid features. Expected (N, D) or (N, T, D). Received: shape {features.shape}")
    pooled = np.empty((features.shape[0], features.shape[2]))
    for start in range(0, features.shape[0], chunk_size):
        pooled[start : start + chunk_size] = np.asarray(features[start : start + chunk_size]).mean(
            axis=1, dtype=np.float64
        )
    return pooled


def ridge_baseline(
    static: np.ndarray,
    dynamic: np.ndarray,
    labels: np.ndarray,
    train_idx: np.ndarray,
    val_idx: np.ndarray,
) -> dict[str, float]:
    """Validation R² of ridge regression on pooled, standardized features.

    Tokens are mean-pooled (``(N, D)`` input is taken as already pooled), each
    stream is standardized with training statistics, the two are concatenated,
    and ``RidgeCV`` picks one penalty per trait by leave-one-out on the
    training rows.

    Returns:
        ``{trait: R² on val_idx, ..., "mean": average}``.
    """
    from sklearn.linear_model import RidgeCV
    from sklearn.metrics import r2_score
    from sklearn.preprocessing import StandardScaler

    labels = _check_targets(labels)
    if not (len(static) == len(dynamic) == len(labels)):
        raise ValueError(
            f"Sample counts differ. Expected one row per clip in each array. Received: static {len(static)}, "
            f"dynamic {len(dynamic)}, labels {len(labels)}"
        )
    train_idx, val_idx = np.asarray(train_idx), np.asarray(val_idx)
    blocks_train, blocks_val = [], []
    for features in (static, dynamic):
        pooled = pool_tokens(features)
        scaler = StandardScaler().fit(pooled[train_idx])
        blocks_train.append(scaler.transform(pooled[train_idx]))
        blocks_val.append(scaler.transform(pooled[val_idx]))
    model = RidgeCV(alphas=np.logspace(-3, 5, 17), alpha_per_target=True)
    model.fit(np.hstack(blocks_train), labels[train_idx])
    predictions = model.predict(np.hstack(blocks_val))
    return _per_trait(r2_score(labels[val_idx], predictions, multioutput="raw_values"))


def label_statistics(labels: np.ndarray) -> dict[str, Any]:
    """Per-trait means and standard deviations and the trait correlation matrix."""
    labels = _check_targets(labels)
    return {
        "mean": labels.mean(axis=0),
        "std": labels.std(axis=0, ddof=1),
        "correlation": np.corrcoef(labels, rowvar=False),
        "clipped_fraction": float(np.mean((labels <= 0.0) | (labels >= 1.0))),
    }


def dataset_report(
    spec: SyntheticSpec,
    static: np.ndarray,
    dynamic: np.ndarray,
    labels: np.ndarray,
    val_fraction: float = 0.2,
    split_seed: int = 0,
) -> dict[str, Any]:
    """The figures the data README quotes, computed from (possibly memory-mapped) arrays.

    Returns:
        ``label_statistics``, ``ceiling_all`` (noise ceiling on all samples),
        ``ceiling_val`` and ``ridge_val`` (on a seeded ``val_fraction`` split),
        each per trait plus mean.
    """
    signal, _ = planted_signal(spec, static, dynamic)
    labels = np.asarray(labels)
    train_idx, val_idx = split_indices(spec.n_samples, val_fraction, split_seed)
    return {
        "label_statistics": label_statistics(labels),
        "ceiling_all": noise_ceiling(labels, signal),
        "ceiling_val": noise_ceiling(labels[val_idx], signal[val_idx]),
        "ridge_val": ridge_baseline(static, dynamic, labels, train_idx, val_idx),
        "n_train": int(len(train_idx)),
        "n_val": int(len(val_idx)),
    }
