"""The one exception type that reaches the user as a plain message.

Library code raises :class:`InputError` for anything the user can fix (a wrong
file, a bad flag value). The scripts catch it, print one line on stderr and
exit with :data:`EXIT_INPUT_ERROR`; no traceback is shown.
"""

from __future__ import annotations

EXIT_INPUT_ERROR = 2


class InputError(Exception):
    """A problem with the user's input, described in one line.

    The message names the file (where there is one), what was expected and
    what was found.
    """

    def __init__(self, message: str, path: str | None = None) -> None:
        self.path = path
        super().__init__(f"{path}: {message}" if path else message)


EXIT_DIVERGED = 3
EXIT_WRITE_FAILED = 4  # an output could not be written: disk full, quota, file-size limit, read-only, I/O error
EXIT_INPUT_CHANGED = 5  # an input file changed (size or modification time) while the run read it
EXIT_INTERRUPTED = 130  # the shell's code for a run stopped by Ctrl-C (SIGINT)
EXIT_TERMINATED = 143  # the shell's code for a run stopped by SIGTERM (Slurm preemption, time limit, kill)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread like Ctrl-C's KeyboardInterrupt (see utils.cli)."""


class TrainingStopped(Exception):
    """Training ended early for a reason the user must see (not a bug).

    What finished is on disk (history, best checkpoint, resume state); the
    message says so and, where it applies, how to resume.
    """

    def __init__(self, message: str, exit_code: int) -> None:
        self.exit_code = exit_code
        super().__init__(message)
