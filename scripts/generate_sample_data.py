"""Generate synthetic static/dynamic token features and Big Five labels.

With no arguments it regenerates ``data_sample/`` byte for byte. The data
design (planted signal, noise ceiling) is described in ``utils/synthetic.py``
and ``data_sample/README.md``.

Examples:
    python scripts/generate_sample_data.py
    python scripts/generate_sample_data.py --report
    python scripts/generate_sample_data.py --output_dir /tmp/big --n_samples 50000 --first_impressions_shapes
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse  # noqa: E402
import logging  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

from utils.cli import Parser, non_negative_int, positive_int, run_script  # noqa: E402
from utils.constants import DEFAULT_DATA_DIR, TRAIT_ABBREVIATIONS, TRAITS  # noqa: E402
from utils.errors import InputError  # noqa: E402
from utils.synthetic import (  # noqa: E402
    FIRST_IMPRESSIONS_CORRELATION,
    FIRST_IMPRESSIONS_MEANS,
    FIRST_IMPRESSIONS_SHAPES,
    FIRST_IMPRESSIONS_STDS,
    INTERACTION_KINDS,
    SUPPORTED_DTYPES,
    SyntheticSpec,
    dataset_report,
    write_dataset,
)

logger = logging.getLogger("generate_sample_data")

# Shapes of data_sample/ (used when neither a shape flag nor the switch is given).
SAMPLE_SHAPES: dict[str, int] = {
    "static_tokens": 8,
    "static_dim": 24,
    "dynamic_tokens": 8,
    "dynamic_dim": 24,
}
# Signal of data_sample/: a static cue selects a dynamic segment (the structure the
# default pooled_query model is built for), 60% of the signal; 20% label noise.
SAMPLE_SIGNAL: dict[str, Any] = {"interaction": "cue_segment", "interaction_fraction": 0.6, "noise_fraction": 0.2}
SAMPLE_N = 4000
SAMPLE_DTYPE = "float16"


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    parser = Parser(prog="generate_sample_data.py", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--output_dir", default=DEFAULT_DATA_DIR, help="folder that receives the three .npy files"
    )
    parser.add_argument("--n_samples", type=positive_int, default=SAMPLE_N, help="number of clips N")
    for name, text in (
        ("static_tokens", "static tokens per clip T_s"),
        ("static_dim", "width of a static token D_s"),
        ("dynamic_tokens", "dynamic tokens per clip T_d"),
        ("dynamic_dim", "width of a dynamic token D_d"),
    ):
        parser.add_argument(
            f"--{name}",
            type=positive_int,
            default=None,
            help=f"{text}; None means {SAMPLE_SHAPES[name]}, or {FIRST_IMPRESSIONS_SHAPES[name]} "
            "with --first_impressions_shapes",
        )
    parser.add_argument(
        "--first_impressions_shapes",
        action="store_true",
        help="use the real features' token shapes: static 49x512 (VGG-Face 7x7 grid), dynamic 16x1024 (I3D)",
    )
    parser.add_argument(
        "--interaction", choices=INTERACTION_KINDS, default=SAMPLE_SIGNAL["interaction"],
        help="kind of the fusion-only signal part: content attention (third order), pooled product, "
        "or a static cue selecting a dynamic segment",
    )
    parser.add_argument(
        "--interaction_fraction", type=float, default=SAMPLE_SIGNAL["interaction_fraction"],
        help="share of the signal variance in the fusion-only part; the rest is split evenly between "
        "the pooled static and pooled dynamic parts",
    )
    parser.add_argument(
        "--noise_fraction", type=float, default=SAMPLE_SIGNAL["noise_fraction"],
        help="share of each trait's variance that is noise (the noise ceiling R² is about 1 minus it)",
    )
    parser.add_argument("--seed", type=non_negative_int, default=0, help="seed of every random draw")
    parser.add_argument(
        "--dtype", choices=SUPPORTED_DTYPES, default=SAMPLE_DTYPE, help="feature dtype (labels are float32)"
    )
    parser.add_argument(
        "--chunk_size",
        type=positive_int,
        default=None,
        help="samples written per chunk; None means about 256 MiB of features (the bytes do not depend on it)",
    )
    parser.add_argument(
        "--report",
        action="store_true",
        help="after writing, print label statistics, the noise ceiling R² and the ridge baseline R²",
    )
    parser.add_argument(
        "--val_fraction", type=float, default=0.2, help="validation share of the --report split"
    )
    parser.add_argument("--split_seed", type=non_negative_int, default=42, help="seed of the --report split (42 = the trainer's default --seed, so the validation set is the same)")
    return parser


def spec_from_args(args: argparse.Namespace) -> SyntheticSpec:
    """The data set specification the flags describe."""
    shapes = FIRST_IMPRESSIONS_SHAPES if args.first_impressions_shapes else SAMPLE_SHAPES
    resolved = {
        name: getattr(args, name) if getattr(args, name) is not None else shapes[name]
        for name in SAMPLE_SHAPES
    }
    rest = (1.0 - args.interaction_fraction) / 2.0
    try:
        return SyntheticSpec(
            n_samples=args.n_samples,
            seed=args.seed,
            dtype=args.dtype,
            interaction=args.interaction,
            interaction_fraction=args.interaction_fraction,
            static_fraction=rest,
            dynamic_fraction=rest,
            noise_fraction=args.noise_fraction,
            **resolved,
        )
    except ValueError as exc:
        raise InputError(str(exc)) from None


def _row(label: str, values: Any, fmt: str = "{:.3f}") -> str:
    return f"{label:<10}" + " ".join(f"{fmt.format(v):>7}" for v in values)


def format_report(report: dict[str, Any]) -> str:
    """Plain-text tables of :func:`utils.synthetic.dataset_report`'s figures."""
    stats = report["label_statistics"]
    header = _row("", [*TRAIT_ABBREVIATIONS, "mean"], "{}")
    lines = [
        "Label statistics (achieved vs First Impressions target):",
        _row("", TRAIT_ABBREVIATIONS, "{}"),
        _row("mean", stats["mean"]),
        _row("  target", FIRST_IMPRESSIONS_MEANS),
        _row("std", stats["std"]),
        _row("  target", FIRST_IMPRESSIONS_STDS),
        f"clipped to 0 or 1: {100 * stats['clipped_fraction']:.2f}% of label values",
        "Trait correlations (achieved; target in brackets):",
        _row("", TRAIT_ABBREVIATIONS, "{}"),
    ]
    for i, name in enumerate(TRAIT_ABBREVIATIONS):
        cells = [
            f"{stats['correlation'][i, j]:.2f}({FIRST_IMPRESSIONS_CORRELATION[i, j]:.2f})"
            for j in range(len(TRAITS))
        ]
        lines.append(f"{name:<10}" + " ".join(f"{c:>11}" for c in cells))
    lines += [
        f"R² per trait (validation split: {report['n_train']} train / {report['n_val']} val):",
        header,
        _row("ceiling", [*(report["ceiling_all"][t] for t in TRAITS), report["ceiling_all"]["mean"]])
        + "   (all samples)",
        _row("ceiling", [*(report["ceiling_val"][t] for t in TRAITS), report["ceiling_val"]["mean"]])
        + "   (val)",
        _row("ridge", [*(report["ridge_val"][t] for t in TRAITS), report["ridge_val"]["mean"]])
        + "   (val, pooled features)",
    ]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    spec = spec_from_args(args)
    try:
        paths = write_dataset(spec, args.output_dir, chunk_size=args.chunk_size)
    except OSError as exc:
        raise InputError(str(exc)) from None
    for key, path in paths.items():
        logger.info("wrote %s (%s, %.2f MB)", path, key, path.stat().st_size / 1e6)
    if args.report:
        static = np.load(paths["static"], mmap_mode="r")
        dynamic = np.load(paths["dynamic"], mmap_mode="r")
        labels = np.load(paths["labels"])
        try:
            report = dataset_report(spec, static, dynamic, labels, args.val_fraction, args.split_seed)
        except ValueError as exc:
            raise InputError(str(exc)) from None
        print(format_report(report))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Write the data set; with ``--report`` print its figures. Returns the exit code."""
    return run_script(build_parser(), argv, run)


if __name__ == "__main__":
    raise SystemExit(main())
