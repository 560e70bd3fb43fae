"""Listing the images of photo sources, without decoding them: class folders and CSV files.

Folder layout (torchvision's ImageFolder): ``root/<class>/**/<image>``, or the same under
``root/train``, ``root/val`` (or ``valid``/``validation``) and ``root/test``. Class names are the
sorted folder names of ``train/`` (or of ``root``); label i is the i-th name. Files without an image
extension and hidden files are ignored, as torchvision does.

An empty class folder is kept as a class (so labels stay the sorted folder order the user sees and
match the other splits) and reported as a skipped item; with strict, it is an error.
Symbolic links are followed, but no real folder is visited twice and no real file listed twice (link
cycles end; duplicates are reported as one skipped item per class folder). GIF files are reported
as skipped items (so --strict refuses them), never silently ignored.

CSV: one column of image paths (relative to the CSV's folder) or ids (``id`` -> ``images/<id>.<ext>``
or ``<id>.<ext>`` next to the CSV), one column of labels (names, or non-negative ints used as they are).
Rows whose file is missing or whose label is blank are skipped and reported as ``file.csv:LINE``.
Repeated rows (same image file, same label) are dropped and reported with their count; one image
file with two different labels is a UsageError naming the lines.
"""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field

from alexnet.data.decode import IMG_EXTENSIONS, is_image_file
from alexnet.errors import UsageError

SPLIT_FOLDERS = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}
LABEL_COLUMNS = ("label", "labels", "class", "species", "target", "category")
ID_FOLDERS = ("images", "")        # where an id without an extension is looked for, next to the CSV
GIF_EXTENSIONS = (".gif",)         # reported as skipped, never silently ignored
DETECT_ROWS = 50                    # rows looked at to auto-detect the image column


@dataclass
class Listing:
    """The items of a photo source: split -> [(path, label)], with the class names and skipped items."""

    splits: dict[str, list[tuple[str, int]]]
    classes: list[str]
    description: str
    skipped: list[tuple[str, str]] = field(default_factory=list)
    extra_files: list[str] = field(default_factory=list)   # not images, but part of the input (the CSV)


def _subfolders(folder: str) -> list[str]:
    return sorted(d.name for d in os.scandir(folder) if d.is_dir() and not d.name.startswith("."))


class _Walker:
    """Lists the image files below class folders, following symbolic links but never visiting a real
    folder twice (a link cycle, or a link to a folder already listed) nor listing one real file twice.

    Every real class folder counts as visited before any walk, so a link from one class into another
    lists nothing twice. What was left out is reported per class folder as one skipped item.
    GIF files are reported as skipped (not listed as images, as torchvision does, but never silently).
    """

    def __init__(self, class_folders: list[str]) -> None:
        self.roots = {os.path.realpath(f) for f in class_folders}
        self.seen_files: set[str] = set()

    def images_below(self, folder: str, skipped: list[tuple[str, str]]) -> list[str]:
        found, duplicates, visited = [], 0, set()
        for top, dirs, files in os.walk(folder, followlinks=True):
            visited.add(os.path.realpath(top))
            keep = []
            for d in sorted(d for d in dirs if not d.startswith(".")):
                real = os.path.realpath(os.path.join(top, d))
                if real in self.roots or real in visited:
                    duplicates += 1
                else:
                    visited.add(real)
                    keep.append(d)
            dirs[:] = keep
            for name in sorted(files):
                path = os.path.join(top, name)
                if name.lower().endswith(GIF_EXTENSIONS) and not name.startswith("."):
                    skipped.append((path, "GIF files are not read (animated or not); convert it to PNG or JPEG"))
                elif is_image_file(name):
                    real = os.path.realpath(path)
                    if real in self.seen_files:
                        duplicates += 1
                    else:
                        self.seen_files.add(real)
                        found.append(path)
        self.roots |= visited
        if duplicates:
            skipped.append((folder, f"followed links: {duplicates} duplicate paths skipped (symbolic links to "
                                    f"folders or files already listed, or link cycles)"))
        return found


