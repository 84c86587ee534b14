"""Tests of utils.metrics against scikit-learn and SciPy (never our own printouts)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.stats import pearsonr
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

from tests.conftest import ccc_two_pass
from utils.constants import (
    NUM_TRAITS,
    PER_TRAIT_STATISTICS,
    TRAITS,
    history_metric_names,
    per_trait_metric_name,
)
from utils.metrics import (
    METRIC_NAMES,
    SUM_FIELDS,
    StreamingRegressionSums,
    baseline_predictions,
    batch_sums,
    metrics_from_sums,
    regression_report,
)

REPO = Path(__file__).resolve().parents[1]
BATCH_SIZES = (1, 7, 32, 5)
FAST = settings(max_examples=40, deadline=None)


# ---------------------------------------------------------------- helpers


def _data(n: int = sum(BATCH_SIZES), seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels in [0, 1] and noisy, partly biased predictions of them."""
    rng = np.random.default_rng(seed)
    y = rng.random((n, NUM_TRAITS))
    p = np.clip(0.6 * y + 0.3 * rng.random((n, NUM_TRAITS)) + 0.05, 0.0, 1.0)
    return y, p


def _split(n: int, sizes: tuple[int, ...] = BATCH_SIZES) -> list[slice]:
    edges = np.cumsum((0, *sizes))
    assert edges[-1] == n
    return [slice(a, b) for a, b in zip(edges[:-1], edges[1:])]


def _sklearn_reference(y: np.ndarray, p: np.ndarray, w: np.ndarray | None = None) -> dict:
    mae = mean_absolute_error(y, p, sample_weight=w, multioutput="raw_values")
    mse = mean_squared_error(y, p, sample_weight=w, multioutput="raw_values")
    return {
        "mae": mae,
        "mse": mse,
        "rmse": np.sqrt(mse),
        "r_squared": r2_score(y, p, sample_weight=w, multioutput="raw_values"),
        "accuracy": 1.0 - mae,
    }


def _numpy_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, np.ndarray]:
    return metrics_from_sums(batch_sums(y, p))


@st.composite
def _pairs(draw: st.DrawFn, min_rows: int = 2, max_cols: int = NUM_TRAITS):
    """(y, p) of equal shape on a 1/1000 grid in [0, 1] (no denormal noise)."""
    shape = (draw(st.integers(min_rows, 40)), draw(st.integers(1, max_cols)))
    grid = st.integers(0, 1000).map(lambda i: i / 1000)
    y = draw(arrays(np.float64, shape, elements=grid))
    p = draw(arrays(np.float64, shape, elements=grid))
    return y, p


def _compiled_metric_types(model) -> set[type]:
    """Types of the metrics a built, compiled Keras model computes."""
    return {type(m) for c in model.metrics for m in getattr(c, "metrics", [c])}


def _varying(y: np.ndarray) -> bool:
    return bool(np.all(np.ptp(y, axis=0) > 0))


# ------------------------------------------------------ numpy vs references


def test_regression_report_matches_sklearn_and_scipy() -> None:
    y, p = _data()
    report = regression_report(y, p)
    ref = _sklearn_reference(y, p)
    ref["pearson"] = np.array([pearsonr(y[:, i], p[:, i]).statistic for i in range(NUM_TRAITS)])
    ref["ccc"] = ccc_two_pass(y, p)

    assert report["n"] == len(y)
    assert list(report["per_trait"]) == list(TRAITS)
    assert set(report["overall"]) == set(METRIC_NAMES)
    for name in METRIC_NAMES:
        got = [report["per_trait"][t][name] for t in TRAITS]
        np.testing.assert_allclose(got, ref[name], rtol=0, atol=1e-6, err_msg=name)
        np.testing.assert_allclose(report["overall"][name], np.mean(ref[name]), atol=1e-6)
    np.testing.assert_allclose(report["overall"]["r_squared"], r2_score(y, p), atol=1e-6)


def test_streaming_sums_equal_one_shot_report() -> None:
    y, p = _data()
    acc = StreamingRegressionSums()
    for s in _split(len(y)):
        acc.update(y[s], p[s])
    assert acc.count == len(y)
    one_shot = regression_report(y, p)
    streamed = acc.report()
    assert streamed["n"] == one_shot["n"]
    for trait in TRAITS:
        for name in METRIC_NAMES:
            assert streamed["per_trait"][trait][name] == pytest.approx(
                one_shot["per_trait"][trait][name], abs=1e-12
            )


