"""The cross-attention model: attention is real, extractors frozen, saved files load."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from models.cross_attention import (
    ModelConfig,
    attention_entropy,
    attention_scores,
    build_model,
    fusion_tokens_model,
)
from utils.constants import FUSION_MODES

SMALL = {"width": 16, "num_heads": 2, "head_units": 8}


def _inputs(n=6, static_shape=(5, 8), dynamic_shape=(4, 12), seed=0):
    rng = np.random.default_rng(seed)
    return (
        rng.normal(size=(n, *static_shape)).astype("float32"),
        rng.normal(size=(n, *dynamic_shape)).astype("float32"),
    )


def _with_random_output_kernel(model, seed=0):
    """The output kernel starts at zero (every prediction is the prior); make it random."""
    kernel = model.get_layer("traits").kernel
    kernel.assign(np.random.default_rng(seed).normal(scale=2.0, size=kernel.shape).astype("float32"))
    return model


@pytest.mark.parametrize("fusion", FUSION_MODES)
def test_every_fusion_mode_uses_exactly_its_streams(fusion):
    s, d = _inputs()
    config = ModelConfig(fusion=fusion, **SMALL)
    model = build_model(config, s.shape[1:], d.shape[1:])
    base = model.predict([s, d], verbose=0)
    assert base.shape == (6, 5)
    assert np.all((base > 0) & (base < 1))
    np.testing.assert_allclose(base, 0.5, atol=1e-6)  # zero kernel, no prior: exactly sigmoid(0)
    _with_random_output_kernel(model)
    base = model.predict([s, d], verbose=0)
    assert np.abs(base - 0.5).max() > 1e-3  # the random kernel reaches the output
    s2, d2 = _inputs(seed=1)
    moved_static = np.abs(model.predict([s2, d], verbose=0) - base).max()
    moved_dynamic = np.abs(model.predict([s, d2], verbose=0) - base).max()
    assert (moved_static > 1e-4) == config.uses_static, moved_static
    assert (moved_dynamic > 1e-4) == config.uses_dynamic, moved_dynamic
    if not config.uses_static:
        assert moved_static == 0.0
    if not config.uses_dynamic:
        assert moved_dynamic == 0.0


def test_default_is_the_pooled_query_fusion():
    assert ModelConfig().fusion == FUSION_MODES[0] == "pooled_query"
    assert ModelConfig().attention_keys == "position"
    assert ModelConfig().directions == ("static_to_dynamic",)


def _normalized(x):
    return (x - x.reshape(-1, x.shape[-1]).mean(0)) / np.sqrt(x.reshape(-1, x.shape[-1]).var(0))


@pytest.mark.parametrize("pooled_norm", [False, True])
def test_pooled_query_fused_vector_holds_both_pooled_streams_and_the_attended_vector(pooled_norm):
    s, d = _inputs(n=7)
    stats = {
        f"{name}_stats": (x.reshape(-1, x.shape[-1]).mean(0), x.reshape(-1, x.shape[-1]).var(0))
        for name, x in (("static", s), ("dynamic", d))
    }
    config = ModelConfig(fusion="pooled_query", pooled_width=6, pooled_norm=pooled_norm, **SMALL)
    model = build_model(config, s.shape[1:], d.shape[1:], **stats)
    fusion = model.get_layer("fusion")
    s_tok, d_tok = fusion_tokens_model(model)([s, d])
    fused = keras.ops.convert_to_numpy(fusion(s_tok, d_tok, training=False))
    rank = config.bilinear_rank
    assert rank == 9  # the default
    assert fused.shape == (7, 8 + 12 + 16 + rank + 2 * 6)
    # the pooled skip path: the plain means of the normalized tokens (numpy reference)
    np.testing.assert_allclose(fused[:, :8], _normalized(s).mean(1), atol=1e-4)
    np.testing.assert_allclose(fused[:, 8:20], _normalized(d).mean(1), atol=1e-4)
    # the attended vector: attention-weighted values, recomputed from the layer's weights
    weights = attention_scores(model, s, d)["static_to_dynamic_0"][:, :, 0, :]  # (n, heads, T_d)
    value = fusion.value
    values = _normalized(d) @ value.kernel.numpy() + value.bias.numpy()  # (n, T_d, width)
    values = values.reshape(7, 4, 2, 8)
    expected = np.einsum("nht,nthv->nhv", weights, values).reshape(7, 16)
    np.testing.assert_allclose(fused[:, 20:36], expected, atol=1e-4)
    # the low-rank bilinear product of the pooled streams
    bilinear_s, bilinear_d = (layer.kernel.numpy() for layer in fusion.bilinear)
    product = (_normalized(s).mean(1) @ bilinear_s) * (_normalized(d).mean(1) @ bilinear_d)
    np.testing.assert_allclose(fused[:, 36 : 36 + rank], product, atol=1e-4)
    projections = 36 + rank
    # the pooled projections: W x + b of each pooled stream, with pooled_norm LayerNorm'ed (gamma 1, beta 0)
    for (dense, _), pooled, columns in (
        (fusion.projections["static"], _normalized(s).mean(1), slice(projections, projections + 6)),
        (fusion.projections["dynamic"], _normalized(d).mean(1), slice(projections + 6, projections + 12)),
    ):
        z = pooled @ dense.kernel.numpy() + dense.bias.numpy()
        if pooled_norm:
            z = (z - z.mean(1, keepdims=True)) / np.sqrt(z.var(1, keepdims=True) + 1e-6)
        np.testing.assert_allclose(fused[:, columns], z, atol=1e-4)
    # the hidden layer reads the attended vector, the bilinear product and the projections; the output layer
    # reads the hidden units and, as its linear path, the raw pooled streams, the attended vector and the product
    assert model.get_layer("head_hidden").kernel.shape == (16 + rank + 2 * 6, 8)
    assert model.get_layer("traits").kernel.shape == (8 + 8 + 12 + 16 + rank, 5)


def test_models_saved_before_pooled_projections_rebuild_without_them():
    from models.cross_attention import PooledQueryFusion

    config = PooledQueryFusion(width=16, num_heads=2, dropout=0.0, pooled_width=6).get_config()
    del config["pooled_width"], config["pooled_norm"]  # the configuration a model saved before the options holds
    old = PooledQueryFusion.from_config(config)
    s, d = _inputs(n=3)
    assert old.config.pooled_width == 0 and not old.projections
    assert keras.ops.convert_to_numpy(old(s, d)).shape == (3, 8 + 12 + 16)
    model = build_model(ModelConfig(pooled_width=0, bilinear_rank=0, **SMALL), s.shape[1:], d.shape[1:])
    assert model.get_layer("head_hidden").kernel.shape == (8 + 12 + 16, 8)  # reads the raw streams too


@pytest.mark.parametrize(
    "keys, depends_on_dynamic", [("position", False), ("content", True), ("position+content", True)]
)
def test_pooled_query_attention_depends_on_the_static_cue_and_on_content_only_with_content_keys(
    keys, depends_on_dynamic
):
    s, d = _inputs(n=8)
    model = build_model(ModelConfig(fusion="pooled_query", attention_keys=keys, **SMALL), s.shape[1:], d.shape[1:])
    for w in model.get_layer("fusion").weights:  # sharpen the maps, as a trained model would
        if "query" in w.path or "key" in w.path:
            w.assign(w.numpy() * 3)
    scores = attention_scores(model, s, d)["static_to_dynamic_0"]
    assert scores.shape == (8, 2, 1, 4)  # (batch, heads, one pooled query, dynamic segments)
    np.testing.assert_allclose(scores.sum(-1), 1.0, atol=1e-5)
    assert scores.std(axis=-1).min() > 1e-3  # not uniform over segments
    s2, d2 = _inputs(n=8, seed=1)
    assert np.abs(attention_scores(model, s2, d)["static_to_dynamic_0"] - scores).max() > 1e-3
    moved = np.abs(attention_scores(model, s, d2)["static_to_dynamic_0"] - scores).max()
    assert (moved > 1e-3) == depends_on_dynamic, moved
    if not depends_on_dynamic:
        assert moved < 1e-6


def test_attention_runs_over_several_keys_and_differs_across_keys_and_samples():
    s, d = _inputs(n=8)
    model = build_model(ModelConfig(fusion="cross_attention", **SMALL), s.shape[1:], d.shape[1:])
    # Random weights give near-uniform maps; sharpen the query/key projections so
    # the test sees what a trained model does, deterministic all the same.
    for w in model.get_layer("fusion").weights:
        if "attention/query/kernel" in w.path or "attention/key/kernel" in w.path:
            w.assign(w.numpy() * 20)
    scores = attention_scores(model, s, d)
    s2d, d2s = scores["static_to_dynamic_0"], scores["dynamic_to_static_0"]
    assert s2d.shape == (8, 2, 5, 4)  # (batch, heads, static queries, dynamic keys)
    assert d2s.shape == (8, 2, 4, 5)
    np.testing.assert_allclose(s2d.sum(-1), 1.0, atol=1e-5)
    # not constant over keys (the single-key defect gives exactly 1.0 everywhere)
    assert s2d.std(axis=-1).min() > 1e-3
    assert d2s.std(axis=-1).min() > 1e-3
    # not the same map for every sample
    assert np.abs(s2d - s2d[:1]).max(axis=(1, 2, 3))[1:].min() > 1e-3
    entropy = attention_entropy(s2d)
    assert entropy.shape == (2,) and np.all(entropy < np.log(4)) and np.all(entropy > 0)


def test_pooled_vectors_are_split_into_tokens_before_attention():
    s, d = _inputs(n=3, static_shape=(512,), dynamic_shape=(250,))
    model = build_model(ModelConfig(fusion="cross_attention", pooled_tokens=8, **SMALL), s.shape[1:], d.shape[1:])
    scores = attention_scores(model, s, d)
    # 512 -> 8 tokens of 64; 250 -> zero-padded to 256, 8 tokens of 32
    assert scores["static_to_dynamic_0"].shape == (3, 2, 8, 8)
    assert model.predict([s, d], verbose=0).shape == (3, 5)


def test_only_cross_attention_and_dense_layers_train_and_the_feature_stage_is_frozen():
    s, d = _inputs(n=32)
    stats = (np.full(8, 0.5), np.full(8, 4.0))
    model = build_model(ModelConfig(fusion="cross_attention", **SMALL), s.shape[1:], d.shape[1:], static_stats=stats)
    trainable_layers = {w.path.split("/")[0] for w in model.trainable_weights}
    assert trainable_layers == {"fusion", "head_hidden", "traits"}
    for stream in ("static", "dynamic"):
        norm = model.get_layer(f"{stream}_normalization")
        assert not norm.trainable and not norm.trainable_weights
    kinds = {w.path.split("/")[1] for w in model.trainable_weights if w.path.startswith("fusion/")}
    assert kinds == {
        "static_embedding", "dynamic_embedding", "static_to_dynamic_0", "dynamic_to_static_0",
        "static_final_norm", "dynamic_final_norm",
    }
    model.compile(optimizer="adam", loss=keras.losses.MeanSquaredError())
    model.fit([s, d], np.full((32, 5), 0.5), epochs=1, verbose=0)
    norm = model.get_layer("static_normalization")
    np.testing.assert_allclose(np.ravel(keras.ops.convert_to_numpy(norm.mean)), 0.5)
    np.testing.assert_allclose(np.ravel(keras.ops.convert_to_numpy(norm.variance)), 4.0)


@pytest.mark.parametrize("suffix", [".h5", ".keras"])
def test_saved_model_loads_with_load_model_alone_and_predicts_the_same(tmp_path, suffix):
    s, d = _inputs(n=10)
    model = build_model(ModelConfig(fusion="cross_attention", depth=2, **SMALL), s.shape[1:], d.shape[1:])
    model.compile(optimizer="adam", loss=keras.losses.MeanSquaredError())
    model.fit([s, d], np.full((10, 5), 0.3), epochs=1, verbose=0)
    path = tmp_path / f"model{suffix}"
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(loaded.predict([s, d], verbose=0), model.predict([s, d], verbose=0), atol=1e-6)
    a = attention_scores(model, s, d)
    b = attention_scores(loaded, s, d)
    assert sorted(a) == sorted(b) == [
        "dynamic_to_static_0", "dynamic_to_static_1", "static_to_dynamic_0", "static_to_dynamic_1",
    ]
    for key in a:
        np.testing.assert_allclose(a[key], b[key], atol=1e-6)


@pytest.mark.parametrize("suffix", [".h5", ".keras"])
def test_pooled_query_on_pooled_vectors_saves_loads_and_keeps_the_whole_vectors(tmp_path, suffix):
    s, d = _inputs(n=10, static_shape=(20,), dynamic_shape=(30,))
    model = build_model(ModelConfig(fusion="pooled_query", pooled_tokens=5, **SMALL), s.shape[1:], d.shape[1:])
    fusion = model.get_layer("fusion")
    s_tok, d_tok = fusion_tokens_model(model)([s, d])
    fused = keras.ops.convert_to_numpy(fusion(s_tok, d_tok, training=False))
    # a pooled vector split into feature groups reaches the head whole, not as the mean of its groups
    np.testing.assert_allclose(fused[:, :20], s, atol=1e-5)
    np.testing.assert_allclose(fused[:, 20:50], d, atol=1e-5)
    model.compile(optimizer="adam", loss=keras.losses.MeanSquaredError())
    model.fit([s, d], np.full((10, 5), 0.3), epochs=1, verbose=0)
    path = tmp_path / f"model{suffix}"
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(loaded.predict([s, d], verbose=0), model.predict([s, d], verbose=0), atol=1e-6)
    a, b = attention_scores(model, s, d), attention_scores(loaded, s, d)
    assert sorted(a) == sorted(b) == ["static_to_dynamic_0"]
    assert a["static_to_dynamic_0"].shape == (10, 2, 1, 5)
    np.testing.assert_allclose(a["static_to_dynamic_0"], b["static_to_dynamic_0"], atol=1e-6)


def test_invalid_hyperparameters_are_refused():
    with pytest.raises(ValueError, match="multiple of num_heads"):
        ModelConfig(width=10, num_heads=4)
    with pytest.raises(ValueError, match="fusion"):
        ModelConfig(fusion="sum")
    with pytest.raises(ValueError, match="pooled_tokens"):
        ModelConfig(pooled_tokens=1)
    with pytest.raises(ValueError, match="attention_keys"):
        ModelConfig(attention_keys="random")


def test_ridge_warm_start_makes_the_untrained_default_model_predict_like_sklearn_ridge():
    from sklearn.linear_model import RidgeCV
    from sklearn.preprocessing import StandardScaler

    from models.cross_attention import build_model_for_data

    rng = np.random.default_rng(0)
    s = rng.normal(size=(300, 5, 8)).astype("float32")
    d = rng.normal(size=(300, 4, 12)).astype("float32")
    pooled = np.hstack([s.mean(1), d.mean(1)]).astype("float64")
    labels = np.clip(0.5 + 0.05 * np.tanh(pooled @ rng.normal(size=(20, 5)) / 3), 0, 1).astype("float32")
    train, test = np.arange(200), np.arange(200, 300)
    model = build_model_for_data(ModelConfig(**SMALL), s, d, labels, train)
    assert ModelConfig().head_skip and ModelConfig().ridge_warm_start
    predicted = model.predict([s[test], d[test]], verbose=0)
    scaler = StandardScaler().fit(pooled[train])
    ridge = RidgeCV(alphas=np.logspace(-3, 5, 17), alpha_per_target=True)
    ridge.fit(scaler.transform(pooled[train]), labels[train])
    reference = ridge.predict(scaler.transform(pooled[test]))
    # equal up to the curvature of the sigmoid around the prior (labels within 0.5 +- 0.05)
    np.testing.assert_allclose(predicted, reference, atol=2e-3)
    assert np.abs(predicted - labels[train].mean(0)).max() > 0.01  # not the mean predictor
    # without the warm start the untrained model is exactly the mean predictor
    cold = build_model_for_data(ModelConfig(ridge_warm_start=False, **SMALL), s, d, labels, train)
    np.testing.assert_allclose(cold.predict([s[test], d[test]], verbose=0), np.broadcast_to(labels[train].mean(0), (100, 5)), atol=1e-5)


@pytest.mark.parametrize("n, p, seed", [(120, 12, 0), (30, 50, 1), (400, 40, 2)])
def test_numpy_ridge_loo_equals_sklearn_ridgecv_per_target(n, p, seed):
    """models.linear_init.ridge_loo is RidgeCV(alpha_per_target=True): same alphas, same coefficients."""
    from sklearn.linear_model import RidgeCV

    from models.linear_init import RIDGE_ALPHAS, ridge_loo

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, p)) * rng.uniform(0.5, 2.0, size=p) + rng.normal(size=p)
    y = x[:, :5] * rng.uniform(0.0, 1.0, size=5) + rng.normal(scale=rng.uniform(0.1, 3.0, size=5), size=(n, 5))
    coef, alphas = ridge_loo(x, y, RIDGE_ALPHAS)
    reference = RidgeCV(alphas=RIDGE_ALPHAS, alpha_per_target=True).fit(x, y)
    np.testing.assert_array_equal(alphas, reference.alpha_)
    np.testing.assert_allclose(coef.T, reference.coef_, rtol=1e-7, atol=1e-10)
