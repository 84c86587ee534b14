"""The Keras callbacks of a training run, one job each (the run logs' parts are in :mod:`utils.run_log_callbacks`).

:func:`utils.training.make_callbacks` puts them in this order:

=========================  ===================================================
``LearningRateInLogs``     adds the optimizer's learning rate to the epoch logs
(run-log callbacks)        timing, learning-rate changes, batch log, attention
``HistoryWriter``          appends each epoch to training_history.npy/.json
``TerminateOnNaN``         Keras: stops at a NaN/Inf loss
``CompactProgbar``         Keras' progress bar, headline metrics only
``BestModelCheckpoint``    saves the model whenever val_loss improves
``EarlyStopping``          Keras: stops after ``patience`` epochs without improvement
``ReduceLROnPlateau``      Keras (``--schedule plateau``): cuts the learning rate
``EpochTensorBoard``       Keras' TensorBoard without the per-step hook
``ResumeCheckpoint``       writes the resume state after every epoch
=========================  ===================================================

The best weights are kept by one mechanism: :class:`BestModelCheckpoint`'s
file, which :func:`utils.training.run_training` loads after ``fit`` (also
across a ``--resume``). Early stopping only stops.

Resuming needs the counters of early stopping, the plateau rule and the
checkpoint. Keras keeps them as attributes it resets in ``on_train_begin``
and offers no public state API, so each has one small named adapter
(:data:`RESUME_ADAPTERS`) that reads and writes exactly those attributes;
:class:`ResumeCheckpoint` (the last callback) saves them after every epoch
and puts them back in its ``on_train_begin``, after the others have reset.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import keras

from utils.errors import EXIT_INPUT_CHANGED, TrainingStopped
from utils.history import History, save_history
from utils.io import save_model

# Metrics the console progress bar shows; every metric still reaches the history.
PROGRESS_KEYS = frozenset(
    f"{prefix}{name}" for prefix in ("", "val_") for name in ("loss", "mae", "r_squared")
) | {"learning_rate"}
LEARNING_RATE_KEY = "learning_rate"


def current_learning_rate(model: Any) -> float:
    """The optimizer's learning rate now (a schedule's value at the current step)."""
    return float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))


class LearningRateInLogs(keras.callbacks.Callback):
    """Add the learning rate to the epoch logs (so it reaches the history, TensorBoard and wandb)."""

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is not None:
            logs[LEARNING_RATE_KEY] = current_learning_rate(self.model)


class HistoryWriter(keras.callbacks.Callback):
    """Append each epoch's logs to ``history`` and rewrite both history files atomically.

    ``history`` may hold the epochs of an interrupted run (``--resume``); a
    metric first seen in a later epoch is NaN in the earlier ones.
    """

    def __init__(self, history: History, npy_path: Path, json_path: Path) -> None:
        super().__init__()
        self.history = history
        self.npy_path = Path(npy_path)
        self.json_path = Path(json_path)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        row = {"epoch": float(epoch + 1), **{k: float(v) for k, v in (logs or {}).items()}}
        done = len(self.history.get("epoch", []))
        for key in row:
            self.history.setdefault(key, [math.nan] * done)
        for key, values in self.history.items():
            values.append(row.get(key, math.nan))
        save_history(self.history, self.npy_path, self.json_path)


class BestModelCheckpoint(keras.callbacks.Callback):
    """Save the full model whenever ``val_loss`` improves, atomically (loadable on its own).

    ``best`` is the lowest ``val_loss`` so far; it is not reset in
    ``on_train_begin``, so a resumed run sets it once, before ``fit``.
    """

    def __init__(self, path: Path, monitor: str = "val_loss") -> None:
        super().__init__()
        self.path = Path(path)
        self.monitor = monitor
        self.best = math.inf

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        value = (logs or {}).get(self.monitor, math.inf)
        if value < self.best:
            self.best = float(value)
            save_model(self.model, self.path)


class CompactProgbar(keras.callbacks.ProgbarLogger):
    """Keras' progress bar, showing only the metrics in ``keys`` (not all 36)."""

    def __init__(self, keys: Iterable[str] = PROGRESS_KEYS) -> None:
        super().__init__()
        self.keys = frozenset(keys)

    def _keep(self, logs: dict | None) -> dict:
        return {k: v for k, v in (logs or {}).items() if k in self.keys}

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        super().on_train_batch_end(batch, self._keep(logs))

    def on_test_batch_end(self, batch: int, logs: dict | None = None) -> None:
        super().on_test_batch_end(batch, self._keep(logs))

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        super().on_epoch_end(epoch, self._keep(logs))

    def on_test_end(self, logs: dict | None = None) -> None:
        super().on_test_end(self._keep(logs))


class EpochTensorBoard(keras.callbacks.TensorBoard):
    """TensorBoard writing epoch summaries only, under the tags of :mod:`utils.tensorboard_tags`.

    Keras' per-step hook makes one ``summary.scalar`` call per log key that
    ``update_freq="epoch"`` never records (about 1.5 ms per step on 2 CPU
    cores, docs/performance.md). Unlike Keras' own callback it writes each
    series once (no ``evaluation_*_vs_iterations`` copy of the validation
    metrics), at the 1-based epoch as the step, grouped by metric
    (``r_squared/openness``), with the learning rate the epoch ran at (from
    the logs, not the optimizer after ReduceLROnPlateau cut it), plus the
    custom-scalars layout.
    """

    def on_train_begin(self, logs: dict | None = None) -> None:
        import tensorflow as tf

        from utils.tensorboard_tags import layout_summary

        super().on_train_begin(logs)
        with self._train_writer.as_default():
            tf.summary.experimental.write_raw_pb(layout_summary(), step=0)

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        pass

    def on_test_end(self, logs: dict | None = None) -> None:
        self._pop_writer()  # Keras would also write every metric again as evaluation_<name>_vs_iterations

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        super().on_epoch_end(epoch + 1, logs)  # step = the 1-based epoch (histograms included)

    def _log_epoch_metrics(self, epoch: int, logs: dict | None) -> None:
        from utils.tensorboard_tags import TRAIN_RUN, split_logs

        for run, scalars in split_logs(dict(logs or {})).items():
            writer = self._train_writer if run == TRAIN_RUN else self._val_writer
            with writer.as_default():
                for tag, value in scalars.items():
                    self.summary.scalar(tag, value, step=epoch)


