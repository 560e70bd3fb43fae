"""Top-1 of one checkpoint with more test-time views: the centre view, + its mirror image, + the 1-pixel shifts
(up, down, left, right) of both (10 views), softmaxes averaged; on the held-out split by default.

    python bench/test_time_views.py runs/quick/best.pt [--split val]

docs/recipes.md's table of what was tried for the quick recipe was made with it. The shifted views pad with 0
(the mean pixel after normalisation) and crop back, as ``--padding`` training crops do.
"""
from __future__ import annotations

import argparse

import numpy as np
import torch
import torch.nn.functional as F

from alexnet.checkpoint import Checkpoint

SHIFTS = ((1, 0), (-1, 0), (0, 1), (0, -1))


def shifted(views: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    pad = F.pad(views, (1, 1, 1, 1))
    return torch.roll(pad, (dy, dx), (2, 3))[:, :, 1:-1, 1:-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint")
    parser.add_argument("--split", default="val")
    args = parser.parse_args()
    ckpt = Checkpoint.load(args.checkpoint)
    model = ckpt.build_model().to(memory_format=torch.channels_last)
    data = ckpt.open_split(args.split, progress=False)
    centre = ckpt.eval_transform(False, False)(torch.from_numpy(np.array(data.images)).permute(0, 3, 1, 2))
    labels = torch.as_tensor(data.labels)

    @torch.no_grad()
    def probs(views: torch.Tensor) -> torch.Tensor:
        return torch.cat([F.softmax(model(views[i:i + 1000].contiguous(memory_format=torch.channels_last)), 1)
                          for i in range(0, len(views), 1000)])

    def top1(p: torch.Tensor) -> float:
        return (p.argmax(1) == labels).float().mean().item()

    one = probs(centre)
    two = one + probs(centre.flip(3))
    ten = two + sum(probs(shifted(centre, dy, dx)) + probs(shifted(centre, dy, dx).flip(3)) for dy, dx in SHIFTS)
    print(f"{args.checkpoint} on {args.split} ({len(labels)} images): centre {top1(one):.4f}  + mirror {top1(two):.4f}"
          f"  + mirror + 4 shifts {top1(ten):.4f}")


if __name__ == "__main__":
    main()
