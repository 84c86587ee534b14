"""Crash-safe training state: resume a killed run from its last finished epoch.

After every epoch, :class:`utils.callbacks.ResumeCheckpoint` (the last
callback of a run) calls :func:`save_state`, which writes

* ``resume/epoch-<k>.weights.h5``: the model and optimizer variables
  (``model.save_weights``; the optimizer's step counter, which drives the
  learning-rate schedule and the data order, is one of them), then
* ``resume/state.json``: the finished epoch count, the name of that weights
  file, the random-generator states of the dropout layers (Keras does not
  save them with the weights), the counters of early stopping, the plateau
  rule and the best-checkpoint tracker (:data:`utils.callbacks.RESUME_ADAPTERS`),
  and the run's configuration,

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
import shlex
import sys
from pathlib import Path
from typing import Any

from utils import constants as C
from utils.errors import InputError
from utils.io import save_weights, write_json

# Settings that may differ between the killed run and its resumption.
RESUMABLE_DIFFERENCES = frozenset({"epochs", "verbose", "resume", "patience", "wandb", "wandb_mode"})


TRAINING_SCRIPT = "train_personality_model.py"


def resume_command() -> str:
    """The command that resumes this run: this process's own command line plus ``--resume``.

    Outside the training script (a test, a notebook) the words "the same
    command plus --resume" stand in for it.
    """
    if not sys.argv or Path(sys.argv[0]).name != TRAINING_SCRIPT:
        return "the same command plus --resume"
    argv = list(getattr(sys, "orig_argv", None) or [sys.executable, *sys.argv])
    if "--resume" not in argv:
        argv.append("--resume")
    return shlex.join(argv)


def state_path(output_dir: Path) -> Path:
    return Path(output_dir) / C.RESUME_DIR / C.RESUME_STATE_FILE


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


def save_state(
    output_dir: Path, config: dict[str, Any], model: Any, epoch: int, callbacks: dict[str, dict[str, Any]]
) -> None:
    """Write the weights of finished epoch ``epoch`` (1-based), then the state pointing at them."""
    import keras

    folder = Path(output_dir) / C.RESUME_DIR
    folder.mkdir(parents=True, exist_ok=True)
    name = C.RESUME_WEIGHTS_PATTERN.format(epoch=epoch)
    save_weights(model, folder / name)  # atomic, and checked for room first (utils.io)
    write_json(
        folder / C.RESUME_STATE_FILE,
        {
            "epoch": epoch,
            "weights": name,
            "seed_states": [[int(x) for x in keras.ops.convert_to_numpy(v)] for v in _seed_variables(model)],
            "callbacks": callbacks,
            "config": config,
        },
    )
    for old in folder.glob(C.RESUME_WEIGHTS_GLOB):
        if old.name != name:
            old.unlink(missing_ok=True)


def restore(model: Any, state: dict[str, Any], output_dir: Path) -> int:
    """Load weights, optimizer and RNG state; return the epoch to continue from.

    The callbacks' counters are restored by :class:`utils.callbacks.ResumeCheckpoint`.
    """
    import keras

    folder = Path(output_dir) / C.RESUME_DIR
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
    folder = Path(output_dir) / C.RESUME_DIR
    if folder.is_dir():
        for item in folder.iterdir():
            item.unlink(missing_ok=True)
        folder.rmdir()
