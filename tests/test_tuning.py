"""Hyperparameter search with Keras Tuner (scripts/tune_hyperparameters.py, utils/tuning.py).

The checks read Keras Tuner's own files (``trial_<id>/trial.json``, its oracle
reloaded from them) and the rows the models were actually given (recorded by
wrapping the data pipeline and the model builder), never the search's printout.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import numpy as np
import pytest

from scripts import train_personality_model, tune_hyperparameters
from tests.conftest import write_features
from utils import constants as C
from utils.config import TUNABLE, TrainConfig

N, PEOPLE = 60, 12


@pytest.fixture(autouse=True)
def console_handler_of_this_test():
    """utils.cli adds its console handler once, bound to the sys.stdout of that moment; pytest's capture replaces
    sys.stdout per test, so a handler left by an earlier in-process main() would write to a closed stream."""
    import logging

    def drop() -> None:
        root = logging.getLogger()
        for handler in [h for h in root.handlers if getattr(h, "_toolkit_console", False)]:
            root.removeHandler(handler)

    drop()
    yield
    drop()


@pytest.fixture
def grouped_data(tmp_path: Path) -> dict[str, str]:
    """Tiny features, one person per 5 clips (rows shuffled), and training rows that leave two people out."""
    paths = write_features(tmp_path / "data", n=N)
    rng = np.random.default_rng(1)
    groups = np.array([f"p{k}" for k in rng.permutation(np.repeat(np.arange(PEOPLE), N // PEOPLE))])
    (tmp_path / "data" / "groups.txt").write_text("\n".join(groups) + "\n", encoding="utf-8")
    np.save(tmp_path / "data" / "train_rows.npy", np.flatnonzero(~np.isin(groups, ["p10", "p11"])))
    return {**paths, "groups": str(tmp_path / "data" / "groups.txt"), "train_rows": str(tmp_path / "data" / "train_rows.npy")}


def tune_args(paths: dict[str, str], out: Path, *extra: str) -> list[str]:
    return [
        "--static_features", paths["static_features"], "--dynamic_features", paths["dynamic_features"],
        "--labels", paths["labels"], "--output_dir", str(out),
        "--max_trials", "2", "--epochs", "1", "--width", "16", "--num_heads", "2", "--head_units", "16",
        "--no-jit_compile", "--verbose", "0", *extra,
    ]


def reloaded_best(project: Path, objective: str = "val_r_squared", direction: str = "max") -> tuple[str, float, dict]:
    """Keras Tuner's own oracle, reloaded from the project's trial files: its best trial."""
    import keras_tuner as kt

    oracle = kt.oracles.RandomSearchOracle(objective=kt.Objective(objective, direction), max_trials=100)
    oracle._set_project_dir(str(project.parent), project.name)
    oracle.reload()
    best = oracle.get_best_trials(1)[0]
    return best.trial_id, best.score, best.hyperparameters.values


def test_the_search_trains_on_fit_rows_and_scores_on_validation_rows_inside_the_training_rows(
    grouped_data, tmp_path, monkeypatch, capsys
):
    import models.cross_attention
    import utils.tuning

    fits, builds = [], []
    real_dataset, real_build = utils.tuning.make_tf_dataset, models.cross_attention.build_model_for_data

    def spy_dataset(data, batches, *args, **kwargs):
        assert isinstance(data.static, np.memmap) and isinstance(data.dynamic, np.memmap)  # read from disk, not copied
        fits.append((batches.shuffle, np.sort(batches.indices)))
        return real_dataset(data, batches, *args, **kwargs)

    def spy_build(config, static, dynamic, labels, train_idx):
        builds.append(np.sort(np.asarray(train_idx)))
        return real_build(config, static, dynamic, labels, train_idx)

    monkeypatch.setattr(utils.tuning, "make_tf_dataset", spy_dataset)
    monkeypatch.setattr(models.cross_attention, "build_model_for_data", spy_build)
    out = tmp_path / "search"
    argv = tune_args(grouped_data, out, "--groups", grouped_data["groups"], "--train_rows", grouped_data["train_rows"])
    assert tune_hyperparameters.main(argv) == 0

    groups = np.array(Path(grouped_data["groups"]).read_text(encoding="utf-8").split())
    train_rows = np.load(grouped_data["train_rows"])
    trained = [rows for shuffled, rows in fits if shuffled]
    scored = [rows for shuffled, rows in fits if not shuffled]
    assert len(trained) == len(scored) == 2  # one model per trial, max_trials 2
    for fit, val in zip(trained, scored):
        assert set(fit) <= set(train_rows) and set(val) <= set(train_rows)
        assert not set(groups[fit]) & set(groups[val])  # group-disjoint
        assert np.array_equal(np.union1d(fit, val), train_rows)
        assert not set(groups[fit]) & {"p10", "p11"} and not set(groups[val]) & {"p10", "p11"}
    # normalization statistics, output prior and ridge warm start come from the fit rows only
    assert builds and all(np.array_equal(b, trained[0]) for b in builds)

    # best_hyperparameters.json is Keras Tuner's best trial (its oracle reloaded from its own files)
    best = json.loads((out / C.TUNE_BEST_FILE).read_text(encoding="utf-8"))
    trial_id, score, values = reloaded_best(out / C.TUNE_PROJECT_DIR)
    assert (best["trial_id"], best["score"], best["hyperparameters"]) == (trial_id, score, values)
    records = [json.loads(p.read_text()) for p in sorted((out / C.TUNE_PROJECT_DIR).glob("trial_*/trial.json"))]
    assert len(records) == 2 and {r["status"] for r in records} == {"COMPLETED"}
    assert best["score"] == max(r["score"] for r in records)

    # trials.csv: one row per Keras Tuner trial, with its score and values
    import csv

    rows = list(csv.DictReader((out / C.TUNE_TRIALS_FILE).open(encoding="utf-8")))
    assert sorted(r["trial_id"] for r in rows) == sorted(r["trial_id"] for r in records)
    for row in rows:
        record = next(r for r in records if r["trial_id"] == row["trial_id"])
        assert float(row["score"]) == pytest.approx(record["score"], rel=1e-12)
        assert float(row["learning_rate"]) == pytest.approx(record["hyperparameters"]["values"]["learning_rate"], rel=1e-12)

    # the printed command is one the training script accepts, with the best values and the search's rows
    command = capsys.readouterr().out.strip().splitlines()[-1].strip()
    assert command == (out / C.TUNE_COMMAND_FILE).read_text(encoding="utf-8").strip() == best["training_command"]
    tokens = shlex.split(command)
    assert tokens[:2] == ["python", "scripts/train_personality_model.py"]
    cfg = TrainConfig.from_dict(vars(train_personality_model.build_parser().parse_args(tokens[2:])))
    flat = cfg.to_dict()
    for name, value in values.items():
        assert flat[name] == value, name
    assert np.array_equal(np.load(cfg.train_rows), trained[0]) and np.array_equal(np.load(cfg.val_rows), scored[0])
    assert (cfg.groups, cfg.model.width, cfg.model.num_heads, cfg.jit_compile) == (grouped_data["groups"], values["width"], 2, False)

    # ... and running it reproduces the best trial: same rows, seed and settings, so the same validation R²
    monkeypatch.undo()
    assert train_personality_model.main([*tokens[2:], "--verbose", "0"]) == 0
    history = json.loads((out / C.TUNE_BEST_RUN_DIR / C.HISTORY_JSON_FILE).read_text(encoding="utf-8"))
    epoch = history["epoch"].index(best["best_step"] + 1)  # Keras Tuner's step is the 0-based epoch
    assert history["val_r_squared"][epoch] == pytest.approx(best["score"], abs=1e-6)


def test_the_loss_objective_and_a_narrow_search_space(tiny_data, tmp_path):
    out = tmp_path / "search"
    argv = tune_args(tiny_data, out, "--objective", "loss", "--search", "learning_rate,head_units", "--tuner", "bayesian")
    assert tune_hyperparameters.main(argv) == 0
    best = json.loads((out / C.TUNE_BEST_FILE).read_text(encoding="utf-8"))
    assert best["objective"] == {"name": "val_loss", "direction": "min"}
    assert set(best["hyperparameters"]) == {"learning_rate", "head_units"}
    trial_id, score, values = reloaded_best(out / C.TUNE_PROJECT_DIR, "val_loss", "min")
    assert (best["trial_id"], best["score"], best["hyperparameters"]) == (trial_id, score, values)


def test_the_search_space_covers_the_searchable_flags():
    from utils.tuning import SEARCH_SPACE

    assert tuple(SEARCH_SPACE) == TUNABLE
    flags = {a.dest for a in train_personality_model.build_parser()._actions}
    assert set(TUNABLE) <= flags  # every searched name is a training flag


@pytest.mark.parametrize(
    "change, words",
    [
        ("labels", "expected the same number of samples"),
        ("role", "expected --oracle HOST:PORT with --role worker"),
        ("oracle", "expected --oracle as HOST:PORT"),
        ("search", "expected --search"),
        ("keys", "expected --fusion pooled_query to search attention_keys"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(tiny_data, tmp_path, capsys, change, words):
    out = tmp_path / "search"
    paths = dict(tiny_data)
    extra: list[str] = []
    if change == "labels":
        np.save(tmp_path / "short_labels.npy", np.full((N - 1, 5), 0.5, dtype="float32"))
        paths["labels"] = str(tmp_path / "short_labels.npy")
    elif change == "role":
        extra = ["--role", "worker"]
    elif change == "oracle":
        extra = ["--role", "chief", "--oracle", "localhost"]
    elif change == "search":
        extra = ["--search", "learning_rate,colour"]
    else:
        extra = ["--fusion", "concat", "--search", "attention_keys"]
    capsys.readouterr()
    assert tune_hyperparameters.main(tune_args(paths, out, *extra)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and words in err[0], err
    assert not out.exists()


def test_a_chief_and_two_workers_on_loopback_share_one_search(tmp_path):
    """Keras Tuner's distributed mode: three processes, one oracle; both workers run trials."""
    from benchmarks.tuner_two_workers import WORKERS, run_two_workers

    result = run_two_workers(tmp_path, trials=3, epochs=1, timeout_s=240)
    assert result["returncodes"] == {"chief": 0, **{w: 0 for w in WORKERS}}, result
    project = Path(result["output_dir"]) / C.TUNE_PROJECT_DIR
    records = [json.loads(p.read_text()) for p in sorted(project.glob("trial_*/trial.json"))]
    assert len(records) == 3 and all(r["status"] == "COMPLETED" and r["score"] is not None for r in records)
    # Keras Tuner's own per-tuner state files: each worker's tuner saved after ending a trial
    assert {p.stem for p in project.glob("*.json")} >= {"chief", *WORKERS}
    ran = {t["tuner_id"] for t in result["trials"]}
    assert ran == set(WORKERS), result["trials"]
    assert len({t["pid"] for t in result["trials"]}) == 2
    best = json.loads((Path(result["output_dir"]) / C.TUNE_BEST_FILE).read_text(encoding="utf-8"))
    trial_id, score, values = reloaded_best(project)
    assert (best["trial_id"], best["score"], best["hyperparameters"]) == (trial_id, score, values)


