"""Plan, run and report the toolkit benchmark (no TensorFlow in this process).

Every timed measurement runs in its own subprocess (:mod:`benchmarks.worker`);
variants are interleaved (the order rotates each repetition) and repeated,
and the report gives medians and ratios of medians, because epoch times on a
small shared machine swing by 20 to 50% between runs.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import logging
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO / "benchmarks" / "results"
DOC_PATH = REPO / "docs" / "performance.md"
SCHEMA = "toolkit-benchmark/1"
MEASURES = ("end_to_end", "overhead", "growth", "out_of_core", "accuracy", "help", "prediction")
HELP_SCRIPTS = (
    "train_personality_model.py",
    "visualize_training_metrics.py",
    "analyze_model_predictions.py",
    "generate_sample_data.py",
)
SAMPLE_SHAPES = {"static_tokens": 16, "static_dim": 64, "dynamic_tokens": 16, "dynamic_dim": 128}
GOALS = {
    "overhead_ratio": 1.10,
    "out_of_core_peak_rss_anon_mb": 1536.0,
    "out_of_core_throughput_ratio": 0.8,
    "growth_per_sample_ratio": 1.10,
    "help_seconds": 1.0,
}

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class BenchConfig:
    """Every setting of a benchmark run (the resolved command line)."""

    name: str = "default"
    measures: tuple[str, ...] = MEASURES
    reps: int = 3
    workdir: str | None = None
    keep: bool = False
    fi_shapes: bool = False  # First-Impressions shapes for overhead, growth and prediction
    seed: int = 42
    # overhead
    overhead_n: int = 2000
    overhead_epochs: int = 4
    overhead_variants: tuple[str, ...] = ("toolkit", "bare")
    batch_size: int = 16
    # end to end (issue 13): whole processes, training script vs plain Keras
    e2e_n: int = 4000
    e2e_epochs: tuple[int, int] = (2, 6)
    e2e_batch_size: int = 32
    e2e_variants: tuple[str, ...] = ("toolkit", "plain", "plain_like")
    # growth
    growth_n: int = 500
    growth_epochs: int = 4
    # out of core
    ooc_n: int = 50000  # 8.3 GB of float32 at FI shapes
    ooc_reference_n: int = 4000
    ooc_max_steps: int = 0  # 0: the full epoch
    ooc_batch_size: int = 32
    ooc_width: int = 32
    # accuracy
    accuracy_n: int = 6000
    accuracy_test_n: int = 2000
    accuracy_fusions: tuple[str, ...] = ("cross_attention", "static", "dynamic", "concat")
    accuracy_train: dict[str, Any] = dataclasses.field(
        default_factory=lambda: {"epochs": 25, "batch_size": 32, "patience": 6}
    )
    # help and prediction
    help_reps: int = 5
    predict_n: int = 4000
    predict_batch_size: int = 64
    doc: bool = True

    def shapes(self) -> dict[str, int]:
        from utils.synthetic import FIRST_IMPRESSIONS_SHAPES

        return dict(FIRST_IMPRESSIONS_SHAPES) if self.fi_shapes else dict(SAMPLE_SHAPES)


# -- machine and helpers -------------------------------------------------------


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _mem_total_gb() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024**2
    except OSError:
        pass
    return math.nan


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def machine_info() -> dict[str, Any]:
    """CPU model, cores, RAM, OS and library versions (without importing TensorFlow)."""
    return {
        "cpu_model": _cpu_model(),
        "cpu_cores": os.cpu_count(),
        "ram_gb": round(_mem_total_gb(), 1),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "versions": {p: _version(p) for p in ("tensorflow", "keras", "numpy", "scikit-learn")},
        "gpu": None,
    }


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else math.nan


def rotated(items: Sequence[Any], rep: int) -> list[Any]:
    """``items`` rotated by ``rep``: each variant takes each position in turn."""
    k = rep % len(items)
    return [*items[k:], *items[:k]]


class Bench:
    """Holds the work folder and runs worker subprocesses."""

    def __init__(self, cfg: BenchConfig, log: Callable[[str], None] = print) -> None:
        self.cfg = cfg
        self.log = log
        self._own_workdir = cfg.workdir is None
        self.workdir = Path(cfg.workdir or tempfile.mkdtemp(prefix="toolkit-bench-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.count = 0

    def cleanup(self) -> None:
        """Delete what this benchmark wrote (unless ``--keep``)."""
        if self.cfg.keep:
            self.log(f"kept the work folder {self.workdir}")
            return
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
        else:
            for child in ("data", "runs"):
                shutil.rmtree(self.workdir / child, ignore_errors=True)

    def dataset(self, name: str, n: int, shapes: dict[str, int], seed: int = 0, start: int = 0) -> Path:
        """Write (once) a synthetic data set of ``n`` samples; samples ``start..start+n`` of the seed."""
        from utils.synthetic import SyntheticSpec, generate_range, write_dataset

        folder = self.workdir / "data" / name
        if (folder / "labels.npy").exists():
            return folder
        t = time.perf_counter()
        if start == 0:
            write_dataset(SyntheticSpec(n_samples=n, seed=seed, **shapes), folder)
        else:
            piece = generate_range(SyntheticSpec(n_samples=start + n, seed=seed, **shapes), start, start + n)
            folder.mkdir(parents=True, exist_ok=True)
            np.save(folder / "static_features.npy", piece.static)
            np.save(folder / "dynamic_features.npy", piece.dynamic)
            np.save(folder / "labels.npy", piece.labels)
        size = sum(f.stat().st_size for f in folder.glob("*.npy"))
        self.log(f"  wrote {name}: N={n}, {size / 1e9:.2f} GB in {time.perf_counter() - t:.0f} s")
        return folder

    def worker(self, spec: dict[str, Any], label: str) -> dict[str, Any]:
        """Run one worker subprocess; return its result (raise with the log tail on failure)."""
        self.count += 1
        run_dir = self.workdir / "runs" / f"{self.count:03d}-{label}"
        run_dir.mkdir(parents=True, exist_ok=True)
        spec = {"out_dir": str(run_dir / "out"), **spec}
        spec_path, result_path, log_path = run_dir / "spec.json", run_dir / "result.json", run_dir / "log.txt"
        spec_path.write_text(json.dumps(spec, indent=2))
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(REPO)}
        t = time.perf_counter()
        with log_path.open("w") as log:
            proc = subprocess.run(
                [sys.executable, "-m", "benchmarks.worker", str(spec_path), str(result_path)],
                cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, check=False,
            )
        if proc.returncode != 0 or not result_path.exists():
            tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-15:])
            raise RuntimeError(f"benchmark worker {label} failed (exit {proc.returncode}):\n{tail}")
        result = json.loads(result_path.read_text())
        result["process_seconds"] = time.perf_counter() - t
        return result


# -- the measures --------------------------------------------------------------


def measure_overhead(bench: Bench) -> dict[str, Any]:
    """Steady-state epoch time of the toolkit's run vs a bare ``model.fit``, interleaved."""
    cfg = bench.cfg
    data = bench.dataset(f"overhead-{cfg.overhead_n}", cfg.overhead_n, cfg.shapes())
    variants = list(cfg.overhead_variants)
    runs: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
    for rep in range(cfg.reps):
        for variant in rotated(variants, rep):
            base, _, option = variant.partition("+")
            spec = {
                "task": "fit", "variant": base, "data_dir": str(data), "epochs": cfg.overhead_epochs,
                "batch_size": cfg.batch_size, "val_split": 0.2, "seed": cfg.seed,
                **execution_options(option),
            }
            r = bench.worker(spec, f"overhead-{variant}")
            runs[variant].append(r)
            bench.log(f"  overhead rep {rep + 1} {variant}: steady epoch {r['steady_epoch_median_s']:.2f} s "
                      f"(epochs {', '.join(f'{s:.2f}' for s in r['epoch_seconds'])})")
    med = {v: median([r["steady_epoch_median_s"] for r in rs]) for v, rs in runs.items()}
    cpu = {v: median([r["steady_epoch_cpu_median_s"] for r in rs]) for v, rs in runs.items()}
    ref = med.get("bare", math.nan)
    ratio = med.get("toolkit", math.nan) / ref
    return {
        "median_epoch_cpu_s": cpu,
        "cpu_ratio_to_bare": {v: c / cpu.get("bare", math.nan) for v, c in cpu.items()},
        "n_samples": cfg.overhead_n,
        "epochs_per_run": cfg.overhead_epochs,
        "steady_epochs": "epochs 3.. of each run (1 and 2 include tracing and warm-up)",
        "batch_size": cfg.batch_size,
        "median_epoch_s": med,
        "ratio_to_bare": {v: m / ref for v, m in med.items()},
        "ratio": ratio,
        "goal": GOALS["overhead_ratio"],
        "met": bool(ratio <= GOALS["overhead_ratio"]),
        "runs": runs,
    }


