"""Clip ids and groups: formats, refusals, the First Impressions pattern."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from utils.errors import InputError
from utils.ids import (
    check_enough_groups,
    clips_sharing_a_group,
    groups_from_ids,
    read_groups,
    read_ids,
    resolve_groups,
)

FI_IDS = ["J4GQm9j0JZ0.003.mp4", "J4GQm9j0JZ0.001.mp4", "-6otZ7M-Mro.000.mp4", "a_b-C.d.005.mp4"]


def test_text_and_npy_give_the_same_ids(tmp_path):
    text = tmp_path / "ids.txt"
    text.write_text("\n".join(FI_IDS) + "\n", encoding="utf-8")
    npy = tmp_path / "ids.npy"
    np.save(npy, np.array(FI_IDS))
    from_text = read_ids(text, 4)
    from_npy = read_ids(npy, 4)
    assert from_text.dtype.kind == "U" and from_npy.dtype.kind == "U"
    assert from_text.tolist() == FI_IDS == from_npy.tolist()


def test_windows_line_endings_and_blanks_are_stripped(tmp_path):
    path = tmp_path / "ids.txt"
    path.write_bytes(b"a.1\r\n  b.2 \r\n")
    assert read_ids(path, 2).tolist() == ["a.1", "b.2"]


def test_default_pattern_takes_the_youtube_id():
    groups = groups_from_ids(np.array(FI_IDS))
    assert groups.tolist() == ["J4GQm9j0JZ0", "J4GQm9j0JZ0", "-6otZ7M-Mro", "a_b-C"]


def test_custom_pattern_and_unmatched_id(tmp_path):
    ids = np.array(["p01_clip1", "p02_clip9"])
    assert groups_from_ids(ids, r"^(p\d+)_").tolist() == ["p01", "p02"]
    with pytest.raises(InputError, match="clip_without_dot.*row 1"):
        groups_from_ids(np.array(["a.1", "clip_without_dot"]), path=tmp_path / "ids.txt")
    with pytest.raises(InputError, match="capture group"):
        groups_from_ids(ids, r"p\d+")
    with pytest.raises(InputError, match="valid regular expression"):
        groups_from_ids(ids, r"(p")


@pytest.mark.parametrize(
    ("content", "n", "message"),
    [
        ("a.1\nb.2\n", 3, "expected 3 ids .* found 2"),
        ("a.1\nb.2\na.1\n", 3, "duplicate.*'a.1' in rows 0, 2"),
        ("a.1\n\nb.2\n", 3, "empty one in row 1"),
        ("a.1\n   \nb.2\n", 3, "empty one in row 1"),
    ],
)
def test_bad_text_ids_name_the_file(tmp_path, content, n, message):
    path = tmp_path / "my_ids.txt"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(InputError, match=message) as info:
        read_ids(path, n)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_object_npy_is_never_unpickled(tmp_path, monkeypatch):
    path = tmp_path / "ids.npy"
    np.save(path, np.array(["a.1", "b.2"], dtype=object), allow_pickle=True)
    monkeypatch.setattr(pickle, "loads", lambda *a, **k: pytest.fail("unpickled"))
    with pytest.raises(InputError, match="dtype object"):
        read_ids(path, 2)


def test_numeric_npy_and_binary_text_are_refused(tmp_path):
    numeric = tmp_path / "ids.npy"
    np.save(numeric, np.arange(3))
    with pytest.raises(InputError, match="string dtype, found dtype int64"):
        read_ids(numeric, 3)
    binary = tmp_path / "ids.bin"
    binary.write_bytes(b"\xff\xfe\x00\x01" * 8)
    with pytest.raises(InputError, match="binary content"):
        read_ids(binary, 3)
    with pytest.raises(InputError, match="not found"):
        read_ids(tmp_path / "missing.txt", 3)


def test_groups_allow_repeats_but_not_empty(tmp_path):
    path = tmp_path / "groups.txt"
    path.write_text("p1\np1\np2\n", encoding="utf-8")
    assert read_groups(path, 3).tolist() == ["p1", "p1", "p2"]
    path.write_text("p1\n\np2\n", encoding="utf-8")
    with pytest.raises(InputError, match="empty"):
        read_groups(path, 3)


def test_enough_groups(tmp_path):
    groups = np.array(["a", "a", "b", "c"])
    check_enough_groups(groups, 3)
    with pytest.raises(InputError, match="at least 4 distinct groups.*found 3") as info:
        check_enough_groups(groups, 4, tmp_path / "g.txt")
    assert "g.txt" in str(info.value)


def test_resolve_groups_prefers_the_groups_file(tmp_path):
    ids = tmp_path / "ids.txt"
    ids.write_text("x.1\nx.2\ny.1\n", encoding="utf-8")
    groups = tmp_path / "groups.txt"
    groups.write_text("g1\ng2\ng2\n", encoding="utf-8")
    assert resolve_groups(3)[:2] == (None, None)
    got_ids, got_groups, source = resolve_groups(3, ids)
    assert got_groups.tolist() == ["x", "x", "y"] and source == str(ids)
    got_ids, got_groups, source = resolve_groups(3, ids, groups)
    assert got_ids.tolist() == ["x.1", "x.2", "y.1"]
    assert got_groups.tolist() == ["g1", "g2", "g2"] and source == str(groups)


def test_clips_sharing_a_group():
    groups = np.array(["a", "a", "b", "c", "c", "d"])
    assert clips_sharing_a_group(None, np.array([0]), np.array([1])) is None
    # train rows hold groups a and c; eval rows 1 (a), 2 (b), 4 (c), 5 (d) -> 2 share.
    assert clips_sharing_a_group(groups, np.array([0, 3]), np.array([1, 2, 4, 5])) == 2


# ------------------------------------------------------------------ the training split (utils.splits)


def test_group_split_keeps_groups_whole_and_close_to_the_share():
    from utils.splits import make_split

    rng = np.random.default_rng(4)
    groups = np.array([f"p{k}" for k in rng.integers(0, 50, size=400)])
    split = make_split(400, 0.2, seed=42, method="group", groups=groups)
    assert split.method == "group"
    assert not set(groups[split.train]) & set(groups[split.val])
    assert sorted([*split.train, *split.val]) == list(range(400))
    assert abs(len(split.val) - 80) <= 15
    assert split.leakage == {"groups_known": True, "val_clips": len(split.val), "val_clips_sharing_a_group_with_train": 0}


def test_random_split_counts_leaks_and_warns(caplog):
    from utils.data import split_indices
    from utils.splits import make_split

    groups = np.repeat([f"p{k}" for k in range(40)], 5)
    with caplog.at_level("WARNING"):
        split = make_split(200, 0.2, seed=42, method="random", groups=groups)
    train, val = split_indices(200, 0.2, 42)
    assert split.train.tolist() == train.tolist() and split.val.tolist() == val.tolist()
    shared = int(np.isin(groups[val], groups[train]).sum())  # independent count
    assert shared > 0 and split.leakage["val_clips_sharing_a_group_with_train"] == shared
    assert len([r for r in caplog.records if r.levelname == "WARNING"]) == 1
    assert f"{shared} of {len(val)} validation clips" in caplog.records[0].getMessage()
    # Without groups the group split is the random split (every clip its own group), leakage unknown.
    plain = make_split(200, 0.2, seed=42, method="group", groups=None)
    assert plain.val.tolist() == val.tolist() and plain.leakage["val_clips_sharing_a_group_with_train"] is None


def test_explicit_rows_are_checked(tmp_path):
    from utils.splits import make_split

    np.save(tmp_path / "train.npy", np.array([0, 1, 2, 3]))
    np.save(tmp_path / "val.npy", np.array([4, 5]))
    split = make_split(8, 0.2, 0, rows=(str(tmp_path / "train.npy"), str(tmp_path / "val.npy")))
    assert split.method == "rows" and split.train.tolist() == [0, 1, 2, 3] and split.val.tolist() == [4, 5]
    np.save(tmp_path / "bad.npy", np.array([3, 9]))
    with pytest.raises(InputError, match=r"in \[0, 7\].*found 3 to 9"):
        make_split(8, 0.2, 0, rows=(str(tmp_path / "train.npy"), str(tmp_path / "bad.npy")))
    np.save(tmp_path / "overlap.npy", np.array([3, 4]))
    with pytest.raises(InputError, match="disjoint"):
        make_split(8, 0.2, 0, rows=(str(tmp_path / "train.npy"), str(tmp_path / "overlap.npy")))
    np.save(tmp_path / "float.npy", np.array([0.5]))
    with pytest.raises(InputError, match="integer row indices"):
        make_split(8, 0.2, 0, rows=(str(tmp_path / "float.npy"), str(tmp_path / "val.npy")))


def test_hash_cache_reuses_and_invalidates(tmp_path, monkeypatch):
    import hashlib
    import os

    from utils import hashing

    monkeypatch.setenv(hashing.CACHE_ENV, str(tmp_path / "cache.json"))
    data = tmp_path / "x.bin"
    data.write_bytes(b"abc" * 1000)
    assert hashing.sha256_cached(data) == hashlib.sha256(b"abc" * 1000).hexdigest()
    calls = []
    monkeypatch.setattr(hashing, "sha256_file", lambda p: calls.append(p) or "recomputed")
    assert hashing.sha256_cached(data) == hashlib.sha256(b"abc" * 1000).hexdigest() and not calls
    data.write_bytes(b"abd" * 1000)
    os.utime(data, ns=(1, 2))  # another mtime: hashed again
    assert hashing.sha256_cached(data) == "recomputed" and len(calls) == 1
