"""A quiet console: the training script as a batch job sees it (stdout and stderr into files).

One real subprocess run (the start-up lines come from TensorFlow's C++
runtime at import, so only a fresh process shows them), with a learning rate
so small that every epoch after the first is a plateau: a cut per epoch.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, train_args, write_features
from utils.console import STARTUP_LINES, progress_verbosity

EPOCHS = 3


@pytest.fixture(scope="module")
def batch_job(tmp_path_factory) -> tuple[str, str, Path]:
    root = tmp_path_factory.mktemp("console")
    paths = write_features(root / "data")
    out = root / "results"
    argv = train_args(
        paths, out, "--epochs", str(EPOCHS), "--learning_rate", "1e-9", "--min_lr", "1e-12", "--lr_patience", "1",
        "--batch_log_frequency", "0",
    )
    argv[argv.index("--verbose") + 1] = "1"  # the default: a progress bar, had stdout been a terminal
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}  # as a user's shell
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "train_personality_model.py"), *argv],
        capture_output=True, text=True, cwd=REPO, env=env, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout, proc.stderr, out


def test_no_tensorflow_start_up_lines(batch_job):
    _, stderr, _ = batch_job
    assert not [line for line in stderr.splitlines() if STARTUP_LINES.search(line)], stderr
    assert "cuInit" not in stderr and "absl::InitializeLog" not in stderr


def test_one_plain_line_per_epoch_instead_of_the_progress_bar(batch_job):
    stdout, _, _ = batch_job
    assert not re.search(r"[\r\b\x1b]", stdout), "progress-bar control characters in a redirected stdout"
    assert max(len(line) for line in stdout.splitlines()) < 300
    epoch_lines = [line for line in stdout.splitlines() if re.match(rf"Epoch \d+/{EPOCHS}: loss ", line)]
    assert [line.split(":")[0] for line in epoch_lines] == [f"Epoch {e}/{EPOCHS}" for e in range(1, EPOCHS + 1)]


def test_one_message_per_learning_rate_cut(batch_job):
    stdout, stderr, out = batch_job
    import json

    changes = json.loads((out / "lr_changes.json").read_text())["changes"]
    assert len(changes) == EPOCHS - 1  # epoch 1 sets the best val_loss; no later epoch improves
    both = stdout + stderr
    assert "ReduceLROnPlateau" not in both  # Keras' own "reducing learning rate to 5.000000058430487e-10"
    for change in changes:
        assert both.count(f"after epoch {change['epoch']} (plateau") == 1


def test_progress_bar_only_on_a_terminal(monkeypatch):
    class Stream:
        def __init__(self, tty: bool) -> None:
            self.tty = tty

        def isatty(self) -> bool:
            return self.tty

    monkeypatch.setattr(sys, "stdout", Stream(False))
    assert [progress_verbosity(v) for v in (0, 1, 2)] == [0, 0, 2]
    monkeypatch.setattr(sys, "stdout", Stream(True))
    assert [progress_verbosity(v) for v in (0, 1, 2)] == [0, 1, 2]
