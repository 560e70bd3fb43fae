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

Rules, as torchvision's ImageNet: label i is the i-th of the sorted TRAIN wnids. The devkit's ILSVRC2012_IDs are
not in wnid order: they are mapped through meta.mat's leaf synsets (num_children == 0); line i of the ground
truth is the ID of ILSVRC2012_val_{i:08d}. A class's name is its synset's first word ("tench"); first words shared
by two classes ("crane") become "crane (n02012849)". A train class that is no leaf synset is an error; val images
of leaf classes without train images (a subset of the 1000 classes) are left out, reported as one skipped item.
Non-image and hidden files are ignored, GIFs reported, and an empty train class is kept and reported, as
``listing.py`` does. Items are sorted: train by class then file name, val by file name.

Listing 1.28 M images costs one ``os.scandir`` per folder (or one pass over the tar headers) and no ``stat`` per file.
"""
from __future__ import annotations

import io
import os
import re
import tarfile
from dataclasses import dataclass, field
from operator import attrgetter

from alexnet.data.decode import is_image_file
from alexnet.data.listing import GIF_EXTENSIONS, Listing
from alexnet.errors import UsageError

LAYOUTS = ("devkit", "archives", "kaggle", "sorted")
TRAIN_TAR, VAL_TAR, DEVKIT_TAR = "ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar", "ILSVRC2012_devkit_t12.tar.gz"
DEVKIT = "ILSVRC2012_devkit_t12"
META_MAT = f"{DEVKIT}/data/meta.mat"
GROUND_TRUTH = f"{DEVKIT}/data/ILSVRC2012_validation_ground_truth.txt"
SYNSET_MAPPING, VAL_SOLUTION = "LOC_synset_mapping.txt", "LOC_val_solution.csv"
KAGGLE_DATA = ("ILSVRC", "Data", "CLS-LOC")
WNID = re.compile(r"n\d{8}")
VAL_NAME = re.compile(r"ILSVRC2012_val_(\d{8})\.\w+")
COMPRESSED = {b"\x1f\x8b": "gzip", b"BZh": "bzip2", b"\xfd7zXZ\x00": "xz", b"\x28\xb5\x2f\xfd": "zstd"}
GIF_REASON = "GIF files are not read (animated or not); convert it to PNG or JPEG"


@dataclass(frozen=True, slots=True)
class TarMember:
    """One file inside an uncompressed tar, read in place: bytes [offset, offset+size) of `archive`."""

    archive: str     # absolute path of the outer .tar file on disk
    name: str        # what users see: "n01440764.tar/n01440764_10026.JPEG" or "ILSVRC2012_val_00000001.JPEG"
    offset: int      # absolute byte offset of its data in `archive` (nested: outer member's + inner member's)
    size: int

    def __str__(self) -> str:
        return f"{self.archive}:{self.name}"

    def read(self) -> bytes:
        fd = os.open(self.archive, os.O_RDONLY)
        try:
            data = os.pread(fd, self.size, self.offset)
            while len(data) < self.size:        # a regular file reads short only at its end (or past 2 GiB)
                more = os.pread(fd, self.size - len(data), self.offset + len(data))
                if not more:
                    raise OSError(f"{self.archive}: ends at byte {self.offset + len(data)}, inside {self.name} "
                                  f"(bytes {self.offset}-{self.offset + self.size}); the archive was truncated or "
                                  f"changed after it was indexed")
                data += more
        finally:
            os.close(fd)
        return data


@dataclass
class IlsvrcListing(Listing):
    """A Listing of ILSVRC-2012: items are paths or TarMembers; ``wnids[label]`` is the class's wnid."""

    splits: dict[str, list[tuple[str | TarMember, int]]]
    wnids: list[str] = field(default_factory=list)
    layout: str = ""


@dataclass
class _Devkit:
    """What the devkit says: leaf wnid -> words and, when read, the wnid of each validation image by number."""

    words: dict[str, str]      # "n01440764" -> "tench, Tinca tinca"
    val_wnids: list[str]       # val_wnids[i - 1]: the wnid of ILSVRC2012_val_{i:08d}
    meta: str                  # where meta.mat was read, for messages
    ground_truth: str          # where the ground truth was read (or would be)
    files: list[str]           # the input files: the extracted meta.mat (and ground truth), or the tar.gz


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


