"""One measurement in its own process: ``python -m benchmarks.worker SPEC.json RESULT.json``.

Each task imports TensorFlow itself, so every variant pays the same start-up
and no variant inherits another's graph caches, memory or threads. A
background thread samples ``RssAnon`` (anonymous resident memory: heap,
tensors, copies; memory-mapped file pages are ``RssFile`` and do not count)
every 50 ms, since Linux keeps no peak counter for it.

Tasks (``spec["task"]``):

* ``fit``: per-epoch wall times of the toolkit's ``run_training`` (all metrics,
  callbacks, logging) or of a bare ``model.fit`` of the same model, loss only,
  on the same arrays held in memory.
* ``epoch``: one training epoch through the toolkit's input pipeline
  (``make_tf_dataset``) from memory-mapped files or from arrays in RAM, with
  peak memory and steady-state throughput.
* ``accuracy``: a toolkit training run, then R² on a held-out test set.
* ``predict``: prediction throughput of ``utils.analysis.predict`` (what
  ``analyze_model_predictions.py`` calls) and of plain ``model.predict``.
"""

from __future__ import annotations

import json
import math
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

MODEL_KEYS = ("width", "num_heads", "depth", "dropout", "ff_multiplier", "head_units", "fusion")


def proc_status_kb(field: str, pid: int | str = "self") -> int:
    """A ``kB`` field of ``/proc/<pid>/status`` (0 when absent)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return 0
    return 0


class MemorySampler:
    """Peak ``RssAnon`` and ``RssFile`` of this process, sampled every ``interval`` seconds."""

    def __init__(self, interval: float = 0.05) -> None:
        self.interval = interval
        self.peak_anon_kb = 0
        self.peak_file_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        self.peak_anon_kb = max(self.peak_anon_kb, proc_status_kb("RssAnon"))
        self.peak_file_kb = max(self.peak_file_kb, proc_status_kb("RssFile"))

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def report(self) -> dict[str, float]:
        return {
            "peak_rss_anon_mb": self.peak_anon_kb / 1024,
            "peak_rss_file_mb": self.peak_file_kb / 1024,
            "vm_hwm_mb": proc_status_kb("VmHWM") / 1024,
        }


def make_timer(record_batches: bool = False) -> Any:
    """A Keras callback recording the wall clock at each epoch (and batch) end."""
    import keras

    class Timer(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.train_begin = math.nan
            self.cpu_begin = math.nan
            self.epoch_ends: list[float] = []
            self.epoch_cpu: list[float] = []
            self.batch_ends: list[float] = []

        def on_train_begin(self, logs: dict | None = None) -> None:
            self.train_begin = time.perf_counter()
            self.cpu_begin = time.process_time()

        def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
            if record_batches:
                self.batch_ends.append(time.perf_counter())

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            self.epoch_ends.append(time.perf_counter())
            self.epoch_cpu.append(time.process_time())

        def epoch_seconds(self) -> list[float]:
            """Wall time of each epoch, end to end (epoch 1 from the start of fit)."""
            marks = [self.train_begin, *self.epoch_ends]
            return [b - a for a, b in zip(marks, marks[1:])]

        def epoch_cpu_seconds(self) -> list[float]:
            """CPU time (all threads of the process) of each epoch: less sensitive to other load."""
            marks = [self.cpu_begin, *self.epoch_cpu]
            return [b - a for a, b in zip(marks, marks[1:])]

    return Timer()


def task_fit(spec: dict[str, Any]) -> dict[str, Any]:
    """Epoch times of the toolkit's run (``variant="toolkit"``) or a bare ``model.fit``."""
    import keras

    from utils import training
    from utils.data import feature_statistics, load_dataset, split_indices

    data_dir = Path(spec["data_dir"])
    paths = {k: str(data_dir / f"{k}.npy") for k in ("static_features", "dynamic_features", "labels")}
    model_kw = {k: spec[k] for k in MODEL_KEYS if k in spec}
    timer = make_timer()
    # Absent options: the toolkit's TrainConfig defaults; plain Keras for bare.
    execution = {k: spec[k] for k in ("jit_compile", "steps_per_execution") if spec.get(k) is not None}
    start = time.perf_counter()
    if spec["variant"] == "toolkit":
        cfg = training.TrainConfig.from_dict(dict(
            **paths,
            output=str(Path(spec["out_dir"]) / "model.h5"),
            epochs=spec["epochs"],
            batch_size=spec["batch_size"],
            val_split=spec["val_split"],
            seed=spec["seed"],
            patience=spec["epochs"] + 1,
            learning_rate=spec.get("learning_rate", 1e-3),
            verbose=spec.get("verbose", 1),
            **execution,
            **model_kw,
        ))
        original_callbacks = training.make_callbacks

        def callbacks_with_timer(*args: Any, **kwargs: Any) -> list[Any]:
            return [*original_callbacks(*args, **kwargs), timer]

        training.make_callbacks = callbacks_with_timer
        with MemorySampler() as mem:
            result = training.run_training(cfg)
        n_train, n_val = result.n_train, result.n_val
        ran_with = {"jit_compile": cfg.jit_compile, "steps_per_execution": cfg.steps_per_execution}
    elif spec["variant"] == "bare":
        from models.cross_attention import ModelConfig, build_model

        keras.utils.set_random_seed(spec["seed"])
        data = load_dataset(paths["static_features"], paths["dynamic_features"], paths["labels"])
        static, dynamic, labels = (np.array(a, dtype="float32") for a in (data.static, data.dynamic, data.labels))
        tr, va = split_indices(len(labels), spec["val_split"], spec["seed"])
        model = build_model(
            ModelConfig(**model_kw),
            static.shape[1:],
            dynamic.shape[1:],
            static_stats=feature_statistics(static, tr),
            dynamic_stats=feature_statistics(dynamic, tr),
            output_prior=labels[tr].mean(axis=0),
        )
        model.compile(
            optimizer=keras.optimizers.AdamW(spec.get("learning_rate", 1e-3), weight_decay=1e-4),
            loss=keras.losses.MeanSquaredError(),
            jit_compile=bool(execution.get("jit_compile", False)),
            steps_per_execution=int(execution.get("steps_per_execution", 1)),
        )
        with MemorySampler() as mem:
            model.fit(
                [static[tr], dynamic[tr]],
                labels[tr],
                validation_data=([static[va], dynamic[va]], labels[va]),
                batch_size=spec["batch_size"],
                epochs=spec["epochs"],
                shuffle=True,
                verbose=0,
                callbacks=[timer],
            )
        n_train, n_val = len(tr), len(va)
        ran_with = {"jit_compile": model.jit_compile, "steps_per_execution": model.steps_per_execution}
    else:
        raise ValueError(f"unknown fit variant {spec['variant']!r}")
    epochs = timer.epoch_seconds()
    steady = epochs[2:] if len(epochs) > 2 else epochs[-1:]  # epochs 1-2: tracing and warm-up
    cpu = timer.epoch_cpu_seconds()
    return {
        "epoch_seconds": epochs,
        "steady_epoch_median_s": float(np.median(steady)),
        "epoch_cpu_seconds": cpu,
        "steady_epoch_cpu_median_s": float(np.median(cpu[2:] if len(cpu) > 2 else cpu[-1:])),
        "n_train": n_train,
        "n_val": n_val,
        **{k: (bool(v) if k == "jit_compile" else int(v)) for k, v in ran_with.items()},
        "train_samples_per_s": n_train / float(np.median(steady)),
        "total_seconds": time.perf_counter() - start,
        **mem.report(),
    }


