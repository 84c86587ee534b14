#!/usr/bin/env python
"""Train the cross-attention personality model on pre-extracted video features.

Example (the seed's command)::

    python scripts/train_personality_model.py \\
        --static_features data_sample/static_features.npy \\
        --dynamic_features data_sample/dynamic_features.npy \\
        --labels data_sample/labels.npy --val_split 0.2 --batch_size 16 \\
        --epochs 50 --output results/personality_model_trained.h5

With no arguments it trains on data_sample/ into results/.

Exit codes: 0 done; 2 bad input or flag (one line on stderr, nothing
written); 3 the loss became NaN/Inf (best checkpoint and history kept);
130 interrupted with Ctrl-C (finished epochs kept; resume with --resume).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # before TensorFlow is imported (utils.console)

from utils.cli import TRAINING_EXIT_CODES, Parser, run_script, settings_parser  # noqa: E402
from utils.config import TrainConfig  # noqa: E402

PROG = "train_personality_model.py"
EXAMPLE = (
    "python scripts/train_personality_model.py --static_features data_sample/static_features.npy "
    "--dynamic_features data_sample/dynamic_features.npy --labels data_sample/labels.npy "
    "--val_split 0.2 --batch_size 16 --epochs 50 --output results/personality_model_trained.h5"
)


def build_parser() -> Parser:
    """The flags are the fields of TrainConfig (and its ModelConfig): names, defaults and help."""
    return settings_parser(
        PROG, __doc__.split("\n\n")[0], TrainConfig, example=EXAMPLE, exit_codes=TRAINING_EXIT_CODES
    )


def run(args: argparse.Namespace) -> int:
    from utils.console import quiet_tensorflow

    quiet_tensorflow(show=args.verbose >= 2)  # TensorFlow's start-up lines only with --verbose 2
    from utils.training import format_summary, prepare, run_training

    cfg = TrainConfig.from_dict(vars(args))
    prep = prepare(cfg)  # validates everything before any file is written
    result = run_training(cfg, prep)
    print(format_summary(result))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_script(build_parser(), argv, run)


if __name__ == "__main__":
    raise SystemExit(main())