# ---- the files that name the classes and hold the ground truth ---------------------------------------------------

def _read_text(path: str) -> str:
    try:
        with open(path, encoding="utf-8-sig") as f:
            return f.read()
    except (OSError, UnicodeDecodeError) as err:
        raise UsageError(f"{path}: cannot be read ({err})") from None


def _parse_meta(data: bytes, where: str) -> tuple[dict[str, str], dict[int, str]]:
    """(leaf wnid -> words, ILSVRC2012_ID -> leaf wnid) from meta.mat's bytes; leaves have num_children == 0."""
    import numpy as np
    from scipy.io import loadmat
    from scipy.io.matlab import MatReadError

    try:
        synsets = np.atleast_1d(loadmat(io.BytesIO(data), squeeze_me=True)["synsets"])
        rows = zip(synsets["ILSVRC2012_ID"], synsets["WNID"], synsets["words"], synsets["num_children"])
        leaves = [(int(i), str(wnid), str(words)) for i, wnid, words, children in rows if int(children) == 0]
    except (MatReadError, OSError, ValueError, KeyError, TypeError, IndexError) as err:
        raise UsageError(f"{where}: cannot be read as the devkit's meta.mat ({err}); download {DEVKIT_TAR} "
                         f"again") from None
    return {wnid: words for _, wnid, words in leaves}, {i: wnid for i, wnid, _ in leaves}


def _parse_ground_truth(text: str, where: str, ids: dict[int, str], meta: str) -> list[str]:
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    wnids = []
    for number, line in enumerate(lines, 1):
        value = line.strip()
        if not value.isdigit():
            raise UsageError(f"{where}:{number}: cannot parse {line!r}; each line is the ILSVRC2012_ID of one "
                             f"validation image. Download {DEVKIT_TAR} again")
        if int(value) not in ids:
            raise UsageError(f"{where}:{number}: ILSVRC2012_ID {value} is not one of the {len(ids)} leaf synsets "
                             f"of {meta}; the two files come from different devkits: download {DEVKIT_TAR} again")
        wnids.append(ids[int(value)])
    return wnids


def _devkit_archive_member(tar: tarfile.TarFile, archive: str, name: str) -> bytes:
    try:
        member = tar.getmember(name)
    except KeyError:
        raise UsageError(f"{archive}: has no {name}; is it {DEVKIT_TAR} from image-net.org? Download it "
                         f"again") from None
    reader = tar.extractfile(member)
    if reader is None:
        raise UsageError(f"{archive}: {name} is not a regular file; download {DEVKIT_TAR} again")
    return reader.read()


def _has_devkit(root: str) -> bool:
    return os.path.isfile(os.path.join(root, DEVKIT_TAR)) or os.path.isfile(os.path.join(root, META_MAT))


def _read_devkit(root: str, ground_truth: bool = True) -> _Devkit:
    """The devkit in ``root``: extracted (preferred when complete) or ``ILSVRC2012_devkit_t12.tar.gz``."""
    meta_path, truth_path = os.path.join(root, META_MAT), os.path.join(root, GROUND_TRUTH)
    archive = os.path.join(root, DEVKIT_TAR)
    needed = [meta_path, truth_path] if ground_truth else [meta_path]
    if all(os.path.isfile(p) for p in needed):
        try:
            with open(meta_path, "rb") as f:
                meta = f.read()
        except OSError as err:
            raise UsageError(f"{meta_path}: cannot be read ({err})") from None
        truth = _read_text(truth_path) if ground_truth else ""
        meta_where, truth_where, files = meta_path, truth_path, needed
    elif os.path.isfile(archive):
        try:
            with tarfile.open(archive, "r:gz") as tar:
                meta = _devkit_archive_member(tar, archive, META_MAT)
                truth = _devkit_archive_member(tar, archive, GROUND_TRUTH).decode() if ground_truth else ""
        except (tarfile.TarError, OSError, EOFError, UnicodeDecodeError) as err:
            raise UsageError(f"{archive}: cannot be read as a .tar.gz ({err}); download it again") from None
        meta_where, truth_where, files = f"{archive}:{META_MAT}", f"{archive}:{GROUND_TRUTH}", [archive]
    else:
        missing = " and ".join(p for p in needed if not os.path.isfile(p))
        raise UsageError(f"{root}: no devkit: {missing} not found, nor {archive}. Put {DEVKIT_TAR} (from "
                         f"image-net.org, with the images) in {root} as downloaded; it names the classes and holds "
                         f"the validation labels")
    words, ids = _parse_meta(meta, meta_where)
    val_wnids = _parse_ground_truth(truth, truth_where, ids, meta_where) if ground_truth else []
    return _Devkit(words, val_wnids, meta_where, truth_where, files)


