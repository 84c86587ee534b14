"""Fusion of static and dynamic video features: the pooled-query default and MulT-style cross-attention.

Two attention designs share the input stage and the head:

* the input stage: each stream is standardized by a frozen ``Normalization``
  layer (the statistics of the training split; the only non-trainable stage,
  standing in for the frozen feature extractors that produced the features);
  pooled ``(N, D)`` inputs are split into ``pooled_tokens`` feature-group
  tokens, because attention over a single key is degenerate (softmax of one
  score is always 1);
* ``fusion="pooled_query"`` (the default, :class:`PooledQueryFusion`): one
  query from the pooled static stream attends over the dynamic segments,
  whose keys are learned position codes (``attention_keys``) and whose values
  are projections of their content; the attended vector is concatenated with
  both pooled streams (a pooled skip path, so attention can only add to what
  the pooled features give) and with a learned linear projection of each
  pooled stream (``pooled_width``); the hidden layer reads the
  projections and the attended vector, the output layer's linear path the
  raw pooled streams and the attended vector;
* ``fusion="cross_attention"`` (:class:`FusionEncoder`, the seed's model,
  following MulT, Tsai et al. 2019, as ``shared/docs/domain.md`` describes
  it): both streams projected to a common ``width`` with position and
  stream-type embeddings, static queries attend to dynamic tokens and dynamic
  queries to static tokens, pre-norm residual blocks with feed-forward
  sub-blocks, ``depth`` times, each stream mean-pooled; the other
  ``FUSION_MODES`` are its ablations (one direction, concat without
  attention, one stream);
* the head: a hidden GELU layer with dropout and five sigmoid outputs (labels
  lie in [0, 1]); with ``head_skip`` the output layer also reads the fused
  vector directly, and :func:`build_model_for_data` can start that linear
  path at ridge on the pooled training features (``ridge_warm_start``,
  :mod:`models.linear_init`) and, where cross-fitting finds cross-modal
  structure in the ridge residual, the first attention head and the bilinear
  product at its leading directions (``moment_start``, :mod:`models.moment_init`).
  ``docs/accuracy.md`` has the measurements behind these defaults.

All custom layers are registered serializable, so a saved ``.h5`` or
``.keras`` model loads with ``keras.models.load_model`` alone.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import layers, ops

from models.config import ModelConfig  # the hyperparameters live beside, without Keras
from utils.constants import NUM_TRAITS

PACKAGE = "personality"



@keras.saving.register_keras_serializable(package=PACKAGE)
class SplitIntoTokens(layers.Layer):
    """``(batch, D)`` -> ``(batch, num_tokens, ceil(D / num_tokens))``.

    The vector is zero-padded to a multiple of ``num_tokens`` and cut into
    contiguous feature groups, one token each.
    """

    def __init__(self, num_tokens: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.num_tokens = int(num_tokens)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        dim = int(input_shape[-1])
        return (input_shape[0], self.num_tokens, -(-dim // self.num_tokens))

    def call(self, x: Any) -> Any:
        dim = int(x.shape[-1])
        group = -(-dim // self.num_tokens)
        pad = group * self.num_tokens - dim
        if pad:
            x = ops.pad(x, [[0, 0], [0, pad]])
        return ops.reshape(x, (-1, self.num_tokens, group))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "num_tokens": self.num_tokens}


@keras.saving.register_keras_serializable(package=PACKAGE)
class ColumnSlice(layers.Layer):
    """``(batch, D)`` -> ``(batch, stop - start)``: columns ``start`` to ``stop`` (None: to the end)."""

    def __init__(self, start: int = 0, stop: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.start = int(start)
        self.stop = None if stop is None else int(stop)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        stop = int(input_shape[-1]) if self.stop is None else self.stop
        return (input_shape[0], stop - self.start)

    def call(self, x: Any) -> Any:
        return x[:, self.start : self.stop]

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "start": self.start, "stop": self.stop}


@keras.saving.register_keras_serializable(package=PACKAGE)
class TokenEmbedding(layers.Layer):
    """Project tokens to ``width`` and add position and stream-type embeddings."""

    def __init__(self, width: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.width = int(width)
        self.projection = layers.Dense(self.width, name="projection")

    def build(self, input_shape: tuple) -> None:
        num_tokens = int(input_shape[1])
        self.projection.build(input_shape)
        self.position = self.add_weight(
            name="position",
            shape=(num_tokens, self.width),
            initializer=keras.initializers.RandomNormal(stddev=0.02),
        )
        self.stream_type = self.add_weight(
            name="stream_type",
            shape=(self.width,),
            initializer=keras.initializers.RandomNormal(stddev=0.02),
        )

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return (*input_shape[:-1], self.width)

    def call(self, x: Any) -> Any:
        # (batch, tokens, features) -> (batch, tokens, width)
        return self.projection(x) + self.position[None] + self.stream_type[None, None]

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "width": self.width}


@keras.saving.register_keras_serializable(package=PACKAGE)
class CrossAttentionBlock(layers.Layer):
    """Pre-norm cross-attention: queries from one stream, keys/values from the other.

    ``x = q + MHA(LN(q), LN(kv))``; ``x = x + FF(LN(x))``.
    """

    def __init__(
        self,
        width: int,
        num_heads: int,
        dropout: float = 0.0,
        ff_multiplier: int = 2,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.width = int(width)
        self.num_heads = int(num_heads)
        self.dropout_rate = float(dropout)
        self.ff_multiplier = int(ff_multiplier)
        self.query_norm = layers.LayerNormalization(epsilon=1e-6, name="query_norm")
        self.context_norm = layers.LayerNormalization(epsilon=1e-6, name="context_norm")
        self.attention = layers.MultiHeadAttention(
            num_heads=self.num_heads,
            key_dim=self.width // self.num_heads,
            dropout=self.dropout_rate,
            name="attention",
        )
        self.ff_norm = layers.LayerNormalization(epsilon=1e-6, name="ff_norm")
        self.ff_hidden = layers.Dense(self.width * self.ff_multiplier, activation="gelu", name="ff_hidden")
        self.ff_out = layers.Dense(self.width, name="ff_out")
        self.dropout = layers.Dropout(self.dropout_rate)

    def build(self, query_shape: tuple, context_shape: tuple | None = None) -> None:
        context_shape = query_shape if context_shape is None else context_shape
        self.query_norm.build(query_shape)
        self.context_norm.build(context_shape)
        self.attention.build(query_shape, context_shape)
        self.ff_norm.build(query_shape)
        self.ff_hidden.build(query_shape)
        self.ff_out.build((*query_shape[:-1], self.width * self.ff_multiplier))

    def compute_output_shape(self, query_shape: tuple, context_shape: tuple | None = None) -> tuple:
        return query_shape

    def call(
        self,
        query: Any,
        context: Any,
        training: bool | None = None,
        return_attention_scores: bool = False,
    ) -> Any:
        # query: (batch, query_tokens, width); context: (batch, key_tokens, width)
        attended, scores = self.attention(
            self.query_norm(query),
            self.context_norm(context),
            return_attention_scores=True,
            training=training,
        )
        # scores: (batch, heads, query_tokens, key_tokens), rows sum to 1
        x = query + self.dropout(attended, training=training)
        hidden = self.ff_out(self.ff_hidden(self.ff_norm(x)))
        x = x + self.dropout(hidden, training=training)
        if return_attention_scores:
            return x, scores
        return x

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "width": self.width,
            "num_heads": self.num_heads,
            "dropout": self.dropout_rate,
            "ff_multiplier": self.ff_multiplier,
        }


@keras.saving.register_keras_serializable(package=PACKAGE)
class FusionEncoder(layers.Layer):
    """Everything between the normalized inputs and the pooled fused vector.

    Holds the token embeddings and the cross-attention blocks of both
    directions. ``call(..., return_attention_scores=True)`` also returns a
    dict ``direction -> list of (batch, heads, query_tokens, key_tokens)``
    (one per depth level), which the analysis and logging tools use.
    """

    def __init__(
        self,
        width: int,
        num_heads: int,
        depth: int,
        dropout: float,
        ff_multiplier: int,
        fusion: str,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.config = ModelConfig(
            width=width,
            num_heads=num_heads,
            depth=depth,
            dropout=dropout,
            ff_multiplier=ff_multiplier,
            fusion=fusion,
        )
        cfg = self.config
        self.static_embedding = TokenEmbedding(cfg.width, name="static_embedding")
        self.dynamic_embedding = TokenEmbedding(cfg.width, name="dynamic_embedding")
        self.blocks = {
            direction: [
                CrossAttentionBlock(
                    cfg.width, cfg.num_heads, cfg.dropout, cfg.ff_multiplier, name=f"{direction}_{i}"
                )
                for i in range(cfg.depth)
            ]
            for direction in cfg.directions
        }
        self.final_norms = {
            stream: layers.LayerNormalization(epsilon=1e-6, name=f"{stream}_final_norm")
            for stream in ("static", "dynamic")
        }

    def build(self, static_shape: tuple, dynamic_shape: tuple) -> None:
        cfg = self.config
        self.static_embedding.build(static_shape)
        self.dynamic_embedding.build(dynamic_shape)
        s_shape = (*static_shape[:-1], cfg.width)
        d_shape = (*dynamic_shape[:-1], cfg.width)
        for block in self.blocks.get("static_to_dynamic", []):
            block.build(s_shape, d_shape)
        for block in self.blocks.get("dynamic_to_static", []):
            block.build(d_shape, s_shape)
        self.final_norms["static"].build(s_shape)
        self.final_norms["dynamic"].build(d_shape)

    def compute_output_shape(self, static_shape: tuple, dynamic_shape: tuple) -> tuple:
        streams = int(self.config.uses_static) + int(self.config.uses_dynamic)
        return (static_shape[0], streams * self.config.width)

    def call(
        self,
        static: Any,
        dynamic: Any,
        training: bool | None = None,
        return_attention_scores: bool = False,
    ) -> Any:
        cfg = self.config
        s = self.static_embedding(static)  # (batch, static_tokens, width)
        d = self.dynamic_embedding(dynamic)  # (batch, dynamic_tokens, width)
        scores: dict[str, list[Any]] = {direction: [] for direction in cfg.directions}
        for level in range(cfg.depth):
            s_in, d_in = s, d
            if "static_to_dynamic" in self.blocks:
                s, sc = self.blocks["static_to_dynamic"][level](
                    s_in, d_in, training=training, return_attention_scores=True
                )
                scores["static_to_dynamic"].append(sc)
            if "dynamic_to_static" in self.blocks:
                d, sc = self.blocks["dynamic_to_static"][level](
                    d_in, s_in, training=training, return_attention_scores=True
                )
                scores["dynamic_to_static"].append(sc)
        pooled = []
        if cfg.uses_static:
            pooled.append(ops.mean(self.final_norms["static"](s), axis=1))
        if cfg.uses_dynamic:
            pooled.append(ops.mean(self.final_norms["dynamic"](d), axis=1))
        fused = pooled[0] if len(pooled) == 1 else ops.concatenate(pooled, axis=-1)
        if return_attention_scores:
            return fused, scores
        return fused

    def get_config(self) -> dict[str, Any]:
        cfg = self.config
        return {
            **super().get_config(),
            "width": cfg.width,
            "num_heads": cfg.num_heads,
            "depth": cfg.depth,
            "dropout": cfg.dropout,
            "ff_multiplier": cfg.ff_multiplier,
            "fusion": cfg.fusion,
        }


@keras.saving.register_keras_serializable(package=PACKAGE)
class PooledQueryFusion(layers.Layer):
    """One query from the pooled static stream attends over the dynamic segments.

    ``q = W_q mean_t(static)`` (``num_heads`` heads of ``width / num_heads``);
    the key of dynamic segment ``t`` is a learned position code
    (``attention_keys="position"``), a projection of its content
    (``"content"``) or their sum (``"position+content"``); its value is a
    projection of its content. The attended vector (dropout) is concatenated
    with both pooled streams, so the pooled features reach the head whatever
    the attention does: the model contains an MLP on pooled features (the
    ``concat`` idea without per-token projections) and attention can only add
    to it. Position keys make "which segment matters for this clip" a
    second-order function of the inputs (static cue x segment content), which
    gradient descent finds at First Impressions sizes; content keys make it
    third order (``docs/accuracy.md``).

    ``flatten_static`` / ``flatten_dynamic``: the stream arrived as one pooled
    vector split into feature groups, so its pooled summary is the whole
    vector (the groups concatenated), not the mean of the groups.

    ``pooled_width``: the fused vector ends with ``W_s s + b_s`` and
    ``W_d d + b_d`` (``pooled_width`` each; layer-normalized with
    ``pooled_norm``), and :func:`build_model`
    feeds the hidden layer everything after the raw pooled streams
    (:meth:`raw_dims` columns) and the output layer's linear path everything
    before the projections (the raw streams, with the ridge start, and the
    attended vector). The hidden layer then sees the pooled
    streams through a factorized first layer; with the raw streams as its
    input it did not learn a low-rank static x dynamic product that the
    ``concat`` ablation learns (``docs/accuracy.md``). Fused layout:
    ``[s, d, attended, bilinear?, W_s s?, W_d d?]``.

    ``call(..., return_attention_scores=True)`` also returns
    ``{"static_to_dynamic": [(batch, heads, 1, dynamic_tokens)]}``, the shape
    the analysis and logging tools read from :class:`FusionEncoder`.
    """

    def __init__(
        self,
        width: int,
        num_heads: int,
        dropout: float,
        attention_keys: str = "position",
        flatten_static: bool = False,
        flatten_dynamic: bool = False,
        bilinear_rank: int = 0,
        pooled_width: int = 0,  # 0 for models saved before the option existed (they had no projections)
        pooled_norm: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.config = ModelConfig(
            width=width,
            num_heads=num_heads,
            dropout=dropout,
            fusion="pooled_query",
            attention_keys=attention_keys,
            bilinear_rank=bilinear_rank,
            pooled_width=pooled_width,
            pooled_norm=pooled_norm,
        )
        self.flatten_static = bool(flatten_static)
        self.flatten_dynamic = bool(flatten_dynamic)
        self.head_dim = self.config.width // self.config.num_heads
        self.query = layers.Dense(self.config.width, name="query")
        self.value = layers.Dense(self.config.width, name="value")
        self.content_key = (
            layers.Dense(self.config.width, name="content_key")
            if "content" in self.config.attention_keys
            else None
        )
        self.dropout = layers.Dropout(self.config.dropout)
        rank = self.config.bilinear_rank
        self.bilinear = (
            (layers.Dense(rank, use_bias=False, name="bilinear_static"),
             layers.Dense(rank, use_bias=False, name="bilinear_dynamic"))
            if rank
            else None
        )
        self.projections = (
            {
                stream: (
                    layers.Dense(pooled_width, name=f"{stream}_projection"),
                    layers.LayerNormalization(epsilon=1e-6, name=f"{stream}_projection_norm")
                    if pooled_norm
                    else layers.Identity(name=f"{stream}_projection_identity"),
                )
                for stream in ("static", "dynamic")
            }
            if pooled_width
            else {}
        )

    def build(self, static_shape: tuple, dynamic_shape: tuple) -> None:
        for stream, shape, flatten in (
            ("static", static_shape, self.flatten_static),
            ("dynamic", dynamic_shape, self.flatten_dynamic),
        ):
            if stream in self.projections:
                dense, norm = self.projections[stream]
                dense.build((shape[0], self._summary_dim(shape, flatten)))
                norm.build((shape[0], self.config.pooled_width))
        self.query.build((static_shape[0], self._summary_dim(static_shape, self.flatten_static)))
        if self.bilinear is not None:
            self.bilinear[0].build((static_shape[0], self._summary_dim(static_shape, self.flatten_static)))
            self.bilinear[1].build((dynamic_shape[0], self._summary_dim(dynamic_shape, self.flatten_dynamic)))
        self.value.build(dynamic_shape)
        if self.content_key is not None:
            self.content_key.build(dynamic_shape)
        if "position" in self.config.attention_keys:
            self.position_key = self.add_weight(
                name="position_key",
                shape=(int(dynamic_shape[1]), self.config.num_heads, self.head_dim),
                # Unit scale: the untrained attention is already uneven over the segments, so the
                # query gets a gradient from the first step. At 1 / sqrt(head_dim) it starts nearly
                # uniform and training sat on that saddle past early stopping (docs/accuracy.md).
                initializer=keras.initializers.RandomNormal(stddev=1.0),
            )

    @staticmethod
    def _summary_dim(shape: tuple, flatten: bool) -> int:
        return int(shape[-2]) * int(shape[-1]) if flatten else int(shape[-1])

    def _summary(self, tokens: Any, flatten: bool) -> Any:
        if flatten:
            return ops.reshape(tokens, (-1, int(tokens.shape[1]) * int(tokens.shape[2])))
        return ops.mean(tokens, axis=1)

    def compute_output_shape(self, static_shape: tuple, dynamic_shape: tuple) -> tuple:
        dims = self.raw_dims(static_shape, dynamic_shape)
        return (static_shape[0], dims + self.config.width + self.config.bilinear_rank + 2 * self.config.pooled_width)

    def raw_dims(self, static_shape: tuple, dynamic_shape: tuple) -> int:
        """Leading columns of the fused vector that hold the two pooled streams as they are.

        Per-sample or batched shapes of the token inputs.
        """
        return self._summary_dim(static_shape, self.flatten_static) + self._summary_dim(
            dynamic_shape, self.flatten_dynamic
        )

    def _logits(self, query: Any, dynamic: Any) -> Any:
        """``(batch, heads, tokens)`` scores of the query against each segment's key."""
        heads, tokens = self.config.num_heads, int(dynamic.shape[1])
        logits = 0.0
        if self.content_key is not None:
            keys = ops.reshape(self.content_key(dynamic), (-1, tokens, heads, self.head_dim))
            logits = logits + ops.einsum("bhd,bthd->bht", query, keys)
        if "position" in self.config.attention_keys:
            logits = logits + ops.einsum("bhd,thd->bht", query, self.position_key)
        return logits / float(self.head_dim) ** 0.5

    def call(
        self,
        static: Any,
        dynamic: Any,
        training: bool | None = None,
        return_attention_scores: bool = False,
    ) -> Any:
        heads, tokens = self.config.num_heads, int(dynamic.shape[1])
        static_summary = self._summary(static, self.flatten_static)  # (batch, D_s or T_s * D_s)
        dynamic_summary = self._summary(dynamic, self.flatten_dynamic)
        query = ops.reshape(self.query(static_summary), (-1, heads, self.head_dim))
        values = ops.reshape(self.value(dynamic), (-1, tokens, heads, self.head_dim))
        weights = ops.softmax(self._logits(query, dynamic), axis=-1)  # (batch, heads, tokens)
        attended = ops.reshape(ops.einsum("bht,bthd->bhd", weights, values), (-1, self.config.width))
        parts = [static_summary, dynamic_summary, self.dropout(attended, training=training)]
        if self.bilinear is not None:
            # low-rank bilinear pooling: products of static and dynamic projections
            parts.append(self.bilinear[0](static_summary) * self.bilinear[1](dynamic_summary))
        for stream, summary in (("static", static_summary), ("dynamic", dynamic_summary)):
            if stream in self.projections:
                # a learned low-dimensional view of the pooled stream for the hidden layer (see build_model)
                dense, norm = self.projections[stream]
                parts.append(norm(dense(summary)))
        fused = ops.concatenate(parts, axis=-1)
        if return_attention_scores:
            return fused, {"static_to_dynamic": [weights[:, :, None, :]]}
        return fused

    def get_config(self) -> dict[str, Any]:
        cfg = self.config
        return {
            **super().get_config(),
            "width": cfg.width,
            "num_heads": cfg.num_heads,
            "dropout": cfg.dropout,
            "attention_keys": cfg.attention_keys,
            "flatten_static": self.flatten_static,
            "flatten_dynamic": self.flatten_dynamic,
            "bilinear_rank": cfg.bilinear_rank,
            "pooled_width": cfg.pooled_width,
            "pooled_norm": cfg.pooled_norm,
        }


