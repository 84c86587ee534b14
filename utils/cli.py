"""Shared command-line plumbing: one parser class, flags generated from settings dataclasses, the error exit.

A script's settings are one dataclass (:mod:`utils.config`, :mod:`models.config`)
whose fields are declared with :func:`option`: the field carries its default,
its help text and, where plain ``int``/``float``/``str`` would accept bad
values, a checked argparse ``type`` or ``choices``. :func:`add_arguments`
turns those fields into ``--<field name>`` flags with exactly that default and
help, so a new setting is one line in one dataclass::

    patience: int = option(10, "early stopping: epochs without val_loss improvement", type=positive_int)

Booleans become ``--flag`` (default False) or ``--flag/--no-flag`` (default
True). A field declared with :func:`nested` holds another settings dataclass
whose flags are added flat (``TrainConfig.model`` -> ``--width`` ...).
:func:`from_args` builds the dataclass back from the parsed namespace.

This module imports no TensorFlow and no NumPy (``--help`` stays fast).
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import dataclasses
import gc
import logging
import signal
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NoReturn, TypeVar

from utils.errors import (
    EXIT_DIVERGED,
    EXIT_INPUT_CHANGED,
    EXIT_INPUT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_TERMINATED,
    EXIT_WRITE_FAILED,
    InputError,
    Terminated,
    TrainingStopped,
)

# What each exit code means, for the epilog of every script's --help.
EXIT_CODE_MEANINGS: dict[int, str] = {
    0: "done",
    EXIT_INPUT_ERROR: "bad input or flag (one line on stderr naming the file; nothing written)",
    EXIT_DIVERGED: "the loss became NaN or infinite (best checkpoint and history kept)",
    EXIT_WRITE_FAILED: "an output could not be written (disk full, quota, read-only)",
    EXIT_INPUT_CHANGED: "an input file changed while the run read it",
    EXIT_INTERRUPTED: "interrupted with Ctrl-C",
    EXIT_TERMINATED: "terminated (SIGTERM)",
}
COMMON_EXIT_CODES: tuple[int, ...] = (0, EXIT_INPUT_ERROR, EXIT_WRITE_FAILED, EXIT_INTERRUPTED, EXIT_TERMINATED)
TRAINING_EXIT_CODES: tuple[int, ...] = (
    0, EXIT_INPUT_ERROR, EXIT_DIVERGED, EXIT_WRITE_FAILED, EXIT_INPUT_CHANGED, EXIT_INTERRUPTED, EXIT_TERMINATED,
)


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Each flag's default said once: none after a switch, none for a None default, a tuple as a plain list.

    A help text that already names its default ("(default: ...)" or
    "default:") is left as it is; a ``--x/--no-x`` switch says "(default: on)"
    or "(default: off)" instead of argparse's "(default: True)".
    """

    def _get_help_string(self, action: argparse.Action) -> str:
        text = (action.help or "").replace(" (default: %(default)s)", "")  # BooleanOptionalAction's own
        default = action.default
        if isinstance(action, argparse.BooleanOptionalAction):
            return f"{text} (default: {'on' if default else 'off'})"
        if (
            "default" in text.lower()
            or default is None
            or default is argparse.SUPPRESS
            or isinstance(default, bool)
            or action.nargs == 0  # store_true / store_const / help
        ):
            return text
        shown = ", ".join(map(str, default)) if isinstance(default, (tuple, list)) else str(default)
        return f"{text} (default: {shown.replace('%', '%%')})"


def help_epilog(example: str | None, exit_codes: Sequence[int] = COMMON_EXIT_CODES) -> str:
    """The end of ``--help``: an example command and what each exit code means."""
    parts = [f"example:\n  {example}"] if example else []
    codes = "\n".join(f"  {code:>3}  {EXIT_CODE_MEANINGS[code]}" for code in exit_codes)
    parts.append(f"exit codes:\n{codes}")
    return "\n\n".join(parts)


class Parser(argparse.ArgumentParser):
    """ArgumentParser whose usage errors are one line on stderr and exit code 2.

    ``--help`` states each default once (:class:`HelpFormatter`) and ends with
    ``example`` (a command line) and the ``exit_codes`` the script can return.
    """

    def __init__(
        self, *args: Any, example: str | None = None, exit_codes: Sequence[int] = COMMON_EXIT_CODES, **kwargs: Any
    ) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        kwargs.setdefault("epilog", help_epilog(example, exit_codes))
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


# ---------------------------------------------------------------------------
# Settings dataclass -> flags
# ---------------------------------------------------------------------------

