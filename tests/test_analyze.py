"""scripts/analyze_model_predictions.py against scikit-learn and SciPy, on a real tiny run."""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import pearsonr
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

import scripts.analyze_model_predictions as analyze
from scripts.train_personality_model import main as train_main
from tests.conftest import (
    REPO,
    assert_real_image,
    ccc_two_pass,
    run_script_expecting_input_error,
    train_args,
    write_features,
)
from utils import constants as C
from utils import plotting as P
from utils.analysis import METRICS_FILE, PREDICTION_COLUMNS, PREDICTIONS_CSV, PREDICTIONS_NPY
from utils.data import split_indices

SCRIPT = REPO / "scripts" / "analyze_model_predictions.py"
N = 48
TOL = 1e-6


def _read_csv(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    assert tuple(rows[0]) == PREDICTION_COLUMNS
    body = np.array([[float(v) for v in row] for row in rows[1:]])
    y = body[:, [PREDICTION_COLUMNS.index(f"true_{t}") for t in C.TRAITS]]
    p = body[:, [PREDICTION_COLUMNS.index(f"pred_{t}") for t in C.TRAITS]]
    return body[:, 0].astype(np.int64), y, p


def _args(run: dict, out: Path, *extra: str, model: Path | None = None) -> list[str]:
    return [
        "--model", str(model or run["model"]),
        "--static_features", run["paths"]["static_features"],
        "--dynamic_features", run["paths"]["dynamic_features"],
        "--labels", run["paths"]["labels"],
        "--output", str(out),
        "--verbose", "0",
        *extra,
    ]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict:
    """A real 3-epoch run on tiny data, analyzed once on all samples."""
    root = tmp_path_factory.mktemp("analyze")
    paths = write_features(root / "data", n=N)
    out = root / "results"
    # the bidirectional model: its attention maps have both directions (the default pooled_query has one)
    assert train_main(train_args(paths, out, "--epochs", "3", "--fusion", "cross_attention")) == 0
    info = {"root": root, "paths": paths, "results": out, "model": out / C.MODEL_FILE}
    analysis = root / "analysis_all"
    assert analyze.main(_args(info, analysis, "--attention_samples", "5", "--split", "all")) == 0
    info["all"] = analysis
    info["report"] = json.loads((analysis / METRICS_FILE).read_text())
    return info


@pytest.fixture(scope="module")
def validation(run) -> dict:
    """The same model on the validation split, baseline from --train_labels."""
    out = run["root"] / "analysis_val"
    code = analyze.main(_args(run, out, "--split", "validation", "--train_labels", run["paths"]["labels"]))
    assert code == 0
    return {"out": out, "report": json.loads((out / METRICS_FILE).read_text())}


# ----------------------------------------------------------------- happy path


def test_defaults_are_the_seed_paths():
    args = analyze.build_parser().parse_args([])
    assert Path(args.model) == Path("results/personality_model_trained.h5")
    assert Path(args.static_features) == Path("data_sample/static_features.npy")
    assert Path(args.dynamic_features) == Path("data_sample/dynamic_features.npy")
    assert Path(args.labels) == Path("data_sample/labels.npy")
    assert Path(args.output) == Path("results/prediction_analysis")
    assert (args.split, args.attention_samples, args.train_labels) == ("auto", 8, None)


def test_every_listed_figure_is_a_real_image(run):
    out = run["all"]
    names = [P.scatter_file(t) for t in C.TRAITS] + [
        P.RESIDUALS_FILE, P.ERROR_DISTRIBUTION_FILE, P.TRAIT_CORRELATIONS_FILE,
        P.MODEL_VS_BASELINE_FILE, P.ATTENTION_MAPS_FILE, P.ATTENTION_ENTROPY_FILE,
    ]
    for name in names:
        assert_real_image(out / name)
    assert sorted(run["report"]["figures"]) == sorted(names)
    assert not list(out.glob(".*tmp*")), "temporary files left behind"


def test_metrics_json_matches_sklearn_and_scipy_on_predictions_csv(run):
    report = run["report"]
    index, y, p = _read_csv(run["all"] / PREDICTIONS_CSV)
    assert report["n"] == N and index.tolist() == list(range(N))
    expected = {
        "mae": mean_absolute_error(y, p, multioutput="raw_values"),
        "mse": mean_squared_error(y, p, multioutput="raw_values"),
        "r_squared": r2_score(y, p, multioutput="raw_values"),
        "pearson": np.array([pearsonr(y[:, j], p[:, j]).statistic for j in range(C.NUM_TRAITS)]),
        "ccc": ccc_two_pass(y, p),
    }
    expected["rmse"] = np.sqrt(expected["mse"])
    expected["accuracy"] = 1.0 - expected["mae"]
    for name, values in expected.items():
        got = [report["metrics"]["per_trait"][t][name] for t in C.TRAITS]
        np.testing.assert_allclose(got, values, atol=TOL, err_msg=name)
        assert report["metrics"]["overall"][name] == pytest.approx(values.mean(), abs=TOL), name


def test_predictions_npy_matches_csv_and_the_model(run):
    import keras

    table = np.load(run["all"] / PREDICTIONS_NPY, allow_pickle=False)
    assert table.dtype.names == PREDICTION_COLUMNS
    index, y, p = _read_csv(run["all"] / PREDICTIONS_CSV)
    np.testing.assert_array_equal(table["index"], index)
    for j, trait in enumerate(C.TRAITS):
        np.testing.assert_array_equal(table[f"true_{trait}"], y[:, j])  # CSV keeps full precision
        np.testing.assert_array_equal(table[f"pred_{trait}"], p[:, j])
    # batching changes nothing: one predict() over the whole arrays gives the same numbers
    model = keras.models.load_model(run["model"], compile=False)
    x = [np.load(run["paths"][k]) for k in ("static_features", "dynamic_features")]
    np.testing.assert_allclose(p, model.predict(x, verbose=0), atol=1e-6)
    np.testing.assert_array_equal(y, np.load(run["paths"]["labels"]).astype("float64"))


def test_baseline_uses_the_recorded_train_means(run):
    report = run["report"]
    summary = json.loads((run["results"] / C.TRAINING_SUMMARY_FILE).read_text())
    means = np.array([summary["train_label_means"][t] for t in C.TRAITS])
    assert str(run["results"] / C.TRAINING_SUMMARY_FILE) in report["baseline_source"]
    _, y, _ = _read_csv(run["all"] / PREDICTIONS_CSV)
    constant = np.tile(means, (len(y), 1))
    base = report["baseline"]["per_trait"]
    np.testing.assert_allclose([base[t]["r_squared"] for t in C.TRAITS], r2_score(y, constant, multioutput="raw_values"), atol=TOL)
    np.testing.assert_allclose([base[t]["mae"] for t in C.TRAITS], mean_absolute_error(y, constant, multioutput="raw_values"), atol=TOL)
    np.testing.assert_allclose([base[t]["mse"] for t in C.TRAITS], mean_squared_error(y, constant, multioutput="raw_values"), atol=TOL)
    gain = report["gain_over_baseline"]
    assert set(gain["lower_is_better"]) == {"mae", "mse", "rmse"}
    for t in C.TRAITS:
        for name in ("mae", "r_squared", "ccc", "accuracy"):
            model_value = report["metrics"]["per_trait"][t][name]
            assert gain["per_trait"][t][name] == pytest.approx(model_value - base[t][name], abs=1e-12)


def test_inputs_and_model_are_identified_by_hash(run):
    report = run["report"]

    def sha(path: str | Path) -> str:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()

    for key in ("static_features", "dynamic_features", "labels"):
        assert report["inputs"][key]["path"] == run["paths"][key]
        assert report["inputs"][key]["sha256"] == sha(run["paths"][key])
    assert report["model"]["sha256"] == sha(run["model"])
    assert report["model"]["fusion"] == "cross_attention"


def test_attention_entropy_per_head(run):
    import scipy.stats

    from models.cross_attention import attention_scores

    attention = run["report"]["attention"]
    assert attention["samples"] == [0, 1, 2, 3, 4]
    blocks = attention["blocks"]
    assert set(blocks) == {"static_to_dynamic_0", "dynamic_to_static_0"}
    # train_args: 2 heads; static (4, 8) -> 4 tokens, dynamic (3, 12) -> 3 tokens
    assert blocks["static_to_dynamic_0"]["key_tokens"] == 3
    assert blocks["dynamic_to_static_0"]["key_tokens"] == 4
    import keras

    model = keras.models.load_model(run["model"], compile=False)
    scores = attention_scores(
        model, np.load(run["paths"]["static_features"])[:5], np.load(run["paths"]["dynamic_features"])[:5]
    )
    for key, block in blocks.items():
        assert block["heads"] == 2
        assert block["uniform_entropy"] == pytest.approx(np.log(block["key_tokens"]))
        # scipy's Shannon entropy (nats) of each query's attention row, averaged over samples and queries
        expected = scipy.stats.entropy(scores[key].astype("float64"), axis=-1).mean(axis=(0, 2))
        np.testing.assert_allclose(block["entropy_per_head"], expected, atol=1e-9)
        assert all(0.0 <= e <= block["uniform_entropy"] + 1e-9 for e in block["entropy_per_head"])


def test_validation_split_matches_the_training_run(run, validation):
    report = validation["report"]
    _, val_idx = split_indices(N, 0.2, 42)
    index, y, p = _read_csv(validation["out"] / PREDICTIONS_CSV)
    assert report["split"]["name"] == "validation"
    assert report["n"] == len(val_idx) and index.tolist() == val_idx.tolist()
    # the same R² as the training run's best validation epoch (the saved model)
    summary = json.loads((run["results"] / C.TRAINING_SUMMARY_FILE).read_text())
    assert report["metrics"]["overall"]["r_squared"] == pytest.approx(summary["best_validation"]["val_r_squared"], abs=1e-5)
    np.testing.assert_allclose(report["metrics"]["overall"]["r_squared"], r2_score(y, p), atol=TOL)


def test_train_labels_flag_sets_the_baseline(run, validation):
    report = validation["report"]
    assert "--train_labels" in report["baseline_source"]
    means = np.load(run["paths"]["labels"]).astype("float64").mean(axis=0)
    np.testing.assert_allclose(list(report["baseline"]["train_label_means"].values()), means, atol=1e-12)
    _, y, _ = _read_csv(validation["out"] / PREDICTIONS_CSV)
    expected = r2_score(y, np.tile(means, (len(y), 1)), multioutput="raw_values")
    np.testing.assert_allclose([report["baseline"]["per_trait"][t]["r_squared"] for t in C.TRAITS], expected, atol=TOL)
    assert report["inputs"]["train_labels"]["path"] == run["paths"]["labels"]


def test_without_summary_the_baseline_is_the_evaluated_mean_and_says_so(run, tmp_path):
    lone = tmp_path / "lone"
    lone.mkdir()
    shutil.copy(run["model"], lone / C.MODEL_FILE)
    out = tmp_path / "analysis_lone"
    assert analyze.main(_args(run, out, "--attention_samples", "0", model=lone / C.MODEL_FILE)) == 0
    report = json.loads((out / METRICS_FILE).read_text())
    assert "mean of the evaluated labels" in report["baseline_source"]
    for t in C.TRAITS:
        assert report["baseline"]["per_trait"][t]["r_squared"] == pytest.approx(0.0, abs=1e-9)
    assert "skipped" in report["attention"]
    assert not (out / P.ATTENTION_MAPS_FILE).exists()


def test_concat_fusion_skips_attention_with_a_note(tmp_path):
    from models.cross_attention import ModelConfig, build_model
    from utils.io import save_model

    paths = write_features(tmp_path / "data", n=32)
    # an untrained concat model is enough to check the analysis of a model without attention
    model = build_model(ModelConfig(width=16, num_heads=2, head_units=16, fusion="concat"), (4, 8), (3, 12))
    save_model(model, tmp_path / "concat" / C.MODEL_FILE)
    out = tmp_path / "analysis_concat"
    info = {"paths": paths, "model": tmp_path / "concat" / C.MODEL_FILE}
    assert analyze.main(_args(info, out)) == 0
    report = json.loads((out / METRICS_FILE).read_text())
    assert report["model"]["fusion"] == "concat"
    assert "no attention" in report["attention"]["skipped"]
    assert not (out / P.ATTENTION_MAPS_FILE).exists() and not (out / P.ATTENTION_ENTROPY_FILE).exists()
    assert_real_image(out / P.scatter_file("openness"))


# ----------------------------------------------------------------- errors


def _expect_input_error(capsys, argv: list[str], out: Path, *fragments: str) -> None:
    assert analyze.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    for fragment in fragments:
        assert fragment in err[0], err[0]
    assert not out.exists(), "nothing may be written on an input error"


def test_missing_model(run, tmp_path, capsys):
    out = tmp_path / "o"
    _expect_input_error(capsys, _args(run, out, model=tmp_path / "missing.h5"), out, "missing.h5", "not found")


def test_text_file_as_model(run, tmp_path, capsys):
    bad = tmp_path / "bad.h5"
    bad.write_text("not a model\n")
    out = tmp_path / "o"
    _expect_input_error(capsys, _args(run, out, model=bad), out, str(bad), "cannot be loaded")


def test_truncated_hdf5_model(run, tmp_path, capsys):
    bad = tmp_path / "truncated.h5"
    bad.write_bytes(Path(run["model"]).read_bytes()[:4096])
    out = tmp_path / "o"
    _expect_input_error(capsys, _args(run, out, model=bad), out, str(bad), "cannot be loaded")


def test_wrong_model_suffix(run, tmp_path, capsys):
    bad = tmp_path / "model.pt"
    bad.write_bytes(b"x")
    out = tmp_path / "o"
    _expect_input_error(capsys, _args(run, out, model=bad), out, str(bad), ".h5 or .keras")


def test_features_that_do_not_match_the_model(run, tmp_path, capsys):
    wrong = write_features(tmp_path / "wrong", n=N, static_shape=(4, 9))
    out = tmp_path / "o"
    argv = _args(run, out)
    argv[argv.index("--static_features") + 1] = wrong["static_features"]
    _expect_input_error(capsys, argv, out, wrong["static_features"], "(4, 8)", "(4, 9)")


def test_sample_counts_that_differ(run, tmp_path, capsys):
    other = write_features(tmp_path / "other", n=N - 3)
    out = tmp_path / "o"
    argv = _args(run, out)
    argv[argv.index("--labels") + 1] = other["labels"]
    _expect_input_error(capsys, argv, out, f"N={N}", f"N={N - 3}")


def test_validation_split_on_other_files_is_refused(run, tmp_path, capsys):
    other = write_features(tmp_path / "other", n=N + 10)
    out = tmp_path / "o"
    argv = _args({"paths": other, "model": run["model"]}, out, "--split", "validation")
    _expect_input_error(capsys, argv, out, "--split validation", f"N={N + 10}")


def test_cli_error_is_one_line_and_exit_2(run, tmp_path):
    out = tmp_path / "o"
    err = run_script_expecting_input_error(SCRIPT, _args(run, out, model=tmp_path / "missing.h5"), out)
    assert "missing.h5" in err


def test_auto_split_holds_out_the_validation_rows_of_the_training_files_only(run, tmp_path):
    out = tmp_path / "auto"
    assert analyze.main(_args(run, out, "--attention_samples", "0")) == 0
    report = json.loads((out / METRICS_FILE).read_text())
    _, val_idx = split_indices(N, 0.2, 42)
    assert report["split"]["name"] == "validation" and report["split"]["chosen_by"].startswith("auto")
    with open(out / PREDICTIONS_CSV, newline="") as fh:
        assert [int(row["index"]) for row in csv.DictReader(fh)] == val_idx.tolist()
    # Same shapes, other content (seed 1): the guard compares SHA-256, so an identical copy would count as the same files.
    copies = write_features(tmp_path / "other_files", n=N, seed=1)
    out2 = tmp_path / "auto_other"
    assert analyze.main(_args({"paths": copies, "model": run["model"]}, out2, "--attention_samples", "0")) == 0
    assert json.loads((out2 / METRICS_FILE).read_text())["split"]["name"] == "all"


def test_train_split_selects_the_training_rows(run):
    from utils.analysis import select_indices
    from utils.data import load_dataset

    data = load_dataset(run["paths"]["static_features"], run["paths"]["dynamic_features"], run["paths"]["labels"])
    summary = json.loads((run["results"] / C.TRAINING_SUMMARY_FILE).read_text())
    train_idx, val_idx = split_indices(N, 0.2, 42)
    rows, info = select_indices("train", N, summary, run["results"] / C.TRAINING_SUMMARY_FILE, data)
    assert rows.tolist() == train_idx.tolist() and info["name"] == "train"
    rows, _ = select_indices("validation", N, summary, run["results"] / C.TRAINING_SUMMARY_FILE, data)
    assert rows.tolist() == val_idx.tolist()