def test_batch_sums_layout_and_weights_match_sklearn() -> None:
    y, p = _data()
    sums = batch_sums(y, p)
    assert sums.shape == (len(SUM_FIELDS), NUM_TRAITS)
    assert sums.dtype == np.float64
    w = np.random.default_rng(3).random(len(y))
    got = metrics_from_sums(batch_sums(y, p, sample_weight=w))
    for name, ref in _sklearn_reference(y, p, w).items():
        np.testing.assert_allclose(got[name], ref, atol=1e-9, err_msg=name)


def test_baseline_predictions_is_the_mean_predictor() -> None:
    y, _ = _data()
    base = baseline_predictions(y.mean(axis=0), len(y))
    assert base.shape == y.shape
    np.testing.assert_allclose(regression_report(y, base)["overall"]["r_squared"], 0.0, atol=1e-9)
    np.testing.assert_allclose(
        _numpy_metrics(y, base)["r_squared"], r2_score(y, base, multioutput="raw_values"), atol=1e-9
    )
    with pytest.raises(ValueError, match="train_label_means"):
        baseline_predictions(y, 3)


def test_undefined_cases_give_nan_in_numpy_and_no_warning() -> None:
    empty = metrics_from_sums(np.zeros((len(SUM_FIELDS), NUM_TRAITS)))
    assert all(np.isnan(v).all() for v in empty.values())
    y = np.full((6, 1), 0.5)
    p = np.linspace(0.0, 1.0, 6).reshape(-1, 1)
    with np.errstate(all="raise"):
        const_y = _numpy_metrics(y, p)
        same = _numpy_metrics(y, y)
    assert np.isnan(const_y["pearson"]).all()
    np.testing.assert_allclose(const_y["ccc"], ccc_two_pass(y, p))  # 0: a constant label
    assert np.isnan(same["ccc"]).all()  # 0 / 0: both constant and equal


def test_small_spread_on_large_offset_is_not_called_constant() -> None:
    # var / mean^2 ~ 1e-7: far above the cancellation threshold, still exact enough.
    y, p = _data()
    y, p = 10.0 + 0.01 * y, 10.0 + 0.01 * p
    got = _numpy_metrics(y, p)
    np.testing.assert_allclose(got["r_squared"], r2_score(y, p, multioutput="raw_values"), atol=1e-6)
    ref_pearson = [pearsonr(y[:, i], p[:, i]).statistic for i in range(NUM_TRAITS)]
    np.testing.assert_allclose(got["pearson"], ref_pearson, atol=1e-6)
    np.testing.assert_allclose(got["ccc"], ccc_two_pass(y, p), atol=1e-6)


def test_metrics_from_sums_subset_equals_the_full_set() -> None:
    y, p = _data()
    sums = batch_sums(y, p)
    full = metrics_from_sums(sums)
    subset = metrics_from_sums(sums, names=("r_squared", "mae"))
    assert list(subset) == ["r_squared", "mae"]
    for name, value in subset.items():
        np.testing.assert_array_equal(value, full[name])
    with pytest.raises(ValueError, match="names"):
        metrics_from_sums(sums, names=("mae", "median"))


def test_report_rejects_mismatched_shapes() -> None:
    y, p = _data()
    with pytest.raises(ValueError, match="y_pred.shape"):
        regression_report(y, p[:, :3])
    with pytest.raises(ValueError, match="traits"):
        StreamingRegressionSums(2).report(TRAITS)


# -------------------------------------------------------- hypothesis properties


@FAST
@given(_pairs())
def test_prop_perfect_prediction_scores_one(pair) -> None:
    y, _ = pair
    np.testing.assert_array_equal(_numpy_metrics(y, y)["r_squared"], 1.0)


@FAST
@given(_pairs())
def test_prop_column_mean_scores_zero(pair) -> None:
    y, _ = pair
    assume(_varying(y))
    p = np.broadcast_to(y.mean(axis=0), y.shape)
    np.testing.assert_allclose(_numpy_metrics(y, p)["r_squared"], 0.0, atol=1e-9)


@FAST
@given(_pairs(), st.randoms(use_true_random=False))
def test_prop_batch_split_and_order_do_not_matter(pair, rnd) -> None:
    y, p = pair
    order = list(range(len(y)))
    rnd.shuffle(order)
    cuts = sorted(rnd.sample(range(1, len(y)), k=rnd.randint(0, len(y) - 1)))
    acc = StreamingRegressionSums(y.shape[1])
    for part in np.split(np.array(order), cuts):
        acc.update(y[part], p[part])
    one_shot = _numpy_metrics(y, p)
    for name, value in acc.result().items():
        np.testing.assert_allclose(value, one_shot[name], rtol=1e-9, atol=1e-9, err_msg=name)


