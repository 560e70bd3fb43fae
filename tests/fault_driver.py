"""Run the command line with a fault injected into the training loop (tests only).

    python tests/fault_driver.py "nan,step=20" train --data ...          # the batch of global step 20 becomes NaN
    torchrun ... tests/fault_driver.py "raise,rank=1,step=2" train ...     # rank 1 raises at global step 2

The fault reaches ``alexnet.train.loop.train`` as its ``on_step`` hook, called before each step's forward.
"""
import functools
import sys

import alexnet.train.loop
from alexnet.cli.main import main


def fault(spec: str):
    kind, *fields = spec.split(",")
    where = dict(item.split("=") for item in fields)

    def on_step(rank: int, step: int, x) -> None:
        if int(where.get("step", -1)) != step or int(where.get("rank", rank)) != rank:
            return
        if kind == "raise":
            raise RuntimeError(f"injected fault on rank {rank} at step {step}")
        if kind == "nan":
            x.fill_(float("nan"))
    return on_step


if __name__ == "__main__":
    alexnet.train.loop.train = functools.partial(alexnet.train.loop.train, on_step=fault(sys.argv[1]))
    sys.exit(main(sys.argv[2:]))
