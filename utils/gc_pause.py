"""Python's cyclic garbage collector during ``fit``: paused, and run between epochs at a bounded share of the time.

With automatic collection on, a full collection over the many Python objects
of TensorFlow and Keras lands at an epoch start and holds the next step for
0.3 to 1.2 s (measured on the end-to-end benchmark's data, docs/performance.md:
epoch start 0.01 to 0.16 s with the collector paused, up to 1.2 s with it on),
on epochs of about half a second. :class:`CollectBetweenEpochs` pauses
automatic collection for the run and collects at an epoch end only when the
training time since the last collection is at least ``1 / max_share`` times
what that collection cost, so collecting takes at most ``max_share`` of the
run and cyclic garbage is still freed regularly (reference counting frees
everything else at once, as always).

At the start of ``fit`` the objects alive then (the imported modules, the
built model: hundreds of thousands) are moved to the collector's permanent
generation (``gc.freeze``), so each collection between epochs scans only what
training created since; ``fit``'s end unfreezes them.
"""

from __future__ import annotations

import gc
from time import perf_counter
from typing import Any

import keras

MAX_SHARE = 0.05  # collections take at most 5% of the training time


class CollectBetweenEpochs(keras.callbacks.Callback):
    """Pause automatic garbage collection during ``fit``; collect between epochs within ``max_share``."""

    def __init__(self, max_share: float = MAX_SHARE) -> None:
        super().__init__()
        self.max_share = float(max_share)
        self.was_enabled: bool | None = None
        self.collections = 0
        self._last = 0.0
        self._cost = 0.0
        self._frozen = False

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.was_enabled = gc.isenabled()
        gc.disable()
        gc.freeze()  # what exists before fit is not rescanned by every collection during it
        self._frozen = True
        self._last = perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if perf_counter() - self._last < self._cost / self.max_share:
            return
        start = perf_counter()
        gc.collect()
        self.collections += 1
        self._last = perf_counter()
        self._cost = self._last - start

    def on_train_end(self, logs: dict | None = None) -> None:
        self.restore()

    def restore(self, *_: Any) -> None:
        """Automatic collection back as it was (also called when ``fit`` ends with an exception)."""
        if self._frozen:
            gc.unfreeze()
            self._frozen = False
        if self.was_enabled:
            gc.enable()
        self.was_enabled = None


__all__ = ["CollectBetweenEpochs", "MAX_SHARE"]
