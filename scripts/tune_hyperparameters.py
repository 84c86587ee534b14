#!/usr/bin/env python
"""Search the training settings with Keras Tuner, inside the training rows only.

The rows given (all, or --train_rows) are split once into fit and validation
rows (group-disjoint with --ids/--groups); every trial builds and trains the
toolkit's model as the training script does and is scored on the validation
rows (R², or the loss). Writes Keras Tuner's project folder,
best_hyperparameters.json, trials.csv and the train_personality_model.py
command with the best settings (docs/tuning.md).

Example::

    python scripts/tune_hyperparameters.py --output_dir results/hyperparameter_search \\
        --tuner bayesian --max_trials 20 --epochs 30

Distributed (Keras Tuner's chief oracle and workers; one chief, any number of workers)::

    python scripts/tune_hyperparameters.py --role chief  --oracle 10.0.0.1:8000 ...
    python scripts/tune_hyperparameters.py --role worker --oracle 10.0.0.1:8000 --worker_id w1 ...

Every flag of train_personality_model.py that is not searched passes through
(its value is used in every trial). Exit codes: 0 done; 2 bad input or flag
(one line on stderr, nothing written); 3 no trial finished with a score, or
Keras Tuner stopped after 3 failed trials in a row (trials.csv has the messages).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # before TensorFlow is imported (utils.console)

from utils.cli import COMMON_EXIT_CODES, Parser, add_arguments, flag_fields, run_script, settings_parser  # noqa: E402
from utils.config import TrainConfig, TuneConfig  # noqa: E402
from utils.errors import EXIT_DIVERGED  # noqa: E402

PROG = "tune_hyperparameters.py"
EXIT_CODES = (*COMMON_EXIT_CODES[:2], EXIT_DIVERGED, *COMMON_EXIT_CODES[2:])
EXAMPLE = "python scripts/tune_hyperparameters.py --output_dir results/hyperparameter_search --max_trials 20 --epochs 30"
# Training flags the search sets itself (its own flags of the same name, the rows, the run's files and logs).
NOT_PASSED = (
    "output", "resume", "train_rows", "val_rows", "split", "val_split", "epochs", "seed", "verbose",
    "histogram_freq", "batch_log_frequency", "wandb", "wandb_project", "wandb_mode",
)


def build_parser() -> Parser:
    """The search's flags are TuneConfig's; the other training and model flags pass through to every trial."""
    parser = settings_parser(PROG, __doc__.split("\n\n")[0], TuneConfig, example=EXAMPLE, exit_codes=EXIT_CODES)
    add_arguments(parser, TrainConfig, skip=(*NOT_PASSED, *(f.name for f in dataclasses.fields(TuneConfig))))
    return parser


def run(args: argparse.Namespace) -> int:
    from utils.console import quiet_tensorflow

    quiet_tensorflow(show=args.verbose >= 2)
    from utils.tuning import format_result, prepare_search, run_search

    values = vars(args)
    tune = TuneConfig(**{f.name: values[f.name] for f in dataclasses.fields(TuneConfig)})
    training = {f.name: values[f.name] for f in flag_fields(TrainConfig) if f.name in values and f.name not in NOT_PASSED}
    plan = prepare_search(tune, training)  # validates everything before any file is written
    result = run_search(plan)
    print(format_result(result, tune.output_dir))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_script(build_parser(), argv, run)


if __name__ == "__main__":
    raise SystemExit(main())
