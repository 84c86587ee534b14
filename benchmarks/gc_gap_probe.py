"""Time from each epoch's start to its first step, with Python's garbage collector on, off or frozen.

``python -m benchmarks.gc_gap_probe DATA_DIR MODE...`` with MODE in counter (the toolkit's pipeline and
epoch counter, automatic collection on), none (no epoch counter), noval (no validation), gcoff
(collector disabled during fit), gcfreeze (``gc.freeze()`` before fit). Five epochs each, one process;
prints ``MODE epoch_start SECONDS`` per epoch (docs/performance.md, item 7 of "Where the time goes").
"""
import sys, time
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import numpy as np, keras
from utils import training
from utils.config import TrainConfig
from utils.data import make_tf_dataset, EpochBatches
D = sys.argv[1].rstrip("/") + "/"
cfg = TrainConfig.from_dict(dict(static_features=D+"static_features.npy", dynamic_features=D+"dynamic_features.npy",
      labels=D+"labels.npy", output="/tmp/gc_gap_probe/model.h5", batch_size=32, epochs=6))
prep = training.prepare(cfg)
class Gap(keras.callbacks.Callback):
    def on_epoch_begin(self, e, logs=None): self.t = time.perf_counter(); self.first = True
    def on_train_batch_begin(self, b, logs=None):
        if self.first: print(MODE, "epoch_start", round(time.perf_counter() - self.t, 3), flush=True); self.first = False
for MODE in sys.argv[2:]:
    training.set_determinism(42)
    tb = EpochBatches(prep.train_idx, 32, True, 42)
    model = training.build_compiled_model(cfg, prep, len(tb))
    ep = (lambda: training.epoch_from_step_counter(model, len(tb))) if MODE in ("counter", "gcfreeze", "gcoff") else None
    ds = make_tf_dataset(prep.data, tb, epoch=ep)
    vds = make_tf_dataset(prep.data, EpochBatches(prep.val_idx, 32, False, 42)) if MODE != "noval" else None
    import gc
    if MODE == "gcfreeze": gc.collect(); gc.freeze()
    if MODE == "gcoff": gc.disable()
    model.fit(ds, validation_data=vds, epochs=5, verbose=0, callbacks=[Gap()])
    gc.enable()
