"""Phase 4.3 training-system logging: what a run was, where its time went, how it behaved.

:class:`RunLogger` is the single hook :func:`utils.training.run_training`
calls: ``start()`` before ``fit``, ``callbacks()`` placed right after the
epoch-context callback (so keys they add to ``logs`` reach the history,
TensorBoard and wandb), ``finish()`` after the run ends (also on failure).

Files written into the run's output folder (schemas in ``docs/logging.md``):

* ``run_manifest.json``: resolved settings, seed, versions, git state, input
  hashes, label means, parameter counts, devices, start/end time and status.
* ``training.log``: the console's log lines with timestamps, one per epoch.
* ``epoch_log.jsonl``: one JSON object per epoch: every metric, the learning
  rate, wall time, samples per second and the spread of step times.
* ``batch_log.jsonl``: every ``batch_log_frequency``-th training step.
* ``timing.json``: where the time went (setup, steps, gaps, validation, ...).
* ``lr_changes.json``: every learning-rate change with its cause.
* ``attention_entropy.jsonl``: per-epoch attention entropy per direction and
  head on a fixed validation subset (attention fusion modes only), mirrored to
  TensorBoard under ``tensorboard_logs/attention/``.

Per-batch cost is two ``perf_counter`` calls and two list appends; files are
written at epoch ends, and per batch only when ``batch_log_frequency`` hits.
This module imports no TensorFlow at import time (the plotting code reads
the constants and :func:`read_jsonl` from here).
"""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import json
import logging
import math
import os
import platform
import socket
import subprocess
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from time import perf_counter
from typing import Any

import numpy as np

from utils import constants as C
from utils.io import atomic_path, write_json

logger = logging.getLogger(__name__)

# Files a run's logging writes into the output folder (one source of truth).
MANIFEST_FILE = "run_manifest.json"
TRAINING_LOG_FILE = "training.log"
EPOCH_LOG_FILE = "epoch_log.jsonl"
BATCH_LOG_FILE = "batch_log.jsonl"
TIMING_FILE = "timing.json"
LR_CHANGES_FILE = "lr_changes.json"
ATTENTION_ENTROPY_FILE = "attention_entropy.jsonl"
ATTENTION_TENSORBOARD_RUN = "attention"  # run folder under tensorboard_logs/
RUN_LOG_FILES: tuple[str, ...] = (
    MANIFEST_FILE,
    TRAINING_LOG_FILE,
    EPOCH_LOG_FILE,
    BATCH_LOG_FILE,
    TIMING_FILE,
    LR_CHANGES_FILE,
    ATTENTION_ENTROPY_FILE,
)
# Figures utils.run_plots.plot_run_logs draws.
LR_PLOT_FILE = "learning_rate.png"
EPOCH_TIME_PLOT_FILE = "epoch_time.png"
BATCH_LOSS_PLOT_FILE = "batch_loss.png"
ATTENTION_PLOT_FILE = "attention_entropy.png"
DASHBOARD_PLOT_FILE = "dashboard.png"

LOG_FORMAT = "%(asctime)s %(levelname)s %(message)s"
ATTENTION_PROBE_SAMPLES = 64  # first validation samples the attention entropy is measured on
GIT_TIMEOUT_S = 10.0
# Keys this logger adds to the epoch ``logs`` (so they reach history, TensorBoard, wandb).
EPOCH_SECONDS_KEY = "epoch_seconds"
SAMPLES_PER_SECOND_KEY = "samples_per_second"
ATTENTION_KEY_PREFIX = "attention_entropy_"
# Learning-rate change causes.
CAUSE_PLATEAU = "plateau"  # ReduceLROnPlateau cut
CAUSE_SCHEDULE = "schedule"  # cosine decay
CAUSE_OTHER = "other"  # neither explains the new value


def logged_history_keys(fusion: str) -> list[str]:
    """Keys :class:`RunLogger` adds to every epoch's logs for a model of this fusion mode."""
    keys = [EPOCH_SECONDS_KEY, SAMPLES_PER_SECOND_KEY]
    if fusion == "cross_attention":
        keys += [ATTENTION_KEY_PREFIX + d for d in C.ATTENTION_DIRECTIONS]
    elif fusion in C.ATTENTION_DIRECTIONS:
        keys.append(ATTENTION_KEY_PREFIX + fusion)
    return keys


# ---------------------------------------------------------------------------
# Small pure helpers
# ---------------------------------------------------------------------------


def utc_now() -> str:
    """The current time, ISO 8601 in UTC with milliseconds (``2026-01-31T12:00:00.123+00:00``)."""
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="milliseconds")