@FAST
@given(_pairs(), st.data())
def test_prop_permuting_traits_permutes_results(pair, data) -> None:
    y, p = pair
    perm = np.array(data.draw(st.permutations(range(y.shape[1]))))
    plain = _numpy_metrics(y, p)
    permuted = _numpy_metrics(y[:, perm], p[:, perm])
    for name in METRIC_NAMES:  # NumPy's summation order follows memory layout
        np.testing.assert_allclose(permuted[name], plain[name][perm], rtol=1e-12, atol=1e-15, err_msg=name)


@FAST
@given(_pairs(), st.floats(0.5, 5.0))
def test_prop_r_squared_is_not_clipped(pair, offset) -> None:
    y, _ = pair
    assume(_varying(y))
    p = y + offset  # worse than the mean on every column
    got = _numpy_metrics(y, p)["r_squared"]
    assert np.all(got < 0)
    np.testing.assert_allclose(got, r2_score(y, p, multioutput="raw_values"), rtol=1e-9)


@FAST
@given(_pairs(), st.sampled_from([0.0, 0.5, 0.25, 1.0]), st.booleans())
def test_prop_constant_target_follows_sklearn(pair, constant, perfect) -> None:
    y, p = pair
    y = y.copy()
    y[:, 0] = constant
    if perfect:
        p = p.copy()
        p[:, 0] = constant
    expected = r2_score(y[:, :1], p[:, :1], multioutput="raw_values")
    got = _numpy_metrics(y, p)["r_squared"][:1]
    np.testing.assert_array_equal(got, expected)
    assert got[0] in (0.0, 1.0)


# ------------------------------------------------------------------ Keras


@pytest.fixture(scope="module")
def keras_metrics_module():
    import utils.keras_metrics

    return utils.keras_metrics


def _feed(metrics_list, y, p, sizes=BATCH_SIZES, w=None) -> None:
    for s in _split(len(y), sizes):
        for m in metrics_list:
            m.update_state(y[s], p[s], None if w is None else w[s])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_keras_metrics_match_sklearn_over_uneven_batches(keras_metrics_module, dtype) -> None:
    from utils.keras_metrics import PerTraitMetric, RSquared, per_trait_metrics

    y, p = (a.astype(dtype) for a in _data())
    r2 = RSquared()
    per_trait = per_trait_metrics()
    extra = [PerTraitMetric(i, s) for i in range(NUM_TRAITS) for s in ("rmse", "accuracy")]
    _feed([r2, *per_trait, *extra], y, p)

    y64, p64 = y.astype(np.float64), p.astype(np.float64)
    ref = _sklearn_reference(y64, p64)
    np.testing.assert_allclose(float(r2.result()), r2_score(y64, p64), atol=1e-5)
    for m in [*per_trait, *extra]:
        expected = ref[m.statistic][m.trait_index]
        assert float(m.result()) == pytest.approx(expected, abs=1e-5), m.name


def test_keras_weighted_and_reset(keras_metrics_module) -> None:
    from utils.keras_metrics import PerTraitMetric, RSquared

    y, p = _data()
    w = np.random.default_rng(1).random(len(y))
    r2, mae = RSquared(), PerTraitMetric(2, "mae")
    assert float(r2.result()) == 0.0 and float(mae.result()) == 0.0  # empty state
    _feed([r2, mae], y, p, w=w)
    np.testing.assert_allclose(float(r2.result()), r2_score(y, p, sample_weight=w), atol=1e-5)
    np.testing.assert_allclose(
        float(mae.result()), mean_absolute_error(y[:, 2], p[:, 2], sample_weight=w), atol=1e-5
    )
    r2.reset_state()
    assert float(r2.result()) == 0.0


@settings(max_examples=10, deadline=None)
@given(_pairs(min_rows=4, max_cols=NUM_TRAITS), st.randoms(use_true_random=False))
def test_prop_keras_r_squared_ignores_batching(keras_metrics_module, pair, rnd) -> None:
    from utils.keras_metrics import RSquared

    y, p = pair
    cuts = sorted(rnd.sample(range(1, len(y)), k=rnd.randint(0, len(y) - 1)))
    metric = RSquared(num_outputs=y.shape[1])
    for a, b in zip([0, *cuts], [*cuts, len(y)]):
        metric.update_state(y[a:b], p[a:b])
    expected = np.mean(_numpy_metrics(y, p)["r_squared"])
    assert float(metric.result()) == pytest.approx(expected, abs=1e-5)


