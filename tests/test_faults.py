"""Faults of a shared machine or a cluster, injected into real runs in a subprocess.

Each test waits for evidence that the run got where the fault should hit (an
epoch in the history file), injects the fault, and checks what the user gets:
the exit code, one line on stderr, no temporary file left, a last checkpoint
that loads, and a ``--resume`` that completes.
"""

from __future__ import annotations

import errno
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO, train_args, wait_for_resume_state, write_features
from utils import constants as C
from utils import io as uio
from utils.errors import EXIT_INPUT_CHANGED, EXIT_TERMINATED, EXIT_WRITE_FAILED

SCRIPT = str(REPO / "scripts" / "train_personality_model.py")
EPOCHS = 6


def _cmd(paths: dict, out: Path, *extra: str) -> list[str]:
    return [sys.executable, SCRIPT, *train_args(paths, out, "--epochs", str(EPOCHS), "--patience", "50", *extra)]


def _start(paths: dict, out: Path) -> subprocess.Popen:
    return subprocess.Popen(_cmd(paths, out), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _error_lines(err: str) -> list[str]:
    """stderr lines of our own (TensorFlow's C++ start-up notices excluded)."""
    return [
        line for line in err.splitlines()
        if line.strip() and not line.startswith(("I0000", "E0000", "W0000", "WARNING: All log messages"))
        and "cuda" not in line.lower()
    ]


def _temporary_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if ".tmp." in p.name]


