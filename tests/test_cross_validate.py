"""scripts/cross_validate.py: folds, inner splits, intervals, leakage, slices, bad inputs.

Fast variants (ridge, mean) carry most tests; one tiny network run checks that
a network job is a normal training run with group-disjoint row files.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from scripts import cross_validate
from utils import constants as C
from utils.cv.folds import assign_folds, inner_split
from utils.synthetic_groups import PersonEffectsSpec, write_person_effects


@pytest.fixture(scope="module")
def people(tmp_path_factory) -> dict[str, Path]:
    """The per-person-effects data set: 100 people x 3 clips, only identity predicts the label."""
    return write_person_effects(tmp_path_factory.mktemp("people"), PersonEffectsSpec())


def _data_args(paths: dict[str, Path]) -> list[str]:
    return [
        "--static_features", str(paths["static_features"]),
        "--dynamic_features", str(paths["dynamic_features"]),
        "--labels", str(paths["labels"]),
    ]


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


# ------------------------------------------------------------------ folds


def test_no_group_in_two_folds():
    rng = np.random.default_rng(0)
    groups = np.array([f"g{k}" for k in rng.integers(0, 37, size=300)])
    fold = assign_folds(len(groups), 5, groups, seed=3)
    assert set(fold.tolist()) == set(range(5))
    for g in np.unique(groups):
        assert len(set(fold[groups == g].tolist())) == 1, g
    plain = assign_folds(300, 5, None, seed=3)
    assert np.bincount(plain).tolist() == [60] * 5  # KFold: every row in exactly one fold


def test_inner_validation_is_group_disjoint_from_test_and_fit():
    rng = np.random.default_rng(1)
    groups = np.array([f"p{k}" for k in rng.integers(0, 40, size=200)])
    fold = assign_folds(200, 4, groups, seed=0)
    for k in range(4):
        test = np.flatnonzero(fold == k)
        fit, val = inner_split(np.flatnonzero(fold != k), groups, 0.2, seed=k)
        assert len(fit) and len(val)
        assert not set(groups[val]) & set(groups[test])
        assert not set(groups[val]) & set(groups[fit])
        assert not set(val) & set(test) and not set(fit) & set(test)
        assert sorted([*fit, *val]) == sorted(np.flatnonzero(fold != k))


# ------------------------------------------------------------------ the experiment


@pytest.fixture(scope="module")
def grouped_run(people, tmp_path_factory) -> tuple[Path, int]:
    out = tmp_path_factory.mktemp("cv") / "grouped"
    rc = cross_validate.main(
        [*_data_args(people), "--ids", str(people["ids"]), "--variants", "ridge,mean",
         "--folds", "3", "--seeds", "2", "--output", str(out)]
    )
    return out, rc


@pytest.fixture(scope="module")
def random_run(people, tmp_path_factory) -> tuple[Path, int]:
    out = tmp_path_factory.mktemp("cv") / "random"
    rc = cross_validate.main(
        [*_data_args(people), "--ids", str(people["ids"]), "--variants", "ridge,mean",
         "--folds", "3", "--seeds", "1", "--grouping", "none", "--output", str(out)]
    )
    return out, rc


def test_outputs_and_folds_csv(grouped_run, people):
    out, rc = grouped_run
    assert rc == 0
    for name in (C.CV_FOLDS_FILE, C.CV_RESULTS_FILE, C.CV_SUMMARY_FILE, C.CV_R2_FIGURE, C.CV_DIFFERENCE_FIGURE):
        assert (out / name).is_file(), name
    folds = _read_csv(out / C.CV_FOLDS_FILE)
    ids = people["ids"].read_text(encoding="utf-8").split()
    assert [r["id"] for r in folds] == ids
    assert [int(r["row"]) for r in folds] == list(range(len(ids)))
    by_group: dict[str, set[str]] = {}
    for r in folds:
        assert r["group"] == r["id"].split(".")[0]
        by_group.setdefault(r["group"], set()).add(r["fold"])
    assert all(len(f) == 1 for f in by_group.values())
    with open(out / C.CV_RESULTS_FILE, newline="", encoding="utf-8") as fh:
        header = next(csv.reader(fh))
    assert header == ["variant", "fold", "seed", "trait", "metric", "value"]
    rows = _read_csv(out / C.CV_RESULTS_FILE)
    assert {r["metric"] for r in rows} == {"r2", "mae", "mse", "pearson", "ccc", "accuracy"}
    assert {r["trait"] for r in rows} == {*C.TRAITS, "mean"}
    assert len(rows) == 2 * 3 * 2 * 6 * 6  # variants x folds x seeds x traits x metrics


def test_summary_intervals_equal_scipy_from_results_csv(grouped_run):
    out, _ = grouped_run
    summary = json.loads((out / C.CV_SUMMARY_FILE).read_text(encoding="utf-8"))
    rows = _read_csv(out / C.CV_RESULTS_FILE)

    def folds_of(variant: str, trait: str, metric: str) -> np.ndarray:
        values: dict[int, list[float]] = {}
        for r in rows:
            if (r["variant"], r["trait"], r["metric"]) == (variant, trait, metric):
                values.setdefault(int(r["fold"]), []).append(float(r["value"]))
        return np.array([np.mean(values[k]) for k in sorted(values)])

    for variant in ("ridge", "mean"):
        for trait in ("openness", "mean"):
            for metric in ("r2", "mae", "ccc"):
                v = folds_of(variant, trait, metric)
                got = summary["variants"][variant][trait][metric]
                if stats.sem(v) > 0:
                    low, high = stats.t.interval(0.95, len(v) - 1, loc=v.mean(), scale=stats.sem(v))
                else:  # e.g. the CCC of a constant predictor is 0 in every fold: scipy gives NaN for scale 0
                    low = high = v.mean()
                assert got["n_folds"] == 3
                assert got["mean"] == pytest.approx(v.mean(), rel=1e-12)
                assert got["sd"] == pytest.approx(v.std(ddof=1), rel=1e-12)
                assert got["ci95"] == pytest.approx([low, high], rel=1e-9, abs=1e-12)
    # Nadeau-Bengio: sd of the paired differences scaled by sqrt(1/K + n_test/n_train).
    comparisons = summary["comparisons"]
    assert comparisons["reference"] == "ridge" and "Nadeau" in comparisons["method"]
    fold_sizes = np.array(summary["protocol"]["fold_sizes"])
    ratio = np.mean(fold_sizes / (fold_sizes.sum() - fold_sizes))
    d = folds_of("mean", "mean", "r2") - folds_of("ridge", "mean", "r2")
    se = np.sqrt(1 / len(d) + ratio) * d.std(ddof=1)
    low, high = stats.t.interval(0.95, len(d) - 1, loc=d.mean(), scale=se)
    got = comparisons["variants"]["mean"]["mean"]["r2"]
    assert got["mean_difference"] == pytest.approx(d.mean(), rel=1e-12)
    assert got["ci95"] == pytest.approx([low, high], rel=1e-9)


def test_per_person_effects_random_split_leaks_group_split_does_not(grouped_run, random_run, capsys):
    grouped = json.loads((grouped_run[0] / C.CV_SUMMARY_FILE).read_text(encoding="utf-8"))
    random = json.loads((random_run[0] / C.CV_SUMMARY_FILE).read_text(encoding="utf-8"))
    assert random_run[1] == 0
    # Memorized people: high R² under a random split ...
    assert random["variants"]["ridge"]["mean"]["r2"]["mean"] > 0.4
    assert random["leakage"]["test_clips_sharing_a_group_with_train"] > 200
    assert random["protocol"]["fold_splitter"].startswith("KFold")
    # ... and about zero (no better than the training mean) for new people.
    ridge = grouped["variants"]["ridge"]["mean"]["r2"]
    assert ridge["mean"] < 0.1 and ridge["ci95"][0] < 0.0
    assert grouped["comparisons"]["variants"]["mean"]["mean"]["r2"]["within_noise"] is True
    assert grouped["leakage"]["test_clips_sharing_a_group_with_train"] == 0
    assert grouped["protocol"]["fold_splitter"].startswith("GroupKFold")


def test_two_slices_and_aggregate_equal_one_run(people, grouped_run, tmp_path, capsys):
    out = tmp_path / "sliced"
    args = [*_data_args(people), "--ids", str(people["ids"]), "--variants", "ridge,mean",
            "--folds", "3", "--seeds", "2", "--output", str(out)]
    assert cross_validate.main([*args, "--jobs", "1/2"]) == 0
    assert not (out / C.CV_SUMMARY_FILE).exists()
    assert "6 of 12 job(s) finished" in capsys.readouterr().out
    assert cross_validate.main([*args, "--jobs", "2/2"]) == 0  # finds all finished: aggregates
    first = (out / C.CV_RESULTS_FILE).read_text(encoding="utf-8")
    (out / C.CV_RESULTS_FILE).unlink()
    (out / C.CV_SUMMARY_FILE).unlink()
    stamp = (out / "runs" / "ridge" / "fold0" / "seed42" / C.CV_JOB_RESULT_FILE).stat().st_mtime_ns
    assert cross_validate.main([*args, "--aggregate"]) == 0
    assert (out / C.CV_RESULTS_FILE).read_text(encoding="utf-8") == first
    whole = grouped_run[0]
    assert first == (whole / C.CV_RESULTS_FILE).read_text(encoding="utf-8")
    a = json.loads((out / C.CV_SUMMARY_FILE).read_text(encoding="utf-8"))
    b = json.loads((whole / C.CV_SUMMARY_FILE).read_text(encoding="utf-8"))
    assert a["variants"] == b["variants"] and a["comparisons"] == b["comparisons"]
    # A rerun skips finished jobs.
    capsys.readouterr()
    assert cross_validate.main(args) == 0
    assert (out / "runs" / "ridge" / "fold0" / "seed42" / C.CV_JOB_RESULT_FILE).stat().st_mtime_ns == stamp
    assert "12 of 12 job(s) in slice 1/1 (12 already finished)" in capsys.readouterr().out


def test_aggregate_refuses_unfinished_jobs(people, tmp_path, capsys):
    out = tmp_path / "partial"
    args = [*_data_args(people), "--variants", "mean", "--folds", "2", "--output", str(out)]
    assert cross_validate.main([*args, "--jobs", "1/2"]) == 0
    capsys.readouterr()
    assert cross_validate.main([*args, "--aggregate"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "unfinished" in err and "mean fold 1" in err
    assert not (out / C.CV_SUMMARY_FILE).exists()


def test_other_settings_in_the_same_folder_are_refused(people, tmp_path, capsys):
    out = tmp_path / "exp"
    base = [*_data_args(people), "--variants", "mean", "--folds", "2", "--output", str(out)]
    assert cross_validate.main(base) == 0
    capsys.readouterr()
    assert cross_validate.main([*base[:-4], "--folds", "3", "--output", str(out)]) == 2
    assert "use a new --output folder" in capsys.readouterr().err


def test_workers_run_jobs_in_spawned_processes(people, tmp_path):
    out = tmp_path / "workers"
    args = [*_data_args(people), "--variants", "mean", "--folds", "2", "--workers", "2", "--output", str(out)]
    assert cross_validate.main(args) == 0
    results = sorted((out / "runs" / "mean").glob(f"fold*/seed42/{C.CV_JOB_RESULT_FILE}"))
    assert len(results) == 2 and (out / C.CV_SUMMARY_FILE).is_file()


# ------------------------------------------------------------------ bad inputs


@pytest.mark.parametrize(
    ("content", "extra", "message"),
    [
        ("count", [], "expected 300 ids"),
        ("duplicate", [], "duplicate"),
        ("empty", [], "empty one in row 5"),
        ("few_groups", ["--folds", "5"], "at least 5 distinct groups"),
    ],
)
def test_bad_ids_exit_2_one_line_nothing_written(people, tmp_path, capsys, content, extra, message):
    names = people["ids"].read_text(encoding="utf-8").split()
    if content == "count":
        names = names[:-1]
    elif content == "duplicate":
        names[7] = names[3]
    elif content == "empty":
        names[5] = ""
    elif content == "few_groups":
        names = [f"{'ab'[i % 2]}.{i:03d}.mp4" for i in range(len(names))]
    bad = tmp_path / "bad_ids.txt"
    bad.write_text("\n".join(names) + "\n", encoding="utf-8")
    out = tmp_path / "never"
    rc = cross_validate.main(
        [*_data_args(people), "--ids", str(bad), "--variants", "mean", "--output", str(out), *extra]
    )
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1 and str(bad) in err and message in err, err
    assert not out.exists()


def test_bad_flags_exit_2(people, tmp_path, capsys):
    for flags, message in (
        (["--variants", "ridge,bogus"], "--variants"),
        (["--jobs", "3/2"], "--jobs"),
        (["--folds", "1"], "--folds"),
        (["--variants", "mean", "--reference", "ridge"], "--reference"),
    ):
        rc = cross_validate.main([*_data_args(people), *flags, "--output", str(tmp_path / "x")])
        err = capsys.readouterr().err.strip()
        assert rc == 2 and message in err and len(err.splitlines()) == 1, (flags, err)
        assert not (tmp_path / "x").exists()


# ------------------------------------------------------------------ a network variant


def test_network_job_is_a_training_run_with_disjoint_rows(people, tmp_path):
    out = tmp_path / "net"
    rc = cross_validate.main(
        [*_data_args(people), "--ids", str(people["ids"]), "--variants", "concat,mean", "--folds", "2",
         "--epochs", "1", "--width", "8", "--num_heads", "2", "--head_units", "8", "--batch_size", "64",
         "--histogram_freq", "0", "--batch_log_frequency", "0", "--no-jit_compile", "--output", str(out)]
    )
    assert rc == 0
    groups = np.array([name.split(".")[0] for name in people["ids"].read_text(encoding="utf-8").split()])
    for k in range(2):
        run = out / "runs" / "concat" / f"fold{k}" / "seed42"
        summary = json.loads((run / C.TRAINING_SUMMARY_FILE).read_text(encoding="utf-8"))
        assert (run / C.MODEL_FILE).is_file() and (run / C.TENSORBOARD_DIR).is_dir()
        fit, val, test = (np.load(run / "rows" / f"{n}.npy") for n in ("train", "val", "test"))
        assert summary["n_train"] == len(fit) and summary["n_val"] == len(val)
        assert not set(groups[val]) & set(groups[test]) and not set(groups[val]) & set(groups[fit])
        assert not set(groups[fit]) & set(groups[test])
        predictions = _read_csv(run / "test_predictions.csv")
        assert [int(r["row"]) for r in predictions] == test.tolist()
    summary = json.loads((out / C.CV_SUMMARY_FILE).read_text(encoding="utf-8"))
    assert summary["comparisons"]["reference"] == "concat"


def test_interruption_inside_a_job_stops_the_run_and_keeps_finished_jobs(people, tmp_path, monkeypatch):
    """Ctrl-C/SIGTERM inside model.fit arrives as TrainingStopped(130/143): stop, not "job failed, next"."""
    from utils.cv import experiment
    from utils.errors import EXIT_INTERRUPTED, EXIT_TERMINATED, TrainingStopped

    real_run_job = experiment.run_job
    for code in (EXIT_INTERRUPTED, EXIT_TERMINATED):
        cfg = experiment.ExperimentConfig(
            static_features=str(people["static_features"]), dynamic_features=str(people["dynamic_features"]),
            labels=str(people["labels"]), output=str(tmp_path / f"exp{code}"), variants=("mean",), folds=3,
        )
        exp = experiment.prepare_experiment(cfg)
        calls = []

        def fake(ctx, job, data, code=code, calls=calls):
            calls.append(job)
            if len(calls) == 2:
                raise TrainingStopped("interrupted during epoch 1", code)
            return real_run_job(ctx, job, data)

        monkeypatch.setattr(experiment, "run_job", fake)
        with pytest.raises(TrainingStopped) as info:
            experiment.run_jobs(exp, exp.jobs)
        assert info.value.exit_code == EXIT_INTERRUPTED and len(calls) == 2  # the third job never started
        assert [j.finished(cfg.output) for j in exp.jobs] == [True, False, False]
