"""Hyperparameter search inside the training rows, with Keras Tuner.

``scripts/tune_hyperparameters.py`` calls :func:`prepare_search` (every input
checked before anything is written) and :func:`run_search`. The search sees
only the training rows it is given (all rows, or ``--train_rows``): they are
split once, group-disjointly when clip ids or groups are known
(:func:`utils.cv.folds.inner_split`), into *fit* rows the models train on and
*validation* rows that score each trial, so a test set kept outside stays
untouched by the choice of the settings.

Each trial is a :class:`ToolkitHyperModel`: ``build(hp)`` turns the trial's
values into the training script's own settings (:class:`~utils.config.TrainConfig`
with its :class:`~models.config.ModelConfig`) and builds and compiles the model
exactly as a training run does (:func:`utils.training.build_compiled_model`:
normalization statistics, output prior and ridge warm start from the fit
rows); ``fit`` trains it on the memory-mapped files through the toolkit's
``tf.data`` pipeline with early stopping. Keras Tuner's oracle picks the
values (random search, Bayesian optimization or Hyperband) and keeps its own
project folder (``trial_<id>/trial.json``, ``oracle.json``, checkpoints).

A search spreads over machines with Keras Tuner's own distributed mode: one
*chief* process serves the oracle over gRPC and runs no trial, any number of
*workers* ask it for trials (:func:`distributed_environment` sets the
``KERASTUNER_*`` variables from ``--oracle``/``--role``/``--worker_id``).
Every trial folder gets :data:`~utils.constants.TUNE_WORKER_FILE`, naming the
tuner (host and process) that ran it. The chief (or the single local process)
writes ``best_hyperparameters.json``, ``trials.csv`` and the training command
with the best settings (``docs/tuning.md``).
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json
import logging
import math
import os
import shlex
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import keras
import keras_tuner as kt
import numpy as np

from models.config import ModelConfig
from utils import constants as C
from utils.cli import flag_fields, to_flat
from utils.config import POOLED_QUERY_ONLY, TUNABLE, TrainConfig, TuneConfig
from utils.cv.folds import inner_split
from utils.data import Dataset, EpochBatches, label_means, load_dataset, make_tf_dataset, open_npy
from utils.devices import check_settings
from utils.errors import EXIT_DIVERGED, InputError, TrainingStopped
from utils.ids import resolve_groups
from utils.io import check_writable, save_npy, write_json, write_text
from utils.splits import read_rows
from utils.training import (
    Prepared,
    build_compiled_model,
    epoch_from_step_counter,
    plateau_callback,
    set_determinism,
)

logger = logging.getLogger(__name__)

# Keras Tuner's environment variables of its distributed mode (keras_tuner.src.distribute.utils).
ENV_TUNER_ID = "KERASTUNER_TUNER_ID"
ENV_ORACLE_IP = "KERASTUNER_ORACLE_IP"
ENV_ORACLE_PORT = "KERASTUNER_ORACLE_PORT"
CHIEF_ID = "chief"  # Keras Tuner treats any tuner id containing "chief" as the oracle's server
TRAINING_SCRIPT = "scripts/train_personality_model.py"
# Training flags the printed command always states (the data, the rows, where the run goes, the budget).
ALWAYS_STATED = ("static_features", "dynamic_features", "labels", "output", "train_rows", "val_rows", "epochs", "seed")


@dataclasses.dataclass(frozen=True)
class Dimension:
    """One searched setting: ``log`` (a float sampled on a log scale), ``float`` (on a grid) or ``choice``."""

    kind: str
    values: tuple[Any, ...]  # log: (min, max); float: (min, max, step); choice: the choices
    why: str


# The search space: each name is a training (or model) flag; docs/tuning.md explains the ranges.
SEARCH_SPACE: dict[str, Dimension] = {
    "learning_rate": Dimension("log", (1e-4, 3e-3), "AdamW's initial rate; the plateau schedule cuts it"),
    "weight_decay": Dimension("log", (1e-5, 1e-2), "AdamW's decoupled decay: the main regularizer of the dense layers"),
    "dropout": Dimension("float", (0.0, 0.4, 0.1), "dropout in the attention, feed-forward and head"),
    "fused_dropout": Dimension("float", (0.0, 0.3, 0.1), "dropout on the fused vector the head reads"),
    "head_units": Dimension("choice", (32, 64, 128), "hidden units of the dense head"),
    "width": Dimension("choice", (32, 64, 128), "token width of both streams (multiples of --num_heads)"),
    "attention_keys": Dimension("choice", C.ATTENTION_KEYS, "pooled_query keys: segment position, content or both"),
    "pooled_width": Dimension("choice", (0, 32, 64, 128), "pooled_query: projections of the pooled streams the hidden layer reads"),
    "bilinear_rank": Dimension("choice", (0, 4, 9, 16), "pooled_query: products of the pooled streams (moment-started)"),
    "batch_size": Dimension("choice", (16, 32, 64), "samples per step: gradient noise against steps per epoch"),
}
_MODEL_FIELDS = frozenset(f.name for f in dataclasses.fields(ModelConfig))


@dataclasses.dataclass
class SearchPlan:
    """A checked search: the settings, the data, the rows, what is searched and the process's role."""

    tune: TuneConfig
    base: TrainConfig  # the training settings of every value that is not searched
    data: Dataset
    groups: np.ndarray | None
    train_rows: np.ndarray
    fit_rows: np.ndarray
    val_rows: np.ndarray
    names: tuple[str, ...]  # the searched settings, in SEARCH_SPACE order
    env: dict[str, str]  # KERASTUNER_* variables of a distributed search (empty for a local one)

    @property
    def output_dir(self) -> Path:
        return Path(self.tune.output_dir)

    @property
    def objective(self) -> Any:
        """Keras Tuner's objective: the validation metric of the toolkit's name, with its direction."""
        return kt.Objective(f"val_{self.tune.objective}", "max" if self.tune.objective == "r_squared" else "min")


