#!/usr/bin/env python
"""Benchmark the toolkit: fit overhead, out-of-core input, cost growth, accuracy, latency.

One command runs everything (about 30 to 40 minutes on 2 cores)::

    python scripts/benchmark_toolkit.py --name cpu-2core

and writes benchmarks/results/<name>.json and the results section of
docs/performance.md. ``--quick`` runs every measure small (a few minutes, no
8 GB files); ``--measures`` picks some. Every timed run is its own process,
variants are interleaved and repeated (``--reps``), and medians are reported.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # before TensorFlow is imported (utils.console)

from utils.cli import Parser, parse, positive_int  # noqa: E402

PROG = "benchmark_toolkit.py"
MEASURES = ("end_to_end", "overhead", "growth", "out_of_core", "accuracy", "help", "prediction")  # benchmarks.runner.MEASURES


def measure_list(text: str) -> tuple[str, ...]:
    names = tuple(t.strip() for t in text.split(",") if t.strip())
    unknown = [n for n in names if n not in MEASURES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"expected a comma-separated subset of {', '.join(MEASURES)}, found {text!r}")
    return names


def epoch_pair(text: str) -> tuple[int, int]:
    try:
        short, long = (int(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected two epoch counts 'short,long', found {text!r}") from None
    if not 0 < short < long:
        raise argparse.ArgumentTypeError(f"expected 0 < short < long, found {text!r}")
    return short, long


def build_parser() -> Parser:
    p = Parser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("--name", default="default", help="results name: benchmarks/results/<name>.json")
    p.add_argument("--output", default=None, help="results JSON path (default benchmarks/results/<name>.json)")
    p.add_argument("--measures", type=measure_list, default=MEASURES, help="comma-separated measures to run")
    p.add_argument("--quick", action="store_true", help="every measure small: minutes instead of half an hour")
    p.add_argument("--reps", type=positive_int, default=None, help="repetitions of each variant (default 3)")
    p.add_argument("--workdir", default=None, help="folder for generated data and runs (default: a new temp folder)")
    p.add_argument("--keep", action="store_true", help="keep the generated data and runs")
    p.add_argument("--fi_shapes", action="store_true",
                   help="First-Impressions shapes (static 49x512, dynamic 16x1024) for overhead, growth, prediction")
    p.add_argument("--overhead_n", type=positive_int, default=None, help="samples of the overhead data set")
    p.add_argument("--overhead_variants", default=None,
                   help="comma list of toolkit, bare, and either with '+jit', '+nojit', '+spe<k>' or '+jit,spe<k>' "
                   "(quote it: 'toolkit,bare,toolkit+jit;spe8' uses ';' inside a variant); without options "
                   "the toolkit runs with TrainConfig's defaults, bare with plain Keras")
    p.add_argument("--e2e_n", type=positive_int, default=None, help="clips of the end-to-end data set (default 4000)")
    p.add_argument("--e2e_epochs", type=epoch_pair, default=None,
                   help="short,long epochs of the end-to-end runs (default 2,6): per epoch = (T(long)-T(short))/(long-short)")
    p.add_argument("--e2e_variants", default=None,
                   help="comma list of toolkit, plain, plain_like; toolkit+FLAGS passes training-script flags "
                   "(e.g. 'toolkit+--no-jit_compile')")
    p.add_argument("--growth_n", type=positive_int, default=None, help="N of the cost-growth series N, 2N, 4N")
    p.add_argument("--ooc_n", type=positive_int, default=None, help="samples of the out-of-core files (50000: 8.3 GB)")
    p.add_argument("--ooc_max_steps", type=int, default=None, help="cap the out-of-core epoch at k steps (0: full)")
    p.add_argument("--accuracy_n", type=positive_int, default=None, help="samples of the accuracy training files")
    p.add_argument("--accuracy_epochs", type=positive_int, default=None, help="maximum epochs of each accuracy run")
    p.add_argument("--no_doc", action="store_true", help="do not update docs/performance.md")
    return p


def make_config(args: argparse.Namespace) -> object:
    from benchmarks.runner import BenchConfig

    cfg = BenchConfig(name=args.name, measures=args.measures, workdir=args.workdir, keep=args.keep,
                      fi_shapes=args.fi_shapes, doc=not args.no_doc)
    if args.quick:
        cfg.reps, cfg.overhead_n, cfg.overhead_epochs, cfg.growth_n, cfg.growth_epochs = 1, 600, 3, 200, 3
        cfg.ooc_n, cfg.ooc_reference_n, cfg.accuracy_n, cfg.accuracy_test_n = 3000, 600, 800, 400
        cfg.accuracy_train = {"epochs": 3, "batch_size": 32, "patience": 3}
        cfg.help_reps, cfg.predict_n = 1, 256
        cfg.e2e_n, cfg.e2e_epochs = 400, (1, 2)
    for field in ("reps", "overhead_n", "growth_n", "ooc_n", "ooc_max_steps", "accuracy_n", "e2e_n", "e2e_epochs"):
        value = getattr(args, field)
        if value is not None:
            setattr(cfg, field, value)
    if args.accuracy_epochs is not None:
        cfg.accuracy_train = {**cfg.accuracy_train, "epochs": args.accuracy_epochs}
    if args.e2e_variants:
        cfg.e2e_variants = tuple(v.strip() for v in args.e2e_variants.split(",") if v.strip())
    if args.overhead_variants:
        cfg.overhead_variants = tuple(v.strip().replace(";", ",") for v in args.overhead_variants.split(",") if v.strip())
    return cfg


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(build_parser(), argv)
    if isinstance(args, int):
        return args
    from benchmarks.runner import RESULTS_DIR, run, update_doc, write_results

    cfg = make_config(args)
    command = "python scripts/benchmark_toolkit.py " + shlex.join(sys.argv[1:] if argv is None else list(argv))
    results = run(cfg, command.strip(), log=lambda line: print(line, flush=True))
    out = Path(args.output) if args.output else RESULTS_DIR / f"{args.name}.json"
    write_results(results, out)
    if cfg.doc:
        update_doc(results)
    for goal in results["goals"]:
        print(f"{goal['measure']}: {goal['value']:.3f} (goal {goal['goal']}) {'met' if goal['met'] else 'MISSED'}")
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
