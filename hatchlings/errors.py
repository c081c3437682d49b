"""The one exception type for user mistakes (a file, key or value): the CLI prints it as one line."""


class UsageError(Exception):
    """A problem with what the user asked for (file, key, value): reported as one line, no traceback."""