# ---------------------------------------------------------------------------
# Resume: one adapter per callback whose counters a resumed run needs
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class CounterAdapter:
    """Reads and writes the named counters of one kind of callback.

    ``key`` names the callback's entry in the resume state file; ``kind`` is
    the callback class it applies to.
    """

    key: str
    kind: type
    fields: tuple[str, ...]

    def applies_to(self, callback: Any) -> bool:
        return isinstance(callback, self.kind)

    def save(self, callback: Any) -> dict[str, Any]:
        """The counters, as JSON-ready numbers (infinities as the strings "inf"/"-inf")."""
        return {f: _json_number(getattr(callback, f)) for f in self.fields if hasattr(callback, f)}

    def load(self, callback: Any, values: dict[str, Any]) -> None:
        for field in self.fields:
            if field in values:
                setattr(callback, field, _from_json_number(values[field]))


EARLY_STOPPING = CounterAdapter(
    "EarlyStopping", keras.callbacks.EarlyStopping, ("wait", "best", "best_epoch", "stopped_epoch", "baseline")
)
PLATEAU = CounterAdapter("ReduceLROnPlateau", keras.callbacks.ReduceLROnPlateau, ("wait", "best", "cooldown_counter"))
BEST_CHECKPOINT = CounterAdapter("BestModelCheckpoint", BestModelCheckpoint, ("best",))
RESUME_ADAPTERS: tuple[CounterAdapter, ...] = (EARLY_STOPPING, PLATEAU, BEST_CHECKPOINT)


def _json_number(value: Any) -> Any:
    if hasattr(value, "item"):  # a NumPy scalar
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)  # "inf", "-inf", "nan" survive a JSON round trip as text
    return value


def _from_json_number(value: Any) -> Any:
    return float(value) if value in ("inf", "-inf", "nan") else value


def callback_states(callbacks: Iterable[Any]) -> dict[str, dict[str, Any]]:
    """``adapter key -> counters`` of every callback an adapter applies to."""
    return {a.key: a.save(cb) for cb in callbacks for a in RESUME_ADAPTERS if a.applies_to(cb)}


def restore_callback_states(callbacks: Iterable[Any], states: dict[str, dict[str, Any]]) -> None:
    """Put saved counters back (the inverse of :func:`callback_states`)."""
    for cb in callbacks:
        for adapter in RESUME_ADAPTERS:
            if adapter.applies_to(cb) and adapter.key in states:
                adapter.load(cb, states[adapter.key] or {})


class InputsUnchanged(keras.callbacks.Callback):
    """Stop the run before it reads an input file again once the file changed (size or modification time).

    Checked at every epoch start and before every validation pass, the two
    moments the memory-mapped inputs are opened for reading again; a changed
    file raises :class:`TrainingStopped` with :data:`EXIT_INPUT_CHANGED`
    (``advice`` says what survives and how to resume). A file truncated in the
    middle of an epoch can still end the process with SIGBUS before the next
    check; the resume state of the last finished epoch survives that too.
    """

    def __init__(self, watch: Any, advice: Callable[[], str]) -> None:
        super().__init__()
        self.watch = watch
        self.advice = advice

    def _check(self) -> None:
        change = self.watch.changed()
        if change:
            raise TrainingStopped(f"{change}; the run stopped before reading it again. {self.advice()}", EXIT_INPUT_CHANGED)

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._check()

    def on_test_begin(self, logs: dict | None = None) -> None:
        self._check()


class ResumeCheckpoint(keras.callbacks.Callback):
    """Last callback: after every finished epoch, save what ``--resume`` needs.

    ``save_state(model, epoch, counters)`` writes the state (see
    :func:`utils.resume.save_state`); ``restored`` holds the counters of the
    interrupted run, put back into ``callbacks`` in ``on_train_begin``
    (which runs after theirs, where they reset themselves).
    """

    def __init__(
        self,
        callbacks: list[Any],
        save_state: Callable[[Any, int, dict[str, dict[str, Any]]], None],
        restored: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        super().__init__()
        self.callbacks = callbacks
        self.save_state = save_state
        self.restored = restored

    def on_train_begin(self, logs: dict | None = None) -> None:
        if self.restored:
            restore_callback_states(self.callbacks, self.restored)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        loss = (logs or {}).get("loss")
        if loss is None or not math.isfinite(float(loss)):
            return  # never make a diverged epoch the point to resume from
        self.save_state(self.model, epoch + 1, callback_states(self.callbacks))


__all__ = [
    "LearningRateInLogs",
    "HistoryWriter",
    "BestModelCheckpoint",
    "CompactProgbar",
    "EpochTensorBoard",
    "CounterAdapter",
    "RESUME_ADAPTERS",
    "ResumeCheckpoint",
    "callback_states",
    "restore_callback_states",
    "current_learning_rate",
]
