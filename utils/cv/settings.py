"""The flags of ``scripts/cross_validate.py`` that are its own (no NumPy, no TensorFlow).

The data, id/group and training flags are :class:`utils.config.TrainConfig`'s,
added to the same parser; see ``scripts/cross_validate.py``.
"""

from __future__ import annotations

import argparse
import dataclasses

from utils import constants as C
from utils.cli import non_negative_int, option, positive_int

CROSS_VALIDATION = "cross-validation"
GROUPINGS: tuple[str, ...] = ("auto", "none")
VARIANTS: tuple[str, ...] = (*C.FUSION_MODES, *C.CV_BASELINE_VARIANTS)


def at_least_two(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 2, found {text!r}") from None
    if value < 2:
        raise argparse.ArgumentTypeError(f"expected an integer >= 2, found {text}")
    return value


def job_slice(text: str) -> tuple[int, int]:
    """``i/n`` with 1 <= i <= n: the i-th of n slices of the job list."""
    try:
        i, n = (int(part) for part in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected i/n with integers 1 <= i <= n (e.g. 3/10), found {text!r}") from None
    if not 1 <= i <= n:
        raise argparse.ArgumentTypeError(f"expected i/n with 1 <= i <= n, found {text}")
    return i, n


@dataclasses.dataclass
class CrossValidateConfig:
    """The flags of cross_validate.py besides the training script's."""

    output: str = option(
        f"{C.DEFAULT_RESULTS_DIR}/cross_validation",
        f"experiment folder: {C.CV_FOLDS_FILE}, {C.CV_RESULTS_FILE}, {C.CV_SUMMARY_FILE}, the figures, and one "
        f"folder per job, {C.CV_RUNS_DIR}/<variant>/fold<k>/seed<s>/ (a network job's is a normal training run)",
    )
    variants: str = option(
        f"{C.FUSION_MODES[0]},ridge,mean",
        f"comma list of variants: fusion modes ({', '.join(C.FUSION_MODES)}), ridge (ridge regression on "
        "pooled features, alpha chosen inside the training folds) and mean (the training-fold label mean)",
        group=CROSS_VALIDATION,
    )
    folds: int = option(5, "number of folds K (GroupKFold when groups are known, else KFold)", type=at_least_two, group=CROSS_VALIDATION)
    seeds: int = option(
        1, "seeds per (variant, fold): --seed, --seed+1, ...; fold values are averaged over them",
        type=positive_int, group=CROSS_VALIDATION,
    )
    fold_seed: int = option(0, "seed of the assignment of groups (or clips) to folds", type=non_negative_int, group=CROSS_VALIDATION)
    grouping: str = option(
        "auto",
        "auto: group-disjoint folds and inner validation splits when groups are known (--ids or --groups); "
        "none: plain KFold and random inner splits even then (leakage is still counted)",
        choices=GROUPINGS,
        group=CROSS_VALIDATION,
    )
    reference: str | None = option(
        None, "variant the others are compared with (paired, per fold); default: the first of --variants",
        group=CROSS_VALIDATION,
    )
    jobs: tuple[int, int] = option(
        (1, 1),
        "run only the i-th of n interleaved slices of the (variant, fold, seed) jobs, e.g. $SLURM_ARRAY_TASK_ID/10; "
        "finished jobs are skipped, and the slice that finds all jobs finished aggregates",
        type=job_slice,
        group=CROSS_VALIDATION,
    )
    workers: int = option(1, "jobs run side by side in local processes", type=positive_int, group=CROSS_VALIDATION)
    aggregate: bool = option(
        False, f"run no job: build {C.CV_RESULTS_FILE}, {C.CV_SUMMARY_FILE} and the figures from the finished jobs",
        group=CROSS_VALIDATION,
    )
