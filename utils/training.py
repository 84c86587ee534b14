"""The training run: validated data -> model -> Keras ``fit`` with stock callbacks.

:func:`run_training` is what ``scripts/train_personality_model.py`` calls. All
inputs are validated before anything is written. The output folder is the
folder of ``--output`` (the seed's ``results/``) and receives the files named
in :mod:`utils.constants`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from utils import constants as C
from utils.data import Dataset, EpochBatches, feature_statistics, label_means, load_dataset, split_indices
from utils.errors import EXIT_DIVERGED, EXIT_INTERRUPTED, InputError, TrainingStopped
from utils.history import History, save_history
from utils.io import check_writable, save_model, write_json

logger = logging.getLogger(__name__)

SCHEDULES = ("plateau", "cosine")
# Metrics the console progress bar shows; every metric still reaches the history.
PROGRESS_KEYS = frozenset(
    f"{prefix}{name}" for prefix in ("", "val_") for name in ("loss", "mae", "r_squared")
) | {"learning_rate"}


@dataclasses.dataclass
class TrainConfig:
    """Every setting of a training run (the resolved command line)."""

    static_features: str
    dynamic_features: str
    labels: str
    output: str = f"{C.DEFAULT_RESULTS_DIR}/{C.MODEL_FILE}"
    val_split: float = 0.2
    batch_size: int = 16
    epochs: int = 50
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    seed: int = 42
    patience: int = 10  # early stopping, epochs without val_loss improvement
    schedule: str = "plateau"  # "plateau": ReduceLROnPlateau; "cosine": CosineDecay
    lr_factor: float = 0.5  # plateau: multiply the learning rate by this
    lr_patience: int = 3  # plateau: epochs without improvement before a cut
    min_lr: float = 1e-6
    # execution (see docs/performance.md)
    jit_compile: bool = True  # XLA: ~4 s more compile in epoch 1, then epochs ~30-40% faster on 2 CPU cores
    steps_per_execution: int = 8  # training steps per graph call: 1.08x of bare Keras instead of 1.28x (docs/performance.md)
    # model (see models.cross_attention.ModelConfig)
    width: int = 64
    num_heads: int = 4
    depth: int = 1
    dropout: float = 0.1
    ff_multiplier: int = 2
    head_units: int = 64
    pooled_tokens: int = 8
    fusion: str = "cross_attention"
    # logging
    histogram_freq: int = 10  # weight histograms every k epochs (each write costs ~0.3 s on CPU)
    batch_log_frequency: int = 10  # batch records every k training steps (0: off)
    verbose: int = 1  # Keras progress bar: 0 silent, 1 bar, 2 one line per epoch
    wandb: bool = False
    wandb_project: str = "personality-cross-attention"
    wandb_mode: str = "offline"
    resume: bool = False  # continue the run in the output folder from its last finished epoch

    @property
    def output_dir(self) -> Path:
        return Path(self.output).parent

    def model_config(self) -> Any:
        from models.cross_attention import ModelConfig

        return ModelConfig(**{f.name: getattr(self, f.name) for f in dataclasses.fields(ModelConfig)})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class Prepared:
    """Validated inputs of a run: the data, the split and the baseline."""

    data: Dataset
    train_idx: np.ndarray
    val_idx: np.ndarray
    train_label_means: np.ndarray
    resume_state: dict[str, Any] | None = None  # set when --resume found a run to continue


def prepare(cfg: TrainConfig) -> Prepared:
    """Validate every input and setting; raise InputError before anything is written."""
    if cfg.schedule not in SCHEDULES:
        raise InputError(f"expected --schedule to be one of {SCHEDULES}, found {cfg.schedule!r}")
    try:
        cfg.model_config()
    except ValueError as exc:
        raise InputError(f"invalid model settings: {exc}") from None
    if Path(cfg.output).suffix not in (".h5", ".keras"):
        raise InputError("expected --output to end in .h5 or .keras", cfg.output)
    data = load_dataset(cfg.static_features, cfg.dynamic_features, cfg.labels)
    train_idx, val_idx = split_indices(len(data), cfg.val_split, cfg.seed, cfg.labels)
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
    return Prepared(data, train_idx, val_idx, label_means(data.labels, train_idx), resume_state)


def make_callbacks(
    cfg: TrainConfig, batches: list[EpochBatches], history: History, leading: list[Any] | None = None
) -> list[Any]:
    """The Keras callbacks of a run, in the order they must run.

    ``leading`` callbacks run right after the epoch context, before the history
    writer, so keys they add to ``logs`` reach every later callback.
    """
    import keras

    out = cfg.output_dir

    class EpochContext(keras.callbacks.Callback):
        """First callback: epoch-seeded data order, and the learning rate in the logs."""

        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            for b in batches:
                b.epoch = epoch

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            if logs is not None:
                logs["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))

    class HistoryWriter(keras.callbacks.Callback):
        """Append each epoch's logs and rewrite both history files atomically."""

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            row = {"epoch": float(epoch + 1), **{k: float(v) for k, v in (logs or {}).items()}}
            done = len(history.get("epoch", []))
            for key in row:
                history.setdefault(key, [math.nan] * done)  # a metric first seen now
            for key, values in history.items():
                values.append(row.get(key, math.nan))
            save_history(history, out / C.HISTORY_FILE, out / C.HISTORY_JSON_FILE)

    class BestModelCheckpoint(keras.callbacks.Callback):
        """Save the full model whenever ``val_loss`` improves, atomically (seed name, loadable)."""

        def __init__(self) -> None:
            super().__init__()
            self.best = math.inf

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            value = (logs or {}).get("val_loss", math.inf)
            if value < self.best:
                self.best = value
                save_model(self.model, out / C.CHECKPOINT_FILE)

    class CompactProgbar(keras.callbacks.ProgbarLogger):
        """Keras' progress bar, showing the headline metrics only (not all 36)."""

        def _keep(self, logs: dict | None) -> dict:
            return {k: v for k, v in (logs or {}).items() if k in PROGRESS_KEYS}

        def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
            super().on_train_batch_end(batch, self._keep(logs))

        def on_test_batch_end(self, batch: int, logs: dict | None = None) -> None:
            super().on_test_batch_end(batch, self._keep(logs))

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            super().on_epoch_end(epoch, self._keep(logs))

        def on_test_end(self, logs: dict | None = None) -> None:
            super().on_test_end(self._keep(logs))

    callbacks: list[Any] = [
        EpochContext(),
        *(leading or []),
        HistoryWriter(),
        keras.callbacks.TerminateOnNaN(),
        CompactProgbar(),
        BestModelCheckpoint(),
        keras.callbacks.EarlyStopping(
            monitor="val_loss", mode="min", patience=cfg.patience, restore_best_weights=True, verbose=1
        ),
    ]
    if cfg.schedule == "plateau":
        callbacks.append(
            keras.callbacks.ReduceLROnPlateau(
                monitor="val_loss",
                mode="min",
                factor=cfg.lr_factor,
                patience=cfg.lr_patience,
                min_lr=cfg.min_lr,
                verbose=1,
            )
        )
    class EpochTensorBoard(keras.callbacks.TensorBoard):
        """TensorBoard writing epoch summaries only: Keras' per-step hook makes one
        ``summary.scalar`` call per log key that ``update_freq="epoch"`` never records
        (about 1.5 ms per step on 2 CPU cores, docs/performance.md)."""

        def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
            pass

    callbacks.append(
        EpochTensorBoard(log_dir=str(out / C.TENSORBOARD_DIR), histogram_freq=cfg.histogram_freq, write_graph=False)
    )
    return callbacks


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