def list_image_folder(root: str) -> Listing:
    """The items of an ImageFolder-layout ``root``, with optional train/val/test sub-folders."""
    subfolders = _subfolders(root)
    split_dirs: dict[str, str] = {}
    for name in subfolders:
        split = SPLIT_FOLDERS.get(name.lower())
        if split in split_dirs:
            raise UsageError(f"{root}: both {split_dirs[split]}/ and {name}/ look like the {split} split; keep one")
        if split:
            split_dirs[split] = name
    skipped: list[tuple[str, str]] = []
    if split_dirs:
        if "train" not in split_dirs:
            raise UsageError(f"{root}: has {', '.join(d + '/' for d in split_dirs.values())} but no train/ folder")
        for name in sorted(set(subfolders) - set(split_dirs.values())):
            skipped.append((os.path.join(root, name), "folder ignored: the split layout uses train/, val/, test/"))
        class_root = {split: os.path.join(root, d) for split, d in split_dirs.items()}
    else:
        class_root = {"train": root}
    classes = _subfolders(class_root["train"])
    if not classes:
        raise UsageError(f"{class_root['train']}: no class sub-folders; expected one folder per class "
                         f"(e.g. cat/ dog/) holding its images ({', '.join(IMG_EXTENSIONS)})")
    index = {name: i for i, name in enumerate(classes)}
    splits: dict[str, list[tuple[str, int]]] = {}
    walker = _Walker([os.path.join(f, n) for f in class_root.values() for n in _subfolders(f)])
    for split, folder in class_root.items():
        items: list[tuple[str, int]] = []
        for name in _subfolders(folder):
            if name not in index:
                raise UsageError(f"{os.path.join(folder, name)}: class {name!r} has no folder in "
                                 f"{class_root['train']} (the classes come from the train folders)")
            paths = walker.images_below(os.path.join(folder, name), skipped)
            if not paths and split == "train":
                skipped.append((os.path.join(folder, name), f"empty class folder: no image files; class "
                                f"{name!r} is kept as label {index[name]} with no training images"))
            items += [(path, index[name]) for path in paths]
        splits[split] = items
    layout = ", ".join(f"{s} {len(v)}" for s, v in splits.items())
    return Listing(splits, classes, f"image folder {root} ({len(classes)} classes; {layout})", skipped)


class _FileResolver:
    """Maps a CSV cell to an existing image file: a relative/absolute path, or an id plus an extension."""

    def __init__(self, csv_dir: str) -> None:
        self.csv_dir = csv_dir
        self.stems: dict[str, str] = {}
        for sub in ID_FOLDERS:                  # images/ first; the first file with a stem wins
            folder = os.path.join(csv_dir, sub)
            if os.path.isdir(folder):
                for name in sorted(os.listdir(folder)):
                    if is_image_file(name):
                        self.stems.setdefault(os.path.splitext(name)[0], os.path.join(folder, name))

    def __call__(self, value: str) -> str | None:
        path = os.path.join(self.csv_dir, value)
        if os.path.isfile(path):
            return path
        return self.stems.get(value)


