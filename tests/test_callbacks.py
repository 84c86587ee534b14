"""Each callback alone (utils.callbacks, utils.run_log_callbacks), on a tiny model or with its hooks called directly.

The end-to-end behaviour of the wired-up run is in test_training.py,
test_run_logging.py and test_reliability.py; here every callback is checked
for its one job, against Keras, NumPy, SciPy or the files it writes.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import keras
import numpy as np
import pytest
import scipy.stats

from utils import callbacks as CB
from utils import constants as C
from utils import run_log_callbacks as RC
from utils.run_log import RunLogWriter, read_jsonl, write_jsonl


@pytest.fixture(scope="module")
def tiny_model():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(5)])
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    return model


def _xy(n: int = 12, seed: int = 0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 3)).astype("float32"), rng.normal(size=(n, 5)).astype("float32")


# ----------------------------------------------------------------- utils.callbacks


def test_learning_rate_in_logs_is_the_optimizers(tiny_model):
    cb = CB.LearningRateInLogs()
    cb.set_model(tiny_model)
    logs: dict = {}
    cb.on_epoch_end(0, logs)
    assert logs == {"learning_rate": pytest.approx(0.01)}


def test_history_writer_appends_epochs_and_fills_late_metrics_with_nan(tmp_path):
    history: dict = {}
    cb = CB.HistoryWriter(history, tmp_path / "h.npy", tmp_path / "h.json")
    cb.on_epoch_end(0, {"loss": 0.5})
    cb.on_epoch_end(1, {"loss": 0.4, "val_loss": 0.6})
    table = np.load(tmp_path / "h.npy", allow_pickle=False)
    assert table["epoch"].tolist() == [1.0, 2.0] and table["loss"].tolist() == pytest.approx([0.5, 0.4])
    assert math.isnan(table["val_loss"][0]) and table["val_loss"][1] == pytest.approx(0.6)
    assert json.loads((tmp_path / "h.json").read_text())["val_loss"] == [None, 0.6]


def test_best_model_checkpoint_saves_only_improvements(tmp_path, tiny_model):
    path = tmp_path / "best.h5"
    cb = CB.BestModelCheckpoint(path)
    cb.set_model(tiny_model)
    cb.on_epoch_end(0, {"val_loss": 0.5})
    first = path.stat().st_ino, path.stat().st_mtime_ns
    cb.on_epoch_end(1, {"val_loss": 0.6})  # worse: the file is not replaced
    assert (path.stat().st_ino, path.stat().st_mtime_ns) == first and cb.best == 0.5
    cb.on_epoch_end(2, {"val_loss": 0.4})
    assert cb.best == 0.4 and (path.stat().st_ino, path.stat().st_mtime_ns) != first
    x, _ = _xy()
    loaded = keras.models.load_model(path, compile=False)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), tiny_model.predict(x, verbose=0), atol=1e-6)


def test_compact_progbar_passes_only_the_headline_metrics(monkeypatch):
    seen = []
    monkeypatch.setattr(keras.callbacks.ProgbarLogger, "on_epoch_end", lambda self, epoch, logs=None: seen.append(logs))
    CB.CompactProgbar().on_epoch_end(0, {"loss": 1.0, "val_r_squared": 0.1, "openness_mae": 0.2, "learning_rate": 1e-3})
    assert seen == [{"loss": 1.0, "val_r_squared": 0.1, "learning_rate": 1e-3}]


def test_epoch_tensorboard_writes_no_per_step_summaries(tmp_path, tiny_model):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    x, y = _xy()
    tags = {}
    for name, kind in (("plain", keras.callbacks.TensorBoard), ("epoch", CB.EpochTensorBoard)):
        tiny_model.fit(x, y, batch_size=4, epochs=1, verbose=0, callbacks=[kind(log_dir=str(tmp_path / name), update_freq=1)])
        acc = EventAccumulator(str(tmp_path / name / "train"), size_guidance={"tensors": 0})
        acc.Reload()
        tags[name] = set(acc.Tags()["tensors"])
    assert any(t.startswith("batch_") for t in tags["plain"])  # Keras' per-step hook writes these ...
    assert not any(t.startswith("batch_") for t in tags["epoch"])  # ... which EpochTensorBoard skips
    # (its epoch summaries are read back against the history in test_training.py)


@pytest.mark.parametrize(
    ("adapter", "make", "values"),
    [
        (CB.EARLY_STOPPING, lambda: keras.callbacks.EarlyStopping(patience=5),
         {"wait": 2, "best": 0.25, "best_epoch": 4, "stopped_epoch": 0, "baseline": 0.375}),
        (CB.PLATEAU, lambda: keras.callbacks.ReduceLROnPlateau(patience=3), {"wait": 1, "best": 0.5, "cooldown_counter": 0}),
        (CB.BEST_CHECKPOINT, lambda: CB.BestModelCheckpoint(Path("unused.h5")), {"best": 0.125}),
    ],
)
def test_each_resume_adapter_round_trips_its_counters_through_json(adapter, make, values, tiny_model):
    before = make()
    before.set_model(tiny_model)
    before.on_train_begin()
    for k, v in values.items():
        setattr(before, k, v)
    saved = json.loads(json.dumps(CB.callback_states([before])))
    assert saved == {adapter.key: values}
    after = make()
    after.set_model(tiny_model)
    after.on_train_begin()  # Keras resets its counters here; the state goes back afterwards
    CB.restore_callback_states([after], saved)
    assert {k: getattr(after, k) for k in values} == values


def test_infinite_best_survives_json_and_adapters_match_by_type():
    es = keras.callbacks.EarlyStopping()
    es.best = math.inf
    saved = json.loads(json.dumps(CB.callback_states([es, keras.callbacks.TerminateOnNaN()])))
    assert list(saved) == [CB.EARLY_STOPPING.key] and saved[CB.EARLY_STOPPING.key]["best"] == "inf"
    other = keras.callbacks.EarlyStopping()
    CB.restore_callback_states([other], saved)
    assert other.best == math.inf
    assert not CB.PLATEAU.applies_to(es) and CB.EARLY_STOPPING.applies_to(es)


def test_resume_checkpoint_saves_each_finite_epoch_and_restores_after_the_reset(tiny_model):
    es = keras.callbacks.EarlyStopping(monitor="loss", patience=10)
    saved = []
    restored = {"EarlyStopping": {"wait": 3, "best": 0.0}}  # no MSE is below 0: every epoch is "no improvement"
    cb = CB.ResumeCheckpoint([es], lambda model, epoch, counters: saved.append((epoch, counters)), restored)
    x, y = _xy()
    tiny_model.fit(x, y, epochs=2, verbose=0, callbacks=[es, cb])
    assert [e for e, _ in saved] == [1, 2]
    # on_train_begin reset wait to 0; the restored 3 then counted on: 4 after epoch 1, 5 after epoch 2
    assert [c["EarlyStopping"]["wait"] for _, c in saved] == [4, 5]
    cb.set_model(tiny_model)
    cb.on_epoch_end(2, {"loss": float("nan")})  # a diverged epoch is never saved
    assert len(saved) == 2


# ------------------------------------------------------------- utils.run_log_callbacks


def _writer(tmp_path: Path, resumed_after: int | None = None) -> RunLogWriter:
    return RunLogWriter(tmp_path, resumed_after=resumed_after)


def test_step_timer_counts_every_step_with_steps_per_execution(tmp_path):
    w = _writer(tmp_path)
    timer = RC.StepTimer(w, n_train=18, batch_size=4)
    timer.set_params({"steps": 5, "epochs": 1})
    timer.on_train_begin()
    timer.on_epoch_begin(0)
    for batch in (1, 3, 5):  # steps_per_execution 2: Keras reports the last step of each call (capped at 5)
        timer.on_train_batch_begin(batch)
        timer.on_train_batch_end(batch)
    logs: dict = {}
    timer.on_epoch_end(0, logs)
    assert (w.global_step, w.epoch_step, w.record["steps"], w.record["samples"]) == (5, 5, 5, 18)
    assert logs[RC.EPOCH_SECONDS_KEY] > 0
    assert logs[RC.SAMPLES_PER_SECOND_KEY] == pytest.approx(18 / w.record["train_seconds"])
    assert timer.summary("running")["steps"] == 5


def test_learning_rate_changes_records_a_cut_with_its_cause(tmp_path):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(5)])
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    w = _writer(tmp_path)
    cb = RC.LearningRateChanges(w, "plateau", factor=0.5, patience=3, min_lr=1e-6)
    cb.set_model(model)
    cb.on_train_begin()
    cb.on_epoch_begin(0)
    model.optimizer.learning_rate.assign(0.005)  # what ReduceLROnPlateau does at the end of epoch 1
    cb.on_epoch_end(0)
    cb.on_epoch_begin(1)
    changes = json.loads((tmp_path / C.LR_CHANGES_FILE).read_text())["changes"]
    assert [(c["epoch"], c["effective_epoch"], c["old"], c["new"], c["cause"]) for c in changes] == [
        (1, 2, pytest.approx(0.01), pytest.approx(0.005), "plateau")
    ]
    assert w.record["learning_rate_start"] == pytest.approx(0.01)


def test_batch_log_writes_every_kth_step(tmp_path, tiny_model):
    w = _writer(tmp_path)
    cb = RC.BatchLog(w, frequency=2)
    cb.set_model(tiny_model)
    cb.on_train_begin()
    for step in range(1, 6):
        w.global_step = w.epoch_step = step
        w.last_call_steps = 1
        cb.on_train_batch_end(step - 1, {"loss": float(step)})
    cb.on_train_end()
    assert [(r["global_step"], r["loss"]) for r in read_jsonl(tmp_path / C.BATCH_LOG_FILE)] == [(2, 2.0), (4, 4.0)]


def test_epoch_log_writes_the_record_the_parts_assembled(tmp_path):
    w = _writer(tmp_path)
    cb = RC.EpochLog(w, timing=lambda status: {"status": status}, epochs=3)
    cb.set_params({"epochs": 3})
    w.record = {"steps": 7, "attention_seconds": 0.0}
    cb.on_epoch_end(0, {"loss": 0.5, "val_loss": 0.6})
    assert read_jsonl(tmp_path / C.EPOCH_LOG_FILE) == [{"epoch": 1, "steps": 7, "attention_seconds": 0.0, "loss": 0.5, "val_loss": 0.6}]
    assert json.loads((tmp_path / C.TIMING_FILE).read_text()) == {"status": "running"}
    assert w.epoch_logged_at is not None


def test_writer_keeps_only_the_finished_epochs_on_resume(tmp_path):
    write_jsonl(tmp_path / C.EPOCH_LOG_FILE, [{"epoch": e, "steps": 3} for e in (1, 2, 3)])
    w = _writer(tmp_path, resumed_after=2)
    w.continue_epochs()
    assert [r["epoch"] for r in read_jsonl(tmp_path / C.EPOCH_LOG_FILE)] == [1, 2]
    assert (w.session_first, w.global_step) == (2, 6)
    assert _writer(tmp_path).kept(C.EPOCH_LOG_FILE) == []  # a new run keeps nothing


def test_attention_probe_matches_scipy_entropy_of_the_models_scores():
    from models.config import ModelConfig
    from models.cross_attention import attention_scores, build_model

    rng = np.random.default_rng(1)
    static = rng.normal(size=(6, 4, 8)).astype("float32")
    dynamic = rng.normal(size=(6, 3, 12)).astype("float32")
    keras.utils.set_random_seed(0)
    model = build_model(ModelConfig(width=16, num_heads=2, head_units=16, fusion="cross_attention"), (4, 8), (3, 12))
    blocks = RC.AttentionProbe(model, static, dynamic).measure()
    scores = attention_scores(model, static, dynamic)
    assert set(blocks) == set(scores)
    for name, p in scores.items():
        expected = scipy.stats.entropy(p.astype("float64"), axis=-1).mean(axis=(0, 2))
        np.testing.assert_allclose(blocks[name]["per_head"], expected, atol=1e-5)
        assert blocks[name]["max_entropy"] == pytest.approx(math.log(p.shape[-1]))
    directions = RC.summarize_directions(blocks, ("static_to_dynamic",))
    assert directions["static_to_dynamic"]["mean"] == pytest.approx(np.mean(blocks["static_to_dynamic_0"]["per_head"]))
