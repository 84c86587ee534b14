"""Tests of the synthetic data generator (utils/synthetic.py) and its script."""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import numpy as np
import pytest

from scripts.generate_sample_data import main
from utils.constants import DYNAMIC_FEATURES_FILE, LABELS_FILE, NUM_TRAITS, STATIC_FEATURES_FILE, TRAITS
from utils.synthetic import (
    BLOCK_SIZE,
    FIRST_IMPRESSIONS_CORRELATION,
    FIRST_IMPRESSIONS_MEANS,
    FIRST_IMPRESSIONS_STDS,
    INTERACTION_KINDS,
    SyntheticData,
    SyntheticSpec,
    generate,
    generate_range,
    label_statistics,
    noise_ceiling,
    planted_signal,
    ridge_baseline,
    split_indices,
    write_dataset,
)

REPO = Path(__file__).resolve().parents[1]
FILES = (STATIC_FEATURES_FILE, DYNAMIC_FEATURES_FILE, LABELS_FILE)
# Small shapes for the byte-level tests (the smallest widths the spec accepts).
SMALL = {"static_tokens": 3, "static_dim": 18, "dynamic_tokens": 5, "dynamic_dim": 13}


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def large() -> tuple[SyntheticSpec, SyntheticData]:
    """N = 4000 with the data_sample shapes (about 1 s)."""
    spec = SyntheticSpec(n_samples=4000, seed=7)
    return spec, generate(spec)


@pytest.fixture(scope="module")
def split() -> tuple[np.ndarray, np.ndarray]:
    return split_indices(4000, 0.2, seed=0)


def test_script_regenerates_committed_data_sample_byte_for_byte(tmp_path: Path) -> None:
    assert main(["--output_dir", str(tmp_path)]) == 0
    for name in FILES:
        assert (tmp_path / name).read_bytes() == (REPO / "data_sample" / name).read_bytes(), name


def test_two_runs_write_identical_bytes(tmp_path: Path) -> None:
    spec = SyntheticSpec(n_samples=150, seed=3, **SMALL)
    write_dataset(spec, tmp_path / "a")
    write_dataset(spec, tmp_path / "b")
    for name in FILES:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


