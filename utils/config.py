"""The settings of each script: one dataclass per script, the one source of its flags.

Every field declared with :func:`utils.cli.option` is a command-line flag of
the same name, with the field's default and help (:func:`utils.cli.add_arguments`);
the model's flags come from :class:`models.config.ModelConfig` through
:func:`utils.cli.nested`. To add a setting, add one field here: the flag,
its ``--help`` line and the value in ``training_summary.json`` follow.

* :class:`TrainConfig`: ``scripts/train_personality_model.py``
* :class:`AnalysisConfig`: ``scripts/analyze_model_predictions.py``
* :class:`VisualizeConfig`: ``scripts/visualize_training_metrics.py``

No TensorFlow and no NumPy here (the scripts build their parsers from these
classes before anything heavy is imported).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from models.config import ModelConfig
from utils import constants as C
from utils.cli import (
    from_flat,
    nested,
    non_negative_int,
    open_fraction,
    option,
    positive_float,
    positive_int,
    to_flat,
)
from utils.devices import DISTRIBUTE_MODES, JIT_MIN_STEPS, PRECISIONS
from utils.errors import InputError

SCHEDULES: tuple[str, ...] = ("plateau", "cosine")
WANDB_MODES: tuple[str, ...] = ("offline", "online", "disabled")

# --help sections of the training script
TRAINING, MODEL, LOGGING = "training", "model", "logging"


@dataclasses.dataclass
class InputFiles:
    """The input files and the clip ids/groups: the same flags for training and analysis."""

    static_features: str = option(
        f"{C.DEFAULT_DATA_DIR}/{C.STATIC_FEATURES_FILE}",
        "static (appearance) features .npy: (N, D) pooled vectors or (N, T, D) tokens",
    )
    dynamic_features: str = option(
        f"{C.DEFAULT_DATA_DIR}/{C.DYNAMIC_FEATURES_FILE}",
        "dynamic (motion) features .npy: (N, D) pooled vectors or (N, T, D) tokens",
    )
    labels: str = option(f"{C.DEFAULT_DATA_DIR}/{C.LABELS_FILE}", "OCEAN labels .npy of shape (N, 5) in [0, 1]")
    # Clip ids and groups (utils.ids), also read by cross-validation.
    ids: str | None = option(
        None,
        "clip names, one per row in row order: a text file with one name per line, or a .npy of strings; "
        "they go into every per-clip output and, with --group_pattern, give the groups",
    )
    groups: str | None = option(
        None,
        "one group label per row (text or .npy), e.g. the person; default: taken from --ids with --group_pattern",
    )
    group_pattern: str = option(
        C.DEFAULT_GROUP_PATTERN,
        "regex whose first group is a clip's group, applied to --ids when --groups is not given "
        "(the default takes the part before the first dot: the YouTube id of First Impressions)",
    )


@dataclasses.dataclass
class TrainConfig(InputFiles):
    """Every setting of a training run (the resolved command line); the input flags are :class:`InputFiles`'s."""

    output: str = option(
        f"{C.DEFAULT_RESULTS_DIR}/{C.MODEL_FILE}",
        "trained model (.h5 or .keras); every other run file goes into its folder. A folder that "
        "holds an earlier run is never mixed with the new one: the earlier run's files are moved "
        f"into {C.ARCHIVE_DIR}/<timestamp>/ first (nothing is deleted)",
    )
    val_split: float = option(0.2, "validation share of the samples, in (0, 1)", type=open_fraction, group=TRAINING)
    split: str = option(
        "group",
        "train/validation split: group puts no group on both sides (without --ids/--groups every clip is its "
        "own group: the seeded random split); random splits clips even when groups are known (a leak that "
        "training_summary.json counts)",
        choices=C.SPLIT_MODES,
        group=TRAINING,
    )
    train_rows: str | None = option(
        None,
        "explicit training rows: .npy of row indices (with --val_rows; replaces --split and --val_split; "
        "cross_validate.py uses it)",
        group=TRAINING,
    )
    val_rows: str | None = option(None, "explicit validation rows: .npy of row indices (with --train_rows)", group=TRAINING)
    batch_size: int = option(16, "samples per batch", type=positive_int, group=TRAINING)
    epochs: int = option(50, "maximum number of epochs", type=positive_int, group=TRAINING)
    learning_rate: float = option(1e-3, "initial AdamW learning rate", type=positive_float, group=TRAINING)
    weight_decay: float = option(1e-4, "AdamW decoupled weight decay", group=TRAINING)
    seed: int = option(42, "seed of the split, data order, initialization and dropout", group=TRAINING)
    patience: int = option(
        10, "early stopping: epochs without val_loss improvement", type=positive_int, group=TRAINING
    )
    schedule: str = option(
        "plateau",
        "learning-rate schedule: reduce on a val_loss plateau, or cosine decay over all epochs",
        choices=SCHEDULES,
        group=TRAINING,
    )
    lr_factor: float = option(0.5, "plateau: factor applied at each cut", type=positive_float, group=TRAINING)
    lr_patience: int = option(
        3, "plateau: epochs without improvement before a cut", type=positive_int, group=TRAINING
    )
    min_lr: float = option(1e-6, "lower bound of the learning rate", type=positive_float, group=TRAINING)
    # execution (measured in docs/performance.md)
    jit_compile: bool = option(
        True, "compile the training step with XLA for runs of at least --jit_min_steps steps "
        "(--no-jit_compile: never)", group=TRAINING
    )
    jit_min_steps: int = option(
        JIT_MIN_STEPS,
        "XLA only when the run has at least this many training steps (--epochs x steps per epoch): "
        "compiling costs seconds that a shorter run does not earn back (docs/performance.md); 0: always",
        type=non_negative_int,
        group=TRAINING,
    )
    steps_per_execution: int = option(
        8,
        "training steps per graph call: fewer Python round trips, but batch-level logs and the NaN check "
        "then see every k-th step",
        type=positive_int,
        group=TRAINING,
    )
    precision: str = option(
        "float32",
        "compute precision (Keras mixed precision; the output layer, loss and metrics stay float32): "
        "mixed_bfloat16/mixed_float16 pay only on GPUs for wide models and large batches "
        "(docs/performance.md); mixed_float16 needs a GPU",
        choices=PRECISIONS,
        group=TRAINING,
    )
    distribute: str = option(
        "auto",
        "devices: auto = mirrored when more than one GPU is visible, else none; mirrored = all visible GPUs "
        "(--batch_size is the global batch, split over them); multi_worker is refused (docs/performance.md)",
        choices=DISTRIBUTE_MODES,
        group=TRAINING,
    )
    model: ModelConfig = nested(ModelConfig, MODEL)
    histogram_freq: int = option(
        10,
        "TensorBoard weight histograms every k epochs (0: off; each costs ~0.3 s)",
        type=non_negative_int,
        group=LOGGING,
    )
    batch_log_frequency: int = option(
        10,
        "write loss, per-trait errors, learning rate and time every k training batches (0: off)",
        type=non_negative_int,
        group=LOGGING,
    )
    verbose: int = option(
        1,
        "console: 0 no progress bar, 1 a progress bar on a terminal (none when stdout is a file), "
        "2 Keras' line per epoch instead, and TensorFlow's start-up messages (the run log's line per epoch: always)",
        choices=(0, 1, 2),
        group=LOGGING,
    )
    wandb: bool = option(False, "log config, metrics and the final model to Weights & Biases", group=LOGGING)
    wandb_project: str = option("personality-cross-attention", "W&B project name", group=LOGGING)
    wandb_mode: str = option(
        "offline",
        "W&B mode: offline writes a local run for `wandb sync`; online needs `wandb login`",
        choices=WANDB_MODES,
        group=LOGGING,
    )
    resume: bool = option(
        False,
        "continue the interrupted run in the --output folder from its last finished epoch "
        "(same settings; --epochs may be raised)",
    )

    @property
    def output_dir(self) -> Path:
        return Path(self.output).parent

    def to_dict(self) -> dict[str, Any]:
        """Flat ``flag name -> value`` (the ``config`` of training_summary.json and the resume state)."""
        return to_flat(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TrainConfig:
        """The inverse of :meth:`to_dict`; invalid model settings raise :class:`InputError`."""
        try:
            return from_flat(cls, values)
        except ValueError as exc:  # ModelConfig's checks (e.g. --num_heads must divide --width)
            raise InputError(f"invalid model settings: {exc}") from None


@dataclasses.dataclass
class AnalysisConfig(InputFiles):
    """The resolved command line of an analysis run; the input flags are :class:`InputFiles`'s."""

    model: str = option(
        f"{C.DEFAULT_RESULTS_DIR}/{C.MODEL_FILE}",
        f"trained model (.h5 or .keras); a {C.TRAINING_SUMMARY_FILE} beside it supplies the "
        "baseline's training-label means and the split",
    )
    output: str = option(
        f"{C.DEFAULT_RESULTS_DIR}/{C.PREDICTION_ANALYSIS_DIR}",
        f"folder for {C.METRICS_FILE}, {C.PREDICTIONS_CSV}/.npy and the figures",
    )
    train_labels: str | None = option(
        None,
        "labels .npy whose per-trait mean is the baseline (default: the means recorded in "
        f"{C.TRAINING_SUMMARY_FILE}, else the evaluated labels' mean)",
    )
    split: str = option(
        "auto",
        "samples to evaluate: all, or the validation/training part of the training run's split "
        f"(rebuilt from val_split and seed in {C.TRAINING_SUMMARY_FILE}); auto = the validation part "
        "when the files are the ones the model was trained on (held-out numbers), else all",
        choices=C.ANALYSIS_SPLITS,
    )
    batch_size: int = option(64, "samples per prediction batch", type=positive_int)
    attention_samples: int = option(
        8,
        "evaluated samples (the first ones) whose attention maps are averaged and plotted; 0: none",
        type=non_negative_int,
    )
    verbose: int = option(1, "progress bar: 0 off, 1 on", choices=(0, 1))


@dataclasses.dataclass
class VisualizeConfig:
    """The resolved command line of ``visualize_training_metrics.py``."""

    history: str = option(
        f"{C.DEFAULT_RESULTS_DIR}/{C.HISTORY_FILE}",
        f"training history: {C.HISTORY_FILE} (structured) or {C.HISTORY_JSON_FILE}",
    )
    output: str = option(
        f"{C.DEFAULT_RESULTS_DIR}/{C.VISUALIZATION_DIR}",
        "folder the figures are written to (created if missing)",
    )
    trust_pickle: bool = option(
        False,
        "read a pickled history .npy written by older versions (runs code from the file: "
        "only for files you trust)",
    )


@dataclasses.dataclass
class PredictionConfig:
    """The resolved command line of ``predict_personality.py`` (no labels)."""

    model: str = option(
        f"{C.DEFAULT_RESULTS_DIR}/{C.MODEL_FILE}", "trained model (.h5 or .keras) written by train_personality_model.py"
    )
    static_features: str = option(
        f"{C.DEFAULT_DATA_DIR}/{C.STATIC_FEATURES_FILE}",
        "static (appearance) features .npy: (N, D) or (N, T, D), the per-sample shape the model was trained on",
    )
    dynamic_features: str = option(
        f"{C.DEFAULT_DATA_DIR}/{C.DYNAMIC_FEATURES_FILE}",
        "dynamic (motion) features .npy: (N, D) or (N, T, D), the per-sample shape the model was trained on",
    )
    ids: str | None = option(
        None,
        "clip names, one per feature row: a text file with one name per line or a .npy of strings "
        "(without it the id is the row index)",
    )
    output: str = option(
        f"{C.DEFAULT_RESULTS_DIR}/{C.PREDICTIONS_CSV}",
        f"predictions .csv; the .npy and {C.PREDICTIONS_INFO_SUFFIX} of the same stem are written beside it",
    )
    batch_size: int = option(64, "clips per prediction batch", type=positive_int)
    verbose: int = option(
        1, "progress bar: 0 off, 1 on when the console is a terminal or the input is long", choices=(0, 1)
    )


@dataclasses.dataclass
class ExportConfig:
    """The resolved command line of ``export_model.py``."""

    model: str = option(
        f"{C.DEFAULT_RESULTS_DIR}/{C.MODEL_FILE}", "trained model (.h5 or .keras) written by train_personality_model.py"
    )
    output: str = option(
        f"{C.DEFAULT_RESULTS_DIR}/{C.SAVED_MODEL_DIR}/1",
        "SavedModel folder; TensorFlow Serving reads <base>/<version>/, so end it in a version number",
    )
    overwrite: bool = option(
        False, "replace an existing SavedModel folder (swapped in once the new export is checked)"
    )


# scripts/tune_hyperparameters.py (utils.tuning): Keras Tuner's tuners, the objectives (validation metrics,
# the toolkit's names), the process roles of a distributed search, and the settings that can be searched
# (training and model flags of the same names; their ranges are in utils.tuning.SEARCH_SPACE).
TUNERS: tuple[str, ...] = ("random", "bayesian", "hyperband")
TUNE_OBJECTIVES: tuple[str, ...] = ("r_squared", "loss")
TUNE_ROLES: tuple[str, ...] = ("local", "chief", "worker")
TUNABLE: tuple[str, ...] = (
    "learning_rate", "weight_decay", "dropout", "fused_dropout", "head_units", "width", "attention_keys", "pooled_width",
    "bilinear_rank", "batch_size",
)
POOLED_QUERY_ONLY: frozenset[str] = frozenset({"attention_keys", "pooled_width", "bilinear_rank"})  # settings of that fusion alone


@dataclasses.dataclass
class TuneConfig(InputFiles):
    """The resolved command line of ``tune_hyperparameters.py`` (its own flags; the training flags pass through)."""

    output_dir: str = option(
        f"{C.DEFAULT_RESULTS_DIR}/hyperparameter_search",
        f"folder for Keras Tuner's project ({C.TUNE_PROJECT_DIR}/), {C.TUNE_BEST_FILE}, {C.TUNE_TRIALS_FILE} "
        f"and {C.TUNE_COMMAND_FILE}; an earlier search there is continued (see --overwrite)",
    )
    train_rows: str | None = option(
        None,
        "the training rows the search may use: .npy of row indices (e.g. the training folds of an outer "
        "cross-validation); default: all rows. Keep your test rows out: the search sees every row it is given",
    )
    val_split: float = option(
        0.2,
        "share of the training rows held out to score each trial (group-disjoint when --ids/--groups are given)",
        type=open_fraction,
    )
    tuner: str = option(
        "random",
        "Keras Tuner's search algorithm: random search, Bayesian optimization (Gaussian process) or Hyperband",
        choices=TUNERS,
    )
    max_trials: int = option(
        20, "settings to try (random, bayesian; hyperband sizes its brackets from --epochs)", type=positive_int
    )
    executions_per_trial: int = option(
        1, "models trained per setting from new initializations; the trial's score is their mean", type=positive_int
    )
    epochs: int = option(
        30, "maximum epochs per model (early stopping after --patience epochs without improvement)", type=positive_int
    )
    objective: str = option(
        "r_squared",
        "validation metric a trial is scored by: r_squared (mean over the traits, maximized) or loss (MSE, minimized)",
        choices=TUNE_OBJECTIVES,
    )
    search: str = option(
        "all",
        f"comma-separated settings to search, of: {', '.join(TUNABLE)} (attention_keys, pooled_width and "
        "bilinear_rank only with the pooled_query fusion); the others keep the values of their training flags",
    )
    seed: int = option(42, "seed of the inner split, the search algorithm and the models")
    overwrite: bool = option(
        False, f"start a new search, deleting {C.TUNE_PROJECT_DIR}/ of an earlier one in --output_dir (not for workers)"
    )
    oracle: str | None = option(
        None,
        "distributed search (Keras Tuner's chief oracle over gRPC): HOST:PORT the chief listens on and the "
        "workers connect to; with --role",
    )
    role: str = option(
        "local",
        "local: one process runs the whole search; chief: serves the oracle at --oracle (runs no trial) and writes "
        "the results when the workers are done; worker: runs the trials the chief hands out",
        choices=TUNE_ROLES,
    )
    worker_id: str | None = option(
        None, "name of this worker in a distributed search, unique per worker (default: <host>-<process id>)"
    )
    verbose: int = option(
        1, "console: 0 quiet, 1 Keras Tuner's summary per trial, 2 also one line per epoch", choices=(0, 1, 2)
    )


__all__ = [
    "InputFiles",
    "TrainConfig",
    "AnalysisConfig",
    "VisualizeConfig",
    "PredictionConfig",
    "ExportConfig",
    "TuneConfig",
    "SCHEDULES",
    "WANDB_MODES",
]
