"""The one exception type users see: a message that says what went wrong and what to do."""


class CatalensError(Exception):
    """A problem with the user's input or environment. The CLI prints it on one line, no traceback."""
