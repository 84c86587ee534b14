"""The training run's train/validation split: by group, at random, or given as row files.

* ``group`` (the default): no group on both sides. The groups come from
  ``--groups`` or from the clip ids (``--ids`` and ``--group_pattern``);
  without either, every clip is its own group and the split is the seeded
  random split of :func:`utils.data.split_indices` (the same rows as before
  groups existed).
* ``random``: the seeded random clip-level split even when groups are known;
  clips of one person may then be on both sides, which the ``leakage`` block
  of ``training_summary.json`` counts and a warning reports.
* explicit rows (``--train_rows``/``--val_rows``, ``.npy`` of row indices):
  what ``scripts/cross_validate.py`` passes to each network run.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import numpy as np

from utils import constants as C
from utils.data import open_npy, split_indices
from utils.errors import InputError
from utils.ids import clips_sharing_a_group
from utils.io import save_npy, write_text

logger = logging.getLogger(__name__)

SPLIT_MODES = C.SPLIT_MODES


@dataclasses.dataclass
class Split:
    train: np.ndarray
    val: np.ndarray
    method: str  # "group", "random", "rows"
    leakage: dict[str, Any]


def group_split_indices(groups: np.ndarray, val_split: float, seed: int, path: str = "") -> tuple[np.ndarray, np.ndarray]:
    """Seeded split with no group on both sides; the validation part holds about ``val_split`` of the clips.

    The groups are shuffled with the seed and taken in that order until the
    validation clip count is closest to ``round(N * val_split)``; at least
    one group lands on each side.
    """
    if not 0.0 < val_split < 1.0:
        raise InputError(f"expected --val_split strictly between 0 and 1, found {val_split}")
    names, inverse, sizes = np.unique(np.asarray(groups), return_inverse=True, return_counts=True)
    if len(names) < 2:
        raise InputError(f"expected at least 2 groups for a group split, found {len(names)}", path or None)
    order = np.random.default_rng(seed).permutation(len(names))
    cumulative = np.cumsum(sizes[order])[:-1]  # leave at least one group for training
    target = round(len(groups) * val_split)
    n_val_groups = int(np.argmin(np.abs(cumulative - target))) + 1
    is_val = np.zeros(len(names), dtype=bool)
    is_val[order[:n_val_groups]] = True
    val_mask = is_val[inverse.ravel()]
    return np.flatnonzero(~val_mask), np.flatnonzero(val_mask)


def read_rows(path: str | Path, n: int, role: str) -> np.ndarray:
    """Row indices from a ``.npy`` of integers: 1-D, unique, each in [0, n); sorted."""
    array = open_npy(path, role)
    if array.dtype.kind not in "iu" or array.ndim != 1:
        raise InputError(f"expected a 1-D .npy of integer row indices for {role}, found {array.dtype} of shape {array.shape}", str(path))
    rows = np.asarray(array, dtype=np.int64)
    if len(rows) == 0:
        raise InputError(f"expected at least one row index for {role}, found none", str(path))
    if rows.min() < 0 or rows.max() >= n:
        raise InputError(f"expected row indices for {role} in [0, {n - 1}] (N={n}), found {rows.min()} to {rows.max()}", str(path))
    if len(np.unique(rows)) != len(rows):
        raise InputError(f"expected unique row indices for {role}, found repeats", str(path))
    return np.sort(rows)


def make_split(
    n: int,
    val_split: float,
    seed: int,
    method: str = "group",
    groups: np.ndarray | None = None,
    rows: tuple[str | None, str | None] = (None, None),
    path: str = "",
) -> Split:
    """The train/validation rows of a run and its ``leakage`` block (see the module docstring)."""
    if method not in SPLIT_MODES:
        raise InputError(f"expected --split to be one of {SPLIT_MODES}, found {method!r}")
    train_path, val_path = rows
    if (train_path is None) != (val_path is None):
        raise InputError("expected --train_rows and --val_rows together, found only one of them")
    if train_path is not None and val_path is not None:
        train, val = read_rows(train_path, n, "training rows"), read_rows(val_path, n, "validation rows")
        if np.intersect1d(train, val).size:
            raise InputError(f"expected validation rows disjoint from the training rows {train_path}, found {np.intersect1d(train, val).size} in both", val_path)
        used = "rows"
    elif method == "group" and groups is not None:
        train, val = group_split_indices(groups, val_split, seed, path)
        used = "group"
    else:
        train, val = split_indices(n, val_split, seed, path)
        used = "random"
    shared = clips_sharing_a_group(groups, train, val)
    leakage = {
        "groups_known": groups is not None,
        "val_clips": int(len(val)),
        "val_clips_sharing_a_group_with_train": shared,
    }
    if shared:
        logger.warning(
            "%s split: %d of %d validation clips share a group with the training clips "
            "(validation numbers then score known people; use --split group)", used, shared, len(val),
        )
    return Split(train, val, used, leakage)


def write_split_record(folder: Path, split: Split, groups: np.ndarray | None) -> list[Path]:
    """The rows (and training groups) of a run, beside its model, for the analysis' held-out guard."""
    written = [folder / C.TRAINING_ROWS_FILE, folder / C.VALIDATION_ROWS_FILE]
    save_npy(written[0], split.train.astype(np.int64))
    save_npy(written[1], split.val.astype(np.int64))
    if groups is not None:
        names = sorted(set(np.asarray(groups)[split.train].tolist()))
        written.append(folder / C.TRAINING_GROUPS_FILE)
        write_text(written[-1], "\n".join(names) + "\n")
    return written


def input_record(paths: dict[str, str], n: int) -> dict[str, dict[str, Any]]:
    """role -> {"sha256", "n", "bytes"} of each input file (the held-out guard compares these)."""
    from utils.hashing import sha256_cached

    return {
        role: {"sha256": sha256_cached(path), "n": n, "bytes": Path(path).stat().st_size}
        for role, path in paths.items()
    }


def split_summary(split: Split | None) -> dict[str, Any]:
    """The ``split`` and ``leakage`` blocks of training_summary.json (empty for a split made elsewhere)."""
    if split is None:
        return {}
    return {
        "split": {"method": split.method, "rows": [C.TRAINING_ROWS_FILE, C.VALIDATION_ROWS_FILE]},
        "leakage": split.leakage,
    }
