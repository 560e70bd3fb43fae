"""Progress for long loops: a tqdm bar on a terminal, plain periodic lines otherwise, nothing if quiet."""
from __future__ import annotations

import sys
import time

from tqdm import tqdm


class Progress:
    """``update(steps, n=images, **postfix)``; shows images/s, ETA and the postfix (loss, accuracy)."""

    def __init__(self, total: int, desc: str = "", enabled: bool = True, lines: int = 5) -> None:
        self.total, self.desc, self.enabled = total, desc, enabled
        self.done, self.images, self.start = 0, 0, time.perf_counter()
        self.tty = enabled and sys.stderr.isatty()
        self.bar = tqdm(total=total, desc=desc, dynamic_ncols=True, leave=False) if self.tty else None
        self.every = max(1, total // lines)

    def update(self, steps: int = 1, n: int = 0, **postfix: float) -> None:
        self.done += steps
        self.images += n
        if not self.enabled:
            return
        rate = self.images / max(time.perf_counter() - self.start, 1e-9)
        fields = {k: f"{v:.4g}" for k, v in postfix.items()}
        fields["img/s"] = f"{rate:.0f}"
        if self.bar is not None:
            self.bar.set_postfix(fields, refresh=False)
            self.bar.update(steps)
        elif self.done % self.every == 0 or self.done == self.total:
            eta = (self.total - self.done) * (time.perf_counter() - self.start) / max(self.done, 1)
            text = " ".join(f"{k} {v}" for k, v in fields.items())
            print(f"{self.desc} {self.done}/{self.total} {text} eta {eta:.0f}s", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