def finite_or_none(value: Any) -> Any:
    """NaN/Inf become None (JSON null), recursively; everything else is returned unchanged."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(v) for v in value]
    return value


def json_line(record: dict[str, Any]) -> str:
    """One strict-JSON line (no trailing newline)."""
    return json.dumps(finite_or_none(record), allow_nan=False, separators=(",", ":"))


def write_jsonl(path: str | Path, records: Iterable[dict[str, Any]]) -> None:
    """Rewrite a JSON-lines file atomically (readers never see half a file)."""
    with atomic_path(path) as tmp:
        tmp.write_text("".join(json_line(r) + "\n" for r in records), encoding="utf-8")


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Read a JSON-lines file; skips blank lines and a truncated last line (a run still writing)."""
    records: list[dict[str, Any]] = []
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                break  # the writer was interrupted mid-line
            raise
    return records


def spread(values: Sequence[float]) -> dict[str, float | int | None]:
    """count, sum, mean, median, p95, min, max of a list of durations (None when empty)."""
    if not len(values):
        return {"count": 0, "sum": 0.0, "mean": None, "median": None, "p95": None, "min": None, "max": None}
    a = np.asarray(values, dtype="float64")
    return {
        "count": int(a.size),
        "sum": float(a.sum()),
        "mean": float(a.mean()),
        "median": float(np.median(a)),
        "p95": float(np.percentile(a, 95)),
        "min": float(a.min()),
        "max": float(a.max()),
    }


def lr_change_cause(schedule: str, old: float, new: float, factor: float, min_lr: float) -> str:
    """Why the learning rate went from ``old`` to ``new``.

    "schedule" under cosine decay; "plateau" when the new value is what a
    ReduceLROnPlateau cut gives (``max(old * factor, min_lr)``); otherwise "other".
    """
    if schedule == "cosine":
        return CAUSE_SCHEDULE
    expected = max(old * factor, min_lr)
    if math.isclose(new, expected, rel_tol=1e-4, abs_tol=1e-12 * max(abs(old), 1e-30)):
        return CAUSE_PLATEAU
    return CAUSE_OTHER


