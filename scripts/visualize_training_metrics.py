#!/usr/bin/env python
"""Plot the training curves of a run from its saved history.

Example (the seed's command)::

    python scripts/visualize_training_metrics.py \\
        --history results/training_history.npy \\
        --output results/training_visualizations

Writes loss.png, mae.png, mse.png, r_squared.png, per_trait_r_squared.png,
r2_comparison.png and metric_correlation.png (see
docs/phase_4.2_loss_functions_and_metrics.md). Reads the structured
``training_history.npy`` or its ``training_history.json`` twin; a pickled
history of older versions is read only with ``--trust_pickle``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from utils.cli import Parser, from_args, run_script, settings_parser  # noqa: E402
from utils.config import VisualizeConfig  # noqa: E402

PROG = "visualize_training_metrics.py"
EXAMPLE = (
    "python scripts/visualize_training_metrics.py --history results/training_history.npy "
    "--output results/training_visualizations"
)


def build_parser() -> Parser:
    """The flags are the fields of VisualizeConfig: names, defaults and help."""
    return settings_parser(PROG, __doc__.split("\n\n")[0], VisualizeConfig, example=EXAMPLE)


def run(args: argparse.Namespace) -> int:
    from utils.errors import InputError
    from utils.history import load_history, load_start_validation
    from utils.io import check_writable
    from utils.plotting import plot_training_history
    from utils.run_plots import plot_run_logs

    cfg = from_args(VisualizeConfig, args)
    history = load_history(cfg.history, trust_pickle=cfg.trust_pickle)
    output = Path(cfg.output)
    check_writable(output)  # refuse before anything is drawn or written
    written = plot_training_history(history, output, start=load_start_validation(cfg.history))
    try:  # Phase 4.3 figures, from the run logs beside the history (skipped where absent)
        written += [Path(p) for p in plot_run_logs(cfg.history, output)]
    except InputError as exc:  # the Phase 4.2 figures above are written already
        logging.getLogger(PROG).warning("run-log figures skipped: %s", exc)
    print(f"Wrote {len(written)} figure(s) to {output}:")
    for path in written:
        print(f"  {path}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_script(build_parser(), argv, run)


if __name__ == "__main__":
    raise SystemExit(main())
