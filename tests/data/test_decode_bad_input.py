"""alexnet.data.decode and the readers over it: bad input has a defined outcome: skipped and reported with a reason,
or (strict) an error naming it."""
from __future__ import annotations

import json
import os
import re

import numpy as np
import pytest
from PIL import Image

from alexnet.cli.main import main
from alexnet.data import open_dataset, prepare
from alexnet.data.decode import MAX_PIXELS, BadImage, decode_image, probe_image
from alexnet.errors import UsageError
from data_fixtures import bomb_png, idx_folder, photo_folder, save, truncated_jpeg, write_idx


def reason(path) -> str:
    with pytest.raises(BadImage) as err:
        probe_image(str(path))
        decode_image(str(path), channels=3)
    return str(err.value)


def test_broken_files_are_refused_with_reasons(tmp_path):
    (tmp_path / "zero.jpg").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("this is not a JPEG\n")
    assert reason(tmp_path / "zero.jpg") == "empty file (0 bytes)"
    assert "not an image" in reason(tmp_path / "text.jpg")
    truncated = truncated_jpeg(tmp_path / "truncated.jpg")
    assert probe_image(str(truncated)).width == 48                  # the header is intact ...
    assert "truncated" in reason(truncated)                          # ... the pixel data is not


def test_decompression_bombs_are_refused_before_decoding(tmp_path):
    bomb = bomb_png(tmp_path / "bomb.png")                           # 20000 x 20000, one colour
    assert os.path.getsize(bomb) < 100_000
    assert "too many pixels" in reason(bomb) and "decompression bomb" in reason(bomb)
    over = bomb_png(tmp_path / "over.png", side=int(MAX_PIXELS ** 0.5) + 100)   # between PIL's warning and error
    assert reason(over).startswith(f"too many pixels: {int(MAX_PIXELS ** 0.5) + 100}x")


def test_colour_modes_become_the_wanted_channels(tmp_path):
    cmyk = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (10, 6), (0, 255, 255, 0)).save(cmyk, quality=100)
    rgb = decode_image(str(cmyk), channels=3)
    assert rgb.shape == (6, 10, 3) and np.abs(rgb[3, 5].astype(int) - [255, 0, 0]).max() <= 3   # red

    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[0, 0] = [255, 0, 0, 255]                                    # opaque red; the rest fully transparent
    save(tmp_path / "rgba.png", rgba)
    out = decode_image(str(tmp_path / "rgba.png"), channels=3)
    assert out[0, 0].tolist() == [255, 0, 0] and out[1, 1].tolist() == [255, 255, 255]   # over white

    palette = Image.new("P", (3, 1))
    palette.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    palette.putpixel((1, 0), 1)
    palette.save(tmp_path / "p.png")
    assert decode_image(str(tmp_path / "p.png"), channels=3)[0].tolist() == [[10, 20, 30], [200, 100, 50], [10, 20, 30]]

    save(tmp_path / "grey.png", np.array([[0, 77, 255]], np.uint8))
    assert decode_image(str(tmp_path / "grey.png"), channels=3)[0].tolist() == [[0] * 3, [77] * 3, [255] * 3]
    assert decode_image(str(tmp_path / "grey.png"), channels=1).shape == (1, 3, 1)
    save(tmp_path / "red.png", np.full((1, 1, 3), [255, 0, 0], np.uint8))
    assert decode_image(str(tmp_path / "red.png"), channels=1).item() == 76   # ITU-R 601 luma of red


