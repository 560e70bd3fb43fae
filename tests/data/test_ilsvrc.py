"""ILSVRC-2012 as users hold it (alexnet/data/ilsvrc.py): the four layouts recognised by their files, every image
labelled as the devkit or Kaggle's files say and as torchvision's ImageNet labels it, the archives read in place, and
each bad input a UsageError naming its file. The trees are miniatures from bench/ilsvrc_tree.py."""
from __future__ import annotations

import gzip
import hashlib
import io
import os
import re
import shutil
import sys
import tarfile
from pathlib import Path

import pytest

from alexnet.data.ilsvrc import LAYOUTS, IlsvrcListing, TarMember, detect, list_ilsvrc
from alexnet.data.listing import Listing
from alexnet.errors import UsageError

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import ilsvrc_tree as tree  # noqa: E402  (bench/ilsvrc_tree.py)

SYNSETS = tree.synsets(10, seed=3)
PLAN = tree.make_plan(SYNSETS, train_per_class=2, val_per_class=2)
SUBSET = tree.make_plan(SYNSETS, train_per_class=2, val_per_class=2, train_classes=6)   # 6 of the 10 classes
UNKNOWN = "n99999999"                                   # a wnid no file of the data set knows

BUILDERS = {
    "devkit": tree.write_devkit_layout,
    "devkit-folder": lambda root, plan: tree.write_devkit_layout(root, plan, devkit_tar_gz=False),
    "archives": tree.write_archives,
    "kaggle": tree.write_kaggle,
    "sorted": tree.write_sorted,                        # the devkit as tar.gz, as torchvision's ImageNet wants it
    "sorted-devkit-folder": lambda root, plan: tree.write_sorted(root, plan, names="devkit-folder"),
    "sorted-mapping": lambda root, plan: tree.write_sorted(root, plan, names="mapping"),
    "sorted-unnamed": lambda root, plan: tree.write_sorted(root, plan, names=None),
}
EXTRA_FILES = {
    "devkit": ["ILSVRC2012_devkit_t12.tar.gz"],
    "devkit-folder": ["ILSVRC2012_devkit_t12/data/meta.mat",
                      "ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt"],
    "archives": ["ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar", "ILSVRC2012_devkit_t12.tar.gz"],
    "kaggle": ["LOC_synset_mapping.txt", "LOC_val_solution.csv"],
    "sorted": ["ILSVRC2012_devkit_t12.tar.gz"],
    "sorted-devkit-folder": ["ILSVRC2012_devkit_t12/data/meta.mat"],
    "sorted-mapping": ["LOC_synset_mapping.txt"],
    "sorted-unnamed": [],
}


def build(tmp_path: Path, variant: str, plan: tree.Plan = PLAN) -> Path:
    root = tmp_path / variant
    BUILDERS[variant](root, plan)
    return root


def file_name(item: str | TarMember) -> str:
    return os.path.basename(item.name if isinstance(item, TarMember) else item)


def expected_names(wnids: list[str]) -> list[str]:
    """First words, and "word (wnid)" for every class whose first word another class shares."""
    words = {s.wnid: s.words.split(",")[0] for s in SYNSETS}
    first = [words[w] for w in wnids]
    return [f"{name} ({w})" if first.count(name) > 1 else name for name, w in zip(first, wnids)]


def snapshot(root: Path) -> list[tuple[str, int]]:
    return sorted((os.path.join(top, f), os.path.getsize(os.path.join(top, f)))
                  for top, _, files in os.walk(root) for f in [*files, "."])


def test_the_miniature_is_like_the_real_devkit():
    """IDs 1..n are the leaves, not in wnid order; non-leaf wnids fall among them; two leaves are cranes."""
    leaves = [s for s in SYNSETS if not s.children]
    parents = [s for s in SYNSETS if s.children]
    assert [s.id for s in leaves] == list(range(1, 11)) and [s.id for s in parents] == [11, 12, 13]
    assert [s.wnid for s in leaves] != sorted(s.wnid for s in leaves)
    everything = sorted(s.wnid for s in SYNSETS)
    assert any(everything.index(p.wnid) < len(everything) - len(parents) for p in parents)
    assert sum(s.words == "crane" for s in leaves) == 2


