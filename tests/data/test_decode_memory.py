"""alexnet.data.decode.decode_image's peak memory per pixel of the source (issue 23, item 1): within
``BYTES_PER_PIXEL`` for 16-bit grey, RGBA and RGB PNGs, each measured in a fresh process (its peak RSS, VmHWM,
reset before one decode). Before the fix, 16-bit grey took about 18 bytes per pixel and RGBA 20."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self")
from PIL import Image

from alexnet.data.decode import BYTES_PER_PIXEL

SIDE = 2000
MEASURE = """
import io, sys
from alexnet.data.decode import decode_image
def status(key):
    return next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith(key + ":"))
data = open(sys.argv[1], "rb").read()
with open("/proc/self/clear_refs", "w") as reset:
    reset.write("5")                  # the peak (VmHWM) starts again from now: imports' peaks do not hide it
before = status("VmRSS")
decode_image(io.BytesIO(data), channels=3, size=224)
print(status("VmHWM") - before)
"""


def _image(kind: str) -> Image.Image:
    row = np.random.default_rng(0).integers(0, 256, (1, SIDE, 4), dtype=np.uint8)
    if kind == "16-bit grey":
        return Image.fromarray((np.arange(SIDE * SIDE) % 65536).astype(np.uint16).reshape(SIDE, SIDE))
    return Image.fromarray(np.repeat(row[..., :len(kind)], SIDE, axis=0), kind)


@pytest.mark.parametrize("kind", ["16-bit grey", "RGBA", "RGB"])
def test_peak_memory_per_source_pixel_is_bounded(kind, tmp_path):
    path = tmp_path / "image.png"
    _image(kind).save(path, compress_level=1)
    out = subprocess.run([sys.executable, "-c", MEASURE, str(path)], capture_output=True, text=True, check=True)
    grown = int(out.stdout)
    assert grown <= BYTES_PER_PIXEL * SIDE * SIDE, f"{kind}: {grown / SIDE ** 2:.1f} bytes per pixel"
