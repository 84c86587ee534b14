"""Capability suite: learning curves of the fusion models on each kind of planted signal.

Generates each planted-signal set (pooled only, pooled-static x pooled-dynamic
product, cue-selected segment, third-order content attention) at every
``--sizes`` N, trains the network variants with several seeds, fits ridge and
scores the noise ceiling on a held-out test set, and writes the table (means
with 95% t intervals over seeds, paired differences) and a learning-curve
figure. With ``--markdown`` the table and the command that made it replace the
suite section of that file (``docs/accuracy.md``). Rows are appended to
``<output_dir>/results.jsonl`` as they finish; rerunning the same command
continues an interrupted suite.

Examples:
    python scripts/capability_suite.py --output_dir results/capability
    python scripts/capability_suite.py --sizes 2000 6000 --seeds 0 1 2 --markdown docs/accuracy.md \\
        --figure docs/images/capability_learning_curves.png
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import logging  # noqa: E402
import shlex  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from typing import Any  # noqa: E402

from utils.capability import (  # noqa: E402
    BASELINES,
    DEFAULT_VARIANTS,
    FIGURE_FILE,
    SUITE_SETS,
    SUMMARY_FILE,
    FitSettings,
    SuitePlan,
)
from utils.cli import Parser, non_negative_int, positive_float, positive_int, run_script  # noqa: E402
from utils.constants import FUSION_MODES  # noqa: E402
from utils.errors import InputError  # noqa: E402

logger = logging.getLogger("capability_suite")


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    fit = FitSettings()
    parser = Parser(prog="capability_suite.py", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--output_dir", default="results/capability", help="folder of results.jsonl, summary and figure"
    )
    parser.add_argument(
        "--sets", nargs="+", choices=tuple(SUITE_SETS), default=list(SUITE_SETS), help="planted-signal sets"
    )
    parser.add_argument(
        "--sizes", nargs="+", type=positive_int, default=[2000, 6000], help="training sizes N"
    )
    parser.add_argument(
        "--seeds", nargs="+", type=non_negative_int, default=[0, 1, 2], help="seeds (data and initialization)"
    )
    parser.add_argument(
        "--variants",
        nargs="+",
        choices=(*FUSION_MODES, *BASELINES),
        default=list(DEFAULT_VARIANTS),
        help="fusion modes to train, plus ridge and the noise ceiling",
    )
    parser.add_argument(
        "--noise_fraction",
        type=float,
        default=None,
        help="label noise share of every set (None: each set's own, see utils.capability.SUITE_SETS)",
    )
    parser.add_argument(
        "--n_test", type=positive_int, default=2000, help="held-out test clips per set and seed"
    )
    parser.add_argument("--batch_size", type=positive_int, default=fit.batch_size, help="training batch size")
    parser.add_argument(
        "--learning_rate", type=positive_float, default=fit.learning_rate, help="AdamW learning rate"
    )
    parser.add_argument("--weight_decay", type=float, default=fit.weight_decay, help="AdamW weight decay")
    parser.add_argument(
        "--patience", type=positive_int, default=fit.patience, help="early stopping patience (epochs)"
    )
    parser.add_argument("--max_epochs", type=positive_int, default=fit.max_epochs, help="epoch cap")
    parser.add_argument(
        "--no_jit", action="store_true", help="compile without XLA (faster for tiny test runs)"
    )
    parser.add_argument(
        "--refit",
        action="store_true",
        help="after early stopping picks the epoch count on the 80/20 split, train the network again on all N "
        "training clips for that many epochs at the same learning rates (ridge is fitted on all N too)",
    )
    parser.add_argument(
        "--model",
        nargs="+",
        default=[],
        metavar="FIELD=VALUE",
        help="ModelConfig overrides for every network variant, e.g. head_skip=false bilinear_rank=16 "
        "(default: the ModelConfig defaults, i.e. what train_personality_model.py builds)",
    )
    parser.add_argument(
        "--default_variant", default="pooled_query", help="the variant the differences are about"
    )
    parser.add_argument(
        "--markdown", default=None, help="markdown file whose suite section receives the table"
    )
    parser.add_argument(
        "--section", default="main", help="name of that section (several suites can share a file)"
    )
    parser.add_argument("--figure", default=None, help=f"figure path (None: <output_dir>/{FIGURE_FILE})")
    parser.add_argument(
        "--report_only", action="store_true", help="only summarize the rows already in output_dir"
    )
    return parser


def model_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``["field=value", ...]`` -> ModelConfig overrides, each value cast to its field's type."""
    from models.config import ModelConfig

    fields = {f.name: f for f in dataclasses.fields(ModelConfig)}
    out: dict[str, Any] = {}
    for item in items:
        name, sep, text = item.partition("=")
        if not sep or name not in fields:
            raise InputError(
                f"expected --model FIELD=VALUE with FIELD one of {sorted(fields)}, found {item!r}"
            )
        default = fields[name].default
        try:
            if isinstance(default, bool):
                if text.lower() not in ("true", "false"):
                    raise ValueError(text)
                out[name] = text.lower() == "true"
            else:
                out[name] = type(default)(text)
        except ValueError:
            raise InputError(
                f"expected a {type(default).__name__} for --model {name}, found {text!r}"
            ) from None
    try:
        ModelConfig(**out)
    except ValueError as exc:
        raise InputError(f"invalid --model settings: {exc}") from None
    return out


def plan_from_args(args: argparse.Namespace) -> SuitePlan:
    """The suite the flags describe."""
    overrides = model_overrides(args.model)
    fit = FitSettings(
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        weight_decay=args.weight_decay,
        patience=args.patience,
        max_epochs=args.max_epochs,
        jit_compile=not args.no_jit,
        refit=args.refit,
    )
    try:
        return SuitePlan(
            sets=tuple(args.sets),
            sizes=tuple(sorted(set(args.sizes))),
            seeds=tuple(args.seeds),
            variants=tuple(args.variants),
            n_test=args.n_test,
            fit=fit,
            model_overrides=overrides,
            noise_fraction=args.noise_fraction,
        )
    except ValueError as exc:
        raise InputError(str(exc)) from None


def run(args: argparse.Namespace, argv: Sequence[str] | None = None) -> int:
    from utils.capability import (
        plot_learning_curves,
        read_rows,
        replace_markdown_section,
        run_suite,
        suite_markdown,
        summarize,
    )
    from utils.io import write_json

    plan = plan_from_args(args)
    out = Path(args.output_dir)
    rows = read_rows(out / "results.jsonl") if args.report_only else run_suite(plan, out)
    rows = [r for r in rows if r["set"] in plan.sets and r["n"] in plan.sizes and r["seed"] in plan.seeds]
    if not rows:
        raise InputError("expected result rows to summarize, found none", str(out / "results.jsonl"))
    summary = summarize(rows, default=args.default_variant)
    write_json(out / SUMMARY_FILE, summary)
    figure = plot_learning_curves(summary, Path(args.figure) if args.figure else out / FIGURE_FILE)
    command = "python scripts/capability_suite.py " + " ".join(
        shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv)
    )
    table = suite_markdown(summary, plan, command, figure, args.default_variant, args.section)
    print(table)
    if args.markdown:
        replace_markdown_section(Path(args.markdown), table, args.section)
        logger.info("wrote the suite section of %s", args.markdown)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the suite and write its table and figure. Returns the exit code."""
    return run_script(build_parser(), argv, lambda args: run(args, argv))


if __name__ == "__main__":
    raise SystemExit(main())
