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

from utils import constants as C  # noqa: E402
from utils.cli import Parser, positive_int, run_script  # noqa: E402

PROG = "predict_personality.py"


def build_parser() -> Parser:
    p = Parser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--model",
        default=f"{C.DEFAULT_RESULTS_DIR}/{C.MODEL_FILE}",
        help="trained model (.h5 or .keras) written by train_personality_model.py",
    )
    data = Path(C.DEFAULT_DATA_DIR)
    p.add_argument(
        "--static_features",
        default=str(data / C.STATIC_FEATURES_FILE),
        help="static (appearance) features .npy: (N, D) or (N, T, D), the shape the model was trained on",
    )
    p.add_argument(
        "--dynamic_features",
        default=str(data / C.DYNAMIC_FEATURES_FILE),
        help="dynamic (motion) features .npy: (N, D) or (N, T, D), the shape the model was trained on",
    )
    p.add_argument(
        "--ids",
        default=None,
        help="clip names, one per feature row: a text file with one name per line or a .npy of strings "
        "(default: the row index is the id)",
    )
    p.add_argument(
        "--output",
        default=f"{C.DEFAULT_RESULTS_DIR}/{C.PREDICTIONS_CSV}",
        help=f"predictions .csv; the .npy and {C.PREDICTIONS_INFO_SUFFIX} of the same stem are written beside it",
    )
    p.add_argument("--batch_size", type=positive_int, default=64, help="clips per prediction batch")
    p.add_argument(
        "--verbose",
        type=int,
        choices=(0, 1),
        default=1,
        help="progress bar: 0 off, 1 on when the console is a terminal or the input is long",
    )
    return p


def run(args: argparse.Namespace) -> int:
    from utils.prediction import PredictionConfig, format_prediction_summary, run_prediction

    result = run_prediction(PredictionConfig(**vars(args)))
    print(format_prediction_summary(result))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_script(build_parser(), argv, run)


if __name__ == "__main__":
    raise SystemExit(main())
