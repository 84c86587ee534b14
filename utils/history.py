"""The training history file: a structured ``.npy`` array plus a JSON twin.

``training_history.npy`` holds one row per epoch and one float64 field per
metric (``epoch`` first), so ``np.load(path, allow_pickle=False)`` reads it
and no code from the file can run. ``training_history.json`` holds the same
numbers as ``{"epoch": [...], "<metric>": [...]}``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from utils import constants as C
from utils.errors import InputError
from utils.io import save_npy, write_json

History = dict[str, list[float]]


def to_structured(history: History) -> np.ndarray:
    """``{"metric": [per-epoch values]}`` -> structured array, one row per epoch."""
    names = list(history)
    lengths = {len(v) for v in history.values()}
    if len(lengths) > 1:
        raise ValueError(f"history columns have different lengths: {sorted(lengths)}")
    rows = lengths.pop() if lengths else 0
    table = np.zeros(rows, dtype=[(name, "float64") for name in names])
    for name in names:
        table[name] = np.asarray(history[name], dtype="float64")
    return table


def from_structured(table: np.ndarray) -> History:
    return {name: [float(v) for v in table[name]] for name in table.dtype.names}


def save_history(history: History, npy_path: str | Path, json_path: str | Path) -> None:
    """Write both history files atomically."""
    save_npy(npy_path, to_structured(history))
    write_json(json_path, history)


def load_history(path: str | Path, trust_pickle: bool = False) -> History:
    """Read a history written by :func:`save_history` (``.npy`` or ``.json``).

    A pickled dict (what older versions of this pipeline wrote with
    ``np.save(path, history.history)``) is refused unless ``trust_pickle`` is
    set, because unpickling runs code from the file.
    """
    p = Path(path)
    if p.is_dir():
        found = [name for name in (C.HISTORY_FILE, C.HISTORY_JSON_FILE) if (p / name).is_file()]
        offer = f"; it holds {found[0]}: pass {p / found[0]}" if found else ""
        raise InputError(f"expected a history file (training_history.npy or .json), found a folder{offer}", str(p))
    if not p.is_file():
        raise InputError("history file not found (expected training_history.npy or .json)", str(p))
    if p.suffix.lower() == ".json":
        try:
            raw = json.loads(p.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise InputError(f"expected a JSON training history, found invalid JSON ({exc})", str(p)) from exc
        if not isinstance(raw, dict) or not all(isinstance(v, list) for v in raw.values()):
            raise InputError("expected a JSON object of per-epoch lists, found another structure", str(p))
        history = {str(k): [float("nan") if x is None else float(x) for x in v] for k, v in raw.items()}
    elif p.suffix.lower() == ".npy":
        try:
            table = np.load(p, allow_pickle=False)
        except ValueError as exc:
            if "allow_pickle" not in str(exc):
                raise InputError(f"expected a NumPy .npy training history, found a corrupt file ({exc})", str(p)) from exc
            if not trust_pickle:
                raise InputError(
                    "this history is a pickled object (written by an older version of this "
                    "pipeline); loading it would run code from the file. If you trust the file, "
                    "pass --trust_pickle",
                    str(p),
                ) from exc
            obj = np.load(p, allow_pickle=trust_pickle)  # the user vouched for this file
            obj = obj.item() if obj.dtype == object and obj.shape == () else obj
            if not isinstance(obj, dict):
                raise InputError(f"expected a pickled dict of metrics, found {type(obj).__name__}", str(p)) from exc
            history = {str(k): [float(x) for x in np.ravel(v)] for k, v in obj.items()}
        except (OSError, EOFError) as exc:
            raise InputError(f"expected a NumPy .npy training history, found an unreadable file ({exc})", str(p)) from exc
        else:
            if table.dtype.names is None:
                raise InputError(
                    f"expected a structured array with one field per metric, found a plain "
                    f"{table.dtype} array of shape {table.shape}",
                    str(p),
                )
            history = from_structured(table)
    else:
        raise InputError(f"expected a .npy or .json history file, found '{p.suffix or 'no'}' extension", str(p))
    if not history or "loss" not in history:
        raise InputError(f"expected a training history with a 'loss' column, found columns {sorted(history)}", str(p))
    return history


def load_start_validation(history_path: str | Path) -> dict[str, float] | None:
    """The run's epoch-0 validation metrics (``start_validation.json`` beside the history), or None.

    Written by :func:`utils.training.score_start`; absent in runs made before
    it existed, in resumed-only folders of such runs, and beside a history
    copied elsewhere. A file that is not a JSON object of numbers is ignored
    (the figures then simply start at epoch 1).
    """
    p = Path(history_path)
    path = (p if p.is_dir() else p.parent) / C.START_VALIDATION_FILE
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    if not isinstance(raw, dict) or not all(isinstance(v, (int, float)) for v in raw.values()):
        return None
    return {str(k): float(v) for k, v in raw.items()}


def keeps_start(best_epoch_val_loss: float, start_val_loss: float) -> bool:
    """Epoch 0 (the model as built) wins unless an epoch's validation loss is strictly lower.

    The one rule of the training script (:func:`utils.training.summarize`,
    :class:`utils.callbacks.BestModelCheckpoint`) and the capability suite.
    """
    return not best_epoch_val_loss < start_val_loss
