"""Errors meant for people: what was wrong, with which file or flag, and what to do."""
import contextlib
import signal
import threading
from typing import Iterator



class UsageError(ValueError):
    """Bad usage or bad input. The command line prints the message and exits with status 2."""


class TrainingInterrupted(Exception):
    """SIGINT/SIGTERM arrived; ``last.pt`` was written. ``exit_code`` is 130 or 143."""

    def __init__(self, signum: int, resume_hint: str) -> None:
        super().__init__(resume_hint)
        self.exit_code = 128 + signum


class NonFiniteLoss(Exception):
    """The loss became NaN/inf; the last good checkpoint was left untouched."""


class Terminated(BaseException):
    """SIGTERM arrived (``terminated_as_exception``): raised so cleanups run; the command exits 143."""

    exit_code = 143


@contextlib.contextmanager
def terminated_as_exception() -> Iterator[None]:
    """Within the block, SIGTERM raises Terminated in the main thread (so ``finally`` blocks, staging
    folders and process pools are cleaned up) instead of ending the process on the spot."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum, frame):
        raise Terminated()
    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