@pytest.mark.parametrize("chunk_size", [1, 37, BLOCK_SIZE, 1000])
def test_write_dataset_bytes_do_not_depend_on_chunk_size(tmp_path: Path, chunk_size: int) -> None:
    spec = SyntheticSpec(n_samples=150, seed=3, **SMALL)  # 150 is not a multiple of BLOCK_SIZE
    data = generate(spec)
    paths = write_dataset(spec, tmp_path, chunk_size=chunk_size)
    assert (paths["static"].read_bytes(), paths["dynamic"].read_bytes(), paths["labels"].read_bytes()) == (
        _npy_bytes(data.static),
        _npy_bytes(data.dynamic),
        _npy_bytes(data.labels),
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(FILES)  # no temporary files left


def test_write_dataset_replaces_existing_files(tmp_path: Path) -> None:
    for name in FILES:
        (tmp_path / name).write_bytes(b"old")
    spec = SyntheticSpec(n_samples=10, seed=1, **SMALL)
    write_dataset(spec, tmp_path)
    assert np.load(tmp_path / LABELS_FILE).shape == (10, NUM_TRAITS)


def test_ranges_and_larger_sets_extend_without_changing_earlier_samples() -> None:
    small = generate(SyntheticSpec(n_samples=70, seed=5, **SMALL))
    big = SyntheticSpec(n_samples=200, seed=5, **SMALL)
    whole = generate(big)
    part = generate_range(big, 60, 130)
    np.testing.assert_array_equal(whole.static[:70], small.static)
    np.testing.assert_array_equal(whole.labels[:70], small.labels)
    np.testing.assert_array_equal(part.dynamic, whole.dynamic[60:130])
    np.testing.assert_array_equal(part.signal, whole.signal[60:130])
    other_seed = generate(SyntheticSpec(n_samples=70, seed=6, **SMALL))
    assert not np.array_equal(other_seed.static, small.static)


def test_committed_data_sample_shapes_dtypes_and_range() -> None:
    static = np.load(REPO / "data_sample" / STATIC_FEATURES_FILE)
    dynamic = np.load(REPO / "data_sample" / DYNAMIC_FEATURES_FILE)
    labels = np.load(REPO / "data_sample" / LABELS_FILE)
    assert static.shape == (4000, 8, 24) and static.dtype == np.float16
    assert dynamic.shape == (4000, 8, 24) and dynamic.dtype == np.float16
    assert labels.shape == (4000, NUM_TRAITS) and labels.dtype == np.float32
    assert labels.min() >= 0.0 and labels.max() <= 1.0
    assert all(np.isfinite(a).all() for a in (static, dynamic, labels))
    total = sum((REPO / "data_sample" / name).stat().st_size for name in FILES)
    assert total < 15 * 2**20


def test_committed_data_sample_has_a_cue_selected_segment_that_ridge_cannot_see() -> None:
    from scripts.generate_sample_data import SAMPLE_SHAPES, SAMPLE_SIGNAL

    static = np.load(REPO / "data_sample" / STATIC_FEATURES_FILE)
    dynamic = np.load(REPO / "data_sample" / DYNAMIC_FEATURES_FILE)
    labels = np.load(REPO / "data_sample" / LABELS_FILE)
    spec = SyntheticSpec(
        n_samples=len(labels), dtype="float16", interaction=SAMPLE_SIGNAL["interaction"],
        interaction_fraction=SAMPLE_SIGNAL["interaction_fraction"],
        static_fraction=(1 - SAMPLE_SIGNAL["interaction_fraction"]) / 2,
        dynamic_fraction=(1 - SAMPLE_SIGNAL["interaction_fraction"]) / 2,
        noise_fraction=SAMPLE_SIGNAL["noise_fraction"], **SAMPLE_SHAPES,
    )
    signal, _ = planted_signal(spec, static, dynamic)
    train, val = split_indices(len(labels), 0.2, seed=42)  # the trainer's default split
    ceiling = noise_ceiling(labels[val], signal[val])["mean"]
    ridge = ridge_baseline(static, dynamic, labels, train, val)["mean"]
    assert ceiling > 0.75 and ridge < 0.3 and ceiling - ridge > 0.45


@pytest.mark.parametrize("dtype", ["float16", "float64"])
def test_other_dtypes_store_the_same_draws(dtype: str) -> None:
    base = generate(SyntheticSpec(n_samples=20, seed=2, **SMALL))
    other = generate(SyntheticSpec(n_samples=20, seed=2, dtype=dtype, **SMALL))
    assert other.static.dtype == np.dtype(dtype) and other.labels.dtype == np.float32
    np.testing.assert_array_equal(other.static, base.static.astype(dtype))
    np.testing.assert_allclose(other.labels, base.labels, atol=2e-2)


def test_label_statistics_match_first_impressions(large) -> None:
    _, data = large
    stats = label_statistics(data.labels)
    assert data.labels.dtype == np.float32
    assert 0.0 <= data.labels.min() and data.labels.max() <= 1.0
    np.testing.assert_allclose(stats["mean"], FIRST_IMPRESSIONS_MEANS, atol=0.03)
    np.testing.assert_allclose(stats["std"], FIRST_IMPRESSIONS_STDS, atol=0.03)
    np.testing.assert_allclose(stats["correlation"], FIRST_IMPRESSIONS_CORRELATION, atol=0.1)
    assert stats["clipped_fraction"] < 0.01


def test_components_are_standardized_and_uncorrelated(large) -> None:
    _, data = large
    stacked = np.hstack([data.components[name] for name in ("static", "dynamic", "interaction", "noise")])
    np.testing.assert_allclose(stacked.mean(axis=0), 0.0, atol=0.1)
    np.testing.assert_allclose(stacked.std(axis=0), 1.0, atol=0.1)
    off_diagonal = np.corrcoef(stacked, rowvar=False)[~np.eye(stacked.shape[1], dtype=bool)]
    assert np.abs(off_diagonal).max() < 0.1


def test_noise_ceiling_is_about_one_minus_noise_fraction_and_beats_ridge(large, split) -> None:
    spec, data = large
    ceiling = noise_ceiling(data.labels, data.signal)
    assert set(ceiling) == {*TRAITS, "mean"}
    assert abs(ceiling["mean"] - (1.0 - spec.noise_fraction)) < 0.05
    train, val = split
    ceiling_val = noise_ceiling(data.labels[val], data.signal[val])
    ridge = ridge_baseline(data.static, data.dynamic, data.labels, train, val)
    assert 0.05 < ridge["mean"] < ceiling_val["mean"] - 0.2
    assert all(ceiling_val[t] > ridge[t] for t in TRAITS)


def test_interaction_is_token_level_and_not_recoverable_from_pooled_features(large, split) -> None:
    spec, data = large
    train, val = split
    interaction = ridge_baseline(data.static, data.dynamic, data.components["interaction"], train, val)
    static_part = ridge_baseline(data.static, data.dynamic, data.components["static"], train, val)
    assert interaction["mean"] < 0.2
    assert static_part["mean"] > 0.6  # the single-stream parts are mostly linear in the pooled vectors
    # ...while the interaction is a deterministic function of the stored tokens.
    signal, parts = planted_signal(spec, data.static, data.dynamic)
    np.testing.assert_allclose(parts["interaction"], data.components["interaction"], rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(signal, data.signal, rtol=1e-9, atol=1e-9)


@pytest.fixture(scope="module")
def kinds() -> dict[str, tuple[SyntheticSpec, SyntheticData]]:
    """N = 2000 of each interaction kind (sample shapes)."""
    out = {}
    for kind in INTERACTION_KINDS:
        spec = SyntheticSpec(n_samples=2000, seed=3, interaction=kind)
        out[kind] = (spec, generate(spec))
    return out


@pytest.mark.parametrize("kind", INTERACTION_KINDS)
def test_every_interaction_kind_is_standardized_and_invisible_to_linear_pooled_models(kinds, kind) -> None:
    spec, data = kinds[kind]
    part = data.components["interaction"]
    np.testing.assert_allclose(part.mean(axis=0), 0.0, atol=0.1)
    np.testing.assert_allclose(part.std(axis=0), 1.0, atol=0.1)
    for other in ("static", "dynamic", "noise"):
        correlation = np.corrcoef(part.T, data.components[other].T)[:NUM_TRAITS, NUM_TRAITS:]
        assert np.abs(correlation).max() < 0.1
    train, val = split_indices(2000, 0.2, seed=0)
    assert ridge_baseline(data.static, data.dynamic, part, train, val)["mean"] < 0.05
    signal, parts = planted_signal(spec, data.static, data.dynamic)
    np.testing.assert_allclose(parts["interaction"], part, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(signal, data.signal, rtol=1e-9, atol=1e-9)


# What each kind depends on: reorder the dynamic segments (pooled vectors and the
# set of token contents unchanged), or swap in another clip's deviations around
# the same pooled mean.
@pytest.mark.parametrize(
    "kind, moves_with_order, moves_with_deviations",
    [("attention", False, True), ("product", False, False), ("cue_segment", True, True)],
)
def test_interaction_kinds_depend_on_segment_order_and_content_as_designed(
    kinds, kind, moves_with_order, moves_with_deviations
) -> None:
    spec, data = kinds[kind]
    static, dynamic = data.static[:BLOCK_SIZE].astype(np.float64), data.dynamic[:BLOCK_SIZE].astype(np.float64)
    sub = dataclasses.replace(spec, n_samples=BLOCK_SIZE)
    _, base = planted_signal(sub, static, dynamic)
    reordered = dynamic[:, np.random.default_rng(0).permutation(spec.dynamic_tokens)]
    _, after_order = planted_signal(sub, static, reordered)
    mean = dynamic.mean(axis=1, keepdims=True)
    other = data.dynamic[BLOCK_SIZE : 2 * BLOCK_SIZE].astype(np.float64)
    swapped = mean + other - other.mean(axis=1, keepdims=True)
    _, after_swap = planted_signal(sub, static, swapped)
    for name in ("static", "dynamic"):  # pooled parts unchanged by construction
        np.testing.assert_allclose(after_order[name], base[name], atol=1e-9)
        np.testing.assert_allclose(after_swap[name], base[name], atol=1e-9)
    order_change = np.abs(after_order["interaction"] - base["interaction"]).max()
    swap_change = np.abs(after_swap["interaction"] - base["interaction"]).max()
    assert (order_change > 0.1) == moves_with_order, order_change
    assert (swap_change > 0.1) == moves_with_deviations, swap_change


def test_noise_ceiling_of_perfect_and_constant_predictions() -> None:
    labels = np.random.default_rng(0).uniform(size=(50, NUM_TRAITS))
    assert noise_ceiling(labels, labels)["mean"] == pytest.approx(1.0)
    constant = np.broadcast_to(labels.mean(axis=0), labels.shape)
    assert noise_ceiling(labels, constant)["mean"] == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="shape"):
        noise_ceiling(labels, labels[:, :3])


@pytest.mark.parametrize(
    "overrides",
    [
        {"n_samples": 0},
        {"static_tokens": 1},
        {"static_dim": 10},
        {"dynamic_dim": 12},
        {"dtype": "int8"},
        {"seed": -1},
        {"static_fraction": 0.5},
        {"noise_fraction": 1.0},
        {"attention_temperature": 0.0},
        {"interaction": "sum"},
    ],
)
def test_invalid_specs_raise_value_error(overrides: dict) -> None:
    with pytest.raises(ValueError, match="Invalid"):
        SyntheticSpec(**{"n_samples": 10, **overrides})


def test_script_main_writes_files_and_reports(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--output_dir", str(tmp_path), "--n_samples", "100", "--seed", "4", "--report"]
    argv += ["--static_tokens", "4", "--static_dim", "20", "--dynamic_tokens", "6", "--dynamic_dim", "16"]
    assert main(argv) == 0
    assert np.load(tmp_path / STATIC_FEATURES_FILE).shape == (100, 4, 20)
    assert np.load(tmp_path / DYNAMIC_FEATURES_FILE).shape == (100, 6, 16)
    assert np.load(tmp_path / LABELS_FILE).shape == (100, NUM_TRAITS)
    out = capsys.readouterr().out
    assert "ceiling" in out and "ridge" in out


def test_script_first_impressions_shapes_and_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--output_dir", str(tmp_path), "--n_samples", "2", "--first_impressions_shapes"]) == 0
    assert np.load(tmp_path / STATIC_FEATURES_FILE, mmap_mode="r").shape == (2, 49, 512)
    assert np.load(tmp_path / DYNAMIC_FEATURES_FILE, mmap_mode="r").shape == (2, 16, 1024)
    assert main(["--output_dir", str(tmp_path / "bad"), "--static_dim", "4"]) == 2
    assert "static_dim" in capsys.readouterr().err
    assert not (tmp_path / "bad" / LABELS_FILE).exists()
