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
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported

from utils import constants as C  # noqa: E402
from utils.cli import (  # noqa: E402
    Parser,
    add_data_arguments,
    non_negative_int,
    open_fraction,
    positive_float,
    positive_int,
    run_script,
    unit_interval,
)

PROG = "train_personality_model.py"


def build_parser() -> Parser:
    p = Parser(prog=PROG, description=__doc__.split("\n\n")[0])
    add_data_arguments(p)
    p.add_argument(
        "--output",
        default=f"{C.DEFAULT_RESULTS_DIR}/{C.MODEL_FILE}",
        help="trained model (.h5 or .keras); every other run file goes into its folder. A folder that "
        "holds an earlier run is never mixed with the new one: the earlier run's files are moved "
        "into previous_runs/<timestamp>/ first (nothing is deleted)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the interrupted run in the --output folder from its last finished epoch "
        "(same settings; --epochs may be raised)",
    )
    g = p.add_argument_group("training")
    g.add_argument("--val_split", type=open_fraction, default=0.2, help="validation share of the samples, in (0, 1)")
    g.add_argument("--batch_size", type=positive_int, default=16, help="samples per batch")
    g.add_argument("--epochs", type=positive_int, default=50, help="maximum number of epochs")
    g.add_argument("--learning_rate", type=positive_float, default=1e-3, help="initial AdamW learning rate")
    g.add_argument("--weight_decay", type=float, default=1e-4, help="AdamW decoupled weight decay")
    g.add_argument("--seed", type=int, default=42, help="seed of the split, data order, initialization and dropout")
    g.add_argument("--patience", type=positive_int, default=10, help="early stopping: epochs without val_loss improvement")
    g.add_argument(
        "--schedule",
        choices=("plateau", "cosine"),
        default="plateau",
        help="learning-rate schedule: reduce on a val_loss plateau, or cosine decay over all epochs",
    )
    g.add_argument("--lr_factor", type=positive_float, default=0.5, help="plateau: factor applied at each cut")
    g.add_argument("--lr_patience", type=positive_int, default=3, help="plateau: epochs without improvement before a cut")
    g.add_argument("--min_lr", type=positive_float, default=1e-6, help="lower bound of the learning rate")
    g.add_argument("--jit_compile", action=argparse.BooleanOptionalAction, default=True, help="compile the training step with XLA (--no-jit_compile: off)")
    g.add_argument(
        "--steps_per_execution",
        type=positive_int,
        default=8,
        help="training steps per graph call: fewer Python round trips, but batch-level logs and the NaN check "
        "then see every k-th step",
    )
    m = p.add_argument_group("model")
    m.add_argument("--fusion", choices=C.FUSION_MODES, default="cross_attention", help="fusion of the two streams (others are ablations)")
    m.add_argument("--width", type=positive_int, default=64, help="common token width of both streams")
    m.add_argument("--num_heads", type=positive_int, default=4, help="attention heads (must divide --width)")
    m.add_argument("--depth", type=positive_int, default=1, help="cross-attention blocks per direction")
    m.add_argument("--dropout", type=unit_interval, default=0.1, help="dropout rate")
    m.add_argument("--ff_multiplier", type=positive_int, default=2, help="feed-forward width as a multiple of --width")
    m.add_argument("--head_units", type=positive_int, default=64, help="hidden units of the dense head")
    m.add_argument("--pooled_tokens", type=positive_int, default=8, help="tokens a pooled (N, D) feature vector is split into (>= 2)")
    lg = p.add_argument_group("logging")
    lg.add_argument("--histogram_freq", type=non_negative_int, default=10, help="TensorBoard weight histograms every k epochs (0: off; each costs ~0.3 s)")
    lg.add_argument(
        "--batch_log_frequency",
        type=non_negative_int,
        default=10,
        help="write loss, per-trait errors, learning rate and time every k training batches (0: off)",
    )
    lg.add_argument("--verbose", type=int, choices=(0, 1, 2), default=1, help="Keras progress: 0 silent, 1 progress bar, 2 one line per epoch")
    lg.add_argument("--wandb", action="store_true", help="log config, metrics and the final model to Weights & Biases")
    lg.add_argument("--wandb_project", default="personality-cross-attention", help="W&B project name")
    lg.add_argument(
        "--wandb_mode",
        choices=("offline", "online", "disabled"),
        default="offline",
        help="W&B mode: offline writes a local run for `wandb sync`; online needs `wandb login`",
    )
    return p


def run(args: argparse.Namespace) -> int:
    from utils.training import TrainConfig, format_summary, prepare, run_training

    cfg = TrainConfig(**vars(args))
    prep = prepare(cfg)  # validates everything before any file is written
    result = run_training(cfg, prep)
    print(format_summary(result))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_script(build_parser(), argv, run)


if __name__ == "__main__":
    raise SystemExit(main())