def test_16_bit_is_scaled_not_saturated(tmp_path):
    gradient = np.linspace(0, 65535, 64 * 4).astype(np.uint16).reshape(4, 64)
    gradient[0, :4] = [0, 257, 32768, 65535]
    save(tmp_path / "g16.png", gradient)
    assert Image.open(tmp_path / "g16.png").mode == "I;16"
    out = decode_image(str(tmp_path / "g16.png"), channels=1)[..., 0]
    assert out[0, :4].tolist() == [0, 1, 128, 255]
    assert (out == np.floor(gradient.astype(float) * 255 / 65535 + 0.5)).all()
    assert 120 <= np.median(out) <= 135                              # not everything at 255
    Image.fromarray(np.array([[0, 32768, 65535]], np.int32)).save(tmp_path / "i32.tif")   # mode "I"
    assert decode_image(str(tmp_path / "i32.tif"), channels=1).ravel().tolist() == [0, 128, 255]


def test_exif_orientation_6_is_applied(tmp_path):
    stored = np.zeros((4, 6, 3), np.uint8)                          # 6 wide, 4 high as stored
    stored[0, 0], stored[0, 5], stored[3, 0] = [255, 0, 0], [0, 255, 0], [0, 0, 255]
    exif = Image.Exif()
    exif[0x0112] = 6                                                 # "rotate 90 degrees clockwise to display"
    Image.fromarray(stored).save(tmp_path / "rotated.png", exif=exif)
    probe = probe_image(str(tmp_path / "rotated.png"))
    assert (probe.height, probe.width) == (6, 4)
    shown = decode_image(str(tmp_path / "rotated.png"), channels=3)
    assert shown.shape == (6, 4, 3)
    assert shown[0, 3].tolist() == [255, 0, 0]                       # stored top-left is now top-right
    assert shown[5, 3].tolist() == [0, 255, 0] and shown[0, 0].tolist() == [0, 0, 255]
    assert (shown == np.rot90(stored, k=-1)).all()


def bad_folder(root):
    """Good photos in cat/ and dog/ plus one of every bad kind, an empty class and a 16-bit image."""
    photo_folder(root, per_class=3, classes=("cat", "dog"))
    (root / "cat" / "zero.jpg").write_bytes(b"")
    (root / "cat" / "text.jpg").write_text("not an image")
    truncated_jpeg(root / "dog" / "truncated.jpg")
    bomb_png(root / "dog" / "bomb.png", side=12000)
    (root / "empty").mkdir()
    save(root / "dog" / "deep.png", np.full((9, 9), 40000, np.uint16))
    return root


def test_prepare_skips_and_reports_every_bad_item(tmp_path, capsys):
    root = bad_folder(tmp_path / "photos")
    assert main(["prepare", str(root), "--out", str(tmp_path / "cache"), "--size", "16", "--workers", "1"]) == 0
    out = capsys.readouterr().out
    assert "skipped: 5" in out and "train 7 of 16x16x3" in out
    meta = json.loads((tmp_path / "cache" / "alexnet-cache.json").read_text())
    reasons = {os.path.basename(path): why for path, why in meta["skipped"]}
    assert set(reasons) == {"zero.jpg", "text.jpg", "truncated.jpg", "bomb.png", "empty"}
    assert "empty class folder" in reasons["empty"] and "truncated" in reasons["truncated.jpg"]
    assert "too many pixels" in reasons["bomb.png"]
    for name, why in reasons.items():
        assert f"{name}: {why}" in out
    data = open_dataset(str(tmp_path / "cache"), val_fraction=0, progress=False)
    assert data.classes == ["cat", "dog", "empty"]                   # the empty class is kept as label 2
    assert len(data) == 7 and 2 not in data.labels and len(data.skipped) == 5


def test_strict_stops_lists_everything_and_writes_nothing(tmp_path, capsys):
    root = bad_folder(tmp_path / "photos")
    assert main(["prepare", str(root), "--out", str(tmp_path / "cache"), "--strict", "--workers", "1"]) == 2
    err = capsys.readouterr().err
    assert "5 bad item(s), and --strict is set (nothing was written)" in err
    for name in ("zero.jpg", "text.jpg", "truncated.jpg", "bomb.png", "empty"):
        assert name in err
    assert not (tmp_path / "cache").exists()
    assert [p for p in os.listdir(tmp_path) if "tmp" in p] == []
    with pytest.raises(UsageError, match="--strict"):
        open_dataset(str(root), strict=True, cache_dir=str(tmp_path / "c"), progress=False)