def fusion_layer(config: ModelConfig, static_shape: tuple[int, ...], dynamic_shape: tuple[int, ...]) -> layers.Layer:
    """The ``fusion`` layer of ``config.fusion`` for per-sample input shapes."""
    if config.fusion == "pooled_query":
        return PooledQueryFusion(
            width=config.width,
            num_heads=config.num_heads,
            dropout=config.dropout,
            attention_keys=config.attention_keys,
            flatten_static=len(static_shape) == 1,
            flatten_dynamic=len(dynamic_shape) == 1,
            bilinear_rank=config.bilinear_rank,
            pooled_width=config.pooled_width,
            pooled_norm=config.pooled_norm,
            name="fusion",
        )
    return FusionEncoder(
        width=config.width,
        num_heads=config.num_heads,
        depth=config.depth,
        dropout=config.dropout,
        ff_multiplier=config.ff_multiplier,
        fusion=config.fusion,
        name="fusion",
    )


def build_model(
    config: ModelConfig,
    static_shape: tuple[int, ...],
    dynamic_shape: tuple[int, ...],
    static_stats: tuple[np.ndarray, np.ndarray] | None = None,
    dynamic_stats: tuple[np.ndarray, np.ndarray] | None = None,
    output_prior: np.ndarray | None = None,
    skip_kernel: np.ndarray | None = None,
) -> keras.Model:
    """Build the functional fusion model.

    ``static_shape``/``dynamic_shape`` are per-sample shapes, ``(D,)`` for a
    pooled vector or ``(T, D)`` for a token sequence. ``*_stats`` are the
    per-feature ``(mean, variance)`` of the training split; they are frozen
    into the normalization layers (identity when omitted). ``output_prior``
    (the training-label means) initializes the output bias to their logit and
    the output kernel is zero, so training starts from the mean predictor
    (R² = 0 on the training split) instead of noisy guesses around 0.5.
    ``skip_kernel`` (with ``config.head_skip``): initial output-kernel rows for
    the first columns of the fused vector, e.g. the ridge warm start of
    :func:`models.linear_init.pooled_ridge_kernel` for ``pooled_query``.
    """
    inputs, tokens = _input_stage(config, static_shape, dynamic_shape, static_stats, dynamic_stats)
    fusion = fusion_layer(config, static_shape, dynamic_shape)
    fused = fusion(tokens["static"], tokens["dynamic"])
    if config.fused_dropout:
        fused = layers.Dropout(config.fused_dropout, name="fused_dropout")(fused)
    hidden_input = linear_input = fused
    if isinstance(fusion, PooledQueryFusion) and config.pooled_width:
        # The hidden layer reads the attended vector and the learned projections of the pooled streams;
        # the linear path reads the raw pooled streams and the attended vector. The factorized first
        # layer is what lets the hidden layer find a low-rank static x dynamic product among many input
        # directions (docs/accuracy.md, "pooled projections").
        width = int(fused.shape[-1])
        raw = fusion.raw_dims(tokens["static"].shape, tokens["dynamic"].shape)
        hidden_input = ColumnSlice(raw, name="head_input")(fused)
        linear_input = ColumnSlice(0, width - 2 * config.pooled_width, name="linear_input")(fused)
    outputs = _head(config, hidden_input, linear_input, output_prior, skip_kernel)
    return keras.Model(
        inputs=[inputs["static"], inputs["dynamic"]],
        outputs=outputs,
        name=f"personality_{config.fusion}",
    )