def execution_options(option: str) -> dict[str, Any]:
    """``jit``/``nojit`` and ``spe<k>`` of a variant's options; absent ones are left out.

    Left out means: the toolkit variant uses ``TrainConfig``'s default, the
    bare variant plain Keras (no XLA, one step per execution).
    """
    out: dict[str, Any] = {}
    for part in filter(None, option.split(",")):
        if part in ("jit", "nojit"):
            out["jit_compile"] = part == "jit"
        elif part.startswith("spe"):
            out["steps_per_execution"] = int(part[3:] or 1)
        else:
            raise ValueError(f"unknown overhead variant option {part!r} (expected jit, nojit or spe<k>)")
    return out


def measure_growth(bench: Bench) -> dict[str, Any]:
    """Toolkit epoch time at N, 2N and 4N, interleaved; per-sample cost relative to N."""
    cfg = bench.cfg
    sizes = [cfg.growth_n, 2 * cfg.growth_n, 4 * cfg.growth_n]
    folders = {n: bench.dataset(f"growth-{n}", n, cfg.shapes()) for n in sizes}
    runs: dict[int, list[dict[str, Any]]] = {n: [] for n in sizes}
    for rep in range(cfg.reps):
        for n in rotated(sizes, rep):
            spec = {
                "task": "fit", "variant": "toolkit", "data_dir": str(folders[n]), "epochs": cfg.growth_epochs,
                "batch_size": cfg.batch_size, "val_split": 0.2, "seed": cfg.seed,
            }
            r = bench.worker(spec, f"growth-{n}")
            runs[n].append(r)
            bench.log(f"  growth rep {rep + 1} N={n}: steady epoch {r['steady_epoch_median_s']:.2f} s")
    med = [median([r["steady_epoch_median_s"] for r in runs[n]]) for n in sizes]
    per_sample = [m / n for m, n in zip(med, sizes)]
    ratios = [p / per_sample[0] for p in per_sample]
    slope, intercept = np.polyfit(sizes, med, 1)
    worst = max(abs(r - 1.0) for r in ratios)
    return {
        "n_samples": sizes,
        "median_epoch_s": med,
        "per_sample_ratio": ratios,
        "epoch_s_ratio": [m / med[0] for m in med],
        "linear_fit": {"seconds_per_sample": float(slope), "fixed_seconds_per_epoch": float(intercept)},
        "goal": GOALS["growth_per_sample_ratio"],
        "met": bool(max(ratios) <= GOALS["growth_per_sample_ratio"]),
        "max_deviation_from_linear": worst,
        "runs": {str(n): rs for n, rs in runs.items()},
    }


