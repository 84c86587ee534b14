"""scripts/predict_personality.py against Keras' own load_model(...).predict, on generated unlabeled data."""

from __future__ import annotations

import csv
import errno
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from scripts.predict_personality import main
from tests.conftest import REPO, run_script_expecting_input_error, write_features
from utils import constants as C
from utils import prediction as PR
from utils.errors import EXIT_INPUT_CHANGED, EXIT_WRITE_FAILED

SCRIPT = REPO / "scripts" / "predict_personality.py"
N = 37  # not a multiple of the batch sizes used below: the last batch is partial
STATIC, DYNAMIC = (4, 8), (3, 12)
TOL = 1e-6


@pytest.fixture(autouse=True)
def _fresh_console_handler():
    """The scripts' console handler keeps the sys.stdout of the test that made it; drop it after each test."""
    yield
    import logging

    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, "_toolkit_console", False)]:
        root.removeHandler(handler)


def build_saved_model(path: Path, static_shape: tuple[int, ...], dynamic_shape: tuple[int, ...], seed: int = 1) -> Path:
    """A small untrained model of models.cross_attention whose outputs depend on the input.

    build_model starts the output layer at a zero kernel (the mean predictor);
    a random kernel makes every clip's prediction different, so a row mix-up
    or a wrong trait order cannot pass.
    """
    from models.cross_attention import ModelConfig, build_model
    from utils.io import save_model

    model = build_model(ModelConfig(width=16, num_heads=2, head_units=16), static_shape, dynamic_shape)
    rng = np.random.default_rng(seed)
    kernel, bias = model.get_layer("traits").get_weights()
    model.get_layer("traits").set_weights([rng.normal(size=kernel.shape).astype("float32"), bias])
    save_model(model, path)
    return path


def keras_reference(model_path: Path, static_path: str, dynamic_path: str) -> np.ndarray:
    import keras

    model = keras.models.load_model(model_path, compile=False)
    return model.predict([np.load(static_path), np.load(dynamic_path)], verbose=0)


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("predict")
    paths = write_features(root / "data", n=N, static_shape=STATIC, dynamic_shape=DYNAMIC, seed=3)
    run_dir = root / "run"
    run_dir.mkdir()
    model = build_saved_model(run_dir / C.MODEL_FILE, STATIC, DYNAMIC)
    summary = run_dir / C.TRAINING_SUMMARY_FILE
    summary.write_text(json.dumps({"best_epoch": 1}))
    ids = [f"video{i:03d}.{i % 3:03d}.mp4" for i in range(N)]
    ids[5] = 'with,comma "quoted"'  # the CSV must quote it and read back the same name
    ids_file = root / "data" / "ids.txt"
    ids_file.write_text("\n".join(ids) + "\n", encoding="utf-8")
    reference = keras_reference(model, paths["static_features"], paths["dynamic_features"])
    return {"root": root, "paths": paths, "model": model, "summary": summary, "ids": ids,
            "ids_file": ids_file, "reference": reference}


def _args(setup: dict, output: Path, *extra: str, model: Path | None = None, **paths: str) -> list[str]:
    return [
        "--model", str(model or setup["model"]),
        "--static_features", paths.get("static", setup["paths"]["static_features"]),
        "--dynamic_features", paths.get("dynamic", setup["paths"]["dynamic_features"]),
        "--output", str(output),
        *extra,
    ]


def _read_csv(path: Path) -> tuple[list[str], list[str], np.ndarray]:
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    return rows[0], [r[0] for r in rows[1:]], np.array([[float(v) for v in r[1:]] for r in rows[1:]])


def _sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def with_ids(setup) -> dict:
    out = setup["root"] / "with_ids" / "preds.csv"
    assert main(_args(setup, out, "--ids", str(setup["ids_file"]), "--batch_size", "8")) == 0
    return {"csv": out, "npy": out.with_name("preds.npy"), "info": out.with_name("preds_info.json")}


def test_predictions_equal_keras_predict(setup, with_ids):
    npy = np.load(with_ids["npy"], allow_pickle=False)
    assert npy.dtype == np.float32 and npy.shape == (N, C.NUM_TRAITS)
    assert npy.std(axis=0).min() > 0.01  # the clips really get different predictions
    np.testing.assert_allclose(npy, setup["reference"], rtol=0, atol=TOL)


