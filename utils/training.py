"""The training run: validated data -> model -> Keras ``fit`` with the callbacks of :mod:`utils.callbacks`.

:func:`run_training` is what ``scripts/train_personality_model.py`` calls
with a :class:`utils.config.TrainConfig`. All inputs are validated before
anything is written (:func:`prepare`). The output folder is the folder of
``--output`` (the seed's ``results/``) and receives the files named in
:mod:`utils.constants`.

The data order of epoch ``e`` is ``EpochBatches(e)`` (a function of the seed
and ``e`` only); the training dataset asks for ``e`` when Keras opens its
iterator at the start of each epoch, reading it from Keras' own optimizer
step counter (``iterations // steps_per_epoch``), which a ``--resume``
restores with the weights.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from utils import constants as C
from utils.config import SCHEDULES, TrainConfig
from utils.data import Dataset, EpochBatches, label_means, load_dataset
from utils.devices import ExecutionPlan, check_settings, execution_plan, use_xla
from utils.errors import (
    EXIT_DIVERGED,
    EXIT_INPUT_CHANGED,
    EXIT_INTERRUPTED,
    EXIT_TERMINATED,
    EXIT_WRITE_FAILED,
    InputError,
    Terminated,
    TrainingStopped,
)
from utils.history import History, keeps_start, load_start_validation
from utils.ids import resolve_groups
from utils.io import (
    InputWatch,
    OutputWriteError,
    check_writable,
    save_model,
    warn_if_little_space,
    write_errno,
    write_json,
)
from utils.splits import input_record, make_split, split_summary, write_split_record

logger = logging.getLogger(__name__)

# run_manifest.json's "status" of a run that stopped early, by exit code.
STOP_STATUS = {
    EXIT_DIVERGED: "diverged",
    EXIT_WRITE_FAILED: "write_failed",
    EXIT_INPUT_CHANGED: "input_changed",
    EXIT_INTERRUPTED: "interrupted",
    EXIT_TERMINATED: "terminated",
}


@dataclasses.dataclass
class Prepared:
    """Validated inputs of a run: the data, the split and the baseline."""

    data: Dataset
    train_idx: np.ndarray
    val_idx: np.ndarray
    train_label_means: np.ndarray
    resume_state: dict[str, Any] | None = None  # set when --resume found a run to continue
    execution: dict[str, Any] | None = None  # utils.devices.ExecutionPlan.record(), set when the model is built
    split: Any = None  # utils.splits.Split: how the rows were split, and its leakage block
    groups: np.ndarray | None = None  # one group per row, when --ids or --groups gave them


def prepare(cfg: TrainConfig) -> Prepared:
    """Validate every input and setting; raise InputError before anything is written."""
    if cfg.schedule not in SCHEDULES:
        raise InputError(f"expected --schedule to be one of {SCHEDULES}, found {cfg.schedule!r}")
    if Path(cfg.output).suffix not in C.MODEL_SUFFIXES:
        raise InputError(f"expected --output to end in {' or '.join(C.MODEL_SUFFIXES)}", cfg.output)
    data = load_dataset(cfg.static_features, cfg.dynamic_features, cfg.labels)
    _, groups, source = resolve_groups(len(data), cfg.ids, cfg.groups, cfg.group_pattern)
    split = make_split(
        len(data), cfg.val_split, cfg.seed, cfg.split, groups, (cfg.train_rows, cfg.val_rows), source or cfg.labels
    )
    train_idx, val_idx = split.train, split.val
    check_settings(cfg.precision, cfg.distribute)  # refuses mixed_float16 without a GPU, multi_worker
    check_writable(cfg.output_dir)
    resume_state = None
    if cfg.resume:
        from utils.resume import check_compatible, read_state, state_path

        resume_state = read_state(cfg.output_dir)
        if resume_state is None:
            raise InputError(
                "expected an interrupted run to resume (resume/state.json), found none; "
                "run without --resume to start a new one",
                str(cfg.output_dir),
            )
        check_compatible(resume_state, cfg.to_dict(), state_path(cfg.output_dir))
    return Prepared(
        data, train_idx, val_idx, label_means(data.labels, train_idx), resume_state, split=split, groups=groups
    )


def make_callbacks(cfg: TrainConfig, history: History, run_log: list[Any] | None = None) -> list[Any]:
    """The Keras callbacks of a run, in the order they must run (see :mod:`utils.callbacks`).

    ``run_log`` callbacks run right after the learning-rate callback, before
    the history writer, so keys they add to ``logs`` reach every later callback.
    """
    import keras

    from utils import callbacks as cb

    out = cfg.output_dir
    callbacks: list[Any] = [
        cb.LearningRateInLogs(),
        *(run_log or []),
        cb.HistoryWriter(history, out / C.HISTORY_FILE, out / C.HISTORY_JSON_FILE),
        keras.callbacks.TerminateOnNaN(),
        cb.CompactProgbar(),
        cb.BestModelCheckpoint(out / C.CHECKPOINT_FILE),
        keras.callbacks.EarlyStopping(monitor="val_loss", mode="min", patience=cfg.patience, verbose=1),
    ]
    if cfg.schedule == "plateau":
        callbacks.append(plateau_callback(cfg))
    callbacks.append(
        cb.EpochTensorBoard(log_dir=str(out / C.TENSORBOARD_DIR), histogram_freq=cfg.histogram_freq, write_graph=False)
    )
    return callbacks


def plateau_callback(cfg: TrainConfig) -> Any:
    """The ``--schedule plateau`` learning-rate cut (cosine decay lives in the optimizer instead)."""
    import keras

    return keras.callbacks.ReduceLROnPlateau(
        monitor="val_loss",
        mode="min",
        factor=cfg.lr_factor,
        patience=cfg.lr_patience,
        min_lr=cfg.min_lr,
        verbose=0,  # the run log prints one line per cut (LearningRateChanges), not Keras' float noise
    )


def _optimizer(cfg: TrainConfig, steps_per_epoch: int) -> Any:
    import keras

    lr: Any = cfg.learning_rate
    if cfg.schedule == "cosine":
        lr = keras.optimizers.schedules.CosineDecay(
            cfg.learning_rate, decay_steps=max(1, cfg.epochs * steps_per_epoch), alpha=cfg.min_lr / cfg.learning_rate
        )
    return keras.optimizers.AdamW(learning_rate=lr, weight_decay=cfg.weight_decay)


def set_determinism(seed: int) -> None:
    """Same seed, same run: Python, NumPy, TensorFlow and Keras seeds; deterministic ops on a GPU.

    On CPU the seeds alone give bit-identical runs, with and without XLA
    (checked across processes, docs/performance.md). Op determinism is enabled
    only where a GPU is visible, which needs it: Keras silently turns
    ``jit_compile=True`` off while it is enabled (``model_supports_jit``).
    """
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    if tf.config.list_physical_devices("GPU"):
        tf.config.experimental.enable_op_determinism()


def build_compiled_model(
    cfg: TrainConfig, prep: Prepared, steps_per_epoch: int, plan: ExecutionPlan | None = None
) -> Any:
    """The compiled model, built inside the run's precision policy and distribution scope (``utils.devices``).

    ``plan`` defaults to ``--precision``/``--distribute`` checked against this
    machine; its record becomes ``prep.execution`` (the manifest's ``execution``).
    """
    plan = plan or execution_plan(cfg.precision, cfg.distribute)
    overrides = plan.compile_overrides()
    if overrides:
        logger.info("%d replicas: compiling with %s (utils.devices.ExecutionPlan.compile_overrides)", plan.replicas, overrides)
    elif cfg.jit_compile and not use_xla(cfg.epochs * steps_per_epoch, cfg.jit_min_steps):
        logger.info("XLA off: %d training steps < --jit_min_steps %d", cfg.epochs * steps_per_epoch, cfg.jit_min_steps)
        overrides = {"jit_compile": False}
    cfg = dataclasses.replace(cfg, **overrides)
    prep.execution = plan.record(cfg.batch_size, cfg.learning_rate, cfg.jit_compile, cfg.steps_per_execution)
    with plan.build_scope():
        return _build_and_compile(cfg, prep, steps_per_epoch)


def _build_and_compile(cfg: TrainConfig, prep: Prepared, steps_per_epoch: int) -> Any:
    import keras

    from models.cross_attention import build_model_for_data
    from utils.keras_metrics import compile_metrics

    data = prep.data
    # normalization statistics, output prior and (pooled_query) the ridge warm start, all from the training rows
    model = build_model_for_data(cfg.model, data.static, data.dynamic, data.labels, prep.train_idx)
    model.compile(
        optimizer=_optimizer(cfg, steps_per_epoch),
        loss=keras.losses.MeanSquaredError(),
        metrics=compile_metrics(),
        jit_compile=cfg.jit_compile,
        steps_per_execution=cfg.steps_per_execution,
    )
    return model


@dataclasses.dataclass
class TrainResult:
    history: History
    best_epoch: int
    best: dict[str, float]  # validation metrics at the best epoch (no val_ prefix)
    paths: dict[str, str]
    train_label_means: list[float]
    n_train: int
    n_val: int
    seconds: float


def _history_until(output_dir: Path, epochs: int) -> History:
    """The saved history of the finished epochs 1..epochs (a kill may have left one more)."""
    from utils.history import load_history

    path = output_dir / C.HISTORY_FILE
    if not path.is_file():
        return {}
    saved = load_history(path)
    keep = [i for i, e in enumerate(saved.get("epoch", [])) if e <= epochs]
    return {k: [v[i] for i in keep] for k, v in saved.items()}


def summarize(history: History, start: dict[str, float] | None = None) -> tuple[int, dict[str, float]]:
    """Best epoch (1-based, lowest val_loss) and its validation metrics.

    With ``start`` (the ``val_`` metrics of the model as built, :func:`score_start`),
    epoch 0 is a candidate too: it wins unless an epoch has a strictly lower
    ``val_loss``, exactly as :class:`utils.callbacks.BestModelCheckpoint` decides
    which weights it keeps.
    """
    val_loss = np.asarray(history["val_loss"], dtype="float64")
    i = int(np.nanargmin(val_loss))
    if start is not None and "val_loss" in start and keeps_start(float(val_loss[i]), start["val_loss"]):
        return 0, {k[4:]: v for k, v in start.items() if k.startswith("val_")}
    best = {k[4:]: history[k][i] for k in history if k.startswith("val_")}
    return int(history["epoch"][i]), best


def score_start(model: Any, val_ds: Any, out: Path, callbacks: list[Any]) -> dict[str, float]:
    """Score the model as built on the validation split ("epoch 0") and make it the first best checkpoint.

    The default model starts at ridge on the pooled training features
    (``models.linear_init``), so its start is already a baseline: if no epoch
    improves the validation loss on it, the run keeps it (best epoch 0) instead
    of the least bad trained epoch. The checkpoint holds the start, early
    stopping counts its patience against it (``baseline``) and the metrics go
    to ``start_validation.json`` (the figures draw them at epoch 0).
    """
    import keras

    from utils.callbacks import BestModelCheckpoint

    logs = model.evaluate(val_ds, verbose=0, return_dict=True)
    start = {f"val_{k}": float(v) for k, v in logs.items()}
    for cb in callbacks:
        if isinstance(cb, BestModelCheckpoint):
            cb.best = start["val_loss"]
            save_model(model, cb.path)
        elif isinstance(cb, keras.callbacks.EarlyStopping):
            cb.baseline = start["val_loss"]  # patience runs out unless an epoch beats the start
    write_json(out / C.START_VALIDATION_FILE, start)
    logger.info("Epoch 0 (the model as built): validation loss %.5f, R² %.4f", start["val_loss"], start.get("val_r_squared", float("nan")))
    return start


def epoch_from_step_counter(model: Any, steps_per_epoch: int) -> int:
    """The epoch Keras' optimizer has reached: finished steps // steps per epoch (0-based).

    Read when Keras opens the training iterator at an epoch start, when every
    step of the earlier epochs is done; ``--resume`` restores the counter.
    """
    return int(model.optimizer.iterations.numpy()) // steps_per_epoch


def run_training(cfg: TrainConfig, prep: Prepared | None = None) -> TrainResult:
    """Train, checkpoint and log one run; return its summary."""
    prep = prep or prepare(cfg)
    start = time.perf_counter()
    set_determinism(cfg.seed)
    from models.cross_attention import parameter_counts
    from utils import resume
    from utils.callbacks import InputsUnchanged, ResumeCheckpoint
    from utils.data import make_tf_dataset
    from utils.gc_pause import CollectBetweenEpochs
    from utils.run_folder import archive_previous_run
    from utils.run_logging import RunLogger

    out = cfg.output_dir
    watch = InputWatch(prep.data.paths)  # sizes and modification times at start
    if prep.resume_state is None:
        archive_previous_run(out, Path(cfg.output))
    out.mkdir(parents=True, exist_ok=True)
    if prep.split is not None:
        write_split_record(out, prep.split, prep.groups)
    train_batches = EpochBatches(prep.train_idx, cfg.batch_size, shuffle=True, seed=cfg.seed)
    steps = len(train_batches)
    model = build_compiled_model(cfg, prep, steps)
    warn_if_little_space(out, model)
    train_ds = make_tf_dataset(prep.data, train_batches, epoch=lambda: epoch_from_step_counter(model, steps))
    val_ds = make_tf_dataset(prep.data, EpochBatches(prep.val_idx, cfg.batch_size, shuffle=False, seed=cfg.seed))
    counts = parameter_counts(model)
    logger.info(
        "Training %s on %d samples, validating on %d; %d trainable / %d frozen parameters",
        model.name, len(prep.train_idx), len(prep.val_idx), counts["trainable"], counts["frozen"],
    )
    run_logger = RunLogger(cfg, prep, model, out)
    run_logger.start()
    history: History = {}
    callbacks = make_callbacks(cfg, history, run_log=run_logger.callbacks())
    callbacks.insert(0, InputsUnchanged(watch, functools.partial(resume_advice, out, "Restore the file and resume with")))
    initial_epoch, restored = 0, None
    if prep.resume_state is not None:
        initial_epoch = resume.restore(model, prep.resume_state, out)
        restored = prep.resume_state.get("callbacks", {})
        history.update(_history_until(out, initial_epoch))
        logger.info("Resuming after epoch %d from %s", initial_epoch, resume.state_path(out))
    save_state = functools.partial(resume.save_state, out, cfg.to_dict())
    callbacks.append(ResumeCheckpoint(list(callbacks), save_state, restored))
    collector = CollectBetweenEpochs()  # no garbage collection pauses at epoch starts (utils.gc_pause)
    callbacks.append(collector)
    if initial_epoch == 0:
        score_start(model, val_ds, out, callbacks)
    wandb_run = _start_wandb(cfg, prep, counts, run_logger.wandb_config()) if cfg.wandb else None
    if wandb_run is not None:
        from wandb.integration.keras import WandbMetricsLogger

        callbacks.append(WandbMetricsLogger(log_freq="epoch"))
    status = "failed"
    try:
        try:
            _fit(model, train_ds, val_ds, cfg, initial_epoch, callbacks, history)
            result = _finish_or_stop(cfg, prep, model, history, time.perf_counter() - start)
        except TrainingStopped as exc:
            status = STOP_STATUS.get(exc.exit_code, "stopped")
            raise
        status = "completed"
        resume.clear(out)
        run_logger.finish(status, result)
        if wandb_run is not None:
            _finish_wandb(wandb_run, result)
            wandb_run = None
        return result
    finally:
        collector.restore()
        if status != "completed":
            run_logger.finish(status)
        if wandb_run is not None:
            wandb_run.finish(exit_code=1)


def _fit(
    model: Any, train_ds: Any, val_ds: Any, cfg: TrainConfig, initial_epoch: int, callbacks: list[Any], history: History
) -> None:
    """``model.fit``; Ctrl-C, SIGTERM, a disk error and a NaN/Inf loss become :class:`TrainingStopped`."""
    from utils.console import progress_verbosity

    out = cfg.output_dir
    try:
        model.fit(
            train_ds,
            validation_data=val_ds,
            epochs=cfg.epochs,
            initial_epoch=initial_epoch,
            callbacks=callbacks,
            verbose=progress_verbosity(cfg.verbose),  # no progress bar into a file: one log line per epoch
            shuffle=False,
        )
    except KeyboardInterrupt as exc:
        from utils.resume import resume_command

        done = len(history.get("epoch", []))
        how, code = ("terminated (SIGTERM)", EXIT_TERMINATED) if isinstance(exc, Terminated) else ("interrupted", EXIT_INTERRUPTED)
        raise TrainingStopped(
            f"{how} during epoch {done + 1}; the {done} finished epoch(s), the best checkpoint "
            f"and the history are saved in {out}. Resume with: {resume_command()}",
            code,
        ) from None
    except OSError as exc:
        raise write_failure(exc, out) from None
    losses = history.get("loss", [])
    if losses and not math.isfinite(losses[-1]):
        kept = (
            f"the best checkpoint ({C.CHECKPOINT_FILE}) and the history so far are kept in {out}"
            if (out / C.CHECKPOINT_FILE).is_file()
            else f"no epoch ended with a finite loss, so there is no checkpoint; the history is in {out}"
        )
        raise TrainingStopped(
            f"the loss became {losses[-1]} in epoch {int(history['epoch'][-1])}; training stopped and "
            f"{kept}. Try a lower --learning_rate",
            EXIT_DIVERGED,
        )
    if not history or "val_loss" not in history:
        raise InputError("training stopped before the first epoch finished")


def resume_advice(out: Path, verb: str = "Make room (or lift the limit), then resume with") -> str:
    """What survives in ``out`` (the last resume state, the best checkpoint) and the command that resumes."""
    from utils.resume import read_state, resume_command, state_path

    try:
        state = read_state(out)
    except InputError:
        state = None
    kept = [f"epoch {state['epoch']}'s resume state ({state_path(out)})"] if state else []
    if (out / C.CHECKPOINT_FILE).is_file():
        kept.append(f"the best checkpoint ({out / C.CHECKPOINT_FILE})")
    survived = " and ".join(kept) + " are intact" if kept else f"no epoch finished, so {out} holds no checkpoint"
    return f"The last good checkpoint: {survived}. {verb}: {resume_command()}"


def write_failure(exc: OSError, out: Path) -> BaseException:
    """A disk error while writing becomes :class:`TrainingStopped` (exit 4) naming the file, cause and way back."""
    code = write_errno(exc)
    if code is None:
        return exc
    error = exc if isinstance(exc, OutputWriteError) else OutputWriteError(code, exc.filename or f"a file in {out}")
    return TrainingStopped(f"{error}. {resume_advice(out)}", EXIT_WRITE_FAILED)


def _finish_or_stop(cfg: TrainConfig, prep: Prepared, model: Any, history: History, seconds: float) -> TrainResult:
    """:func:`_finish_run`; a disk error while writing the final files stops with exit 4 (the resume state is kept)."""
    try:
        return _finish_run(cfg, prep, model, history, seconds)
    except OSError as exc:
        raise write_failure(exc, cfg.output_dir) from None


def _finish_run(cfg: TrainConfig, prep: Prepared, model: Any, history: History, seconds: float) -> TrainResult:
    """Load the best checkpoint, save the final model and the training summary."""
    out = cfg.output_dir
    if (out / C.CHECKPOINT_FILE).is_file():
        model.load_weights(out / C.CHECKPOINT_FILE)  # the best epoch, also across a resume
    paths = {
        "model": str(cfg.output),
        "checkpoint": str(out / C.CHECKPOINT_FILE),
        "history": str(out / C.HISTORY_FILE),
        "history_json": str(out / C.HISTORY_JSON_FILE),
        "tensorboard": str(out / C.TENSORBOARD_DIR),
        "summary": str(out / C.TRAINING_SUMMARY_FILE),
    }
    save_model(model, cfg.output)
    start = load_start_validation(out)
    best_epoch, best = summarize(history, start)
    result = TrainResult(
        history=history,
        best_epoch=best_epoch,
        best=best,
        paths=paths,
        train_label_means=[float(v) for v in prep.train_label_means],
        n_train=len(prep.train_idx),
        n_val=len(prep.val_idx),
        seconds=seconds,
    )
    write_json(out / C.TRAINING_SUMMARY_FILE, {
        "best_epoch": best_epoch,
        "epochs_run": len(history["epoch"]),
        "best_validation": {f"val_{k}": v for k, v in best.items()},  # history keys, as in the epoch logs
        "start_validation": start,  # epoch 0: the model as built (best_epoch 0 when no epoch beat it)
        "train_label_means": dict(zip(C.TRAITS, result.train_label_means)),
        "n_train": result.n_train,
        "n_val": result.n_val,
        # model build and every epoch, from run_training's start to the end of fit (not the final save);
        # run_manifest.json's "logged_seconds" is the run logs' own span
        "training_seconds": result.seconds,
        **split_summary(prep.split),
        "inputs": input_record(prep.data.paths, len(prep.data)),
        "config": cfg.to_dict(),
        "paths": paths,
    })
    return result


def _start_wandb(cfg: TrainConfig, prep: Prepared, counts: dict[str, int], extra: dict[str, Any]) -> Any:
    import wandb

    mode = cfg.wandb_mode
    if mode == "online" and not (os.environ.get("WANDB_API_KEY") or _wandb_logged_in()):
        raise InputError(
            "--wandb_mode online needs a W&B login: run `wandb login` (or set WANDB_API_KEY), "
            "or use --wandb_mode offline and `wandb sync` later"
        )
    return wandb.init(
        project=cfg.wandb_project,
        mode=mode,
        dir=str(cfg.output_dir),
        config={
            **cfg.to_dict(),
            "n_train": len(prep.train_idx),
            "n_val": len(prep.val_idx),
            "parameters": counts,
            "train_label_means": dict(zip(C.TRAITS, map(float, prep.train_label_means))),
            **extra,
        },
    )


def _wandb_logged_in() -> bool:
    netrc = Path.home() / ".netrc"
    return netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="ignore")


def _finish_wandb(run: Any, result: TrainResult) -> None:
    import wandb

    run.summary["best_epoch"] = result.best_epoch
    for key, value in result.best.items():
        run.summary[f"best_val_{key}"] = value
    artifact = wandb.Artifact(name=f"model-{run.id}", type="model")
    artifact.add_file(result.paths["model"])
    run.log_artifact(artifact)
    run.finish()


def format_summary(result: TrainResult) -> str:
    """The end-of-run summary shown on the console."""
    lines = [
        "",
        f"Best epoch {result.best_epoch} of {len(result.history['epoch'])} "
        f"({result.n_train} train / {result.n_val} validation samples, {result.seconds:.1f} s)"
        + (": no epoch improved on the model as built, which is kept" if result.best_epoch == 0 else ""),
        f"  validation loss (MSE) {result.best['loss']:.5f}   MAE {result.best['mae']:.4f}   "
        f"R² {result.best['r_squared']:.4f}",
        "  validation R² per trait: "
        + "  ".join(f"{t} {result.best[C.per_trait_metric_name(t, 'r_squared')]:.4f}" for t in C.TRAITS),
        "Files:",
    ]
    width = max(len(k) for k in result.paths)
    lines += [f"  {k.ljust(width)}  {v}" for k, v in result.paths.items()]
    return "\n".join(lines)


__all__ = ["TrainConfig", "TrainResult", "prepare", "run_training", "format_summary"]