# ---------------------------------------------------------------------------------------- checking


def parse_search(text: str, model: ModelConfig) -> tuple[str, ...]:
    """The settings ``--search`` names (``all``: every one that applies to the fusion), checked."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    if names == ["all"]:
        names = [n for n in TUNABLE if n not in POOLED_QUERY_ONLY or model.fusion == "pooled_query"]
    unknown = sorted(set(names) - set(TUNABLE))
    if unknown or not names:
        raise InputError(f"expected --search to be 'all' or names from {', '.join(TUNABLE)}, found {text!r}")
    for name in sorted(POOLED_QUERY_ONLY & set(names)):
        if model.fusion != "pooled_query":
            raise InputError(f"expected --fusion pooled_query to search {name}, found --fusion {model.fusion}")
    if "width" in names and not _width_choices(model):
        raise InputError(f"expected --num_heads to divide one of the widths {SEARCH_SPACE['width'].values}, found {model.num_heads}")
    return tuple(n for n in TUNABLE if n in names)


def parse_oracle(text: str) -> tuple[str, int]:
    """``HOST:PORT`` of ``--oracle`` (an IPv6 host in brackets)."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise InputError(f"expected --oracle as HOST:PORT (e.g. 127.0.0.1:8000), found {text!r}")
    return host.strip("[]"), int(port)


def check_distributed_support() -> None:
    """Refuse a distributed search, in one line, when Keras Tuner's gRPC modules do not load.

    Keras Tuner ships protobuf modules generated for protobuf 3 and 4
    (``keras_tuner.src.protos.v3``/``v4``); with protobuf 7.x and grpcio 1.85
    ``v4`` loads and works (tests/test_tuning.py runs a chief and two workers).
    """
    try:
        from keras_tuner.src import protos
        from keras_tuner.src.distribute import oracle_chief, oracle_client  # noqa: F401

        protos.get_service_grpc().OracleStub  # noqa: B018
    except Exception as exc:  # an ImportError or protobuf's own version error
        import google.protobuf

        raise InputError(
            f"Keras Tuner's distributed mode cannot load its gRPC modules with protobuf "
            f"{google.protobuf.__version__} ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
            "run the search without --oracle/--role (docs/tuning.md)"
        ) from None