def git_state(folder: str | Path, timeout: float = GIT_TIMEOUT_S) -> dict[str, Any] | None:
    """Commit, branch and dirtiness of the git checkout holding ``folder``; None without git.

    "dirty" means tracked files differ from the commit (untracked files, such
    as results, do not count).
    """

    def git(*args: str) -> str | None:
        try:
            proc = subprocess.run(
                ["git", "-C", str(folder), *args],
                capture_output=True, text=True, timeout=timeout, check=False,
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return proc.stdout.strip() if proc.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if not commit:
        return None
    status = git("status", "--porcelain", "--untracked-files=no")
    return {
        "commit": commit,
        "branch": git("rev-parse", "--abbrev-ref", "HEAD"),
        "dirty": None if status is None else bool(status),
    }


def _package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def describe_input(path: str | Path, array: np.ndarray) -> dict[str, Any]:
    """Path, shape, dtype, size and SHA-256 of one input file."""
    from utils.data import sha256_file

    p = Path(path)
    return {
        "path": str(p.resolve()),
        "shape": [int(n) for n in array.shape],
        "dtype": str(array.dtype),
        "bytes": p.stat().st_size,
        "sha256": sha256_file(p),
    }


def _devices() -> list[dict[str, Any]]:
    import tensorflow as tf

    devices: list[dict[str, Any]] = [
        {"name": d.name, "type": d.device_type} for d in tf.config.list_logical_devices()
    ]
    for gpu in tf.config.list_physical_devices("GPU"):
        try:
            details = tf.config.experimental.get_device_details(gpu)
        except (ValueError, RuntimeError):
            continue
        for d in devices:
            if d["type"] == "GPU" and d["name"].endswith(gpu.name.split(":", 1)[-1]):
                d.update({k: (list(v) if isinstance(v, tuple) else v) for k, v in details.items()})
    return devices


# ---------------------------------------------------------------------------
# The run logger
# ---------------------------------------------------------------------------


class RunLogger:
    """Writes the run's manifest, log file, epoch/batch/timing/learning-rate/attention logs.

    ``cfg`` is a :class:`utils.training.TrainConfig`, ``prep`` a
    :class:`utils.training.Prepared`, ``model`` the compiled Keras model.
    """

    def __init__(self, cfg: Any, prep: Any, model: Any, output_dir: Path) -> None:
        self.cfg = cfg
        self.prep = prep
        self.model = model
        self.output_dir = Path(output_dir)
        self.manifest: dict[str, Any] = {}
        self._t0: float | None = None
        self._file_handler: logging.Handler | None = None
        self._callback: Any = None
        self._finished = False
        resume_state = getattr(prep, "resume_state", None)
        # --resume continues the run in place: earlier epochs' logs are kept and appended to
        self.resumed_after: int | None = int(resume_state.get("epoch", 0)) if resume_state else None

    # -- paths ---------------------------------------------------------------
    def path(self, name: str) -> Path:
        return self.output_dir / name

    # -- lifecycle -----------------------------------------------------------
    def start(self) -> None:
        """Called once before ``fit`` (after the output folder exists)."""
        self._t0 = time.perf_counter()
        self.output_dir.mkdir(parents=True, exist_ok=True)
        resuming = self.resumed_after is not None
        if not resuming:
            for name in (EPOCH_LOG_FILE, BATCH_LOG_FILE, TIMING_FILE, LR_CHANGES_FILE, ATTENTION_ENTROPY_FILE):
                self.path(name).unlink(missing_ok=True)  # another run's logs must not mix with ours
        mode = "a" if resuming else "w"
        handler = logging.FileHandler(self.path(TRAINING_LOG_FILE), mode=mode, encoding="utf-8")
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        logging.getLogger().addHandler(handler)
        self._file_handler = handler
        hash_start = time.perf_counter()
        self.manifest = self._build_manifest()
        self.manifest["timing"] = {"manifest_seconds": time.perf_counter() - hash_start}
        if resuming:
            earlier = _read_json_or_none(self.path(MANIFEST_FILE)) or {}
            self.manifest["started_at"] = earlier.get("started_at", self.manifest["started_at"])
            self.manifest["resumed"] = [
                *earlier.get("resumed", []),
                {"at": utc_now(), "after_epoch": self.resumed_after, "pid": os.getpid()},
            ]
        write_json(self.path(MANIFEST_FILE), self.manifest)
        git = self.manifest["git"]
        logger.info(
            "Run manifest %s (commit %s%s); logs in %s",
            self.path(MANIFEST_FILE),
            git["commit"][:12] if git else "unknown",
            ", uncommitted changes" if git and git["dirty"] else "",
            self.output_dir,
        )

    def callbacks(self, train_batches: Any, val_batches: Any) -> list[Any]:
        """Keras callbacks that run before every other callback but the epoch context."""
        self._callback = _make_callback(self, train_batches)
        return [self._callback]

    def wandb_config(self) -> dict[str, Any]:
        """Extra entries for the wandb run config: the manifest (the config itself is already there)."""
        skip = {"config", "status", "ended_at", "seconds", "result", "timing"}
        return {k: v for k, v in self.manifest.items() if k not in skip}

    def finish(self, status: str, result: Any = None) -> None:
        """Called once after ``fit``: status is "completed" or the reason it stopped.

        Never raises for a failed write (it also runs while an exception
        propagates); problems are logged as warnings.
        """
        if self._finished:
            return
        self._finished = True
        total = time.perf_counter() - self._t0 if self._t0 is not None else None
        cb = self._callback
        try:
            if cb is not None:
                cb.close()
                timing = cb.timing_summary(status=status, total_seconds=total)
                write_json(self.path(TIMING_FILE), timing)
            if self.manifest:
                self.manifest.update({"status": status, "ended_at": utc_now(), "seconds": total})
                if cb is not None:
                    self.manifest["epochs_run"] = len(cb.epoch_records)
                if result is not None:
                    self.manifest["result"] = {
                        "best_epoch": result.best_epoch,
                        "epochs_run": len(result.history.get("epoch", [])),
                        "best_validation": result.best,
                        "paths": result.paths,
                    }
                write_json(self.path(MANIFEST_FILE), self.manifest)
        except OSError as exc:
            logger.warning("could not write the run logs in %s: %s", self.output_dir, exc)
        finally:
            log = logger.info if status == "completed" else logger.warning
            log("Run %s after %s; logs in %s", status, _fmt_seconds(total), self.output_dir)
            self._remove_file_handler()

    def _remove_file_handler(self) -> None:
        if self._file_handler is not None:
            logging.getLogger().removeHandler(self._file_handler)
            self._file_handler.close()
            self._file_handler = None

    # -- manifest ------------------------------------------------------------
    def _build_manifest(self) -> dict[str, Any]:
        import keras
        import tensorflow as tf

        from models.cross_attention import parameter_counts

        cfg, prep = self.cfg, self.prep
        data = prep.data
        arrays = {"static_features": data.static, "dynamic_features": data.dynamic, "labels": data.labels}
        return {
            "status": "running",
            "started_at": utc_now(),
            "ended_at": None,
            "seconds": None,
            "seed": cfg.seed,
            "config": cfg.to_dict(),
            "host": {
                "hostname": socket.gethostname(),
                "platform": platform.platform(),
                "machine": platform.machine(),
                "cpu_count": os.cpu_count(),
                "pid": os.getpid(),
                "cwd": str(Path.cwd()),
            },
            "versions": {
                "python": platform.python_version(),
                "tensorflow": tf.__version__,
                "keras": keras.__version__,
                "numpy": np.__version__,
                "tensorboard": _package_version("tensorboard"),
                "wandb": _package_version("wandb"),
            },
            "git": git_state(Path(__file__).resolve().parents[1]),
            "inputs": {role: describe_input(path, arrays[role]) for role, path in data.paths.items()},
            "data": {
                "n_samples": len(data),
                "n_train": len(prep.train_idx),
                "n_val": len(prep.val_idx),
                "train_label_means": dict(zip(C.TRAITS, map(float, prep.train_label_means))),
            },
            "model": {
                "name": self.model.name,
                "fusion": cfg.fusion,
                "parameters": parameter_counts(self.model),
            },
            "devices": _devices(),
            "files": {
                "training_log": TRAINING_LOG_FILE,
                "epoch_log": EPOCH_LOG_FILE,
                "batch_log": BATCH_LOG_FILE if cfg.batch_log_frequency else None,
                "timing": TIMING_FILE,
                "lr_changes": LR_CHANGES_FILE,
                "attention_entropy": ATTENTION_ENTROPY_FILE,
                "history": C.HISTORY_JSON_FILE,
                "tensorboard": C.TENSORBOARD_DIR,
            },
        }


def _read_json_or_none(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _fmt_seconds(seconds: float | None) -> str:
    return "an unknown time" if seconds is None else f"{seconds:.1f} s"


# ---------------------------------------------------------------------------
# Attention probe
# ---------------------------------------------------------------------------


class AttentionProbe:
    """Attention entropy of a fixed set of samples, through one compiled function.

    The scores come from the model's ``fusion`` layer in inference mode (as in
    :func:`models.cross_attention.attention_scores`); the ``tf.function`` is
    traced once for the fixed batch, so later epochs cost a few milliseconds.
    """

    def __init__(self, model: Any, static: np.ndarray, dynamic: np.ndarray) -> None:
        import tensorflow as tf

        from models.cross_attention import fusion_tokens_model

        fusion = model.get_layer("fusion")
        self.directions: tuple[str, ...] = tuple(fusion.config.directions)
        self.n_samples = len(static)
        self._inputs = (tf.constant(static, dtype=tf.float32), tf.constant(dynamic, dtype=tf.float32))
        to_tokens = fusion_tokens_model(model)

        @tf.function
        def scores(s: Any, d: Any) -> Any:
            s_tok, d_tok = to_tokens([s, d], training=False)
            _, by_direction = fusion(s_tok, d_tok, training=False, return_attention_scores=True)
            return by_direction

        self._scores = scores

    def measure(self) -> dict[str, dict[str, Any]]:
        """``"<direction>_<level>" -> {direction, level, query_tokens, key_tokens, max_entropy, per_head, mean}``."""
        from models.cross_attention import attention_entropy

        out: dict[str, dict[str, Any]] = {}
        for direction, levels in self._scores(*self._inputs).items():
            for level, value in enumerate(levels):
                scores = value.numpy()  # (samples, heads, query_tokens, key_tokens)
                per_head = attention_entropy(scores)
                out[f"{direction}_{level}"] = {
                    "direction": direction,
                    "level": level,
                    "query_tokens": int(scores.shape[2]),
                    "key_tokens": int(scores.shape[3]),
                    "max_entropy": math.log(scores.shape[3]),
                    "per_head": [float(v) for v in per_head],
                    "mean": float(per_head.mean()),
                }
        return out


# ---------------------------------------------------------------------------
# The Keras callback
# ---------------------------------------------------------------------------


def _read_lines(path: Path) -> list[dict[str, Any]]:
    return read_jsonl(path) if path.is_file() else []


def _make_callback(run: RunLogger, train_batches: Any) -> Any:
    import keras

    class RunLogCallback(keras.callbacks.Callback):
        """Times steps/epochs, writes epoch/batch/lr/attention logs, adds timing keys to ``logs``."""

        def __init__(self) -> None:
            super().__init__()
            cfg = run.cfg
            self.frequency = int(cfg.batch_log_frequency)
            self.n_train = len(train_batches.indices)
            self.batch_size = int(train_batches.batch_size)
            self.epoch_records: list[dict[str, Any]] = []
            self.attention_records: list[dict[str, Any]] = []
            self.lr_changes: list[dict[str, Any]] = []
            self.session_first = 0  # index of this process's first epoch record (after a --resume)
            self.step_seconds: list[float] = []  # every training step of the run
            self.gap_seconds: list[float] = []  # end of a step -> begin of the next (same epoch)
            self.global_step = 0
            self.fit_begin: float | None = None
            self.fit_end: float | None = None
            self.validation_total = 0.0
            self.attention_total = 0.0
            self.after_epoch_total = 0.0  # later epoch-end callbacks (history, checkpoint, TensorBoard)
            self._last_epoch_done: float | None = None
            self._batch_fh: Any = None
            self._probe: AttentionProbe | None = None
            self._probe_failed = False
            self._tb_writer: Any = None
            self._lr_epoch_start: float | None = None
            self._last_epoch = -1  # last finished epoch (0-based)
            self._epoch = 0  # current epoch (0-based)
            self.epoch_begin = self._train_done = self._step_begin = self._test_begin = self._test_end = 0.0
            self.fit_start_seconds = 0.0  # on_train_begin -> first epoch (includes building the probe)
            self.before_validation_total = 0.0  # last step -> validation start (epoch metrics, val iterator)
            self.after_validation_total = 0.0  # validation end -> this logger's epoch end
            self.epoch_steps: list[float] = []
            self.epoch_gaps: list[float] = []
            self.epoch_step = 0
            self.epoch_validation = 0.0
            self.epoch_start_seconds = 0.0  # on_epoch_begin -> first step (new tf.data iterator)
            self.epoch_start_total = 0.0
            self.logging_total = 0.0  # this logger's own epoch-end work, attention probe excluded
            self._last_end: float | None = None

        # -- helpers ---------------------------------------------------------
        def _now(self) -> float:
            return time.perf_counter()

        def _elapsed(self, t: float) -> float:
            return t - (run._t0 if run._t0 is not None else self.fit_begin or t)

        def _lr(self) -> float:
            return float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))

        def _check_lr(self, epoch_done: int, effective: int | None) -> None:
            """Record a change of the learning rate since the start of epoch ``epoch_done`` (1-based)."""
            if self._lr_epoch_start is None:
                return
            old, new = self._lr_epoch_start, self._lr()
            if math.isclose(old, new, rel_tol=1e-9, abs_tol=0.0):
                return
            cfg = run.cfg
            cause = lr_change_cause(cfg.schedule, old, new, cfg.lr_factor, cfg.min_lr)
            change = {
                "epoch": epoch_done,
                "effective_epoch": effective,
                "global_step": self.global_step,
                "old": old,
                "new": new,
                "cause": cause,
                "elapsed_seconds": self._elapsed(self._now()),
                "time": utc_now(),
            }
            self.lr_changes.append(change)
            try:
                write_json(run.path(LR_CHANGES_FILE), {"schedule": cfg.schedule, "changes": self.lr_changes})
            except OSError as exc:
                logger.warning("could not write %s: %s", LR_CHANGES_FILE, exc)
            why = {
                CAUSE_PLATEAU: f"plateau: val_loss did not improve for {cfg.lr_patience} epoch(s)",
                CAUSE_SCHEDULE: "cosine schedule",
                CAUSE_OTHER: "not explained by the schedule",
            }[cause]
            logger.info("Learning rate %.3g -> %.3g after epoch %d (%s)", old, new, epoch_done, why)

        # -- fit -------------------------------------------------------------
        def _continue_logs(self, after: int) -> None:
            """--resume: keep the logs of the ``after`` finished epochs, drop the interrupted one's."""
            self.epoch_records = [r for r in _read_lines(run.path(EPOCH_LOG_FILE)) if r.get("epoch", 0) <= after]
            self.attention_records = [
                r for r in _read_lines(run.path(ATTENTION_ENTROPY_FILE)) if r.get("epoch", 0) <= after
            ]
            earlier = _read_json_or_none(run.path(LR_CHANGES_FILE)) or {}
            # a change after the last finished epoch is detected again at the next epoch's start
            self.lr_changes = [c for c in earlier.get("changes", []) if c.get("epoch", 0) < after]
            batches = [b for b in _read_lines(run.path(BATCH_LOG_FILE)) if b.get("epoch", 0) <= after]
            write_jsonl(run.path(EPOCH_LOG_FILE), self.epoch_records)
            write_jsonl(run.path(ATTENTION_ENTROPY_FILE), self.attention_records)
            if self.frequency or batches:
                write_jsonl(run.path(BATCH_LOG_FILE), batches)
            self.session_first = len(self.epoch_records)
            self.global_step = sum(int(r.get("steps", 0)) for r in self.epoch_records)
            self._last_epoch = after - 1
            if self.epoch_records:
                self._lr_epoch_start = self.epoch_records[-1].get("learning_rate_start")

        def on_train_begin(self, logs: dict | None = None) -> None:
            self.fit_begin = self._now()
            if run.resumed_after:
                self._continue_logs(run.resumed_after)
            write_json(run.path(LR_CHANGES_FILE), {"schedule": run.cfg.schedule, "changes": self.lr_changes})
            if self.frequency:
                mode = "a" if run.resumed_after else "w"
                self._batch_fh = open(run.path(BATCH_LOG_FILE), mode, encoding="utf-8")
            if run.cfg.fusion in C.ATTENTION_DIRECTIONS or run.cfg.fusion == "cross_attention":
                idx = np.asarray(run.prep.val_idx[:ATTENTION_PROBE_SAMPLES])
                data = run.prep.data
                try:
                    self._probe = AttentionProbe(
                        self.model,
                        np.asarray(data.static[idx], dtype="float32"),
                        np.asarray(data.dynamic[idx], dtype="float32"),
                    )
                except (ValueError, KeyError, AttributeError) as exc:
                    logger.warning("attention entropy is not logged: the model has no usable fusion layer (%s)", exc)
                    self._probe_failed = True

        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            now = self._now()
            if self._last_epoch_done is not None:
                self.after_epoch_total += now - self._last_epoch_done
                self._last_epoch_done = None
            elif self.fit_begin is not None and not self.fit_start_seconds:
                self.fit_start_seconds = now - self.fit_begin
            if self._last_epoch >= 0:
                self._check_lr(self._last_epoch + 1, epoch + 1)
            self._lr_epoch_start = self._lr()
            self._epoch = epoch
            self.epoch_begin = now
            self.epoch_steps = []
            self.epoch_gaps = []
            self.epoch_step = 0
            self.epoch_validation = 0.0
            self.epoch_start_seconds = 0.0
            self._last_end = None
            self._train_done = now

        def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
            now = perf_counter()
            if self._last_end is not None:
                self.epoch_gaps.append(now - self._last_end)
            else:
                self.epoch_start_seconds = now - self.epoch_begin
            self._step_begin = now

        def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
            now = perf_counter()
            # With steps_per_execution = k, Keras calls this once per k steps with
            # ``batch`` = the index of the last one: count steps from ``batch``.
            # Keras reports batch = start + k - 1 even for a shorter last call: cap at the epoch's steps.
            last = batch + 1
            if self.params.get("steps"):
                last = min(last, int(self.params["steps"]))
            done = max(1, last - self.epoch_step)
            seconds = now - self._step_begin
            self.epoch_steps.extend([seconds / done] * done)
            self._last_end = self._train_done = now
            previous = self.global_step
            self.global_step += done
            self.epoch_step += done
            crossed = self.frequency and self.global_step // self.frequency > previous // self.frequency
            if crossed and self._batch_fh is not None:
                record = {
                    "epoch": self._epoch + 1,
                    "step": self.epoch_step,
                    "global_step": self.global_step,
                    "elapsed_seconds": self._elapsed(now),
                    "batch_seconds": seconds,
                    "learning_rate": self._lr(),
                    **(logs or {}),
                }
                self._batch_fh.write(json_line(record) + "\n")
                self._batch_fh.flush()

        def on_test_begin(self, logs: dict | None = None) -> None:
            self._test_begin = self._now()
            self.before_validation_total += self._test_begin - self._train_done

        def on_test_end(self, logs: dict | None = None) -> None:
            self._test_end = self._now()
            self.epoch_validation += self._test_end - self._test_begin

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            now = self._now()
            logs = logs if logs is not None else {}
            epoch_seconds = now - self.epoch_begin
            train_seconds = self._train_done - self.epoch_begin
            steps = len(self.epoch_steps)
            samples = min(steps * self.batch_size, self.n_train)
            per_second = samples / train_seconds if train_seconds > 0 else math.nan
            self.step_seconds.extend(self.epoch_steps)
            self.gap_seconds.extend(self.epoch_gaps)
            self.validation_total += self.epoch_validation
            if self.epoch_validation:
                self.after_validation_total += now - self._test_end
            self.epoch_start_total += self.epoch_start_seconds
            logs[EPOCH_SECONDS_KEY] = epoch_seconds
            logs[SAMPLES_PER_SECOND_KEY] = per_second
            attention_seconds = self._attention(epoch, logs)
            step_spread, gap_spread = spread(self.epoch_steps), spread(self.epoch_gaps)
            record = {
                "epoch": epoch + 1,
                "elapsed_seconds": self._elapsed(now),
                "ended_at": utc_now(),
                "train_seconds": train_seconds,
                "validation_seconds": self.epoch_validation,
                "attention_seconds": attention_seconds,
                "epoch_start_seconds": self.epoch_start_seconds,
                "steps": steps,
                "samples": samples,
                "step_seconds_median": step_spread["median"],
                "step_seconds_p95": step_spread["p95"],
                "gap_seconds_median": gap_spread["median"],
                "gap_seconds_p95": gap_spread["p95"],
                "learning_rate_start": self._lr_epoch_start,
                **{k: float(v) for k, v in logs.items()},
            }
            self.epoch_records.append(record)
            self._last_epoch = epoch
            try:
                write_jsonl(run.path(EPOCH_LOG_FILE), self.epoch_records)
                write_json(run.path(TIMING_FILE), self.timing_summary(status="running"))
            except OSError as exc:
                logger.warning("could not write the epoch log in %s: %s", run.output_dir, exc)
            logger.info(
                "Epoch %d/%d: loss %.5f, val_loss %.5f, val R² %.4f, lr %.3g, %.1f s (%.0f samples/s)",
                epoch + 1, self.params.get("epochs") or run.cfg.epochs,
                logs.get("loss", math.nan), logs.get("val_loss", math.nan), logs.get("val_r_squared", math.nan),
                logs.get("learning_rate", self._lr_epoch_start or math.nan), epoch_seconds, per_second,
            )
            self._last_epoch_done = self._now()
            self.logging_total += self._last_epoch_done - now - attention_seconds

        def on_train_end(self, logs: dict | None = None) -> None:
            now = self._now()
            if self._last_epoch_done is not None:
                self.after_epoch_total += now - self._last_epoch_done
                self._last_epoch_done = None
            if self._last_epoch >= 0 and run.cfg.schedule != "cosine":
                # a cut made at the end of the last epoch (it applies to no epoch of this run)
                self._check_lr(self._last_epoch + 1, None)
            self.fit_end = now
            self.close()

        # -- attention -------------------------------------------------------
        def _attention(self, epoch: int, logs: dict) -> float:
            if self._probe is None or self._probe_failed:
                return 0.0
            begin = self._now()
            blocks = self._probe.measure()
            directions: dict[str, dict[str, Any]] = {}
            for direction in self._probe.directions:
                parts = [b for b in blocks.values() if b["direction"] == direction]
                mean = float(np.mean([b["mean"] for b in parts]))
                directions[direction] = {
                    "mean": mean,
                    "max_entropy": parts[0]["max_entropy"],
                    "mean_normalized": mean / parts[0]["max_entropy"],
                }
                logs[ATTENTION_KEY_PREFIX + direction] = mean
            seconds = self._now() - begin
            self.attention_total += seconds
            record = {
                "epoch": epoch + 1,
                "n_samples": self._probe.n_samples,
                "seconds": seconds,
                "directions": directions,
                "blocks": blocks,
            }
            self.attention_records.append(record)
            try:
                write_jsonl(run.path(ATTENTION_ENTROPY_FILE), self.attention_records)
            except OSError as exc:
                logger.warning("could not write %s: %s", ATTENTION_ENTROPY_FILE, exc)
            self._write_attention_tensorboard(epoch, record)
            return seconds

        def _write_attention_tensorboard(self, epoch: int, record: dict[str, Any]) -> None:
            import tensorflow as tf

            if self._tb_writer is None:
                folder = run.output_dir / C.TENSORBOARD_DIR / ATTENTION_TENSORBOARD_RUN
                self._tb_writer = tf.summary.create_file_writer(str(folder))
            with self._tb_writer.as_default():
                for direction, values in record["directions"].items():
                    tf.summary.scalar(f"attention_entropy/{direction}", values["mean"], step=epoch)
                for name, block in record["blocks"].items():
                    for head, value in enumerate(block["per_head"]):
                        tf.summary.scalar(f"attention_entropy/{name}/head_{head}", value, step=epoch)
                    tf.summary.scalar(f"attention_entropy/{name}/uniform", block["max_entropy"], step=epoch)
            self._tb_writer.flush()

        # -- summary ---------------------------------------------------------
        def close(self) -> None:
            """Close the batch log and the TensorBoard writer (idempotent)."""
            if self._batch_fh is not None:
                self._batch_fh.close()
                self._batch_fh = None
            if self._tb_writer is not None:
                self._tb_writer.close()
                self._tb_writer = None

        def timing_summary(self, status: str, total_seconds: float | None = None) -> dict[str, Any]:
            """Where this process's time went (after a --resume: the resumed part only)."""
            session = self.epoch_records[self.session_first :]
            epochs = [r["elapsed_seconds"] for r in session]
            epoch_seconds = [r[EPOCH_SECONDS_KEY] for r in session]
            rates = [r[SAMPLES_PER_SECOND_KEY] for r in session]
            fit_end = self.fit_end if self.fit_end is not None else self._now()
            fit = fit_end - self.fit_begin if self.fit_begin is not None else None
            steps = spread(self.step_seconds[1:])  # the first step includes tracing the train function
            gaps = spread(self.gap_seconds)
            parts = {
                "fit_start": self.fit_start_seconds,
                "epoch_start": self.epoch_start_total,
                "train_steps": float(sum(self.step_seconds)),
                "between_steps": float(gaps["sum"]),
                "before_validation": self.before_validation_total,
                "validation": self.validation_total,
                "after_validation": self.after_validation_total,
                "attention_probe": self.attention_total,
                "run_logging": self.logging_total,
                "epoch_end_callbacks": self.after_epoch_total,
            }
            if fit:
                parts["other"] = max(0.0, fit - sum(parts.values()))
            return {
                "status": status,
                "total_seconds": total_seconds,
                "setup_seconds": (self.fit_begin - run._t0) if self.fit_begin and run._t0 else None,
                "fit_seconds": fit,
                "after_fit_seconds": (
                    run._t0 + total_seconds - self.fit_end
                    if total_seconds is not None and self.fit_end is not None and run._t0 is not None
                    else None
                ),
                "resumed_after_epoch": run.resumed_after,
                "epochs": len(session),
                "steps": len(self.step_seconds),
                "epoch_seconds": spread(epoch_seconds),
                "epoch_end_elapsed_seconds": epochs,
                "first_step_seconds": self.step_seconds[0] if self.step_seconds else None,
                "step_seconds": steps,
                "gap_seconds": gaps,
                "samples_per_second": {
                    "mean": float(np.nanmean(rates)) if rates else None,
                    "median": float(np.nanmedian(rates)) if rates else None,
                    "last": rates[-1] if rates else None,
                },
                "breakdown_seconds": parts,
                "breakdown_share": {k: (v / fit if fit else None) for k, v in parts.items()},
                "notes": {
                    "epoch_start": "on_epoch_begin -> first step: Keras opens a new iterator over the "
                    "tf.data pipeline (the generator restarts and the first batch is gathered)",
                    "step_seconds": "on_train_batch_begin -> on_train_batch_end: the compiled train "
                    "function, which also takes the next batch from the prefetching tf.data pipeline "
                    "(Keras 3 calls next() inside it), so input stalls show up here as slow steps; "
                    "the first step (tracing) is excluded and reported as first_step_seconds",
                    "gap_seconds": "on_train_batch_end -> next on_train_batch_begin in one epoch: "
                    "callbacks, progress bar and the Python loop between steps",
                    "fit_start": "on_train_begin -> first epoch: callbacks' setup, the attention probe",
                    "before_validation": "last training step -> validation start: epoch metrics, "
                    "the validation iterator",
                    "epoch_end_callbacks": "after this logger's epoch end until the next epoch: "
                    "history files, checkpoint, TensorBoard histograms, early stopping",
                },
            }

    return RunLogCallback()


__all__ = [
    "RunLogger",
    "AttentionProbe",
    "read_jsonl",
    "write_jsonl",
    "lr_change_cause",
    "git_state",
    "logged_history_keys",
    "MANIFEST_FILE",
    "TRAINING_LOG_FILE",
    "EPOCH_LOG_FILE",
    "BATCH_LOG_FILE",
    "TIMING_FILE",
    "LR_CHANGES_FILE",
    "ATTENTION_ENTROPY_FILE",
    "ATTENTION_TENSORBOARD_RUN",
]
