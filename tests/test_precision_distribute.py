"""--precision and --distribute (utils.devices): mixed precision keeps float32 outputs, refusals, mirrored runs."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from scripts.train_personality_model import main
from tests.conftest import REPO, run_script_expecting_input_error, train_args, write_features
from utils import constants as C
from utils.devices import check_precision, cpu_supports_bfloat16

TRAIN_SCRIPT = REPO / "scripts" / "train_personality_model.py"
COMPARED = ("loss", "val_loss", "mae", "val_mae", "val_r_squared")


def _history(out: Path) -> dict[str, list[float]]:
    return json.loads((out / C.HISTORY_JSON_FILE).read_text())


def test_mixed_bfloat16_keeps_a_float32_output_and_matches_a_float32_run(tmp_path: Path) -> None:
    from utils.analysis import load_trained_model

    paths = write_features(tmp_path / "data", n=96)
    runs = {}
    for precision in ("float32", "mixed_bfloat16"):
        out = tmp_path / precision
        assert main(train_args(paths, out, "--precision", precision)) == 0
        runs[precision] = _history(out)
    model = load_trained_model(str(tmp_path / "mixed_bfloat16" / "personality_model_trained.h5"))
    policies = {layer.name: layer.dtype_policy.name for layer in model.layers}
    assert policies["traits"] == "float32"
    assert "mixed_bfloat16" in policies.values()  # the rest of the model did compute in bfloat16
    assert model.output.dtype == "float32"
    # bfloat16 keeps 8 bits of mantissa: the same run's losses and metrics agree to about 1%
    for key in COMPARED:
        np.testing.assert_allclose(runs["mixed_bfloat16"][key], runs["float32"][key], rtol=0.02, atol=2e-3,
                                   err_msg=key)
    manifest = json.loads((tmp_path / "mixed_bfloat16" / C.MANIFEST_FILE).read_text())
    execution = manifest["execution"]
    assert execution["precision"] == "mixed_bfloat16" and execution["compute_dtype"] == "bfloat16"
    assert execution["output_layer_dtype"] == "float32" and execution["replicas"] == 1
    import keras

    assert keras.mixed_precision.global_policy().name == "float32"  # restored after the build


def test_mixed_float16_without_a_gpu_is_refused_with_one_line(
    tmp_path: Path, tiny_data: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # counting GPUs imports TensorFlow: the user's environment (no TF_CPP_MIN_LOG_LEVEL), whose start-up
    # lines the script filters (utils.console), so the refusal is the only line
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    out = tmp_path / "results"
    line = run_script_expecting_input_error(TRAIN_SCRIPT, train_args(tiny_data, out, "--precision", "mixed_float16"), out)
    assert "mixed_float16 needs a GPU" in line


def test_multi_worker_is_refused_with_one_line_saying_why(
    tmp_path: Path, tiny_data: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)  # as above: the script filters TensorFlow's lines
    out = tmp_path / "results"
    line = run_script_expecting_input_error(TRAIN_SCRIPT, train_args(tiny_data, out, "--distribute", "multi_worker"), out)
    assert "multi_worker is not supported" in line and "20585" in line


def test_bfloat16_on_a_cpu_warns_unless_the_cpu_has_bfloat16_units(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="utils.devices"):
        check_precision("mixed_bfloat16", gpus=0, flags=frozenset({"sse4_2", "avx2"}))
    assert "emulated" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="utils.devices"):
        check_precision("mixed_bfloat16", gpus=0, flags=frozenset({"avx2", "avx512_bf16"}))
        check_precision("mixed_bfloat16", gpus=1, flags=frozenset())
        check_precision("float32", gpus=0, flags=frozenset())
    assert caplog.text == ""
    assert cpu_supports_bfloat16(frozenset({"amx_bf16"})) and not cpu_supports_bfloat16(frozenset({"avx2"}))


# Two logical CPU devices must be configured before TensorFlow initializes, hence a fresh process.
MIRRORED_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    sys.path.insert(0, {repo!r})
    from scripts.train_personality_model import main
    args = json.loads(sys.argv[1])
    for mode in ("mirrored", "none"):
        code = main(args[mode])
        if code != 0:
            raise SystemExit(code)
    """
)


def test_mirrored_over_two_logical_devices_matches_one_device(tmp_path: Path) -> None:
    paths = write_features(tmp_path / "data", n=96)
    # dropout 0: a replica draws its own dropout masks, which would differ from one device's by design
    extra = ("--dropout", "0", "--epochs", "3")
    args = {mode: train_args(paths, tmp_path / mode, "--distribute", mode, *extra) for mode in ("mirrored", "none")}
    proc = subprocess.run(
        [sys.executable, "-c", MIRRORED_SCRIPT.format(repo=str(REPO)), json.dumps(args)],
        capture_output=True, text=True, timeout=600, cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    mirrored, single = _history(tmp_path / "mirrored"), _history(tmp_path / "none")
    assert len(mirrored["loss"]) == len(single["loss"]) == 3
    # the same global batches and data order; only the order of float additions differs
    for key in COMPARED:
        np.testing.assert_allclose(mirrored[key], single[key], rtol=1e-3, atol=1e-4, err_msg=key)
    execution = json.loads((tmp_path / "mirrored" / C.MANIFEST_FILE).read_text())["execution"]
    assert execution["strategy"] == "MirroredStrategy" and execution["replicas"] == 2
    assert execution["global_batch_size"] == 16 and execution["per_replica_batch_size"] == 8
    assert len(execution["devices"]) == 2 and execution["learning_rate"] == pytest.approx(1e-3)
    assert "split evenly over the replicas" in execution["data_sharding"]
    single_execution = json.loads((tmp_path / "none" / C.MANIFEST_FILE).read_text())["execution"]
    assert single_execution["replicas"] == 1 and single_execution["strategy"] is None


def test_garbage_collection_is_paused_during_fit_and_restored() -> None:
    import gc

    from utils.gc_pause import CollectBetweenEpochs

    cb = CollectBetweenEpochs(max_share=0.05)
    assert gc.isenabled()
    cb.on_train_begin()
    try:
        assert not gc.isenabled()
        cb.on_epoch_end(0)  # the first epoch end collects (no cost known yet)
        assert cb.collections == 1
        cb._cost = 10.0  # a collection that cost 10 s waits for 200 s of training
        cb.on_epoch_end(1)
        assert cb.collections == 1
    finally:
        cb.on_train_end()
    assert gc.isenabled()