def distributed_settings(tune: TuneConfig) -> dict[str, str]:
    """The ``KERASTUNER_*`` variables of ``--oracle``/``--role``/``--worker_id`` (empty for a local search)."""
    if tune.role == "local":
        if tune.oracle or tune.worker_id:
            raise InputError("expected --oracle and --worker_id only with --role chief or worker, found --role local")
        return {}
    if not tune.oracle:
        raise InputError(f"expected --oracle HOST:PORT with --role {tune.role}, found none")
    host, port = parse_oracle(tune.oracle)
    if tune.role == "chief":
        if tune.worker_id:
            raise InputError("expected --worker_id only with --role worker, found it with --role chief")
        tuner_id = CHIEF_ID
    else:
        if tune.overwrite:
            raise InputError("expected --overwrite only on the chief or a local search; a worker never deletes the project")
        tuner_id = tune.worker_id or f"{socket.gethostname()}-{os.getpid()}"
        if CHIEF_ID in tuner_id or not tuner_id.replace("-", "").replace("_", "").replace(".", "").isalnum():
            raise InputError(f"expected a --worker_id of letters, digits, '-', '_', '.' without 'chief', found {tuner_id!r}")
    check_distributed_support()
    return {ENV_TUNER_ID: tuner_id, ENV_ORACLE_IP: host, ENV_ORACLE_PORT: str(port)}


def base_config(tune: TuneConfig, training: Mapping[str, Any]) -> TrainConfig:
    """The training settings of the values not searched: the passed-through training flags plus the search's own."""
    values = dict(training)
    values.update(
        {
            f.name: getattr(tune, f.name)
            for f in dataclasses.fields(TuneConfig)
            if f.name in _train_flag_names() and f.name != "verbose"  # the search's console is its own
        },
    )
    values["output"] = str(Path(tune.output_dir) / C.TUNE_BEST_RUN_DIR / C.MODEL_FILE)
    values["train_rows"] = values["val_rows"] = None  # the search makes its own inner split
    return TrainConfig.from_dict(values)


def _train_flag_names() -> frozenset[str]:
    return frozenset(f.name for f in flag_fields(TrainConfig))


def prepare_search(tune: TuneConfig, training: Mapping[str, Any]) -> SearchPlan:
    """Check every input and setting and make the inner split; raise InputError before anything is written."""
    base = base_config(tune, training)
    names = parse_search(tune.search, base.model)
    env = distributed_settings(tune)
    check_settings(base.precision, base.distribute)
    data = load_dataset(tune.static_features, tune.dynamic_features, tune.labels)
    _, groups, _ = resolve_groups(len(data), tune.ids, tune.groups, tune.group_pattern)
    train_rows = read_rows(tune.train_rows, len(data), "training rows") if tune.train_rows else np.arange(len(data))
    fit_rows, val_rows = inner_split(train_rows, groups, tune.val_split, tune.seed)
    check_writable(Path(tune.output_dir))
    if tune.role == "worker":
        check_chief_split(Path(tune.output_dir), fit_rows, val_rows)
    return SearchPlan(tune, base, data, groups, train_rows, fit_rows, val_rows, names, env)


def check_chief_split(out: Path, fit_rows: np.ndarray, val_rows: np.ndarray) -> None:
    """A worker's inner split must be the chief's (when the chief's row files are already in a shared folder)."""
    for name, rows in ((C.TUNE_FIT_ROWS_FILE, fit_rows), (C.TUNE_VAL_ROWS_FILE, val_rows)):
        path = out / name
        if path.is_file() and not np.array_equal(open_npy(path, "the chief's inner split"), rows):
            raise InputError(
                "expected this worker's inner split to be the chief's, found other rows; give every process the same "
                "data, --ids/--groups, --train_rows, --val_split and --seed",
                str(path),
            )


# ---------------------------------------------------------------------------------------- the search space


def _width_choices(model: ModelConfig) -> tuple[int, ...]:
    return tuple(w for w in SEARCH_SPACE["width"].values if w % model.num_heads == 0)


def _choices(name: str, base: Any, model: ModelConfig) -> list[Any]:
    values = list(_width_choices(model) if name == "width" else SEARCH_SPACE[name].values)
    if base not in values and (name != "width" or base % model.num_heads == 0):
        values.append(base)  # the training flag's value is always a candidate
    return sorted(values) if not isinstance(base, str) else values


