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
