"""Errors the user can fix; the entry point prints them as one line, no traceback."""

EXIT_BAD_INPUT = 2  # the exit status of every UserError, wherever it is reported


class UserError(Exception):
    """Bad input: a config value, a data file or a run folder that cannot be used."""


class ConfigError(UserError):
    """A config value outside what is allowed."""


class DataError(UserError):
    """Data files missing, unreadable or of the wrong shape."""


class RunFolderError(UserError):
    """A run folder that cannot be resumed as asked."""


class Diverged(Exception):
    """The training loss became NaN or infinite."""


class FileProblem(UserError):
    """A file that cannot be written or read safely: a full disk, a symbolic link or a FIFO where a regular
    file of the folder belongs (filesystem.py)."""
