"""Crash-safe training state: resume a killed run from its last finished epoch.

After every epoch, :class:`ResumeState` (the last callback of a run) writes

* ``resume/epoch-<k>.weights.h5``: the model and optimizer variables
  (``model.save_weights``), then
* ``resume/state.json``: the finished epoch count, the name of that weights
  file, the random-generator states of the dropout layers (Keras does not
  save them with the weights), the counters of early stopping, the plateau
  rule and the best-checkpoint tracker, and the run's configuration,

each atomically and in that order, so ``state.json`` always points at a
complete weights file. A kill at any moment therefore loses at most the epoch
in progress. ``--resume`` reads the state, checks the configuration matches,
restores everything and continues ``fit`` at ``initial_epoch``; the data order
of each epoch depends only on ``(seed, epoch)`` (:class:`utils.data.EpochBatches`),
so the resumed run follows the uninterrupted one.

Keras' own ``BackupAndRestore`` is not used because it writes its weights and
its epoch counter as two non-atomic writes (a kill between them resumes at the
wrong epoch) and does not restore the callbacks' counters or the RNG states.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from utils.errors import InputError
from utils.io import atomic_path, write_json

RESUME_DIR = "resume"
STATE_FILE = "state.json"
# Settings that may differ between the killed run and its resumption.
RESUMABLE_DIFFERENCES = frozenset({"epochs", "verbose", "resume", "patience", "wandb", "wandb_mode"})


def state_path(output_dir: Path) -> Path:
    return Path(output_dir) / RESUME_DIR / STATE_FILE


def read_state(output_dir: Path) -> dict[str, Any] | None:
    """The saved resume state of ``output_dir``, or None when there is none."""
    path = state_path(output_dir)
    if not path.is_file():
        return None
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:  # cannot happen with atomic writes, but never trust a file
        raise InputError(f"expected a resume state in JSON, found an unreadable file ({exc})", str(path)) from exc
    weights = path.parent / str(state.get("weights", ""))
    if not weights.is_file():
        raise InputError(f"expected the resume weights {weights.name} beside the state, found none", str(path))
    return state


def check_compatible(state: dict[str, Any], config: dict[str, Any], path: Path) -> None:
    """Refuse to resume with settings that change the run (only a few may differ)."""
    saved = state.get("config", {})
    changed = sorted(
        k for k in set(saved) | set(config) if k not in RESUMABLE_DIFFERENCES and saved.get(k) != config.get(k)
    )
    if changed:
        detail = ", ".join(f"{k}: {saved.get(k)!r} -> {config.get(k)!r}" for k in changed[:4])
        raise InputError(
            f"expected the same settings as the interrupted run to resume it, found changes ({detail})",
            str(path),
        )


def _seed_variables(model: Any) -> list[Any]:
    return [v for v in model.non_trainable_variables if v.path.endswith("seed_generator_state")]


CALLBACK_FIELDS = {
    "EarlyStopping": ("wait", "best", "best_epoch", "stopped_epoch"),
    "ReduceLROnPlateau": ("wait", "best", "cooldown_counter"),
    "BestModelCheckpoint": ("best",),
}


def _callback_states(callbacks: list[Any]) -> dict[str, dict[str, Any]]:
    states = {}
    for cb in callbacks:
        fields = CALLBACK_FIELDS.get(type(cb).__name__)
        if fields:
            states[type(cb).__name__] = {
                f: (float(getattr(cb, f)) if isinstance(getattr(cb, f), float) else getattr(cb, f))
                for f in fields
                if hasattr(cb, f)
            }
    return states


def _json_float(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)  # "inf", "-inf", "nan" survive a JSON round trip as text
    return value


def _from_json_float(value: Any) -> Any:
    if value in ("inf", "-inf", "nan"):
        return float(value)
    return value


def make_callback(
    output_dir: Path, config: dict[str, Any], callbacks: list[Any], restored: dict[str, Any] | None = None
) -> Any:
    """The last callback of a run: persist the resume state after every epoch.

    With ``restored`` (a state read by :func:`read_state`), it also puts the
    saved counters back into the other callbacks in ``on_train_begin``, which
    runs after theirs (they reset themselves there).
    """
    import keras

    folder = Path(output_dir) / RESUME_DIR

    class ResumeState(keras.callbacks.Callback):
        def on_train_begin(self, logs: dict | None = None) -> None:
            if restored is None:
                return
            by_name = {type(cb).__name__: cb for cb in callbacks}
            for name, fields in restored.get("callbacks", {}).items():
                cb = by_name.get(name)
                for field, value in (fields or {}).items():
                    if cb is not None:
                        setattr(cb, field, _from_json_float(value))

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            loss = (logs or {}).get("loss")
            if loss is None or not math.isfinite(float(loss)):
                return  # never make a diverged epoch the point to resume from
            folder.mkdir(parents=True, exist_ok=True)
            name = f"epoch-{epoch + 1:05d}.weights.h5"
            with atomic_path(folder / name) as tmp:
                self.model.save_weights(tmp)
            write_json(
                folder / STATE_FILE,
                {
                    "epoch": epoch + 1,
                    "weights": name,
                    "seed_states": [
                        [int(x) for x in keras.ops.convert_to_numpy(v)] for v in _seed_variables(self.model)
                    ],
                    "callbacks": {
                        k: {f: _json_float(v) for f, v in fields.items()}
                        for k, fields in _callback_states(callbacks).items()
                    },
                    "config": config,
                },
            )
            for old in folder.glob("epoch-*.weights.h5"):
                if old.name != name:
                    old.unlink(missing_ok=True)

    return ResumeState()


def restore(model: Any, state: dict[str, Any], output_dir: Path) -> int:
    """Load weights, optimizer and RNG state; return the epoch to continue from.

    The callbacks' counters are restored by the callback of :func:`make_callback`.
    """
    import keras

    folder = Path(output_dir) / RESUME_DIR
    if model.optimizer is not None and not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    model.load_weights(folder / state["weights"])
    seeds = _seed_variables(model)
    saved = state.get("seed_states", [])
    if len(saved) == len(seeds):
        for var, value in zip(seeds, saved):
            var.assign(keras.ops.convert_to_tensor(value, dtype=var.dtype))
    return int(state["epoch"])


def clear(output_dir: Path) -> None:
    """Remove the resume state after a run that finished."""
    folder = Path(output_dir) / RESUME_DIR
    if folder.is_dir():
        for item in folder.iterdir():
            item.unlink(missing_ok=True)
        folder.rmdir()
