"""The plain Keras script the training script is measured against (issue 13).

``python -m benchmarks.plain_keras MODEL.keras DATA_DIR OUT.h5 EPOCHS BATCH [--jit auto|on|off] [--spe K]``

What a researcher writes by hand: load the saved (untrained) model, load the
three ``.npy`` files into memory, hold out the same validation share the
toolkit does (the last 20% of a seeded permutation), compile with Keras'
defaults (``Adam``, MSE, no metrics, ``jit_compile="auto"``, one step per
call), ``fit`` with validation data, save an ``.h5``. ``--jit``/``--spe``
give it the training script's compile options (the like-for-like variant).
Timed as a whole process by :mod:`benchmarks.runner` (start-up and
compilation included), so nothing in here measures itself.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    model_path, data_dir, out, epochs, batch = args[:5]
    options = dict(zip(args[5::2], args[6::2]))
    jit = {"auto": "auto", "on": True, "off": False}[options.get("--jit", "auto")]
    spe = int(options.get("--spe", 1))

    import keras
    import numpy as np

    import models.cross_attention  # noqa: F401  (registers the model's custom layers for loading)

    static = np.load(os.path.join(data_dir, "static_features.npy"))
    dynamic = np.load(os.path.join(data_dir, "dynamic_features.npy"))
    labels = np.load(os.path.join(data_dir, "labels.npy"))
    order = np.random.default_rng(42).permutation(len(labels))
    n_val = int(round(0.2 * len(labels)))
    tr, va = order[n_val:], order[:n_val]
    keras.utils.set_random_seed(42)
    model = keras.models.load_model(model_path, compile=False)
    model.compile(optimizer="adam", loss="mse", jit_compile=jit, steps_per_execution=spe)
    model.fit(
        [static[tr], dynamic[tr]],
        labels[tr],
        validation_data=([static[va], dynamic[va]], labels[va]),
        batch_size=int(batch),
        epochs=int(epochs),
    )
    model.save(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
