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
)
from utils.constants import FUSION_MODES

SMALL = {"width": 16, "num_heads": 2, "head_units": 8}


def _inputs(n=6, static_shape=(5, 8), dynamic_shape=(4, 12), seed=0):
    rng = np.random.default_rng(seed)
    return (
        rng.normal(size=(n, *static_shape)).astype("float32"),
        rng.normal(size=(n, *dynamic_shape)).astype("float32"),
    )


@pytest.mark.parametrize("fusion", FUSION_MODES)
def test_every_fusion_mode_outputs_five_probabilities(fusion):
    s, d = _inputs()
    model = build_model(ModelConfig(fusion=fusion, **SMALL), s.shape[1:], d.shape[1:])
    out = model.predict([s, d], verbose=0)
    assert out.shape == (6, 5)
    assert np.all((out > 0) & (out < 1))


def test_attention_runs_over_several_keys_and_differs_across_keys_and_samples():
    s, d = _inputs(n=8)
    model = build_model(ModelConfig(**SMALL), s.shape[1:], d.shape[1:])
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
    model = build_model(ModelConfig(pooled_tokens=8, **SMALL), s.shape[1:], d.shape[1:])
    scores = attention_scores(model, s, d)
    # 512 -> 8 tokens of 64; 250 -> zero-padded to 256, 8 tokens of 32
    assert scores["static_to_dynamic_0"].shape == (3, 2, 8, 8)
    assert model.predict([s, d], verbose=0).shape == (3, 5)


def test_only_cross_attention_and_dense_layers_train_and_the_feature_stage_is_frozen():
    s, d = _inputs(n=32)
    stats = (np.full(8, 0.5), np.full(8, 4.0))
    model = build_model(ModelConfig(**SMALL), s.shape[1:], d.shape[1:], static_stats=stats)
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
    model = build_model(ModelConfig(depth=2, **SMALL), s.shape[1:], d.shape[1:])
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


def test_invalid_hyperparameters_are_refused():
    with pytest.raises(ValueError, match="multiple of num_heads"):
        ModelConfig(width=10, num_heads=4)
    with pytest.raises(ValueError, match="fusion"):
        ModelConfig(fusion="sum")
    with pytest.raises(ValueError, match="pooled_tokens"):
        ModelConfig(pooled_tokens=1)
