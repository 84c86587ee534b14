"""Shared command-line plumbing: one parser class, shared flags, the error exit.

Flags that several scripts take are defined once here so they stay identical.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

from utils.constants import (
    DEFAULT_DATA_DIR,
    DYNAMIC_FEATURES_FILE,
    LABELS_FILE,
    STATIC_FEATURES_FILE,
)
from utils.errors import EXIT_INPUT_ERROR, EXIT_INTERRUPTED, InputError, TrainingStopped


class Parser(argparse.ArgumentParser):
    """ArgumentParser whose usage errors are one line on stderr and exit code 2."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", argparse.ArgumentDefaultsHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: error: {message} (see --help)\n")
        raise SystemExit(EXIT_INPUT_ERROR)


def _number_type(cast: Callable[[str], float], ok: Callable[[float], bool], expected: str) -> Callable[[str], float]:
    """An argparse ``type=`` that casts and checks, with a one-line message."""

    def parse_value(text: str) -> float:
        try:
            value = cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, found {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, found {text}")
        return value

    parse_value.__name__ = expected.replace(" ", "_")  # argparse names the type in some messages
    return parse_value


positive_int = _number_type(int, lambda v: v >= 1, "a positive integer")
non_negative_int = _number_type(int, lambda v: v >= 0, "an integer >= 0")
positive_float = _number_type(float, lambda v: 0 < v < float("inf"), "a positive finite number")
# the validation share
open_fraction = _number_type(float, lambda v: 0.0 < v < 1.0, "a number strictly between 0 and 1")
# dropout
unit_interval = _number_type(float, lambda v: 0.0 <= v < 1.0, "a number in [0, 1)")


def add_data_arguments(parser: argparse.ArgumentParser, labels_required: bool = True) -> None:
    """``--static_features``, ``--dynamic_features``, ``--labels`` (defaults: data_sample/)."""
    data = Path(DEFAULT_DATA_DIR)
    parser.add_argument(
        "--static_features",
        default=str(data / STATIC_FEATURES_FILE),
        help="static (appearance) features .npy: (N, D) pooled vectors or (N, T, D) tokens",
    )
    parser.add_argument(
        "--dynamic_features",
        default=str(data / DYNAMIC_FEATURES_FILE),
        help="dynamic (motion) features .npy: (N, D) pooled vectors or (N, T, D) tokens",
    )
    parser.add_argument(
        "--labels",
        default=str(data / LABELS_FILE) if labels_required else None,
        help="OCEAN labels .npy of shape (N, 5) in [0, 1]",
    )


def parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace | int:
    """Parse ``argv``; return the exit code instead of raising on --help or a usage error."""
    try:
        return parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2)
        return int(exc.code or 0)


def configure_console_logging(verbose: bool = True) -> None:
    """Console handler for the scripts' messages (library code only logs)."""
    root = logging.getLogger()
    if not any(getattr(h, "_toolkit_console", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler._toolkit_console = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(logging.INFO if verbose else logging.WARNING)


def run_script(
    parser: argparse.ArgumentParser, argv: Sequence[str] | None, run: Callable[[argparse.Namespace], int]
) -> int:
    """A script's ``main``: parse ``argv``, set up console logging, run ``run(args)`` guarded."""
    args = parse(parser, argv)
    if isinstance(args, int):
        return args
    configure_console_logging()
    return run_guarded(lambda: run(args), parser.prog)


def run_guarded(body: Callable[[], int], prog: str) -> int:
    """Run a script body; an :class:`InputError` becomes one stderr line and exit 2.

    A :class:`TrainingStopped` (NaN loss, Ctrl-C) becomes its message and its
    own exit code.
    """
    try:
        return body()
    except InputError as exc:
        sys.stderr.write(f"{prog}: error: {exc}\n")
        return EXIT_INPUT_ERROR
    except TrainingStopped as exc:
        sys.stderr.write(f"{prog}: stopped: {exc}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write(f"{prog}: interrupted; no output was left half-written\n")
        return EXIT_INTERRUPTED
