"""Phase 4.3 run logging: each file a run writes, read back and checked against independent sources.

Three short trainings per module (default, forced plateau, cosine without
attention) plus one with wandb offline; every check reads what the run wrote
(JSON, TensorBoard through its HTTP API, wandb through its record format) and
compares it with numbers computed here (hashlib, numpy, the saved model).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import math
import os
import platform
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib
from pathlib import Path

import keras
import numpy as np
import pytest
import scipy.stats

from scripts.train_personality_model import main
from tests.conftest import REPO, train_args, write_features
from utils import constants as C
from utils import run_logging as RL

N_SAMPLES = 48  # write_features default
N_VAL = round(N_SAMPLES * 0.2)
N_TRAIN = N_SAMPLES - N_VAL
BATCH = 16  # train_args default
STEPS = math.ceil(N_TRAIN / BATCH)
# one step per graph call, so every batch reaches the callbacks (the default is 8); the bidirectional
# fusion, so both attention directions are logged
RUN_ARGS = (
    "--epochs", "3", "--batch_log_frequency", "1", "--steps_per_execution", "1", "--fusion", "cross_attention",
)


def _train(root: Path, *extra: str) -> tuple[Path, dict[str, str]]:
    paths = write_features(root / "data")
    out = root / "results"
    assert main(train_args(paths, out, *extra)) == 0
    return out, paths


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Bidirectional cross-attention, plateau schedule, every batch logged."""
    return _train(tmp_path_factory.mktemp("run"), *RUN_ARGS)


@pytest.fixture(scope="module")
def plateau_run(tmp_path_factory):
    """A learning rate so small that val_loss cannot improve by min_delta: a cut after every epoch but the first."""
    return _train(
        tmp_path_factory.mktemp("plateau"),
        "--epochs", "4", "--learning_rate", "1e-9", "--min_lr", "1e-12", "--lr_patience", "1",
        "--lr_factor", "0.5", "--batch_log_frequency", "0",
    )


@pytest.fixture(scope="module")
def cosine_run(tmp_path_factory):
    """Cosine decay, a fusion without attention, every second batch logged."""
    return _train(
        tmp_path_factory.mktemp("cosine"),
        "--epochs", "3", "--schedule", "cosine", "--fusion", "concat", "--batch_log_frequency", "2",
        "--steps_per_execution", "1",
    )


def _json(path: Path):
    return json.loads(path.read_text(encoding="utf-8"))


def _history(out: Path) -> dict[str, list[float]]:
    return _json(out / C.HISTORY_JSON_FILE)


def _iso(text: str) -> dt.datetime:
    value = dt.datetime.fromisoformat(text)
    assert value.utcoffset() == dt.timedelta(0), f"not UTC: {text}"
    return value


# ---------------------------------------------------------------------------
# run_manifest.json
# ---------------------------------------------------------------------------


def test_manifest_describes_the_run(run):
    import keras
    import tensorflow as tf

    from utils.data import split_indices

    out, paths = run
    m = _json(out / RL.MANIFEST_FILE)
    assert m["status"] == "completed"
    assert _iso(m["started_at"]) <= _iso(m["ended_at"])
    assert m["logged_seconds"] > 0
    assert m["seed"] == 42 == m["config"]["seed"]
    assert m["config"]["epochs"] == 3 and m["config"]["batch_log_frequency"] == 1
    assert m["config"]["static_features"] == paths["static_features"]
    assert m["versions"]["python"] == platform.python_version()
    assert m["versions"]["tensorflow"] == tf.__version__
    assert m["versions"]["keras"] == keras.__version__
    assert m["versions"]["numpy"] == np.__version__
    assert m["host"]["hostname"] == socket.gethostname()
    assert any(d["type"] == "CPU" for d in m["devices"])
    # data
    labels = np.load(paths["labels"])
    train_idx, _ = split_indices(N_SAMPLES, 0.2, seed=42)
    assert m["data"]["n_train"] == N_TRAIN and m["data"]["n_val"] == N_VAL
    means = labels[train_idx].astype("float64").mean(axis=0)
    assert list(m["data"]["train_label_means"]) == list(C.TRAITS)
    np.testing.assert_allclose(list(m["data"]["train_label_means"].values()), means, rtol=1e-12)
    # parameters, counted on the saved model
    model = keras.models.load_model(out / C.MODEL_FILE)
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    frozen = sum(int(np.prod(w.shape)) for w in model.non_trainable_weights)
    assert m["model"]["parameters"]["trainable"] == trainable
    assert m["model"]["parameters"]["frozen"] == frozen
    assert m["result"]["best_epoch"] == _json(out / C.TRAINING_SUMMARY_FILE)["best_epoch"]