T = TypeVar("T")
HELP = "help"  # field metadata keys
TYPE = "type"
CHOICES = "choices"
GROUP = "group"
NESTED = "nested"
# argparse ``type=`` of a plain annotation (annotations are strings under ``from __future__ import annotations``)
_PLAIN_TYPES: dict[str, Callable[[str], Any]] = {"int": int, "float": float}


def option(
    default: Any,
    help: str,
    *,
    type: Callable[[str], Any] | None = None,
    choices: Sequence[Any] | None = None,
    group: str | None = None,
) -> Any:
    """A dataclass field that is also a command-line flag ``--<field name>``.

    ``group`` is the ``--help`` section the flag is listed in (none: the
    general options).
    """
    metadata: dict[str, Any] = {HELP: help}
    if type is not None:
        metadata[TYPE] = type
    if choices is not None:
        metadata[CHOICES] = tuple(choices)
    if group is not None:
        metadata[GROUP] = group
    return dataclasses.field(default=default, metadata=metadata)


def nested(cls: type, group: str) -> Any:
    """A field holding another settings dataclass; its flags are added flat under ``group``."""
    return dataclasses.field(default_factory=cls, metadata={NESTED: cls, GROUP: group})


def flag_fields(cls: type) -> list[dataclasses.Field]:
    """The fields of ``cls`` that are flags (declared with :func:`option`), nested ones expanded."""
    out: list[dataclasses.Field] = []
    for f in dataclasses.fields(cls):
        if NESTED in f.metadata:
            out += flag_fields(f.metadata[NESTED])
        elif HELP in f.metadata:
            out.append(f)
    return out


def _argument_kwargs(f: dataclasses.Field) -> dict[str, Any]:
    meta = f.metadata
    kwargs: dict[str, Any] = {"default": f.default, "help": meta[HELP]}
    if isinstance(f.default, bool):
        kwargs["action"] = argparse.BooleanOptionalAction if f.default else "store_true"
        return kwargs
    if CHOICES in meta:
        kwargs["choices"] = meta[CHOICES]
    cast = meta.get(TYPE) or _PLAIN_TYPES.get(str(f.type))
    if cast is not None:
        kwargs["type"] = cast
    return kwargs


def add_arguments(
    parser: argparse.ArgumentParser, cls: type, group: str | None = None, skip: Sequence[str] = ()
) -> None:
    """One ``--<name>`` flag per :func:`option` field of ``cls``, in field order (``skip``: names left out).

    A field's own ``group`` wins over ``group`` (the section of a nested
    dataclass); flags without either go to the general options.
    """
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        if NESTED in f.metadata:
            add_arguments(parser, f.metadata[NESTED], f.metadata[GROUP], skip)
        elif HELP in f.metadata:
            title = f.metadata.get(GROUP, group)
            _section(parser, title).add_argument(f"--{f.name}", **_argument_kwargs(f))


def _section(parser: argparse.ArgumentParser, title: str | None) -> Any:
    if title is None:
        return parser
    existing = [g for g in parser._action_groups if g.title == title]
    return existing[0] if existing else parser.add_argument_group(title)


def from_flat(cls: type[T], values: Mapping[str, Any]) -> T:
    """``cls`` from a flat mapping of field names (nested dataclasses filled from their own names).

    Keys that are no field of ``cls`` (or of a nested one) raise ``TypeError``.
    """
    kwargs: dict[str, Any] = {}
    used: set[str] = set()
    for f in dataclasses.fields(cls):
        if NESTED in f.metadata:
            inner = f.metadata[NESTED]
            names = {g.name for g in dataclasses.fields(inner)}
            kwargs[f.name] = from_flat(inner, {k: v for k, v in values.items() if k in names})
            used |= names
        elif f.name in values:
            kwargs[f.name] = values[f.name]
            used.add(f.name)
    unknown = sorted(set(values) - used)
    if unknown:
        raise TypeError(f"{cls.__name__} has no setting(s) {', '.join(unknown)}")
    return cls(**kwargs)


def to_flat(settings: Any) -> dict[str, Any]:
    """Field name -> value, nested dataclasses flattened in place (the inverse of :func:`from_flat`)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(settings):
        value = getattr(settings, f.name)
        if NESTED in f.metadata:
            out.update(to_flat(value))
        else:
            out[f.name] = value
    return out


def from_args(cls: type[T], args: argparse.Namespace) -> T:
    """``cls`` built from the parsed flags (the namespace of a parser made by :func:`add_arguments`)."""
    return from_flat(cls, vars(args))


def settings_parser(
    prog: str, description: str, cls: type, example: str | None = None, exit_codes: Sequence[int] = COMMON_EXIT_CODES
) -> Parser:
    """A :class:`Parser` whose flags are the fields of ``cls`` (``example``/``exit_codes``: the help's epilog)."""
    parser = Parser(prog=prog, description=description, example=example, exit_codes=exit_codes)
    add_arguments(parser, cls)
    return parser


def flag_defaults(cls: type) -> dict[str, Any]:
    """Flag name -> default of every flag of ``cls`` (nested ones included)."""
    return {f.name: f.default for f in flag_fields(cls)}


def parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace | int:
    """Parse ``argv``; return the exit code instead of raising on --help or a usage error."""
    try:
        return parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2)
        return int(exc.code or 0)


