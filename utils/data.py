"""Validated ``.npy`` loading, the seeded split and the tf.data input pipeline.

Feature files are opened memory-mapped (``mmap_mode="r"``) and never copied
whole into memory: validation scans them in chunks, normalization statistics
are accumulated in chunks, and the training pipeline gathers one batch of rows
at a time. That keeps the door open for feature files larger than memory.

Every problem the user can fix raises :class:`~utils.errors.InputError` with
one line naming the file, what was expected and what was found.
"""

from __future__ import annotations

import dataclasses
import hashlib
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from utils.constants import NUM_TRAITS, TRAITS
from utils.errors import InputError

FLOAT_DTYPES = (np.dtype("float16"), np.dtype("float32"), np.dtype("float64"))
# Rows scanned at once when checking a memory-mapped file for NaN/Inf.
_SCAN_BYTES = 64 * 1024 * 1024


def _describe_dtype(dtype: np.dtype) -> str:
    return "object" if dtype.kind == "O" else str(dtype)


def read_npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype from a ``.npy`` header, without reading (or unpickling) any data.

    Raises ValueError, OSError or EOFError when the file is not in ``.npy`` format.
    """
    with path.open("rb") as fh:
        version = np.lib.format.read_magic(fh)
        reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = reader(fh)
    return shape, dtype


def open_npy(path: str | Path, role: str) -> np.ndarray:
    """Open one ``.npy`` file memory-mapped, refusing pickles and non-arrays."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{role} file not found (expected an existing .npy file)", str(p))
    if p.is_dir():
        raise InputError(f"expected a .npy file for {role}, found a directory", str(p))
    if p.suffix.lower() != ".npy":
        kind = "a .npz archive" if p.suffix.lower() == ".npz" else f"a '{p.suffix or 'no'}' extension"
        raise InputError(f"expected a .npy file for {role}, found {kind}", str(p))
    if p.stat().st_size == 0:
        raise InputError(f"expected a .npy array for {role}, found an empty file", str(p))
    try:
        shape, dtype = read_npy_header(p)
    except (ValueError, OSError, EOFError) as exc:
        if zipfile.is_zipfile(p):
            raise InputError(f"expected a .npy array for {role}, found a zip archive", str(p)) from exc
        raise InputError(
            f"expected a .npy array for {role}, found a file that is not in NumPy .npy format", str(p)
        ) from exc
    if dtype.hasobject:
        raise InputError(
            f"expected a numeric array for {role}, found dtype object (pickled Python objects "
            "are never loaded)",
            str(p),
        )
    try:
        if int(np.prod(shape)) == 0:
            return np.load(p, allow_pickle=False)
        return np.load(p, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise InputError(
            f"expected a complete .npy array of shape {shape} for {role}, found a truncated or "
            f"corrupt file ({exc})",
            str(p),
        ) from exc


def check_finite(array: np.ndarray, path: str, role: str) -> None:
    """Scan ``array`` in chunks and refuse NaN or Inf (bounded memory)."""
    row_bytes = max(1, int(np.prod(array.shape[1:], dtype=np.int64)) * array.dtype.itemsize)
    step = max(1, _SCAN_BYTES // row_bytes)
    for start in range(0, len(array), step):
        chunk = np.asarray(array[start : start + step])
        if not np.isfinite(chunk).all():
            bad = np.argwhere(~np.isfinite(chunk))[0]
            row = start + int(bad[0])
            value = chunk[tuple(bad)]
            raise InputError(f"expected finite {role} values, found {value} in sample {row}", path)


def _check_float(array: np.ndarray, path: str, role: str) -> None:
    if array.dtype not in FLOAT_DTYPES:
        raise InputError(
            f"expected {role} of dtype float16, float32 or float64, found {_describe_dtype(array.dtype)}",
            path,
        )


def load_features(path: str | Path, role: str) -> np.ndarray:
    """Load a static or dynamic feature file: ``(N, D)`` or ``(N, T, D)`` floats."""
    array = open_npy(path, role)
    _check_float(array, str(path), role)
    if array.ndim not in (2, 3):
        raise InputError(
            f"expected {role} of shape (N, D) or (N, T, D), found shape {array.shape} "
            f"(rank {array.ndim})",
            str(path),
        )
    if 0 in array.shape[1:]:
        raise InputError(f"expected non-empty {role} dimensions, found shape {array.shape}", str(path))
    check_finite(array, str(path), role)
    return array


def load_labels(path: str | Path) -> np.ndarray:
    """Load the OCEAN labels: ``(N, 5)`` floats in [0, 1], trait order as TRAITS."""
    array = open_npy(path, "labels")
    _check_float(array, str(path), "labels")
    if array.ndim != 2 or array.shape[1] != NUM_TRAITS:
        raise InputError(
            f"expected labels of shape (N, {NUM_TRAITS}) in the order {', '.join(TRAITS)}, "
            f"found shape {array.shape}",
            str(path),
        )
    check_finite(array, str(path), "labels")
    values = np.asarray(array)
    if values.size and (values.min() < 0.0 or values.max() > 1.0):
        low, high = float(values.min()), float(values.max())
        hint = ""
        if low >= 1.0 and high <= 5.0 and high - low >= 1.0:  # a 1-5 Likert scale, the usual questionnaire scoring
            hint = "; on a 1-5 scale, rescale with (y - 1) / 4"
        elif low >= 0.0 and 5.0 < high <= 100.0:
            hint = "; on a 0-100 scale, rescale with y / 100"
        raise InputError(f"expected labels in [0, 1], found values from {low:.4g} to {high:.4g}{hint}", str(path))
    return array


@dataclasses.dataclass
class Dataset:
    """The three validated arrays (memory-mapped where possible) and their paths."""

    static: np.ndarray
    dynamic: np.ndarray
    labels: np.ndarray
    paths: dict[str, str]

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def static_shape(self) -> tuple[int, ...]:
        return tuple(self.static.shape[1:])

    @property
    def dynamic_shape(self) -> tuple[int, ...]:
        return tuple(self.dynamic.shape[1:])


def load_dataset(
    static_path: str | Path, dynamic_path: str | Path, labels_path: str | Path | None
) -> Dataset:
    """Load and cross-check the three files (labels optional for prediction)."""
    static = load_features(static_path, "static features")
    dynamic = load_features(dynamic_path, "dynamic features")
    paths = {"static_features": str(static_path), "dynamic_features": str(dynamic_path)}
    counts = {str(static_path): len(static), str(dynamic_path): len(dynamic)}
    if labels_path is not None:
        labels = load_labels(labels_path)
        paths["labels"] = str(labels_path)
        counts[str(labels_path)] = len(labels)
    else:
        labels = np.zeros((len(static), 0), dtype="float32")
    if len(set(counts.values())) > 1:
        found = ", ".join(f"{Path(p).name}: N={n}" for p, n in counts.items())
        raise InputError(f"expected the same number of samples N in every file, found {found}", labels_path or str(dynamic_path))
    if len(static) == 0:
        raise InputError("expected at least one sample, found N=0", str(static_path))
    return Dataset(static=static, dynamic=dynamic, labels=labels, paths=paths)


def split_indices(n: int, val_split: float, seed: int, path: str = "") -> tuple[np.ndarray, np.ndarray]:
    """Seeded random train/validation split of ``range(n)``; both parts non-empty."""
    if not 0.0 < val_split < 1.0:
        raise InputError(f"expected --val_split strictly between 0 and 1, found {val_split}")
    n_val = int(round(n * val_split))
    if n < 2 or n_val < 1 or n - n_val < 1:
        raise InputError(
            f"expected enough samples for a train/validation split with val_split={val_split}, "
            f"found N={n} (train {n - n_val}, validation {n_val})",
            path or None,
        )
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def feature_statistics(array: np.ndarray, indices: np.ndarray, chunk_rows: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and variance over the given samples (and tokens), in chunks."""
    dim = array.shape[-1]
    row_bytes = max(1, int(np.prod(array.shape[1:], dtype=np.int64)) * 8)
    chunk_rows = chunk_rows or max(1, _SCAN_BYTES // row_bytes)
    count = 0
    total = np.zeros(dim)
    total_sq = np.zeros(dim)
    for start in range(0, len(indices), chunk_rows):
        rows = np.asarray(array[indices[start : start + chunk_rows]], dtype="float64").reshape(-1, dim)
        count += len(rows)
        total += rows.sum(axis=0)
        total_sq += np.square(rows).sum(axis=0)
    mean = total / max(count, 1)
    var = np.maximum(total_sq / max(count, 1) - np.square(mean), 0.0)
    var[var < 1e-12] = 1.0  # constant channels: leave them unscaled
    return mean, var


def label_means(labels: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """Per-trait mean of the labels of the given samples (the mean-predictor baseline)."""
    return np.asarray(labels[indices], dtype="float64").mean(axis=0)


def sha256_file(path: str | Path, block: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(block), b""):
            digest.update(chunk)
    return digest.hexdigest()


class EpochBatches:
    """Index batches of an epoch, reproducible from ``(seed, epoch)``.

    ``batches(epoch)`` yields the batches of epoch ``epoch`` (0-based): the
    permutation depends only on the seed and the epoch, so a run resumed at
    epoch ``e`` sees the same data order as an uninterrupted one. Indices
    inside a batch are sorted, which turns the gather from a memory map into
    a forward read. The last partial batch is kept.
    """

    def __init__(self, indices: np.ndarray, batch_size: int, shuffle: bool, seed: int) -> None:
        self.indices = np.asarray(indices, dtype=np.int64)
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.seed = int(seed)

    def __len__(self) -> int:
        return -(-len(self.indices) // self.batch_size)

    def __call__(self, epoch: int = 0) -> Iterator[np.ndarray]:
        order = self.indices
        if self.shuffle:
            order = np.random.default_rng([self.seed, int(epoch)]).permutation(order)
        for start in range(0, len(order), self.batch_size):
            yield np.sort(order[start : start + self.batch_size])


def make_tf_dataset(
    data: Dataset, batches: EpochBatches, with_labels: bool = True, epoch: Callable[[], int] | None = None
) -> Any:
    """tf.data pipeline: index batches -> rows gathered from the (memory-mapped) arrays.

    Keras opens a new iterator over the dataset at every epoch; ``epoch()``
    is asked then for the epoch whose order to yield (None: always epoch 0's,
    for validation and prediction). :func:`utils.training.run_training`
    passes the epoch that Keras' optimizer step counter has reached.

    Only one batch of rows (plus the prefetch buffer) is materialized at a
    time; ``from_tensor_slices`` would copy the arrays whole.
    """
    import tensorflow as tf

    arrays = [data.static, data.dynamic] + ([data.labels] if with_labels else [])

    def gather(idx: np.ndarray) -> list[np.ndarray]:
        return [np.asarray(a[idx], dtype=np.float32) for a in arrays]

    shapes = [(None, *a.shape[1:]) for a in arrays]

    def to_tensors(idx: Any) -> Any:
        out = tf.numpy_function(gather, [idx], [tf.float32] * len(arrays), stateful=False)
        for tensor, shape in zip(out, shapes):
            tensor.set_shape(shape)
        features = (out[0], out[1])
        return (features, out[2]) if with_labels else (features,)

    def epoch_batches() -> Iterator[np.ndarray]:
        return batches(epoch() if epoch is not None else 0)

    ds = tf.data.Dataset.from_generator(
        epoch_batches, output_signature=tf.TensorSpec(shape=(None,), dtype=tf.int64)
    )
    ds = ds.apply(tf.data.experimental.assert_cardinality(len(batches)))
    ds = ds.map(to_tensors, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)
