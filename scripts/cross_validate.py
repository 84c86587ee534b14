#!/usr/bin/env python
"""Grouped k-fold x seeds x variants: test-fold metrics with confidence intervals.

Does cross-attention fusion help, and by how much? Every variant (fusion
modes, ridge on pooled features, the training mean) is trained on the same K
folds (group-disjoint when clip ids or groups are given) with S seeds, and
scored on the held-out fold. The experiment folder gets folds.csv,
results.csv (variant,fold,seed,trait,metric,value), summary.json (mean, sd and
Student's t 95% interval over folds; paired differences against a reference
variant with the Nadeau-Bengio corrected interval) and two figures.

Example (data_sample/ has no clip ids, so the folds are plain KFold)::

    python scripts/cross_validate.py --folds 5 --seeds 2 \\
        --variants cross_attention,concat,ridge,mean --epochs 30 \\
        --output results/cross_validation

On First Impressions, add ``--ids clip_names.txt``: the group is the YouTube
id (the part of the clip name before the first dot).

Many machines: every (variant, fold, seed) job is independent. ``--jobs i/n``
runs the i-th of n slices (a Slurm array task each; see docs/evaluation.md);
finished jobs are skipped on a rerun and ``--aggregate`` builds the summary.

Exit codes: 0 done; 1 some jobs failed (the others are kept); 2 bad input or
flag (one line on stderr, nothing written); 130 interrupted (finished jobs
kept; run the same command again to do the rest).
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

from utils.cli import Parser, add_arguments, flag_fields, run_script  # noqa: E402
from utils.config import TrainConfig  # noqa: E402
from utils.cv.settings import CrossValidateConfig  # noqa: E402

PROG = "cross_validate.py"
# TrainConfig flags cross_validate.py sets itself per job (the others pass through to every network run).
PER_JOB = ("output", "resume", "fusion", "train_rows", "val_rows", "split")
# TrainConfig flags that describe the experiment rather than one run.
EXPERIMENT_LEVEL = ("static_features", "dynamic_features", "labels", "ids", "groups", "group_pattern", "seed", "val_split")


def build_parser() -> Parser:
    p = Parser(prog=PROG, description=__doc__.split("\n\n")[0])
    add_arguments(p, CrossValidateConfig)
    add_arguments(p, TrainConfig, skip=PER_JOB)
    # One line per finished job replaces the Keras progress bar of each network run (--verbose 1/2 to see it).
    p.set_defaults(verbose=0)
    return p


def run(args: argparse.Namespace) -> int:
    from utils.cv.experiment import ExperimentConfig, aggregate, parse_variants, prepare_experiment, run_jobs
    from utils.cv.jobs import slice_jobs
    from utils.cv.report import format_table

    values = vars(args)
    cv = CrossValidateConfig(**{f.name: values[f.name] for f in dataclasses.fields(CrossValidateConfig)})
    train_flags = {f.name for f in flag_fields(TrainConfig)} - set(PER_JOB) - set(EXPERIMENT_LEVEL)
    cfg = ExperimentConfig(
        **{name: values[name] for name in EXPERIMENT_LEVEL},
        output=cv.output,
        variants=parse_variants(cv.variants),
        folds=cv.folds,
        seeds=cv.seeds,
        fold_seed=cv.fold_seed,
        grouping=cv.grouping,
        reference=cv.reference,
        train={name: values[name] for name in sorted(train_flags)},
    )
    exp = prepare_experiment(cfg)  # validates everything before any file is written
    failed = []
    if not cv.aggregate:
        mine = slice_jobs(exp.jobs, *cv.jobs)
        done = sum(j.finished(cv.output) for j in mine)
        print(
            f"{len(mine)} of {len(exp.jobs)} job(s) in slice {cv.jobs[0]}/{cv.jobs[1]} ({done} already finished); "
            f"experiment folder {cv.output}"
        )
        failed = run_jobs(exp, mine, cv.workers)
    unfinished = [j for j in exp.jobs if not j.finished(cv.output)]
    if unfinished and not cv.aggregate:
        print(
            f"{len(exp.jobs) - len(unfinished)} of {len(exp.jobs)} job(s) finished; the summary is built when all are "
            "(by the last slice to finish, or by the same command with --aggregate)"
        )
        return 1 if failed else 0
    summary = aggregate(exp)
    print(format_table(summary))
    print(f"Wrote {cv.output}/: folds.csv, results.csv, summary.json, " + ", ".join(summary["figures"]))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_script(build_parser(), argv, run)


if __name__ == "__main__":
    raise SystemExit(main())
