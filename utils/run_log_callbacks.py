"""The parts of the run logging, one Keras callback each, sharing one :class:`utils.run_log.RunLogWriter`.

:meth:`utils.run_logging.RunLogger.callbacks` puts them right after
:class:`utils.callbacks.LearningRateInLogs`, in this order (each reads what
the ones before it left in the writer):

==========================  ================================================================
:class:`StepTimer`          step, gap, validation and epoch times; ``epoch_seconds`` and
                            ``samples_per_second`` in the logs; the ``timing.json`` summary
:class:`LearningRateChanges` every learning-rate change with its cause -> ``lr_changes.json``
:class:`BatchLog`           every k-th training step -> ``batch_log.jsonl``
:class:`AttentionEntropy`   attention entropy of a fixed validation subset ->
                            ``attention_entropy.jsonl``, TensorBoard ``attention/`` run
:class:`EpochLog`           the epoch record -> ``epoch_log.jsonl``, ``timing.json``, the
                            console/``training.log`` line
==========================  ================================================================

Per-batch cost is two ``perf_counter`` calls and two list appends; files are
written at epoch ends, and per batch only when ``batch_log_frequency`` hits.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from time import perf_counter
from typing import Any

import keras
import numpy as np

from utils import constants as C
from utils.callbacks import current_learning_rate
from utils.run_log import (
    ATTENTION_KEY_PREFIX,
    CAUSE_OTHER,
    CAUSE_PLATEAU,
    CAUSE_SCHEDULE,
    EPOCH_SECONDS_KEY,
    SAMPLES_PER_SECOND_KEY,
    RunLogWriter,
    json_line,
    lr_change_cause,
    read_json_or_none,
    spread,
    utc_now,
)

logger = logging.getLogger(__name__)

TIMING_NOTES = {
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
}


class StepTimer(keras.callbacks.Callback):
    """Where the time goes: steps, gaps between them, epoch starts, validation.

    Counts training steps from Keras' ``batch`` index, so that with
    ``steps_per_execution = k`` (one call per k steps) every step is counted.
    """

    def __init__(self, writer: RunLogWriter, n_train: int, batch_size: int) -> None:
        super().__init__()
        self.writer = writer
        self.n_train = int(n_train)
        self.batch_size = int(batch_size)
        self.step_seconds: list[float] = []  # every training step of this process
        self.gap_seconds: list[float] = []  # end of a step -> begin of the next (same epoch)
        self.totals = dict.fromkeys(
            ("fit_start", "epoch_start", "before_validation", "validation", "after_validation", "epoch_end_callbacks"),
            0.0,
        )
        self.fit_begin: float | None = None
        self.fit_end: float | None = None
        self._epoch_begin = self._train_done = self._step_begin = self._test_begin = self._test_end = 0.0
        self._last_end: float | None = None
        self._epoch_steps: list[float] = []
        self._epoch_gaps: list[float] = []
        self._epoch_validation = 0.0
        self._epoch_start = 0.0

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.fit_begin = time.perf_counter()

    def _close_epoch_end_callbacks(self, now: float) -> None:
        if self.writer.epoch_logged_at is not None:
            self.totals["epoch_end_callbacks"] += now - self.writer.epoch_logged_at
            self.writer.epoch_logged_at = None

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        now = time.perf_counter()
        if self.writer.epoch_logged_at is not None:
            self._close_epoch_end_callbacks(now)
        elif self.fit_begin is not None and not self.totals["fit_start"]:
            self.totals["fit_start"] = now - self.fit_begin
        self.writer.epoch = epoch
        self.writer.epoch_step = 0
        self.writer.record = {}
        self._epoch_begin = self._train_done = now
        self._epoch_steps, self._epoch_gaps = [], []
        self._epoch_validation = self._epoch_start = 0.0
        self._last_end = None

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        now = perf_counter()
        if self._last_end is not None:
            self._epoch_gaps.append(now - self._last_end)
        else:
            self._epoch_start = now - self._epoch_begin
        self._step_begin = now

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        now = perf_counter()
        w = self.writer
        # Keras calls this once per k = steps_per_execution steps with ``batch`` = the
        # index of the last one, even for a shorter last call: cap at the epoch's steps.
        last = batch + 1
        if self.params.get("steps"):
            last = min(last, int(self.params["steps"]))
        done = max(1, last - w.epoch_step)
        seconds = now - self._step_begin
        self._epoch_steps.extend([seconds / done] * done)
        self._last_end = self._train_done = now
        w.global_step += done
        w.epoch_step += done
        w.last_call_steps, w.last_call_seconds = done, seconds

    def on_test_begin(self, logs: dict | None = None) -> None:
        self._test_begin = time.perf_counter()
        self.totals["before_validation"] += self._test_begin - self._train_done

    def on_test_end(self, logs: dict | None = None) -> None:
        self._test_end = time.perf_counter()
        self._epoch_validation += self._test_end - self._test_begin

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        now = time.perf_counter()
        logs = logs if logs is not None else {}
        train_seconds = self._train_done - self._epoch_begin
        steps = len(self._epoch_steps)
        samples = min(steps * self.batch_size, self.n_train)
        self.step_seconds.extend(self._epoch_steps)
        self.gap_seconds.extend(self._epoch_gaps)
        self.totals["validation"] += self._epoch_validation
        if self._epoch_validation:
            self.totals["after_validation"] += now - self._test_end
        self.totals["epoch_start"] += self._epoch_start
        logs[EPOCH_SECONDS_KEY] = now - self._epoch_begin
        logs[SAMPLES_PER_SECOND_KEY] = samples / train_seconds if train_seconds > 0 else math.nan
        steps_spread, gaps_spread = spread(self._epoch_steps), spread(self._epoch_gaps)
        self.writer.record.update({
            "elapsed_seconds": self.writer.elapsed(now),
            "ended_at": utc_now(),
            "train_seconds": train_seconds,
            "validation_seconds": self._epoch_validation,
            "attention_seconds": 0.0,
            "epoch_start_seconds": self._epoch_start,
            "steps": steps,
            "samples": samples,
            "step_seconds_median": steps_spread["median"],
            "step_seconds_p95": steps_spread["p95"],
            "gap_seconds_median": gaps_spread["median"],
            "gap_seconds_p95": gaps_spread["p95"],
        })
        self.writer.epoch_ended_at = now

    def on_train_end(self, logs: dict | None = None) -> None:
        now = time.perf_counter()
        self._close_epoch_end_callbacks(now)
        self.fit_end = now

    def breakdown(self, fit: float | None) -> dict[str, float]:
        """Seconds of ``fit`` per part (``other``: what no part covers)."""
        parts = {
            "fit_start": self.totals["fit_start"],
            "epoch_start": self.totals["epoch_start"],
            "train_steps": float(sum(self.step_seconds)),
            "between_steps": float(sum(self.gap_seconds)),
            "before_validation": self.totals["before_validation"],
            "validation": self.totals["validation"],
            "after_validation": self.totals["after_validation"],
            "attention_probe": self.writer.seconds["attention_probe"],
            "run_logging": self.writer.seconds["run_logging"],
            "epoch_end_callbacks": self.totals["epoch_end_callbacks"],
        }
        if fit:
            parts["other"] = max(0.0, fit - sum(parts.values()))
        return parts

    def summary(self, status: str, total_seconds: float | None = None) -> dict[str, Any]:
        """The ``timing.json`` payload: where this process's time went (after a --resume: the resumed part)."""
        w = self.writer
        session = w.session_records
        rates = [r[SAMPLES_PER_SECOND_KEY] for r in session]
        fit_end = self.fit_end if self.fit_end is not None else time.perf_counter()
        fit = fit_end - self.fit_begin if self.fit_begin is not None else None
        parts = self.breakdown(fit)
        after_fit = None
        if total_seconds is not None and self.fit_end is not None:
            after_fit = w.t0 + total_seconds - self.fit_end
        return {
            "status": status,
            "total_seconds": total_seconds,
            "setup_seconds": (self.fit_begin - w.t0) if self.fit_begin else None,
            "fit_seconds": fit,
            "after_fit_seconds": after_fit,
            "resumed_after_epoch": w.resumed_after,
            "epochs": len(session),
            "steps": len(self.step_seconds),
            "epoch_seconds": spread([r[EPOCH_SECONDS_KEY] for r in session]),
            "epoch_end_elapsed_seconds": [r["elapsed_seconds"] for r in session],
            "first_step_seconds": self.step_seconds[0] if self.step_seconds else None,
            "step_seconds": spread(self.step_seconds[1:]),  # the first step includes tracing
            "gap_seconds": spread(self.gap_seconds),
            "samples_per_second": {
                "mean": float(np.nanmean(rates)) if rates else None,
                "median": float(np.nanmedian(rates)) if rates else None,
                "last": rates[-1] if rates else None,
            },
            "breakdown_seconds": parts,
            "breakdown_share": {k: (v / fit if fit else None) for k, v in parts.items()},
            "notes": TIMING_NOTES,
        }


