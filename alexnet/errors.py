"""Errors meant for people: what was wrong, with which file or flag, and what to do."""
import contextlib
import signal
import threading
from typing import Iterator



class Failure(Exception):
    """An error the command line reports as one sentence, ``alexnet COMMAND: <report()>``, and exits with
    ``exit_code``: the mapping lives here, in the error types, and ``cli.main`` alone applies it."""

    exit_code = 1

    def report(self) -> str:
        return f"error: {self}"


class UsageError(Failure, ValueError):
    """Bad usage or bad input. The command line prints the message and exits with status 2."""

    exit_code = 2


class TrainingInterrupted(Failure):
    """SIGINT/SIGTERM arrived; ``last.pt`` was written. ``exit_code`` is 130 or 143."""

    def __init__(self, signum: int, resume_hint: str) -> None:
        super().__init__(resume_hint)
        self.signum, self.exit_code = signum, 128 + signum

    def report(self) -> str:
        return f"interrupted; {self}"


class NonFiniteLoss(Failure):
    """The loss became NaN/inf; the last good checkpoint was left untouched (exit 1)."""

    def report(self) -> str:
        return (f"stopped: {self}. The last good checkpoint (if any) is untouched. Try a lower --lr, or check the "
                f"data for broken images or labels.")


class NoSpace(Failure, OSError):
    """A file could not be written: the disk (or quota) is full. Any earlier file at that path is untouched
    (``alexnet.util.atomic``); exit 1."""


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
