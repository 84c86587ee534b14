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


# --------------------------------------------------------------------------- help texts and hints


SCRIPTS = ("train_personality_model", "analyze_model_predictions", "visualize_training_metrics")


@pytest.mark.parametrize("name", SCRIPTS)
def test_help_states_each_default_once_with_an_example_and_the_exit_codes(name, capsys):
    import importlib

    module = importlib.import_module(f"scripts.{name}")
    assert module.main(["--help"]) == 0
    text = capsys.readouterr().out
    for noise in ("(default: None)", "(default: False)", "(default: True)", "(default: ("):
        assert noise not in text, noise
    # one default per flag: split the options part into one block per flag
    options = text.split("\nexample:")[0]
    blocks = re.split(r"\n  (?=-)", options)
    for block in blocks:
        assert block.lower().count("default") <= 1, block
    epilog = text.split("\nexample:\n", 1)[1]
    assert epilog.lstrip().startswith(f"python scripts/{name}.py --")
    assert "exit codes:" in epilog and "    0  done" in epilog and "    2  bad input" in epilog
    assert ("    3  the loss became NaN" in epilog) == (name == "train_personality_model")


def test_a_switch_says_on_or_off(capsys):
    from scripts.train_personality_model import main

    assert main(["--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--jit_compile, --no-jit_compile" in text
    assert re.search(r"--no-jit_compile[^-]*\(default: on\)", text)


def test_labels_on_a_1_to_5_scale_are_refused_with_the_fix(tmp_path):
    import numpy as np

    from utils.data import load_labels
    from utils.errors import InputError

    path = tmp_path / "labels.npy"
    np.save(path, np.random.default_rng(0).integers(1, 6, size=(20, 5)).astype("float32"))
    with pytest.raises(InputError) as info:
        load_labels(path)
    assert "expected labels in [0, 1], found values from 1 to 5" in str(info.value)
    assert "(y - 1) / 4" in str(info.value)
    np.save(path, np.full((20, 5), 1.2, dtype="float32"))  # not a 1-5 scale: no made-up fix
    with pytest.raises(InputError) as info:
        load_labels(path)
    assert "rescale" not in str(info.value)


def test_a_history_folder_is_named_as_a_folder(tmp_path, capsys):
    from scripts.visualize_training_metrics import main

    folder = tmp_path / "results"
    folder.mkdir()
    (folder / "training_history.json").write_text('{"epoch": [1], "loss": [0.1]}')
    assert main(["--history", str(folder), "--output", str(tmp_path / "viz")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "found a folder" in err and f"pass {folder / 'training_history.json'}" in err
    assert "not found" not in err
