"""Whole-process cost of the training script against a plain Keras script (issue 13).

Every figure is one process from spawn to exit: start-up, input checks,
model build, compilation, epochs, validation, every file written. Variants:

* ``toolkit``: ``scripts/train_personality_model.py`` with its defaults
  (``--batch_size`` and ``--epochs`` set; options after ``+`` become flags,
  e.g. ``toolkit+--no-jit_compile``).
* ``plain``: :mod:`benchmarks.plain_keras` with Keras' defaults (Adam, MSE,
  no metrics, ``jit_compile="auto"``, one step per call) on the same saved
  model and data, arrays in memory, saving an ``.h5``.
* ``plain_like``: the same script compiled with the training script's
  default compile options (XLA as ``TrainConfig.jit_compile``, its
  ``steps_per_execution``): like for like.

Each variant runs at ``short`` and ``long`` epochs (2 and 6); per epoch is
``(T(long) - T(short)) / (long - short)``, end to end is ``T(long)``. Rounds
interleave every (variant, epochs) pair in an order that rotates each round;
ratios are ratios of medians over rounds, with each round's own ratio beside
them. The load average before and after each process is recorded.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
GOALS = {"per_epoch": 1.10, "end_to_end": 1.15}
SHAPES = {"static_tokens": 7, "static_dim": 96, "dynamic_tokens": 20, "dynamic_dim": 48}  # the data


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(cmd: list[str], log_path: Path, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``cmd`` to completion; wall and CPU seconds, load average around it."""
    load_before = os.getloadavg()[0]
    cpu = _children_cpu()
    t = time.perf_counter()
    with log_path.open("w") as log:
        proc = subprocess.run(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, check=False)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-15:])
        raise RuntimeError(f"{' '.join(cmd[:3])} failed (exit {proc.returncode}):\n{tail}")
    return {"seconds": wall, "cpu_seconds": _children_cpu() - cpu, "load_before": load_before,
            "load_after": os.getloadavg()[0]}


def toolkit_command(data: Path, out: Path, epochs: int, batch: int, flags: list[str]) -> list[str]:
    return [
        sys.executable, str(REPO / "scripts" / "train_personality_model.py"),
        "--static_features", str(data / "static_features.npy"),
        "--dynamic_features", str(data / "dynamic_features.npy"),
        "--labels", str(data / "labels.npy"),
        "--output", str(out / "model.h5"), "--epochs", str(epochs), "--batch_size", str(batch), *flags,
    ]


def plain_command(model: Path, data: Path, out: Path, epochs: int, batch: int, like: dict[str, Any] | None) -> list[str]:
    cmd = [sys.executable, "-m", "benchmarks.plain_keras", str(model), str(data), str(out / "model.h5"),
           str(epochs), str(batch)]
    if like:
        cmd += ["--jit", "on" if like["jit_compile"] else "off", "--spe", str(like["steps_per_execution"])]
    return cmd


def toolkit_defaults() -> dict[str, Any]:
    """The training script's default compile options (from TrainConfig, no TensorFlow import)."""
    from utils.config import TrainConfig

    cfg = TrainConfig()
    return {"jit_compile": cfg.jit_compile, "steps_per_execution": cfg.steps_per_execution}


def ratio_table(runs: dict[str, dict[int, list[dict[str, Any]]]], short: int, long: int, key: str = "seconds"
                ) -> dict[str, Any]:
    """Per-epoch and end-to-end medians, and each variant's ratios to ``plain`` and ``plain_like``."""
    import statistics

    def med(values: list[float]) -> float:
        return float(statistics.median(values))

    per_epoch = {v: [(b[key] - a[key]) / (long - short) for a, b in zip(r[short], r[long])] for v, r in runs.items()}
    end = {v: [b[key] for b in r[long]] for v, r in runs.items()}
    out: dict[str, Any] = {
        "per_epoch_s": {v: med(x) for v, x in per_epoch.items()},
        "end_to_end_s": {v: med(x) for v, x in end.items()},
        "short_run_s": {v: med([a[key] for a in r[short]]) for v, r in runs.items()},
        "ratios": {},
    }
    for ref in ("plain", "plain_like"):
        if ref not in runs:
            continue
        for v in runs:
            if v.startswith("plain"):
                continue
            out["ratios"][f"{v}/{ref}"] = {
                "per_epoch": out["per_epoch_s"][v] / out["per_epoch_s"][ref],
                "per_epoch_rounds": [a / b for a, b in zip(per_epoch[v], per_epoch[ref])],
                "end_to_end": out["end_to_end_s"][v] / out["end_to_end_s"][ref],
                "end_to_end_rounds": [a / b for a, b in zip(end[v], end[ref])],
            }
    return out


