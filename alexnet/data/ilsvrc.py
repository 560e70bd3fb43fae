"""Listing ILSVRC-2012 as users hold it, with labels, without decoding an image or extracting an archive.

Four layouts, recognised by their files (``detect``; extracted folders are preferred to archives next to them):
- "devkit": ``train/<wnid>/*.JPEG``, a flat ``val/ILSVRC2012_val_NNNNNNNN.JPEG`` and the devkit, extracted
  (``ILSVRC2012_devkit_t12/data/meta.mat`` and ``.../ILSVRC2012_validation_ground_truth.txt``) or as
  ``ILSVRC2012_devkit_t12.tar.gz`` (read in memory);
- "archives": the three files as downloaded, ``ILSVRC2012_img_train.tar`` (one ``<wnid>.tar`` per synset),
  ``ILSVRC2012_img_val.tar`` (flat) and the devkit; indexed from the tar headers only, each image a
  ``TarMember`` read in place (uncompressed tars of regular files only);
- "kaggle": ``ILSVRC/Data/CLS-LOC/{train/<wnid>,val}/``, ``LOC_synset_mapping.txt`` and ``LOC_val_solution.csv``
  (the label is the first wnid of PredictionString); ROOT is the folder that holds ILSVRC/; ``test/`` is unlabelled;
- "sorted": ``train/<wnid>/`` and ``val/<wnid>/`` (val sorted by valprep.sh or torchvision), or only class folders
  that are all wnids; names from ``LOC_synset_mapping.txt`` or the devkit in ROOT, else the wnids themselves.

Rules, as torchvision's ImageNet: label i is the i-th of the sorted TRAIN wnids (the devkit, Kaggle's files and
the class names are alexnet.data.ilsvrc_devkit's; the archives, alexnet.data.ilsvrc_archives'). A train class that
is no leaf synset is an error; val images of leaf classes without train images (a subset of the 1000 classes) are
left out, reported as one skipped item.
Non-image and hidden files are ignored, GIFs reported, and an empty train class is kept and reported, as
``listing.py`` does. Items are sorted: train by class then file name, val by file name.

Listing 1.28 M images costs one ``os.scandir`` per folder (or one pass over the tar headers) and no ``stat`` per file.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

from alexnet.data.decode import is_image_file
from alexnet.data.ilsvrc_archives import TarMember, index_train_tar, index_val_tar
from alexnet.data.ilsvrc_devkit import (DEVKIT_TAR, GIF_REASON, KAGGLE_DATA, LAYOUTS, SYNSET_MAPPING, TRAIN_TAR,
                                        VAL_NAME, VAL_SOLUTION, VAL_TAR, WNID, check_wnid, class_names,
                                        ground_truth_pairs, has_devkit, read_devkit, read_mapping, read_solution)
from alexnet.data.listing import GIF_EXTENSIONS, Listing
from alexnet.errors import UsageError


@dataclass
class IlsvrcListing(Listing):
    """A Listing of ILSVRC-2012: items are paths or TarMembers; ``wnids[label]`` is the class's wnid."""

    splits: dict[str, list[tuple[str | TarMember, int]]]
    wnids: list[str] = field(default_factory=list)
    layout: str = ""


def _folders(folder: str) -> list[str]:
    with os.scandir(folder) as entries:
        return sorted(e.name for e in entries if not e.name.startswith(".") and e.is_dir())


def _all_wnids(folder: str) -> bool:
    names = _folders(folder)
    return bool(names) and all(WNID.fullmatch(n) for n in names)


def _val_kind(val: str) -> str | None:
    """"flat" (ILSVRC2012_val_ images) or "sorted" (wnid folders), from the first entry that tells."""
    with os.scandir(val) as entries:
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if VAL_NAME.fullmatch(entry.name) and is_image_file(entry.name):
                return "flat"
            if WNID.fullmatch(entry.name) and entry.is_dir():
                return "sorted"
    return None


