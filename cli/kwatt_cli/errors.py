"""Errors that the command line turns into one sentence and a non-zero exit."""


class UsageError(Exception):
    """Bad input from the user (a file, a field, a value): exit status 2, no traceback."""
