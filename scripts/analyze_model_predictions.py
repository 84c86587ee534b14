#!/usr/bin/env python
"""Analyze a trained model's predictions: metrics beside the mean-predictor baseline, figures, attention.

Example (the seed's command)::

    python scripts/analyze_model_predictions.py \\
        --model results/personality_model_trained.h5 \\
        --static_features data_sample/static_features.npy \\
        --dynamic_features data_sample/dynamic_features.npy \\
        --labels data_sample/labels.npy --output results/prediction_analysis

Writes metrics.json, predictions.csv, predictions.npy, <trait>_scatter.png for
the five traits, residuals.png, error_distribution.png,
trait_correlations.png, model_vs_baseline.png, attention_maps.png and
attention_entropy_per_head.png (see docs/phase_4.2_loss_functions_and_metrics.md).
By default (``--split auto``) only the validation split is evaluated when the
files are the ones the model was trained on, so the numbers are held out.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported

from utils import constants as C  # noqa: E402
from utils.cli import (  # noqa: E402
    Parser,
    add_data_arguments,
    non_negative_int,
    positive_int,
    run_script,
)

PROG = "analyze_model_predictions.py"


def build_parser() -> Parser:
    p = Parser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--model",
        default=f"{C.DEFAULT_RESULTS_DIR}/{C.MODEL_FILE}",
        help=f"trained model (.h5 or .keras); a {C.TRAINING_SUMMARY_FILE} beside it supplies the "
        "baseline's training-label means and the split",
    )
    add_data_arguments(p)
    p.add_argument(
        "--output",
        default=f"{C.DEFAULT_RESULTS_DIR}/{C.PREDICTION_ANALYSIS_DIR}",
        help="folder for metrics.json, predictions.csv/.npy and the figures",
    )
    p.add_argument(
        "--train_labels",
        default=None,
        help="labels .npy whose per-trait mean is the baseline (default: the means recorded in "
        f"{C.TRAINING_SUMMARY_FILE}, else the evaluated labels' mean)",
    )
    p.add_argument(
        "--split",
        choices=C.ANALYSIS_SPLITS,
        default="auto",
        help="samples to evaluate: all, or the validation/training part of the training run's split "
        f"(rebuilt from val_split and seed in {C.TRAINING_SUMMARY_FILE}); auto = the validation part "
        "when the files are the ones the model was trained on (held-out numbers), else all",
    )
    p.add_argument("--batch_size", type=positive_int, default=64, help="samples per prediction batch")
    p.add_argument(
        "--attention_samples",
        type=non_negative_int,
        default=8,
        help="evaluated samples (the first ones) whose attention maps are averaged and plotted; 0: none",
    )
    p.add_argument("--verbose", type=int, choices=(0, 1), default=1, help="progress bar: 0 off, 1 on")
    return p


def run(args: argparse.Namespace) -> int:
    from utils.analysis import AnalysisConfig, format_summary, run_analysis

    result = run_analysis(AnalysisConfig(**vars(args)))
    print(format_summary(result))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_script(build_parser(), argv, run)


if __name__ == "__main__":
    raise SystemExit(main())