def _drop_page_cache(paths: list[str]) -> None:
    """Evict the files' clean pages from the page cache (``POSIX_FADV_DONTNEED``)."""
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def task_epoch(spec: dict[str, Any]) -> dict[str, Any]:
    """One training epoch through ``make_tf_dataset``; memory and throughput."""
    from utils import training
    from utils.data import Dataset, EpochBatches, label_means, load_dataset, make_tf_dataset, split_indices

    data_dir = Path(spec["data_dir"])
    files = [str(data_dir / f"{k}.npy") for k in ("static_features", "dynamic_features", "labels")]
    timings: dict[str, float] = {}
    with MemorySampler() as mem:
        t = time.perf_counter()
        data = load_dataset(*files)  # validation scan of the whole files (chunked)
        if spec.get("in_ram"):
            data = Dataset(
                static=np.array(data.static), dynamic=np.array(data.dynamic),
                labels=np.array(data.labels), paths=data.paths,
            )
        timings["load_and_validate_s"] = time.perf_counter() - t
        train_idx, val_idx = split_indices(len(data), spec["val_split"], spec["seed"])
        prep = training.Prepared(data, train_idx, val_idx, label_means(data.labels, train_idx))
        cfg = training.TrainConfig.from_dict(dict(
            zip(("static_features", "dynamic_features", "labels"), files),
            batch_size=spec["batch_size"], epochs=1, seed=spec["seed"],
            **{k: spec[k] for k in MODEL_KEYS if k in spec},
        ))
        epoch_idx = train_idx
        max_steps = int(spec.get("max_steps") or 0)
        if max_steps and max_steps * cfg.batch_size < len(train_idx):
            rng = np.random.default_rng(spec["seed"])
            epoch_idx = np.sort(rng.choice(train_idx, max_steps * cfg.batch_size, replace=False))
        batches = EpochBatches(epoch_idx, cfg.batch_size, shuffle=True, seed=cfg.seed)
        t = time.perf_counter()
        training.set_determinism(cfg.seed)
        model = training.build_compiled_model(cfg, prep, len(batches))  # normalization statistics scan
        timings["statistics_and_build_s"] = time.perf_counter() - t
        ds = make_tf_dataset(data, batches)
        if spec.get("drop_cache"):
            _drop_page_cache(files)
        timer = make_timer(record_batches=True)
        t = time.perf_counter()
        model.fit(ds, epochs=1, verbose=0, callbacks=[timer], shuffle=False)
        timings["epoch_s"] = time.perf_counter() - t
    warm = int(spec.get("warmup_batches", 5))
    ends = timer.batch_ends
    sizes = [len(b) for b in batches()]
    if len(ends) > warm + 1:
        steady_samples = sum(sizes[warm + 1 : len(ends)])
        throughput = steady_samples / (ends[-1] - ends[warm])
    else:
        throughput = len(epoch_idx) / timings["epoch_s"]
    file_bytes = sum(os.path.getsize(f) for f in files)
    return {
        **timings,
        "n_samples_file": len(data),
        "epoch_samples": int(len(epoch_idx)),
        "steps": len(batches),
        "samples_per_s": throughput,
        "file_bytes": file_bytes,
        "in_ram": bool(spec.get("in_ram")),
        "page_cache_dropped": bool(spec.get("drop_cache")),
        **mem.report(),
    }


