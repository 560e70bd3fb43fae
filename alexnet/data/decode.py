"""Decoding one image file into a uint8 (H, W, C) array, with a defined outcome for bad files.

A file that cannot become a correct image raises ``BadImage`` with a reason a person can act on;
callers skip it and report (path, reason), or stop when strict. Rules:
- empty, non-image, truncated or corrupt files: BadImage;
- not in any image format PIL reads: NotAnImage (a BadImage);
- more than ``max_pixels`` (default ``MAX_PIXELS``) pixels in the header (decompression bombs): TooManyPixels
  (a BadImage), before any pixel is allocated;
- EXIF orientation is applied (as ImageOps.exif_transpose, after the 8-bit conversion), so width/height are as a viewer shows them;
- 16-bit greyscale ("I;16", "I") is scaled to 8 bits: v8 = round(v16 * 255 / 65535), a band of rows at a time;
- transparency (RGBA, LA, P with transparency) is composited over white;
- CMYK, P, YCbCr, 1, L, ... become RGB (3 channels) or L (1 channel, ITU-R 601 luma);
- ``size``: rescale so the SHORT side is ``size`` and take the central size x size square [4]; ``rule``
  "square" (the default) resamples only that square (JPEGs first shrunk in the DCT domain when they are at
  least twice as large), "torchvision" resizes the whole image as torchvision's ``Resize(size)`` does (the long
  side rounded down, no DCT shrinking), then crops, so converted torchvision weights see torchvision's pixels.
"""
from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass
from typing import BinaryIO, Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")  # as torchvision
MAX_PIXELS = 89_478_485        # PIL's default Image.MAX_IMAGE_PIXELS (about 0.25 GB of RGB at 8 bits)
GREY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16L", "I;16B", "I;16N"})
SIXTEEN_BIT_MODES = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N"})
PLAIN_GREY_MODES = SIXTEEN_BIT_MODES | {"1", "L"}     # grey without alpha
ORIENTATION_TAG = 0x0112
TRANSPOSE = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
             5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
             8: Image.Transpose.ROTATE_90}          # EXIF orientation -> the transposition that displays it
STRIP_ROWS = 256             # rows converted at a time (see _convert)
BYTES_PER_PIXEL = 12         # decode_image's peak memory, per pixel of the source (measured up to 9.8: RGBA)
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, KeyError, TypeError,
                  Image.DecompressionBombError)


class BadImage(Exception):
    """A file that cannot be decoded into a correct image; ``str(err)`` is the reason."""


class NotAnImage(BadImage):
    """The bytes are in no image format PIL reads (a text file, a wrong extension, a wrecked header)."""


class TooManyPixels(BadImage):
    """The header declares more pixels than allowed (a possible decompression bomb); nothing was decoded."""


@dataclass(frozen=True)
class Probe:
    """What the header says, after EXIF orientation: the size as displayed, and whether it is greyscale."""

    height: int
    width: int
    grey: bool


def is_image_file(name: str) -> bool:
    return name.lower().endswith(IMG_EXTENSIONS) and not os.path.basename(name).startswith(".")


def _size(source: str | os.PathLike | BinaryIO) -> int:
    if isinstance(source, (str, os.PathLike)):
        return os.path.getsize(source)
    position = source.seek(0, io.SEEK_END)
    source.seek(0)
    return position


