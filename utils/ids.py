"""Clip ids and groups: one name per row, read without ever unpickling.

A clip id names the sample in row ``i`` of the feature and label files; a
group names who (or what) the clip belongs to, so that no group ends up on
both sides of a split. In ChaLearn First Impressions clip names are
``<YouTube id>.<nnn>.mp4`` and the YouTube id (the part before the first dot,
:data:`~utils.constants.DEFAULT_GROUP_PATTERN`) is the group.

Both come from a text file with one name per line or from a ``.npy`` array of
strings (unicode dtype; object arrays are refused, never unpickled). Every
problem the user can fix raises :class:`~utils.errors.InputError` naming the
file, what was expected and what was found.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np

from utils.constants import DEFAULT_GROUP_PATTERN
from utils.data import read_npy_header
from utils.errors import InputError

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_GROUP_PATTERN",
    "check_enough_groups",
    "clips_sharing_a_group",
    "groups_from_ids",
    "read_groups",
    "read_ids",
    "resolve_groups",
]


def _read_npy_names(p: Path, role: str) -> list[str]:
    """Names from a 1-D ``.npy`` array of unicode (or ASCII bytes) strings."""
    try:
        shape, dtype = read_npy_header(p)
    except (ValueError, OSError, EOFError):
        raise InputError(f"expected a .npy array of {role}, found a file that is not in NumPy .npy format", str(p)) from None
    if dtype.hasobject:
        raise InputError(
            f"expected a .npy array of {role} with a string dtype (e.g. '<U20'), found dtype object "
            "(pickled Python objects are never loaded; save with np.array(names, dtype=str))",
            str(p),
        )
    if dtype.kind not in ("U", "S"):
        raise InputError(f"expected a .npy array of {role} with a string dtype, found dtype {dtype}", str(p))
    if len(shape) != 1:
        raise InputError(f"expected a 1-D .npy array of {role} (one name per row), found shape {shape}", str(p))
    try:
        array = np.load(p, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise InputError(f"expected a complete .npy array of {role}, found a truncated or corrupt file ({exc})", str(p)) from None
    if dtype.kind == "S":
        try:
            return [bytes(v).decode("utf-8") for v in array]
        except UnicodeDecodeError:
            raise InputError(f"expected {role} as UTF-8 strings, found bytes that are not UTF-8", str(p)) from None
    return [str(v) for v in array]


def _read_text_names(p: Path, role: str) -> list[str]:
    """Names from a UTF-8 text file, one per line (surrounding blanks dropped)."""
    try:
        text = p.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise InputError(
            f"expected a UTF-8 text file with one of the {role} per line (or a .npy array of strings), "
            "found binary content",
            str(p),
        ) from None
    except OSError as exc:
        raise InputError(f"expected a readable file of {role}, found an error ({exc.strerror})", str(p)) from None
    if "\x00" in text:
        raise InputError(f"expected a text file with one of the {role} per line, found binary content", str(p))
    return [line.strip() for line in text.splitlines()]


def _read_names(path: str | Path, n: int, role: str) -> np.ndarray:
    """One name per row from a text or ``.npy`` file; count and emptiness checked."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{role} file not found (expected a text file with one name per line or a .npy of strings)", str(p))
    if p.is_dir():
        raise InputError(f"expected a file of {role}, found a directory", str(p))
    if p.suffix.lower() == ".npz":
        raise InputError(f"expected a text file or a .npy array of {role}, found a .npz archive", str(p))
    names = _read_npy_names(p, role) if p.suffix.lower() == ".npy" else _read_text_names(p, role)
    if len(names) != n:
        raise InputError(f"expected {n} {role} (one per sample, in row order), found {len(names)}", str(p))
    for row, name in enumerate(names):
        if not name.strip():
            raise InputError(f"expected a non-empty name in every row of the {role}, found an empty one in row {row}", str(p))
    return np.array(names, dtype=str) if names else np.array([], dtype="<U1")