def declare(hp: Any, name: str, base: Any, model: ModelConfig) -> Any:
    """Declare ``name`` in Keras Tuner's ``hp`` (or read its value for this trial) with ``base`` as its default."""
    dim = SEARCH_SPACE[name]
    if dim.kind == "choice":
        return hp.Choice(name, _choices(name, base, model), default=base)
    low, high = dim.values[0], dim.values[1]
    default = float(base) if low <= base <= high else None
    if dim.kind == "log":
        return hp.Float(name, low, high, sampling="log", default=default)
    return hp.Float(name, low, high, step=dim.values[2], default=default)


def config_for(plan: SearchPlan, values: Mapping[str, Any]) -> TrainConfig:
    """The training settings of one trial: the base settings with the trial's values of the searched names."""
    searched = {n: values[n] for n in plan.names}
    model = {k: v for k, v in searched.items() if k in _MODEL_FIELDS}
    train = {k: v for k, v in searched.items() if k not in _MODEL_FIELDS}
    return dataclasses.replace(plan.base, model=dataclasses.replace(plan.base.model, **model), **train)


def trial_config(plan: SearchPlan, hp: Any) -> TrainConfig:
    base = to_flat(plan.base)
    values = {name: declare(hp, name, base[name], plan.base.model) for name in plan.names}
    return config_for(plan, values)


def space_record(plan: SearchPlan) -> dict[str, Any]:
    """The searched settings with their ranges, for tuning.json."""
    return {
        name: {"kind": SEARCH_SPACE[name].kind, "values": list(SEARCH_SPACE[name].values), "why": SEARCH_SPACE[name].why}
        for name in plan.names
    }


# ---------------------------------------------------------------------------------------- one trial


class ToolkitHyperModel(kt.HyperModel):
    """The toolkit's model as a Keras Tuner ``HyperModel``: built and trained like a training run, on the fit rows."""

    def __init__(self, plan: SearchPlan) -> None:
        super().__init__(name="personality_model")
        self.plan = plan
        self.execution = 0  # models built in this trial so far (the tuner resets it when a trial begins)

    def build(self, hp: Any) -> Any:
        cfg = trial_config(self.plan, hp)
        # Seeded as a training run is: the trial's first model is the one the printed training command
        # trains (same initialization, dropout and data order); further executions use seed + 1, + 2, ...
        set_determinism(cfg.seed + self.execution)
        self.execution += 1
        fit = self.plan.fit_rows
        prep = Prepared(self.plan.data, fit, self.plan.val_rows, label_means(self.plan.data.labels, fit))
        return build_compiled_model(cfg, prep, len(EpochBatches(fit, cfg.batch_size, shuffle=True, seed=cfg.seed)))

    def fit(self, hp: Any, model: Any, *args: Any, **kwargs: Any) -> Any:
        cfg = trial_config(self.plan, hp)
        plan = self.plan
        batches = EpochBatches(plan.fit_rows, cfg.batch_size, shuffle=True, seed=cfg.seed)
        steps = len(batches)
        train_ds = make_tf_dataset(plan.data, batches, epoch=lambda: epoch_from_step_counter(model, steps))
        val_ds = make_tf_dataset(plan.data, EpochBatches(plan.val_rows, cfg.batch_size, shuffle=False, seed=cfg.seed))
        history = model.fit(
            train_ds,
            validation_data=val_ds,
            epochs=kwargs.get("epochs", plan.tune.epochs),  # Hyperband sets its own budget per round
            initial_epoch=kwargs.get("initial_epoch", 0),
            callbacks=[*kwargs.get("callbacks", []), *trial_callbacks(cfg, plan.objective)],
            verbose=2 if plan.tune.verbose >= 2 else 0,
            shuffle=False,
        )
        losses = history.history.get("loss", [])
        if not losses or not math.isfinite(losses[-1]):
            raise kt.errors.FailedTrialError(f"the loss became {losses[-1] if losses else 'undefined'}; try lower rates")
        return history


def trial_callbacks(cfg: TrainConfig, objective: Any) -> list[Any]:
    """Early stopping on the objective after ``--patience`` epochs, NaN guard, and the plateau schedule of training."""
    callbacks: list[Any] = [
        keras.callbacks.EarlyStopping(monitor=objective.name, mode=objective.direction, patience=cfg.patience),
        keras.callbacks.TerminateOnNaN(),
    ]
    if cfg.schedule == "plateau":  # as utils.training.make_callbacks: cosine decay lives in the optimizer
        callbacks.append(plateau_callback(cfg))
    return callbacks


