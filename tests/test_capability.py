"""The capability suite (utils/capability.py, scripts/capability_suite.py), quick version."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from scripts.capability_suite import main
from tests.conftest import assert_real_image
from utils.capability import (
    read_rows,
    section_markers,
    suite_spec,
    summarize,
    t_interval,
)
from utils.synthetic import generate, noise_ceiling

QUICK = ["--sets", "pooled", "cue_segment", "--sizes", "150", "300", "--seeds", "0", "1", "--n_test", "200"]
QUICK += ["--max_epochs", "2", "--patience", "1", "--no_jit"]
SETS = ("pooled", "cue_segment")


@pytest.fixture(scope="module")
def quick_suite(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two sets, two sizes, two seeds, default model + concat + both ridges + ceiling (a few seconds per fit)."""
    root = tmp_path_factory.mktemp("suite")
    markdown = root / "accuracy.md"
    markdown.write_text("# Accuracy\n\nText before.\n", encoding="utf-8")
    paths = {"out": root / "out", "markdown": markdown, "figure": root / "curves.png"}
    argv = [
        "--output_dir",
        str(paths["out"]),
        *QUICK,
        "--markdown",
        str(markdown),
        "--figure",
        str(paths["figure"]),
    ]
    assert main(argv) == 0
    paths["argv"] = argv  # type: ignore[assignment]
    return paths


def test_suite_writes_one_row_per_set_size_seed_and_variant(quick_suite) -> None:
    rows = read_rows(quick_suite["out"] / "results.jsonl")
    keys = {(r["set"], r["n"], r["seed"], r["variant"]) for r in rows}
    expected = {
        (s, n, seed, v)
        for s in SETS
        for n in (150, 300)
        for seed in (0, 1)
        for v in ("pooled_query", "concat", "ridge", "ridge_train", "ceiling")
    }
    assert keys == expected and len(rows) == len(expected)
    for r in rows:
        assert math.isfinite(r["r2"]["mean"]) and r["r2"]["mean"] < 1.0
        if r["variant"] in ("pooled_query", "concat"):
            assert 0 <= r["best_epoch"] <= r["epochs"] <= 2  # 0: no epoch beat the model as built


def test_ceiling_rows_are_the_bayes_predictor_on_the_held_out_clips(quick_suite) -> None:
    rows = read_rows(quick_suite["out"] / "results.jsonl")
    row = next(r for r in rows if r["set"] == "cue_segment" and r["seed"] == 1 and r["variant"] == "ceiling")
    data = generate(suite_spec("cue_segment", 300 + 200, 1))
    expected = noise_ceiling(data.labels[300:], data.signal[300:])["mean"]
    assert row["r2"]["mean"] == pytest.approx(expected, abs=1e-12)
    # the ceiling is far above ridge on every set (the planted signal is there to find)
    for r in rows:
        if r["variant"] == "ridge":
            ceiling = next(
                c
                for c in rows
                if (c["set"], c["n"], c["seed"], c["variant"]) == (r["set"], r["n"], r["seed"], "ceiling")
            )
            assert ceiling["r2"]["mean"] > r["r2"]["mean"] + 0.15


def test_summary_intervals_and_paired_differences_match_scipy(quick_suite) -> None:
    rows = read_rows(quick_suite["out"] / "results.jsonl")
    summary = json.loads((quick_suite["out"] / "summary.json").read_text(encoding="utf-8"))
    entry = summary["cue_segment/300"]
    by = {
        (r["variant"], r["seed"]): r["r2"]["mean"]
        for r in rows
        if r["set"] == "cue_segment" and r["n"] == 300
    }
    values = [by[("pooled_query", 0)], by[("pooled_query", 1)]]
    low, high = stats.t.interval(0.95, 1, loc=np.mean(values), scale=stats.sem(values))
    assert entry["variants"]["pooled_query"]["mean"] == pytest.approx(np.mean(values))
    assert entry["variants"]["pooled_query"]["low"] == pytest.approx(low)
    assert entry["variants"]["pooled_query"]["high"] == pytest.approx(high)
    best = [max(by[("ridge", s)], by[("concat", s)]) for s in (0, 1)]
    diffs = [by[("pooled_query", s)] - b for s, b in zip((0, 1), best)]
    assert entry["differences"]["best"]["mean"] == pytest.approx(np.mean(diffs))
    assert entry["differences"]["best"]["seeds"] == 2


