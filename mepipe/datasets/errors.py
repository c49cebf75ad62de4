"""The one exception type for bad dataset input (sheets, coding tables, folder layouts)."""


class DatasetError(ValueError):
    """Bad dataset input.

    The message is the whole explanation on one line: which file (and row and column, where there
    is one), what was found and what was expected. Callers print it as it is; no traceback is
    needed to understand it.
    """
