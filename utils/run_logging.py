"""Phase 4.3 training-system logging (stub: filled in by the logging issue).

:class:`RunLogger` is the single hook :func:`utils.training.run_training`
calls: ``start()`` before ``fit``, ``callbacks()`` placed right after the
epoch-context callback (so keys they add to ``logs`` reach the history,
TensorBoard and wandb), ``finish()`` after the run ends (also on failure).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


class RunLogger:
    def __init__(self, cfg: Any, prep: Any, model: Any, output_dir: Path) -> None:
        self.cfg = cfg
        self.prep = prep
        self.model = model
        self.output_dir = Path(output_dir)

    def start(self) -> None:
        """Called once before ``fit`` (after the output folder exists)."""

    def callbacks(self, train_batches: Any, val_batches: Any) -> list[Any]:
        """Keras callbacks that run before every other callback but the epoch context."""
        return []

    def wandb_config(self) -> dict[str, Any]:
        """Extra entries for the wandb run config."""
        return {}

    def finish(self, status: str, result: Any = None) -> None:
        """Called once after ``fit``: status is "completed" or the reason it stopped."""