def measure_out_of_core(bench: Bench) -> dict[str, Any]:
    """One epoch from >= 8 GB memory-mapped files (cold page cache) vs the same pipeline in RAM."""
    from utils.synthetic import FIRST_IMPRESSIONS_SHAPES

    cfg = bench.cfg
    shapes = dict(FIRST_IMPRESSIONS_SHAPES)
    big = bench.dataset(f"ooc-{cfg.ooc_n}", cfg.ooc_n, shapes)
    small = bench.dataset(f"ooc-ref-{cfg.ooc_reference_n}", cfg.ooc_reference_n, shapes)
    common = {
        "task": "epoch", "batch_size": cfg.ooc_batch_size, "val_split": 0.2, "seed": cfg.seed,
        "width": cfg.ooc_width, "num_heads": 4, "head_units": cfg.ooc_width,
    }
    variants = {
        "out_of_core": {**common, "data_dir": str(big), "drop_cache": True, "max_steps": cfg.ooc_max_steps},
        "in_memory": {**common, "data_dir": str(small), "in_ram": True},
    }
    runs: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
    for rep in range(cfg.reps):
        for name in rotated(list(variants), rep):
            r = bench.worker(variants[name], name)
            runs[name].append(r)
            bench.log(f"  {name} rep {rep + 1}: {r['samples_per_s']:.0f} samples/s, epoch {r['epoch_s']:.1f} s, "
                      f"peak RssAnon {r['peak_rss_anon_mb']:.0f} MB")
    thr = {v: median([r["samples_per_s"] for r in rs]) for v, rs in runs.items()}
    peak = {v: max(r["peak_rss_anon_mb"] for r in rs) for v, rs in runs.items()}
    ratio = thr["out_of_core"] / thr["in_memory"]
    file_bytes = runs["out_of_core"][0]["file_bytes"]
    ram_bytes = _mem_total_gb() * 1024**3
    return {
        "shapes": shapes,
        "n_samples": {"out_of_core": cfg.ooc_n, "in_memory": cfg.ooc_reference_n},
        "file_gb": file_bytes / 1e9,
        "ram_gb": ram_bytes / 1e9,
        "fits_in_page_cache": bool(file_bytes < ram_bytes),
        "page_cache": "dropped for the data files (posix_fadvise DONTNEED) right before the epoch",
        "epoch_samples": runs["out_of_core"][0]["epoch_samples"],
        "full_epoch": not cfg.ooc_max_steps,
        "model": {"width": cfg.ooc_width, "batch_size": cfg.ooc_batch_size},
        "median_samples_per_s": thr,
        "throughput_ratio": ratio,
        "peak_rss_anon_mb": peak,
        "median_epoch_s": {v: median([r["epoch_s"] for r in rs]) for v, rs in runs.items()},
        "median_setup_s": {
            v: {k: median([r[k] for r in rs]) for k in ("load_and_validate_s", "statistics_and_build_s")}
            for v, rs in runs.items()
        },
        "goal": {"peak_rss_anon_mb": GOALS["out_of_core_peak_rss_anon_mb"],
                 "throughput_ratio": GOALS["out_of_core_throughput_ratio"]},
        "met": bool(peak["out_of_core"] <= GOALS["out_of_core_peak_rss_anon_mb"]
                    and ratio >= GOALS["out_of_core_throughput_ratio"]),
        "runs": runs,
    }


