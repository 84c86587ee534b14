"""The bad-input matrix: every case exits 2 with one stderr line, no traceback, no output.

Each case runs a script in-process through its ``main(argv)``. The output
folder of every case is a fresh path that must still not exist afterwards.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from scripts import analyze_model_predictions, train_personality_model, visualize_training_metrics
from tests.conftest import train_args, write_features
from utils import constants as C

N = 48


class Exploit:
    """Unpickling this would create the file named in MARKER."""

    marker = ""

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("trained")
    paths = write_features(root / "data")
    assert train_personality_model.main(train_args(paths, root / "run", "--epochs", "1")) == 0
    return root / "run"


def _save(path: Path, array) -> str:
    np.save(path, array, allow_pickle=True)
    return str(path)


def _bad_file(tmp: Path, kind: str) -> str:
    good = np.random.default_rng(0).normal(size=(N, 4, 8)).astype("float32")
    p = tmp / f"bad_{kind}.npy"
    if kind == "missing":
        return str(p)
    if kind == "empty":
        p.write_bytes(b"")
    elif kind == "truncated":
        np.save(p, good)
        p.write_bytes(p.read_bytes()[:-256])
    elif kind == "text":
        p = tmp / "features.csv"
        p.write_text("1,2,3\n")
    elif kind == "not_npy_bytes":
        p.write_bytes(b"\x00\x01 definitely not numpy")
    elif kind == "pickle":
        Exploit.marker = str(tmp / "PWNED")
        return _save(p, np.array([Exploit()], dtype=object))
    elif kind == "rank1":
        return _save(p, np.ones(N, dtype="float32"))
    elif kind == "rank4":
        return _save(p, np.ones((N, 2, 2, 2), dtype="float32"))
    elif kind == "mismatched_n":
        return _save(p, good[:-3])
    elif kind == "nan":
        good[5, 1, 2] = np.nan
        return _save(p, good)
    elif kind == "inf":
        good[7, 0, 0] = -np.inf
        return _save(p, good)
    elif kind == "zero_samples":
        return _save(p, good[:0])
    elif kind == "int_dtype":
        return _save(p, np.ones((N, 4, 8), dtype=np.int32))
    return str(p)


def _labels(tmp: Path, kind: str) -> str:
    p = tmp / f"labels_{kind}.npy"
    y = np.full((N, 5), 0.5, dtype="float32")
    if kind == "out_of_range":
        y[3, 2] = 1.7
    elif kind == "negative":
        y[0, 0] = -0.2
    elif kind == "wrong_width":
        y = y[:, :4]
    return _save(p, y)


# (script, case name, argv builder(tmp, data, trained_run, out) -> argv, text the line must hold)
def _train(tmp, data, run, out, **over):
    args = dict(data)
    args.update(over)
    return train_args(args, out)


def _train_flag(tmp, data, run, out, *flags):
    return [*train_args(data, out), *flags]


def _analyze(tmp, data, run, out, **over):
    args = {"model": str(run / C.MODEL_FILE), **data, "output": str(out)}
    args.update(over)
    argv = []
    for k, v in args.items():
        argv += [f"--{k}", v]
    return [*argv, "--verbose", "0"]


def _visualize(tmp, data, run, out, history):
    return ["--history", history, "--output", str(out)]


def _not_a_model(tmp: Path) -> str:
    p = tmp / "model.h5"
    p.write_bytes(b"this is not an HDF5 file")
    return str(p)


def _pickled_history(tmp: Path) -> str:
    p = tmp / "old_history.npy"
    np.save(p, {"loss": [0.1, 0.05], "val_loss": [0.2, 0.1]}, allow_pickle=True)
    return str(p)


CASES = [
    # training script: files
    ("train", "missing static file", lambda t, d, r, o: _train(t, d, r, o, static_features=_bad_file(t, "missing")), "not found"),
    ("train", "empty file", lambda t, d, r, o: _train(t, d, r, o, static_features=_bad_file(t, "empty")), "empty file"),
    ("train", "truncated file", lambda t, d, r, o: _train(t, d, r, o, dynamic_features=_bad_file(t, "truncated")), "truncated"),
    ("train", "csv, not npy", lambda t, d, r, o: _train(t, d, r, o, static_features=_bad_file(t, "text")), "expected a .npy file"),
    ("train", "bytes that are not npy", lambda t, d, r, o: _train(t, d, r, o, dynamic_features=_bad_file(t, "not_npy_bytes")), "not in NumPy .npy format"),
    ("train", "pickled object array", lambda t, d, r, o: _train(t, d, r, o, static_features=_bad_file(t, "pickle")), "dtype object"),
    ("train", "rank 1 features", lambda t, d, r, o: _train(t, d, r, o, static_features=_bad_file(t, "rank1")), "rank 1"),
    ("train", "rank 4 features", lambda t, d, r, o: _train(t, d, r, o, dynamic_features=_bad_file(t, "rank4")), "rank 4"),
    ("train", "mismatched N", lambda t, d, r, o: _train(t, d, r, o, dynamic_features=_bad_file(t, "mismatched_n")), "same number of samples"),
    ("train", "NaN in features", lambda t, d, r, o: _train(t, d, r, o, static_features=_bad_file(t, "nan")), "found nan in sample 5"),
    ("train", "Inf in features", lambda t, d, r, o: _train(t, d, r, o, dynamic_features=_bad_file(t, "inf")), "found -inf in sample 7"),
    ("train", "integer features", lambda t, d, r, o: _train(t, d, r, o, static_features=_bad_file(t, "int_dtype")), "found int32"),
    ("train", "labels above 1", lambda t, d, r, o: _train(t, d, r, o, labels=_labels(t, "out_of_range")), "expected labels in [0, 1]"),
    ("train", "labels below 0", lambda t, d, r, o: _train(t, d, r, o, labels=_labels(t, "negative")), "expected labels in [0, 1]"),
    ("train", "labels of width 4", lambda t, d, r, o: _train(t, d, r, o, labels=_labels(t, "wrong_width")), "(N, 5)"),
    ("train", "zero samples", lambda t, d, r, o: _train(
        t, d, r, o, static_features=_bad_file(t, "zero_samples"),
        dynamic_features=_save(t / "d0.npy", np.ones((0, 3, 12), "float32")),
        labels=_save(t / "l0.npy", np.ones((0, 5), "float32"))), "N=0"),
    # training script: flags and output folder
    ("train", "val_split 0", lambda t, d, r, o: _train_flag(t, d, r, o, "--val_split", "0"), "strictly between 0 and 1"),
    ("train", "val_split 1", lambda t, d, r, o: _train_flag(t, d, r, o, "--val_split", "1"), "strictly between 0 and 1"),
    ("train", "val_split negative", lambda t, d, r, o: _train_flag(t, d, r, o, "--val_split", "-0.2"), "strictly between 0 and 1"),
    ("train", "batch_size 0", lambda t, d, r, o: _train_flag(t, d, r, o, "--batch_size", "0"), "positive integer"),
    ("train", "epochs -1", lambda t, d, r, o: _train_flag(t, d, r, o, "--epochs", "-1"), "positive integer"),
    ("train", "output under a file", lambda t, d, r, o: train_args(d, Path(_labels(t, "ok")) / "sub"), "found a file"),
    ("train", "output on a read-only file system", lambda t, d, r, o: train_args(d, Path("/proc/toolkit_results")), "cannot be written"),
    ("train", "width not divisible by heads", lambda t, d, r, o: _train_flag(t, d, r, o, "--width", "15", "--num_heads", "4"), "multiple of num_heads"),
    # analysis script
    ("analyze", "model that is not a model", lambda t, d, r, o: _analyze(t, d, r, o, model=_not_a_model(t)), "model"),
    ("analyze", "missing model", lambda t, d, r, o: _analyze(t, d, r, o, model=str(t / "nope.h5")), "not found"),
    ("analyze", "features that do not match the model", lambda t, d, r, o: _analyze(
        t, d, r, o, static_features=_save(t / "s_wide.npy", np.ones((N, 4, 9), "float32"))), "shape"),
    ("analyze", "pickled features", lambda t, d, r, o: _analyze(t, d, r, o, dynamic_features=_bad_file(t, "pickle")), "dtype object"),
    ("analyze", "NaN features", lambda t, d, r, o: _analyze(t, d, r, o, static_features=_bad_file(t, "nan")), "found nan"),
    # visualization script
    ("visualize", "history that is not a history", lambda t, d, r, o: _visualize(t, d, r, o, d["labels"]), "structured array"),
    ("visualize", "pickled history", lambda t, d, r, o: _visualize(t, d, r, o, _pickled_history(t)), "--trust_pickle"),
    ("visualize", "missing history", lambda t, d, r, o: _visualize(t, d, r, o, str(t / "none.npy")), "not found"),
    ("visualize", "history that is text", lambda t, d, r, o: _visualize(t, d, r, o, _bad_file(t, "not_npy_bytes")), "history"),
]
SCRIPTS = {
    "train": train_personality_model.main,
    "analyze": analyze_model_predictions.main,
    "visualize": visualize_training_metrics.main,
}


@pytest.mark.parametrize(("script", "case", "build", "expected"), CASES, ids=[f"{c[0]}: {c[1]}" for c in CASES])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, trained, capsys, script, case, build, expected):
    data = write_features(tmp_path / "data")
    out = tmp_path / "out"
    argv = build(tmp_path, data, trained, out)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    code = SCRIPTS[script](argv)
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert code == 2, captured.err
    assert len(lines) == 1, lines
    assert "Traceback" not in captured.err and "Traceback" not in captured.out
    assert expected in lines[0], lines[0]
    assert not out.exists(), "an output folder was created"
    assert sorted(p.name for p in tmp_path.rglob("*")) == before, "files appeared"
    assert not (tmp_path / "PWNED").exists()


def test_the_matrix_is_wide_enough():
    assert len(CASES) >= 20
    assert {c[0] for c in CASES} == set(SCRIPTS)