def test_greyscale_datasets_stay_one_channel_unless_forced(tmp_path):
    for i in range(3):
        save(tmp_path / "grey" / "a" / f"{i}.png", np.full((5, 5), 10 * i, np.uint8))
    save(tmp_path / "grey" / "b" / "deep.png", np.full((5, 5), 65535, np.uint16))
    grey = prepare(str(tmp_path / "grey"), str(tmp_path / "c1"), workers=0, progress=False)
    assert grey.shape == (5, 5, 1)
    forced = prepare(str(tmp_path / "grey"), str(tmp_path / "c3"), workers=0, channels=3, progress=False)
    assert forced.shape == (5, 5, 3)
    save(tmp_path / "grey" / "b" / "colour.png", np.full((5, 5, 3), 9, np.uint8))
    assert prepare(str(tmp_path / "grey"), str(tmp_path / "c1"), workers=0, progress=False).shape == (5, 5, 3)


def test_csv_rows_pointing_nowhere_or_without_labels(tmp_path, capsys):
    for i in range(3):
        save(tmp_path / "images" / f"{i}.png", np.full((6, 6, 3), i, np.uint8))
    (tmp_path / "train.csv").write_text("id,label\n0,cat\n1,\n7,dog\n2,dog\n")
    data = open_dataset(str(tmp_path / "train.csv"), val_fraction=0, cache_dir=str(tmp_path / "c"), progress=False)
    assert len(data) == 2 and data.classes == ["cat", "dog"]
    assert dict(data.skipped) == {f"{tmp_path / 'train.csv'}:3": "blank label in column 'label'",
                                  f"{tmp_path / 'train.csv'}:4": "file not found: '7' (looked for it relative to "
                                                                 "the CSV and as images/7.<ext>)"}
    assert main(["prepare", str(tmp_path / "train.csv"), "--out", str(tmp_path / "o"), "--label-column", "kind"]) == 2
    assert "no column 'kind' (--label-column); the columns are: id, label" in capsys.readouterr().err


def test_broken_idx_files_name_the_file(tmp_path, capsys):
    root = idx_folder(tmp_path / "idx", gz=False)
    labels = root / "train-labels-idx1-ubyte"
    write_idx(labels, np.zeros(50, np.uint8), magic=b"\0\0\x08\x03")
    with pytest.raises(UsageError, match=re.escape(f"{labels}: wrong idx magic 00 00 08 03, expected 00 00 08 01")):
        open_dataset(str(root), progress=False)
    write_idx(labels, np.zeros(50, np.uint8), magic=b"GIF8")
    with pytest.raises(UsageError, match="not an idx file"):
        open_dataset(str(root), progress=False)
    write_idx(labels, np.zeros(49, np.uint8))
    with pytest.raises(UsageError, match=r"train-images-idx3-ubyte holds 50 images but .*labels-idx1-ubyte holds 49"):
        open_dataset(str(root), progress=False)
    write_idx(labels, np.zeros(50, np.uint8))
    write_idx(root / "train-images-idx3-ubyte", np.zeros((50, 8, 8), np.uint8), cut=100)
    assert main(["prepare", str(root), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "train-images-idx3-ubyte: truncated: the header says 50x8x8 = 3,200 bytes of data, the file has 3,100" in err
    assert not (tmp_path / "o").exists()
    gz = idx_folder(tmp_path / "gz")
    (gz / "t10k-images-idx3-ubyte.gz").write_bytes((gz / "t10k-images-idx3-ubyte.gz").read_bytes()[:-30])
    with pytest.raises(UsageError, match="t10k-images-idx3-ubyte.gz: cannot be read .*corrupt or truncated"):
        open_dataset(str(gz), "test", progress=False)
