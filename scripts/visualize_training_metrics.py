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

from utils import constants as C  # noqa: E402
from utils.cli import Parser, run_script  # noqa: E402

PROG = "visualize_training_metrics.py"


def build_parser() -> Parser:
    p = Parser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--history",
        default=f"{C.DEFAULT_RESULTS_DIR}/{C.HISTORY_FILE}",
        help="training history: training_history.npy (structured) or training_history.json",
    )
    p.add_argument(
        "--output",
        default=f"{C.DEFAULT_RESULTS_DIR}/{C.VISUALIZATION_DIR}",
        help="folder the figures are written to (created if missing)",
    )
    p.add_argument(
        "--trust_pickle",
        action="store_true",
        help="read a pickled history .npy written by older versions (runs code from the file: "
        "only for files you trust)",
    )
    return p


def run(args: argparse.Namespace) -> int:
    from utils.errors import InputError
    from utils.history import load_history
    from utils.io import check_writable
    from utils.plotting import plot_training_history
    from utils.run_plots import plot_run_logs

    history = load_history(args.history, trust_pickle=args.trust_pickle)
    output = Path(args.output)
    check_writable(output)  # refuse before anything is drawn or written
    written = plot_training_history(history, output)
    try:  # Phase 4.3 figures, from the run logs beside the history (skipped where absent)
        written += [Path(p) for p in plot_run_logs(args.history, output)]
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
