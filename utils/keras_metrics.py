"""Streaming Keras metrics built on :mod:`utils.metrics` (imports Keras).

Importing this module registers the classes under the ``personality`` package, so a model compiled with them
and saved as ``.keras`` or ``.h5`` loads with ``keras.models.load_model(path)``
and no ``custom_objects`` in any process that has imported it.

State: one float64 array of the additive sums of :data:`SUM_FIELDS`, created in
``__init__``; ``update_state`` only accumulates :func:`batch_sums`, ``result``
derives the value with :func:`metrics_from_sums`, ``reset_state`` zeroes. The
epoch value is therefore exact whatever the batching. ``sample_weight`` is
supported: row weights of shape ``(batch,)`` or ``(batch, 1)`` weight every
sum, as scikit-learn's ``sample_weight`` does. With no data yet, results are 0.

Training compiles one metric, :class:`PersonalityMetrics` (see
:func:`compile_metrics`): a single float64 sums array for all five traits,
updated once per step, whose ``result()`` is a dict of every history key
(Keras 3 spreads a dict result into the logs). It replaces the earlier 18
compiled metrics (Keras MAE and MSE, :class:`RSquared` and 15
:class:`PerTraitMetric`), which recomputed the sums 17 times and derived every
statistic 16 times per step; the history keys and values are the same (see
``docs/performance.md``). :class:`RSquared` and :class:`PerTraitMetric` stay
for code that wants one scalar metric, and models saved with them still load.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from utils.constants import NUM_TRAITS, OVERALL_METRICS, PER_TRAIT_STATISTICS, TRAITS, per_trait_metric_name
from utils.metrics import METRIC_NAMES, SUM_FIELDS, batch_sums, metrics_from_sums

__all__ = ["PerTraitMetric", "PersonalityMetrics", "RSquared", "compile_metrics", "per_trait_metrics"]

_PACKAGE = "personality"


class _SumsMetric(keras.metrics.Metric):
    """Base: keeps float64 sums for ``num_outputs`` columns of ``y``."""

    def __init__(self, num_outputs: int, name: str, dtype: Any = None) -> None:
        super().__init__(name=name, dtype=dtype)
        self.sums = self.add_variable(
            shape=(len(SUM_FIELDS), num_outputs),
            initializer="zeros",
            dtype="float64",
            name="sums",
        )

    def _columns(self, y: Any) -> Any:
        """The columns of ``y`` this metric tracks (all of them here)."""
        return y

    def update_state(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> None:
        """Add the sums of one batch ``(batch, outputs)``."""
        self.sums.assign_add(batch_sums(self._columns(y_true), self._columns(y_pred), sample_weight, xp=ops))

    def _derived(self) -> dict[str, Any]:
        return metrics_from_sums(ops.convert_to_tensor(self.sums), xp=ops, empty_value=0.0)

    def reset_state(self) -> None:
        self.sums.assign(ops.zeros(self.sums.shape, dtype="float64"))


@keras.saving.register_keras_serializable(package=_PACKAGE)
class RSquared(_SumsMetric):
    """R² averaged uniformly over outputs, like ``r2_score(multioutput="uniform_average")``.

    Per output, R² = 1 - SS_res / SS_tot over everything seen since the last
    reset; not clipped; a constant target column follows scikit-learn.
    """

    def __init__(self, name: str = "r_squared", num_outputs: int = NUM_TRAITS, dtype: Any = None) -> None:
        super().__init__(num_outputs=num_outputs, name=name, dtype=dtype)
        self.num_outputs = num_outputs

    def result(self) -> Any:
        return ops.cast(ops.mean(self._derived()["r_squared"]), self.dtype)

    def get_config(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "num_outputs": self.num_outputs}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class PerTraitMetric(_SumsMetric):
    """One scalar statistic of one output column (TensorBoard needs scalars).

    Args:
        trait_index: column of ``y`` (index into :data:`TRAITS`).
        statistic: one of :data:`utils.metrics.METRIC_NAMES`; the compiled set
            is :data:`PER_TRAIT_STATISTICS`. ``pearson`` and ``ccc`` are NaN
            while a column is constant.
        name: defaults to ``per_trait_metric_name(TRAITS[trait_index], statistic)``,
            e.g. ``openness_r_squared``.
    """

    def __init__(self, trait_index: int, statistic: str, name: str | None = None, dtype: Any = None) -> None:
        if statistic not in METRIC_NAMES:
            raise ValueError(
                "Invalid value for argument `statistic`. Expected one of "
                f"{METRIC_NAMES}. Received: statistic={statistic!r}"
            )
        max_index = NUM_TRAITS if name is None else None
        if (
            isinstance(trait_index, bool)
            or not isinstance(trait_index, int)
            or trait_index < 0
            or (max_index is not None and trait_index >= max_index)
        ):
            raise ValueError(
                "Invalid value for argument `trait_index`. Expected an int in "
                f"[0, {NUM_TRAITS}) (or any index >= 0 with an explicit `name`). "
                f"Received: trait_index={trait_index!r}"
            )
        if name is None:
            name = per_trait_metric_name(TRAITS[trait_index], statistic)
        super().__init__(num_outputs=1, name=name, dtype=dtype)
        self.trait_index = trait_index
        self.statistic = statistic

    def _columns(self, y: Any) -> Any:
        i = self.trait_index
        return y[:, i : i + 1]

    def result(self) -> Any:
        return ops.cast(self._derived()[self.statistic][0], self.dtype)

    def get_config(self) -> dict[str, Any]:
        return {
            "trait_index": self.trait_index,
            "statistic": self.statistic,
            "name": self.name,
            "dtype": self.dtype,
        }


@keras.saving.register_keras_serializable(package=_PACKAGE)
class PersonalityMetrics(_SumsMetric):
    """Every compiled training metric at once: one state, one dict result.

    ``result()`` returns ``{"mae", "mse", "r_squared"}`` (uniform averages
    over the traits, like ``sklearn`` ``multioutput="uniform_average"``; since
    every sample has a value for every trait, the overall MAE and MSE equal
    Keras' ``MeanAbsoluteError`` and ``MeanSquaredError``) plus
    ``<trait>_<statistic>`` for every trait and each statistic of
    :data:`PER_TRAIT_STATISTICS`, all scalars. Keras 3 merges a dict result
    into the logs, so the history, TensorBoard (``epoch_openness_r_squared``)
    and the ``val_`` twins see the same keys as with one metric per value.

    Args:
        name: the metric's own name (not a history key).
        traits: output names in column order; the keys follow them.
    """

    def __init__(
        self, name: str = "personality_metrics", traits: tuple[str, ...] | list[str] = TRAITS, dtype: Any = None
    ) -> None:
        traits = tuple(traits)
        if not traits or not all(isinstance(t, str) and t for t in traits) or len(set(traits)) != len(traits):
            raise ValueError(
                f"Invalid value for argument `traits`. Expected distinct non-empty names. Received: traits={traits!r}"
            )
        super().__init__(num_outputs=len(traits), name=name, dtype=dtype)
        self.traits = traits
        self._statistics = tuple(dict.fromkeys((*OVERALL_METRICS, *PER_TRAIT_STATISTICS)))

    def result(self) -> dict[str, Any]:
        values = metrics_from_sums(
            ops.convert_to_tensor(self.sums), xp=ops, empty_value=0.0, names=self._statistics
        )
        out = {name: ops.cast(ops.mean(values[name]), self.dtype) for name in OVERALL_METRICS}
        for i, trait in enumerate(self.traits):
            for statistic in PER_TRAIT_STATISTICS:
                out[per_trait_metric_name(trait, statistic)] = ops.cast(values[statistic][i], self.dtype)
        return out

    def get_config(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "traits": list(self.traits)}


def per_trait_metrics() -> list[PerTraitMetric]:
    """The 15 scalar per-trait metrics, trait-major (trait, then statistic)."""
    return [PerTraitMetric(i, statistic) for i in range(NUM_TRAITS) for statistic in PER_TRAIT_STATISTICS]


def compile_metrics() -> list[keras.metrics.Metric]:
    """Metrics for ``model.compile``: history keys ``mae``, ``mse``, ``r_squared``
    and ``<trait>_<statistic>`` (plus ``loss`` and the ``val_`` twins), all from
    one :class:`PersonalityMetrics`."""
    return [PersonalityMetrics()]
