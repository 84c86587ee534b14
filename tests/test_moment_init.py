"""The moment start of the default model (models.moment_init): honest, found where planted, wired right."""

from __future__ import annotations

import numpy as np
import pytest

from models.config import ModelConfig
from utils.capability import SMALL_SHAPES
from utils.synthetic import SyntheticSpec, generate

SMALL_MODEL = {"width": 16, "num_heads": 2, "head_units": 8, "pooled_width": 8}


def _data(interaction: str, n: int, seed: int = 0, **overrides):
    spec = SyntheticSpec(n_samples=n, seed=seed, interaction=interaction, **{**SMALL_SHAPES, **overrides})
    data = generate(spec)
    return np.asarray(data.static, "float32"), np.asarray(data.dynamic, "float32"), data.labels


def _ridge_r2(s, d, labels, train, test):
    from sklearn.linear_model import RidgeCV
    from sklearn.metrics import r2_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    pooled = np.hstack([s.mean(1), d.mean(1)])
    ridge = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-3, 5, 17), alpha_per_target=True))
    return r2_score(labels[test], ridge.fit(pooled[train], labels[train]).predict(pooled[test]))


def test_ridge_loo_errors_equal_sklearn_leave_one_out_errors():
    from sklearn.linear_model import RidgeCV

    from models.linear_init import RIDGE_ALPHAS, ridge_loo

    rng = np.random.default_rng(3)
    x = rng.normal(size=(150, 20))
    y = x[:, :5] * 0.5 + rng.normal(size=(150, 5))
    _, alphas, errors = ridge_loo(x, y, RIDGE_ALPHAS, return_errors=True)
    reference = RidgeCV(alphas=RIDGE_ALPHAS, alpha_per_target=True, store_cv_results=True).fit(x, y)
    chosen = [int(np.flatnonzero(RIDGE_ALPHAS == a)[0]) for a in alphas]
    expected = [reference.cv_results_[:, trait, k].mean() for trait, k in enumerate(chosen)]
    np.testing.assert_allclose(errors, expected, rtol=1e-8)


def _start_r2(interaction: str, n: int, **overrides) -> tuple[float, float, object]:
    from sklearn.metrics import r2_score

    from models.cross_attention import build_model_for_data

    s, d, labels = _data(interaction, n + 1000, **overrides)
    train, test = np.arange(n), np.arange(n, n + 1000)
    model = build_model_for_data(ModelConfig(**SMALL_MODEL), s, d, labels, train)
    start = r2_score(labels[test], model.predict([s[test], d[test]], verbose=0))
    return start, _ridge_r2(s, d, labels, train, test), model


def test_moment_start_finds_a_planted_product_before_any_training():
    start, ridge, _ = _start_r2("product", 2000)
    assert start > ridge + 0.1, (start, ridge)


def test_moment_start_finds_a_cue_selected_segment_before_any_training():
    start, ridge, _ = _start_r2(
        "cue_segment", 2000, static_fraction=0.2, dynamic_fraction=0.2, interaction_fraction=0.6, noise_fraction=0.2
    )
    assert start > ridge + 0.1, (start, ridge)


def test_without_cross_modal_signal_the_start_is_the_ridge_start():
    from models.cross_attention import build_model_for_data
    from models.moment_init import moment_start
    from utils.data import feature_statistics

    s, d, labels = _data("product", 1500, interaction_fraction=0.0, static_fraction=0.5, dynamic_fraction=0.5)
    train = np.arange(1000)
    stats = feature_statistics(s, train), feature_statistics(d, train)
    assert moment_start(s, d, labels, train, *stats, width=16, head_dim=8, bilinear_rank=9) is None
    warm = build_model_for_data(ModelConfig(**SMALL_MODEL), s, d, labels, train)
    ridge_only = build_model_for_data(ModelConfig(moment_start=False, **SMALL_MODEL), s, d, labels, train)
    np.testing.assert_allclose(
        warm.predict([s[1000:], d[1000:]], verbose=0), ridge_only.predict([s[1000:], d[1000:]], verbose=0), atol=1e-6
    )