@pytest.mark.parametrize("variant", BUILDERS)
def test_detect_recognises_each_layout(tmp_path, variant):
    assert detect(str(build(tmp_path, variant))) == variant.split("-")[0]


def test_detect_train_only_and_not_ilsvrc(tmp_path):
    (tmp_path / "train-only").mkdir()
    tree.write_sorted(tmp_path / "train-only", PLAN, names=None)
    shutil.rmtree(tmp_path / "train-only" / "val")
    assert detect(str(tmp_path / "train-only")) == "sorted"
    listing = list_ilsvrc(str(tmp_path / "train-only"))
    assert list(listing.splits) == ["train"] and len(listing.splits["train"]) == 20
    assert "named by wnid" in listing.description
    wnid_folders = tmp_path / "train-only" / "train"            # a folder of wnid folders, no train/ or val/
    assert detect(str(wnid_folders)) == "sorted" and list_ilsvrc(str(wnid_folders)).wnids == sorted(PLAN.train)

    plain = tmp_path / "plain"
    for name in ("cat", "dog"):
        (plain / name).mkdir(parents=True)
        (plain / name / "1.jpg").write_bytes(tree.small_jpeg(name, "1.jpg"))
    split = tmp_path / "split"
    shutil.copytree(plain, split / "train")
    shutil.copytree(plain, split / "val")
    (tmp_path / "empty").mkdir()
    for folder in (plain, split, tmp_path / "empty"):
        assert detect(str(folder)) is None
    with pytest.raises(UsageError, match="not ILSVRC-2012"):
        list_ilsvrc(str(plain))


@pytest.mark.parametrize("variant", BUILDERS)
def test_every_image_gets_its_label(tmp_path, variant):
    root = build(tmp_path, variant)
    listing = list_ilsvrc(str(root))
    assert isinstance(listing, IlsvrcListing) and isinstance(listing, Listing)
    assert listing.layout == variant.split("-")[0] and listing.layout in LAYOUTS
    assert listing.wnids == sorted(PLAN.train)                  # torchvision's order: sorted train wnids
    assert not {s.wnid for s in SYNSETS if s.children} & set(listing.wnids)
    assert listing.classes == (listing.wnids if variant == "sorted-unnamed" else expected_names(listing.wnids))
    assert sum("crane (" in name for name in listing.classes) == (0 if variant == "sorted-unnamed" else 2)
    truth = PLAN.truth
    for split in ("train", "val"):
        items = listing.splits[split]
        names = [file_name(item) for item, _ in items]
        assert sorted(names) == sorted(n for n in truth if n.startswith("ILSVRC2012_val") == (split == "val"))
        assert all(listing.wnids[label] == truth[file_name(item)] for item, label in items)
        order = [(label, name) for (_, label), name in zip(items, names)] if split == "train" else names
        assert order == sorted(order)
    assert all(isinstance(item, TarMember if variant == "archives" else str) for s in listing.splits.values()
               for item, _ in s)
    assert sorted(listing.extra_files) == sorted(str(root / f) for f in EXTRA_FILES[variant])
    assert listing.skipped == ([(str(root / "ILSVRC/Data/CLS-LOC/test"), listing.skipped[0][1])]
                               if variant == "kaggle" else [])
    assert f"({listing.layout} layout) in {root} (10 classes" in listing.description
    assert "train 20, val 20" in listing.description


def test_archive_members_are_the_bytes_put_in_and_nothing_is_extracted(tmp_path):
    root = build(tmp_path, "archives")
    before = snapshot(root)
    listing = list_ilsvrc(str(root))
    assert snapshot(root) == before
    members = [item for split in listing.splits.values() for item, _ in split]
    assert len(members) == 40
    for member in members:
        wnid = PLAN.truth[file_name(member)]
        assert member.read() == tree.small_jpeg(wnid, file_name(member))
        assert os.path.isabs(member.archive) and str(member) == f"{member.archive}:{member.name}"
    train = listing.splits["train"][0][0]
    assert re.fullmatch(r"n\d{8}\.tar/n\d{8}_\d+\.JPEG", train.name)
    assert train.archive == str(root / "ILSVRC2012_img_train.tar")
    assert snapshot(root) == before


