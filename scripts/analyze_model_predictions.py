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
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # before TensorFlow is imported (utils.console)

from utils.cli import Parser, from_args, run_script, settings_parser  # noqa: E402
from utils.config import AnalysisConfig  # noqa: E402

PROG = "analyze_model_predictions.py"
EXAMPLE = (
    "python scripts/analyze_model_predictions.py --model results/personality_model_trained.h5 "
    "--static_features data_sample/static_features.npy --dynamic_features data_sample/dynamic_features.npy "
    "--labels data_sample/labels.npy --output results/prediction_analysis"
)


def build_parser() -> Parser:
    """The flags are the fields of AnalysisConfig: names, defaults and help."""
    return settings_parser(PROG, __doc__.split("\n\n")[0], AnalysisConfig, example=EXAMPLE)


def run(args: argparse.Namespace) -> int:
    from utils.analysis import check_model_path, format_summary, run_analysis
    from utils.console import quiet_tensorflow

    cfg = from_args(AnalysisConfig, args)
    check_model_path(cfg.model)  # a missing model answers before TensorFlow starts
    quiet_tensorflow()  # no TensorFlow start-up lines (TF_CPP_MIN_LOG_LEVEL=0 or 1 shows them)
    result = run_analysis(cfg)
    print(format_summary(result))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_script(build_parser(), argv, run)


if __name__ == "__main__":
    raise SystemExit(main())
