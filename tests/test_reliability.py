"""Never lose a run, never trust a file: kill/resume, atomic writes, NaN, Ctrl-C, run folders."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from scripts.train_personality_model import main
from tests.conftest import REPO, train_args, wait_for_resume_state, write_features
from utils import constants as C

METRIC_KEYS = {"epoch", "learning_rate", *C.history_metric_names(), *(f"val_{k}" for k in C.history_metric_names())}
SCRIPT = str(REPO / "scripts" / "train_personality_model.py")


def _cmd(paths, out, *extra):
    return [sys.executable, SCRIPT, *train_args(paths, out, "--epochs", "6", "--patience", "50", *extra)]


def _wait_for_epochs(path: Path, epochs: int, proc: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"training ended early with code {proc.returncode}")
        try:
            if len(json.loads(path.read_text())["epoch"]) >= epochs:
                return
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.02)
    raise AssertionError("training did not reach the epoch in time")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    root = tmp_path_factory.mktemp("full")
    paths = write_features(root / "data", n=96)
    assert main(train_args(paths, root / "out", "--epochs", "6", "--patience", "50")) == 0
    return paths, json.loads((root / "out" / C.HISTORY_JSON_FILE).read_text())


def test_sigkill_then_resume_ends_where_an_uninterrupted_run_ends(uninterrupted, tmp_path):
    paths, full = uninterrupted
    out = tmp_path / "killed"
    proc = subprocess.Popen(_cmd(paths, out), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_for_epochs(out / C.HISTORY_JSON_FILE, 3, proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert (out / "resume" / "state.json").is_file()
    done = subprocess.run(_cmd(paths, out, "--resume"), cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    resumed = json.loads((out / C.HISTORY_JSON_FILE).read_text())
    assert resumed["epoch"] == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]  # every epoch once, in order
    for key in METRIC_KEYS:  # same data order, optimizer, RNG and plateau counters
        np.testing.assert_allclose(resumed[key], full[key], rtol=1e-6, atol=1e-9, err_msg=key)
    assert not (out / "resume").exists()  # cleared after a finished run
    table = np.load(out / C.HISTORY_FILE, allow_pickle=False)
    assert table["epoch"].tolist() == resumed["epoch"]


def test_ctrl_c_stops_cleanly_says_how_to_resume_and_resume_finishes(uninterrupted, tmp_path):
    paths, full = uninterrupted
    out = tmp_path / "interrupted"
    # Ctrl-C as in a terminal: SIGINT at its default in the child, even where this test process was
    # started in the background with SIGINT ignored (which a child inherits, and Python then keeps)
    proc = subprocess.Popen(
        _cmd(paths, out), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    # signal once epoch 1 is fully saved (the resume state is written last), so the five epochs left
    # (about 1 s on tiny data) outlast the 20 ms polling gap
    wait_for_resume_state(out, 1, proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130
    assert "--resume" in err and "Traceback" not in err
    assert (out / C.CHECKPOINT_FILE).is_file()
    assert 1 <= len(json.loads((out / C.HISTORY_JSON_FILE).read_text())["epoch"]) < 6
    done = subprocess.run(_cmd(paths, out, "--resume"), cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    resumed = json.loads((out / C.HISTORY_JSON_FILE).read_text())
    np.testing.assert_allclose(resumed["val_loss"], full["val_loss"], rtol=1e-6)


def test_nan_loss_stops_with_exit_3_and_keeps_the_history(tmp_path, tiny_data, capsys):
    out = tmp_path / "out"
    assert main(train_args(tiny_data, out, "--learning_rate", "1e30")) == 3
    err = capsys.readouterr().err
    assert "loss became nan" in err and "learning_rate" in err and "Traceback" not in err
    history = json.loads((out / C.HISTORY_JSON_FILE).read_text())
    assert history["loss"][-1] is None  # strict JSON: NaN is written as null
    assert np.isnan(np.load(out / C.HISTORY_FILE, allow_pickle=False)["loss"][-1])
    assert not (out / C.MODEL_FILE).exists()  # no model is claimed as trained


def test_resume_needs_an_interrupted_run_and_the_same_settings(tmp_path, tiny_data, capsys):
    out = tmp_path / "out"
    assert main(train_args(tiny_data, out, "--resume")) == 2
    assert "found none" in capsys.readouterr().err
    state = out / C.RESUME_DIR / C.RESUME_STATE_FILE
    state.parent.mkdir(parents=True)
    (state.parent / "epoch-00001.weights.h5").write_bytes(b"")
    from scripts.train_personality_model import build_parser
    from utils.training import TrainConfig

    config = TrainConfig.from_dict(vars(build_parser().parse_args(train_args(tiny_data, out)))).to_dict()
    config["width"] = 999
    state.write_text(json.dumps({"epoch": 1, "weights": "epoch-00001.weights.h5", "config": config}))
    assert main(train_args(tiny_data, out, "--resume")) == 2
    assert "width: 999 -> 16" in capsys.readouterr().err


def test_a_second_run_archives_the_first_whole(tmp_path, tiny_data):
    out = tmp_path / "results"
    assert main(train_args(tiny_data, out, "--output", str(out / "first.h5"), "--epochs", "1")) == 0
    first_history = (out / C.HISTORY_JSON_FILE).read_text()
    (out / C.VISUALIZATION_DIR).mkdir()  # figures of the first run
    assert main(train_args(tiny_data, out, "--epochs", "2")) == 0
    archives = list((out / C.ARCHIVE_DIR).iterdir())
    assert len(archives) == 1
    old = archives[0]
    assert (old / "first.h5").is_file() and (old / C.CHECKPOINT_FILE).is_file()
    assert (old / C.HISTORY_JSON_FILE).read_text() == first_history
    assert (old / C.VISUALIZATION_DIR).is_dir() and (old / C.TENSORBOARD_DIR).is_dir()
    assert not (out / "first.h5").exists() and not (out / C.VISUALIZATION_DIR).exists()
    assert len(json.loads((out / C.HISTORY_JSON_FILE).read_text())["epoch"]) == 2


_WRITER = r"""
import sys, numpy as np
sys.path.insert(0, {repo!r})
from utils.io import write_json, save_npy, save_figure
import matplotlib; matplotlib.use("Agg"); import matplotlib.pyplot as plt
out = sys.argv[1]
fig, ax = plt.subplots(); ax.plot(range(1000))
i = 0
while True:
    i += 1
    payload = np.full(200_000, i % 2, dtype="float64")
    write_json(out + "/state.json", {{"version": i % 2, "payload": list(range(20_000))}})
    save_npy(out + "/array.npy", payload)
    save_figure(fig, out + "/figure.png", dpi=100)
