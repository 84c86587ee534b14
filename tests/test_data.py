"""Loaders: accepted layouts, refused files (one line naming the file), split, pipeline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from utils.data import (
    EpochBatches,
    feature_statistics,
    load_dataset,
    load_features,
    load_labels,
    make_tf_dataset,
    split_indices,
)
from utils.errors import InputError


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
@pytest.mark.parametrize("shape", [(10, 512), (10, 7, 33)])
def test_accepts_pooled_and_token_features_in_every_float_dtype(tmp_path, dtype, shape):
    path = tmp_path / "f.npy"
    np.save(path, np.ones(shape, dtype=dtype))
    array = load_features(path, "static features")
    assert array.shape == shape and array.dtype == np.dtype(dtype)
    assert isinstance(array, np.memmap)  # opened memory-mapped, not copied


def _refusal(tmp_path: Path, name: str, payload) -> str:
    path = tmp_path / name
    if callable(payload):
        payload(path)
    elif payload is not None:
        np.save(path, payload, allow_pickle=True)
    with pytest.raises(InputError) as info:
        load_features(path, "static features")
    message = str(info.value)
    assert str(path) in message and "\n" not in message
    return message


@pytest.mark.parametrize(
    ("name", "payload", "expected"),
    [
        ("missing.npy", None, "not found"),
        ("f.txt", lambda p: p.write_text("1,2"), "expected a .npy file"),
        ("empty.npy", lambda p: p.write_bytes(b""), "empty file"),
        ("garbage.npy", lambda p: p.write_bytes(b"hello world, not numpy"), "not in NumPy .npy format"),
        ("obj.npy", np.array([{"a": 1}, None], dtype=object), "dtype object"),
        ("str.npy", np.array([["a", "b"]]), "float16, float32 or float64, found <U1"),
        ("int.npy", np.ones((3, 4), dtype=np.int64), "found int64"),
        ("rank1.npy", np.ones(5, dtype="float32"), "rank 1"),
        ("rank4.npy", np.ones((2, 2, 2, 2), dtype="float32"), "rank 4"),
        ("nan.npy", np.array([[0.0, np.nan]], dtype="float32"), "found nan in sample 0"),
        ("inf.npy", np.array([[0.0, 1.0], [np.inf, 0]], dtype="float64"), "found inf in sample 1"),
    ],
)
def test_refuses_bad_feature_files(tmp_path, name, payload, expected):
    assert expected in _refusal(tmp_path, name, payload)


def test_truncated_file_is_refused(tmp_path):
    good = tmp_path / "good.npy"
    np.save(good, np.ones((100, 8), dtype="float32"))
    bad = tmp_path / "truncated.npy"
    bad.write_bytes(good.read_bytes()[:-100])
    assert "truncated" in _refusal(tmp_path, "truncated.npy", None)


def test_pickle_payload_is_never_executed(tmp_path):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "evil.npy"
    np.save(path, np.array([Exploit()], dtype=object), allow_pickle=True)
    assert not marker.exists()  # np.save pickles without calling open
    with pytest.raises(InputError, match="dtype object"):
        load_features(path, "static features")
    assert not marker.exists()


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        (np.full((4, 4), 0.5), r"expected labels of shape \(N, 5\)"),
        (np.full((4, 5, 1), 0.5), r"found shape \(4, 5, 1\)"),
        (np.array([[0.5] * 4 + [1.2]] * 3), "expected labels in \\[0, 1\\], found values from 0.5 to 1.2"),
        (np.array([[-0.1] + [0.5] * 4]), "found values from -0.1"),
        (np.array([[np.nan] * 5]), "found nan"),
    ],
)
def test_refuses_bad_labels(tmp_path, labels, expected):
    path = tmp_path / "labels.npy"
    np.save(path, labels)
    with pytest.raises(InputError, match=expected):
        load_labels(path)


def test_mismatched_sample_counts_name_every_file(tmp_path):
    np.save(tmp_path / "s.npy", np.ones((10, 4, 3), "float32"))
    np.save(tmp_path / "d.npy", np.ones((9, 4, 3), "float32"))
    np.save(tmp_path / "l.npy", np.full((10, 5), 0.5))
    with pytest.raises(InputError) as info:
        load_dataset(tmp_path / "s.npy", tmp_path / "d.npy", tmp_path / "l.npy")
    message = str(info.value)
    assert "s.npy: N=10" in message and "d.npy: N=9" in message and "l.npy: N=10" in message


def test_zero_samples_refused(tmp_path):
    np.save(tmp_path / "s.npy", np.ones((0, 4), "float32"))
    np.save(tmp_path / "d.npy", np.ones((0, 4), "float32"))
    np.save(tmp_path / "l.npy", np.ones((0, 5), "float32"))
    with pytest.raises(InputError, match="N=0"):
        load_dataset(tmp_path / "s.npy", tmp_path / "d.npy", tmp_path / "l.npy")


def test_split_is_seeded_disjoint_and_complete():
    tr1, va1 = split_indices(101, 0.2, seed=7)
    tr2, va2 = split_indices(101, 0.2, seed=7)
    tr3, _ = split_indices(101, 0.2, seed=8)
    assert np.array_equal(tr1, tr2) and np.array_equal(va1, va2)
    assert not np.array_equal(tr1, tr3)
    assert len(va1) == 20 and len(tr1) == 81
    assert sorted(np.concatenate([tr1, va1]).tolist()) == list(range(101))


@pytest.mark.parametrize(("n", "fraction"), [(1, 0.5), (3, 0.1), (3, 0.9)])
def test_too_few_samples_to_split(n, fraction):
    with pytest.raises(InputError, match="enough samples"):
        split_indices(n, fraction, seed=0)


def test_feature_statistics_match_numpy_for_any_chunking():
    rng = np.random.default_rng(1)
    x = rng.normal(3.0, 2.0, size=(37, 5, 6)).astype("float32")
    idx = np.array([0, 3, 4, 10, 20, 36])
    mean, var = feature_statistics(x, idx, chunk_rows=4)
    flat = x[idx].reshape(-1, 6).astype("float64")
    np.testing.assert_allclose(mean, flat.mean(0), rtol=1e-10)
    np.testing.assert_allclose(var, flat.var(0), rtol=1e-8)


def test_epoch_batches_cover_every_sample_once_and_depend_only_on_seed_and_epoch():
    idx = np.arange(3, 50)
    a = EpochBatches(idx, 8, shuffle=True, seed=5)
    batches = list(a())
    assert len(batches) == len(a) == 6 and len(batches[-1]) == 47 - 40  # partial batch kept
    assert sorted(np.concatenate(batches).tolist()) == idx.tolist()
    epoch3 = [b.tolist() for b in a(3)]
    b = EpochBatches(idx, 8, shuffle=True, seed=5)
    assert [x.tolist() for x in b(3)] == epoch3
    assert epoch3 != [x.tolist() for x in batches]


def test_tf_dataset_yields_every_validation_sample_from_a_memory_map(tiny_data):
    data = load_dataset(tiny_data["static_features"], tiny_data["dynamic_features"], tiny_data["labels"])
    idx = np.arange(0, len(data), 3)  # 16 samples, batch 5 -> partial last batch
    seen = []
    for (s, _d), y in make_tf_dataset(data, EpochBatches(idx, 5, shuffle=False, seed=0)):
        assert s.dtype.name == "float32" and s.shape[1:] == data.static.shape[1:]
        seen.append(y.numpy())
    np.testing.assert_array_equal(np.concatenate(seen), np.asarray(data.labels)[idx])