def _input_stage(
    config: ModelConfig,
    static_shape: tuple[int, ...],
    dynamic_shape: tuple[int, ...],
    static_stats: tuple[np.ndarray, np.ndarray] | None,
    dynamic_stats: tuple[np.ndarray, np.ndarray] | None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The two ``keras.Input``s and their frozen-normalized tokens (pooled vectors split into groups)."""
    inputs = {}
    tokens = {}
    for stream, shape, stats in (
        ("static", static_shape, static_stats),
        ("dynamic", dynamic_shape, dynamic_stats),
    ):
        x = inputs[stream] = keras.Input(shape=tuple(shape), name=f"{stream}_features")
        dim = int(shape[-1])
        mean, var = stats if stats is not None else (np.zeros(dim), np.ones(dim))
        norm = layers.Normalization(
            axis=-1, mean=np.asarray(mean), variance=np.asarray(var), name=f"{stream}_normalization"
        )
        norm.trainable = False  # frozen feature stage
        x = norm(x)
        if len(shape) == 1:
            x = SplitIntoTokens(config.pooled_tokens, name=f"{stream}_tokens")(x)
        tokens[stream] = x
    return inputs, tokens


def _head(
    config: ModelConfig,
    hidden_input: Any,
    linear_input: Any,
    output_prior: np.ndarray | None,
    skip_kernel: np.ndarray | None,
) -> Any:
    """The hidden GELU layer and the five sigmoid outputs, which with ``head_skip`` also read ``linear_input``."""
    x = layers.Dense(config.head_units, activation="gelu", name="head_hidden")(hidden_input)
    x = layers.Dropout(config.dropout, name="head_dropout")(x)
    if config.head_skip:
        # the output also reads linear_input directly: a linear model is a special case
        x = layers.Concatenate(name="head_skip")([x, linear_input])
    bias = "zeros"
    if output_prior is not None:
        p = np.clip(np.asarray(output_prior, dtype="float64"), 1e-3, 1 - 1e-3)
        bias = keras.initializers.Constant(np.log(p / (1 - p)))
    # Zero kernel: the untrained model predicts exactly the prior (the mean predictor),
    # or, with a skip kernel, the linear model it holds.
    kernel: Any = "zeros"
    if skip_kernel is not None and config.head_skip:
        rows = np.zeros((int(x.shape[-1]), NUM_TRAITS), dtype="float32")
        skip = np.asarray(skip_kernel, dtype="float32")
        if skip.ndim != 2 or skip.shape[1] != NUM_TRAITS or skip.shape[0] > int(linear_input.shape[-1]):
            raise ValueError(f"skip_kernel must be (at most {int(linear_input.shape[-1])}, {NUM_TRAITS}), got {skip.shape}")
        rows[config.head_units : config.head_units + skip.shape[0]] = skip
        kernel = keras.initializers.Constant(rows)
    return layers.Dense(
        NUM_TRAITS, activation="sigmoid", kernel_initializer=kernel, bias_initializer=bias, name="traits",
        dtype="float32",  # predictions, loss and metrics stay float32 under mixed precision (utils.devices)
    )(x)


def build_model_for_data(
    config: ModelConfig, static: Any, dynamic: Any, labels: np.ndarray, train_idx: np.ndarray
) -> keras.Model:
    """:func:`build_model` with everything taken from the training rows ``train_idx``.

    The frozen normalization statistics, the output prior (training-label
    means) and, for ``pooled_query`` with ``head_skip``, the ridge warm start
    of the output layer's linear path (:func:`models.linear_init.pooled_ridge_kernel`).
    The arrays may be memory-mapped; they are read in chunks.
    """
    from models.linear_init import pooled_ridge_kernel
    from models.moment_init import apply_moment_start, moment_start
    from utils.data import feature_statistics, label_means

    train_idx = np.asarray(train_idx)
    static_stats = feature_statistics(static, train_idx)
    dynamic_stats = feature_statistics(dynamic, train_idx)
    skip_kernel = start = None
    if config.fusion == "pooled_query" and config.head_skip and config.ridge_warm_start:
        if config.moment_start:
            start = moment_start(
                static, dynamic, labels, train_idx, static_stats, dynamic_stats,
                width=config.width, head_dim=config.width // config.num_heads, bilinear_rank=config.bilinear_rank,
                attention=config.attention_keys == "position",
            )
        skip_kernel = (
            start.skip_kernel if start is not None
            else pooled_ridge_kernel(static, dynamic, labels, train_idx, static_stats, dynamic_stats)
        )
    model = build_model(
        config,
        tuple(static.shape[1:]),
        tuple(dynamic.shape[1:]),
        static_stats=static_stats,
        dynamic_stats=dynamic_stats,
        output_prior=label_means(labels, train_idx),
        skip_kernel=skip_kernel,
    )
    if start is not None:
        apply_moment_start(model, start)
    return model


def fusion_tokens_model(model: keras.Model) -> keras.Model:
    """Sub-model from the raw inputs to the two token tensors the fusion layer sees."""
    fusion = model.get_layer("fusion")
    node_inputs = fusion._inbound_nodes[0].input_tensors
    return keras.Model(model.inputs, list(node_inputs))


def attention_scores(
    model: keras.Model, static: np.ndarray, dynamic: np.ndarray, batch_size: int = 64
) -> dict[str, np.ndarray]:
    """Attention probabilities of every block, computed in inference mode.

    Returns ``"<direction>_<level>" -> (N, heads, query_tokens, key_tokens)``;
    empty for fusion modes without attention.
    """
    fusion = model.get_layer("fusion")
    if not fusion.config.directions:
        return {}
    to_tokens = fusion_tokens_model(model)
    collected: dict[str, list[np.ndarray]] = {}
    for start in range(0, len(static), batch_size):
        s_tok, d_tok = to_tokens(
            [np.asarray(static[start : start + batch_size], dtype="float32"),
             np.asarray(dynamic[start : start + batch_size], dtype="float32")],
            training=False,
        )
        _, scores = fusion(s_tok, d_tok, training=False, return_attention_scores=True)
        for direction, levels in scores.items():
            for level, value in enumerate(levels):
                collected.setdefault(f"{direction}_{level}", []).append(
                    keras.ops.convert_to_numpy(value)
                )
    return {key: np.concatenate(parts) for key, parts in collected.items()}


def attention_entropy(scores: np.ndarray) -> np.ndarray:
    """Mean entropy (nats) per head of ``(N, heads, q, k)`` attention maps -> ``(heads,)``.

    ``log(k)`` means uniform attention; 0 means collapse onto one key.
    """
    p = np.clip(scores.astype("float64"), 1e-12, 1.0)
    return -(p * np.log(p)).sum(axis=-1).mean(axis=(0, 2))


def parameter_counts(model: keras.Model) -> dict[str, int]:
    """Trainable and frozen (non-trainable) parameter counts."""
    trainable = int(sum(np.prod(w.shape) for w in model.trainable_weights))
    frozen = int(sum(np.prod(w.shape) for w in model.non_trainable_weights))
    return {"trainable": trainable, "frozen": frozen, "total": trainable + frozen}