def _open(source: str | os.PathLike | BinaryIO, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """``source``: a path or a binary file object (read from its start)."""
    try:
        if _size(source) == 0:
            raise BadImage("empty file (0 bytes)")
    except OSError as err:
        raise BadImage(f"cannot read the file: {err.strerror or err}") from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(source)
    except Image.DecompressionBombError as err:
        raise TooManyPixels(f"too many pixels, possible decompression bomb ({err})") from None
    except UnidentifiedImageError:
        raise NotAnImage("not an image PIL can read (wrong extension, or a corrupt header)") from None
    except _DECODE_ERRORS as err:
        raise BadImage(f"corrupt or truncated image header ({err})") from None
    width, height = img.size
    if width * height > max_pixels:
        img.close()
        raise TooManyPixels(f"too many pixels: {width}x{height} = {width * height:,} exceeds the limit of "
                            f"{max_pixels:,} (possible decompression bomb); if the image is genuine, shrink it first")
    if width == 0 or height == 0:
        img.close()
        raise BadImage(f"image has no pixels ({width}x{height})")
    return img


def probe_image(path: str) -> Probe:
    """Read only the header: displayed size and greyness. Raises BadImage."""
    img = _open(path)
    with img:
        try:
            orientation = 1 if img.format == "PNG" and _png_without_exif(img) else \
                img.getexif().get(ORIENTATION_TAG, 1)
        except _DECODE_ERRORS as err:
            raise BadImage(f"corrupt EXIF data ({err})") from None
        width, height = img.size
        if orientation in (5, 6, 7, 8):   # rotated by 90 or 270 degrees
            width, height = height, width
        return Probe(height, width, img.mode in GREY_MODES)


def _png_without_exif(img: Image.Image) -> bool:
    """Whether a PNG has no eXIf chunk, read from the chunk headers only: PIL's getexif decodes the whole
    image to find one after the pixel data. An eXIf before the pixels is already in ``img.info``."""
    if "exif" in img.info:
        return False
    fp = img.fp
    try:
        position = fp.tell()
        fp.seek(8)                                        # after the signature
        try:
            while True:
                head = fp.read(8)
                if len(head) < 8:
                    return True                           # truncated: decode_image reports it
                length, kind = int.from_bytes(head[:4], "big"), head[4:]
                if kind == b"eXIf":
                    return False
                if kind == b"IEND":
                    return True
                fp.seek(length + 4, os.SEEK_CUR)          # data and CRC
        finally:
            fp.seek(position)
    except (OSError, ValueError, AttributeError):
        return False                                      # let getexif decide


def decode_image(source: str | os.PathLike | BinaryIO, *, channels: int, size: int | None = None, rule: str = "square",
                 max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode ``source`` (a path, or a binary file object such as ``io.BytesIO(upload)``) into uint8
    (H, W, channels); with ``size``, the central size x size square [4] (``rule``: "square" or "torchvision",
    see the module docstring). Over ``max_pixels`` in the header: TooManyPixels, before decoding.

    Raises BadImage with the reason when the file is not a decodable image.
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    if rule not in ("square", "torchvision"):
        raise ValueError(f"rule must be square or torchvision, got {rule!r}")
    img = _open(source, max_pixels)
    with img:
        try:
            if size is not None and img.format == "JPEG" and rule == "square":
                img.draft(img.mode, (size, size))   # DCT-domain downscale, never below size x size
            img.load()
            method = TRANSPOSE.get(img.getexif().get(ORIENTATION_TAG, 1))
            grey = img.mode in PLAIN_GREY_MODES          # resized as L, made RGB at the end: the same pixels
            pixels = _convert(img, 1 if grey else channels)     # 8 bits first, then the rotation (they commute)
            if method is not None:
                pixels = pixels.transpose(method)
            if size is not None:
                pixels = center_square(pixels, size) if rule == "square" else torchvision_square(pixels, size)
            if grey and channels == 3:
                pixels = pixels.convert("RGB")
            array = np.asarray(pixels, dtype=np.uint8)
        except BadImage:
            raise
        except _DECODE_ERRORS as err:
            raise BadImage(f"corrupt or truncated image data ({err})") from None
    if array.ndim == 2:
        array = array[:, :, None]
    return array


def _convert(img: Image.Image, channels: int) -> Image.Image:
    """``img`` as an "L" (channels=1) or "RGB" (channels=3) image, by the rules in the module docstring. Every rule
    is per pixel, so it runs on bands of ``STRIP_ROWS`` rows pasted into the result: besides the decoded source,
    only the 8-bit result and one band's temporaries exist (no full-size int64 or RGBA copies)."""
    target = "L" if channels == 1 else "RGB"
    if img.mode == target:
        return img
    if img.mode == "F":
        raise BadImage("floating-point pixels (mode F) have no defined 8-bit scale; save it as 8- or 16-bit")
    width, height = img.size
    out = Image.new(target, img.size)
    for top in range(0, height, STRIP_ROWS):
        band = img.crop((0, top, width, min(height, top + STRIP_ROWS)))
        out.paste(_convert_band(band, target), (0, top))
    return out


def _convert_band(img: Image.Image, target: str) -> Image.Image:
    mode = img.mode
    if mode in SIXTEEN_BIT_MODES:
        values = np.asarray(img).astype(np.int64)                       # big/little endian handled by numpy
        values = (np.clip(values, 0, 65535) * 255 + 32767) // 65535     # round(v * 255 / 65535)
        img = Image.fromarray(values.astype(np.uint8), "L")
    elif mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba).convert("RGB")
    return img if img.mode == target else img.convert(target)


def center_square(img: Image.Image, size: int) -> Image.Image:
    """Rescale so the short side is ``size``, then the central size x size crop [4], in one resampling."""
    width, height = img.size
    side = min(width, height)
    left, top = (width - side) / 2, (height - side) / 2
    if width == height == size:
        return img
    return img.resize((size, size), Image.Resampling.BILINEAR, box=(left, top, left + side, top + side))


def torchvision_square(img: Image.Image, size: int) -> Image.Image:
    """torchvision's ``Resize(size)`` (short side ``size``, long side rounded down, bilinear with PIL), then the
    central size x size crop at torchvision's ``center_crop`` offsets."""
    width, height = img.size
    if width <= height:
        width, height = size, int(size * height / width)
    else:
        width, height = int(size * width / height), size
    img = img.resize((width, height), Image.Resampling.BILINEAR)
    top, left = int(round((height - size) / 2.0)), int(round((width - size) / 2.0))
    return img.crop((left, top, left + size, top + size))


def convert_channels(images: np.ndarray, channels: int) -> np.ndarray:
    """uint8 (N, H, W, C) arrays with C in {1, 3} as ``channels`` channels (replicate grey, or 601 luma)."""
    have = images.shape[-1]
    if have == channels:
        return images
    if channels == 3:
        return np.repeat(images, 3, axis=-1)
    # ITU-R 601-2 luma with PIL's integer weights, so arrays and decoded files agree exactly
    rgb = images.astype(np.uint32)
    luma = (rgb[..., 0] * 19595 + rgb[..., 1] * 38470 + rgb[..., 2] * 7471 + 0x8000) >> 16
    return luma.astype(np.uint8)[..., None]


def shape_rule(native: Sequence[int] | None, size: int) -> tuple[tuple[int, int], int | None]:
    """The shape rule: ((H, W) stored, the ``size`` to rescale to, or None to keep the pixels as they are).

    Images that all have one size ``native`` (H, W) that fits in size x size (28x28 digits, 32x32 CIFAR)
    are kept as they are; otherwise (``native`` None: sizes differ) each is rescaled so its short side
    is ``size`` and centre-cropped to size x size [4] (smaller photos are upscaled).
    """
    if native is not None and max(native[0], native[1]) <= size:
        return (int(native[0]), int(native[1])), None
    return (size, size), size


def fit_arrays(images: np.ndarray, size: int) -> np.ndarray:
    """uint8 (N, H, W, C) images of one size by ``shape_rule``: as they are, or each rescaled and centre-cropped."""
    if shape_rule(images.shape[1:3], size)[1] is None:
        return images
    squeeze = images.shape[-1] == 1
    out = np.empty((len(images), size, size, images.shape[-1]), np.uint8)
    for i, image in enumerate(images):
        fitted = np.asarray(center_square(Image.fromarray(image[..., 0] if squeeze else image), size))
        out[i] = fitted[..., None] if squeeze else fitted
    return out