def _read_mapping(path: str) -> dict[str, str]:
    """wnid -> words from Kaggle's LOC_synset_mapping.txt ("n01440764 tench, Tinca tinca")."""
    words = {}
    for number, line in enumerate(_read_text(path).splitlines(), 1):
        if not line.strip():
            continue
        wnid, _, text = line.strip().partition(" ")
        if not WNID.fullmatch(wnid) or not text.strip():
            raise UsageError(f"{path}:{number}: cannot parse {line!r}; expected a wnid and its words, such as "
                             f"'n01440764 tench, Tinca tinca'")
        words[wnid] = text.strip()
    if not words:
        raise UsageError(f"{path}: empty; expected one line per class, such as 'n01440764 tench, Tinca tinca'")
    return words


def _read_solution(path: str, words: dict[str, str], mapping: str) -> dict[str, str]:
    """ImageId -> wnid from Kaggle's LOC_val_solution.csv: the first wnid of PredictionString."""
    lines = _read_text(path).splitlines()
    if not lines or lines[0].replace(" ", "") != "ImageId,PredictionString":
        raise UsageError(f"{path}: expected the header 'ImageId,PredictionString' (Kaggle's {VAL_SOLUTION})")
    labels: dict[str, str] = {}
    for number, line in enumerate(lines[1:], 2):
        if not line.strip():
            continue
        image_id, _, prediction = line.partition(",")
        wnid = (prediction.split() or [""])[0]
        if not image_id.strip() or not WNID.fullmatch(wnid):
            raise UsageError(f"{path}:{number}: cannot parse {line!r}; expected rows such as "
                             f"'ILSVRC2012_val_00008726,n02119789 255 142 454 329'")
        if wnid not in words:
            raise UsageError(f"{path}:{number}: unknown wnid {wnid}: not one of the {len(words)} classes of {mapping}")
        if image_id.strip() in labels:
            raise UsageError(f"{path}:{number}: {image_id.strip()} is listed twice; keep one row per image")
        labels[image_id.strip()] = wnid
    return labels


# ---- folders ------------------------------------------------------------------------------------------------------

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


def _check_wnid(wnid: str, where: str, words: dict[str, str] | None, names_file: str | None) -> None:
    if words is None:
        if not WNID.fullmatch(wnid):
            raise UsageError(f"{where}: {wnid!r} is not a wnid (n followed by 8 digits); ILSVRC-2012 class folders "
                             f"are named by wnid: rename or remove it")
    elif wnid not in words:
        raise UsageError(f"{where}: unknown wnid {wnid!r}: not one of the {len(words)} classes (leaf synsets) of "
                         f"{names_file}; rename or remove it")


def _train_wnids(train: str, words: dict[str, str] | None, names_file: str | None) -> list[str]:
    if not os.path.isdir(train):
        raise UsageError(f"{train}: not found; ILSVRC-2012's training images are in train/<wnid>/ folders")
    wnids = _folders(train)
    if not wnids:
        raise UsageError(f"{train}: no class folders; expected one folder per wnid (n01440764/ ...) of JPEGs")
    for wnid in wnids:
        _check_wnid(wnid, os.path.join(train, wnid), words, names_file)
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


def _ground_truth_pairs(entries: list[tuple[str, str | TarMember]], devkit: _Devkit, where: str,
                        skipped: list[tuple[str, str]]) -> list[tuple[str | TarMember, str]]:
    """(item, wnid) of the flat validation images ``entries`` (file name, item), by the devkit's ground truth."""
    truth, pairs = devkit.val_wnids, []
    for name, item in entries:
        match = VAL_NAME.fullmatch(os.path.basename(name))
        if match is None:
            skipped.append((str(item), "not named ILSVRC2012_val_NNNNNNNN: the ground truth has no label for it"))
            continue
        number = int(match[1])
        if not 1 <= number <= len(truth):
            raise UsageError(f"{item}: validation image number {number} has no line in {devkit.ground_truth} "
                             f"({len(truth)} lines); the image is not from ILSVRC-2012's val set: remove it")
        pairs.append((item, truth[number - 1]))
    if len(pairs) != len(truth):
        raise UsageError(f"{devkit.ground_truth}: {len(truth)} lines, but {where} holds {len(pairs)} validation "
                         f"images; the ground truth is for all {len(truth)} images of {VAL_TAR}: put the missing "
                         f"ones back (or extract {VAL_TAR} again)")
    return pairs