def measure_accuracy(bench: Bench) -> dict[str, Any]:
    """Held-out R² of the fusion modes, ridge, the mean predictor and the noise ceiling."""
    from sklearn.metrics import r2_score

    from utils.data import split_indices
    from utils.synthetic import SyntheticSpec, noise_ceiling, planted_signal, pool_tokens

    cfg = bench.cfg
    shapes = dict(SAMPLE_SHAPES)
    train_dir = bench.dataset(f"accuracy-{cfg.accuracy_n}", cfg.accuracy_n, shapes)
    test_dir = bench.dataset(f"accuracy-test-{cfg.accuracy_test_n}", cfg.accuracy_test_n, shapes,
                             start=cfg.accuracy_n)
    train = {k: np.load(train_dir / f"{k}.npy") for k in ("static_features", "dynamic_features", "labels")}
    test = {k: np.load(test_dir / f"{k}.npy") for k in ("static_features", "dynamic_features", "labels")}
    tr, _ = split_indices(cfg.accuracy_n, 0.2, cfg.seed)
    y_test = test["labels"].astype("float64")
    spec = SyntheticSpec(n_samples=cfg.accuracy_test_n, **shapes)
    signal, _ = planted_signal(spec, test["static_features"], test["dynamic_features"])
    ceiling = noise_ceiling(y_test, signal)["mean"]
    mean_pred = np.tile(train["labels"][tr].mean(axis=0), (len(y_test), 1))
    mean_r2 = float(np.mean(r2_score(y_test, mean_pred, multioutput="raw_values")))
    ridge_r2 = _ridge_test_r2(train, test, tr, pool_tokens)
    models: dict[str, Any] = {}
    for fusion in cfg.accuracy_fusions:
        spec_run = {"task": "accuracy", "data_dir": str(train_dir), "test_dir": str(test_dir),
                    "train": {**cfg.accuracy_train, "fusion": fusion, "seed": cfg.seed}}
        r = bench.worker(spec_run, f"accuracy-{fusion}")
        models[fusion] = r
        bench.log(f"  accuracy {fusion}: test R² {r['test_r2_mean']:.3f} (best epoch {r['best_epoch']} "
                  f"of {r['epochs_run']}, {r['seconds']:.0f} s)")
    ca = models.get("cross_attention", {}).get("test_r2_mean", math.nan)
    others = [m["test_r2_mean"] for f, m in models.items() if f != "cross_attention"]
    return {
        "shapes": shapes,
        "n_train_file": cfg.accuracy_n,
        "n_test": cfg.accuracy_test_n,
        "test_r2_mean": {
            "noise_ceiling": ceiling, "mean_predictor": mean_r2, "ridge_pooled": ridge_r2,
            **{f: m["test_r2_mean"] for f, m in models.items()},
        },
        "cross_attention_fraction_of_ceiling": ca / ceiling,
        "met": bool(ca > ridge_r2 and all(ca > o for o in others)),
        "models": models,
        "train_settings": cfg.accuracy_train,
    }