def build_compiled_model(cfg: TrainConfig, prep: Prepared, steps_per_epoch: int) -> Any:
    import keras

    from models.cross_attention import build_model
    from utils.metrics import compile_metrics

    data = prep.data
    model = build_model(
        cfg.model_config(),
        data.static_shape,
        data.dynamic_shape,
        static_stats=feature_statistics(data.static, prep.train_idx),
        dynamic_stats=feature_statistics(data.dynamic, prep.train_idx),
        output_prior=prep.train_label_means,
    )
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


def summarize(history: History) -> tuple[int, dict[str, float]]:
    """Best epoch (1-based, lowest val_loss) and its validation metrics."""
    val_loss = np.asarray(history["val_loss"], dtype="float64")
    i = int(np.nanargmin(val_loss))
    best = {k[4:]: history[k][i] for k in history if k.startswith("val_")}
    return int(history["epoch"][i]), best


def run_training(cfg: TrainConfig, prep: Prepared | None = None) -> TrainResult:
    """Train, checkpoint and log one run; return its summary."""
    prep = prep or prepare(cfg)
    start = time.perf_counter()
    set_determinism(cfg.seed)
    from utils.data import make_tf_dataset

    out = cfg.output_dir
    if prep.resume_state is None:
        from utils.run_folder import archive_previous_run

        archive_previous_run(out, Path(cfg.output))
    out.mkdir(parents=True, exist_ok=True)
    train_batches = EpochBatches(prep.train_idx, cfg.batch_size, shuffle=True, seed=cfg.seed)
    val_batches = EpochBatches(prep.val_idx, cfg.batch_size, shuffle=False, seed=cfg.seed)
    train_ds = make_tf_dataset(prep.data, train_batches)
    val_ds = make_tf_dataset(prep.data, val_batches)
    model = build_compiled_model(cfg, prep, len(train_batches))

    from models.cross_attention import parameter_counts

    counts = parameter_counts(model)
    logger.info(
        "Training %s on %d samples, validating on %d; %d trainable / %d frozen parameters",
        model.name, len(prep.train_idx), len(prep.val_idx), counts["trainable"], counts["frozen"],
    )

    from utils.run_logging import RunLogger

    run_logger = RunLogger(cfg, prep, model, out)
    run_logger.start()
    from utils import resume

    history: History = {}
    callbacks = make_callbacks(
        cfg, [train_batches, val_batches], history, leading=run_logger.callbacks(train_batches, val_batches)
    )
    initial_epoch = 0
    if prep.resume_state is not None:
        initial_epoch = resume.restore(model, prep.resume_state, out)
        history.update(_history_until(out, initial_epoch))
        logger.info("Resuming after epoch %d from %s", initial_epoch, resume.state_path(out))
    callbacks.append(resume.make_callback(out, cfg.to_dict(), callbacks, prep.resume_state))
    wandb_run = _start_wandb(cfg, prep, counts, run_logger.wandb_config()) if cfg.wandb else None
    if wandb_run is not None:
        from wandb.integration.keras import WandbMetricsLogger

        callbacks.append(WandbMetricsLogger(log_freq="epoch"))
    status = "failed"
    try:
        try:
            model.fit(
                train_ds,
                validation_data=val_ds,
                epochs=cfg.epochs,
                initial_epoch=initial_epoch,
                callbacks=callbacks,
                verbose=cfg.verbose,
                shuffle=False,
            )
        except KeyboardInterrupt:
            status = "interrupted"
            done = len(history.get("epoch", []))
            raise TrainingStopped(
                f"interrupted during epoch {done + 1}; the {done} finished epoch(s), the best checkpoint "
                f"and the history are saved in {out}. Resume with the same command plus --resume",
                EXIT_INTERRUPTED,
            ) from None
        losses = history.get("loss", [])
        if losses and not math.isfinite(losses[-1]):
            status = "diverged"
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
        save_model(model, cfg.output)  # early stopping restored the best weights
        best_epoch, best = summarize(history)
        result = TrainResult(
            history=history,
            best_epoch=best_epoch,
            best=best,
            paths=paths,
            train_label_means=[float(v) for v in prep.train_label_means],
            n_train=len(prep.train_idx),
            n_val=len(prep.val_idx),
            seconds=time.perf_counter() - start,
        )
        write_json(out / C.TRAINING_SUMMARY_FILE, {
            "best_epoch": best_epoch,
            "epochs_run": len(history["epoch"]),
            "best_validation": best,
            "train_label_means": dict(zip(C.TRAITS, result.train_label_means)),
            "n_train": result.n_train,
            "n_val": result.n_val,
            "seconds": result.seconds,
            "config": cfg.to_dict(),
            "paths": paths,
        })
        status = "completed"
        resume.clear(out)
        run_logger.finish(status, result)
        if wandb_run is not None:
            _finish_wandb(wandb_run, result)
            wandb_run = None
        return result
    finally:
        if status != "completed":
            run_logger.finish(status)
        if wandb_run is not None:
            wandb_run.finish(exit_code=1)


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
        f"({result.n_train} train / {result.n_val} validation samples, {result.seconds:.1f} s)",
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
