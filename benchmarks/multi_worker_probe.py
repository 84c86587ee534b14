"""Does Keras 3 ``fit`` run under ``MultiWorkerMirroredStrategy`` here? Two loopback workers decide.

``python -m benchmarks.multi_worker_probe`` starts two worker processes with
``TF_CONFIG`` naming two localhost ports, each builds and fits a tiny Keras
model inside the strategy's scope (2 epochs of a tf.data pipeline of 64
rows), and prints each worker's exit code and the last lines of its output.
The verdict decides whether ``--distribute multi_worker`` is offered
(:mod:`utils.devices`, docs/performance.md). ``--model toolkit`` fits the
toolkit's own model instead of a Dense stack.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TIMEOUT_S = 240


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return int(s.getsockname()[1])


def worker(model_kind: str) -> int:
    """One worker: strategy from TF_CONFIG, tiny model, fit, print the history."""
    import numpy as np
    import tensorflow as tf

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    import keras

    rng = np.random.default_rng(0)
    x_s = rng.normal(size=(64, 4, 8)).astype("float32")
    x_d = rng.normal(size=(64, 3, 12)).astype("float32")
    y = rng.uniform(size=(64, 5)).astype("float32")
    ds = tf.data.Dataset.from_tensor_slices(((x_s, x_d), y)).batch(16)
    with strategy.scope():
        if model_kind == "toolkit":
            sys.path.insert(0, str(REPO))
            from models.cross_attention import ModelConfig, build_model

            model = build_model(ModelConfig(width=16, num_heads=2, head_units=16), (4, 8), (3, 12))
        else:
            a, b = keras.Input((4, 8)), keras.Input((3, 12))
            h = keras.layers.Concatenate()([keras.layers.Flatten()(a), keras.layers.Flatten()(b)])
            model = keras.Model([a, b], keras.layers.Dense(5, activation="sigmoid")(h))
        model.compile(optimizer="adam", loss="mse")
    try:
        history = model.fit(ds, epochs=2, verbose=0)
    except Exception as exc:  # the verdict needs the error's first line, not its tensor dump
        print(f"ERROR {type(exc).__name__}: {' '.join(str(exc).split())[:160]} ... "
              f"{' '.join(str(exc).split())[-140:]}", flush=True)
        return 1
    print("HISTORY", json.dumps(history.history), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] == "--worker":
        return worker(args[1] if len(args) > 1 else "dense")
    model_kind = args[1] if len(args) > 1 and args[0] == "--model" else "dense"
    ports = [_free_port(), _free_port()]
    cluster = {"worker": [f"localhost:{p}" for p in ports]}
    procs = []
    t = time.perf_counter()
    for index in range(2):
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(REPO),
               "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})}
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "benchmarks.multi_worker_probe", "--worker", model_kind],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        ))
    ok = True
    for index, proc in enumerate(procs):
        try:
            out, _ = proc.communicate(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
            out += f"\n(killed after {TIMEOUT_S} s)"
        ok = ok and proc.returncode == 0 and "HISTORY" in out
        tail = "\n    ".join(out.strip().splitlines()[-3:])
        print(f"worker {index}: exit {proc.returncode}\n    {tail}")
    print(f"verdict: {'fit ran on both workers' if ok else 'fit FAILED'} ({time.perf_counter() - t:.0f} s; "
          f"model {model_kind})")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