def task_accuracy(spec: dict[str, Any]) -> dict[str, Any]:
    """Train with the toolkit, then R² of the saved model on held-out test files."""
    from sklearn.metrics import r2_score

    from utils.analysis import load_trained_model
    from utils.data import load_dataset
    from utils.training import TrainConfig, run_training

    data_dir, test_dir = Path(spec["data_dir"]), Path(spec["test_dir"])
    names = ("static_features", "dynamic_features", "labels")
    cfg = TrainConfig.from_dict(dict(
        {k: str(data_dir / f"{k}.npy") for k in names},
        output=str(Path(spec["out_dir"]) / "model.h5"),
        verbose=0,
        histogram_freq=0,
        batch_log_frequency=0,
        **{k: v for k, v in spec["train"].items()},
    ))
    start = time.perf_counter()
    result = run_training(cfg)
    model = load_trained_model(cfg.output)
    test = load_dataset(*(str(test_dir / f"{k}.npy") for k in names))
    pred = model.predict(
        [np.asarray(test.static, dtype="float32"), np.asarray(test.dynamic, dtype="float32")],
        batch_size=256, verbose=0,
    )
    r2 = r2_score(np.asarray(test.labels, dtype="float64"), pred, multioutput="raw_values")
    return {
        "fusion": cfg.model.fusion,
        "test_r2": [float(v) for v in r2],
        "test_r2_mean": float(np.mean(r2)),
        "val_r2_best": float(result.best["r_squared"]),
        "best_epoch": result.best_epoch,
        "epochs_run": len(result.history["epoch"]),
        "seconds": time.perf_counter() - start,
        "train": spec["train"],
    }


