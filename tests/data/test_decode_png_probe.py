"""alexnet.data.decode.probe_image on PNGs: the checking pass reads a PNG's header only (no full decode), and still
finds what it must."""
from __future__ import annotations

import io

import numpy as np
from PIL import Image, PngImagePlugin

from alexnet.data import open_dataset
from alexnet.data.decode import decode_image, probe_image
from data_fixtures import _png_chunk, bomb_png, photo_folder, save


def _exif_orientation_6() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6
    return exif.tobytes()


def test_png_probe_does_not_decode_the_pixels(tmp_path, monkeypatch):
    path = save(tmp_path / "a.png", np.zeros((30, 50, 3), np.uint8))

    def no_decoding(self):
        raise AssertionError("the probe decoded the pixels")
    monkeypatch.setattr(PngImagePlugin.PngImageFile, "load", no_decoding)
    probe = probe_image(str(path))
    assert (probe.height, probe.width, probe.grey) == (30, 50, False)


def test_png_exif_orientation_is_found_before_or_after_the_pixels(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (10, 20, 3), dtype=np.uint8)
    early = save(tmp_path / "early.png", pixels, exif=_exif_orientation_6())
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    data = buffer.getvalue()
    late = tmp_path / "late.png"                        # eXIf after IDAT, just before IEND (12 bytes)
    late.write_bytes(data[:-12] + _png_chunk(b"eXIf", _exif_orientation_6()) + data[-12:])
    for path in (early, late):
        probe = probe_image(str(path))
        assert (probe.height, probe.width) == (20, 10), path.name
        assert decode_image(str(path), channels=3).shape == (20, 10, 3)


def test_truncated_and_bomb_pngs_are_still_skipped_with_a_reason(tmp_path):
    root = photo_folder(tmp_path / "photos", per_class=3, classes=("cat", "dog"))
    whole = (root / "cat" / "0.png").read_bytes()
    (root / "cat" / "cut.png").write_bytes(whole[:len(whole) // 2])
    bomb_png(root / "dog" / "bomb.png")
    data = open_dataset(str(root), "train", val_fraction=0, size=16, progress=False, workers=0,
                        cache_dir=str(tmp_path / "cache"))
    reasons = {item.rsplit("/", 1)[-1]: reason for item, reason in data.skipped}
    assert "truncated" in reasons["cut.png"] or "corrupt" in reasons["cut.png"]
    assert "too many pixels" in reasons["bomb.png"] and len(data) == 6