def test_a_truncated_archive_is_an_os_error_naming_it(tmp_path):
    root = build(tmp_path, "archives")
    last = list_ilsvrc(str(root)).splits["val"][-1][0]
    os.truncate(last.archive, last.offset + last.size // 2)
    with pytest.raises(OSError, match=re.escape(last.archive)):
        last.read()


@pytest.mark.parametrize("variant", ["devkit", "archives", "kaggle", "sorted"])
def test_val_images_of_classes_without_train_images_are_one_skipped_item(tmp_path, variant):
    listing = list_ilsvrc(str(build(tmp_path, variant, SUBSET)))
    assert listing.wnids == sorted(SUBSET.train) and len(listing.wnids) == 6
    val = listing.splits["val"]
    assert len(val) == 12 and all(listing.wnids[label] == SUBSET.truth[file_name(i)] for i, label in val)
    left_out = [reason for _, reason in listing.skipped if "left out" in reason]
    assert len(left_out) == 1 and "8 validation images of 4 classes" in left_out[0]


def test_empty_class_folder_kept_and_other_files_ignored_or_reported(tmp_path):
    root = build(tmp_path, "devkit", SUBSET)
    missing = sorted({s.wnid for s in SUBSET.leaves} - set(SUBSET.train))[0]
    (root / "train" / missing).mkdir()                          # a class with no training images
    some = root / "train" / sorted(SUBSET.train)[0]
    (some / "README.txt").write_text("not an image")
    (some / ".hidden.JPEG").write_bytes(b"")
    (some / "anim.gif").write_bytes(b"GIF89a")
    (some / "sub").mkdir()
    (root / "val" / "notes.txt").write_text("not an image")
    listing = list_ilsvrc(str(root))
    assert missing in listing.wnids and len(listing.wnids) == 7
    label = listing.wnids.index(missing)
    assert not [i for i, lab in listing.splits["train"] if lab == label]
    assert len([i for i, lab in listing.splits["val"] if lab == label]) == 2   # its val images are labelled
    reasons = {item: reason for item, reason in listing.skipped}
    assert "empty class folder" in reasons[str(root / "train" / missing)]
    assert "GIF" in reasons[str(some / "anim.gif")] and "sub-folder" in reasons[str(some)]
    assert len(listing.splits["train"]) == 12 and len(listing.skipped) == 4


def trust_archives(monkeypatch, root: Path) -> None:
    """torchvision's ImageNet checks the archives' MD5 against the real ones: make it check against ours."""
    from torchvision.datasets import imagenet

    for key, (name, _) in list(imagenet.ARCHIVE_META.items()):
        if (root / name).exists():
            monkeypatch.setitem(imagenet.ARCHIVE_META, key, (name, hashlib.md5((root / name).read_bytes()).hexdigest()))


def torchvision_labels(root: Path, split: str) -> tuple[dict[str, int], list[str], list[tuple[str, ...]]]:
    from torchvision.datasets import ImageNet

    dataset = ImageNet(str(root), split=split)
    return {os.path.basename(path): target for path, target in dataset.samples}, dataset.wnids, dataset.classes


def assert_agrees(listing: IlsvrcListing, split: str, labels: dict[str, int], wnids: list[str],
                  classes: list[tuple[str, ...]]) -> None:
    assert {file_name(item): label for item, label in listing.splits[split]} == labels
    assert listing.wnids == wnids
    assert [name.split(" (n")[0] for name in listing.classes] == [words[0] for words in classes]


def test_torchvision_agrees_on_the_sorted_layout(tmp_path, monkeypatch):
    """torchvision's ImageNet reads train/ and val/<wnid>/ with the devkit tar.gz (it writes meta.bin: a copy)."""
    root = build(tmp_path, "sorted")
    theirs = tmp_path / "torchvision"
    shutil.copytree(root, theirs)
    trust_archives(monkeypatch, theirs)
    listing = list_ilsvrc(str(root))
    for split in ("train", "val"):
        assert_agrees(listing, split, *torchvision_labels(theirs, split))


def test_torchvision_agrees_on_the_archives_and_the_flat_val_folder(tmp_path, monkeypatch):
    """torchvision extracts the three downloaded files and sorts val by the ground truth; our archives listing and
    our devkit-layout listing (flat val/) of the same images label them as it does."""
    archives, flat = build(tmp_path, "archives"), build(tmp_path, "devkit")
    theirs = tmp_path / "torchvision"
    shutil.copytree(archives, theirs)
    trust_archives(monkeypatch, theirs)
    for split in ("train", "val"):
        labels = torchvision_labels(theirs, split)
        assert len(labels[0]) == 20
        for root in (archives, flat):
            assert_agrees(list_ilsvrc(str(root)), split, *labels)


# ---- bad input: a UsageError naming the file -----------------------------------------------------------------------

def rewrite_ground_truth(root: Path, line: int, value: str) -> None:
    path = root / "ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt"
    lines = path.read_text().splitlines()
    lines[line - 1] = value
    path.write_text("\n".join(lines) + "\n")


def append_to_tar(path: Path, name: str, data: bytes | None = None, kind: bytes = tarfile.REGTYPE) -> None:
    """A member appended to an uncompressed tar: a file, or (``kind``) a link or a sparse file."""
    with tarfile.open(path, "a", format=tarfile.GNU_FORMAT) as tar:
        info = tarfile.TarInfo(name)
        info.type = kind
        if kind == tarfile.SYMTYPE:
            info.linkname = "elsewhere.JPEG"
        info.size = len(data or b"")
        tar.addfile(info, io.BytesIO(data) if data else None)


def inner_tar(*members: tuple[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, kind in members:
            info = tarfile.TarInfo(name)
            info.type = kind
            if kind == tarfile.SYMTYPE:
                info.linkname = "elsewhere.JPEG"
            tar.addfile(info)
    return out.getvalue()


def compress(path: Path) -> None:
    path.write_bytes(gzip.compress(path.read_bytes()))


def add_image(folder: Path, name: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(tree.small_jpeg("", name))


def append_line(path: Path, line: str) -> None:
    with open(path, "a") as f:
        f.write(line + "\n")


LEAF = SYNSETS[0].wnid                 # ILSVRC2012_ID 1
PARENT_ID = SYNSETS[-1].id             # a non-leaf
VAL = "ILSVRC/Data/CLS-LOC/val"
BAD_INPUT = {                          # name: (variant, damage, the file the message names)
    "devkit missing": ("devkit", lambda r: os.remove(r / "ILSVRC2012_devkit_t12.tar.gz"),
                       "ILSVRC2012_devkit_t12.tar.gz"),
    "meta.mat missing": ("devkit-folder", lambda r: os.remove(r / "ILSVRC2012_devkit_t12/data/meta.mat"), "meta.mat"),
    "ground truth missing": ("devkit-folder", lambda r: os.remove(
        r / "ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt"), "ILSVRC2012_validation_ground_truth"),
    "fewer val images than lines": ("devkit", lambda r: os.remove(r / "val/ILSVRC2012_val_00000007.JPEG"),
                                    "ILSVRC2012_validation_ground_truth.txt"),
    "val image beyond the lines": ("devkit", lambda r: os.rename(r / "val/ILSVRC2012_val_00000020.JPEG",
                                                                 r / "val/ILSVRC2012_val_00000025.JPEG"),
                                   "ILSVRC2012_val_00000025.JPEG"),
    "ground truth ID not a leaf": ("devkit-folder", lambda r: rewrite_ground_truth(r, 3, str(PARENT_ID)),
                                   "ILSVRC2012_validation_ground_truth.txt:3"),
    "ground truth unparsable": ("devkit-folder", lambda r: rewrite_ground_truth(r, 2, "seven"),
                                "ILSVRC2012_validation_ground_truth.txt:2"),
    "meta.mat unreadable": ("devkit-folder", lambda r: (r / "ILSVRC2012_devkit_t12/data/meta.mat").write_bytes(
        b"not a mat file"), "meta.mat"),
    "unknown train wnid": ("devkit", lambda r: add_image(r / "train" / UNKNOWN, "x.JPEG"), f"train/{UNKNOWN}"),
    "unknown inner tar": ("archives", lambda r: append_to_tar(r / "ILSVRC2012_img_train.tar", f"{UNKNOWN}.tar",
                                                              inner_tar()), f"{UNKNOWN}.tar"),
    "compressed train tar": ("archives", lambda r: compress(r / "ILSVRC2012_img_train.tar"),
                             "ILSVRC2012_img_train.tar"),
    "compressed val tar": ("archives", lambda r: compress(r / "ILSVRC2012_img_val.tar"), "ILSVRC2012_img_val.tar"),
    "val tar missing": ("archives", lambda r: os.remove(r / "ILSVRC2012_img_val.tar"), "ILSVRC2012_img_val.tar"),
    "devkit missing beside the tars": ("archives", lambda r: os.remove(r / "ILSVRC2012_devkit_t12.tar.gz"),
                                       "ILSVRC2012_devkit_t12.tar.gz"),
    "link in a per-synset tar": ("archives", lambda r: append_to_tar(
        r / "ILSVRC2012_img_train.tar", f"{LEAF}.tar", inner_tar(("link.JPEG", tarfile.SYMTYPE))),
        f"{LEAF}.tar/link.JPEG"),
    "sparse member in a per-synset tar": ("archives", lambda r: append_to_tar(
        r / "ILSVRC2012_img_train.tar", f"{LEAF}.tar", inner_tar(("sparse.JPEG", tarfile.GNUTYPE_SPARSE))),
        f"{LEAF}.tar/sparse.JPEG"),
    "link in the val tar": ("archives", lambda r: append_to_tar(
        r / "ILSVRC2012_img_val.tar", "ILSVRC2012_val_00000021.JPEG", kind=tarfile.SYMTYPE),
        "ILSVRC2012_img_val.tar:ILSVRC2012_val_00000021.JPEG"),
    "kaggle val image without a row": ("kaggle", lambda r: add_image(r / VAL, "ILSVRC2012_val_00000999.JPEG"),
                                       "ILSVRC2012_val_00000999.JPEG"),
    "kaggle row with an unknown wnid": ("kaggle", lambda r: append_line(
        r / "LOC_val_solution.csv", f"ILSVRC2012_val_00000999,{UNKNOWN} 1 2 3 4"), "LOC_val_solution.csv:22"),
    "kaggle row unparsable": ("kaggle", lambda r: append_line(r / "LOC_val_solution.csv", "ILSVRC2012_val_00000999"),
                              "LOC_val_solution.csv:22"),
    "kaggle mapping unparsable": ("kaggle", lambda r: append_line(r / "LOC_synset_mapping.txt", "tench"),
                                  "LOC_synset_mapping.txt:11"),
    "kaggle mapping missing": ("kaggle", lambda r: os.remove(r / "LOC_synset_mapping.txt"), "LOC_synset_mapping.txt"),
    "kaggle unknown train wnid": ("kaggle", lambda r: add_image(r / "ILSVRC/Data/CLS-LOC/train" / UNKNOWN, "x.JPEG"),
                                  f"train/{UNKNOWN}"),
    "sorted unknown train wnid": ("sorted-mapping", lambda r: add_image(r / "train" / UNKNOWN, "x.JPEG"),
                                  f"train/{UNKNOWN}"),
    "sorted unknown val wnid": ("sorted", lambda r: add_image(r / "val" / UNKNOWN, "x.JPEG"), f"val/{UNKNOWN}"),
    "sorted val folder not a wnid": ("sorted-unnamed", lambda r: add_image(r / "val" / "cat", "x.JPEG"), "val/cat"),
}


@pytest.mark.parametrize("case", BAD_INPUT)
def test_bad_input_is_a_usage_error_naming_the_file(tmp_path, case):
    variant, damage, named = BAD_INPUT[case]
    root = build(tmp_path, variant)
    damage(root)
    with pytest.raises(UsageError, match=re.escape(named)):
        list_ilsvrc(str(root))


def test_the_kaggle_ilsvrc_folder_itself_is_refused_naming_its_parent(tmp_path):
    root = build(tmp_path, "kaggle")
    assert detect(str(root / "ILSVRC")) == "kaggle"
    with pytest.raises(UsageError, match=re.escape(f"({root})")):
        list_ilsvrc(str(root / "ILSVRC"))
