"""Which evaluated samples did the model never see? Decided by content, not by paths.

A training run records, beside its model, the SHA-256 and shape of every
input file (``training_summary.json`` ``inputs``, and ``run_manifest.json``),
its train/validation rows (``training_rows.npy``, ``validation_rows.npy``) and,
when groups are known, the groups it trained on (``training_groups.txt``).
:func:`held_out_rows` compares the evaluated files with those records by
SHA-256 and sample count, so the answer is the same from any folder and for
copied or moved files. Where the model has no training summary beside it,
the answer is "unknown", said as such, never "held out".
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from utils import constants as C
from utils.data import Dataset, split_indices
from utils.errors import InputError
from utils.hashing import sha256_cached

logger = logging.getLogger(__name__)

ROLES = ("static_features", "dynamic_features", "labels")


@dataclasses.dataclass
class HeldOut:
    rows: np.ndarray  # rows to evaluate
    info: dict[str, Any]  # the "split" block of metrics.json
    train_rows: np.ndarray | None  # the training rows in these files (None when they are other files or unknown)


def recorded_inputs(summary: dict[str, Any] | None, run_dir: Path) -> dict[str, dict[str, Any]]:
    """role -> {"sha256", "n"} as the training run recorded it (summary first, then the manifest)."""
    inputs = (summary or {}).get("inputs")
    if not isinstance(inputs, dict):
        manifest_path = run_dir / C.MANIFEST_FILE
        try:
            inputs = json.loads(manifest_path.read_text(encoding="utf-8")).get("inputs")
        except (OSError, ValueError, UnicodeDecodeError, AttributeError):
            inputs = None
    out = {}
    for role in ROLES:
        entry = (inputs or {}).get(role) if isinstance(inputs, dict) else None
        if isinstance(entry, dict) and entry.get("sha256"):
            shape = entry.get("shape") or [entry.get("n")]
            out[role] = {"sha256": str(entry["sha256"]), "n": shape[0] if shape else None}
    return out


def compare_inputs(recorded: dict[str, dict[str, Any]], data: Dataset) -> tuple[bool | None, list[str]]:
    """(same, differences): True when every file has the recorded SHA-256 and N; None when nothing was recorded."""
    if set(recorded) != set(ROLES):
        return None, [f"the training run recorded no hash for {', '.join(r for r in ROLES if r not in recorded)}"]
    differences = []
    for role in ROLES:
        path = data.paths[role]
        if recorded[role]["n"] is not None and int(recorded[role]["n"]) != len(data):
            differences.append(f"{role}: N={len(data)}, the training run's N={recorded[role]['n']}")
        elif sha256_cached(path) != recorded[role]["sha256"]:
            differences.append(f"{role}: SHA-256 of {path} differs from the training run's file")
    return not differences, differences


def _run_rows(run_dir: Path, summary: dict[str, Any], n: int) -> tuple[np.ndarray, np.ndarray, str]:
    """The training run's train and validation rows: its row files, else rebuilt from val_split and seed."""
    train_file, val_file = run_dir / C.TRAINING_ROWS_FILE, run_dir / C.VALIDATION_ROWS_FILE
    if train_file.is_file() and val_file.is_file():
        train = np.load(train_file, allow_pickle=False).astype(np.int64)
        val = np.load(val_file, allow_pickle=False).astype(np.int64)
        if len(train) and len(val) and max(train.max(), val.max()) < n:
            return train, val, f"the run's {C.TRAINING_ROWS_FILE} and {C.VALIDATION_ROWS_FILE}"
    config = summary.get("config") or {}
    try:
        val_split, seed = float(config["val_split"]), int(config["seed"])
    except (KeyError, TypeError, ValueError):
        raise InputError(
            "expected 'config' with 'val_split' and 'seed' in the training summary (or the run's row files)",
            str(run_dir / C.TRAINING_SUMMARY_FILE),
        ) from None
    train, val = split_indices(n, val_split, seed)
    return train, val, f"rebuilt from val_split={val_split} and seed={seed} (a run without row files)"