def _class_names(wnids: list[str], words: dict[str, str] | None) -> list[str]:
    if words is None:
        return list(wnids)
    first = [words[w].split(",")[0].strip() for w in wnids]
    counts: dict[str, int] = {}
    for name in first:
        counts[name] = counts.get(name, 0) + 1
    return [f"{name} ({wnid})" if counts[name] > 1 else name for name, wnid in zip(first, wnids)]


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
    return IlsvrcListing(splits, _class_names(wnids, words), description, skipped, extra_files, wnids, layout)


# ---- the four layouts ---------------------------------------------------------------------------------------------

def _list_devkit(root: str) -> IlsvrcListing:
    skipped: list[tuple[str, str]] = []
    devkit = _read_devkit(root)
    train, val = os.path.join(root, "train"), os.path.join(root, "val")
    wnids = _train_wnids(train, devkit.words, devkit.meta)
    if not os.path.isdir(val):
        raise UsageError(f"{val}: not found; the devkit layout has the validation images ILSVRC2012_val_NNNNNNNN.JPEG "
                         f"in val/ (extract {VAL_TAR} there)")
    splits = {"train": _train_items(train, wnids, skipped)}
    prefix = val + os.sep
    entries = [(name, prefix + name) for name in _flat_images(val, skipped)]
    pairs = _ground_truth_pairs(entries, devkit, val, skipped)
    splits["val"] = _labelled(pairs, {w: i for i, w in enumerate(wnids)}, val, skipped)
    _report_test(root, skipped)
    return _result(root, "devkit", wnids, devkit.words, splits, skipped, devkit.files)


def _compression(head: bytes) -> str | None:
    return next((kind for magic, kind in COMPRESSED.items() if head.startswith(magic)), None)


def _open_tar(path: str) -> tarfile.TarFile:
    try:
        with open(path, "rb") as f:
            kind = _compression(f.read(6))
        if kind:
            raise UsageError(f"{path}: {kind}-compressed; ILSVRC-2012's {os.path.basename(path)} is an uncompressed "
                             f"tar, read in place: decompress it (keeping the .tar) or download it again")
        return tarfile.open(path, "r:")
    except (tarfile.TarError, OSError) as err:
        raise UsageError(f"{path}: cannot be read as a tar file ({err}); download it again") from None


def _check_regular(member: tarfile.TarInfo, where: str, archive: str) -> None:
    if member.issparse():
        raise UsageError(f"{where}: a sparse tar member, which cannot be read in place; ILSVRC-2012's archives hold "
                         f"plain files: download {os.path.basename(archive)} again")
    if not member.isreg():
        kind = "symbolic link" if member.issym() else "hard link" if member.islnk() else "special file"
        raise UsageError(f"{where}: a {kind}, not a regular file; ILSVRC-2012's archives hold plain files: "
                         f"download {os.path.basename(archive)} again")


def _image_member(member: tarfile.TarInfo, where: str, archive: str, skipped: list[tuple[str, str]]) -> bool:
    """Whether ``member`` is an image to list: directories and non-image files are ignored, GIFs reported."""
    if member.isdir():
        return False
    _check_regular(member, where, archive)
    name = os.path.basename(member.name)
    if name.lower().endswith(GIF_EXTENSIONS) and not name.startswith("."):
        skipped.append((where, GIF_REASON))
    return is_image_file(name)


