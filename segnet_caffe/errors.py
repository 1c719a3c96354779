"""The one exception type users see: a single line naming the file, line, layer or blob at fault."""


class CaffeError(Exception):
    """A user-facing error: its message is one line that says what to fix."""