def test_csv_has_ids_traits_and_the_npy_values(setup, with_ids):
    header, ids, values = _read_csv(with_ids["csv"])
    assert header == ["id", "openness", "conscientiousness", "extraversion", "agreeableness", "neuroticism"]
    assert ids == setup["ids"]
    npy = np.load(with_ids["npy"], allow_pickle=False)
    # the text is the shortest one that reads back as the same float32
    np.testing.assert_array_equal(values.astype(np.float32), npy)
    np.testing.assert_allclose(values, setup["reference"], rtol=0, atol=TOL)


def test_info_json_records_hashes_n_and_versions(setup, with_ids):
    import keras
    import tensorflow as tf

    info = json.loads(with_ids["info"].read_text())
    assert info["n"] == N
    assert info["traits"] == list(C.TRAITS)
    assert info["model"]["sha256"] == _sha256(setup["model"])
    assert info["model"]["training_summary"] == str(setup["summary"].resolve())
    assert info["model"]["input_shapes"] == {"static": list(STATIC), "dynamic": list(DYNAMIC)}
    for key in ("static_features", "dynamic_features"):
        assert info["inputs"][key]["sha256"] == _sha256(setup["paths"][key])
    assert info["inputs"]["ids"]["sha256"] == _sha256(setup["ids_file"])
    assert info["software"]["tensorflow"] == tf.__version__
    assert info["software"]["keras"] == keras.__version__
    assert info["software"]["numpy"] == np.__version__


def test_row_index_ids_without_ids_file_and_any_batch_size(setup, tmp_path):
    out = tmp_path / "predictions.csv"
    assert main(_args(setup, out, "--batch_size", "5")) == 0
    _, ids, values = _read_csv(out)
    assert ids == [str(i) for i in range(N)]
    np.testing.assert_allclose(values, setup["reference"], rtol=0, atol=TOL)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["predictions.csv", "predictions.npy", "predictions_info.json"]
    info = json.loads((tmp_path / "predictions_info.json").read_text())
    assert "ids" not in info["inputs"]


def test_pooled_float64_features(tmp_path):
    """The earlier phases' pooled (N, D) float64 files work as they are."""
    paths = write_features(tmp_path / "data", n=9, static_shape=(16,), dynamic_shape=(10,), dtype="float64")
    model = build_saved_model(tmp_path / "pooled.keras", (16,), (10,))
    out = tmp_path / "out" / "p.csv"
    assert main(["--model", str(model), "--static_features", paths["static_features"],
                 "--dynamic_features", paths["dynamic_features"], "--output", str(out)]) == 0
    reference = keras_reference(model, paths["static_features"], paths["dynamic_features"])
    np.testing.assert_allclose(np.load(out.with_suffix(".npy")), reference, rtol=0, atol=TOL)


def _expect_one_line(capsys, code: int, *fragments: str) -> str:
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1, err
    for fragment in fragments:
        assert fragment in err, (fragment, err)
    return err


@pytest.mark.parametrize(
    ("stream", "bad_shape", "expected"),
    [
        ("static", (5, 8), "(4, 8)"),  # wrong token count
        ("static", (4, 9), "(4, 8)"),  # wrong width
        ("dynamic", (3, 11), "(3, 12)"),
        ("dynamic", (36,), "(3, 12)"),  # pooled where the model wants tokens
    ],
)
def test_shape_mismatch_is_one_line_and_writes_nothing(setup, tmp_path, capsys, stream, bad_shape, expected):
    bad = tmp_path / f"{stream}_bad.npy"
    np.save(bad, np.zeros((N, *bad_shape), dtype="float32"))
    out = tmp_path / "out" / "predictions.csv"
    code = main(_args(setup, out, **{stream: str(bad)}))
    _expect_one_line(capsys, code, str(bad), expected, str(bad_shape), str(setup["model"]))
    assert not out.parent.exists()


