"""Single source of truth for names the whole toolkit shares.

The trait order, the metric names that make up the history keys, and the
file names a training run writes all live here and nowhere else.
"""

from __future__ import annotations

# The Big Five in the fixed OCEAN order used by every array with a trait axis.
TRAITS: tuple[str, ...] = (
    "openness",
    "conscientiousness",
    "extraversion",
    "agreeableness",
    "neuroticism",
)
NUM_TRAITS = len(TRAITS)
TRAIT_ABBREVIATIONS: tuple[str, ...] = ("O", "C", "E", "A", "N")

# Overall (trait-averaged) metrics compiled into the model, besides the loss.
OVERALL_METRICS: tuple[str, ...] = ("mae", "mse", "r_squared")
# Per-trait metrics: one scalar Keras metric per (trait, statistic).
PER_TRAIT_STATISTICS: tuple[str, ...] = ("mae", "mse", "r_squared")


def per_trait_metric_name(trait: str, statistic: str) -> str:
    """History key of one per-trait metric, e.g. ``openness_r_squared``."""
    return f"{trait}_{statistic}"


def history_metric_names() -> list[str]:
    """Training-side history keys in a stable order (``val_`` twins excluded)."""
    names = ["loss", *OVERALL_METRICS]
    names += [per_trait_metric_name(t, s) for t in TRAITS for s in PER_TRAIT_STATISTICS]
    return names


# Files a training run writes into its output folder (the seed's names).
MODEL_FILE = "personality_model_trained.h5"
CHECKPOINT_FILE = "checkpoint_weights.h5"
HISTORY_FILE = "training_history.npy"
HISTORY_JSON_FILE = "training_history.json"
TENSORBOARD_DIR = "tensorboard_logs"
TRAINING_SUMMARY_FILE = "training_summary.json"
# validation metrics of the model as built, before epoch 1 ("epoch 0"; utils.training.score_start)
START_VALIDATION_FILE = "start_validation.json"

MODEL_SUFFIXES: tuple[str, ...] = (".h5", ".keras")  # formats a trained model is saved in

# Run logs (utils.run_logging; schemas in docs/logging.md).
MANIFEST_FILE = "run_manifest.json"
TRAINING_LOG_FILE = "training.log"
EPOCH_LOG_FILE = "epoch_log.jsonl"
BATCH_LOG_FILE = "batch_log.jsonl"
TIMING_FILE = "timing.json"
LR_CHANGES_FILE = "lr_changes.json"
ATTENTION_ENTROPY_FILE = "attention_entropy.jsonl"
# run folder under TENSORBOARD_DIR of the attention entropy: measured on validation clips, filed with them
ATTENTION_TENSORBOARD_RUN = "validation"
RUN_LOG_FILES: tuple[str, ...] = (
    MANIFEST_FILE,
    TRAINING_LOG_FILE,
    EPOCH_LOG_FILE,
    BATCH_LOG_FILE,
    TIMING_FILE,
    LR_CHANGES_FILE,
    ATTENTION_ENTROPY_FILE,
)
# Crash-safe resume state (utils.resume): RESUME_DIR/RESUME_STATE_FILE points at RESUME_DIR/epoch-<k>.weights.h5.
RESUME_DIR = "resume"
RESUME_STATE_FILE = "state.json"
RESUME_WEIGHTS_PATTERN = "epoch-{epoch:05d}.weights.h5"
RESUME_WEIGHTS_GLOB = "epoch-*.weights.h5"
# An earlier run in an output folder is moved to ARCHIVE_DIR/<timestamp>/ (utils.run_folder).
ARCHIVE_DIR = "previous_runs"
WANDB_DIR = "wandb"  # wandb's own folder in the output folder

# Figures visualize_training_metrics.py draws (utils.plotting, utils.run_plots).
CURVE_FIGURE_PATTERN = "{metric}.png"  # loss.png, mae.png, mse.png, r_squared.png
PER_TRAIT_R2_FIGURE = "per_trait_r_squared.png"
R2_COMPARISON_FIGURE = "r2_comparison.png"
METRIC_CORRELATION_FIGURE = "metric_correlation.png"
LR_FIGURE = "learning_rate.png"
EPOCH_TIME_FIGURE = "epoch_time.png"
BATCH_LOSS_FIGURE = "batch_loss.png"
ATTENTION_ENTROPY_FIGURE = "attention_entropy.png"
DASHBOARD_FIGURE = "dashboard.png"
# Files analyze_model_predictions.py writes (utils.analysis, utils.plotting).
METRICS_FILE = "metrics.json"
SCATTER_FIGURE_PATTERN = "{trait}_scatter.png"
RESIDUALS_FIGURE = "residuals.png"
ERROR_DISTRIBUTION_FIGURE = "error_distribution.png"
TRAIT_CORRELATIONS_FIGURE = "trait_correlations.png"
MODEL_VS_BASELINE_FIGURE = "model_vs_baseline.png"
ATTENTION_MAPS_FIGURE = "attention_maps.png"
ATTENTION_HEADS_FIGURE = "attention_entropy_per_head.png"

# Default locations used when a script runs with no arguments.
DEFAULT_DATA_DIR = "data_sample"
DEFAULT_RESULTS_DIR = "results"
STATIC_FEATURES_FILE = "static_features.npy"
DYNAMIC_FEATURES_FILE = "dynamic_features.npy"
LABELS_FILE = "labels.npy"
VISUALIZATION_DIR = "training_visualizations"
PREDICTION_ANALYSIS_DIR = "prediction_analysis"
# Samples analyze_model_predictions.py evaluates: "auto" = the validation split
# when the files are the training run's own, else all of them.
ANALYSIS_SPLITS: tuple[str, ...] = ("auto", "all", "validation", "train")

