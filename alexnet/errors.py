"""Errors meant for people: what was wrong, with which file or flag, and what to do."""


class UsageError(ValueError):
    """Bad usage or bad input. The command line prints the message and exits with status 2."""
