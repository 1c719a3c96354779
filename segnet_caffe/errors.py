"""The one exception type users see: a single line naming the file, line, layer or blob at fault."""


class CaffeError(Exception):
    """A user-facing error: its message is one line that says what to fix."""


class BadLabelsError(CaffeError):
    """Label values that are neither a class nor the ignore label; `items` maps each batch item
    holding some to its bad values, so the net can name the files they came from."""

    def __init__(self, message, bottom_index, items):
        super().__init__(message)
        self.bottom_index = bottom_index
        self.items = items