def _personality_result(metric) -> dict[str, float]:
    return {k: float(v) for k, v in metric.result().items()}


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_personality_metrics_match_sklearn_over_uneven_batches(keras_metrics_module, dtype) -> None:
    from utils.keras_metrics import PersonalityMetrics

    y, p = (a.astype(dtype) for a in _data())
    metric = PersonalityMetrics()
    _feed([metric], y, p)
    got = _personality_result(metric)
    assert list(got) == history_metric_names()[1:]  # the history keys, loss aside

    y64, p64 = y.astype(np.float64), p.astype(np.float64)
    reference = {
        "mae": mean_absolute_error(y64, p64, multioutput="raw_values"),
        "mse": mean_squared_error(y64, p64, multioutput="raw_values"),
        "r_squared": r2_score(y64, p64, multioutput="raw_values"),
    }
    for statistic in PER_TRAIT_STATISTICS:
        for i, trait in enumerate(TRAITS):
            key = per_trait_metric_name(trait, statistic)
            assert got[key] == pytest.approx(reference[statistic][i], abs=1e-5), key
    assert got["mae"] == pytest.approx(mean_absolute_error(y64, p64), abs=1e-5)
    assert got["mse"] == pytest.approx(mean_squared_error(y64, p64), abs=1e-5)
    assert got["r_squared"] == pytest.approx(r2_score(y64, p64), abs=1e-5)


def test_personality_metrics_equal_the_metrics_they_replace(keras_metrics_module) -> None:
    """Same values as Keras' MAE/MSE, RSquared and the 15 PerTraitMetric (weighted too)."""
    import keras

    from utils.keras_metrics import PersonalityMetrics, RSquared, per_trait_metrics

    y, p = (a.astype(np.float32) for a in _data())
    for w in (None, np.random.default_rng(2).random(len(y)).astype(np.float32)):
        fused = PersonalityMetrics()
        old = [
            keras.metrics.MeanAbsoluteError(name="mae"),
            keras.metrics.MeanSquaredError(name="mse"),
            RSquared(),
            *per_trait_metrics(),
        ]
        _feed([fused, *old], y, p, w=w)
        got = _personality_result(fused)
        assert list(got) == [m.name for m in old]
        for m in old:
            assert got[m.name] == pytest.approx(float(m.result()), abs=1e-6), (m.name, w is None)


def test_personality_metrics_empty_reset_and_validation(keras_metrics_module) -> None:
    from utils.keras_metrics import PersonalityMetrics

    y, p = _data()
    metric = PersonalityMetrics()
    assert set(_personality_result(metric).values()) == {0.0}  # no data yet
    metric.update_state(y, p)
    assert _personality_result(metric)["r_squared"] != 0.0
    metric.reset_state()
    assert set(_personality_result(metric).values()) == {0.0}
    for bad in ((), ("a", "a"), ("a", "")):
        with pytest.raises(ValueError, match="traits"):
            PersonalityMetrics(traits=bad)


def test_per_trait_metric_names_and_validation(keras_metrics_module) -> None:
    from utils.keras_metrics import PersonalityMetrics, PerTraitMetric, compile_metrics, per_trait_metrics

    names = [m.name for m in per_trait_metrics()]
    assert names == [per_trait_metric_name(t, s) for t in TRAITS for s in PER_TRAIT_STATISTICS]
    compiled = compile_metrics()
    assert [type(m) for m in compiled] == [PersonalityMetrics]
    assert list(compiled[0].result()) == history_metric_names()[1:]
    with pytest.raises(ValueError, match="statistic"):
        PerTraitMetric(0, "median")
    with pytest.raises(ValueError, match="trait_index"):
        PerTraitMetric(NUM_TRAITS, "mae")


def test_keras_serialize_round_trip(keras_metrics_module) -> None:
    import keras

    from utils.keras_metrics import PerTraitMetric, RSquared

    y, p = _data()
    for metric in (PerTraitMetric(3, "r_squared"), RSquared(name="r2", num_outputs=NUM_TRAITS)):
        config = keras.metrics.serialize(metric)
        clone = keras.metrics.deserialize(config)
        assert type(clone) is type(metric)
        assert clone.get_config() == metric.get_config()
        metric.update_state(y, p)
        clone.update_state(y, p)
        assert float(clone.result()) == float(metric.result())


