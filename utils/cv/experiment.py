"""A cross-validation experiment: validate, run (a slice of) the jobs, aggregate.

:func:`prepare_experiment` checks every input before anything is written
(data, ids, groups, folds, variants, settings, the output folder), then
writes ``folds.csv`` and ``cross_validation.json`` (or checks that an
existing experiment folder has the same ones: finished jobs are reused only
for the same data, folds and settings). :func:`run_jobs` runs jobs in this
process or in ``workers`` spawned processes; :func:`aggregate` builds
``results.csv``, ``summary.json`` and the figures from the job results.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
from pathlib import Path
from typing import Any

import numpy as np

from utils import constants as C
from utils.cv.folds import assign_folds, folds_table, write_or_check_folds
from utils.cv.jobs import Job, JobContext, job_list, run_job
from utils.cv.settings import GROUPINGS, VARIANTS
from utils.cv.summary import build_summary, result_rows, results_csv
from utils.data import Dataset, load_dataset
from utils.errors import EXIT_INTERRUPTED, EXIT_TERMINATED, InputError, TrainingStopped
from utils.ids import clips_sharing_a_group, resolve_groups
from utils.io import check_writable, write_json, write_text

logger = logging.getLogger(__name__)

# Training settings that change no result (left out of the experiment's identity).
_COSMETIC = frozenset({"verbose", "histogram_freq", "batch_log_frequency", "wandb", "wandb_project", "wandb_mode"})


@dataclasses.dataclass
class ExperimentConfig:
    """The resolved command line of ``cross_validate.py``."""

    static_features: str
    dynamic_features: str
    labels: str
    output: str
    variants: tuple[str, ...] = ("cross_attention", "ridge", "mean")
    folds: int = 5
    seeds: int = 1
    seed: int = 42  # seeds are seed, seed+1, ..., seed+seeds-1
    fold_seed: int = 0
    grouping: str = "auto"
    reference: str | None = None
    ids: str | None = None
    groups: str | None = None
    group_pattern: str = C.DEFAULT_GROUP_PATTERN
    val_split: float = 0.2  # inner validation share of the training folds (network variants)
    train: dict[str, Any] = dataclasses.field(default_factory=dict)  # TrainConfig settings

    @property
    def seed_values(self) -> list[int]:
        return [self.seed + i for i in range(self.seeds)]

    @property
    def reference_variant(self) -> str:
        return self.reference or self.variants[0]


@dataclasses.dataclass
class Experiment:
    cfg: ExperimentConfig
    data: Dataset
    ctx: JobContext
    groups_source: str

    @property
    def jobs(self) -> list[Job]:
        return job_list(self.cfg.variants, self.cfg.folds, self.cfg.seed_values)


def parse_variants(text: str) -> tuple[str, ...]:
    """``--variants``: a comma list of fusion modes, ``ridge`` and ``mean``; no repeats."""
    names = tuple(v.strip() for v in text.split(",") if v.strip())
    unknown = [v for v in names if v not in VARIANTS]
    if not names or unknown:
        raise InputError(f"expected --variants as a comma list of {', '.join(VARIANTS)}, found {text!r}")
    if len(set(names)) != len(names):
        raise InputError(f"expected each variant once in --variants, found {text!r}")
    return names


def _check_settings(cfg: ExperimentConfig) -> None:
    if cfg.grouping not in GROUPINGS:
        raise InputError(f"expected --grouping to be one of {GROUPINGS}, found {cfg.grouping!r}")
    if cfg.reference_variant not in cfg.variants:
        raise InputError(f"expected --reference to be one of --variants ({', '.join(cfg.variants)}), found {cfg.reference!r}")
    if cfg.seeds < 1:
        raise InputError(f"expected --seeds of at least 1, found {cfg.seeds}")
    if any(v in C.FUSION_MODES for v in cfg.variants):
        from utils.config import TrainConfig

        try:
            TrainConfig.from_dict(cfg.train)  # invalid model settings raise InputError
        except TypeError as exc:
            raise InputError(f"invalid training settings: {exc}") from None


def identity(cfg: ExperimentConfig, data: Dataset) -> dict[str, Any]:
    """Everything that makes two runs' job results comparable (cross_validation.json)."""
    inputs = {
        key: {"path": str(Path(path).resolve()), "bytes": Path(path).stat().st_size, "shape": list(shape)}
        for key, path, shape in (
            ("static_features", data.paths["static_features"], data.static.shape),
            ("dynamic_features", data.paths["dynamic_features"], data.dynamic.shape),
            ("labels", data.paths["labels"], data.labels.shape),
        )
    }
    return {
        "inputs": inputs,
        "ids": cfg.ids and str(Path(cfg.ids).resolve()),
        "groups": cfg.groups and str(Path(cfg.groups).resolve()),
        "group_pattern": cfg.group_pattern if (cfg.ids and not cfg.groups) else None,
        "folds": cfg.folds,
        "fold_seed": cfg.fold_seed,
        "grouping": cfg.grouping,
        "val_split": cfg.val_split,
        "train": {k: v for k, v in sorted(cfg.train.items()) if k not in _COSMETIC},
    }