def _read_csv(path: str) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            columns = [c for c in (reader.fieldnames or [])]
            rows = [(reader.line_num, row) for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise UsageError(f"{path}: cannot be read as a CSV file ({err})") from None
    if not columns or not rows:
        raise UsageError(f"{path}: empty CSV; expected a header row and one row per image")
    return columns, rows


def _drop_duplicates(path: str, kept: list[tuple[str, str]], lines: list[int],
                     skipped: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """``kept`` without repeated rows (same image file, same label), reported as one skipped item;
    UsageError naming the rows when one image file has two different labels."""
    first: dict[str, tuple[str, int]] = {}
    unique, repeated, conflicts = [], [], []
    for (file, label), line in zip(kept, lines):
        real = os.path.realpath(file)
        if real not in first:
            first[real] = (label, line)
            unique.append((file, label))
        elif first[real][0] == label:
            repeated.append(line)
        else:
            conflicts.append(f"{file} has label {first[real][0]!r} on line {first[real][1]} and {label!r} "
                             f"on line {line}")
    if conflicts:
        listed = "\n".join(f"  {c}" for c in conflicts[:20])
        more = f"\n  ... and {len(conflicts) - 20} more" if len(conflicts) > 20 else ""
        raise UsageError(f"{path}: {len(conflicts)} image(s) listed with two different labels:\n{listed}{more}\n"
                         f"Keep one label per image.")
    if repeated:
        shown = ", ".join(map(str, repeated[:10])) + (", ..." if len(repeated) > 10 else "")
        skipped.append((path, f"{len(repeated)} duplicate row(s) dropped (same image and label as an earlier "
                              f"row): lines {shown}"))
    return unique


def list_csv(path: str, image_column: str | None = None, label_column: str | None = None) -> Listing:
    """The items of a labelled CSV file; the columns are auto-detected unless given."""
    columns, rows = _read_csv(path)
    resolve = _FileResolver(os.path.dirname(os.path.abspath(path)))
    for flag, name in (("--image-column", image_column), ("--label-column", label_column)):
        if name is not None and name not in columns:
            raise UsageError(f"{path}: no column {name!r} ({flag}); the columns are: {', '.join(columns)}")
    if image_column is None:
        hits = {c: sum(resolve((row.get(c) or "").strip()) is not None for _, row in rows[:DETECT_ROWS])
                for c in columns if c != label_column}
        preferred = {c: n for c, n in hits.items() if n and c.strip().lower() not in LABEL_COLUMNS} or hits
        image_column = max(preferred, key=preferred.get, default=None)   # a "label" column of ids is a label
        if image_column is None or hits[image_column] == 0:
            raise UsageError(f"{path}: no column names image files (looked for paths relative to the CSV, and ids "
                             f"as images/<id>.<ext>); give --image-column, one of: {', '.join(columns)}")
    if label_column is None:
        named = [c for c in columns if c.strip().lower() in LABEL_COLUMNS and c != image_column]
        others = [c for c in columns if c != image_column]
        label_column = named[0] if named else others[0] if len(others) == 1 else None
        if label_column is None:
            raise UsageError(f"{path}: cannot tell which column holds the labels; give --label-column, one of: "
                             f"{', '.join(others)}")
    skipped: list[tuple[str, str]] = []
    kept: list[tuple[str, str]] = []
    lines: list[int] = []
    for line, row in rows:
        where = f"{path}:{line}"
        value, label = (row.get(image_column) or "").strip(), (row.get(label_column) or "").strip()
        if not value:
            skipped.append((where, f"blank image cell in column {image_column!r}"))
        elif not label:
            skipped.append((where, f"blank label in column {label_column!r}"))
        elif (file := resolve(value)) is None:
            skipped.append((where, f"file not found: {value!r} (looked for it relative to the CSV and as "
                                   f"images/{value}.<ext>)"))
        else:
            kept.append((file, label))
            lines.append(line)
    kept = _drop_duplicates(path, kept, lines, skipped)
    if all(label.isdigit() for _, label in kept):
        classes = [str(i) for i in range(max((int(lab) for _, lab in kept), default=-1) + 1)]
        items = [(file, int(label)) for file, label in kept]
    else:
        classes = sorted({label for _, label in kept})
        index = {name: i for i, name in enumerate(classes)}
        items = [(file, index[label]) for file, label in kept]
    description = (f"CSV {path} (images from column {image_column!r}, labels from {label_column!r}; "
                   f"{len(classes)} classes)")
    return Listing({"train": items}, classes, description, skipped, extra_files=[path])