def _index_train_tar(path: str, devkit: _Devkit, skipped: list[tuple[str, str]]) -> dict[str, list[TarMember]]:
    """wnid -> its images in ``ILSVRC2012_img_train.tar`` (a tar of per-synset tars), from the headers only."""
    classes: dict[str, list[TarMember]] = {}
    with _open_tar(path) as outer:
        try:
            for member in outer:
                where = f"{path}:{member.name}"
                if member.isdir():
                    continue
                _check_regular(member, where, path)
                wnid, extension = os.path.splitext(os.path.basename(member.name))
                if extension != ".tar":
                    skipped.append((where, "not a per-synset tar (<wnid>.tar): ignored"))
                    continue
                _check_wnid(wnid, where, devkit.words, devkit.meta)
                reader = outer.extractfile(member)      # seekable: the data of the inner tar's members is skipped
                kind = _compression(reader.read(6))
                reader.seek(0)
                if kind:
                    raise UsageError(f"{where}: {kind}-compressed; the per-synset tars are read in place: download "
                                     f"{TRAIN_TAR} again")
                members = classes.setdefault(wnid, [])
                with tarfile.open(fileobj=reader, mode="r:") as inner:
                    for image in inner:
                        name = f"{member.name}/{image.name}"
                        if _image_member(image, f"{path}:{name}", path, skipped):
                            members.append(TarMember(path, name, member.offset_data + image.offset_data, image.size))
        except tarfile.TarError as err:
            raise UsageError(f"{path}: damaged tar ({err}); download it again") from None
    for members in classes.values():
        members.sort(key=attrgetter("name"))
    return classes


def _index_val_tar(path: str, skipped: list[tuple[str, str]]) -> list[tuple[str, TarMember]]:
    """(file name, member) of the flat ``ILSVRC2012_img_val.tar``, sorted by name, from the headers only."""
    entries = []
    with _open_tar(path) as tar:
        try:
            for member in tar:
                if _image_member(member, f"{path}:{member.name}", path, skipped):
                    entries.append((member.name, TarMember(path, member.name, member.offset_data, member.size)))
        except tarfile.TarError as err:
            raise UsageError(f"{path}: damaged tar ({err}); download it again") from None
    entries.sort(key=lambda entry: entry[0])
    return entries


def _list_archives(root: str) -> IlsvrcListing:
    root = os.path.abspath(root)
    train_tar, val_tar = os.path.join(root, TRAIN_TAR), os.path.join(root, VAL_TAR)
    missing = [p for p in (train_tar, val_tar) if not os.path.isfile(p)]
    missing += [] if _has_devkit(root) else [os.path.join(root, DEVKIT_TAR)]
    if missing:
        raise UsageError(f"{root}: missing {' and '.join(missing)}; ILSVRC-2012 as downloaded is three files, "
                         f"{TRAIN_TAR}, {VAL_TAR} and {DEVKIT_TAR}: put all three in {root}")
    skipped: list[tuple[str, str]] = []
    devkit = _read_devkit(root)
    classes = _index_train_tar(train_tar, devkit, skipped)
    wnids = sorted(classes)
    if not wnids:
        raise UsageError(f"{train_tar}: holds no per-synset tars (<wnid>.tar); download it again")
    train: list[tuple[str | TarMember, int]] = []
    for label, wnid in enumerate(wnids):
        if not classes[wnid]:
            skipped.append((f"{train_tar}:{wnid}.tar", f"empty class: no image files; class {wnid!r} is kept as "
                                                       f"label {label} with no training images"))
        train += [(member, label) for member in classes[wnid]]
    pairs = _ground_truth_pairs(_index_val_tar(val_tar, skipped), devkit, val_tar, skipped)
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
    words = _read_mapping(mapping)
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
        labels = _read_solution(solution, words, mapping)
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
        words, names_file, extra_files = _read_mapping(mapping), mapping, [mapping]
    elif _has_devkit(root):
        devkit = _read_devkit(root, ground_truth=False)
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
            _check_wnid(wnid, folder, words, names_file)
            prefix = folder + os.sep
            pairs += [(prefix + name, wnid) for name in _flat_images(folder, skipped)]
        pairs.sort(key=lambda pair: os.path.basename(pair[0]))
        splits["val"] = _labelled(pairs, {w: i for i, w in enumerate(wnids)}, val, skipped)
    if class_root == train:
        _report_test(root, skipped)
    return _result(root, "sorted", wnids, words, splits, skipped, extra_files)


_LISTERS = {"devkit": _list_devkit, "archives": _list_archives, "kaggle": _list_kaggle, "sorted": _list_sorted}
