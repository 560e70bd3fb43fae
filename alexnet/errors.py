"""Errors meant for people: what was wrong, with which file or flag, and what to do."""


class UsageError(ValueError):
    """Bad usage or bad input. The command line prints the message and exits with status 2."""


class TrainingInterrupted(Exception):
    """SIGINT/SIGTERM arrived; ``last.pt`` was written. ``exit_code`` is 130 or 143."""

    def __init__(self, signum: int, resume_hint: str) -> None:
        super().__init__(resume_hint)
        self.exit_code = 128 + signum


class NonFiniteLoss(Exception):
    """The loss became NaN/inf; the last good checkpoint was left untouched."""