# Fusion variants of the model: the default (first), the seed's bidirectional
# cross-attention and the ablations domain.md recommends.
FUSION_MODES: tuple[str, ...] = (
    "pooled_query",  # the default: pooled static query over dynamic segments (position keys) + pooled skip
    "cross_attention",  # bidirectional token cross-attention (MulT-style, the seed's model)
    "static_to_dynamic",  # only static queries attend to dynamic tokens
    "dynamic_to_static",  # only dynamic queries attend to static tokens
    "concat",  # no attention: pooled projections concatenated
    "static",  # static stream only
    "dynamic",  # dynamic stream only
)
ATTENTION_DIRECTIONS: tuple[str, ...] = ("static_to_dynamic", "dynamic_to_static")
# Keys of the pooled_query attention: learned position codes, content projections, or both.
ATTENTION_KEYS: tuple[str, ...] = ("position", "content", "position+content")

# The split a training run used, beside its model (utils.splits, utils.heldout):
# row indices (.npy, int64) and, when groups are known, the training groups (one per line).
TRAINING_ROWS_FILE = "training_rows.npy"
VALIDATION_ROWS_FILE = "validation_rows.npy"
TRAINING_GROUPS_FILE = "training_groups.txt"
SPLIT_RECORD_FILES: tuple[str, ...] = (TRAINING_ROWS_FILE, VALIDATION_ROWS_FILE, TRAINING_GROUPS_FILE)

# Everything a training run owns in its output folder; see utils.run_folder.
RUN_OUTPUT_NAMES: tuple[str, ...] = (
    MODEL_FILE,
    CHECKPOINT_FILE,
    HISTORY_FILE,
    HISTORY_JSON_FILE,
    TENSORBOARD_DIR,
    TRAINING_SUMMARY_FILE,
    START_VALIDATION_FILE,
    VISUALIZATION_DIR,
    PREDICTION_ANALYSIS_DIR,
    WANDB_DIR,
    RESUME_DIR,
    *RUN_LOG_FILES,
    *SPLIT_RECORD_FILES,
)

# Clip ids and groups (utils.ids): the group is the first capture group of this
# regex applied to the clip id. The default fits ChaLearn First Impressions
# (`<YouTube id>.<nnn>.mp4`): the part before the first dot.
DEFAULT_GROUP_PATTERN = r"^([^.]+)\."
SPLIT_MODES: tuple[str, ...] = ("group", "random")

# Bootstrap intervals on single-run metrics (utils.bootstrap).
BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 0
CONFIDENCE_LEVEL = 0.95

# Files scripts/cross_validate.py writes into its experiment folder.
CV_FOLDS_FILE = "folds.csv"
CV_RESULTS_FILE = "results.csv"
CV_SUMMARY_FILE = "summary.json"
CV_CONFIG_FILE = "cross_validation.json"
CV_RUNS_DIR = "runs"
CV_JOB_RESULT_FILE = "cv_result.json"
CV_R2_FIGURE = "cv_r2_per_trait.png"
CV_DIFFERENCE_FIGURE = "cv_paired_differences.png"
# Variants besides the fusion modes: ridge on pooled features, training-fold mean.
CV_BASELINE_VARIANTS: tuple[str, ...] = ("ridge", "mean")
# Metrics and columns of results.csv (long form).
CV_METRICS: tuple[str, ...] = ("r2", "mae", "mse", "pearson", "ccc", "accuracy")
CV_RESULTS_COLUMNS: tuple[str, ...] = ("variant", "fold", "seed", "trait", "metric", "value")

# Files scripts/predict_personality.py writes (the .csv path is --output; the
# others sit beside it with the same stem), and the SavedModel of export_model.py.
PREDICTIONS_CSV = "predictions.csv"
PREDICTIONS_NPY = "predictions.npy"  # the .npy beside the default .csv
PREDICTIONS_NPY_SUFFIX = ".npy"  # predictions.csv -> predictions.npy, (N, 5) float32
PREDICTIONS_INFO_SUFFIX = "_info.json"  # predictions.csv -> predictions_info.json (provenance)
PREDICTION_ID_COLUMN = "id"
SAVED_MODEL_DIR = "saved_model"  # default export folder (TensorFlow Serving: <base>/<version>/)
SERVING_SIGNATURE = "serving_default"  # the SavedModel signature TensorFlow Serving calls by default

# Files scripts/tune_hyperparameters.py writes into its --output_dir (utils.tuning).
TUNE_PROJECT_DIR = "keras_tuner"  # Keras Tuner's own project folder: oracle.json, trial_<id>/trial.json, checkpoints
TUNE_BEST_FILE = "best_hyperparameters.json"
TUNE_TRIALS_FILE = "trials.csv"
TUNE_COMMAND_FILE = "train_command.txt"  # the training command with the best settings
TUNE_SETTINGS_FILE = "tuning.json"  # the search's settings, split sizes and search space
TUNE_FIT_ROWS_FILE = "tuning_fit_rows.npy"  # the inner split of the training rows (int64 row indices)
TUNE_VAL_ROWS_FILE = "tuning_validation_rows.npy"
TUNE_WORKER_FILE = "worker.json"  # in each trial folder: which tuner (host, process) ran the trial
TUNE_BEST_RUN_DIR = "best_run"  # where the printed training command writes its run