def held_out_rows(
    split: str, data: Dataset, summary: dict[str, Any] | None, summary_path: Path
) -> HeldOut:
    """The rows to evaluate for ``--split`` and a description of the choice for metrics.json."""
    n = len(data)
    run_dir = summary_path.parent
    if summary is None:
        if split in ("validation", "train"):
            raise InputError(
                f"--split {split} needs the training run's {C.TRAINING_SUMMARY_FILE} beside the model, found none",
                str(summary_path),
            )
        note = (
            f"no {C.TRAINING_SUMMARY_FILE} beside the model ({summary_path}): it cannot be known which samples "
            "the model was trained on, so these numbers may include training samples"
        )
        logger.warning("Held-out status unknown: %s", note)
        return HeldOut(np.arange(n), {"name": "all", "held_out": "unknown", "note": note}, None)
    same, differences = compare_inputs(recorded_inputs(summary, run_dir), data)
    auto = split == "auto"
    if auto:
        split = "validation" if same else "all"
    if split == "all":
        info = _all_info(same, differences)
        if auto:
            info["chosen_by"] = "auto: " + (
                "the training run recorded no input hashes, so every sample is evaluated" if same is None
                else "these are not the training run's files (by SHA-256 and N), so every sample is evaluated"
            )
        if info["held_out"] == "unknown":
            logger.warning("Held-out status unknown: %s", info["note"])
        return HeldOut(np.arange(n), info, None)
    if not same:
        raise InputError(
            f"--split {split} selects rows of the training run's files, found other files ({'; '.join(differences)})",
            data.paths["labels"],
        )
    train, val, source = _run_rows(run_dir, summary, n)
    info = {
        "name": split,
        "held_out": "yes" if split == "validation" else "no: these are the samples the model was trained on",
        "chosen_by": ("auto: " if auto else "")
        + "SHA-256 and N of every file match the training run's record"
        + (", so only its validation rows are held out" if auto else ""),
        "rows_from": source,
        "summary": str(summary_path),
    }
    return HeldOut(val if split == "validation" else train, info, train)


def _all_info(same: bool | None, differences: list[str]) -> dict[str, Any]:
    if same:
        return {
            "name": "all",
            "held_out": "no: these are the training run's files (SHA-256 and N match), so the samples include "
            "the ones the model was trained on",
        }
    if same is None:
        return {
            "name": "all",
            "held_out": "unknown",
            "note": f"the training summary records no input hashes ({'; '.join(differences)}); "
            "it cannot be known whether these samples were used in training",
        }
    return {
        "name": "all",
        "held_out": "other files",
        "note": "these are not the files the model was trained on (" + "; ".join(differences) + "); the same "
        "clips could still be in both (re-extracted features): with --ids, clips sharing a group with the "
        "training split are counted",
    }


def training_groups(run_dir: Path) -> set[str] | None:
    """The groups the run trained on (``training_groups.txt``), None when the run knew no groups."""
    path = run_dir / C.TRAINING_GROUPS_FILE
    if not path.is_file():
        return None
    return {line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()}


def clips_sharing_training_groups(
    groups: np.ndarray | None, rows: np.ndarray, train_rows: np.ndarray | None, run_dir: Path
) -> dict[str, Any]:
    """The ``leakage`` block of metrics.json: evaluated clips whose group the model saw in training."""
    if groups is None:
        return {"groups_known": False, "evaluated_clips": int(len(rows)), "evaluated_clips_sharing_a_group_with_train": None}
    if train_rows is not None:
        seen = set(np.asarray(groups)[train_rows].tolist())
        source = "the training rows of these files"
    else:
        seen = training_groups(run_dir)
        source = f"{C.TRAINING_GROUPS_FILE} beside the model"
    if seen is None:
        return {
            "groups_known": True,
            "evaluated_clips": int(len(rows)),
            "evaluated_clips_sharing_a_group_with_train": None,
            "note": f"the training run recorded no groups ({C.TRAINING_GROUPS_FILE}), so overlap cannot be counted",
        }
    shared = int(np.isin(np.asarray(groups)[rows], list(seen)).sum())
    return {
        "groups_known": True,
        "evaluated_clips": int(len(rows)),
        "evaluated_clips_sharing_a_group_with_train": shared,
        "training_groups_from": source,
    }