class LearningRateChanges(keras.callbacks.Callback):
    """Every change of the learning rate, with its cause, in ``lr_changes.json`` and the log."""

    def __init__(self, writer: RunLogWriter, schedule: str, factor: float, patience: int, min_lr: float) -> None:
        super().__init__()
        self.writer = writer
        self.schedule = schedule
        self.factor = factor
        self.patience = patience
        self.min_lr = min_lr
        self.changes: list[dict[str, Any]] = []
        self.epoch_start_lr: float | None = None
        self.last_epoch = -1  # last finished epoch (0-based)

    def on_train_begin(self, logs: dict | None = None) -> None:
        after = self.writer.resumed_after
        if after:
            earlier = read_json_or_none(self.writer.path(C.LR_CHANGES_FILE)) or {}
            # a change after the last finished epoch is detected again at the next epoch's start
            self.changes = [c for c in earlier.get("changes", []) if c.get("epoch", 0) < after]
            self.last_epoch = after - 1
            if self.writer.epoch_records:
                self.epoch_start_lr = self.writer.epoch_records[-1].get("learning_rate_start")
        self._write()

    def _write(self) -> None:
        self.writer.write_json(C.LR_CHANGES_FILE, {"schedule": self.schedule, "changes": self.changes})

    def check(self, epoch_done: int, effective: int | None) -> None:
        """Record a change since the start of epoch ``epoch_done`` (1-based), effective from ``effective``."""
        if self.epoch_start_lr is None:
            return
        old, new = self.epoch_start_lr, current_learning_rate(self.model)
        if math.isclose(old, new, rel_tol=1e-9, abs_tol=0.0):
            return
        cause = lr_change_cause(self.schedule, old, new, self.factor, self.min_lr)
        self.changes.append({
            "epoch": epoch_done,
            "effective_epoch": effective,
            "global_step": self.writer.global_step,
            "old": old,
            "new": new,
            "cause": cause,
            "elapsed_seconds": self.writer.elapsed(),
            "time": utc_now(),
        })
        self._write()
        why = {
            CAUSE_PLATEAU: f"plateau: val_loss did not improve for {self.patience} epoch(s)",
            CAUSE_SCHEDULE: "cosine schedule",
            CAUSE_OTHER: "not explained by the schedule",
        }[cause]
        logger.info("Learning rate %.3g -> %.3g after epoch %d (%s)", old, new, epoch_done, why)

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        if self.last_epoch >= 0:
            self.check(self.last_epoch + 1, epoch + 1)
        self.epoch_start_lr = current_learning_rate(self.model)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.writer.record["learning_rate_start"] = self.epoch_start_lr
        self.last_epoch = epoch

    def on_train_end(self, logs: dict | None = None) -> None:
        if self.last_epoch >= 0 and self.schedule != "cosine":
            self.check(self.last_epoch + 1, None)  # a cut at the end of the last epoch (applies to none)


