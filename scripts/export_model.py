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

from utils.cli import Parser, from_args, run_script, settings_parser  # noqa: E402
from utils.config import ExportConfig  # noqa: E402

PROG = "export_model.py"
EXAMPLE = (
    "python scripts/export_model.py --model results/personality_model_trained.h5 --output results/saved_model/1"
)


def build_parser() -> Parser:
    """The flags are the fields of ExportConfig: names, defaults and help."""
    return settings_parser(PROG, __doc__.split("\n\n")[0], ExportConfig, example=EXAMPLE)


def run(args: argparse.Namespace) -> int:
    from utils.prediction import check_export_paths, format_export_summary, run_export

    cfg = from_args(ExportConfig, args)
    check_export_paths(cfg)  # a missing model or a bad --output answers before TensorFlow starts
    from utils.console import quiet_tensorflow

    quiet_tensorflow()  # no TensorFlow start-up lines (TF_CPP_MIN_LOG_LEVEL=0 shows them)
    print(format_export_summary(run_export(cfg)))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_script(build_parser(), argv, run)


if __name__ == "__main__":
    raise SystemExit(main())