def detect(root: str) -> str | None:
    """Which of LAYOUTS ``root`` is, from a few listdir/stat calls; None when it is not ILSVRC-2012."""
    if os.path.isdir(os.path.join(root, *KAGGLE_DATA)):
        return "kaggle"
    if os.path.basename(os.path.normpath(root)) == "ILSVRC" and os.path.isdir(os.path.join(root, "Data", "CLS-LOC")):
        return "kaggle"            # ROOT is the ILSVRC/ folder itself: list_ilsvrc says to give its parent
    train, val = os.path.join(root, "train"), os.path.join(root, "val")
    if os.path.isdir(train):
        kind = _val_kind(val) if os.path.isdir(val) else None
        if kind == "flat":
            return "devkit"
        if kind == "sorted" or _all_wnids(train):
            return "sorted"
    if os.path.isfile(os.path.join(root, TRAIN_TAR)) or os.path.isfile(os.path.join(root, VAL_TAR)):
        return "archives"
    if not os.path.isdir(val) and _all_wnids(root):
        return "sorted"
    return None


def list_ilsvrc(root: str, layout: str | None = None) -> IlsvrcListing:
    """The items of ILSVRC-2012 in ``root``, in ``layout`` (one of LAYOUTS; detected when None)."""
    if layout is None:
        layout = detect(root)
        if layout is None:
            raise UsageError(f"{root}: not ILSVRC-2012 in a known layout; expected train/<wnid>/ with a flat val/ and "
                             f"the devkit, or {TRAIN_TAR}, {VAL_TAR} and {DEVKIT_TAR} as downloaded, or Kaggle's "
                             f"ILSVRC/Data/CLS-LOC/ with {SYNSET_MAPPING}, or train/<wnid>/ and val/<wnid>/")
    if layout not in LAYOUTS:
        raise UsageError(f"unknown ILSVRC-2012 layout {layout!r}; one of: {', '.join(LAYOUTS)}")
    return _LISTERS[layout](root)


# ---- folders -------------------------------------------------------------------------------------------------------

def _scan(folder: str, skipped: list[tuple[str, str]]) -> tuple[list[str], list[str]]:
    """(image file names, sub-folder names) of ``folder``, sorted; hidden and other files ignored, GIFs reported."""
    images, folders = [], []
    with os.scandir(folder) as entries:
        for entry in entries:
            name = entry.name
            if name.startswith("."):
                continue
            if entry.is_dir():
                folders.append(name)
            elif is_image_file(name):
                images.append(name)
            elif name.lower().endswith(GIF_EXTENSIONS):
                skipped.append((entry.path, GIF_REASON))
    images.sort()
    folders.sort()
    return images, folders


def _flat_images(folder: str, skipped: list[tuple[str, str]]) -> list[str]:
    """The image files of a folder expected to hold no sub-folders (reported as one skipped item when it does)."""
    images, folders = _scan(folder, skipped)
    if folders:
        skipped.append((folder, f"{len(folders)} sub-folder(s) ignored ({', '.join(folders[:3])}"
                                f"{', ...' if len(folders) > 3 else ''}): ILSVRC-2012 folders hold their images "
                                f"directly"))
    return images


def _train_wnids(train: str, words: dict[str, str] | None, names_file: str | None) -> list[str]:
    if not os.path.isdir(train):
        raise UsageError(f"{train}: not found; ILSVRC-2012's training images are in train/<wnid>/ folders")
    wnids = _folders(train)
    if not wnids:
        raise UsageError(f"{train}: no class folders; expected one folder per wnid (n01440764/ ...) of JPEGs")
    for wnid in wnids:
        check_wnid(wnid, os.path.join(train, wnid), words, names_file)
    return wnids


def _train_items(train: str, wnids: list[str], skipped: list[tuple[str, str]]) -> list[tuple[str, int]]:
    items: list[tuple[str, int]] = []
    for label, wnid in enumerate(wnids):
        folder = os.path.join(train, wnid)
        names = _flat_images(folder, skipped)
        if not names:
            skipped.append((folder, f"empty class folder: no image files; class {wnid!r} is kept as label {label} "
                                    f"with no training images"))
        prefix = folder + os.sep
        items += [(prefix + name, label) for name in names]
    return items