class HandleOwner(keras.callbacks.Callback):
    """A part holding one open handle (a file, a TensorBoard writer), closed at the end of ``fit``.

    :meth:`close` is idempotent; :meth:`utils.run_logging.RunLogger.finish`
    calls it too, for a ``fit`` that ended with an exception.
    """

    _handle: Any = None

    def on_train_end(self, logs: dict | None = None) -> None:
        self.close()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


class BatchLog(HandleOwner):
    """Every ``frequency``-th training step: loss, per-trait errors, learning rate, times -> ``batch_log.jsonl``."""

    def __init__(self, writer: RunLogWriter, frequency: int) -> None:
        super().__init__()
        self.writer = writer
        self.frequency = int(frequency)

    def on_train_begin(self, logs: dict | None = None) -> None:
        path = self.writer.path(C.BATCH_LOG_FILE)
        if self.writer.resumed_after is not None:
            self.writer.write_jsonl(C.BATCH_LOG_FILE, self.writer.kept(C.BATCH_LOG_FILE))
            self._handle = open(path, "a", encoding="utf-8")
        else:
            self._handle = open(path, "w", encoding="utf-8")

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        w = self.writer
        previous = w.global_step - w.last_call_steps
        if self._handle is None or w.global_step // self.frequency <= previous // self.frequency:
            return
        record = {
            "epoch": w.epoch + 1,
            "step": w.epoch_step,
            "global_step": w.global_step,
            "elapsed_seconds": w.elapsed(),
            "batch_seconds": w.last_call_seconds,
            "learning_rate": current_learning_rate(self.model),
            **(logs or {}),
        }
        self._handle.write(json_line(record) + "\n")
        self._handle.flush()