def test_manifest_hashes_shapes_and_dtypes_match_the_inputs(run):
    out, paths = run
    inputs = _json(out / RL.MANIFEST_FILE)["inputs"]
    assert set(inputs) == {"static_features", "dynamic_features", "labels"}
    for role, path in paths.items():
        array = np.load(path)
        assert inputs[role]["sha256"] == hashlib.sha256(Path(path).read_bytes()).hexdigest()
        assert inputs[role]["shape"] == list(array.shape)
        assert inputs[role]["dtype"] == str(array.dtype)
        assert Path(inputs[role]["path"]) == Path(path).resolve()


def test_manifest_git_state_matches_git(run):
    out, _ = run
    git = _json(out / RL.MANIFEST_FILE)["git"]
    if shutil.which("git") is None or not (REPO / ".git").exists():
        assert git is None
        return
    def run_git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, timeout=10)

    # the run's commit is a real commit of this checkout (HEAD may have moved on since the run)
    assert run_git("merge-base", "--is-ancestor", git["commit"], "HEAD").returncode == 0
    assert isinstance(git["dirty"], bool)
    # and git_state reads what git says, now
    now = RL.git_state(REPO)
    assert now["commit"] == run_git("rev-parse", "HEAD").stdout.strip()
    assert now["branch"] == run_git("rev-parse", "--abbrev-ref", "HEAD").stdout.strip()


def test_git_state_without_a_checkout_is_none(tmp_path):
    assert RL.git_state(tmp_path) is None


# ---------------------------------------------------------------------------
# training.log
# ---------------------------------------------------------------------------


def test_training_log_has_timestamped_epoch_lines_and_its_handler_is_removed(run):
    out, _ = run
    path = out / RL.TRAINING_LOG_FILE
    lines = path.read_text(encoding="utf-8").splitlines()
    stamp = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) ")
    assert lines and stamp.match(lines[0])
    epoch_lines = [line for line in lines if re.search(r"INFO Epoch \d+/3: loss ", line)]
    assert len(epoch_lines) == 3
    assert all("val_loss" in line and "val R²" in line and "lr " in line and " s (" in line for line in epoch_lines)
    assert "Run completed" in lines[-1]
    assert not any(
        isinstance(h, logging.FileHandler) and Path(h.baseFilename) == path.resolve()
        for h in logging.getLogger().handlers
    )


# ---------------------------------------------------------------------------
# epoch_log.jsonl and timing.json
# ---------------------------------------------------------------------------


def test_epoch_log_holds_every_history_metric_and_the_timing(run):
    out, _ = run
    records = RL.read_jsonl(out / RL.EPOCH_LOG_FILE)
    history = _history(out)
    assert [r["epoch"] for r in records] == [1, 2, 3]
    for i, r in enumerate(records):
        for key, values in history.items():
            if key != "epoch":
                assert r[key] == pytest.approx(values[i], rel=1e-12, abs=1e-12), key
        assert r["steps"] == STEPS and r["samples"] == N_TRAIN
        assert r["samples_per_second"] == pytest.approx(N_TRAIN / r["train_seconds"])
        assert 0 < r["train_seconds"] <= r["epoch_seconds"]
        assert r["validation_seconds"] > 0
        assert r["step_seconds_median"] <= r["step_seconds_p95"]
        assert r["learning_rate"] == pytest.approx(1e-3, rel=1e-6)
    # the logger's keys reached the history (and through the same logs TensorBoard and wandb)
    assert set(RL.logged_history_keys("cross_attention")) <= set(history)


