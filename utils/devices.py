"""Where and in which precision a run computes: ``--precision`` and ``--distribute``.

:func:`execution_plan` turns the two settings into an :class:`ExecutionPlan`
before the model is built: it refuses what cannot work (one line, exit 2),
warns about what will be slow, and holds the ``tf.distribute`` strategy whose
scope the model is built and compiled in. :meth:`ExecutionPlan.record` is the
``execution`` entry of ``run_manifest.json``: precision, replicas, the global
and per-replica batch, the learning rate and how the data are split.

Precision (Keras mixed precision, set as the global policy only while the
model is built, then restored):

* ``float32``: everything in float32 (the default).
* ``mixed_bfloat16``: layers compute in bfloat16, variables stay float32.
  Pays on GPUs with bfloat16 units for wide models and large batches; on a
  CPU it is fast only with AVX512-BF16 or AMX (``/proc/cpuinfo`` flags
  ``avx512_bf16``/``amx_bf16``), otherwise emulated and slower: a warning.
* ``mixed_float16``: as above in float16, with Keras' dynamic loss scaling
  (``compile`` wraps the optimizer in a ``LossScaleOptimizer``). Refused
  without a GPU: float16 matmuls are emulated on CPUs and many times slower.

The output layer (``traits``) is built with ``dtype="float32"``
(:func:`models.cross_attention.build_model`), so predictions, the loss and
the metrics are float32 whatever the policy (the metrics keep float64 sums).

Distribution (``tf.distribute``; imported only when asked for):

* ``none``: the default device.
* ``auto``: ``mirrored`` when more than one GPU is visible, else ``none``.
* ``mirrored``: ``MirroredStrategy`` over the visible GPUs (without GPUs,
  over the logical CPU devices, which is how the tests run it on a CPU).
  ``--batch_size`` is the global batch, split evenly over the replicas; the
  learning rate is not scaled. Keras distributes the ``tf.data`` pipeline
  (each replica takes its slice of every global batch).
* ``multi_worker``: ``MultiWorkerMirroredStrategy`` from ``TF_CONFIG``.
  Refused: on this stack (TensorFlow 2.21, Keras 3) Keras' ``fit`` does not
  run under it (see :data:`MULTI_WORKER_REFUSAL` and docs/performance.md).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from utils.errors import InputError

logger = logging.getLogger(__name__)

PRECISIONS: tuple[str, ...] = ("float32", "mixed_float16", "mixed_bfloat16")
DISTRIBUTE_MODES: tuple[str, ...] = ("auto", "none", "mirrored", "multi_worker")
# Training steps from which XLA compilation pays for itself (break-even measured in docs/performance.md).
JIT_MIN_STEPS = 2000
BF16_CPU_FLAGS: tuple[str, ...] = ("avx512_bf16", "amx_bf16")
CPUINFO = Path("/proc/cpuinfo")
MULTI_WORKER_REFUSAL = (
    "--distribute multi_worker is not supported: Keras 3's fit does not run under TensorFlow's "
    "MultiWorkerMirroredStrategy on this stack (keras-team/keras#20585; see docs/performance.md); "
    "use --distribute mirrored for the GPUs of one machine"
)


def use_xla(total_steps: int, min_steps: int = JIT_MIN_STEPS) -> bool:
    """XLA pays when the run is long enough: its compilation (seconds) against a per-step saving.

    ``--jit_min_steps`` (:data:`JIT_MIN_STEPS` by default) is the break-even
    measured in docs/performance.md; 0 always compiles.
    """
    return total_steps >= min_steps


def cpu_flags(path: Path = CPUINFO) -> frozenset[str]:
    """The CPU feature flags of ``/proc/cpuinfo`` (empty where the file is missing)."""
    try:
        text = path.read_text(errors="ignore")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def cpu_supports_bfloat16(flags: frozenset[str] | None = None) -> bool:
    """True when the CPU computes bfloat16 natively (AVX512-BF16 or AMX)."""
    flags = cpu_flags() if flags is None else flags
    return any(f in flags for f in BF16_CPU_FLAGS)


def check_precision(precision: str, gpus: int, flags: frozenset[str] | None = None) -> None:
    """Refuse ``mixed_float16`` without a GPU; warn about emulated ``mixed_bfloat16`` on a CPU."""
    if precision not in PRECISIONS:
        raise InputError(f"expected --precision to be one of {', '.join(PRECISIONS)}, found {precision!r}")
    if precision == "mixed_float16" and gpus == 0:
        raise InputError(
            "--precision mixed_float16 needs a GPU, found none: CPUs emulate float16 matrix products "
            "and train many times slower (use float32, or mixed_bfloat16 on a CPU with AVX512-BF16/AMX)"
        )
    if precision == "mixed_bfloat16" and gpus == 0 and not cpu_supports_bfloat16(flags):
        logger.warning(
            "--precision mixed_bfloat16 on a CPU without %s: bfloat16 is emulated here and "
            "usually slower than float32",
            "/".join(BF16_CPU_FLAGS),
        )


@contextlib.contextmanager
def precision_policy(precision: str) -> Iterator[None]:
    """Keras' global dtype policy set to ``precision`` inside the block, restored after it.

    Layers take the policy when they are created, so the model is built
    inside the block; everything after (fit, save, load) follows the layers'
    own policies.
    """
    import keras

    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(precision)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


@dataclasses.dataclass
class ExecutionPlan:
    """The resolved ``--precision`` and ``--distribute`` of a run."""

    precision: str = "float32"
    distribute: str = "none"  # resolved: none or mirrored
    requested: str = "none"  # as given: auto, none, mirrored
    strategy: Any = None  # tf.distribute.Strategy, None for the default device
    devices: tuple[str, ...] = ()
    gpus: int = 0

    @property
    def replicas(self) -> int:
        return int(self.strategy.num_replicas_in_sync) if self.strategy is not None else 1

    @contextlib.contextmanager
    def build_scope(self) -> Iterator[None]:
        """Build and compile the model in here: the precision policy and the strategy's scope."""
        with precision_policy(self.precision):
            if self.strategy is None:
                yield
            else:
                with self.strategy.scope():
                    yield

    def compile_overrides(self) -> dict[str, Any]:
        """Compile options a strategy of several replicas cannot run with on this stack.

        Measured with two logical CPU devices (tests/test_precision_distribute.py):
        ``steps_per_execution`` > 1 fails in Keras' multi-step loop ("You must
        feed a value for placeholder tensor ... while/cond/Placeholder"), and
        XLA refuses the replicas' variables on another device ("Trying to access
        resource ... located in device CPU:1 from device CPU:0", TensorFlow's XLA
        known issue about variables on a different device).
        """
        return {"jit_compile": False, "steps_per_execution": 1} if self.replicas > 1 else {}

    def record(
        self, batch_size: int, learning_rate: float, jit_compile: bool = False, steps_per_execution: int = 1
    ) -> dict[str, Any]:
        """The manifest's ``execution`` entry (with the compile options the model was compiled with)."""
        replicas = self.replicas
        per_replica = batch_size / replicas
        return {
            "precision": self.precision,
            "compute_dtype": {"float32": "float32", "mixed_float16": "float16", "mixed_bfloat16": "bfloat16"}[
                self.precision
            ],
            "variable_dtype": "float32",
            "output_layer_dtype": "float32",
            "loss_scaling": self.precision == "mixed_float16",
            "distribute": self.distribute,
            "distribute_requested": self.requested,
            "strategy": type(self.strategy).__name__ if self.strategy is not None else None,
            "replicas": replicas,
            "devices": list(self.devices),
            "gpus": self.gpus,
            "global_batch_size": int(batch_size),
            "per_replica_batch_size": int(per_replica) if per_replica == int(per_replica) else per_replica,
            "learning_rate": float(learning_rate),
            "jit_compile": bool(jit_compile),
            "steps_per_execution": int(steps_per_execution),
            "compile_overrides": (
                "XLA off and one step per execution: required under a strategy of several replicas"
                if self.compile_overrides()
                else None
            ),
            "learning_rate_scaling": "none: --learning_rate applies to the global batch as given",
            "data_sharding": (
                "each global batch of --batch_size rows is split evenly over the replicas "
                "(tf.distribute experimental_distribute_dataset; every replica sees every epoch's order)"
                if self.strategy is not None
                else "none (one device)"
            ),
        }


