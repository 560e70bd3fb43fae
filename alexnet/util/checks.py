"""Checks the command line makes before any data is loaded or any model trained: flags that name an output
path (--out, --json, --confusion), --model-kwargs, sizes a model cannot be built at, small positive numbers.

Each failure is a ``UsageError`` (exit 2) whose sentence names the flag or file. ``alexnet.util.atomic`` then writes
such a path whole or not at all.
"""
from __future__ import annotations

import inspect
import os
import tempfile

from alexnet.errors import UsageError

MAX_INPUT_ELEMENTS = 3 * 4096 * 4096     # one image of 3 x 4096 x 4096: well above any model's real input
# figure suffixes matplotlib writes, and the first bytes of an existing file that may be overwritten by one
FIGURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".pdf", ".svg", ".tif", ".tiff", ".webp")
IMAGE_MAGIC = (b"\x89PNG", b"\xff\xd8\xff", b"%PDF", b"II*\x00", b"MM\x00*", b"RIFF", b"GIF8")


def _can_create_in(folder: str, path: str, flag: str) -> None:
    """A file can really be created in ``folder`` (as root, os.access says yes even to /proc): try, then remove."""
    try:
        with tempfile.TemporaryFile(prefix=".alexnet-probe-", dir=folder):
            pass
    except OSError as err:
        raise UsageError(f"{flag} {path}: cannot create a file in {folder} ({err.strerror})") from None


def _writable_ancestor(path: str, flag: str) -> None:
    """The nearest existing folder above ``path`` is a folder this process may write into."""
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise UsageError(f"{flag} {path}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"{flag} {path}: cannot write into {parent} (permission denied)")
    _can_create_in(parent, path, flag)


def writable_folder(path: str, flag: str) -> None:
    """``path`` is a folder, or can be made one, that this process may write into."""
    if os.path.exists(path):
        if not os.path.isdir(path):
            raise UsageError(f"{flag} {path} is a file; it must be a folder (or not exist yet)")
        if not os.access(path, os.W_OK | os.X_OK):
            raise UsageError(f"{flag} {path}: cannot write into this folder (permission denied)")
        _can_create_in(path, path, flag)
        return
    _writable_ancestor(path, flag)


def writable_file(path: str | None, flag: str) -> None:
    """``path`` (None or - for stdout: nothing to check) can be written as a file."""
    if path is None or path == "-":
        return
    if os.path.isdir(path):
        raise UsageError(f"{flag} {path} is a folder; give a file name")
    if os.path.exists(path) and not os.access(path, os.W_OK):
        raise UsageError(f"{flag} {path}: cannot write this file (permission denied)")
    _writable_ancestor(path, flag)


def figure_file(path: str, flag: str, suffixes: tuple[str, ...] = FIGURE_SUFFIXES) -> None:
    """``path`` is writable, its suffix names a format the figure is written in, and it is not an existing file
    other than an image (a figure never overwrites notes.txt, nor a file it was given by mistake)."""
    writable_file(path, flag)
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in suffixes:
        raise UsageError(f"{flag} {path}: the file name must end in {', '.join(suffixes)} (the format written), "
                         f"not {suffix or 'no suffix'}")
    if os.path.isfile(path) and os.path.getsize(path):
        with open(path, "rb") as f:
            head = f.read(4096)
        if not head.startswith(IMAGE_MAGIC) and b"<svg" not in head:
            raise UsageError(f"{flag} {path} exists and is not an image; refusing to overwrite it")


def at_least(value: int, low: int, flag: str) -> None:
    if value < low:
        raise UsageError(f"{flag} must be >= {low}, got {value}")


def at_most(value: int, high: int, flag: str, why: str = "") -> None:
    if value > high:
        raise UsageError(f"{flag} must be <= {high}{why}, got {value}")


def input_size(size: int, channels: int, flag: str = "--input-size") -> None:
    """A size a model can be run at on this machine (a sentence instead of torch's "can't allocate")."""
    if size * size * max(channels, 1) > MAX_INPUT_ELEMENTS:
        raise UsageError(f"{flag} {size} is too large: one {channels}x{size}x{size} image (and the layers it "
                         f"feeds) cannot be allocated; use a side of at most {int((MAX_INPUT_ELEMENTS / 3) ** 0.5)}")


def no_towers_in(kwargs: dict) -> None:
    """The towers are placement, set by --towers, never a model argument (their devices are not stored)."""
    if "towers" in kwargs:
        raise UsageError("put the towers' devices in --towers DEV0,DEV1, not in --model-kwargs")


def model_kwargs(model: str, kwargs: dict) -> None:
    """Every key of ``--model-kwargs`` is an argument of the model's builder (or of AlexNet, which a builder
    taking ``**kw`` passes them to), and the model builds with them (on the meta device: no memory)."""
    if not kwargs:
        return
    no_towers_in(kwargs)
    import torch
    from alexnet.models import AlexNet, create_model, model_info
    info = model_info(model)
    fixed = {"num_classes", "in_channels", "input_size", "towers"}
    params = inspect.signature(info.builder).parameters
    known = {n for n, p in params.items() if p.kind is not p.VAR_KEYWORD}
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        known |= set(inspect.signature(AlexNet).parameters)
    unknown = sorted(set(kwargs) - (known - fixed))
    if unknown:
        raise UsageError(f"--model-kwargs: {model} takes no argument {', '.join(map(repr, unknown))}; "
                         f"it takes: {', '.join(sorted(known - fixed)) or 'no extra arguments'}")
    try:
        with torch.device("meta"):
            create_model(model, num_classes=10, **kwargs)
    except UsageError as err:
        raise UsageError(f"--model-kwargs {kwargs}: {err}") from None
    except (TypeError, ValueError, KeyError, AttributeError) as err:
        raise UsageError(f"--model-kwargs {kwargs}: {model} cannot be built with these arguments ({err})") from None
