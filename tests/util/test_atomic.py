"""alexnet.util.atomic: an interrupt that reaches a writer (torch's zip writer turns it into its own RuntimeError,
"unexpected pos", whose __context__ is the interrupt) leaves as the interrupt, the temporary file removed and
the earlier file kept (issue 23, item 8)."""
from __future__ import annotations

import pytest
import torch

from alexnet.errors import Terminated
from alexnet.util.atomic import atomic_path


class Interrupting:
    """A file whose third write raises ``interrupt``, as a signal handler does in the middle of a save."""

    def __init__(self, f, interrupt: BaseException) -> None:
        self.f, self.interrupt, self.writes = f, interrupt, 0

    def write(self, data) -> int:
        self.writes += 1
        if self.writes == 3:
            raise self.interrupt
        return self.f.write(data)

    def flush(self) -> None:
        self.f.flush()


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt(), Terminated()], ids=["SIGINT", "SIGTERM"])
def test_an_interrupt_inside_torch_save_leaves_as_the_interrupt(tmp_path, interrupt):
    target = tmp_path / "out.pt"
    target.write_bytes(b"earlier")
    with pytest.raises(type(interrupt)) as raised:
        with atomic_path(target) as tmp, open(tmp, "wb") as f:
            torch.save({"a": torch.zeros(1000), "b": torch.ones(1000)}, Interrupting(f, interrupt))
    assert raised.value is interrupt and raised.value.__suppress_context__       # one traceback, not two
    assert target.read_bytes() == b"earlier" and sorted(p.name for p in tmp_path.iterdir()) == ["out.pt"]


def test_an_error_that_is_no_interrupt_is_left_alone(tmp_path):
    with pytest.raises(RuntimeError, match="unexpected pos"):
        with atomic_path(tmp_path / "out.pt") as tmp, open(tmp, "wb") as f:
            torch.save({"a": torch.zeros(1000)}, Interrupting(f, OSError("a bad pipe")))
    assert list(tmp_path.iterdir()) == []