def _visible_gpus() -> list[Any]:
    import tensorflow as tf

    return tf.config.list_physical_devices("GPU")


def _mirrored(gpus: int) -> tuple[Any, tuple[str, ...]]:
    import tensorflow as tf

    kind = "GPU" if gpus else "CPU"
    devices = tuple(d.name for d in tf.config.list_logical_devices(kind))
    if len(devices) < 2:
        logger.warning("--distribute mirrored with one %s device: one replica, no speed-up", kind)
    return tf.distribute.MirroredStrategy(devices=list(devices)), devices


def check_multi_worker(env: dict[str, str] | None = None) -> None:
    """Refuse ``--distribute multi_worker`` (one line; see :data:`MULTI_WORKER_REFUSAL`)."""
    env = dict(os.environ) if env is None else env
    raw = env.get("TF_CONFIG")
    if raw:
        try:
            json.loads(raw)
        except ValueError:
            raise InputError(f"expected TF_CONFIG to be JSON, found {raw[:60]!r}") from None
    raise InputError(MULTI_WORKER_REFUSAL)


def check_settings(precision: str, distribute: str) -> None:
    """Refuse impossible settings before anything is written (``utils.training.prepare`` calls it).

    TensorFlow is imported only to count GPUs for a mixed precision.
    """
    if distribute not in DISTRIBUTE_MODES:
        raise InputError(f"expected --distribute to be one of {', '.join(DISTRIBUTE_MODES)}, found {distribute!r}")
    if distribute == "multi_worker":
        check_multi_worker()
    if precision not in PRECISIONS:
        raise InputError(f"expected --precision to be one of {', '.join(PRECISIONS)}, found {precision!r}")
    if precision == "mixed_float16":
        check_precision(precision, len(_visible_gpus()))


def execution_plan(precision: str, distribute: str) -> ExecutionPlan:
    """Check the settings against the machine and build the strategy (before the model)."""
    check_settings(precision, distribute)
    gpus = len(_visible_gpus())
    check_precision(precision, gpus)
    mode = distribute
    if mode == "auto":
        mode = "mirrored" if gpus > 1 else "none"
    strategy, devices = None, ()
    if mode == "mirrored":
        strategy, devices = _mirrored(gpus)
    return ExecutionPlan(precision, mode, distribute, strategy, devices, gpus)


__all__ = [
    "JIT_MIN_STEPS",
    "use_xla",
    "PRECISIONS",
    "DISTRIBUTE_MODES",
    "ExecutionPlan",
    "execution_plan",
    "check_settings",
    "check_precision",
    "cpu_supports_bfloat16",
    "precision_policy",
]
