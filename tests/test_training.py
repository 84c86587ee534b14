"""The training CLI end to end, in-process on tiny data."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from scripts.train_personality_model import main
from tests.conftest import REPO, train_args
from utils import constants as C


def _expected_history_keys() -> set[str]:
    train = set(C.history_metric_names())
    return {"epoch", "learning_rate"} | train | {f"val_{k}" for k in train}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from tests.conftest import write_features

    root = tmp_path_factory.mktemp("run")
    paths = write_features(root / "data")
    out = root / "results"
    # XLA on whatever the run's length (--jit_min_steps 0): the suite's one run of the compiled path
    code = main(train_args(paths, out, "--epochs", "3", "--histogram_freq", "1", "--jit_compile", "--jit_min_steps", "0"))
    return code, out, paths


def test_writes_every_file_the_seed_lists(trained):
    code, out, _ = trained
    assert code == 0
    for name in (C.MODEL_FILE, C.CHECKPOINT_FILE, C.HISTORY_FILE, C.HISTORY_JSON_FILE, C.TRAINING_SUMMARY_FILE):
        assert (out / name).is_file(), name
    assert (out / C.TENSORBOARD_DIR / "train").is_dir()
    assert (out / C.TENSORBOARD_DIR / "validation").is_dir()
    assert not list(out.glob(".*tmp*")), "temporary files left behind"


def test_history_npy_loads_without_pickle_and_matches_the_json_twin(trained):
    _, out, _ = trained
    table = np.load(out / C.HISTORY_FILE, allow_pickle=False)
    assert set(table.dtype.names) >= _expected_history_keys()  # logging may add timing keys
    assert table["epoch"].tolist() == [1.0, 2.0, 3.0]
    twin = json.loads((out / C.HISTORY_JSON_FILE).read_text())
    for name in table.dtype.names:
        np.testing.assert_allclose(table[name], twin[name], rtol=0, atol=0)


def test_history_r_squared_is_the_mean_of_the_per_trait_values(trained):
    _, out, _ = trained
    table = np.load(out / C.HISTORY_FILE, allow_pickle=False)
    for prefix in ("", "val_"):
        per_trait = np.mean([table[f"{prefix}{t}_r_squared"] for t in C.TRAITS], axis=0)
        np.testing.assert_allclose(table[f"{prefix}r_squared"], per_trait, atol=1e-6)


def test_final_model_and_checkpoint_load_and_match_sklearn_on_validation(trained):
    import keras
    from sklearn.metrics import r2_score

    from utils.data import load_dataset, split_indices

    _, out, paths = trained
    summary = json.loads((out / C.TRAINING_SUMMARY_FILE).read_text())
    data = load_dataset(paths["static_features"], paths["dynamic_features"], paths["labels"])
    _, val = split_indices(len(data), 0.2, seed=42)
    x = [np.asarray(data.static[val]), np.asarray(data.dynamic[val])]
    y = np.asarray(data.labels[val])
    model = keras.models.load_model(out / C.MODEL_FILE)
    ckpt = keras.models.load_model(out / C.CHECKPOINT_FILE)
    pred = model.predict(x, verbose=0)
    np.testing.assert_allclose(ckpt.predict(x, verbose=0), pred, atol=1e-6)  # best epoch both
    # the summary's best validation R² is what sklearn computes from the saved model
    assert summary["best_validation"]["val_r_squared"] == pytest.approx(r2_score(y, pred), abs=1e-5)
    per_trait = r2_score(y, pred, multioutput="raw_values")
    for t, value in zip(C.TRAITS, per_trait):
        assert summary["best_validation"][f"val_{t}_r_squared"] == pytest.approx(value, abs=1e-5)
    means = np.asarray(data.labels)[split_indices(len(data), 0.2, seed=42)[0]].mean(0)
    assert list(summary["train_label_means"].values()) == pytest.approx(means.tolist())


def test_tensorboard_has_per_trait_series_for_train_and_validation(trained):
    import tensorflow as tf
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, out, _ = trained
    history = json.loads((out / C.HISTORY_JSON_FILE).read_text())
    for run, prefix in (("train", ""), ("validation", "val_")):
        acc = EventAccumulator(str(out / C.TENSORBOARD_DIR / run), size_guidance={"tensors": 0})
        acc.Reload()
        tags = set(acc.Tags()["tensors"])
        for t in C.TRAITS:
            for stat in C.PER_TRAIT_STATISTICS:
                tag = f"{stat}/{t}"  # grouped by metric, trait after the slash (utils.tensorboard_tags)
                assert tag in tags, (run, tag)
                values = [float(tf.make_ndarray(e.tensor_proto)) for e in acc.Tensors(tag)]
                np.testing.assert_allclose(values, history[f"{prefix}{t}_{stat}"], rtol=1e-5)


def test_same_seed_gives_the_same_history_and_another_seed_does_not(tmp_path, tiny_data):
    runs = {}
    for name, seed in (("a", "3"), ("b", "3"), ("c", "4")):
        assert main(train_args(tiny_data, tmp_path / name, "--seed", seed)) == 0
        runs[name] = json.loads((tmp_path / name / C.HISTORY_JSON_FILE).read_text())
    metrics = _expected_history_keys()  # wall-clock timing keys legitimately differ
    assert {k: runs["a"][k] for k in metrics} == {k: runs["b"][k] for k in metrics}
    assert runs["a"]["loss"] != runs["c"]["loss"]


def test_a_run_that_no_epoch_improves_keeps_the_ridge_start(tmp_path, tiny_data):
    """Epoch 0 is a candidate: with a learning rate that wrecks every epoch, the saved model is the start."""
    from sklearn.linear_model import RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from models.linear_init import RIDGE_ALPHAS
    from utils.data import load_dataset, split_indices

    code = main(train_args(tiny_data, tmp_path, "--epochs", "8", "--patience", "2", "--learning_rate", "5"))
    assert code == 0
    summary = json.loads((tmp_path / C.TRAINING_SUMMARY_FILE).read_text())
    history = json.loads((tmp_path / C.HISTORY_JSON_FILE).read_text())
    assert summary["best_epoch"] == 0
    # patience counted against the start: the stop Keras' EarlyStopping rule gives with baseline = the start's
    # loss (an epoch that beats the best so far but not the baseline does not reset the wait); without the
    # baseline every improving epoch would reset it and the run would go on longer
    start = json.loads((tmp_path / C.START_VALIDATION_FILE).read_text())["val_loss"]
    wait, best, expected = 0, float("inf"), None
    for epoch, loss in enumerate(history["val_loss"], start=1):
        wait += 1
        if loss < best:
            best, wait = loss, 0 if loss < start else wait
            continue
        if wait >= 2:
            expected = epoch
            break
    assert expected is not None and len(history["epoch"]) == expected < 8
    data = load_dataset(tiny_data["static_features"], tiny_data["dynamic_features"], tiny_data["labels"])
    train, val = split_indices(len(data), 0.2, seed=42)
    import keras

    model = keras.models.load_model(tmp_path / C.MODEL_FILE)
    pred = model.predict([np.asarray(data.static[val]), np.asarray(data.dynamic[val])], verbose=0)
    # every trained epoch was worse on validation than what was kept
    kept = float(np.mean((pred - np.asarray(data.labels[val])) ** 2))
    assert min(history["val_loss"]) > kept
    # ... and what was kept is ridge on the pooled token means (scikit-learn), up to the sigmoid's curvature
    pooled = np.hstack([np.asarray(data.static).mean(1), np.asarray(data.dynamic).mean(1)])
    ridge = make_pipeline(StandardScaler(), RidgeCV(alphas=RIDGE_ALPHAS, alpha_per_target=True))
    ridge.fit(pooled[train], np.asarray(data.labels)[train])
    reference = ridge.predict(pooled[val])
    for j in range(C.NUM_TRAITS):
        assert np.corrcoef(pred[:, j], reference[:, j])[0, 1] > 0.99


def test_cosine_schedule_decays_the_learning_rate(tmp_path, tiny_data):
    assert main(train_args(tiny_data, tmp_path, "--schedule", "cosine", "--epochs", "3")) == 0
    lr = json.loads((tmp_path / C.HISTORY_JSON_FILE).read_text())["learning_rate"]
    assert lr[0] > lr[1] > lr[2]


def test_pooled_float64_features_of_earlier_phases_train(tmp_path):
    import keras
    from sklearn.metrics import r2_score

    from tests.conftest import write_features
    from utils.data import split_indices

    paths = write_features(tmp_path / "d", n=40, static_shape=(512,), dynamic_shape=(256,), dtype="float64")
    out = tmp_path / "out"
    assert main(train_args(paths, out, "--epochs", "1", "--fusion", "concat")) == 0
    model = keras.models.load_model(out / C.MODEL_FILE)
    assert [tuple(t.shape) for t in model.inputs] == [(None, 512), (None, 256)]  # the pooled vectors, whole
    history = json.loads((out / C.HISTORY_JSON_FILE).read_text())
    assert history["epoch"] == [1.0] and np.isfinite(history["loss"][0]) and np.isfinite(history["val_loss"][0])
    # the float64 files were read as they are: the saved model (the best of epochs 0 and 1)
    # reproduces the validation R² logged for it
    summary = json.loads((out / C.TRAINING_SUMMARY_FILE).read_text())
    _, val = split_indices(40, 0.2, seed=42)
    x = [np.load(paths["static_features"])[val], np.load(paths["dynamic_features"])[val]]
    y = np.load(paths["labels"])[val]
    pred = model.predict([a.astype("float32") for a in x], verbose=0)
    logged = history["val_r_squared"][0] if summary["best_epoch"] == 1 else summary["start_validation"]["val_r_squared"]
    assert summary["best_validation"]["val_r_squared"] == logged
    assert logged == pytest.approx(r2_score(y, pred), abs=1e-5)


def test_wandb_offline_writes_a_run(tmp_path, tiny_data, wandb_env):
    out = tmp_path / "results"
    assert main(train_args(tiny_data, out, "--wandb", "--wandb_mode", "offline")) == 0
    runs = list(out.glob("wandb/offline-run-*/run-*.wandb"))
    assert len(runs) == 1 and runs[0].stat().st_size > 0


def test_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, tiny_data, capsys):
    np.save(tiny_data["labels"], np.full((48, 5), 1.5, dtype="float32"))
    out = tmp_path / "results"
    assert main(train_args(tiny_data, out)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "labels.npy" in err[0] and "[0, 1]" in err[0]
    assert "Traceback" not in err[0]
    assert not out.exists()


def test_help_answers_without_importing_tensorflow():
    code = (
        "import sys, runpy; sys.argv=['train_personality_model.py','--help'];\n"
        "try:\n runpy.run_path('scripts/train_personality_model.py', run_name='__main__')\n"
        "except SystemExit: pass\n"
        "print('TF_LOADED' if 'tensorflow' in sys.modules else 'TF_ABSENT')"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert "--static_features" in proc.stdout and "--wandb_mode" in proc.stdout
    assert proc.stdout.strip().endswith("TF_ABSENT")


def test_seed_command_verbatim_parses():
    from scripts.train_personality_model import build_parser

    args = build_parser().parse_args(
        "--static_features data_sample/static_features.npy --dynamic_features "
        "data_sample/dynamic_features.npy --labels data_sample/labels.npy --val_split 0.2 "
        "--batch_size 16 --epochs 50 --output results/personality_model_trained.h5".split()
    )
    assert args.output == "results/personality_model_trained.h5" and args.epochs == 50
    assert Path(args.output).parent == Path(C.DEFAULT_RESULTS_DIR)
