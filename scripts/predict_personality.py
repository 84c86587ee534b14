#!/usr/bin/env python
"""Predict the Big Five for new clips (no labels needed) with a trained model.

Example::

    python scripts/predict_personality.py \\
        --model results/personality_model_trained.h5 \\
        --static_features new/static_features.npy \\
        --dynamic_features new/dynamic_features.npy \\
        --ids new/clip_names.txt --output new/predictions.csv

Writes three files: the ``--output`` CSV (column ``id``, the ``--ids`` name
or else the row index, then the five traits in the order openness,
conscientiousness, extraversion, agreeableness, neuroticism), beside it a
``.npy`` of the same stem ((N, 5) float32) and ``<stem>_info.json`` (the
model's and the inputs' SHA-256, the training summary's path, N and the
software versions). The feature files are read memory-mapped, one batch at a
time, and checked against the model's input shapes before anything runs; on
any error nothing is written. See docs/prediction.md.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # before TensorFlow is imported (utils.console)

from utils.cli import COMMON_EXIT_CODES, Parser, from_args, run_script, settings_parser  # noqa: E402
from utils.config import PredictionConfig  # noqa: E402
from utils.errors import EXIT_INPUT_CHANGED  # noqa: E402

PROG = "predict_personality.py"
EXAMPLE = (
    "python scripts/predict_personality.py --model results/personality_model_trained.h5 "
    "--static_features new/static_features.npy --dynamic_features new/dynamic_features.npy "
    "--ids new/clip_names.txt --output new/predictions.csv"
)


def build_parser() -> Parser:
    """The flags are the fields of PredictionConfig: names, defaults and help."""
    exit_codes = tuple(sorted((*COMMON_EXIT_CODES, EXIT_INPUT_CHANGED)))  # 5: an input changed while it was read
    return settings_parser(PROG, __doc__.split("\n\n")[0], PredictionConfig, example=EXAMPLE, exit_codes=exit_codes)


def run(args: argparse.Namespace) -> int:
    from utils.prediction import check_prediction_paths, format_prediction_summary, run_prediction

    cfg = from_args(PredictionConfig, args)
    check_prediction_paths(cfg)  # a missing model or a bad --output answers before TensorFlow starts
    from utils.console import quiet_tensorflow

    quiet_tensorflow()  # no TensorFlow start-up lines (TF_CPP_MIN_LOG_LEVEL=0 shows them)
    print(format_prediction_summary(run_prediction(cfg)))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_script(build_parser(), argv, run)


if __name__ == "__main__":
    raise SystemExit(main())