def _ridge_test_r2(train: dict[str, np.ndarray], test: dict[str, np.ndarray], tr: np.ndarray,
                   pool: Callable[[np.ndarray], np.ndarray]) -> float:
    """utils.synthetic.ridge_baseline's model (pooled, standardized, RidgeCV), scored on the test set."""
    from sklearn.linear_model import RidgeCV
    from sklearn.metrics import r2_score
    from sklearn.preprocessing import StandardScaler

    x_tr, x_te = [], []
    for key in ("static_features", "dynamic_features"):
        scaler = StandardScaler().fit(pool(train[key])[tr])
        x_tr.append(scaler.transform(pool(train[key])[tr]))
        x_te.append(scaler.transform(pool(test[key])))
    model = RidgeCV(alphas=np.logspace(-3, 5, 17), alpha_per_target=True)
    model.fit(np.hstack(x_tr), train["labels"][tr])
    pred = model.predict(np.hstack(x_te))
    return float(np.mean(r2_score(test["labels"], pred, multioutput="raw_values")))


def measure_help(bench: Bench) -> dict[str, Any]:
    """Wall time of ``python scripts/<name> --help`` (median of ``help_reps``)."""
    scripts = [s for s in HELP_SCRIPTS if (REPO / "scripts" / s).exists()]
    times: dict[str, list[float]] = {s: [] for s in scripts}
    for rep in range(bench.cfg.help_reps):
        for script in rotated(scripts, rep):
            t = time.perf_counter()
            subprocess.run([sys.executable, str(REPO / "scripts" / script), "--help"], cwd=REPO,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
            times[script].append(time.perf_counter() - t)
    med = {s: median(v) for s, v in times.items()}
    return {
        "median_s": med,
        "missing": [s for s in HELP_SCRIPTS if s not in scripts],
        "goal": GOALS["help_seconds"],
        "met": bool(all(v < GOALS["help_seconds"] for v in med.values())),
        "runs": times,
    }


def measure_prediction(bench: Bench) -> dict[str, Any]:
    """Samples/s of utils.analysis.predict and of the whole analysis script."""
    cfg = bench.cfg
    data = bench.dataset(f"predict-{cfg.predict_n}", cfg.predict_n, cfg.shapes())
    runs: list[dict[str, Any]] = []
    script_s: list[float] = []
    model_path = bench.workdir / "runs" / "predict-model.keras"
    for rep in range(cfg.reps):
        spec = {"task": "predict", "data_dir": str(data), "batch_size": cfg.predict_batch_size,
                "save_model": str(model_path) if rep == 0 else None}
        r = bench.worker(spec, "predict")
        runs.append(r)
        bench.log(f"  predict rep {rep + 1}: analysis {r['analysis_predict_samples_per_s']:.0f}, tf.data "
                  f"{r['tf_dataset_predict_samples_per_s']:.0f}, bare {r['bare_predict_samples_per_s']:.0f} samples/s")
        t = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, str(REPO / "scripts" / "analyze_model_predictions.py"), "--model", str(model_path),
             "--static_features", str(data / "static_features.npy"),
             "--dynamic_features", str(data / "dynamic_features.npy"), "--labels", str(data / "labels.npy"),
             "--output", str(bench.workdir / "runs" / f"analysis-{rep}"), "--verbose", "0",
             "--batch_size", str(cfg.predict_batch_size)],
            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=False,
        )
        if proc.returncode == 0:
            script_s.append(time.perf_counter() - t)
        else:
            bench.log(f"  analysis script failed (exit {proc.returncode}): {proc.stderr.strip()[-300:]}")
    keys = ("analysis_predict_samples_per_s", "tf_dataset_predict_samples_per_s", "bare_predict_samples_per_s")
    med = {k: median([r[k] for r in runs]) for k in keys}
    return {
        "n_samples": cfg.predict_n,
        "batch_size": cfg.predict_batch_size,
        "median_samples_per_s": med,
        "analysis_to_bare_ratio": med["analysis_predict_samples_per_s"] / med["bare_predict_samples_per_s"],
        "analysis_script_median_s": median(script_s) if script_s else None,
        "runs": runs,
    }


