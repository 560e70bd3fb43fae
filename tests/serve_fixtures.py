"""What the `alexnet serve` tests share: a briefly trained checkpoint, Fashion-MNIST test images as files, bad
files, and the server as a subprocess (bench/serve_load.py's ``start_server``)."""
from __future__ import annotations

import io
import sys
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from alexnet.cli.main import main

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from serve_load import bomb_png, fashion_pngs, start_server  # noqa: E402,F401  (re-exported for the tests)

QUICK = ["--data", "fashion-mnist", "--train-subset", "3840", "--val-subset", "200", "--batch-size", "64",
         "--epochs", "1", "--quiet"]


def quick_checkpoint(tmp_path_factory) -> str:
    """The quick recipe trained for one epoch of 3,840 Fashion-MNIST images (60 steps, about 10 s, val top-1 about
    0.68), once per test session: every serve test module asks for the same one."""
    folder = tmp_path_factory.getbasetemp() / "serve-quick"
    if not (folder / "best.pt").exists():
        assert main(["train", *QUICK, "--out", str(folder)]) == 0
    return str(folder / "best.pt")


def fashion_files(folder: Path, n: int = 6) -> list[Path]:
    """The first ``n`` Fashion-MNIST test images as PNG files, and the first also as an RGB JPEG at 3x size."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, png in enumerate(fashion_pngs(n)):
        paths.append(folder / f"{i}.png")
        paths[-1].write_bytes(png)
    big = Image.open(io.BytesIO(fashion_pngs(1)[0])).convert("RGB").resize((84, 84), Image.Resampling.BILINEAR)
    big.save(folder / "big.jpg", quality=95)
    return paths + [folder / "big.jpg"]


def real_bomb_png(side: int = 12_000) -> bytes:
    """A valid PNG of side x side black grey pixels (144 M at 12,000: over the default limit of 89 M), about
    140 KB: what a decoder would allocate in full. Written row by row, never held as pixels here either."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")
    packer, row, parts = zlib.compressobj(9), b"\0" * (side + 1), []
    for _ in range(side):
        parts.append(packer.compress(row))
    parts.append(packer.flush())
    header = side.to_bytes(4, "big") * 2 + bytes([8, 0, 0, 0, 0])
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", b"".join(parts)) + chunk(b"IEND", b"")


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()
