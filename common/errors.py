"""The one error type that command-line entry points turn into a clean message."""


class UserError(Exception):
    """Bad input a user can fix (missing file, wrong checkpoint, bad flag).

    The message names the problem and the fix; CLIs print it as one line and
    exit with code 2 instead of showing a traceback.
    """