def test_ids_count_mismatch_is_one_line(setup, tmp_path, capsys):
    ids = tmp_path / "ids.txt"
    ids.write_text("\n".join(f"c{i}" for i in range(N - 1)))
    out = tmp_path / "out" / "predictions.csv"
    code = main(_args(setup, out, "--ids", str(ids)))
    _expect_one_line(capsys, code, str(ids), f"expected {N} ids", f"found {N - 1}")
    assert not out.parent.exists()


def test_output_must_be_a_csv_path(setup, tmp_path, capsys):
    code = main(_args(setup, tmp_path / "predictions.npy"))
    _expect_one_line(capsys, code, "expected --output to be a .csv file path")
    assert list(tmp_path.iterdir()) == []


def test_missing_model_subprocess_one_line_exit_2(setup, tmp_path):
    out = tmp_path / "out"
    err = run_script_expecting_input_error(SCRIPT, _args(setup, out / "p.csv", model=tmp_path / "absent.h5"), out)
    assert "absent.h5" in err and "not found" in err


def test_failed_run_leaves_earlier_outputs_untouched(setup, tmp_path, capsys):
    out = tmp_path / "predictions.csv"
    earlier = {out: b"id,openness\n0,0.5\n", out.with_suffix(".npy"): b"old npy", tmp_path / "predictions_info.json": b"{}"}
    for path, content in earlier.items():
        path.write_bytes(content)
    bad = tmp_path / "static_bad.npy"
    np.save(bad, np.zeros((N, 5, 8), dtype="float32"))
    _expect_one_line(capsys, main(_args(setup, out, static=str(bad))), str(bad))
    assert {p: p.read_bytes() for p in earlier} == earlier
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*(p.name for p in earlier), bad.name])


def test_write_failure_midway_leaves_no_partial_set(setup, tmp_path, monkeypatch, capsys):
    """The disk fills up while the .npy is written after the .csv: one line, exit 4, the earlier .csv stays, no temp."""
    out = tmp_path / "predictions.csv"
    out.write_text("earlier\n")

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(PR.np, "save", disk_full)
    code = main(_args(setup, out))
    assert code == EXIT_WRITE_FAILED
    _expect_one_line(capsys, 2, str(out.with_suffix(".npy")), "ENOSPC")
    assert out.read_text() == "earlier\n"
    assert [p.name for p in tmp_path.iterdir()] == ["predictions.csv"]


def test_an_input_changed_during_prediction_writes_nothing(setup, tmp_path, monkeypatch, capsys):
    """The features file is rewritten while the model predicts: exit 5, one line naming it, no output."""
    static = tmp_path / "static.npy"
    shutil.copy(setup["paths"]["static_features"], static)
    original = PR.predict

    def predict_while_the_file_changes(*args, **kwargs):
        st = static.stat()
        os.utime(static, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
        return original(*args, **kwargs)

    monkeypatch.setattr(PR, "predict", predict_while_the_file_changes)
    out = tmp_path / "out" / "predictions.csv"
    code = main(_args(setup, out, static=str(static)))
    assert code == EXIT_INPUT_CHANGED
    _expect_one_line(capsys, 2, str(static.resolve()), "modified")
    assert not out.parent.exists()


def test_progress_bar_only_on_a_terminal_or_a_long_input(setup, tmp_path, capsys):
    assert not PR.show_progress(1, N)  # pytest's stderr is not a terminal
    assert PR.show_progress(1, PR.PROGRESS_MIN_SAMPLES)
    assert not PR.show_progress(0, PR.PROGRESS_MIN_SAMPLES)
    assert main(_args(setup, tmp_path / "p.csv")) == 0
    assert f"{N}/{N}" not in capsys.readouterr().out  # no Keras progress bar in a short piped run


@pytest.mark.parametrize("script", ["predict_personality", "export_model"])
def test_help_does_not_import_tensorflow(script):
    code = (
        "import sys, contextlib, io\n"
        f"from scripts.{script} import main\n"
        "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
        "    rc = main(['--help'])\n"
        "assert rc == 0 and '--model' in out.getvalue(), out.getvalue()\n"
        "heavy = [m for m in ('tensorflow', 'keras', 'h5py') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