def test_personality_metrics_serialize_round_trip(keras_metrics_module) -> None:
    import keras

    from utils.keras_metrics import PersonalityMetrics

    y, p = _data()
    metric = PersonalityMetrics(name="pm", traits=("a", "b", "c", "d", "e"))
    clone = keras.metrics.deserialize(keras.metrics.serialize(metric))
    assert type(clone) is PersonalityMetrics
    assert clone.get_config() == metric.get_config()
    metric.update_state(y, p)
    clone.update_state(y, p)
    assert {k: float(v) for k, v in clone.result().items()} == {k: float(v) for k, v in metric.result().items()}
    assert "a_r_squared" in metric.result()


@pytest.fixture(scope="module")
def trained(keras_metrics_module, tmp_path_factory):
    """A tiny model fit for one epoch with validation data, saved both ways."""
    import keras

    from utils.keras_metrics import compile_metrics

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.random((45, 3)).astype("float32")
    y = rng.random((45, NUM_TRAITS)).astype("float32")
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(NUM_TRAITS, activation="sigmoid")(inputs))
    model.compile(optimizer="adam", loss=keras.losses.MeanSquaredError(), metrics=compile_metrics())
    history = model.fit(x, y, batch_size=16, epochs=1, validation_data=(x, y), verbose=0)
    folder = tmp_path_factory.mktemp("models")
    paths = {ext: folder / f"model.{ext}" for ext in ("keras", "h5")}  # .keras first
    for path in paths.values():
        model.save(path)
    return model, history, x, y, paths


def test_history_keys_are_exact(trained) -> None:
    _, history, *_ = trained
    train = history_metric_names()
    assert set(history.history) == set(train) | {f"val_{k}" for k in train}


@pytest.mark.parametrize("ext", ["keras", "h5"])
def test_save_load_round_trip(trained, ext) -> None:
    import keras

    from utils.keras_metrics import PersonalityMetrics

    model, _, x, y, paths = trained
    loaded = keras.models.load_model(paths[ext])
    before = model.evaluate(x, y, batch_size=7, return_dict=True, verbose=0)
    after = loaded.evaluate(x, y, batch_size=7, return_dict=True, verbose=0)
    assert after.keys() == before.keys()
    for key, value in before.items():
        assert after[key] == pytest.approx(value, abs=1e-6), key
    assert PersonalityMetrics in _compiled_metric_types(loaded)
    # The compiled R² is the streaming one: equal to sklearn on the whole set.
    pred = loaded.predict(x, batch_size=7, verbose=0).astype(np.float64)
    assert after["r_squared"] == pytest.approx(r2_score(y.astype(np.float64), pred), abs=1e-5)


def test_models_saved_with_the_earlier_metric_set_still_load(keras_metrics_module, tmp_path) -> None:
    """Models trained before the fused metric (RSquared + 15 PerTraitMetric) load compiled."""
    import keras

    from utils.keras_metrics import PerTraitMetric, RSquared, per_trait_metrics

    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(NUM_TRAITS)(inputs))
    model.compile(optimizer="adam", loss=keras.losses.MeanSquaredError(), metrics=[RSquared(), *per_trait_metrics()])
    x, y = np.ones((4, 3), "float32"), np.zeros((4, NUM_TRAITS), "float32")
    model.fit(x, y, epochs=1, verbose=0)
    for ext in ("keras", "h5"):  # .keras first (stack.md)
        model.save(tmp_path / f"old.{ext}")
        loaded = keras.models.load_model(tmp_path / f"old.{ext}")
        loaded.evaluate(x, y, verbose=0)
        assert {RSquared, PerTraitMetric} <= _compiled_metric_types(loaded), ext


def test_fresh_process_loads_after_importing_keras_metrics(trained) -> None:
    _, _, _, _, paths = trained
    code = (
        "import sys, keras, numpy as np, utils.keras_metrics; "
        "model = keras.models.load_model(sys.argv[1]); "
        "model.evaluate(np.zeros((2, 3)), np.zeros((2, 5)), verbose=0); "
        "print([type(x).__name__ for c in model.metrics for x in getattr(c, 'metrics', [c])])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(paths["keras"])],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert "PersonalityMetrics" in out.stdout


def test_import_does_not_load_tensorflow() -> None:
    out = subprocess.run(
        [sys.executable, "-c", "import sys, utils.metrics; print('tensorflow' in sys.modules)"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert out.stdout.strip() == "False"
