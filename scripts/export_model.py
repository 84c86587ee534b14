#!/usr/bin/env python
"""Export a trained model as a TensorFlow SavedModel for TensorFlow Serving.

Example::

    python scripts/export_model.py --model results/personality_model_trained.h5 \\
        --output results/saved_model/1

The SavedModel (written with Keras' own ``keras.export.ExportArchive``) has
one signature, ``serving_default``: inputs ``static_features`` and
``dynamic_features`` (float32, batch first, the per-sample shapes the model
was trained on), outputs ``openness``, ``conscientiousness``,
``extraversion``, ``agreeableness``, ``neuroticism`` (float32, one value per
clip). Before it is moved into place the export is loaded with TensorFlow
alone and must reproduce the Keras model to 1e-5; ``assets.extra/export_info.json``
records the signature, that difference and the model's SHA-256. TensorFlow
Serving wants ``<model base path>/<version number>/``, hence the ``/1``.
See docs/prediction.md for serving it over REST.
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
from utils.cli import Parser, run_script  # noqa: E402

PROG = "export_model.py"


def build_parser() -> Parser:
    p = Parser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--model",
        default=f"{C.DEFAULT_RESULTS_DIR}/{C.MODEL_FILE}",
        help="trained model (.h5 or .keras) written by train_personality_model.py",
    )
    p.add_argument(
        "--output",
        default=f"{C.DEFAULT_RESULTS_DIR}/{C.SAVED_MODEL_DIR}/1",
        help="SavedModel folder; TensorFlow Serving reads <base>/<version>/, so end it in a version number",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing SavedModel folder (swapped atomically once the new export is checked)",
    )
    return p


def run(args: argparse.Namespace) -> int:
    from utils.prediction import ExportConfig, format_export_summary, run_export

    print(format_export_summary(run_export(ExportConfig(**vars(args)))))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_script(build_parser(), argv, run)


if __name__ == "__main__":
    raise SystemExit(main())
