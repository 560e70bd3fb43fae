"""ILSVRC-2012's label files: the devkit (meta.mat and the validation ground truth, extracted or in its tar.gz) and
Kaggle's LOC_synset_mapping.txt and LOC_val_solution.csv; the wnid checks and class names every layout shares.

The devkit's ILSVRC2012_IDs are not in wnid order: they are mapped through meta.mat's leaf synsets
(num_children == 0); line i of the ground truth is the ID of ILSVRC2012_val_{i:08d}. A class's name is its synset's
first word ("tench"); first words shared by two classes ("crane") become "crane (n02012849)".
"""
from __future__ import annotations

import io
import os
import re
import tarfile
from dataclasses import dataclass

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



@dataclass
class Devkit:
    """What the devkit says: leaf wnid -> words and, when read, the wnid of each validation image by number."""

    words: dict[str, str]      # "n01440764" -> "tench, Tinca tinca"
    val_wnids: list[str]       # val_wnids[i - 1]: the wnid of ILSVRC2012_val_{i:08d}
    meta: str                  # where meta.mat was read, for messages
    ground_truth: str          # where the ground truth was read (or would be)
    files: list[str]           # the input files: the extracted meta.mat (and ground truth), or the tar.gz


# ---- the files that name the classes and hold the ground truth ---------------------------------------------------

def read_text(path: str) -> str:
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


def has_devkit(root: str) -> bool:
    return os.path.isfile(os.path.join(root, DEVKIT_TAR)) or os.path.isfile(os.path.join(root, META_MAT))


def read_devkit(root: str, ground_truth: bool = True) -> Devkit:
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
        truth = read_text(truth_path) if ground_truth else ""
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
    return Devkit(words, val_wnids, meta_where, truth_where, files)


def read_mapping(path: str) -> dict[str, str]:
    """wnid -> words from Kaggle's LOC_synset_mapping.txt ("n01440764 tench, Tinca tinca")."""
    words = {}
    for number, line in enumerate(read_text(path).splitlines(), 1):
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


def read_solution(path: str, words: dict[str, str], mapping: str) -> dict[str, str]:
    """ImageId -> wnid from Kaggle's LOC_val_solution.csv: the first wnid of PredictionString."""
    lines = read_text(path).splitlines()
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


def check_wnid(wnid: str, where: str, words: dict[str, str] | None, names_file: str | None) -> None:
    if words is None:
        if not WNID.fullmatch(wnid):
            raise UsageError(f"{where}: {wnid!r} is not a wnid (n followed by 8 digits); ILSVRC-2012 class folders "
                             f"are named by wnid: rename or remove it")
    elif wnid not in words:
        raise UsageError(f"{where}: unknown wnid {wnid!r}: not one of the {len(words)} classes (leaf synsets) of "
                         f"{names_file}; rename or remove it")


def class_names(wnids: list[str], words: dict[str, str] | None) -> list[str]:
    if words is None:
        return list(wnids)
    first = [words[w].split(",")[0].strip() for w in wnids]
    counts: dict[str, int] = {}
    for name in first:
        counts[name] = counts.get(name, 0) + 1
    return [f"{name} ({wnid})" if counts[name] > 1 else name for name, wnid in zip(first, wnids)]


def ground_truth_pairs(entries: list[tuple[str, object]], devkit: Devkit, where: str,
                       skipped: list[tuple[str, str]]) -> list[tuple[object, str]]:
    """(item, wnid) of the flat validation images ``entries`` (file name, item: a path or an archive member), by
    the devkit's ground truth."""
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
