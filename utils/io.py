"""Atomic output: every file is written to a temporary name, then renamed.

``os.replace`` within one folder is atomic on POSIX and Windows, so a reader
(or a run killed at any moment) sees either the old file or the new one,
never a half-written one.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from utils.errors import InputError


@contextlib.contextmanager
def atomic_path(final: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; rename it into place on success.

    The temporary name ends with the final name because some writers (Keras,
    matplotlib) choose the format from it. On an exception the temporary
    file is removed and ``final`` is left untouched.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    # ".<random>.tmp.<final name>": hidden, and ends like the final name
    # (Keras wants ".weights.h5", matplotlib picks the format from ".png").
    fd, tmp = tempfile.mkstemp(prefix=".", suffix=f".tmp.{final.name}", dir=final.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)  # mkstemp creates 0600; give the usual file mode
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, final)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def _finite_or_none(value: Any) -> Any:
    """NaN/Inf are not JSON: write them as null."""
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_none(v) for v in value]
    return value


def write_json(path: str | Path, data: Any) -> None:
    """Strict JSON (NaN/Inf become null), written atomically."""
    plain = json.loads(json.dumps(data, default=_json_default))
    write_text(path, json.dumps(_finite_or_none(plain), indent=2, allow_nan=False) + "\n")


def save_npy(path: str | Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        np.save(tmp, array, allow_pickle=False)


def save_figure(fig: Any, path: str | Path, dpi: int = 150) -> None:
    """Save a matplotlib figure atomically."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight")


class _LegacyH5Notice(logging.Filter):
    """Drop Keras' "HDF5 is legacy" notice: the seed's file names are ``.h5`` on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "saving your model as an HDF5 file" not in record.getMessage()


def save_model(model: Any, path: str | Path) -> None:
    """Save a Keras model (``.h5`` or ``.keras``, chosen by suffix) atomically."""
    absl = logging.getLogger("absl")
    if not any(isinstance(f, _LegacyH5Notice) for f in absl.filters):
        absl.addFilter(_LegacyH5Notice())
    with atomic_path(path) as tmp:
        model.save(tmp)


def check_writable(folder: Path) -> None:
    """Refuse an output folder that cannot be created or written, leaving nothing behind.

    The nearest existing folder gets a temporary probe file (removed at
    once): permission bits alone do not tell for root or read-only mounts.
    """
    probe = Path(folder).absolute()
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise InputError(f"expected a folder for the outputs, found a file at {probe}", str(folder))
    try:
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as exc:
        raise InputError(
            f"expected a writable output folder, found that {probe} cannot be written ({exc.strerror})",
            str(folder),
        ) from None
