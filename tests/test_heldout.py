"""Training split by group, the leakage block, the held-out guard by content, intervals in metrics.json."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import scripts.analyze_model_predictions as analyze
from scripts.train_personality_model import main as train_main
from tests.conftest import train_args
from utils import constants as C
from utils.synthetic_groups import PersonEffectsSpec, write_person_effects

SPEC = PersonEffectsSpec(n_people=16, clips_per_person=3, static_dim=8, dynamic_dim=6, static_tokens=2, dynamic_tokens=2)


@pytest.fixture(autouse=True)
def _hash_cache(tmp_path, monkeypatch):
    from utils import hashing

    monkeypatch.setenv(hashing.CACHE_ENV, str(tmp_path / "sha256-cache.json"))


@pytest.fixture(scope="module")
def people(tmp_path_factory) -> dict[str, str]:
    return {k: str(v) for k, v in write_person_effects(tmp_path_factory.mktemp("people"), SPEC).items()}


@pytest.fixture(scope="module")
def random_run(people, tmp_path_factory) -> Path:
    """A 1-epoch run with ids and a random (leaking) split."""
    out = tmp_path_factory.mktemp("random_run")
    assert train_main(train_args(people, out, "--epochs", "1", "--ids", people["ids"], "--split", "random")) == 0
    return out


def _groups(people: dict[str, str]) -> np.ndarray:
    return np.array([n.split(".")[0] for n in Path(people["ids"]).read_text(encoding="utf-8").split()])


def _analyze(model: Path, data: dict[str, str], out: Path, *extra: str) -> tuple[int, dict]:
    code = analyze.main([
        "--model", str(model), "--static_features", data["static_features"],
        "--dynamic_features", data["dynamic_features"], "--labels", data["labels"],
        "--output", str(out), "--verbose", "0", "--attention_samples", "0", *extra,
    ])
    report = json.loads((out / C.METRICS_FILE).read_text(encoding="utf-8")) if code == 0 else {}
    return code, report


def test_random_split_leakage_block_counts_shared_groups(random_run, people):
    summary = json.loads((random_run / C.TRAINING_SUMMARY_FILE).read_text(encoding="utf-8"))
    groups = _groups(people)
    train = np.load(random_run / C.TRAINING_ROWS_FILE)
    val = np.load(random_run / C.VALIDATION_ROWS_FILE)
    expected = int(np.isin(groups[val], groups[train]).sum())
    assert expected > 0
    assert summary["leakage"] == {"groups_known": True, "val_clips": len(val), "val_clips_sharing_a_group_with_train": expected}


def test_group_split_is_the_default_with_ids(people, tmp_path):
    assert train_main(train_args(people, tmp_path, "--epochs", "1", "--ids", people["ids"])) == 0
    summary = json.loads((tmp_path / C.TRAINING_SUMMARY_FILE).read_text(encoding="utf-8"))
    groups = _groups(people)
    train, val = np.load(tmp_path / C.TRAINING_ROWS_FILE), np.load(tmp_path / C.VALIDATION_ROWS_FILE)
    assert not set(groups[train]) & set(groups[val])
    assert summary["leakage"]["val_clips_sharing_a_group_with_train"] == 0
    assert set((tmp_path / C.TRAINING_GROUPS_FILE).read_text(encoding="utf-8").split()) == set(groups[train])


def test_guard_from_another_folder_and_on_copied_files(random_run, people, tmp_path, monkeypatch):
    val = np.load(random_run / C.VALIDATION_ROWS_FILE)
    # Another working folder, absolute paths.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    code, report = _analyze(random_run / C.MODEL_FILE, people, tmp_path / "a1")
    assert code == 0 and report["n"] == len(val) and report["split"]["name"] == "validation"
    # Copies of the data (and of the whole run folder) elsewhere: the same content, so still held out.
    copies = {}
    for role in ("static_features", "dynamic_features", "labels", "ids"):
        copies[role] = str(shutil.copy(people[role], elsewhere / Path(people[role]).name))
    run_copy = Path(shutil.copytree(random_run, tmp_path / "moved_run"))
    code, report = _analyze(run_copy / C.MODEL_FILE, copies, tmp_path / "a2", "--ids", copies["ids"])
    assert code == 0 and report["n"] == len(val) and report["split"]["held_out"] == "yes"
    # Ids: the evaluated (validation) clips sharing a person with the training rows, counted independently.
    groups = _groups(people)
    train = np.load(random_run / C.TRAINING_ROWS_FILE)
    shared = int(np.isin(groups[val], groups[train]).sum())
    assert report["leakage"]["evaluated_clips_sharing_a_group_with_train"] == shared
    # One changed label: other files, so every sample is evaluated and the report says why.
    labels = np.load(copies["labels"])
    labels[0, 0] = 0.123
    np.save(copies["labels"], labels)
    code, report = _analyze(run_copy / C.MODEL_FILE, copies, tmp_path / "a3")
    assert code == 0 and report["n"] == len(labels) and report["split"]["held_out"] == "other files"
    assert "labels" in report["split"]["note"]


def test_model_without_summary_says_unknown(random_run, people, tmp_path, capsys):
    lonely = tmp_path / "lonely"
    lonely.mkdir()
    model = Path(shutil.copy(random_run / C.MODEL_FILE, lonely / C.MODEL_FILE))
    code, report = _analyze(model, people, tmp_path / "a4")
    assert code == 0 and report["split"]["held_out"] == "unknown"
    assert "cannot be known" in report["split"]["note"]
    assert "cannot be known" in capsys.readouterr().out  # the console summary says so too


def test_metrics_json_intervals_resample_groups(random_run, people, tmp_path):
    from utils.bootstrap import bootstrap_report

    code, report = _analyze(random_run / C.MODEL_FILE, people, tmp_path / "a5", "--ids", people["ids"], "--split", "all")
    assert code == 0
    intervals = report["intervals"]
    assert intervals["resampled_unit"] == "group" and intervals["n_units"] == SPEC.n_people
    for trait in C.TRAITS:
        low, high = intervals["per_trait"][trait]["r_squared"]
        assert low <= report["metrics"]["per_trait"][trait]["r_squared"] <= high
    # The same numbers as the library on the predictions file.
    import csv

    with open(tmp_path / "a5" / "predictions.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    y = np.array([[float(r[f"true_{t}"]) for t in C.TRAITS] for r in rows])
    p = np.array([[float(r[f"pred_{t}"]) for t in C.TRAITS] for r in rows])
    assert [r["id"] for r in rows] == Path(people["ids"]).read_text(encoding="utf-8").split()
    again = bootstrap_report(y, p, groups=np.array([r["id"].split(".")[0] for r in rows]))
    assert again["overall"]["mae"] == pytest.approx(intervals["overall"]["mae"], rel=1e-9)
