"""Outer folds and inner validation splits, group-disjoint when groups are known.

* :func:`assign_folds`: scikit-learn ``GroupKFold`` (shuffled, seeded) when
  groups are known, else ``KFold``; every variant and seed of an experiment
  sees the same folds (``folds.csv``).
* :func:`inner_split`: the validation rows for early stopping, carved from the
  training folds only (never the test fold), by ``GroupShuffleSplit`` when
  groups are known so no group is on both sides.
"""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path

import numpy as np

from utils.errors import InputError
from utils.ids import check_enough_groups
from utils.io import write_text

logger = logging.getLogger(__name__)

FOLDS_COLUMNS = ("row", "id", "group", "fold")


def assign_folds(
    n: int, k: int, groups: np.ndarray | None, seed: int = 0, groups_path: str = ""
) -> np.ndarray:
    """The test fold (0..k-1) of every row.

    With ``groups`` the folds are group-disjoint (``GroupKFold`` with
    ``shuffle=True``: groups are assigned to folds at random, seeded, so fold
    sizes differ by at most a group or so); without, ``KFold(shuffle=True)``.
    """
    from sklearn.model_selection import GroupKFold, KFold

    if k < 2:
        raise InputError(f"expected --folds of at least 2, found {k}")
    if n < k:
        raise InputError(f"expected at least {k} samples for {k} folds, found N={n}")
    fold = np.full(n, -1, dtype=np.int64)
    rows = np.arange(n)
    if groups is not None:
        check_enough_groups(groups, k, groups_path)
        splits = GroupKFold(n_splits=k, shuffle=True, random_state=seed).split(rows, groups=groups)
    else:
        splits = KFold(n_splits=k, shuffle=True, random_state=seed).split(rows)
    for i, (_, test) in enumerate(splits):
        fold[test] = i
    return fold


def inner_split(
    train_rows: np.ndarray, groups: np.ndarray | None, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Split the training-fold rows into fit and validation rows (both sorted, non-empty).

    With groups the split is group-disjoint (``GroupShuffleSplit``: about
    ``val_fraction`` of the groups, so of the clips); else a seeded random split.
    """
    from sklearn.model_selection import GroupShuffleSplit, ShuffleSplit

    train_rows = np.asarray(train_rows, dtype=np.int64)
    if groups is not None:
        n_groups = len(np.unique(groups[train_rows]))
        if n_groups < 2:
            raise InputError(
                f"expected at least 2 groups in the training folds for a group-disjoint validation split, "
                f"found {n_groups}"
            )
        splitter = GroupShuffleSplit(n_splits=1, test_size=val_fraction, random_state=seed)
        fit, val = next(splitter.split(train_rows, groups=groups[train_rows]))
    else:
        if len(train_rows) < 2:
            raise InputError(f"expected at least 2 training rows for a validation split, found {len(train_rows)}")
        splitter = ShuffleSplit(n_splits=1, test_size=val_fraction, random_state=seed)
        fit, val = next(splitter.split(train_rows))
    if len(fit) == 0 or len(val) == 0:
        raise InputError(
            f"expected a non-empty training and validation part with --val_split {val_fraction}, "
            f"found {len(fit)} / {len(val)} rows"
        )
    return np.sort(train_rows[fit]), np.sort(train_rows[val])


def folds_table(fold: np.ndarray, ids: np.ndarray | None, groups: np.ndarray | None) -> str:
    """``folds.csv`` text: ``row,id,group,fold`` (id and group empty when unknown)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(FOLDS_COLUMNS)
    for row, f in enumerate(fold.tolist()):
        writer.writerow([row, "" if ids is None else ids[row], "" if groups is None else groups[row], f])
    return buffer.getvalue()


def write_or_check_folds(path: Path, text: str) -> None:
    """Write ``folds.csv``, or check that the experiment folder's copy is the same.

    Finished jobs are reused on a rerun; they are only valid for the same folds.
    """
    if path.is_file():
        existing = path.read_text(encoding="utf-8")
        if existing != text:
            raise InputError(
                "expected the folds of this experiment folder, found different ones (other data, ids, groups, "
                "--folds, --grouping or --fold_seed); use a new --output folder",
                str(path),
            )
        return
    write_text(path, text)