def test_markdown_section_holds_command_table_and_figure_and_is_replaced_not_repeated(quick_suite) -> None:
    begin, end = section_markers("main")
    text = quick_suite["markdown"].read_text(encoding="utf-8")
    assert text.startswith("# Accuracy\n\nText before.\n")
    assert text.count(begin) == 1 and text.count(end) == 1
    assert "python scripts/capability_suite.py --output_dir" in text
    assert "| cue_segment | 300 |" in text and "| pooled | 150 |" in text
    assert_real_image(quick_suite["figure"])
    # a second run (everything already done) rewrites the same section in place
    assert main(quick_suite["argv"]) == 0
    again = quick_suite["markdown"].read_text(encoding="utf-8")
    assert again.count(begin) == 1 and again == text


def test_t_interval_matches_scipy_and_one_value_has_no_interval() -> None:
    values = [0.31, 0.35, 0.29, 0.40]
    mean, low, high = t_interval(values)
    ref = stats.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=stats.sem(values))
    assert (low, high) == pytest.approx(ref)
    assert mean == pytest.approx(np.mean(values))
    single = t_interval([0.3])
    assert single[0] == 0.3 and math.isnan(single[1]) and math.isnan(single[2])


def test_summarize_pairs_by_seed_and_ignores_unpaired_seeds() -> None:
    def row(variant: str, seed: int, r2: float) -> dict:
        return {"set": "product", "n": 100, "seed": seed, "variant": variant, "r2": {"mean": r2}}

    rows = [row("pooled_query", 0, 0.5), row("pooled_query", 1, 0.4), row("pooled_query", 2, 0.9)]
    rows += [row("ridge", 0, 0.3), row("ridge", 1, 0.35), row("concat", 0, 0.45), row("concat", 1, 0.2)]
    diff = summarize(rows)["product/100"]["differences"]
    assert diff["best"]["seeds"] == 2
    assert diff["best"]["mean"] == pytest.approx(np.mean([0.5 - 0.45, 0.4 - 0.35]))
    assert diff["ridge"]["mean"] == pytest.approx(np.mean([0.2, 0.05]))


def test_bad_flags_exit_2_with_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["--output_dir", str(tmp_path / "x"), "--sets", "nonsense"]) == 2
    assert main(["--output_dir", str(tmp_path / "x"), "--sizes", "10"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) >= 2 and all("capability_suite.py" in line for line in err[-1:])
    assert not (tmp_path / "x").exists()


def test_default_model_learns_a_low_noise_pooled_set(tmp_path: Path) -> None:
    """Robust, failable learning check: with little noise the default model beats the mean predictor."""
    out = tmp_path / "learn"
    argv = ["--output_dir", str(out), "--sets", "pooled", "--sizes", "600", "--seeds", "0", "--n_test", "300"]
    argv += [
        "--variants",
        "pooled_query",
        "ridge",
        "--max_epochs",
        "30",
        "--patience",
        "5",
        "--noise_fraction",
        "0.1",
    ]
    argv += ["--no_jit"]
    assert main(argv) == 0
    rows = {r["variant"]: r["r2"]["mean"] for r in read_rows(out / "results.jsonl")}
    assert rows["pooled_query"] > 0.3


def test_refit_with_epoch_0_chosen_is_ridge_on_all_training_clips() -> None:
    """--refit: when no epoch beat the model as built, the network scored is the ridge start built from all N."""
    from sklearn.linear_model import RidgeCV
    from sklearn.metrics import r2_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from models.linear_init import RIDGE_ALPHAS
    from utils.capability import FitSettings, fit_network

    data = generate(suite_spec("pooled", 600, 0))
    train, test = np.arange(400), np.arange(400, 600)
    # a learning rate that wrecks every epoch: epoch 0 is chosen
    fit = FitSettings(learning_rate=5.0, max_epochs=2, patience=1, jit_compile=False, refit=True)
    row = fit_network("pooled_query", data, train, test, 0, fit)
    assert row["best_epoch"] == 0 and row["refit_rows"] == 400
    pooled = np.hstack([np.asarray(data.static).mean(1), np.asarray(data.dynamic).mean(1)])
    ridge = make_pipeline(StandardScaler(), RidgeCV(alphas=RIDGE_ALPHAS, alpha_per_target=True))
    reference = r2_score(data.labels[test], ridge.fit(pooled[train], data.labels[train]).predict(pooled[test]))
    assert row["r2"]["mean"] == pytest.approx(reference, abs=0.01)  # the sigmoid's curvature only
    on_80 = fit_network("pooled_query", data, train, test, 0, dataclasses.replace(fit, refit=False))
    assert on_80["best_epoch"] == 0 and row["r2"]["mean"] != on_80["r2"]["mean"]
