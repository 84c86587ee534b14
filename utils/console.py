"""A quiet console: TensorFlow's start-up lines and progress bars only where they help.

On a machine without a GPU, importing TensorFlow prints four or five lines
to stderr ("Could not find cuda drivers", "All log messages before
absl::InitializeLog()", and at the first operation "failed call to cuInit:
UNKNOWN ERROR (303)", which reads like a failure). ``TF_CPP_MIN_LOG_LEVEL=3``
silences the last one; the others are written by the C++ runtime while the
shared libraries load, whatever that variable says. :func:`quiet_tensorflow`
imports TensorFlow once with stderr captured and writes back every captured
line that is not one of those known start-up lines, so a real error is still
seen. ``show=True`` (``--verbose 2`` of the training script) or
``TF_CPP_MIN_LOG_LEVEL`` set to 0 or 1 in the environment leaves everything as
TensorFlow prints it.

:func:`progress_verbosity` turns the Keras progress bar off when standard
output is not a terminal (a file, a pipe, a batch job's log): there the bar's
carriage returns, backspaces and colour codes make lines of thousands of
characters, and the training log's one line per epoch says the same.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from collections.abc import Iterator

# Lines TensorFlow prints while it loads on a machine without a usable GPU.
STARTUP_LINES = re.compile(
    r"All log messages before absl::InitializeLog\(\) is called"
    r"|cudart_stub\.cc.*Could not find cuda drivers"
    r"|failed call to cuInit"
    r"|Unable to register cu(DNN|FFT|BLAS) factory"
    r"|oneDNN custom operations are on"
    r"|This TensorFlow binary is optimized to use available CPU instructions"
    r"|To enable the following instructions:.*rebuild TensorFlow"
    r"|computation placer already registered"
)
QUIET_LEVEL = "3"  # TF_CPP_MIN_LOG_LEVEL: errors included (the cuInit line is an "error")


def tensorflow_log_level(show: bool) -> str:
    """The ``TF_CPP_MIN_LOG_LEVEL`` to use: the user's own if set, else 0 (show) or 3."""
    return os.environ.get("TF_CPP_MIN_LOG_LEVEL") or ("0" if show else QUIET_LEVEL)


@contextlib.contextmanager
def _stderr_filtered() -> Iterator[None]:
    """Capture file descriptor 2 (C++ writes there directly); write back all but the start-up lines."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            kept = [
                line for line in captured.read().decode("utf-8", "replace").splitlines(keepends=True)
                if not STARTUP_LINES.search(line)
            ]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


def quiet_tensorflow(show: bool = False) -> None:
    """Import TensorFlow and Keras now, without their start-up lines unless ``show``.

    Call it first thing after the arguments are parsed (``--help`` stays
    fast). A second call, or a call after TensorFlow was imported, changes
    nothing. The user's own ``TF_CPP_MIN_LOG_LEVEL`` is respected.
    """
    if "tensorflow" in sys.modules:
        return
    user_level = os.environ.get("TF_CPP_MIN_LOG_LEVEL")
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = tensorflow_log_level(show)
    # A user's level 0 or 1 asks for TensorFlow's own lines; 2 and 3 ask for quiet.
    if show or user_level is not None and user_level not in ("2", QUIET_LEVEL):
        import keras  # noqa: F401
        import tensorflow  # noqa: F401

        return
    with _stderr_filtered():
        import keras  # noqa: F401
        import tensorflow as tf

        tf.config.list_physical_devices()  # the cuInit attempt happens here, still captured


def stdout_is_terminal() -> bool:
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):  # replaced or closed stdout
        return False


def progress_verbosity(verbose: int) -> int:
    """Keras ``verbose``: the progress bar (1) only on a terminal; 0 and 2 (one line per epoch) as asked."""
    return 0 if verbose == 1 and not stdout_is_terminal() else verbose


__all__ = ["quiet_tensorflow", "progress_verbosity", "stdout_is_terminal", "STARTUP_LINES"]