def measure_end_to_end(bench: Bench) -> dict[str, Any]:
    from benchmarks.end_to_end import measure_end_to_end as measure

    return measure(bench)


MEASURE_FUNCS: dict[str, Callable[[Bench], dict[str, Any]]] = {
    "end_to_end": measure_end_to_end,
    "overhead": measure_overhead,
    "growth": measure_growth,
    "out_of_core": measure_out_of_core,
    "accuracy": measure_accuracy,
    "help": measure_help,
    "prediction": measure_prediction,
}


def goals_table(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per goal: measure, value, goal, met."""
    rows: list[dict[str, Any]] = []
    m = results["measures"]
    if "end_to_end" in m:
        e = m["end_to_end"]
        r = e["wall"]["ratios"].get(e["headline"], {})
        for key, label in (("end_to_end", "end to end"), ("per_epoch", "per epoch")):
            rows.append({"measure": f"{label}: training script / plain Keras script", "value": r.get(key, math.nan),
                         "goal": f"<= {e['goal'][key]:.2f}", "met": bool(0 < r.get(key, math.inf) <= e["goal"][key])})
    if "overhead" in m:
        rows.append({"measure": "overhead: toolkit / bare epoch time", "value": m["overhead"]["ratio"],
                     "goal": "<= 1.10", "met": m["overhead"]["met"]})
    if "out_of_core" in m:
        o = m["out_of_core"]
        rows.append({"measure": "out of core: peak RssAnon (MB)", "value": o["peak_rss_anon_mb"]["out_of_core"],
                     "goal": "<= 1536", "met": o["peak_rss_anon_mb"]["out_of_core"] <= GOALS["out_of_core_peak_rss_anon_mb"]})
        rows.append({"measure": "out of core: throughput / in-memory", "value": o["throughput_ratio"],
                     "goal": ">= 0.8", "met": o["throughput_ratio"] >= GOALS["out_of_core_throughput_ratio"]})
    if "growth" in m:
        rows.append({"measure": "growth: worst per-sample time vs N", "value": max(m["growth"]["per_sample_ratio"]),
                     "goal": "<= 1.10", "met": m["growth"]["met"]})
    if "accuracy" in m:
        a = m["accuracy"]
        rows.append({"measure": "accuracy: cross-attention fraction of ceiling",
                     "value": a["cross_attention_fraction_of_ceiling"],
                     "goal": "beats ridge and ablations", "met": a["met"]})
    if "help" in m:
        rows.append({"measure": "--help latency, slowest script (s)", "value": max(m["help"]["median_s"].values()),
                     "goal": "< 1 s", "met": m["help"]["met"]})
    return rows


def run(cfg: BenchConfig, command: str, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the selected measures; return the results document."""
    bench = Bench(cfg, log)
    started = time.perf_counter()
    results: dict[str, Any] = {
        "schema": SCHEMA,
        "name": cfg.name,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "command": command,
        "machine": machine_info(),
        "config": dataclasses.asdict(cfg),
        "measures": {},
    }
    try:
        for name in cfg.measures:
            log(f"[{name}]")
            t = time.perf_counter()
            results["measures"][name] = MEASURE_FUNCS[name](bench)
            results["measures"][name]["wall_seconds"] = time.perf_counter() - t
    finally:
        bench.cleanup()
    results["goals"] = goals_table(results)
    results["wall_seconds"] = time.perf_counter() - started
    return results


def write_results(results: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, allow_nan=True) + "\n")


