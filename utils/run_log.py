"""What the run-log callbacks share: strict JSON lines, and one small writer of the run's log files.

:class:`RunLogWriter` is the one object the parts of the run logging
(:mod:`utils.run_log_callbacks`) share: the output folder, the run's clock,
the training-step counters, the finished epochs' records and the record of
the epoch being finished, which each part adds its fields to. A write that
fails is logged as a warning and never stops the training.

No TensorFlow here (the plotting code reads :func:`read_jsonl`).
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import math
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from utils import constants as C
from utils.io import atomic_path, write_json

logger = logging.getLogger(__name__)

# Keys the run logging adds to the epoch ``logs`` (so they reach history, TensorBoard, wandb).
EPOCH_SECONDS_KEY = "epoch_seconds"
SAMPLES_PER_SECOND_KEY = "samples_per_second"
ATTENTION_KEY_PREFIX = "attention_entropy_"
# Learning-rate change causes.
CAUSE_PLATEAU = "plateau"  # ReduceLROnPlateau cut
CAUSE_SCHEDULE = "schedule"  # cosine decay
CAUSE_OTHER = "other"  # neither explains the new value


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


def read_json_or_none(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


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


class RunLogWriter:
    """The output folder, clock, step counters and epoch records the run-log callbacks share.

    ``resumed_after`` is the number of finished epochs a ``--resume`` continues
    after (None for a new run): the logs of those epochs are kept, later ones
    (the interrupted epoch's) are dropped by :meth:`kept`.
    """

    def __init__(self, output_dir: Path, t0: float | None = None, resumed_after: int | None = None) -> None:
        self.output_dir = Path(output_dir)
        self.t0 = t0 if t0 is not None else time.perf_counter()
        self.resumed_after = resumed_after
        self.epoch_records: list[dict[str, Any]] = []  # finished epochs (earlier sessions' first)
        self.session_first = 0  # index of this process's first epoch record
        self.global_step = 0  # training steps of the whole run
        self.epoch = 0  # the current epoch (0-based)
        self.epoch_step = 0  # training steps of the current epoch
        self.last_call_steps = 0  # steps the last on_train_batch_end covered (steps_per_execution)
        self.last_call_seconds = 0.0  # and its duration
        self.record: dict[str, Any] = {}  # fields of the epoch being finished, from each part
        self.seconds: dict[str, float] = {"attention_probe": 0.0, "run_logging": 0.0}
        self.epoch_ended_at: float | None = None  # the timer's epoch end (first run-log part)
        self.epoch_logged_at: float | None = None  # the epoch log's end (last run-log part)

    def path(self, name: str) -> Path:
        return self.output_dir / name

    def elapsed(self, t: float | None = None) -> float:
        """Seconds since the run started (``t``: a ``perf_counter`` reading, default now)."""
        return (time.perf_counter() if t is None else t) - self.t0

    def write_json(self, name: str, payload: Any) -> None:
        try:
            write_json(self.path(name), payload)
        except OSError as exc:
            logger.warning("could not write %s in %s: %s", name, self.output_dir, exc)

    def write_jsonl(self, name: str, records: Iterable[dict[str, Any]]) -> None:
        try:
            write_jsonl(self.path(name), records)
        except OSError as exc:
            logger.warning("could not write %s in %s: %s", name, self.output_dir, exc)

    def kept(self, name: str) -> list[dict[str, Any]]:
        """Records of ``name`` whose ``epoch`` is one of the finished epochs a resume continues after."""
        path = self.path(name)
        if self.resumed_after is None or not path.is_file():
            return []
        return [r for r in read_jsonl(path) if r.get("epoch", 0) <= self.resumed_after]

    def continue_epochs(self) -> None:
        """``--resume``: keep the finished epochs' records and their step count."""
        if self.resumed_after is None:
            return
        self.epoch_records = self.kept(C.EPOCH_LOG_FILE)
        write_jsonl(self.path(C.EPOCH_LOG_FILE), self.epoch_records)
        self.session_first = len(self.epoch_records)
        self.global_step = sum(int(r.get("steps", 0)) for r in self.epoch_records)

    @property
    def session_records(self) -> list[dict[str, Any]]:
        """The epoch records of this process (after a ``--resume``: the resumed part)."""
        return self.epoch_records[self.session_first :]


__all__ = [
    "RunLogWriter",
    "EPOCH_SECONDS_KEY",
    "SAMPLES_PER_SECOND_KEY",
    "ATTENTION_KEY_PREFIX",
    "utc_now",
    "finite_or_none",
    "json_line",
    "write_jsonl",
    "read_jsonl",
    "read_json_or_none",
    "spread",
    "lr_change_cause",
    "CAUSE_PLATEAU",
    "CAUSE_SCHEDULE",
    "CAUSE_OTHER",
]