def test_times_increase_and_the_total_covers_the_epochs(run):
    out, _ = run
    records = RL.read_jsonl(out / RL.EPOCH_LOG_FILE)
    elapsed = [r["elapsed_seconds"] for r in records]
    assert all(a < b for a, b in zip(elapsed, elapsed[1:]))
    ended = [_iso(r["ended_at"]) for r in records]
    assert ended == sorted(ended)
    batches = RL.read_jsonl(out / RL.BATCH_LOG_FILE)
    batch_elapsed = [b["elapsed_seconds"] for b in batches]
    assert all(a < b for a, b in zip(batch_elapsed, batch_elapsed[1:]))
    timing = _json(out / RL.TIMING_FILE)
    epoch_sum = sum(r["epoch_seconds"] for r in records)
    assert timing["status"] == "completed"
    assert timing["epoch_seconds"]["sum"] == pytest.approx(epoch_sum)
    assert timing["total_seconds"] >= timing["fit_seconds"] >= epoch_sum
    assert timing["total_seconds"] == pytest.approx(_json(out / RL.MANIFEST_FILE)["logged_seconds"])
    assert timing["steps"] == 3 * STEPS
    assert timing["step_seconds"]["count"] == 3 * STEPS - 1  # the first (tracing) step is reported apart
    assert timing["first_step_seconds"] > timing["step_seconds"]["median"]
    assert timing["gap_seconds"]["count"] == 3 * (STEPS - 1)
    assert timing["step_seconds"]["median"] <= timing["step_seconds"]["p95"] <= timing["step_seconds"]["max"]
    parts = timing["breakdown_seconds"]
    assert all(v >= 0 for v in parts.values())
    assert sum(parts.values()) == pytest.approx(timing["fit_seconds"], rel=1e-6)
    # each batch's duration is the step time the summary is built from
    steps = [b["batch_seconds"] for b in batches]
    assert timing["step_seconds"]["sum"] == pytest.approx(sum(steps[1:]), rel=1e-9)


# ---------------------------------------------------------------------------
# batch_log.jsonl
# ---------------------------------------------------------------------------


