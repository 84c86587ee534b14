"""TensorBoard tag names and the custom-scalars layout of a training run.

One convention (docs/logging.md): tags are grouped by metric with the trait
after a slash, so TensorBoard shows one group per metric with the five traits
inside it; the run (``train`` or ``validation``) says which split; the step is
the 1-based epoch, as in every figure, log and summary of the toolkit; heads
and blocks are numbered from 1.

================================  =============================================
epoch-log key (``val_`` dropped)  tag
================================  =============================================
``loss``                          ``loss`` (the MSE over all traits)
``r_squared``, ``mae``            ``r_squared/mean``, ``mae/mean`` (mean of the traits)
``openness_r_squared`` ...        ``r_squared/openness``, ``mae/openness``, ``mse/openness``
``learning_rate``                 ``learning_rate`` (the rate the epoch ran at)
``epoch_seconds``                 ``time/epoch_seconds``
``samples_per_second``            ``time/samples_per_second``
``mse``                           not written: the same series as ``loss``
``attention_entropy_<direction>``  not written here: filed once, by the attention
                                  probe, in the ``validation`` run (it is
                                  measured on validation clips)
================================  =============================================

The custom-scalars layout (TensorBoard's "Custom Scalars" dashboard) opens
on loss, mean R² and the R² of each trait, training against validation.
This module imports TensorBoard only inside :func:`layout_summary`.
"""

from __future__ import annotations

from typing import Any

from utils import constants as C

PER_TRAIT_METRICS: tuple[str, ...] = ("r_squared", "mae", "mse")
MEAN = "mean"  # the trait-averaged value of a metric: "r_squared/mean"
# Keys the epoch logs carry that TensorBoard does not get a second time.
DUPLICATE_KEYS: frozenset[str] = frozenset({"mse"})  # the loss is the MSE
ATTENTION_LOG_PREFIX = "attention_entropy_"
TIME_KEYS: frozenset[str] = frozenset({"epoch_seconds", "samples_per_second"})
TRAIN_RUN = "train"
VALIDATION_RUN = "validation"


def scalar_tag(key: str) -> str | None:
    """The tag of an epoch-log key (without ``val_``); None for a key not written to TensorBoard."""
    if key in DUPLICATE_KEYS or key.startswith(ATTENTION_LOG_PREFIX):
        return None
    for trait in C.TRAITS:
        for metric in PER_TRAIT_METRICS:
            if key == C.per_trait_metric_name(trait, metric):
                return f"{metric}/{trait}"
    if key in ("r_squared", "mae"):
        return f"{key}/{MEAN}"
    if key in TIME_KEYS:
        return f"time/{key}"
    return key


def split_logs(logs: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Epoch logs -> ``{run: {tag: value}}`` for the ``train`` and ``validation`` runs."""
    runs: dict[str, dict[str, float]] = {TRAIN_RUN: {}, VALIDATION_RUN: {}}
    for key, value in logs.items():
        run, name = (VALIDATION_RUN, key[4:]) if key.startswith("val_") else (TRAIN_RUN, key)
        tag = scalar_tag(name)
        if tag is not None and value is not None:
            runs[run][tag] = float(value)
    return runs


def attention_tag(direction: str, level: int | None = None, head: int | None = None) -> str:
    """``attention_entropy/<direction>`` (mean of heads), ``.../block_<b>/head_<h>`` or ``.../block_<b>/uniform``.

    ``level`` and ``head`` are 0-based indices (as in the model and
    ``attention_entropy.jsonl``'s lists); the tag numbers them from 1.
    """
    tag = f"attention_entropy/{direction}"
    if level is not None:
        tag += f"/block_{level + 1}/" + ("uniform" if head is None else f"head_{head + 1}")
    return tag


def _exact(*tags: str) -> str:
    return "^(" + "|".join(tags) + ")$"


def layout() -> Any:
    """The custom-scalars layout: loss, mean R², R² per trait, training against validation."""
    from tensorboard.plugins.custom_scalar import layout_pb2

    def chart(title: str, *tags: str) -> Any:
        return layout_pb2.Chart(title=title, multiline=layout_pb2.MultilineChartContent(tag=[_exact(*tags)]))

    overview = layout_pb2.Category(
        title="Loss and R² (training against validation)",
        chart=[
            chart("loss (MSE)", "loss"),
            chart("R², mean of the traits", f"r_squared/{MEAN}"),
            *(chart(f"R², {trait}", f"r_squared/{trait}") for trait in C.TRAITS),
        ],
    )
    together = layout_pb2.Category(
        title="R² and MAE of every trait in one chart",
        chart=[
            chart("R² per trait", *(f"r_squared/{t}" for t in C.TRAITS)),
            chart("MAE per trait", *(f"mae/{t}" for t in C.TRAITS)),
        ],
        closed=True,
    )
    schedule = layout_pb2.Category(
        title="Learning rate and time",
        chart=[chart("learning rate (the rate each epoch ran at)", "learning_rate"),
               chart("seconds per epoch", "time/epoch_seconds")],
        closed=True,
    )
    return layout_pb2.Layout(category=[overview, together, schedule])


def layout_summary() -> bytes:
    """The layout as a serialized ``Summary`` proto, for ``tf.summary.experimental.write_raw_pb``."""
    from tensorboard.plugins.custom_scalar import summary as custom_scalar

    return custom_scalar.pb(layout()).SerializeToString()


__all__ = ["scalar_tag", "split_logs", "attention_tag", "layout", "layout_summary", "TRAIN_RUN", "VALIDATION_RUN"]
