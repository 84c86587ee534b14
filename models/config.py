"""The model's hyperparameters, without Keras (the training script's ``--help`` reads them).

Each field's default and help text are the one source of the matching
``train_personality_model.py`` flag (:func:`utils.config.add_arguments`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from utils.cli import non_negative_int, option, positive_int, unit_interval
from utils.constants import ATTENTION_DIRECTIONS, ATTENTION_KEYS, FUSION_MODES


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Hyperparameters of the fusion model, each with a sensible default."""

    width: int = option(64, "common token width of both streams", type=positive_int)
    num_heads: int = option(4, "attention heads (must divide --width)", type=positive_int)
    depth: int = option(1, "cross-attention blocks per direction", type=positive_int)
    dropout: float = option(0.1, "dropout rate in attention, feed-forward and head", type=unit_interval)
    ff_multiplier: int = option(2, "feed-forward width as a multiple of --width", type=positive_int)
    head_units: int = option(64, "hidden units of the dense head", type=positive_int)
    pooled_tokens: int = option(
        8, "tokens a pooled (N, D) feature vector is split into (>= 2)", type=positive_int
    )
    fusion: str = option(
        "pooled_query",
        "fusion of the two streams: pooled_query (default: one pooled static query attends over the dynamic "
        "segments, beside a pooled skip path), cross_attention (bidirectional token cross-attention, MulT-style), "
        "or an ablation",
        choices=FUSION_MODES,
    )
    fused_dropout: float = option(
        0.0, "dropout on the fused vector the head reads (input noise for the head)", type=unit_interval
    )
    head_skip: bool = option(
        True, "the output layer also reads the fused vector directly (a linear path beside the hidden layer)"
    )
    bilinear_rank: int = option(
        9,
        "pooled_query fusion: rank of a low-rank bilinear product of the pooled streams added to the "
        "fused vector (0: none); with --moment_start its columns start at the pairwise products of the "
        "leading static and dynamic directions of the residual's cross-moment",
        type=non_negative_int,
    )
    pooled_width: int = option(
        64,
        "pooled_query fusion: width of the learned linear projection of each pooled stream; "
        "the hidden layer reads these and the attended vector, the raw pooled streams reach the output "
        "through the linear path (0: the hidden layer reads the raw pooled streams)",
        type=non_negative_int,
    )
    pooled_norm: bool = option(
        False, "pooled_query fusion with --pooled_width: layer-normalize the projections of the pooled streams"
    )
    ridge_warm_start: bool = option(
        True,
        "pooled_query with --head_skip: the output layer's linear path starts at ridge on the pooled "
        "training features (models.linear_init)",
    )
    moment_start: bool = option(
        True,
        "pooled_query with --ridge_warm_start: also start the first attention head and the bilinear product at "
        "the leading directions of the ridge residual's cross-moments, where cross-fitting on the training "
        "rows says they lower ridge's error (models.moment_init)",
    )
    attention_keys: str = option(
        "position",
        "pooled_query fusion: keys of the dynamic segments (position codes, content projections, or both)",
        choices=ATTENTION_KEYS,
    )

    def __post_init__(self) -> None:
        if self.fusion not in FUSION_MODES:
            raise ValueError(f"fusion must be one of {FUSION_MODES}, got {self.fusion!r}")
        if self.attention_keys not in ATTENTION_KEYS:
            raise ValueError(f"attention_keys must be one of {ATTENTION_KEYS}, got {self.attention_keys!r}")
        for name in ("width", "num_heads", "depth", "ff_multiplier", "head_units"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.pooled_tokens < 2:
            raise ValueError(f"pooled_tokens must be at least 2, got {self.pooled_tokens}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {self.dropout}")
        if self.width % self.num_heads:
            raise ValueError(
                f"width ({self.width}) must be a multiple of num_heads ({self.num_heads})"
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def uses_static(self) -> bool:
        return self.fusion != "dynamic"

    @property
    def uses_dynamic(self) -> bool:
        return self.fusion != "static"

    @property
    def directions(self) -> tuple[str, ...]:
        if self.fusion == "cross_attention":
            return ATTENTION_DIRECTIONS
        if self.fusion == "pooled_query":
            return ("static_to_dynamic",)
        if self.fusion in ATTENTION_DIRECTIONS:
            return (self.fusion,)
        return ()


__all__ = ["ModelConfig"]
