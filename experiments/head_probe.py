"""Probe: variants of the default model's head after the pooled projections (issue 11).

``python experiments/head_probe.py VARIANT SET N SEED [SEED ...]``

The default model (``ModelConfig()``: the hidden layer reads ``[attended, LN(P_s s), LN(P_d d)]``,
the ridge-started linear path reads ``[s, d, attended]``) and variants of it, trained exactly as the
capability suite trains its networks (``utils.capability.fit_network``, whose model builder is
swapped here; same data, split, optimizer, callbacks, epoch-0 rule). Prints one JSON line per run.

Variants:

* ``default``: ``ModelConfig()`` as it is;
* ``frozen_linear``: the linear path keeps its ridge start (not trained); only the hidden path and
  the output bias train (Adam moves every weight by about the learning rate per step, whatever its
  gradient, so a trained linear path drifts from ridge from the first step);
* ``tokenwise``: the hidden layer reads the ``concat`` ablation's fused vector (each token
  projected with position embeddings, per-token LayerNorm, mean per stream) and the attended vector
  instead of projections of the pooled streams.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

VARIANTS = ("default", "frozen_linear", "tokenwise")


def rewired(model, variant: str):
    import keras
    from keras import layers

    from models.cross_attention import ColumnSlice, FusionEncoder, fusion_tokens_model

    if variant == "default":
        return model
    hidden_in = model.get_layer("head_input").output
    linear_in = model.get_layer("linear_input").output
    kernel, bias = model.get_layer("traits").get_weights()
    units = model.get_layer("head_hidden").units
    if variant == "tokenwise":
        s_tok, d_tok = fusion_tokens_model(model)(model.inputs)
        enc = FusionEncoder(width=64, num_heads=4, depth=1, dropout=0.1, ff_multiplier=2, fusion="concat",
                            name="concat_encoder")
        fusion = model.get_layer("fusion")
        attended_width = fusion.config.width
        n_raw = int(linear_in.shape[-1]) - attended_width
        attended = ColumnSlice(n_raw)(linear_in)
        hidden_in = layers.Concatenate()([enc(s_tok, d_tok), attended])
        x = layers.Dense(units, activation="gelu")(hidden_in)
        x = layers.Dropout(model.get_layer("head_dropout").rate)(x)
        out = layers.Dense(5, activation="sigmoid", dtype="float32", name="traits")
        y = out(layers.Concatenate()([x, linear_in]))
        new = keras.Model(model.inputs, y)
        out.set_weights([kernel, bias])
        return new
    # frozen_linear: logits = frozen linear path (ridge start, no bias) + trainable hidden path (with the bias)
    hidden = model.get_layer("head_dropout").output
    linear = layers.Dense(5, use_bias=False, trainable=False, name="traits_linear")
    residual = layers.Dense(5, name="traits_hidden")
    logits = layers.Add()([linear(linear_in), residual(hidden)])
    y = layers.Activation("sigmoid", dtype="float32", name="traits")(logits)
    new = keras.Model(model.inputs, y)
    linear.set_weights([kernel[units:]])
    residual.set_weights([kernel[:units], bias])
    return new


def build(config, arrays, labels, rows, variant):
    from models.cross_attention import build_model_for_data

    return rewired(build_model_for_data(config, arrays["static"], arrays["dynamic"], labels, rows), variant)


def main(argv: list[str]) -> int:
    from experiments.product_probe import run_probe

    return run_probe(argv, VARIANTS, build)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