def measure_end_to_end(bench: Any) -> dict[str, Any]:
    """The issue's measurement: toolkit vs plain Keras, whole processes, interleaved rounds."""
    cfg = bench.cfg
    short, long = cfg.e2e_epochs
    data = bench.dataset(f"e2e-{cfg.e2e_n}", cfg.e2e_n, dict(SHAPES))
    model_path = bench.workdir / "runs" / "e2e-model.keras"
    bench.worker({"task": "save_model", "data_dir": str(data), "batch_size": cfg.e2e_batch_size, "seed": cfg.seed,
                  "save_model": str(model_path)}, "e2e-save-model")
    like = toolkit_defaults()
    variants = list(cfg.e2e_variants)
    runs: dict[str, dict[int, list[dict[str, Any]]]] = {v: {short: [], long: []} for v in variants}
    pairs = [(v, e) for v in variants for e in (short, long)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # as a user runs it: the scripts quieten TensorFlow themselves
    load = [os.getloadavg()[0]]
    for rnd in range(cfg.reps):
        for variant, epochs in _rotated(pairs, rnd):
            bench.count += 1
            folder = bench.workdir / "runs" / f"{bench.count:03d}-e2e-{variant.replace('+', '_')}-{epochs}"
            folder.mkdir(parents=True, exist_ok=True)
            base, _, option = variant.partition("+")
            if base == "toolkit":
                cmd = toolkit_command(data, folder, epochs, cfg.e2e_batch_size, option.split() if option else [])
            else:
                cmd = plain_command(model_path, data, folder, epochs, cfg.e2e_batch_size,
                                    like if base == "plain_like" else None)
            r = timed(cmd, folder / "log.txt", env)
            r["command"] = " ".join(cmd[1:])
            runs[variant][epochs].append(r)
            load.append(r["load_after"])
            bench.log(f"  round {rnd + 1} {variant} {epochs} epochs: {r['seconds']:.1f} s "
                      f"(CPU {r['cpu_seconds']:.1f} s, load {r['load_after']:.1f})")
    wall = ratio_table(runs, short, long, "seconds")
    cpu = ratio_table(runs, short, long, "cpu_seconds")
    main_key = "toolkit/plain"
    headline = wall["ratios"].get(main_key, {})
    met = bool(headline and 0 < headline["per_epoch"] <= GOALS["per_epoch"]
               and headline["end_to_end"] <= GOALS["end_to_end"])
    return {
        "n_samples": cfg.e2e_n,
        "shapes": SHAPES,
        "batch_size": cfg.e2e_batch_size,
        "epochs": [short, long],
        "plain_like_options": like,
        "wall": wall,
        "cpu": cpu,
        "goal": GOALS,
        "headline": main_key,
        "met": met,
        "load_average": {"min": min(load), "max": max(load), "median": sorted(load)[len(load) // 2]},
        "runs": {v: {str(e): rs for e, rs in r.items()} for v, r in runs.items()},
    }


def _rotated(items: list[Any], k: int) -> list[Any]:
    k %= len(items)
    return [*items[k:], *items[:k]]


def render(m: dict[str, Any], reps: int) -> list[str]:
    """Markdown lines of the end-to-end section."""
    short, long = m["epochs"]
    la = m["load_average"]
    lines = ["", f"**End to end** ({m['n_samples']} clips, static {m['shapes']['static_tokens']}x"
             f"{m['shapes']['static_dim']}, dynamic {m['shapes']['dynamic_tokens']}x{m['shapes']['dynamic_dim']}, "
             f"batch {m['batch_size']}; whole processes; per epoch = (T({long}) - T({short})) / {long - short}; "
             f"{reps} interleaved rounds; load average {la['min']:.1f} to {la['max']:.1f}):", "",
             "| variant | T(short) s | T(long) s | per epoch s | CPU per epoch s |", "|---|---|---|---|---|"]
    for v in m["wall"]["end_to_end_s"]:
        lines.append(f"| {v} | {m['wall']['short_run_s'][v]:.1f} | {m['wall']['end_to_end_s'][v]:.1f} | "
                     f"{m['wall']['per_epoch_s'][v]:.2f} | {m['cpu']['per_epoch_s'][v]:.2f} |")
    lines += ["", "| ratio | per epoch (rounds) | end to end (rounds) | CPU per epoch | CPU end to end |",
              "|---|---|---|---|---|"]
    for name, r in m["wall"]["ratios"].items():
        c = m["cpu"]["ratios"][name]
        lines.append(
            f"| {name} | {r['per_epoch']:.2f} ({', '.join(f'{x:.2f}' for x in r['per_epoch_rounds'])}) | "
            f"{r['end_to_end']:.2f} ({', '.join(f'{x:.2f}' for x in r['end_to_end_rounds'])}) | "
            f"{c['per_epoch']:.2f} | {c['end_to_end']:.2f} |")
    return lines