# -- the report ----------------------------------------------------------------

DOC_BEGIN = "<!-- benchmark-results:begin (written by scripts/benchmark_toolkit.py) -->"
DOC_END = "<!-- benchmark-results:end -->"


def _f(value: Any, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def _yes(met: bool) -> str:
    return "met" if met else "**missed**"


def render_markdown(results: dict[str, Any]) -> str:
    """The results section of docs/performance.md, from a results document."""
    mach = results["machine"]
    v = mach["versions"]
    m = results["measures"]
    lines = [
        DOC_BEGIN,
        f"### Results `{results['name']}` ({results['created']})",
        "",
        f"Command: `{results['command']}` ({results['wall_seconds'] / 60:.1f} min). "
        f"JSON: `benchmarks/results/{results['name']}.json`.",
        "",
        f"Machine: {mach['cpu_model']}, {mach['cpu_cores']} cores, {mach['ram_gb']} GiB RAM, no GPU; "
        f"{mach['os']}; Python {mach['python']}, TensorFlow {v.get('tensorflow')}, Keras {v.get('keras')}, "
        f"NumPy {v.get('numpy')}, scikit-learn {v.get('scikit-learn')}.",
        "",
        "| goal | measured | target | |",
        "|---|---|---|---|",
    ]
    lines += [f"| {g['measure']} | {_f(g['value'])} | {g['goal']} | {_yes(g['met'])} |" for g in results["goals"]]
    if "end_to_end" in m:
        from benchmarks.end_to_end import render

        lines += render(m["end_to_end"], results["config"]["reps"])
    if "overhead" in m:
        o = m["overhead"]
        lines += ["", f"**Overhead** (N={o['n_samples']}, batch {o['batch_size']}, {o['steady_epochs']}; "
                  f"median of {results['config']['reps']} interleaved runs, one process each):", "",
                  "| variant | epoch wall s | ratio to bare | epoch CPU s | CPU ratio |", "|---|---|---|---|---|"]
        for name, sec in o["median_epoch_s"].items():
            lines.append(f"| {name} | {_f(sec)} | {_f(o['ratio_to_bare'][name])} | "
                         f"{_f(o['median_epoch_cpu_s'][name])} | {_f(o['cpu_ratio_to_bare'][name])} |")
    if "growth" in m:
        g = m["growth"]
        lines += ["", "**Cost growth** (toolkit run, steady-state epochs):", "",
                  "| N | epoch s | epoch time / time at N | per-sample time / at N |", "|---|---|---|---|"]
        for n, sec, er, pr in zip(g["n_samples"], g["median_epoch_s"], g["epoch_s_ratio"], g["per_sample_ratio"]):
            lines.append(f"| {n} | {_f(sec)} | {_f(er)} | {_f(pr)} |")
        fit = g["linear_fit"]
        lines += ["", f"Linear fit: {fit['seconds_per_sample'] * 1000:.3f} ms per sample + "
                  f"{fit['fixed_seconds_per_epoch']:.2f} s fixed per epoch."]
    if "out_of_core" in m:
        o = m["out_of_core"]
        lines += ["", f"**Out of core** (FI shapes, files {o['file_gb']:.2f} GB vs {o['ram_gb']:.1f} GB RAM: "
                  f"{'fits' if o['fits_in_page_cache'] else 'does not fit'} in the page cache; "
                  f"{o['page_cache']}; {'full epoch' if o['full_epoch'] else 'capped epoch'} of "
                  f"{o['epoch_samples']} samples; width {o['model']['width']}, batch {o['model']['batch_size']}):", "",
                  "| variant | N | samples/s | epoch s | peak RssAnon MB | load+validate s | statistics+build s |",
                  "|---|---|---|---|---|---|---|"]
        for name in ("out_of_core", "in_memory"):
            setup = o["median_setup_s"][name]
            lines.append(f"| {name} | {o['n_samples'][name]} | {_f(o['median_samples_per_s'][name], 0)} | "
                         f"{_f(o['median_epoch_s'][name], 1)} | {_f(o['peak_rss_anon_mb'][name], 0)} | "
                         f"{_f(setup['load_and_validate_s'], 1)} | {_f(setup['statistics_and_build_s'], 1)} |")
    if "accuracy" in m:
        a = m["accuracy"]
        lines += ["", f"**Accuracy** (sample shapes, {a['n_train_file']} clips split 80/20 for training and "
                  f"early stopping, R² on {a['n_test']} further clips of the same generator; "
                  f"training settings {json.dumps(a['train_settings'])}):", "", "| predictor | test R² (mean of 5 traits) |", "|---|---|"]
        for name, r2 in a["test_r2_mean"].items():
            lines.append(f"| {name} | {_f(r2, 3)} |")
        lines += ["", f"Cross-attention reaches {_f(a['cross_attention_fraction_of_ceiling'], 2)} of the noise ceiling."]
    if "help" in m:
        h = m["help"]
        lines += ["", f"**`--help` latency** (median of {results['config']['help_reps']}): "
                  + ", ".join(f"`{s}` {_f(t)} s" for s, t in h["median_s"].items())
                  + (f"; missing: {', '.join(h['missing'])}" if h["missing"] else "") + "."]
    if "prediction" in m:
        p = m["prediction"]
        med = p["median_samples_per_s"]
        lines += ["", f"**Prediction** (N={p['n_samples']}, batch {p['batch_size']}, untrained model of the "
                  f"default size): `utils.analysis.predict` (the analysis script's loop) "
                  f"{_f(med['analysis_predict_samples_per_s'], 0)} samples/s, `model.predict` over "
                  f"`make_tf_dataset` {_f(med['tf_dataset_predict_samples_per_s'], 0)}, `model.predict` on arrays "
                  f"{_f(med['bare_predict_samples_per_s'], 0)}; the whole `analyze_model_predictions.py` run "
                  f"(load, predict, metrics, figures) {_f(p['analysis_script_median_s'], 1)} s."]
    lines.append(DOC_END)
    return "\n".join(lines) + "\n"


def update_doc(results: dict[str, Any], path: Path = DOC_PATH) -> None:
    """Replace the generated results section of ``path`` (create the file if needed)."""
    section = render_markdown(results)
    text = path.read_text() if path.exists() else "# Performance\n\n"
    if DOC_BEGIN in text and DOC_END in text:
        head, rest = text.split(DOC_BEGIN, 1)
        text = head + section.rstrip("\n") + rest.split(DOC_END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
