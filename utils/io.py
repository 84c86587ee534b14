"""Atomic output, write errors the user can act on, and inputs that must not change.

Every file is written to a temporary name, then renamed: ``os.replace``
within one folder is atomic on POSIX and Windows, so a reader (or a run
killed at any moment) sees either the old file or the new one, never a
half-written one.

A write that fails because of the disk (full, over quota, over the file-size
limit, read-only, I/O error) becomes :class:`OutputWriteError`: it names the
file and the cause in one line, and the temporary file is removed. HDF5
writes (Keras ``.h5`` models and weights) are checked for room before they
start, because libhdf5 does not recover from a failed write: it prints a
stream of tracebacks and crashes the interpreter at exit (h5py issue #914).
When one fails anyway its noise is captured and the process leaves through
``os._exit`` at exit, after the scripts have printed their one line.

:class:`InputWatch` records each input's size and modification time so a
run can stop before it reads a file that changed under it.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import io
import json
import logging
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from utils.errors import EXIT_INPUT_CHANGED, EXIT_WRITE_FAILED, InputError, TrainingStopped

logger = logging.getLogger(__name__)

# The write errors that are the disk's fault, not the data's, with the words the user sees.
WRITE_ERRNOS: dict[int, str] = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "file larger than the file-size limit (ulimit -f)",
    errno.EROFS: "read-only file system",
    errno.EIO: "input/output error",
}
# libhdf5 reports the errno inside its message: "... errno = 28, error message = ..."
_ERRNO_IN_TEXT = re.compile(r"errno\s*=\s*(\d+)|\[Errno (\d+)\]")
HDF5_SUFFIX = ".h5"
# Room asked for beyond the variables' bytes: HDF5 metadata and the model config.
_HDF5_OVERHEAD_BYTES = 128 * 1024


class OutputWriteError(OSError):
    """An output file could not be written because of the disk; ``str()`` is the one line."""

    def __init__(self, code: int, path: str | Path, detail: str = "") -> None:
        super().__init__(code, WRITE_ERRNOS.get(code, os.strerror(code)), str(path))
        self.detail = detail

    def __str__(self) -> str:
        name = errno.errorcode.get(self.errno, str(self.errno))
        extra = f"; {self.detail}" if self.detail else ""
        return f"could not write {self.filename}: {self.strerror} ({name}){extra}"


def write_errno(exc: BaseException, text: str = "") -> int | None:
    """The disk error behind ``exc`` (its chain, its message, or ``text``), or None."""
    messages = [text]
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in WRITE_ERRNOS:
            return int(current.errno)
        messages.append(str(current))
        current = current.__cause__ or current.__context__
    joined = " ".join(messages)
    for match in _ERRNO_IN_TEXT.finditer(joined):
        code = int(match.group(1) or match.group(2))
        if code in WRITE_ERRNOS:
            return code
    for code in WRITE_ERRNOS:  # libraries that pass on only the C library's words (TensorFlow)
        if os.strerror(code) in joined:
            return code
    return None


def _file_size_limit() -> int | None:
    """The soft RLIMIT_FSIZE in bytes, None when unlimited or not POSIX."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    return None if soft == resource.RLIM_INFINITY else int(soft)


def _megabytes(n: float) -> str:
    return f"{n / 1e6:.1f} MB"


def check_room(path: str | Path, needed_bytes: int) -> None:
    """Refuse, before writing, a file of about ``needed_bytes`` that cannot fit (free space, ulimit -f)."""
    folder = Path(path).absolute().parent
    while not folder.exists():
        folder = folder.parent
    free = shutil.disk_usage(folder).free
    if needed_bytes > free:
        raise OutputWriteError(
            errno.ENOSPC, path, f"it needs about {_megabytes(needed_bytes)}, {_megabytes(free)} are free"
        )
    limit = _file_size_limit()
    if limit is not None and needed_bytes > limit:
        raise OutputWriteError(
            errno.EFBIG, path, f"it needs about {_megabytes(needed_bytes)}, the limit is {_megabytes(limit)}"
        )


_hdf5_exit_guarded = False