class AttentionProbe:
    """Attention entropy of a fixed set of samples, through one compiled function.

    The scores come from the model's ``fusion`` layer in inference mode (as in
    :func:`models.cross_attention.attention_scores`); the ``tf.function`` is
    traced once for the fixed batch, so later epochs cost a few milliseconds.
    """

    def __init__(self, model: Any, static: np.ndarray, dynamic: np.ndarray) -> None:
        import tensorflow as tf

        from models.cross_attention import fusion_tokens_model

        self.fusion = model.get_layer("fusion")
        self.directions: tuple[str, ...] = tuple(self.fusion.config.directions)
        self.n_samples = len(static)
        self._inputs = (tf.constant(static, dtype=tf.float32), tf.constant(dynamic, dtype=tf.float32))
        self._to_tokens = fusion_tokens_model(model)
        self._scores = tf.function(self._scores_of)

    def _scores_of(self, static: Any, dynamic: Any) -> Any:
        s_tok, d_tok = self._to_tokens([static, dynamic], training=False)
        _, by_direction = self.fusion(s_tok, d_tok, training=False, return_attention_scores=True)
        return by_direction

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


def summarize_directions(blocks: dict[str, dict[str, Any]], directions: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """Per direction: the mean entropy over its levels and heads, and that mean over ln(keys)."""
    out: dict[str, dict[str, Any]] = {}
    for direction in directions:
        parts = [b for b in blocks.values() if b["direction"] == direction]
        mean = float(np.mean([b["mean"] for b in parts]))
        out[direction] = {
            "mean": mean,
            "max_entropy": parts[0]["max_entropy"],
            "mean_normalized": mean / parts[0]["max_entropy"],
        }
    return out


class AttentionEntropy(HandleOwner):
    """Per-epoch attention entropy per direction and head -> ``attention_entropy.jsonl`` and TensorBoard.

    ``static``/``dynamic`` are the fixed validation samples it is measured on.
    """

    def __init__(self, writer: RunLogWriter, static: np.ndarray, dynamic: np.ndarray) -> None:
        super().__init__()
        self.writer = writer
        self.inputs = (static, dynamic)
        self.records: list[dict[str, Any]] = []
        self.probe: AttentionProbe | None = None  # the handle is its TensorBoard writer

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.records = self.writer.kept(C.ATTENTION_ENTROPY_FILE)
        if self.writer.resumed_after is not None:
            self.writer.write_jsonl(C.ATTENTION_ENTROPY_FILE, self.records)
        try:
            self.probe = AttentionProbe(self.model, *self.inputs)
        except (ValueError, KeyError, AttributeError) as exc:
            logger.warning("attention entropy is not logged: the model has no usable fusion layer (%s)", exc)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self.probe is None:
            return
        begin = time.perf_counter()
        blocks = self.probe.measure()
        directions = summarize_directions(blocks, self.probe.directions)
        if logs is not None:
            for direction, values in directions.items():
                logs[ATTENTION_KEY_PREFIX + direction] = values["mean"]
        seconds = time.perf_counter() - begin
        self.writer.seconds["attention_probe"] += seconds
        self.writer.record["attention_seconds"] = seconds
        record = {
            "epoch": epoch + 1,
            "n_samples": self.probe.n_samples,
            "seconds": seconds,
            "directions": directions,
            "blocks": blocks,
        }
        self.records.append(record)
        self.writer.write_jsonl(C.ATTENTION_ENTROPY_FILE, self.records)
        self._write_tensorboard(epoch, record)

    def _write_tensorboard(self, epoch: int, record: dict[str, Any]) -> None:
        import tensorflow as tf

        if self._handle is None:
            folder = self.writer.output_dir / C.TENSORBOARD_DIR / C.ATTENTION_TENSORBOARD_RUN
            self._handle = tf.summary.create_file_writer(str(folder))
        from utils.tensorboard_tags import attention_tag

        step = epoch + 1  # the 1-based epoch, as every TensorBoard series of the run
        with self._handle.as_default():
            for direction, values in record["directions"].items():
                tf.summary.scalar(attention_tag(direction), values["mean"], step=step)
            for block in record["blocks"].values():
                level = int(block["level"])
                for head, value in enumerate(block["per_head"]):
                    tf.summary.scalar(attention_tag(block["direction"], level, head), value, step=step)
                tf.summary.scalar(attention_tag(block["direction"], level), block["max_entropy"], step=step)
        self._handle.flush()


class EpochLog(keras.callbacks.Callback):
    """Last run-log part: the epoch record -> ``epoch_log.jsonl``, ``timing.json`` and one log line.

    ``timing(status)`` is the current ``timing.json`` payload
    (:meth:`StepTimer.summary`); ``epochs`` the run's epoch count for the line.
    """

    def __init__(self, writer: RunLogWriter, timing: Callable[[str], dict[str, Any]], epochs: int) -> None:
        super().__init__()
        self.writer = writer
        self.timing = timing
        self.epochs = epochs

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        w = self.writer
        logs = logs or {}
        record = {"epoch": epoch + 1, **w.record, **{k: float(v) for k, v in logs.items()}}
        w.epoch_records.append(record)
        w.write_jsonl(C.EPOCH_LOG_FILE, w.epoch_records)
        w.write_json(C.TIMING_FILE, self.timing("running"))
        logger.info(
            "Epoch %d/%d: loss %.5f, val_loss %.5f, val R² %.4f, lr %.3g, %.1f s (%.0f samples/s)",
            epoch + 1, self.params.get("epochs") or self.epochs,
            logs.get("loss", math.nan), logs.get("val_loss", math.nan), logs.get("val_r_squared", math.nan),
            logs.get("learning_rate", record.get("learning_rate_start") or math.nan),
            logs.get(EPOCH_SECONDS_KEY, math.nan), logs.get(SAMPLES_PER_SECOND_KEY, math.nan),
        )
        now = time.perf_counter()
        if w.epoch_ended_at is not None:
            w.seconds["run_logging"] += now - w.epoch_ended_at - record.get("attention_seconds", 0.0)
        w.epoch_logged_at = now


__all__ = [
    "StepTimer",
    "LearningRateChanges",
    "BatchLog",
    "AttentionProbe",
    "AttentionEntropy",
    "EpochLog",
]
