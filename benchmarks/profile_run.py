"""Where a training run's time goes: every phase and every callback, timed inside one run.

``python -m benchmarks.profile_run DATA_DIR OUT_DIR [training-script flags...]``

Runs ``scripts/train_personality_model.py``'s ``main`` in this process with
timers around the phases of :func:`utils.training.run_training` (input
checks and hashing, model build, dataset set-up, run-log start, ``fit``,
the final files) and around every hook of every Keras callback. Each timer
keeps wall seconds and the main thread's CPU seconds (``time.thread_time``,
which other processes' load disturbs little: the callbacks and the file
writes run on the main thread). Prints a table and writes
``OUT_DIR/profile.json``. Start-up before ``main`` (Python, TensorFlow
import) is measured apart, as ``import_s``.
"""

from __future__ import annotations

import functools
import json
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

T0 = time.perf_counter()
REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

TOTALS: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0])  # name -> [wall, cpu, calls]
HOOKS = ("on_train_begin", "on_epoch_begin", "on_epoch_end", "on_train_batch_end", "on_test_begin", "on_test_end",
         "on_train_end", "on_test_batch_end")


def timed(name: str, fn: Any) -> Any:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        wall, cpu = time.perf_counter(), time.thread_time()
        try:
            return fn(*args, **kwargs)
        finally:
            entry = TOTALS[name]
            entry[0] += time.perf_counter() - wall
            entry[1] += time.thread_time() - cpu
            entry[2] += 1

    return wrapper


def instrument() -> None:
    """Wrap the phases of run_training and every callback hook of the run."""
    from utils import data, run_logging, training

    for name in ("prepare", "build_compiled_model", "score_start", "_fit", "_finish_or_stop", "set_determinism",
                 "write_split_record"):
        if hasattr(training, name):
            setattr(training, name, timed(f"phase:{name}", getattr(training, name)))
    training.make_tf_dataset = timed("phase:make_tf_dataset", data.make_tf_dataset)
    run_logging.RunLogger.start = timed("phase:run_logger.start", run_logging.RunLogger.start)
    run_logging.RunLogger.finish = timed("phase:run_logger.finish", run_logging.RunLogger.finish)
    original = training.make_callbacks

    def make_callbacks(*args: Any, **kwargs: Any) -> list[Any]:
        callbacks = original(*args, **kwargs)
        for cb in callbacks:
            _wrap_hooks(cb)
        return callbacks

    training.make_callbacks = make_callbacks
    import keras

    # the callbacks run_training adds after make_callbacks (input watch, resume state)
    for cls in (keras.callbacks.Callback,):
        _patch_init(cls)


def _wrap_hooks(cb: Any) -> None:
    if getattr(cb, "_profiled", False):
        return
    cb._profiled = True
    for hook in HOOKS:
        method = getattr(cb, hook, None)
        if method is not None:
            setattr(cb, hook, timed(f"callback:{type(cb).__name__}.{hook}", method))


def _patch_init(cls: type) -> None:
    original = cls.set_model

    def set_model(self: Any, model: Any) -> None:
        original(self, model)
        _wrap_hooks(self)

    cls.set_model = set_model


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    data_dir, out_dir, *flags = args
    data, out = Path(data_dir), Path(out_dir)
    from utils.console import quiet_tensorflow

    quiet_tensorflow()
    import_s = time.perf_counter() - T0
    instrument()
    from scripts.train_personality_model import main as train

    t = time.perf_counter()
    code = train([
        "--static_features", str(data / "static_features.npy"), "--dynamic_features", str(data / "dynamic_features.npy"),
        "--labels", str(data / "labels.npy"), "--output", str(out / "model.h5"), *flags,
    ])
    main_s = time.perf_counter() - t
    epochs = json.loads((out / "epoch_log.jsonl").read_text().splitlines()[-1]) if (out / "epoch_log.jsonl").exists() else {}
    rows = sorted(({"name": k, "wall_s": v[0], "cpu_s": v[1], "calls": v[2]} for k, v in TOTALS.items()),
                  key=lambda r: -r["wall_s"])
    report = {"import_s": import_s, "main_s": main_s, "exit": code, "flags": flags, "last_epoch": epochs, "rows": rows}
    (out / "profile.json").write_text(json.dumps(report, indent=2))
    print(f"import (Python + TensorFlow) {import_s:.2f} s; main {main_s:.2f} s (exit {code})")
    print(f"{'wall s':>8} {'CPU s':>8} {'calls':>6}  name")
    for r in rows:
        if r["wall_s"] >= 0.005:
            print(f"{r['wall_s']:8.3f} {r['cpu_s']:8.3f} {r['calls']:6d}  {r['name']}")
    return code


if __name__ == "__main__":
    raise SystemExit(main())