class WorkerRecord:
    """Tuner mixin: each trial folder gets ``worker.json`` (tuner id, host, process, seconds), written atomically."""

    def on_trial_begin(self, trial: Any) -> None:
        self._trial_started = time.time()
        self.hypermodel.execution = 0  # type: ignore[attr-defined]
        super().on_trial_begin(trial)  # type: ignore[misc]

    def on_trial_end(self, trial: Any) -> None:
        self.trials_run = [*getattr(self, "trials_run", []), trial.trial_id]
        record = {
            "trial_id": trial.trial_id,
            "tuner_id": self.tuner_id,  # type: ignore[attr-defined]
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "status": trial.status,
            "seconds": round(time.time() - getattr(self, "_trial_started", time.time()), 3),
        }
        write_json(Path(self.get_trial_dir(trial.trial_id)) / C.TUNE_WORKER_FILE, record)  # type: ignore[attr-defined]
        super().on_trial_end(trial)  # type: ignore[misc]


class RandomTuner(WorkerRecord, kt.RandomSearch):
    """Random search (Keras Tuner's ``RandomSearch``) with the worker record."""


class BayesianTuner(WorkerRecord, kt.BayesianOptimization):
    """Gaussian-process Bayesian optimization (Keras Tuner's ``BayesianOptimization``) with the worker record."""


class HyperbandTuner(WorkerRecord, kt.Hyperband):
    """Hyperband (Keras Tuner's ``Hyperband``, ``max_epochs`` = ``--epochs``) with the worker record."""


def make_tuner(plan: SearchPlan) -> Any:
    """Keras Tuner's tuner of ``--tuner`` over :class:`ToolkitHyperModel`; an earlier project is continued."""
    tune = plan.tune
    common = {
        "hypermodel": ToolkitHyperModel(plan),
        "objective": plan.objective,
        "seed": tune.seed,
        "executions_per_trial": tune.executions_per_trial,
        "directory": str(plan.output_dir),
        "project_name": C.TUNE_PROJECT_DIR,
        "overwrite": tune.overwrite and tune.role != "worker",
    }
    if tune.tuner == "hyperband":
        return HyperbandTuner(max_epochs=tune.epochs, factor=3, **common)
    cls = BayesianTuner if tune.tuner == "bayesian" else RandomTuner
    return cls(max_trials=tune.max_trials, **common)


@contextlib.contextmanager
def distributed_environment(env: Mapping[str, str]) -> Iterator[None]:
    """Set Keras Tuner's ``KERASTUNER_*`` variables for the body; restore the earlier environment after it."""
    keys = (ENV_TUNER_ID, ENV_ORACLE_IP, ENV_ORACLE_PORT)
    saved = {k: os.environ.get(k) for k in keys}
    for key in keys:
        os.environ.pop(key, None)
    os.environ.update(env)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextlib.contextmanager
def _quiet_search(verbose: int) -> Iterator[None]:
    """Below ``--verbose 2``: no traceback per failed trial (Keras Tuner's ``config.DEBUG``; the message stays in
    trial.json and trials.csv) and no TensorFlow retracing warnings (expected: every trial builds a new model)."""
    from keras_tuner.src import config as kt_config

    tf_logger = logging.getLogger("tensorflow")
    level, debug = tf_logger.level, kt_config.DEBUG
    if verbose < 2:
        tf_logger.setLevel(logging.ERROR)
        kt_config.DEBUG = False
    try:
        yield
    finally:
        tf_logger.setLevel(level)
        kt_config.DEBUG = debug


# ---------------------------------------------------------------------------------------- the search and its results


@dataclasses.dataclass
class SearchResult:
    role: str
    tuner_id: str
    trials_run: list[str]  # trial ids this process ran (none on the chief)
    best: dict[str, Any] | None  # best_hyperparameters.json (chief and local only)
    command: str | None