def read_ids(path: str | Path, n: int, role: str = "ids") -> np.ndarray:
    """Clip ids, one per row in row order, as a NumPy unicode array.

    Args:
        path: a text file with one name per line, or a ``.npy`` of strings.
        n: the number of samples (rows of the feature files).
        role: what the names are, for the messages.

    Raises:
        InputError: the file is missing, unreadable, pickled, or holds a
            count other than ``n``, an empty name or a duplicate id.
    """
    ids = _read_names(path, n, role)
    unique, first, counts = np.unique(ids, return_index=True, return_counts=True)
    if len(unique) != len(ids):
        dup = int(np.argmax(counts > 1))
        rows = np.flatnonzero(ids == unique[dup])[:3].tolist()
        raise InputError(
            f"expected unique {role}, found {len(ids) - len(unique)} duplicate(s), e.g. "
            f"'{unique[dup]}' in rows {', '.join(map(str, rows))}",
            str(path),
        )
    return ids


def read_groups(path: str | Path, n: int) -> np.ndarray:
    """Group labels, one per row in row order (repeats are the point)."""
    return _read_names(path, n, "groups")


def groups_from_ids(ids: np.ndarray, pattern: str = DEFAULT_GROUP_PATTERN, path: str | Path = "") -> np.ndarray:
    """The group of every id: the first capture group of ``pattern`` (``re.search``).

    Args:
        ids: clip ids, e.g. ``"J4GQm9j0JZ0.003.mp4"``.
        pattern: a regular expression with at least one capture group; the
            default takes the part before the first dot (the YouTube id).
        path: the ids file, for the messages.

    Raises:
        InputError: the pattern is not a valid regex with a group, or an id
            does not match it (or matches with an empty group).
    """
    try:
        regex = re.compile(pattern)
    except re.error as exc:
        raise InputError(f"expected a valid regular expression for --group_pattern, found {pattern!r} ({exc})") from None
    if regex.groups < 1:
        raise InputError(f"expected --group_pattern with a capture group (...) for the group, found {pattern!r}")
    groups = []
    for row, name in enumerate(np.asarray(ids, dtype=str)):
        match = regex.search(name)
        if match is None or not match.group(1):
            raise InputError(
                f"expected every id to match --group_pattern {pattern!r} with a non-empty group, "
                f"found '{name}' in row {row} (pass --groups FILE or another --group_pattern)",
                str(path) or None,
            )
        groups.append(match.group(1))
    return np.array(groups, dtype=str) if groups else np.array([], dtype="<U1")


def check_enough_groups(groups: np.ndarray, k: int, path: str | Path = "") -> None:
    """Refuse a grouped k-way split with fewer than ``k`` distinct groups."""
    n_groups = len(np.unique(np.asarray(groups, dtype=str)))
    if n_groups < k:
        raise InputError(
            f"expected at least {k} distinct groups to split into {k} group-disjoint parts, found {n_groups}",
            str(path) or None,
        )


def resolve_groups(
    n: int,
    ids_path: str | Path | None = None,
    groups_path: str | Path | None = None,
    group_pattern: str = DEFAULT_GROUP_PATTERN,
) -> tuple[np.ndarray | None, np.ndarray | None, str]:
    """Ids and groups from the flags ``--ids``, ``--groups``, ``--group_pattern``.

    Returns:
        ``(ids, groups, source)``: ``ids`` is None without ``--ids``;
        ``groups`` comes from ``--groups`` when given, else from the ids with
        the pattern, else None; ``source`` is the file the groups came from
        (for messages), ``""`` when there are none.
    """
    ids = read_ids(ids_path, n) if ids_path else None
    if groups_path:
        return ids, read_groups(groups_path, n), str(groups_path)
    if ids is not None:
        return ids, groups_from_ids(ids, group_pattern, ids_path or ""), str(ids_path)
    return None, None, ""


def clips_sharing_a_group(groups: np.ndarray | None, train_rows: np.ndarray, eval_rows: np.ndarray) -> int | None:
    """How many of ``eval_rows`` share a group with some row of ``train_rows`` (None without groups)."""
    if groups is None:
        return None
    groups = np.asarray(groups, dtype=str)
    train_groups = np.unique(groups[np.asarray(train_rows, dtype=np.int64)])
    return int(np.isin(groups[np.asarray(eval_rows, dtype=np.int64)], train_groups).sum())
