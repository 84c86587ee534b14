"""One run per output folder: an earlier run is archived whole before a new one starts.

A new training run into a folder that holds an earlier run's files moves
every file and folder the toolkit writes (model, checkpoint, history,
TensorBoard logs, run logs, figures, analysis, wandb files, resume state)
into ``previous_runs/<timestamp>/`` (``constants.ARCHIVE_DIR``) first, so the folder never mixes two runs
and nothing is deleted. ``--resume`` continues the run in place instead.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

from utils import constants as C

logger = logging.getLogger(__name__)




def run_entries(output_dir: Path, model_path: Path | None = None) -> list[Path]:
    """The toolkit-owned files and folders of the run in ``output_dir`` that exist."""
    entries = {output_dir / n for n in C.RUN_OUTPUT_NAMES}
    if model_path is not None:
        entries.add(model_path)
    summary = output_dir / C.TRAINING_SUMMARY_FILE
    if summary.is_file():  # the earlier run may have used another --output name
        try:
            earlier = json.loads(summary.read_text(encoding="utf-8"))["config"]["output"]
            entries.add(Path(earlier))
        except (ValueError, KeyError, TypeError):
            pass
    return sorted(p for p in entries if p.exists() and p.parent.resolve() == output_dir.resolve())


def archive_previous_run(output_dir: Path, model_path: Path) -> Path | None:
    """Move an earlier run out of the way; return the archive folder (None if there was none)."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return None
    entries = run_entries(output_dir, Path(model_path))
    if not entries:
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(max(p.stat().st_mtime for p in entries)))
    target = output_dir / C.ARCHIVE_DIR / stamp
    n = 1
    while target.exists():
        n += 1
        target = output_dir / C.ARCHIVE_DIR / f"{stamp}-{n}"
    target.mkdir(parents=True)
    for entry in entries:
        os.replace(entry, target / entry.name)  # same file system: a rename, nothing copied
    logger.info("An earlier run in %s was moved to %s", output_dir, target)
    return target
