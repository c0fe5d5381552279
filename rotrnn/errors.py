"""Expected errors: bad configuration, missing data, bad arguments, a run directory in use. The command line prints
their one-line message (it names the file, key or argument) and exits non-zero without a traceback; any other
exception is a bug and keeps its traceback."""
from __future__ import annotations


class UserError(Exception):
    """An error the user can fix from its message alone."""
