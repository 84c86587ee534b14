"""Keras Tuner's distributed mode on loopback: one chief (the oracle) and two workers, as separate processes.

``python -m benchmarks.tuner_two_workers`` generates a tiny data set
(``utils.synthetic``, a planted static x dynamic product), picks a free port on
127.0.0.1 and starts ``scripts/tune_hyperparameters.py`` three times: ``--role
chief`` (serves Keras Tuner's oracle over gRPC, runs no trial) and ``--role
worker`` with ids ``worker0`` and ``worker1``. It waits for all three, then
prints, from Keras Tuner's own files in the project folder (``trial_<id>/trial.json``
for the status and score, ``<tuner id>.json`` that each worker's tuner saves
after its trials) and the toolkit's ``trial_<id>/worker.json``, which worker
ran which trial, and the chief's best trial. The output is recorded in
``docs/tuning.md``; ``tests/test_tuning.py`` runs :func:`run_two_workers` too.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from utils import constants as C  # noqa: E402

SCRIPT = REPO / "scripts" / "tune_hyperparameters.py"
WORKERS = ("worker0", "worker1")
TIMEOUT_S = 300
TRIAL_RECORD = "trial.json"  # Keras Tuner's own file in each trial folder


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tiny_data(folder: Path, n: int = 120, seed: int = 0) -> dict[str, Path]:
    """The three .npy files of a small generated set (4 x 24 static, 4 x 24 dynamic tokens)."""
    from utils.synthetic import SyntheticSpec, write_dataset

    spec = SyntheticSpec(
        n_samples=n, static_tokens=4, static_dim=24, dynamic_tokens=4, dynamic_dim=24, seed=seed, interaction="product"
    )
    return write_dataset(spec, folder)


def _command(data: dict[str, Path], out: Path, port: int, role: str, trials: int, epochs: int) -> list[str]:
    return [
        sys.executable, str(SCRIPT),
        "--static_features", str(data["static"]), "--dynamic_features", str(data["dynamic"]),
        "--labels", str(data["labels"]), "--output_dir", str(out),
        "--oracle", f"127.0.0.1:{port}", "--role", role,
        "--max_trials", str(trials), "--epochs", str(epochs),
        # small and fast: the point is the distribution, not the search
        "--width", "16", "--num_heads", "2", "--head_units", "16", "--no-jit_compile", "--verbose", "0",
        "--search", "learning_rate,dropout,weight_decay",
    ]


def run_two_workers(folder: Path, trials: int = 4, epochs: int = 2, timeout_s: float = TIMEOUT_S) -> dict[str, Any]:
    """Start the chief and two workers on loopback, wait, and read who ran which trial from the trial folders."""
    data = tiny_data(folder / "data")
    out = folder / "search"
    logs = folder / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("KERASTUNER_")}
    env.update({"TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""})
    start = time.perf_counter()
    procs: dict[str, subprocess.Popen] = {}
    roles = {"chief": ["--role", "chief"], **{w: ["--worker_id", w] for w in WORKERS}}
    try:
        for name, extra in roles.items():
            role = "chief" if name == "chief" else "worker"
            cmd = [a for a in _command(data, out, port, role, trials, epochs)] + (extra if name != "chief" else [])
            with open(logs / f"{name}.log", "w", encoding="utf-8") as log:
                procs[name] = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        codes = {name: p.wait(timeout=max(1.0, deadline - time.monotonic())) for name, p in procs.items()}
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()
    seconds = time.perf_counter() - start
    return {"returncodes": codes, "seconds": seconds, "port": port, "output_dir": str(out), "logs": str(logs),
            **read_trials(out / C.TUNE_PROJECT_DIR)}


def read_trials(project: Path) -> dict[str, Any]:
    """Per trial: Keras Tuner's status and score, and the tuner that ran it; which tuners saved their state."""
    trials = []
    for trial_dir in sorted(project.glob("trial_*")):
        kt_record = json.loads((trial_dir / TRIAL_RECORD).read_text(encoding="utf-8"))
        worker_path = trial_dir / C.TUNE_WORKER_FILE
        worker = json.loads(worker_path.read_text(encoding="utf-8")) if worker_path.is_file() else {}
        trials.append({
            "trial_id": kt_record["trial_id"],
            "status": kt_record["status"],
            "score": kt_record["score"],
            "tuner_id": worker.get("tuner_id"),
            "pid": worker.get("pid"),
            "seconds": worker.get("seconds"),
        })
    # Keras Tuner's BaseTuner.save() writes <tuner id>.json after each trial a tuner ends
    saved = sorted(p.stem for p in project.glob("*.json") if p.stem not in ("oracle",))
    return {"trials": trials, "tuner_state_files": saved}


def report(result: dict[str, Any]) -> str:
    lines = [
        f"chief + {len(WORKERS)} workers on 127.0.0.1:{result['port']}, exit codes "
        + ", ".join(f"{k} {v}" for k, v in result["returncodes"].items())
        + f", {result['seconds']:.1f} s wall",
        "trial  worker    pid      status     val_r_squared  seconds",
    ]
    for t in result["trials"]:
        score = "" if t["score"] is None else f"{t['score']:.4f}"
        lines.append(f"{t['trial_id']:<6} {t['tuner_id'] or '?':<9} {t['pid'] or '':<8} {t['status']:<10} {score:<14} {t['seconds']}")
    lines.append("Keras Tuner state files of the tuners: " + ", ".join(result["tuner_state_files"]))
    best_path = Path(result["output_dir"]) / C.TUNE_BEST_FILE
    if best_path.is_file():
        best = json.loads(best_path.read_text(encoding="utf-8"))
        lines.append(f"chief's {C.TUNE_BEST_FILE}: trial {best['trial_id']} (ran on {best['worker']}), score {best['score']:.4f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=4, help="trials of the search (default: 4)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per trial (default: 2)")
    parser.add_argument("--folder", default=None, help="working folder (default: a temporary one, removed)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="tuner_two_workers_") as tmp:
        folder = Path(args.folder) if args.folder else Path(tmp)
        result = run_two_workers(folder, args.trials, args.epochs)
        print(report(result))
        if any(result["returncodes"].values()):
            for name in result["returncodes"]:
                print(f"--- {name} log (last lines)\n" + "\n".join((Path(result["logs"]) / f"{name}.log").read_text().splitlines()[-15:]))
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