def task_predict(spec: dict[str, Any]) -> dict[str, Any]:
    """Prediction samples/s: ``utils.analysis.predict`` vs ``model.predict`` on the same rows."""
    from models.cross_attention import ModelConfig, build_model
    from utils.analysis import predict
    from utils.data import EpochBatches, load_dataset, make_tf_dataset
    from utils.io import save_model

    data_dir = Path(spec["data_dir"])
    data = load_dataset(*(str(data_dir / f"{k}.npy") for k in ("static_features", "dynamic_features", "labels")))
    model = build_model(
        ModelConfig(**{k: spec[k] for k in MODEL_KEYS if k in spec}), data.static_shape, data.dynamic_shape
    )
    idx = np.arange(len(data))
    bs = spec["batch_size"]
    out: dict[str, Any] = {"n": len(idx), "batch_size": bs}
    with MemorySampler() as mem:
        predict(model, data, idx[:bs], bs, verbose=0)  # warm-up (tracing)
        t = time.perf_counter()
        predict(model, data, idx, bs, verbose=0)
        out["analysis_predict_samples_per_s"] = len(idx) / (time.perf_counter() - t)
        ds = make_tf_dataset(data, EpochBatches(idx, bs, shuffle=False, seed=0), with_labels=False)
        model.predict(ds.take(2), verbose=0)
        t = time.perf_counter()
        model.predict(ds, verbose=0)
        out["tf_dataset_predict_samples_per_s"] = len(idx) / (time.perf_counter() - t)
        arrays = [np.array(data.static, dtype="float32"), np.array(data.dynamic, dtype="float32")]
        model.predict([a[:bs] for a in arrays], batch_size=bs, verbose=0)
        t = time.perf_counter()
        model.predict(arrays, batch_size=bs, verbose=0)
        out["bare_predict_samples_per_s"] = len(idx) / (time.perf_counter() - t)
    if spec.get("save_model"):
        save_model(model, spec["save_model"])
    out.update(mem.report())
    return out


def task_save_model(spec: dict[str, Any]) -> dict[str, Any]:
    """Build the training script's model for the data (default settings) and save it untrained."""
    from utils import training
    from utils.data import EpochBatches
    from utils.io import save_model

    data_dir = Path(spec["data_dir"])
    cfg = training.TrainConfig.from_dict(dict(
        {k: str(data_dir / f"{k}.npy") for k in ("static_features", "dynamic_features", "labels")},
        output=str(Path(spec["out_dir"]) / "model.h5"), batch_size=spec["batch_size"], seed=spec["seed"],
    ))
    prep = training.prepare(cfg)
    training.set_determinism(cfg.seed)
    steps = len(EpochBatches(prep.train_idx, cfg.batch_size, shuffle=True, seed=cfg.seed))
    model = training.build_compiled_model(cfg, prep, steps)
    save_model(model, spec["save_model"])
    return {"model": spec["save_model"], "parameters": int(model.count_params())}


TASKS = {"save_model": task_save_model, "fit": task_fit, "epoch": task_epoch, "accuracy": task_accuracy, "predict": task_predict}


def main(argv: list[str] | None = None) -> int:
    """Run the task described by ``argv[0]`` (JSON) and write its result to ``argv[1]``."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        sys.stderr.write("usage: python -m benchmarks.worker SPEC.json RESULT.json\n")
        return 2
    spec = json.loads(Path(args[0]).read_text())
    task = TASKS.get(spec.get("task", ""))
    if task is None:
        sys.stderr.write(f"unknown task {spec.get('task')!r}; expected one of {sorted(TASKS)}\n")
        return 2
    result = task(spec)
    result["task"] = spec["task"]
    result["load_average_after"] = list(os.getloadavg())
    Path(args[1]).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
