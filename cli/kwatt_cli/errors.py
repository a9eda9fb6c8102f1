"""Errors that the command line turns into one sentence and a non-zero exit."""


class UsageError(Exception):
    """Bad input from the user (a file, a field, a value): exit status 2, no traceback."""


class CommandError(Exception):
    """The command could not do its work (no cluster, no such object, no permission):
    exit status 1, no traceback."""
