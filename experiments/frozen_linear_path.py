"""Probe: the default model with its ridge-started linear path frozen, so training only learns a residual.

``python experiments/frozen_linear_path.py SET N SEED [SET N SEED ...]``

Same data, split, optimizer, callbacks and epoch-0 rule as the capability
suite's networks (utils.capability.fit_network); prints one JSON line per run
with the test R² and the suite's ridge rows for the same (set, N, seed).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

LARGEST = 6000  # the suite run's largest N: its data set has LARGEST + 2000 clips, the last 2000 for testing


def frozen_variant(model):
    """The built default model, rewired: logits = frozen linear path (ridge start) + trainable residual head."""
    import keras
    from keras import layers

    skip = model.get_layer("head_skip")
    hidden, fused = skip.input
    kernel, bias = model.get_layer("traits").get_weights()
    n_hidden = int(hidden.shape[-1])
    linear = layers.Dense(5, name="traits_linear", trainable=False)
    residual = layers.Dense(5, name="traits_residual", kernel_initializer="zeros")
    logits = layers.Add()([linear(fused), residual(hidden)])
    out = layers.Activation("sigmoid", dtype="float32", name="traits")(logits)
    new = keras.Model(model.inputs, out)
    linear.set_weights([kernel[n_hidden:], bias])
    return new


def run(set_name: str, n: int, seed: int) -> dict:
    import keras

    from models.config import ModelConfig
    from models.cross_attention import build_model_for_data
    from utils.capability import FitSettings, _r2, suite_spec
    from utils.data import split_indices
    from utils.synthetic import generate

    fit = FitSettings()
    data = generate(suite_spec(set_name, LARGEST + 2000, seed))  # the suite's data: sizes 2000 and 6000
    train_rows, test_rows = np.arange(n), np.arange(LARGEST, LARGEST + 2000)
    keras.utils.set_random_seed(seed)
    inner_train, inner_val = split_indices(len(train_rows), fit.val_fraction, seed)
    tr, va = train_rows[inner_train], train_rows[inner_val]
    s, d = (np.asarray(getattr(data, k), dtype="float32") for k in ("static", "dynamic"))
    model = frozen_variant(build_model_for_data(ModelConfig(), s, d, data.labels, tr))
    model.compile(optimizer=keras.optimizers.AdamW(fit.learning_rate, weight_decay=fit.weight_decay), loss="mse")
    validation = ([s[va], d[va]], data.labels[va])
    start_loss = float(model.evaluate(*validation, batch_size=fit.batch_size, verbose=0))
    start_weights = model.get_weights()
    cbs = [keras.callbacks.EarlyStopping(patience=fit.patience, restore_best_weights=True, baseline=start_loss),
           keras.callbacks.ReduceLROnPlateau(factor=fit.lr_factor, patience=fit.lr_patience, min_lr=fit.min_lr)]
    t = time.perf_counter()
    h = model.fit([s[tr], d[tr]], data.labels[tr], validation_data=validation, batch_size=fit.batch_size,
                  epochs=fit.max_epochs, callbacks=cbs, verbose=0)
    val = h.history["val_loss"]
    best = int(np.argmin(val)) + 1
    if not min(val) < start_loss:
        model.set_weights(start_weights)
        best = 0
    pred = model.predict([s[test_rows], d[test_rows]], verbose=0)
    keras.backend.clear_session()
    return {"set": set_name, "n": n, "seed": seed, "variant": "frozen_linear", "r2": _r2(data.labels[test_rows], pred)["mean"],
            "best_epoch": best, "epochs": len(val), "seconds": round(time.perf_counter() - t, 1)}


if __name__ == "__main__":
    args = sys.argv[1:]
    for i in range(0, len(args), 3):
        print(json.dumps(run(args[i], int(args[i + 1]), int(args[i + 2]))), flush=True)