def test_a_distributed_search_refuses_in_one_line_when_keras_tuners_grpc_modules_do_not_load(
    tiny_data, tmp_path, capsys, monkeypatch
):
    from keras_tuner.src import protos

    def broken():
        raise ImportError("cannot import name 'runtime_version' from 'google.protobuf'")

    monkeypatch.setattr(protos, "get_service_grpc", broken)
    out = tmp_path / "search"
    capsys.readouterr()
    assert tune_hyperparameters.main(tune_args(tiny_data, out, "--role", "chief", "--oracle", "127.0.0.1:8000")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot load its gRPC modules with protobuf" in err[0] and "runtime_version" in err[0], err
    assert not out.exists()


def test_a_worker_whose_inner_split_differs_from_the_chiefs_refuses(tiny_data, tmp_path, capsys):
    out = tmp_path / "search"
    out.mkdir()
    np.save(out / C.TUNE_FIT_ROWS_FILE, np.arange(10))  # what a chief with other data or flags would have written
    capsys.readouterr()
    argv = tune_args(tiny_data, out, "--role", "worker", "--oracle", "127.0.0.1:8000", "--worker_id", "w1")
    assert tune_hyperparameters.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "inner split to be the chief's" in err[0] and C.TUNE_FIT_ROWS_FILE in err[0], err
    assert [p.name for p in out.iterdir()] == [C.TUNE_FIT_ROWS_FILE]


def test_the_parser_is_tune_config_plus_the_passed_through_training_flags():
    import ast

    from utils.cli import flag_fields
    from utils.config import TuneConfig

    actions = {a.dest: a for a in tune_hyperparameters.build_parser()._actions if a.dest != "help"}
    own = {f.name: f for f in flag_fields(TuneConfig)}
    passed = {f.name: f for f in flag_fields(TrainConfig) if f.name not in own and f.name not in tune_hyperparameters.NOT_PASSED}
    assert set(actions) == set(own) | set(passed)
    for name, f in {**passed, **own}.items():
        assert (actions[name].default, actions[name].help) == (f.default, f.metadata["help"]), name
    assert {"oracle", "role", "worker_id", "tuner", "max_trials", "objective", "search"} <= set(own)
    tree = ast.parse(Path(tune_hyperparameters.__file__).read_text(encoding="utf-8"))
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)]
    assert not [c for c in calls if isinstance(c.func, ast.Attribute) and c.func.attr == "add_argument"]
    assert not [k for c in calls for k in c.keywords if k.arg == "default"]


def test_three_failed_trials_in_a_row_stop_the_search_with_exit_3_and_one_line(tiny_data, tmp_path, capsys, monkeypatch):
    import keras_tuner as kt

    import utils.tuning

    def diverge(self, hp, model, *args, **kwargs):
        raise kt.errors.FailedTrialError("the loss became nan; try lower rates")

    monkeypatch.setattr(utils.tuning.ToolkitHyperModel, "fit", diverge)
    out = tmp_path / "search"
    capsys.readouterr()
    assert tune_hyperparameters.main(tune_args(tiny_data, out, "--max_trials", "5", "--search", "dropout")) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "consecutive failures" in err[0] and "the loss became nan" in err[0], err
    import csv

    rows = list(csv.DictReader((out / C.TUNE_TRIALS_FILE).open(encoding="utf-8")))
    assert len(rows) == 3 and {r["status"] for r in rows} == {"FAILED"}
    assert all("the loss became nan" in r["message"] for r in rows)
