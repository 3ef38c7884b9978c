"""User-facing errors.

A `UserError` is a mistake the user can fix (a missing file, a bad option). The CLI prints its
message as one line and exits with code 2 instead of showing a traceback; library callers can catch it.
"""

EXIT_USER_ERROR = 2


class UserError(Exception):
    """A problem in the user's input or environment, with a message that says how to fix it."""

    def __init__(self, message: str):
        # One line by contract: the CLI prints it as `bloodgen: error: <message>`.
        super().__init__(" ".join(str(message).split()))