@pytest.mark.parametrize("interaction", ["product", "cue_segment"])
def test_the_built_model_computes_the_start_it_was_given(interaction):
    """Keras predictions of the untrained model equal the start's formula written in NumPy."""
    from models.cross_attention import build_model
    from models.moment_init import apply_moment_start, moment_start
    from utils.data import feature_statistics, label_means

    s, d, labels = _data(interaction, 1600, interaction_fraction=0.6, static_fraction=0.2, dynamic_fraction=0.2)
    train, test = np.arange(1200), np.arange(1200, 1600)
    config = ModelConfig(**SMALL_MODEL)
    stats = feature_statistics(s, train), feature_statistics(d, train)
    start = moment_start(s, d, labels, train, *stats, width=16, head_dim=8, bilinear_rank=config.bilinear_rank)
    kind = "bilinear" if interaction == "product" else "attention"
    assert start is not None and any(b.startswith(kind) for b in start.blocks), start and start.blocks
    model = build_model(config, s.shape[1:], d.shape[1:], *stats, output_prior=label_means(labels, train),
                        skip_kernel=start.skip_kernel)
    apply_moment_start(model, start)

    xs = (s[test].astype("float64") - stats[0][0]) / np.sqrt(stats[0][1])
    xd = (d[test].astype("float64") - stats[1][0]) / np.sqrt(stats[1][1])
    ps, pd_ = xs.mean(1), xd.mean(1)
    features = [ps, pd_]
    attended = np.zeros((len(test), 16))
    if start.query is not None:
        logits = (ps @ start.query) @ start.position_key.T / np.sqrt(8)
        weights = np.exp(logits - logits.max(1, keepdims=True))
        weights /= weights.sum(1, keepdims=True)
        attended[:, :5] = np.einsum("nt,ntb,bi->ni", weights, xd, start.value)
    features.append(attended)
    product = np.zeros((len(test), config.bilinear_rank))
    if start.bilinear_static is not None:
        r = start.bilinear_static.shape[1]
        product[:, :r] = (ps @ start.bilinear_static) * (pd_ @ start.bilinear_dynamic)
    features.append(product)
    prior = np.clip(labels[train].mean(0), 1e-3, 1 - 1e-3)
    logit = np.log(prior / (1 - prior)) - start.offset + np.hstack(features) @ start.skip_kernel
    # only the first head's first five value columns and the written bilinear columns have output weights
    np.testing.assert_allclose(model.predict([s[test], d[test]], verbose=0), 1 / (1 + np.exp(-logit)), atol=2e-5)


def test_content_keys_leave_the_attention_to_training():
    """With content keys the first head's logits are not the start's alone: only the bilinear block may start."""
    from models.cross_attention import build_model_for_data

    s, d, labels = _data("cue_segment", 1200, interaction_fraction=0.6, static_fraction=0.2, dynamic_fraction=0.2)
    config = ModelConfig(attention_keys="content", **SMALL_MODEL)
    model = build_model_for_data(config, s, d, labels, np.arange(1000))  # builds (no position keys to write)
    assert model.predict([s[1000:], d[1000:]], verbose=0).shape == (200, 5)


def test_the_head_is_not_started_over_the_memory_limit_or_when_narrower_than_five(monkeypatch):
    import models.moment_init as moment_init
    from utils.data import feature_statistics

    s, d, labels = _data("cue_segment", 1200, interaction_fraction=0.6, static_fraction=0.2, dynamic_fraction=0.2)
    train = np.arange(1200)
    stats = feature_statistics(s, train), feature_statistics(d, train)
    found = moment_init.moment_start(s, d, labels, train, *stats, width=16, head_dim=8, bilinear_rank=0)
    assert found is not None and found.query is not None  # under the limit the cue is found
    monkeypatch.setattr(moment_init, "_MAX_SEGMENT_MOMENT", 24 * 8 * 24 * 5 - 1)  # one entry too many
    assert moment_init.moment_start(s, d, labels, train, *stats, width=16, head_dim=8, bilinear_rank=0) is None
    # a head narrower than one value column per trait is not started either
    monkeypatch.undo()
    assert moment_init.moment_start(s, d, labels, train, *stats, width=16, head_dim=4, bilinear_rank=0) is None
