"""scripts/export_model.py: the SavedModel, loaded by TensorFlow alone, gives model.predict's numbers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from scripts.export_model import main
from tests.conftest import REPO, run_script_expecting_input_error
from tests.test_predict import build_saved_model
from utils import constants as C
from utils.prediction import EXPORT_INFO_FILE

SCRIPT = REPO / "scripts" / "export_model.py"
STATIC, DYNAMIC = (4, 8), (12,)  # tokens and a pooled vector: both input kinds in one signature
TOL = 1e-5


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("export")
    model = build_saved_model(root / C.MODEL_FILE, STATIC, DYNAMIC, seed=2)
    target = root / "serving" / "personality" / "1"
    assert main(["--model", str(model), "--output", str(target)]) == 0
    return {"root": root, "model": model, "target": target}


def _serve(folder: Path, static: np.ndarray, dynamic: np.ndarray) -> np.ndarray:
    import tensorflow as tf

    signature = tf.saved_model.load(str(folder)).signatures[C.SERVING_SIGNATURE]
    out = signature(static_features=tf.constant(static), dynamic_features=tf.constant(dynamic))
    assert sorted(out) == sorted(C.TRAITS)
    return np.stack([out[t].numpy() for t in C.TRAITS], axis=1)


def test_saved_model_round_trip_equals_model_predict(exported):
    import keras

    rng = np.random.default_rng(7)
    static = rng.normal(size=(23, *STATIC)).astype("float32")
    dynamic = rng.normal(size=(23, *DYNAMIC)).astype("float32")
    reference = keras.models.load_model(exported["model"], compile=False).predict([static, dynamic], verbose=0)
    served = _serve(exported["target"], static, dynamic)
    assert served.shape == (23, C.NUM_TRAITS)
    assert served.std(axis=0).min() > 0.01  # clips differ: a row or trait mix-up cannot pass
    np.testing.assert_allclose(served, reference, rtol=0, atol=TOL)


def test_signature_names_shapes_and_dtypes(exported):
    import tensorflow as tf

    signature = tf.saved_model.load(str(exported["target"])).signatures[C.SERVING_SIGNATURE]
    _, inputs = signature.structured_input_signature
    assert {k: (v.shape.as_list(), v.dtype) for k, v in inputs.items()} == {
        "static_features": ([None, *STATIC], tf.float32),
        "dynamic_features": ([None, *DYNAMIC], tf.float32),
    }
    outputs = signature.structured_outputs
    assert {k: (v.shape.as_list(), v.dtype) for k, v in outputs.items()} == {t: ([None], tf.float32) for t in C.TRAITS}


def test_rest_request_body_of_the_docs(exported):
    """The columnar "inputs" body of docs/prediction.md, decoded as TF Serving does, feeds the signature."""
    rng = np.random.default_rng(8)
    static = rng.normal(size=(2, *STATIC)).astype("float32")
    dynamic = rng.normal(size=(2, *DYNAMIC)).astype("float32")
    body = json.dumps({"signature_name": "serving_default",
                       "inputs": {"static_features": static.tolist(), "dynamic_features": dynamic.tolist()}})
    request = json.loads(body)
    assert request["signature_name"] == C.SERVING_SIGNATURE
    got = _serve(exported["target"], *(np.asarray(request["inputs"][k], dtype="float32")
                                        for k in ("static_features", "dynamic_features")))
    np.testing.assert_allclose(got, _serve(exported["target"], static, dynamic), rtol=0, atol=0)


def test_export_info_and_no_temporary_folders(exported):
    info = json.loads((exported["target"] / "assets.extra" / EXPORT_INFO_FILE).read_text())
    assert info["signature"] == C.SERVING_SIGNATURE and info["traits"] == list(C.TRAITS)
    assert 0 <= info["max_abs_difference_to_keras"] <= TOL
    import hashlib

    assert info["model"]["sha256"] == hashlib.sha256(exported["model"].read_bytes()).hexdigest()
    assert [p.name for p in exported["target"].parent.iterdir()] == ["1"]
    assert (exported["target"] / "saved_model.pb").is_file()


def test_existing_export_is_refused_then_replaced_with_overwrite(exported, tmp_path, capsys):
    target = tmp_path / "1"
    target.mkdir()
    (target / "keep.txt").write_text("earlier export")
    code = main(["--model", str(exported["model"]), "--output", str(target)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "--overwrite" in err and str(target) in err
    assert [p.name for p in target.iterdir()] == ["keep.txt"]
    assert main(["--model", str(exported["model"]), "--output", str(target), "--overwrite"]) == 0
    assert not (target / "keep.txt").exists() and (target / "saved_model.pb").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["1"]  # no temporary or swapped-out folder left


def test_missing_model_one_line_exit_2(tmp_path):
    out = tmp_path / "sm"
    err = run_script_expecting_input_error(SCRIPT, ["--model", str(tmp_path / "none.keras"), "--output", str(out / "1")], out)
    assert "none.keras" in err and "not found" in err