def run_search(plan: SearchPlan) -> SearchResult:
    """Run the search (or this process's part of a distributed one); the chief and a local search write the results."""
    tune = plan.tune
    writes = tune.role != "worker"
    with distributed_environment(plan.env), _quiet_search(tune.verbose):
        set_determinism(tune.seed)
        tuner = make_tuner(plan)
        if writes:
            _write_plan(plan)
        logger.info(
            "Searching %s over %d fit / %d validation rows of %d training rows (%s split), objective %s (%s)",
            ", ".join(plan.names), len(plan.fit_rows), len(plan.val_rows), len(plan.train_rows),
            "group-disjoint" if plan.groups is not None else "random", plan.objective.name, plan.objective.direction,
        )
        if tune.role == "chief":
            serve_oracle(tuner, verbose=min(tune.verbose, 1))
        else:
            _search_or_stop(plan, tuner)
        tuner_id = tuner.tuner_id
    if not writes:
        return SearchResult(tune.role, tuner_id, getattr(tuner, "trials_run", []), None, None)
    best, command = write_results(plan, tuner.oracle)
    return SearchResult(tune.role, tuner_id, getattr(tuner, "trials_run", []), best, command)


def _search_or_stop(plan: SearchPlan, tuner: Any) -> None:
    """``tuner.search``; Keras Tuner's stop after too many failed trials in a row becomes exit 3 with one line."""
    try:
        tuner.search(verbose=min(plan.tune.verbose, 1))
    except RuntimeError as exc:
        if "consecutive failures" not in str(exc):
            raise
        lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
        where = ""
        if plan.tune.role == "local":
            write_text(plan.output_dir / C.TUNE_TRIALS_FILE, trials_table(tuner.oracle, plan.names, plan.output_dir / C.TUNE_PROJECT_DIR))
            where = f"; the trials so far are in {plan.output_dir / C.TUNE_TRIALS_FILE}"
        raise TrainingStopped(
            f"Keras Tuner stopped the search: {lines[0]} (the last: {lines[-1]}){where}", EXIT_DIVERGED
        ) from None


def serve_oracle(tuner: Any, verbose: int, poll_s: float = 1.0) -> None:
    """The chief: Keras Tuner's own oracle server (``tuner.search`` on the chief) until every worker is done.

    Keras Tuner's ``oracle_chief.start_server`` serves the oracle over gRPC and
    returns once every worker has been told to stop and no trial runs
    (``oracle_chief.exit_chief``), checking that every 20 s. It runs here in a
    daemon thread, and this thread checks the same condition every ``poll_s``
    seconds, so the chief writes the results as soon as the last worker is done.
    """
    from keras_tuner.src.distribute.oracle_chief import exit_chief

    failure: list[BaseException] = []

    def serve() -> None:
        try:
            tuner.search(verbose=verbose)
        except BaseException as exc:  # reported by the main thread
            failure.append(exc)

    server = threading.Thread(target=serve, name="keras-tuner-oracle", daemon=True)
    server.start()
    oracle = tuner.oracle
    while server.is_alive():
        time.sleep(poll_s)
        if oracle.trials and exit_chief(oracle):  # every worker that asked was told to stop, none is running
            break
    if failure:
        raise failure[0]


def _write_plan(plan: SearchPlan) -> None:
    out = plan.output_dir
    save_npy(out / C.TUNE_FIT_ROWS_FILE, plan.fit_rows.astype(np.int64))
    save_npy(out / C.TUNE_VAL_ROWS_FILE, plan.val_rows.astype(np.int64))
    write_json(out / C.TUNE_SETTINGS_FILE, {
        "tuning": to_flat(plan.tune),
        "training": plan.base.to_dict(),
        "objective": {"name": plan.objective.name, "direction": plan.objective.direction},
        "search_space": space_record(plan),
        "rows": {
            "n": len(plan.data), "training": len(plan.train_rows), "fit": len(plan.fit_rows),
            "validation": len(plan.val_rows), "groups_known": plan.groups is not None,
        },
    })


def trial_worker(project: Path, trial_id: str) -> str:
    """The tuner id recorded in a trial's folder ("" when none was)."""
    path = project / f"trial_{trial_id}" / C.TUNE_WORKER_FILE
    return str(json.loads(path.read_text(encoding="utf-8")).get("tuner_id", "")) if path.is_file() else ""