def _resume_completes(paths: dict, out: Path) -> None:
    import keras

    import models.cross_attention  # noqa: F401  (registers the custom layers)

    keras.models.load_model(out / C.CHECKPOINT_FILE, compile=False)  # the last checkpoint loads
    done = subprocess.run(_cmd(paths, out, "--resume"), cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    history = json.loads((out / C.HISTORY_JSON_FILE).read_text())
    assert history["epoch"] == [float(e) for e in range(1, EPOCHS + 1)]  # every epoch once, in order
    keras.models.load_model(out / C.MODEL_FILE, compile=False)
    assert not _temporary_files(out)


@pytest.fixture
def data(tmp_path: Path) -> dict:
    return write_features(tmp_path / "data", n=96)


def test_file_size_limit_is_one_line_exit_4_and_resume_completes(data, tmp_path):
    """EFBIG: the file-size limit (ulimit -f) is lowered under a running job after its second epoch."""
    out = tmp_path / "run"
    proc = _start(data, out)
    wait_for_resume_state(out, 2, proc)
    _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.prlimit(proc.pid, resource.RLIMIT_FSIZE, (4096, hard))
    _, err = proc.communicate(timeout=240)
    lines = _error_lines(err)
    assert proc.returncode == EXIT_WRITE_FAILED, err[-3000:]
    assert len(lines) == 1, lines
    assert "EFBIG" in lines[0] and str(out) in lines[0] and "--resume" in lines[0], lines[0]
    assert "Traceback" not in err
    assert not _temporary_files(out)
    _resume_completes(data, out)


def _mount_tmpfs(folder: Path, size: str) -> bool:
    folder.mkdir(parents=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                          capture_output=True).returncode == 0


def _fill(folder: Path) -> Path:
    """Write zeros into ``folder`` until the file system is full."""
    filler = folder / "filler.bin"
    block = b"\0" * 65536
    try:
        with open(filler, "wb") as fh:
            while True:
                fh.write(block)
                fh.flush()
    except OSError as exc:  # also at open: a tmpfs is memory, and a loaded machine can fill it first
        assert exc.errno == errno.ENOSPC
    return filler


def test_disk_full_is_one_line_exit_4_and_resume_completes_after_freeing_space(data, tmp_path):
    """ENOSPC on a small tmpfs (needs root); the disk fills up under a running job after its second epoch."""
    disk = tmp_path / "disk"
    if not _mount_tmpfs(disk, "64m"):
        pytest.skip("mounting a tmpfs needs root (the file-size-limit test covers the same path)")
    try:
        out = disk / "run"
        proc = _start(data, out)
        wait_for_resume_state(out, 2, proc)
        filler = _fill(disk)
        _, err = proc.communicate(timeout=240)
        lines = _error_lines(err)
        assert proc.returncode == EXIT_WRITE_FAILED, err[-3000:]
        assert len(lines) == 1, lines
        assert "ENOSPC" in lines[0] and str(out) in lines[0] and "--resume" in lines[0], lines[0]
        assert "Traceback" not in err
        assert not _temporary_files(out)
        filler.unlink(missing_ok=True)
        _resume_completes(data, out)
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def test_sigterm_exits_143_prints_the_resume_command_and_resume_completes(data, tmp_path):
    out = tmp_path / "run"
    proc = _start(data, out)
    wait_for_resume_state(out, 1, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=240)
    lines = _error_lines(err)
    assert proc.returncode == EXIT_TERMINATED, err[-3000:]
    assert len(lines) == 1 and "SIGTERM" in lines[0], lines
    assert f"{SCRIPT}" in lines[0] and "--resume" in lines[0]  # the command to run, not a hint
    assert (out / C.RESUME_DIR / C.RESUME_STATE_FILE).is_file()
    assert not _temporary_files(out)
    _resume_completes(data, out)


def test_an_input_that_changes_stops_the_run_at_the_epoch_boundary(data, tmp_path):
    out = tmp_path / "run"
    proc = _start(data, out)
    wait_for_resume_state(out, 1, proc)
    static = Path(data["static_features"])
    st = static.stat()
    os.utime(static, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # rewritten in place: same size, newer
    _, err = proc.communicate(timeout=240)
    lines = _error_lines(err)
    assert proc.returncode == EXIT_INPUT_CHANGED, err[-3000:]
    assert len(lines) == 1 and str(static.resolve()) in lines[0] and "--resume" in lines[0], lines
    assert not _temporary_files(out)
    _resume_completes(data, out)


def test_check_room_refuses_before_writing(tmp_path):
    """The HDF5 pre-check: more than the file-size limit, or than the free space, is refused up front."""
    target = tmp_path / "model.h5"
    free = shutil.disk_usage(tmp_path).free
    with pytest.raises(uio.OutputWriteError) as info:
        uio.check_room(target, free + 10**9)
    assert info.value.errno == errno.ENOSPC and str(target) in str(info.value)
    with pytest.raises(uio.OutputWriteError):
        with uio.atomic_path(target, expected_bytes=free + 10**9) as tmp:
            tmp.write_bytes(b"never")
    assert list(tmp_path.iterdir()) == []


def test_write_errno_reads_hdf5_messages_and_chains():
    hdf5 = RuntimeError("Can't decrement id ref count (file write failed: errno = 28, error message = 'No space')")
    assert uio.write_errno(hdf5) == errno.ENOSPC
    try:
        try:
            raise OSError(errno.EDQUOT, "Disk quota exceeded")
        except OSError as inner:
            raise RuntimeError("wrapped") from inner
    except RuntimeError as outer:
        assert uio.write_errno(outer) == errno.EDQUOT
    assert uio.write_errno(OSError(errno.ENOENT, "No such file")) is None
    assert uio.write_errno(ValueError("errno = 2")) is None


def test_atomic_path_turns_a_disk_error_into_one_line_and_leaves_no_temp(tmp_path):
    target = tmp_path / "x.npy"
    target.write_bytes(b"earlier")
    with pytest.raises(uio.OutputWriteError) as info:
        with uio.atomic_path(target):
            raise OSError(errno.EIO, "Input/output error")
    assert str(info.value) == f"could not write {target}: input/output error (EIO)"
    assert target.read_bytes() == b"earlier" and [p.name for p in tmp_path.iterdir()] == ["x.npy"]


def test_input_watch_sees_size_and_mtime_changes(tmp_path):
    f = tmp_path / "static.npy"
    np.save(f, np.zeros(4))
    watch = uio.InputWatch({"static_features": f})
    assert watch.changed() is None
    st = f.stat()
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 1))
    assert "modified" in watch.changed() and str(f.resolve()) in watch.changed()
    watch = uio.InputWatch({"static_features": f})
    with open(f, "ab") as fh:
        fh.write(b"x")
    assert "changed size" in watch.changed()
    f.unlink()
    assert "gone" in watch.changed()


def test_sigterm_in_any_script_is_exit_143_with_nothing_half_written(tmp_path, capsys):
    """utils.cli.run_guarded (every script): SIGTERM in the middle of a write -> 143, no temporary file."""
    from utils.cli import run_guarded

    target = tmp_path / "out.json"

    def body() -> int:
        with uio.atomic_path(target) as tmp:
            tmp.write_text("half")
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler raises before this ends
        return 0

    previous = signal.getsignal(signal.SIGTERM)
    assert run_guarded(body, "prog") == EXIT_TERMINATED
    assert capsys.readouterr().err.strip() == "prog: terminated (SIGTERM); no output was left half-written"
    assert list(tmp_path.iterdir()) == []
    assert signal.getsignal(signal.SIGTERM) == previous  # restored after the body


def test_little_free_space_warns_before_the_first_epoch(tmp_path, monkeypatch, caplog):
    from models.cross_attention import ModelConfig, build_model

    model = build_model(ModelConfig(width=16, num_heads=2, head_units=16), (4, 8), (3, 12))
    assert uio.warn_if_little_space(tmp_path, model) is None  # this disk has room
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(uio.shutil, "disk_usage", lambda path: usage._replace(free=1_000_000))
    message = uio.warn_if_little_space(tmp_path, model)
    assert message is not None and "only 1.0 MB free" in message
    assert message in caplog.text
