"""Probe: which head input lets the default model learn the pooled static x dynamic product (issue 11).

``python experiments/product_probe.py VARIANT SET N SEED [SEED ...]``

The default model as it was before this probe (``ModelConfig(pooled_width=0)``: the hidden layer
reads ``[s, d, attended]``, the ridge-started linear path reads the same) rewired so
that its hidden layer reads other things; the output layer's linear path
keeps the raw pooled streams and their ridge start. Same data, split,
optimizer, callbacks and epoch-0 rule as the capability suite's networks
(``utils.capability.fit_network``, whose model builder is swapped here).
Prints one JSON line per run.

Variants (what the hidden layer reads; the skip path always reads the default fused vector):

* ``default``: that fused vector ``[s, d, attended]``;
* ``proj_add``: that plus ``LN(P_s s)`` and ``LN(P_d d)`` (learned projections to ``width``);
* ``proj_only``: ``[LN(P_s s), LN(P_d d), attended]`` (what became the default: ``pooled_width=64``);
* ``proj_nonorm``: ``[P_s s, P_d d, attended]`` (no LayerNorm);
* ``proj_noatt``: ``[LN(P_s s), LN(P_d d)]`` (the attended vector reaches the output through the linear path only);
* ``concat_enc``: the ``concat`` ablation's fused vector (token projections with position
  embeddings, per-token LayerNorm, mean) plus ``attended``.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

LARGEST = 6000
VARIANTS = ("default", "proj_add", "proj_only", "proj_nonorm", "proj_noatt", "concat_enc")


def rewired(model, variant: str, width: int = 64):
    import keras
    from keras import layers

    from models.cross_attention import FusionEncoder, fusion_tokens_model

    if variant == "default":
        return model
    fusion = model.get_layer("fusion")
    s_tok, d_tok = fusion_tokens_model(model)(model.inputs)
    fused = fusion(s_tok, d_tok)
    n_s = fusion._summary_dim(s_tok.shape, fusion.flatten_static)
    n_d = fusion._summary_dim(d_tok.shape, fusion.flatten_dynamic)
    s_sum, d_sum = fused[:, :n_s], fused[:, n_s : n_s + n_d]
    attended = fused[:, n_s + n_d :]
    if variant == "concat_enc":
        enc = FusionEncoder(width=width, num_heads=4, depth=1, dropout=0.1, ff_multiplier=2, fusion="concat",
                            name="concat_encoder")
        hidden_in = layers.Concatenate()([enc(s_tok, d_tok), attended])
    else:
        ps, pd = layers.Dense(width)(s_sum), layers.Dense(width)(d_sum)
        if variant != "proj_nonorm":
            ps = layers.LayerNormalization(epsilon=1e-6)(ps)
            pd = layers.LayerNormalization(epsilon=1e-6)(pd)
        parts = {"proj_add": [fused, ps, pd], "proj_noatt": [ps, pd]}.get(variant, [ps, pd, attended])
        hidden_in = layers.Concatenate()(parts)
    old_hidden = model.get_layer("head_hidden")
    x = layers.Dense(old_hidden.units, activation="gelu", name="head_hidden")(hidden_in)
    x = layers.Dropout(model.get_layer("head_dropout").rate)(x)
    x = layers.Concatenate()([x, fused])
    kernel, bias = model.get_layer("traits").get_weights()
    out = layers.Dense(5, activation="sigmoid", dtype="float32", name="traits")
    y = out(x)
    new = keras.Model(model.inputs, y)
    out.set_weights([kernel, bias])  # same layout: hidden units then the fused vector (ridge rows)
    return new


def run_probe(argv: list[str], variants: tuple[str, ...], build) -> int:
    """``VARIANT SET N SEED [SEED ...]``: train ``build(config, arrays, labels, rows, variant)`` as the suite does.

    Shared by the probe scripts in this folder; prints one JSON line per seed.
    """
    variant, set_name, n, seeds = argv[0], argv[1], int(argv[2]), [int(s) for s in argv[3:]]
    if variant not in variants:
        raise SystemExit(f"variant must be one of {variants}")
    import keras

    import utils.capability as cap
    from utils.synthetic import generate

    def compiled(config, arrays, labels, rows, fit):
        model = build(config, arrays, labels, rows, variant)
        model.compile(optimizer=keras.optimizers.AdamW(learning_rate=fit.learning_rate, weight_decay=fit.weight_decay),
                      loss=keras.losses.MeanSquaredError(), jit_compile=fit.jit_compile)
        return model

    cap._compiled_model = compiled
    for seed in seeds:
        data = generate(cap.suite_spec(set_name, LARGEST + 2000, seed))
        row = cap.fit_network("pooled_query", data, np.arange(n), np.arange(LARGEST, LARGEST + 2000), seed, cap.FitSettings())
        print(json.dumps({"variant": variant, "set": set_name, "n": n, "seed": seed, "r2": round(row["r2"]["mean"], 4),
                          "train_r2": round(row["train_r2"], 4), "best_epoch": row["best_epoch"], "epochs": row["epochs"],
                          "seconds": row["seconds"]}), flush=True)
    return 0


def build(config, arrays, labels, rows, variant):
    from models.cross_attention import build_model_for_data

    # the default model as it was before this probe (the hidden layer reads the raw pooled streams)
    config = dataclasses.replace(config, pooled_width=0)
    return rewired(build_model_for_data(config, arrays["static"], arrays["dynamic"], labels, rows), variant)


def main(argv: list[str]) -> int:
    return run_probe(argv, VARIANTS, build)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