def trials_table(oracle: Any, names: tuple[str, ...], project: Path) -> str:
    """``trials.csv``: one row per trial (id, status, score, best step, worker, each searched value, message)."""
    extra = sorted({k for t in oracle.trials.values() for k in t.hyperparameters.values} - set(names))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["trial_id", "status", "score", "best_step", "worker", *names, *extra, "message"])
    for trial_id in sorted(oracle.trials):
        t = oracle.trials[trial_id]
        values = t.hyperparameters.values
        message = (t.message or "").strip().splitlines()
        writer.writerow([
            trial_id, t.status, "" if t.score is None else repr(float(t.score)), "" if t.best_step is None else t.best_step,
            trial_worker(project, trial_id), *(values.get(n, "") for n in (*names, *extra)), message[-1] if message else "",
        ])
    return buffer.getvalue()


def training_command(plan: SearchPlan, values: Mapping[str, Any]) -> list[str]:
    """``train_personality_model.py``'s command line with the best values, on the search's own fit/validation rows.

    States the data, row files, output, epochs and seed, every searched value
    and every training flag the search was given with a non-default value.
    """
    out = plan.output_dir
    cfg = dataclasses.replace(
        config_for(plan, values),
        train_rows=str(out / C.TUNE_FIT_ROWS_FILE),
        val_rows=str(out / C.TUNE_VAL_ROWS_FILE),
        epochs=plan.tune.epochs,
        seed=plan.tune.seed,
    )
    flat = cfg.to_dict()
    argv = ["python", TRAINING_SCRIPT]
    for f in flag_fields(TrainConfig):
        value = flat[f.name]
        if value is None or (f.name not in ALWAYS_STATED and f.name not in plan.names and value == f.default):
            continue
        if isinstance(f.default, bool):
            argv += [f"--{f.name}"] if value else [f"--no-{f.name}"]
        else:
            argv += [f"--{f.name}", repr(value) if isinstance(value, float) else str(value)]
    return argv


def write_results(plan: SearchPlan, oracle: Any) -> tuple[dict[str, Any], str]:
    """``trials.csv``, ``best_hyperparameters.json`` and the training command, from Keras Tuner's oracle."""
    out = plan.output_dir
    project = out / C.TUNE_PROJECT_DIR
    write_text(out / C.TUNE_TRIALS_FILE, trials_table(oracle, plan.names, project))
    best_trials = oracle.get_best_trials(1)
    if not best_trials:
        raise TrainingStopped(f"no trial finished with a score; see the messages in {out / C.TUNE_TRIALS_FILE}", EXIT_DIVERGED)
    best = best_trials[0]
    command = shlex.join(training_command(plan, best.hyperparameters.values))
    statuses = [t.status for t in oracle.trials.values()]
    record = {
        "objective": {"name": plan.objective.name, "direction": plan.objective.direction},
        "trial_id": best.trial_id,
        "score": float(best.score),
        "best_step": best.best_step,
        "hyperparameters": dict(best.hyperparameters.values),
        "searched": list(plan.names),
        "trials": {status: statuses.count(status) for status in sorted(set(statuses))},
        "worker": trial_worker(project, best.trial_id),
        "training_command": command,
    }
    write_json(out / C.TUNE_BEST_FILE, record)
    write_text(out / C.TUNE_COMMAND_FILE, command + "\n")
    return record, command


def format_result(result: SearchResult, output_dir: str) -> str:
    """What the script prints at the end."""
    if result.best is None:
        ran = ", ".join(result.trials_run) or "none"
        return f"worker {result.tuner_id} ran trial(s) {ran}; the chief writes the results into {output_dir}"
    best = result.best
    values = "  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in best["hyperparameters"].items())
    return "\n".join([
        "",
        f"Best trial {best['trial_id']}: {best['objective']['name']} {best['score']:.4f} ({sum(best['trials'].values())} trials: "
        + ", ".join(f"{n} {s}" for s, n in best["trials"].items()) + ")",
        f"  {values}",
        f"Files in {output_dir}: {C.TUNE_BEST_FILE}, {C.TUNE_TRIALS_FILE}, {C.TUNE_COMMAND_FILE}, {C.TUNE_PROJECT_DIR}/",
        "Train with the best settings:",
        f"  {result.command}",
    ])


__all__ = [
    "SEARCH_SPACE",
    "SearchPlan",
    "ToolkitHyperModel",
    "prepare_search",
    "run_search",
    "training_command",
    "format_result",
]