def _write_or_check_identity(path: Path, ident: dict[str, Any]) -> None:
    if path.is_file():
        try:
            earlier = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError):
            raise InputError("expected the experiment's JSON settings, found invalid JSON", str(path)) from None
        earlier = earlier.get("identity", {}) if isinstance(earlier, dict) else {}
        differ = sorted(k for k in set(earlier) | set(ident) if earlier.get(k) != ident.get(k))
        if differ:
            raise InputError(
                f"expected the settings this experiment folder was started with, found different ones "
                f"({', '.join(differ)}); use a new --output folder to run other settings",
                str(path),
            )
        return
    write_json(path, {"identity": ident})


def prepare_experiment(cfg: ExperimentConfig) -> Experiment:
    """Validate everything, then write (or check) folds.csv and cross_validation.json."""
    _check_settings(cfg)
    data = load_dataset(cfg.static_features, cfg.dynamic_features, cfg.labels)
    ids, groups, source = resolve_groups(len(data), cfg.ids, cfg.groups, cfg.group_pattern)
    grouped = groups is not None and cfg.grouping == "auto"
    fold = assign_folds(len(data), cfg.folds, groups if grouped else None, cfg.fold_seed, source)
    out = Path(cfg.output)
    check_writable(out)
    ident = identity(cfg, data)
    table = folds_table(fold, ids, groups)
    if (out / C.CV_CONFIG_FILE).is_file():  # check both before writing either
        _write_or_check_identity(out / C.CV_CONFIG_FILE, ident)
    write_or_check_folds(out / C.CV_FOLDS_FILE, table)
    _write_or_check_identity(out / C.CV_CONFIG_FILE, ident)
    ctx = JobContext(
        output=str(out), paths=dict(data.paths), fold=fold, ids=ids, groups=groups,
        grouped=grouped, val_split=cfg.val_split, train=dict(cfg.train),
        id_flags={"ids": cfg.ids, "groups": cfg.groups, "group_pattern": cfg.group_pattern},
    )
    return Experiment(cfg, data, ctx, source)


# ------------------------------------------------------------------ running


def _job_line(job: Job, result: dict[str, Any]) -> str:
    r2 = result["metrics"]["overall"]["r_squared"]
    return f"finished {job}: mean R² {r2:.4f} on {result['n_test']} test clips ({result['seconds']:.1f} s)"