def _leave_without_hdf5_finalizers() -> None:
    """atexit: flush and leave before libhdf5's own clean-up, which crashes after a failed write."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    logging.shutdown()
    os._exit(EXIT_WRITE_FAILED)


def _guard_hdf5_exit() -> None:
    global _hdf5_exit_guarded
    if not _hdf5_exit_guarded:
        _hdf5_exit_guarded = True
        atexit.register(_leave_without_hdf5_finalizers)  # last registered, first run


@contextlib.contextmanager
def atomic_path(final: str | Path, expected_bytes: int | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; rename it into place on success.

    The temporary name ends with the final name because some writers (Keras,
    matplotlib) choose the format from it. On an exception the temporary
    file is removed and ``final`` is left untouched; a disk error (see
    :data:`WRITE_ERRNOS`) is raised as :class:`OutputWriteError`.
    ``expected_bytes`` (the file's approximate size) is checked against the
    free space and the file-size limit first.
    """
    final = Path(final)
    if expected_bytes:
        check_room(final, expected_bytes)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        # ".<random>.tmp.<final name>": hidden, and ends like the final name
        # (Keras wants ".weights.h5", matplotlib picks the format from ".png").
        fd, tmp = tempfile.mkstemp(prefix=".", suffix=f".tmp.{final.name}", dir=final.parent)
    except OSError as exc:
        code = write_errno(exc)
        if code is None:
            raise
        raise OutputWriteError(code, final) from None
    os.close(fd)
    tmp_path = Path(tmp)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)  # mkstemp creates 0600; give the usual file mode
    hdf5 = final.name.endswith(HDF5_SUFFIX)
    captured = io.StringIO()  # libhdf5's tracebacks of a failed write (printed through sys.stderr)
    failed = False
    try:
        with contextlib.redirect_stderr(captured) if hdf5 else contextlib.nullcontext():
            yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, final)
    except OutputWriteError:
        raise
    except BaseException as exc:
        code = write_errno(exc, captured.getvalue())
        if code is None:
            raise
        failed = True
        if hdf5:
            _guard_hdf5_exit()
        raise OutputWriteError(code, final) from None
    finally:
        if not failed and captured.getvalue():
            sys.stderr.write(captured.getvalue())  # an ordinary warning of the writer: pass it on
        with contextlib.suppress(OSError):
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


def variables_bytes(model: Any) -> int:
    """Bytes of a Keras model's variables and its optimizer's (what a checkpoint holds)."""
    variables = list(model.variables)
    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None:
        variables += list(getattr(optimizer, "variables", []))
    return int(sum(int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize for v in variables))


def _expected_hdf5_bytes(model: Any) -> int:
    return int(variables_bytes(model) * 1.1) + _HDF5_OVERHEAD_BYTES


def save_model(model: Any, path: str | Path) -> None:
    """Save a Keras model (``.h5`` or ``.keras``, chosen by suffix) atomically, after a check for room."""
    absl = logging.getLogger("absl")
    if not any(isinstance(f, _LegacyH5Notice) for f in absl.filters):
        absl.addFilter(_LegacyH5Notice())
    with atomic_path(path, _expected_hdf5_bytes(model)) as tmp:
        model.save(tmp)


def save_weights(model: Any, path: str | Path) -> None:
    """``model.save_weights`` (a ``.weights.h5`` path) atomically, after a check for room."""
    with atomic_path(path, _expected_hdf5_bytes(model)) as tmp:
        model.save_weights(tmp)


def warn_if_little_space(folder: str | Path, model: Any) -> str | None:
    """Warn (and return the warning) when ``folder`` clearly lacks room for a checkpoint and the resume state.

    A run keeps the best checkpoint, the resume weights (variables and
    optimizer state) and, while either is replaced, one temporary copy, plus
    logs: about four times :func:`variables_bytes` and a few megabytes.
    """
    probe = Path(folder).absolute()
    while not probe.exists():
        probe = probe.parent
    needed = 4 * _expected_hdf5_bytes(model) + 8 * 1024 * 1024
    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None and not getattr(optimizer, "built", True):  # Adam's two moments, made at the first step
        needed += 4 * 2 * sum(int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize for v in model.trainable_variables)
    free = shutil.disk_usage(probe).free
    if free >= needed:
        return None
    message = (
        f"only {_megabytes(free)} free in {folder}; a checkpoint plus the resume state need about "
        f"{_megabytes(needed)}: the run will probably stop with a write error (exit {EXIT_WRITE_FAILED})"
    )
    logger.warning(message)
    return message


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


# ----------------------------------------------------------------- inputs that must not change


def file_stamp(path: str | Path) -> dict[str, Any]:
    """Size and modification time of a file (what :class:`InputWatch` compares)."""
    st = os.stat(path)
    return {"path": str(Path(path).resolve()), "bytes": int(st.st_size), "mtime_ns": int(st.st_mtime_ns)}


class InputWatch:
    """The size and modification time of each input at start, and a check that they still hold.

    Reading a memory-mapped file that was truncated ends the process with
    SIGBUS, which no Python code can catch; checking between reads (at every
    epoch boundary) turns most such changes into a message instead.
    """

    def __init__(self, paths: Mapping[str, str | Path]) -> None:
        self.stamps = {role: file_stamp(path) for role, path in paths.items() if path}

    def changed(self) -> str | None:
        """One line naming the first input that changed and how, or None."""
        for role, before in self.stamps.items():
            path = before["path"]
            try:
                now = file_stamp(path)
            except OSError as exc:
                return f"{path}: the {role.replace('_', ' ')} file is gone or unreadable ({exc.strerror})"
            if now["bytes"] != before["bytes"]:
                return f"{path}: the {role.replace('_', ' ')} file changed size ({before['bytes']} -> {now['bytes']} bytes)"
            if now["mtime_ns"] != before["mtime_ns"]:
                return f"{path}: the {role.replace('_', ' ')} file was modified (its modification time changed)"
        return None

    def stop_if_changed(self, during: str) -> None:
        """Raise :class:`TrainingStopped` (exit 5) when an input changed ``during`` (e.g. "the prediction")."""
        change = self.changed()
        if change:
            raise TrainingStopped(
                f"{change} during {during}; nothing was written. Run again once the file is final", EXIT_INPUT_CHANGED
            )