def _labelled(pairs: list[tuple[str | TarMember, str]], index: dict[str, int], where: str,
              skipped: list[tuple[str, str]]) -> list[tuple[str | TarMember, int]]:
    """(item, label) of (item, wnid) pairs; those whose class has no train images reported as one skipped item."""
    items, left_out = [], {}
    for item, wnid in pairs:
        label = index.get(wnid)
        if label is None:
            left_out[wnid] = left_out.get(wnid, 0) + 1
        else:
            items.append((item, label))
    if left_out:
        skipped.append((where, f"{sum(left_out.values())} validation images of {len(left_out)} classes left out: "
                               f"those classes have no training images (the train data holds {len(index)} of "
                               f"ILSVRC-2012's classes)"))
    return items


def _report_test(folder: str, skipped: list[tuple[str, str]]) -> None:
    test = os.path.join(folder, "test")
    if os.path.isdir(test):
        skipped.append((test, "ILSVRC-2012's test images are unlabelled: not listed"))


def _result(root: str, layout: str, wnids: list[str], words: dict[str, str] | None,
            splits: dict[str, list[tuple[str | TarMember, int]]], skipped: list[tuple[str, str]],
            extra_files: list[str]) -> IlsvrcListing:
    named = "" if words is not None else f", named by wnid: no {SYNSET_MAPPING} or devkit in {root}"
    counts = ", ".join(f"{split} {len(items)}" for split, items in splits.items())
    description = f"ILSVRC-2012 ({layout} layout) in {root} ({len(wnids)} classes{named}; {counts})"
    return IlsvrcListing(splits, class_names(wnids, words), description, skipped, extra_files, wnids, layout)


# ---- the four layouts ---------------------------------------------------------------------------------------------

def _list_devkit(root: str) -> IlsvrcListing:
    skipped: list[tuple[str, str]] = []
    devkit = read_devkit(root)
    train, val = os.path.join(root, "train"), os.path.join(root, "val")
    wnids = _train_wnids(train, devkit.words, devkit.meta)
    if not os.path.isdir(val):
        raise UsageError(f"{val}: not found; the devkit layout has the validation images ILSVRC2012_val_NNNNNNNN.JPEG "
                         f"in val/ (extract {VAL_TAR} there)")
    splits = {"train": _train_items(train, wnids, skipped)}
    prefix = val + os.sep
    entries = [(name, prefix + name) for name in _flat_images(val, skipped)]
    pairs = ground_truth_pairs(entries, devkit, val, skipped)
    splits["val"] = _labelled(pairs, {w: i for i, w in enumerate(wnids)}, val, skipped)
    _report_test(root, skipped)
    return _result(root, "devkit", wnids, devkit.words, splits, skipped, devkit.files)


def _list_archives(root: str) -> IlsvrcListing:
    root = os.path.abspath(root)
    train_tar, val_tar = os.path.join(root, TRAIN_TAR), os.path.join(root, VAL_TAR)
    missing = [p for p in (train_tar, val_tar) if not os.path.isfile(p)]
    missing += [] if has_devkit(root) else [os.path.join(root, DEVKIT_TAR)]
    if missing:
        raise UsageError(f"{root}: missing {' and '.join(missing)}; ILSVRC-2012 as downloaded is three files, "
                         f"{TRAIN_TAR}, {VAL_TAR} and {DEVKIT_TAR}: put all three in {root}")
    skipped: list[tuple[str, str]] = []
    devkit = read_devkit(root)
    classes = index_train_tar(train_tar, devkit, skipped)
    wnids = sorted(classes)
    if not wnids:
        raise UsageError(f"{train_tar}: holds no per-synset tars (<wnid>.tar); download it again")
    train: list[tuple[str | TarMember, int]] = []
    for label, wnid in enumerate(wnids):
        if not classes[wnid]:
            skipped.append((f"{train_tar}:{wnid}.tar", f"empty class: no image files; class {wnid!r} is kept as "
                                                       f"label {label} with no training images"))
        train += [(member, label) for member in classes[wnid]]
    pairs = ground_truth_pairs(index_val_tar(val_tar, skipped), devkit, val_tar, skipped)
    val = _labelled(pairs, {w: i for i, w in enumerate(wnids)}, val_tar, skipped)
    return _result(root, "archives", wnids, devkit.words, {"train": train, "val": val}, skipped,
                   [train_tar, val_tar, *devkit.files])