class StdoutHandler(logging.StreamHandler):
    """A handler writing to whatever ``sys.stdout`` is at the time of each record.

    A plain ``StreamHandler(sys.stdout)`` keeps the stream it was created
    with; when ``main()`` runs again in one process with ``sys.stdout``
    replaced (pytest's capture), it would write to a closed stream.
    """

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stdout

    @stream.setter
    def stream(self, value: Any) -> None:  # StreamHandler.__init__ assigns it; the property decides
        pass


def configure_console_logging(verbose: bool = True) -> None:
    """Console handler for the scripts' messages (library code only logs)."""
    root = logging.getLogger()
    if not any(getattr(h, "_toolkit_console", False) for h in root.handlers):
        handler = StdoutHandler()
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
    atexit.unregister(skip_final_collection)  # once, however often main() runs in one process
    atexit.register(skip_final_collection)
    return run_guarded(lambda: run(args), parser.prog)


def skip_final_collection() -> None:
    """At interpreter exit: no last cyclic garbage collection over the TensorFlow and Keras objects.

    Python's finalization collects every object still alive; after a training
    run that is millions of them and took 1.7 to 2.4 s after the last output
    was written (a 6-epoch run of the end-to-end benchmark, docs/performance.md).
    Freezing them skips that walk; the operating system reclaims the memory,
    open files are closed as always, and every other exit handler (TensorFlow's,
    wandb's, logging's) still runs. Registered by :func:`run_script`, so it
    runs first at exit (handlers run last-in, first-out).
    """
    gc.disable()
    gc.freeze()


@contextlib.contextmanager
def terminate_as_interrupt() -> Any:
    """While the body runs: SIGTERM raises :class:`Terminated` (handled like Ctrl-C), SIGXFSZ is ignored.

    Clusters stop jobs with SIGTERM (Slurm: preemption, the time limit); by
    default it kills the process at once, leaving temporary files and no
    message. The handler raises in the main thread between two Python steps,
    so a Keras step finishes or is abandoned and every ``finally`` runs; it
    fires once (a second SIGTERM is ignored during the clean-up). Ignoring
    SIGXFSZ makes the file-size limit (``ulimit -f``) an EFBIG write error
    instead of a kill. Outside the main thread nothing is changed.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_sigterm(signum: int, frame: Any) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    xfsz = getattr(signal, "SIGXFSZ", None)
    previous_xfsz = signal.signal(xfsz, signal.SIG_IGN) if xfsz is not None else None
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        if xfsz is not None:
            signal.signal(xfsz, previous_xfsz)


def run_guarded(body: Callable[[], int], prog: str) -> int:
    """Run a script body; an :class:`InputError` becomes one stderr line and exit 2.

    A :class:`TrainingStopped` (NaN loss, Ctrl-C, SIGTERM, a write error or a
    changed input during training) becomes its message and its own exit code.
    A disk error while writing (full, quota, file-size limit, read-only, I/O)
    is one line naming the file, exit 4; Ctrl-C exits 130 and SIGTERM 143.
    """
    try:
        with terminate_as_interrupt():
            return body()
    except InputError as exc:
        sys.stderr.write(f"{prog}: error: {exc}\n")
        return EXIT_INPUT_ERROR
    except TrainingStopped as exc:
        sys.stderr.write(f"{prog}: stopped: {exc}\n")
        return exc.exit_code
    except OSError as exc:
        from utils.io import OutputWriteError, write_errno  # NumPy only when it is needed

        code = write_errno(exc)
        if code is None:
            raise
        error = exc if isinstance(exc, OutputWriteError) else OutputWriteError(code, exc.filename or "an output file")
        sys.stderr.write(f"{prog}: error: {error}; files written before are intact, temporary files removed\n")
        return EXIT_WRITE_FAILED
    except KeyboardInterrupt as exc:
        if isinstance(exc, Terminated):
            sys.stderr.write(f"{prog}: terminated (SIGTERM); no output was left half-written\n")
            return EXIT_TERMINATED
        sys.stderr.write(f"{prog}: interrupted; no output was left half-written\n")
        return EXIT_INTERRUPTED