def _worker(ctx: JobContext, job: Job) -> None:
    """Entry point of a spawned worker: one job, SIGTERM handled like Ctrl-C (temporary files removed)."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    from utils.cli import configure_console_logging

    configure_console_logging()
    data = load_dataset(ctx.paths["static_features"], ctx.paths["dynamic_features"], ctx.paths["labels"])
    try:
        logger.info(_job_line(job, run_job(ctx, job, data)))
    except KeyboardInterrupt:
        raise SystemExit(EXIT_INTERRUPTED) from None


def run_jobs(exp: Experiment, jobs: list[Job], workers: int = 1) -> list[Job]:
    """Run the unfinished ``jobs``; return the ones that failed. Ctrl-C/SIGTERM stop everything cleanly."""
    todo = [j for j in jobs if not j.finished(exp.ctx.output)]
    if len(todo) < len(jobs):
        logger.info("%d of %d job(s) already finished, skipped", len(jobs) - len(todo), len(jobs))
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        return _run_local(exp, todo) if workers <= 1 else _run_spawned(exp, todo, workers)
    except KeyboardInterrupt:
        done = sum(j.finished(exp.ctx.output) for j in jobs)
        raise TrainingStopped(
            f"interrupted; {done} of {len(jobs)} job(s) of this run are finished and kept in {exp.ctx.output}. "
            "Run the same command again to do the rest",
            EXIT_INTERRUPTED,
        ) from None
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run_local(exp: Experiment, todo: list[Job]) -> list[Job]:
    failed = []
    for n, job in enumerate(todo, 1):
        logger.info("[%d/%d] %s", n, len(todo), job)
        try:
            logger.info(_job_line(job, run_job(exp.ctx, job, exp.data)))
        except TrainingStopped as exc:
            if exc.exit_code in (EXIT_INTERRUPTED, EXIT_TERMINATED):  # Ctrl-C/SIGTERM inside model.fit
                raise KeyboardInterrupt from None
            logger.error("job %s failed: %s", job, exc)
            failed.append(job)
        except InputError as exc:
            logger.error("job %s failed: %s", job, exc)
            failed.append(job)
    return failed


def _run_spawned(exp: Experiment, todo: list[Job], workers: int) -> list[Job]:
    spawn = multiprocessing.get_context("spawn")
    pending = list(todo)
    running: dict[Any, tuple[Job, Any]] = {}
    failed: list[Job] = []
    try:
        while pending or running:
            while pending and len(running) < workers:
                job = pending.pop(0)
                proc = spawn.Process(target=_worker, args=(exp.ctx, job), name=f"cv-{job}")
                proc.start()
                running[proc.sentinel] = (job, proc)
            for sentinel in multiprocessing.connection.wait(list(running)):
                job, proc = running.pop(sentinel)
                proc.join()
                if proc.exitcode != 0 or not job.finished(exp.ctx.output):
                    logger.error("job %s failed (worker exit code %s)", job, proc.exitcode)
                    failed.append(job)
    except KeyboardInterrupt:
        _stop_workers([proc for _, proc in running.values()])
        raise
    return failed


def _stop_workers(procs: list[Any], grace: float = 30.0) -> None:
    """Pass the interruption on (SIGTERM), wait for the workers to clean up, kill stragglers."""
    for proc in procs:
        if proc.is_alive() and proc.pid is not None:
            os.kill(proc.pid, signal.SIGTERM)
    for proc in procs:
        proc.join(grace)
        if proc.is_alive():
            proc.kill()
            proc.join()


# ------------------------------------------------------------------ aggregation


def read_results(exp: Experiment) -> list[dict[str, Any]]:
    """Every job's result; InputError naming the first unfinished job when some are missing."""
    missing = [j for j in exp.jobs if not j.finished(exp.ctx.output)]
    if missing:
        raise InputError(
            f"expected all {len(exp.jobs)} jobs to be finished before aggregating, found {len(missing)} "
            f"unfinished (e.g. {missing[0]}: no {missing[0].result_path(exp.ctx.output)})",
            exp.ctx.output,
        )
    results = []
    for job in exp.jobs:
        path = job.result_path(exp.ctx.output)
        try:
            results.append(json.loads(path.read_text(encoding="utf-8")))
        except (ValueError, UnicodeDecodeError):
            raise InputError("expected a job result in JSON, found invalid JSON", str(path)) from None
    return results


def protocol(exp: Experiment) -> dict[str, Any]:
    cfg, ctx = exp.cfg, exp.ctx
    fold_counts = np.bincount(ctx.fold, minlength=cfg.folds)
    return {
        "n": int(len(ctx.fold)),
        "folds": cfg.folds,
        "fold_sizes": fold_counts.tolist(),
        "fold_splitter": "GroupKFold(shuffle=True)" if ctx.grouped else "KFold(shuffle=True)",
        "fold_seed": cfg.fold_seed,
        "grouping": cfg.grouping,
        "groups_known": ctx.groups is not None,
        "groups_source": exp.groups_source or None,
        "n_groups": None if ctx.groups is None else int(len(np.unique(ctx.groups))),
        "seeds": cfg.seed_values,
        "variants": list(cfg.variants),
        "inner_validation": f"{cfg.val_split:g} of the training folds"
        + (", group-disjoint (GroupShuffleSplit)" if ctx.grouped else ", random"),
        "training": dict(cfg.train),
    }


def leakage(exp: Experiment) -> dict[str, Any]:
    ctx = exp.ctx
    per_fold = [
        clips_sharing_a_group(ctx.groups, np.flatnonzero(ctx.fold != k), np.flatnonzero(ctx.fold == k))
        for k in range(exp.cfg.folds)
    ]
    return {
        "groups_known": ctx.groups is not None,
        "test_clips": int(len(ctx.fold)),
        "test_clips_sharing_a_group_with_train": None if ctx.groups is None else int(sum(per_fold)),
        "per_fold": per_fold,
    }


def aggregate(exp: Experiment) -> dict[str, Any]:
    """Write results.csv, summary.json and the figures from the finished jobs; return the summary."""
    from utils.cv.report import write_figures

    results = read_results(exp)
    rows = [row for r in results for row in result_rows(r)]
    sizes = {k: (int((exp.ctx.fold != k).sum()), int((exp.ctx.fold == k).sum())) for k in range(exp.cfg.folds)}
    summary = build_summary(
        rows, list(exp.cfg.variants), exp.cfg.reference_variant, sizes, protocol(exp), leakage(exp)
    )
    out = Path(exp.ctx.output)
    write_text(out / C.CV_RESULTS_FILE, results_csv(rows))
    summary["figures"] = [p.name for p in write_figures(summary, out)]
    write_json(out / C.CV_SUMMARY_FILE, summary)
    return summary