def _list_kaggle(root: str) -> IlsvrcListing:
    data = os.path.join(root, *KAGGLE_DATA)
    if not os.path.isdir(data):
        parent = os.path.dirname(os.path.abspath(root))
        raise UsageError(f"{root}: no {os.path.join(*KAGGLE_DATA)}; give the folder of Kaggle's download that holds "
                         f"ILSVRC/, {SYNSET_MAPPING} and {VAL_SOLUTION}"
                         f"{f' ({parent})' if os.path.isdir(os.path.join(root, *KAGGLE_DATA[1:])) else ''}")
    mapping = os.path.join(root, SYNSET_MAPPING)
    if not os.path.isfile(mapping):
        raise UsageError(f"{mapping}: not found; Kaggle's ILSVRC-2012 names its classes there: put it next to ILSVRC/")
    words = read_mapping(mapping)
    skipped: list[tuple[str, str]] = []
    train, val = os.path.join(data, "train"), os.path.join(data, "val")
    wnids = _train_wnids(train, words, mapping)
    splits = {"train": _train_items(train, wnids, skipped)}
    extra_files = [mapping]
    if os.path.isdir(val):
        solution = os.path.join(root, VAL_SOLUTION)
        if not os.path.isfile(solution):
            raise UsageError(f"{solution}: not found; Kaggle's ILSVRC-2012 has the validation labels there: put it "
                             f"next to ILSVRC/")
        labels = read_solution(solution, words, mapping)
        pairs = []
        prefix = val + os.sep
        for name in _flat_images(val, skipped):
            wnid = labels.get(os.path.splitext(name)[0])
            if wnid is None:
                raise UsageError(f"{prefix + name}: no row in {solution}; remove the image or add its row")
            pairs.append((prefix + name, wnid))
        splits["val"] = _labelled(pairs, {w: i for i, w in enumerate(wnids)}, val, skipped)
        extra_files.append(solution)
    _report_test(data, skipped)
    return _result(root, "kaggle", wnids, words, splits, skipped, extra_files)


def _list_sorted(root: str) -> IlsvrcListing:
    train, val = os.path.join(root, "train"), os.path.join(root, "val")
    class_root = train if os.path.isdir(train) else root
    words, names_file, extra_files = None, None, []
    if os.path.isfile(mapping := os.path.join(root, SYNSET_MAPPING)):
        words, names_file, extra_files = read_mapping(mapping), mapping, [mapping]
    elif has_devkit(root):
        devkit = read_devkit(root, ground_truth=False)
        words, names_file, extra_files = devkit.words, devkit.meta, devkit.files
    skipped: list[tuple[str, str]] = []
    wnids = _train_wnids(class_root, words, names_file)
    splits: dict[str, list[tuple[str | TarMember, int]]] = {"train": _train_items(class_root, wnids, skipped)}
    if class_root == train and os.path.isdir(val):
        images, folders = _scan(val, skipped)
        if images:
            skipped.append((val, f"{len(images)} image(s) directly in val/ left out: the sorted layout keeps them "
                                 f"in val/<wnid>/ folders"))
        pairs = []
        for wnid in folders:
            folder = os.path.join(val, wnid)
            check_wnid(wnid, folder, words, names_file)
            prefix = folder + os.sep
            pairs += [(prefix + name, wnid) for name in _flat_images(folder, skipped)]
        pairs.sort(key=lambda pair: os.path.basename(pair[0]))
        splits["val"] = _labelled(pairs, {w: i for i, w in enumerate(wnids)}, val, skipped)
    if class_root == train:
        _report_test(root, skipped)
    return _result(root, "sorted", wnids, words, splits, skipped, extra_files)


_LISTERS = {"devkit": _list_devkit, "archives": _list_archives, "kaggle": _list_kaggle, "sorted": _list_sorted}
