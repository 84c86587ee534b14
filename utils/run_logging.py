"""Phase 4.3 training-system logging: what a run was, where its time went, how it behaved.

:class:`RunLogger` is the single hook :func:`utils.training.run_training`
calls: ``start()`` before ``fit`` (manifest, ``training.log``),
``callbacks()`` (the parts in :mod:`utils.run_log_callbacks`, placed right
after the learning-rate callback so keys they add to ``logs`` reach the
history, TensorBoard and wandb), ``finish()`` after the run ends (also on
failure).

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

File names live in :mod:`utils.constants`; the JSON-lines helpers and the
writer the parts share in :mod:`utils.run_log`. This module imports no
TensorFlow at import time (the plotting code reads the names and
:func:`read_jsonl` from here).
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import platform
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np

from utils import constants as C
from utils.constants import (  # noqa: F401  (re-exported: the run-log file names)
    ATTENTION_ENTROPY_FILE,
    ATTENTION_TENSORBOARD_RUN,
    BATCH_LOG_FILE,
    EPOCH_LOG_FILE,
    LR_CHANGES_FILE,
    MANIFEST_FILE,
    RUN_LOG_FILES,
    TIMING_FILE,
    TRAINING_LOG_FILE,
)
from utils.io import write_json
from utils.run_log import (  # noqa: F401  (re-exported for the plotting code and the tests)
    ATTENTION_KEY_PREFIX,
    CAUSE_OTHER,
    CAUSE_PLATEAU,
    CAUSE_SCHEDULE,
    EPOCH_SECONDS_KEY,
    SAMPLES_PER_SECOND_KEY,
    RunLogWriter,
    finite_or_none,
    json_line,
    lr_change_cause,
    read_json_or_none,
    read_jsonl,
    spread,
    utc_now,
    write_jsonl,
)

logger = logging.getLogger(__name__)

# Figures utils.run_plots.plot_run_logs draws (names in utils.constants).
LR_PLOT_FILE = C.LR_FIGURE
EPOCH_TIME_PLOT_FILE = C.EPOCH_TIME_FIGURE
BATCH_LOSS_PLOT_FILE = C.BATCH_LOSS_FIGURE
ATTENTION_PLOT_FILE = C.ATTENTION_ENTROPY_FIGURE
DASHBOARD_PLOT_FILE = C.DASHBOARD_FIGURE

LOG_FORMAT = "%(asctime)s %(levelname)s %(message)s"
ATTENTION_PROBE_SAMPLES = 64  # first validation samples the attention entropy is measured on
GIT_TIMEOUT_S = 10.0


def logged_history_keys(fusion: str) -> list[str]:
    """Keys :class:`RunLogger` adds to every epoch's logs for a model of this fusion mode."""
    from models.config import ModelConfig

    directions = ModelConfig(fusion=fusion).directions
    return [EPOCH_SECONDS_KEY, SAMPLES_PER_SECOND_KEY, *(ATTENTION_KEY_PREFIX + d for d in directions)]


# ---------------------------------------------------------------------------
# Small pure helpers
# ---------------------------------------------------------------------------


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
    from utils.hashing import sha256_cached as sha256_file  # cached by path, size and mtime

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
        self._writer: RunLogWriter | None = None
        self._timer: Any = None  # the StepTimer part, which makes timing.json
        self._parts: list[Any] = []
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
            earlier = read_json_or_none(self.path(MANIFEST_FILE)) or {}
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

    def callbacks(self) -> list[Any]:
        """The run-log parts (:mod:`utils.run_log_callbacks`), in order, sharing one writer."""
        from utils import run_log_callbacks as parts

        cfg, prep = self.cfg, self.prep
        writer = RunLogWriter(self.output_dir, self._t0, self.resumed_after)
        writer.continue_epochs()
        timer = parts.StepTimer(writer, len(prep.train_idx), cfg.batch_size)
        out: list[Any] = [
            timer,
            parts.LearningRateChanges(writer, cfg.schedule, cfg.lr_factor, cfg.lr_patience, cfg.min_lr),
        ]
        if cfg.batch_log_frequency:
            out.append(parts.BatchLog(writer, cfg.batch_log_frequency))
        if cfg.model.directions:
            idx = np.asarray(prep.val_idx[:ATTENTION_PROBE_SAMPLES])
            static = np.asarray(prep.data.static[idx], dtype="float32")
            dynamic = np.asarray(prep.data.dynamic[idx], dtype="float32")
            out.append(parts.AttentionEntropy(writer, static, dynamic))
        out.append(parts.EpochLog(writer, timer.summary, cfg.epochs))
        self._writer, self._timer, self._parts = writer, timer, out
        return out

    def wandb_config(self) -> dict[str, Any]:
        """Extra entries for the wandb run config: the manifest (the config itself is already there)."""
        skip = {"config", "status", "ended_at", "logged_seconds", "result", "timing"}
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
        try:
            for part in self._parts:
                if hasattr(part, "close"):
                    part.close()
            if self._timer is not None:
                write_json(self.path(TIMING_FILE), self._timer.summary(status=status, total_seconds=total))
            if self.manifest:
                # from the manifest's start (model built) to the run logs' end (after the final save);
                # training_summary.json's "training_seconds" counts from before the model build to the end of fit
                self.manifest.update({"status": status, "ended_at": utc_now(), "logged_seconds": total})
                if self._writer is not None:
                    self.manifest["epochs_run"] = len(self._writer.epoch_records)
                if result is not None:
                    self.manifest["result"] = {
                        "best_epoch": result.best_epoch,
                        "epochs_run": len(result.history.get("epoch", [])),
                        "best_validation": {f"val_{k}": v for k, v in result.best.items()},
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
            "logged_seconds": None,
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
                "fusion": cfg.model.fusion,
                "parameters": parameter_counts(self.model),
            },
            "devices": _devices(),
            "execution": getattr(prep, "execution", None),  # precision, replicas, batches (utils.devices)
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


def _fmt_seconds(seconds: float | None) -> str:
    return "an unknown time" if seconds is None else f"{seconds:.1f} s"


__all__ = [
    "RunLogger",
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