def test_batch_log_has_one_record_per_logged_step(run, cosine_run, plateau_run):
    batches = RL.read_jsonl(run[0] / RL.BATCH_LOG_FILE)
    assert len(batches) == STEPS * 3 // 1
    assert [b["global_step"] for b in batches] == list(range(1, 3 * STEPS + 1))
    assert [(b["epoch"], b["step"]) for b in batches] == [(e, s) for e in (1, 2, 3) for s in range(1, STEPS + 1)]
    every_second = RL.read_jsonl(cosine_run[0] / RL.BATCH_LOG_FILE)
    assert len(every_second) == STEPS * 3 // 2
    assert [b["global_step"] for b in every_second] == [2, 4, 6, 8][: STEPS * 3 // 2]
    assert not (plateau_run[0] / RL.BATCH_LOG_FILE).exists()  # --batch_log_frequency 0: off


def test_steps_per_execution_counts_every_step(tmp_path):
    out, _ = _train(tmp_path, "--epochs", "2", "--batch_log_frequency", "1", "--steps_per_execution", "2")
    epochs = RL.read_jsonl(out / RL.EPOCH_LOG_FILE)
    assert [e["steps"] for e in epochs] == [STEPS, STEPS]
    assert [e["samples"] for e in epochs] == [N_TRAIN, N_TRAIN]
    batches = RL.read_jsonl(out / RL.BATCH_LOG_FILE)
    # one record per graph call (2 steps each, the last call of an epoch may hold 1)
    assert len(batches) == 2 * math.ceil(STEPS / 2)
    assert batches[-1]["global_step"] == 2 * STEPS
    assert [b["step"] for b in batches if b["epoch"] == 1][-1] == STEPS


def test_batch_records_carry_loss_per_trait_errors_lr_and_times(run):
    out, _ = run
    batches = RL.read_jsonl(out / RL.BATCH_LOG_FILE)
    history = _history(out)
    for b in batches:
        for trait in C.TRAITS:
            assert b[f"{trait}_mae"] > 0 and b[f"{trait}_mse"] > 0
        assert b["loss"] > 0 and b["batch_seconds"] > 0 and b["elapsed_seconds"] > 0
        assert b["learning_rate"] == pytest.approx(1e-3, rel=1e-6)
    # Keras' batch values are running means over the epoch: the last step equals the epoch's value
    for epoch in (1, 2, 3):
        last = [b for b in batches if b["epoch"] == epoch][-1]
        for key in ("loss", "openness_mae", "neuroticism_mse"):
            assert last[key] == pytest.approx(history[key][epoch - 1], rel=1e-6)


# ---------------------------------------------------------------------------
# learning-rate changes
# ---------------------------------------------------------------------------


def test_a_forced_plateau_records_plateau_cuts(plateau_run):
    out, _ = plateau_run
    lr = _json(out / RL.LR_CHANGES_FILE)
    assert lr["schedule"] == "plateau"
    changes = lr["changes"]
    # epoch 1 sets the best val_loss; with lr 1e-9 no later epoch improves by min_delta
    assert [c["epoch"] for c in changes] == [2, 3, 4]
    assert [c["effective_epoch"] for c in changes] == [3, 4, None]
    assert all(c["cause"] == "plateau" for c in changes)
    assert changes[0]["old"] == pytest.approx(1e-9, rel=1e-6)
    for c in changes:
        assert c["new"] == pytest.approx(0.5 * c["old"], rel=1e-6)
        assert c["global_step"] == c["epoch"] * STEPS
    epochs = RL.read_jsonl(out / RL.EPOCH_LOG_FILE)
    assert epochs[2]["learning_rate"] == pytest.approx(changes[0]["new"], rel=1e-9)
    assert epochs[3]["learning_rate"] == pytest.approx(changes[1]["new"], rel=1e-9)
    log = (out / RL.TRAINING_LOG_FILE).read_text(encoding="utf-8")
    assert log.count("after epoch 2 (plateau") == 1


def test_tensorboard_learning_rate_is_the_rate_each_epoch_ran_at(plateau_run):
    """Read with TensorBoard's own event reader: step E holds the rate epoch E used, not the cut one after it."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.util.tensor_util import make_ndarray

    out, _ = plateau_run
    train = EventAccumulator(str(out / C.TENSORBOARD_DIR / "train"))
    train.Reload()
    events = train.Tensors("learning_rate")  # TF 2 writes scalars as tensor summaries
    epochs = RL.read_jsonl(out / RL.EPOCH_LOG_FILE)
    assert [e.step for e in events] == [r["epoch"] for r in epochs] == [1, 2, 3, 4]
    used = [r["learning_rate_start"] for r in epochs]  # a plateau rate does not move within an epoch
    np.testing.assert_allclose([float(make_ndarray(e.tensor_proto)) for e in events], used, rtol=1e-6)
    np.testing.assert_allclose(_history(out)["learning_rate"], used, rtol=1e-6)


def test_cosine_records_schedule_changes_matching_the_decay(cosine_run):
    out, _ = cosine_run
    lr = _json(out / RL.LR_CHANGES_FILE)
    assert lr["schedule"] == "cosine"
    changes = lr["changes"]
    assert [c["epoch"] for c in changes] == [1, 2] and all(c["cause"] == "schedule" for c in changes)
    decay_steps, alpha = 3 * STEPS, 1e-6 / 1e-3

    def cosine(step: int) -> float:  # keras.optimizers.schedules.CosineDecay, written out
        return 1e-3 * ((1 - alpha) * 0.5 * (1 + math.cos(math.pi * step / decay_steps)) + alpha)

    for c in changes:
        assert c["old"] == pytest.approx(cosine((c["epoch"] - 1) * STEPS), rel=1e-5)
        assert c["new"] == pytest.approx(cosine(c["epoch"] * STEPS), rel=1e-5)
        assert c["new"] < c["old"]


def test_lr_change_cause_is_read_from_the_schedule_and_the_values():
    assert RL.lr_change_cause("cosine", 1e-3, 9e-4, 0.5, 1e-6) == "schedule"
    assert RL.lr_change_cause("plateau", 1e-3, 5e-4, 0.5, 1e-6) == "plateau"
    assert RL.lr_change_cause("plateau", 1.5e-6, 1e-6, 0.5, 1e-6) == "plateau"  # floored at min_lr
    assert RL.lr_change_cause("plateau", 1e-3, 2e-3, 0.5, 1e-6) == "other"


# ---------------------------------------------------------------------------
# attention entropy
# ---------------------------------------------------------------------------


def test_attention_entropy_per_head_matches_the_saved_model(run):
    import keras

    from models.cross_attention import attention_scores
    from utils.data import split_indices

    out, paths = run
    records = RL.read_jsonl(out / RL.ATTENTION_ENTROPY_FILE)
    history = _history(out)
    assert [r["epoch"] for r in records] == [1, 2, 3]
    key_tokens = {"static_to_dynamic": 3, "dynamic_to_static": 4}  # write_features: static (4, 8), dynamic (3, 12)
    for i, r in enumerate(records):
        assert r["n_samples"] == N_VAL
        assert set(r["directions"]) == set(C.ATTENTION_DIRECTIONS)
        for direction, k in key_tokens.items():
            block = r["blocks"][f"{direction}_0"]
            assert block["key_tokens"] == k and block["max_entropy"] == pytest.approx(math.log(k))
            assert len(block["per_head"]) == 2  # --num_heads 2
            assert all(0.0 <= h <= math.log(k) + 1e-9 for h in block["per_head"])
            assert r["directions"][direction]["mean"] == pytest.approx(np.mean(block["per_head"]))
            assert history[f"attention_entropy_{direction}"][i] == pytest.approx(r["directions"][direction]["mean"])
    # the saved model holds the best epoch's weights: recompute that epoch's entropy from it
    best = _json(out / C.TRAINING_SUMMARY_FILE)["best_epoch"]
    _, val_idx = split_indices(N_SAMPLES, 0.2, seed=42)
    idx = val_idx[: RL.ATTENTION_PROBE_SAMPLES]
    model = keras.models.load_model(out / C.MODEL_FILE)
    scores = attention_scores(model, np.load(paths["static_features"])[idx], np.load(paths["dynamic_features"])[idx])
    for name, p in scores.items():
        # scipy's Shannon entropy (nats) of each query's attention row, averaged over samples and queries
        expected = scipy.stats.entropy(p.astype("float64"), axis=-1).mean(axis=(0, 2))
        np.testing.assert_allclose(records[best - 1]["blocks"][name]["per_head"], expected, atol=1e-5)


def test_fusion_without_attention_skips_the_entropy(cosine_run):
    out, _ = cosine_run
    assert not (out / RL.ATTENTION_ENTROPY_FILE).exists()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    validation = EventAccumulator(str(out / C.TENSORBOARD_DIR / "validation"))
    validation.Reload()
    tags = validation.Tags()["tensors"]
    assert "loss" in tags and not [t for t in tags if "attention" in t]
    history = _history(out)
    assert not [k for k in history if k.startswith("attention_entropy")]
    assert set(RL.logged_history_keys("concat")) <= set(history)


# ---------------------------------------------------------------------------
# TensorBoard, read back through its own server
# ---------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get_json(url: str):
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read().decode("utf-8"))


def test_tensorboard_serves_the_per_trait_timing_and_attention_series(run):
    out, _ = run
    history = _history(out)
    attention = RL.read_jsonl(out / RL.ATTENTION_ENTROPY_FILE)
    port = _free_port()
    exe = Path(sys.executable).parent / "tensorboard"
    proc = subprocess.Popen(
        [str(exe), "--logdir", str(out / C.TENSORBOARD_DIR), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"

    def scalars(run_name: str, tag: str):
        query = urllib.parse.urlencode({"run": run_name, "tag": tag})
        return _get_json(f"{base}/data/plugin/scalars/scalars?{query}")

    try:
        deadline = time.monotonic() + 60
        runs: list[str] = []
        while time.monotonic() < deadline:
            assert proc.poll() is None, "tensorboard exited"
            try:
                runs = _get_json(f"{base}/data/runs")
                if {"train", "validation"} <= set(runs):
                    break
            except (urllib.error.URLError, ConnectionError, json.JSONDecodeError):
                pass
            time.sleep(0.5)
        assert set(runs) == {"train", "validation"}, runs  # attention entropy is filed under validation
        epochs = [float(e) for e in history["epoch"]]  # 1-based, as the TensorBoard steps
        for trait in C.TRAITS:
            for statistic in ("r_squared", "mae", "mse"):
                points = scalars("validation", f"{statistic}/{trait}")
                assert [p[1] for p in points] == epochs
                name = C.per_trait_metric_name(trait, statistic)
                np.testing.assert_allclose([p[2] for p in points], history[f"val_{name}"], rtol=1e-6)
        for tag, key in (("loss", "val_loss"), ("r_squared/mean", "val_r_squared"), ("mae/mean", "val_mae")):
            np.testing.assert_allclose([p[2] for p in scalars("validation", tag)], history[key], rtol=1e-6)
        for tag, key in (("learning_rate", "learning_rate"), ("time/epoch_seconds", RL.EPOCH_SECONDS_KEY),
                         ("time/samples_per_second", RL.SAMPLES_PER_SECOND_KEY)):
            points = scalars("train", tag)
            assert [p[1] for p in points] == epochs
            np.testing.assert_allclose([p[2] for p in points], history[key], rtol=1e-6)
        name, block = next(iter(attention[0]["blocks"].items()))  # heads and blocks are numbered from 1 in tags
        head = scalars("validation", f"attention_entropy/{block['direction']}/block_{block['level'] + 1}/head_2")
        expected = [r["blocks"][name]["per_head"][1] for r in attention]
        assert [p[1] for p in head] == epochs
        np.testing.assert_allclose([p[2] for p in head], expected, rtol=1e-6)
        tags = _get_json(f"{base}/data/plugin/scalars/tags")
        every = [tag for run_tags in tags.values() for tag in run_tags]
        assert not [t for t in every if t.startswith(("evaluation_", "epoch_"))], every  # one series each
        assert "mse" not in every  # the loss is the MSE: one series, not two
        assert not [t for t in tags["train"] if t.startswith("attention_entropy")]  # filed once, under validation
        assert all("/" in t or t in ("loss", "learning_rate") for t in every), every  # grouped by metric
        layout = _get_json(f"{base}/data/plugin/custom_scalars/layout")
        first = layout["category"][0]
        assert [c["title"] for c in first["chart"]][:3] == ["loss (MSE)", "R², mean of the traits", "R², openness"]
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


# ---------------------------------------------------------------------------
# wandb, read back from the run file it wrote
# ---------------------------------------------------------------------------


def _wandb_records(path: Path):
    """Records of a ``.wandb`` file (LevelDB log format, as wandb writes it), parsed with wandb's protobuf.

    wandb 0.31 no longer ships a Python reader (``wandb.sdk.internal.datastore``
    moved into wandb-core), so the framing is read here: 7-byte header
    ``:W&B`` + 0xBEE1 + version 0, then 32 KiB blocks of chunks
    ``crc32 (uint32) | length (uint16) | type (1 full, 2 first, 3 middle, 4 last)``.
    """
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert struct.unpack("<4sHB", data[:7]) == (b":W&B", 0xBEE1, 0)
    pos, pending = 7, b""
    while pos + 7 <= len(data):
        room = 32768 - pos % 32768
        if room < 7:  # block trailer
            pos += room
            continue
        checksum, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if pos + 7 + length > len(data):
            return  # a record still being written
        chunk = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == 0:
            continue
        assert zlib.crc32(chunk, zlib.crc32(bytes([kind]))) & 0xFFFFFFFF == checksum, "corrupt record"
        pending += chunk
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def test_wandb_offline_run_records_the_per_trait_metrics_and_the_manifest(tmp_path, wandb_env):
    out, paths = _train(tmp_path, "--wandb", "--wandb_mode", "offline", "--batch_log_frequency", "0", "--fusion", "cross_attention")
    files = list(out.glob("wandb/offline-run-*/run-*.wandb"))
    assert len(files) == 1
    # wandb-core writes the file in its own process and may still be flushing when finish() returns
    deadline = time.monotonic() + 30
    records = list(_wandb_records(files[0]))
    while not any(r.WhichOneof("record_type") == "exit" for r in records) and time.monotonic() < deadline:
        time.sleep(0.5)
        records = list(_wandb_records(files[0]))
    kinds = [str(r.WhichOneof("record_type")) for r in records]
    rows: list[dict[str, float]] = []
    config: dict[str, object] = {}
    for record in records:
        kind = record.WhichOneof("record_type")
        if kind == "history":
            rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item})
        elif kind == "run":
            config.update({item.key: json.loads(item.value_json) for item in record.run.config.update})
        elif kind == "config":
            config.update({item.key: json.loads(item.value_json) for item in record.config.update})
    history = _history(out)
    assert len(rows) == len(history["epoch"]) == 2, kinds
    for i, row in enumerate(rows):
        for trait in C.TRAITS:
            for statistic in C.PER_TRAIT_STATISTICS:
                name = C.per_trait_metric_name(trait, statistic)
                for key in (name, f"val_{name}"):
                    assert row[f"epoch/{key}"] == pytest.approx(history[key][i], rel=1e-7), key
        for key in RL.logged_history_keys("cross_attention"):
            assert row[f"epoch/{key}"] == pytest.approx(history[key][i], rel=1e-7), key
    # the manifest is the run's config
    manifest = _json(out / RL.MANIFEST_FILE)
    for key in ("inputs", "git", "versions", "data", "model", "devices", "seed"):
        assert config[key] == manifest[key], key
    assert config["inputs"]["labels"]["sha256"] == hashlib.sha256(Path(paths["labels"]).read_bytes()).hexdigest()


# ---------------------------------------------------------------------------
# logging is observation only; failure path
# ---------------------------------------------------------------------------


def test_logging_does_not_change_the_training(run, tmp_path, monkeypatch):
    out, paths = run
    monkeypatch.setattr(RL.RunLogger, "start", lambda self: None)
    monkeypatch.setattr(RL.RunLogger, "callbacks", lambda self: [])
    monkeypatch.setattr(RL.RunLogger, "finish", lambda self, status, result=None: None)
    bare = tmp_path / "bare"
    assert main(train_args(paths, bare, *RUN_ARGS)) == 0
    logged, plain = _history(out), _history(bare)
    assert set(logged) - set(plain) == set(RL.logged_history_keys("cross_attention"))
    for key, values in plain.items():
        assert logged[key] == values, key  # bit-identical: same seed, same data order


def test_finish_after_a_failure_marks_the_manifest_and_removes_the_log_handler(tmp_path):
    from utils.training import TrainConfig, build_compiled_model, prepare

    paths = write_features(tmp_path / "data")
    cfg = TrainConfig.from_dict(
        dict(**paths, output=str(tmp_path / "out" / C.MODEL_FILE), width=16, num_heads=2, head_units=16)
    )
    prep = prepare(cfg)
    model = build_compiled_model(cfg, prep, steps_per_epoch=STEPS)
    logger = RL.RunLogger(cfg, prep, model, cfg.output_dir)
    root = logging.getLogger()
    before = list(root.handlers)
    logger.start()
    assert len(root.handlers) == len(before) + 1
    assert _json(cfg.output_dir / RL.MANIFEST_FILE)["status"] == "running"
    assert "config" not in logger.wandb_config() and "inputs" in logger.wandb_config()
    logger.finish("failed")
    logger.finish("failed")  # idempotent
    assert root.handlers == before
    m = _json(cfg.output_dir / RL.MANIFEST_FILE)
    assert m["status"] == "failed" and m["ended_at"] is not None and "result" not in m


def test_read_jsonl_skips_a_truncated_last_line(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_text('{"a": 1}\n\n{"a": 2}\n{"a": 3, "b"', encoding="utf-8")
    assert RL.read_jsonl(path) == [{"a": 1}, {"a": 2}]
    path.write_text('{"a": 1}\n{"a" 2}\n{"a": 3}\n', encoding="utf-8")
    with pytest.raises(json.JSONDecodeError):
        RL.read_jsonl(path)


# ---------------------------------------------------------------------------
# plots
# ---------------------------------------------------------------------------


def _assert_not_blank(path: Path) -> None:
    import matplotlib.image

    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 300 and image.shape[1] > 300, path
    assert float(image[..., :3].std()) > 0.01, f"{path.name} is blank"
    rgb = (image[..., :3] * 255).astype(np.uint32).reshape(-1, 3)
    colors = np.unique(rgb[:, 0] << 16 | rgb[:, 1] << 8 | rgb[:, 2])
    assert len(colors) > 50, f"{path.name} has only {len(colors)} colors"


def test_plot_run_logs_draws_the_five_figures(run, tmp_path):
    from utils.run_plots import plot_run_logs

    out, _ = run
    written = plot_run_logs(out / C.HISTORY_JSON_FILE, tmp_path / "figures")
    names = [p.name for p in written]
    assert names == [
        RL.LR_PLOT_FILE, RL.EPOCH_TIME_PLOT_FILE, RL.BATCH_LOSS_PLOT_FILE, RL.ATTENTION_PLOT_FILE, RL.DASHBOARD_PLOT_FILE,
    ]
    for path in written:
        assert path.is_file()
        _assert_not_blank(path)
    assert not list((tmp_path / "figures").glob(".*tmp*"))


def test_plot_run_logs_skips_what_a_run_did_not_log(cosine_run, plateau_run, tmp_path):
    """No attention (concat), no batch log (--batch_log_frequency 0), no run logs at all (older run)."""
    from utils.run_plots import plot_run_logs

    no_attention = plot_run_logs(cosine_run[0] / C.HISTORY_JSON_FILE, tmp_path / "cosine")
    assert RL.ATTENTION_PLOT_FILE not in [p.name for p in no_attention] and len(no_attention) == 4
    from utils.run_plots import load_run_logs, plot_batch_loss

    assert plot_batch_loss(load_run_logs(plateau_run[0]), tmp_path / "batch.png") is None
    # an older run: only the history
    old = tmp_path / "old"
    old.mkdir()
    shutil.copy(plateau_run[0] / C.HISTORY_JSON_FILE, old / C.HISTORY_JSON_FILE)
    written = plot_run_logs(old / C.HISTORY_JSON_FILE, tmp_path / "old_figures")
    assert [p.name for p in written] == [RL.LR_PLOT_FILE, RL.DASHBOARD_PLOT_FILE]
    for path in written:
        _assert_not_blank(path)
    assert plot_run_logs(tmp_path / "missing" / C.HISTORY_JSON_FILE, tmp_path / "none") == []


class _InterruptAt(keras.callbacks.Callback):
    """Raises KeyboardInterrupt (as Ctrl-C does) before training step ``batch`` of epoch ``epoch`` (0-based)."""

    def __init__(self, epoch: int, batch: int) -> None:
        super().__init__()
        self.at = (epoch, batch)
        self.epoch = -1

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        if (self.epoch, batch) == self.at:
            raise KeyboardInterrupt


def test_resume_continues_the_logs_of_an_interrupted_run(tmp_path, monkeypatch):
    """Ctrl-C in epoch 2, then --resume: the logs read as one run of 3 epochs."""
    from utils.errors import EXIT_INTERRUPTED

    paths = write_features(tmp_path / "data")
    out = tmp_path / "results"
    args = train_args(paths, out, *RUN_ARGS)
    callbacks = RL.RunLogger.callbacks

    def interrupting(self):
        # after the run-log parts, so they have seen the step before it is interrupted
        return [*callbacks(self), _InterruptAt(epoch=1, batch=1)]

    monkeypatch.setattr(RL.RunLogger, "callbacks", interrupting)
    assert main(args) == EXIT_INTERRUPTED
    assert _json(out / RL.MANIFEST_FILE)["status"] == "interrupted"
    assert RL.read_jsonl(out / RL.BATCH_LOG_FILE)[-1]["epoch"] == 2  # a step of the lost epoch
    monkeypatch.setattr(RL.RunLogger, "callbacks", callbacks)
    assert main([*args, "--resume"]) == 0
    m = _json(out / RL.MANIFEST_FILE)
    assert m["status"] == "completed" and [r["after_epoch"] for r in m["resumed"]] == [1]
    assert [r["epoch"] for r in RL.read_jsonl(out / RL.EPOCH_LOG_FILE)] == [1, 2, 3]
    assert [r["epoch"] for r in RL.read_jsonl(out / RL.ATTENTION_ENTROPY_FILE)] == [1, 2, 3]
    batches = RL.read_jsonl(out / RL.BATCH_LOG_FILE)
    assert [(b["epoch"], b["step"], b["global_step"]) for b in batches] == [
        (e, s, (e - 1) * STEPS + s) for e in (1, 2, 3) for s in range(1, STEPS + 1)
    ]
    log = (out / RL.TRAINING_LOG_FILE).read_text(encoding="utf-8")
    assert log.count("Run interrupted") == 1 and log.count("Run completed") == 1
    assert [log.count(f"Epoch {e}/3: loss") for e in (1, 2, 3)] == [1, 1, 1]
    timing = _json(out / RL.TIMING_FILE)
    assert timing["resumed_after_epoch"] == 1 and timing["epochs"] == 2