"""

_MODEL_WRITER = r"""
import sys, os
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
sys.path.insert(0, {repo!r})
import keras
from utils.io import save_model
model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(512), keras.layers.Dense(5)])
while True:
    save_model(model, sys.argv[1] + "/model.h5")
"""


def _stamp(path: Path) -> tuple[int, int] | None:
    """Identity of a file's current version (an atomic replace gives a new inode), None if absent."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns


def _kill_repeatedly(code: str, folder: Path, kills: int, seed: int, check, last_written: str) -> None:
    """Start the writer, wait until it has replaced ``last_written`` at least once, kill it mid-loop, check.

    ``last_written`` is the file the writer replaces last in each loop, so the
    kill never lands before the process's first complete write (on a loaded
    machine the start alone can take seconds).
    """
    rng = np.random.default_rng(seed)
    script = folder / "writer.py"
    script.write_text(code.format(repo=str(REPO)))
    evidence = folder / last_written
    for _ in range(kills):
        before = _stamp(evidence)
        proc = subprocess.Popen([sys.executable, str(script), str(folder)], stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while _stamp(evidence) == before:
            assert proc.poll() is None, "the writer exited"
            assert time.monotonic() < deadline, "the writer wrote nothing in 120 s"
            time.sleep(0.02)
        time.sleep(float(rng.uniform(0.0, 0.5)))  # then at a random point of a later write
        proc.kill()
        proc.wait()
        check()


def test_atomic_writes_survive_repeated_kills(tmp_path):
    def check():
        state = json.loads((tmp_path / "state.json").read_text())
        assert state["version"] in (0, 1) and len(state["payload"]) == 20_000
        array = np.load(tmp_path / "array.npy", allow_pickle=False)
        assert array.shape == (200_000,) and len(set(array[[0, -1]].tolist())) == 1
        import matplotlib.image

        assert matplotlib.image.imread(tmp_path / "figure.png").shape[0] > 100

    _kill_repeatedly(_WRITER, tmp_path, kills=6, seed=0, check=check, last_written="figure.png")


def test_model_save_survives_kills(tmp_path):
    import keras

    def check():
        model = keras.models.load_model(tmp_path / "model.h5", compile=False)
        assert model.output_shape == (None, 5)

    _kill_repeatedly(_MODEL_WRITER, tmp_path, kills=2, seed=1, check=check, last_written="model.h5")
