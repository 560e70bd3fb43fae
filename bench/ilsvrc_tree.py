"""Miniature ILSVRC-2012 data in the four layouts users hold it in, for tests and benchmarks.

    plan = make_plan(synsets(10), train_per_class=3, val_per_class=2)
    write_devkit_layout(root / "a", plan)     # train/<wnid>/, flat val/, ILSVRC2012_devkit_t12.tar.gz
    write_archives(root / "b", plan)          # ILSVRC2012_img_train.tar, ILSVRC2012_img_val.tar, the devkit
    write_kaggle(root / "c", plan)            # ILSVRC/Data/CLS-LOC/, LOC_synset_mapping.txt, LOC_val_solution.csv
    write_sorted(root / "d", plan)            # train/<wnid>/, val/<wnid>/, the devkit

As in the real devkit: the leaves' ILSVRC2012_IDs 1..n are NOT in wnid order, the non-leaf synsets (num_children > 0)
follow them with their wnids among the leaves', meta.mat is a MATLAB struct array read by
``scipy.io.loadmat(squeeze_me=True)``, and two leaves share their first word ("crane", bird and machine).
The images come from ``image(wnid, file_name) -> bytes`` (default ``small_jpeg``: the same bytes for the same file
name in every layout, so tests can compare what they read with what was written). Each writer returns
{file name: wnid} of the labelled images it wrote.
"""
from __future__ import annotations

import io
import os
import random
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from PIL import Image

ImageBytes = Callable[[str, str], bytes]     # (wnid, file name) -> the file's bytes

DEVKIT = "ILSVRC2012_devkit_t12"
META_FIELDS = ("ILSVRC2012_ID", "WNID", "words", "gloss", "num_children", "children", "wordnet_height",
               "num_train_images")
# Leaf words as in the devkit; the first two share their first word (ImageNet's two cranes).
WORDS = ("crane", "crane", "tench, Tinca tinca", "goldfish, Carassius auratus", "kit fox, Vulpes macrotis",
         "maillot, tank suit", "great white shark, white shark, man-eater, man-eating shark, Carcharodon carcharias",
         "cock", "hen", "ostrich, Struthio camelus", "brambling, Fringilla montifringilla", "goldfinch, Carduelis "
         "carduelis", "house finch, linnet, Carpodacus mexicanus", "junco, snowbird", "water ouzel, dipper")
PARENT_WORDS = ("bird", "fish", "device", "garment")
MTIME = 1_336_000_000                        # tar members' time: May 2012


@dataclass(frozen=True)
class Synset:
    """One synset of meta.mat; a leaf (a class) has no children."""

    id: int
    wnid: str
    words: str
    children: tuple[int, ...] = ()

    @property
    def gloss(self) -> str:
        return f"a thing called {self.words.split(',')[0]}"


def synsets(n_leaves: int, seed: int = 0, n_parents: int = 3) -> list[Synset]:
    """``n_leaves`` leaf synsets (IDs 1..n_leaves, shuffled against wnid order) then ``n_parents`` non-leaves."""
    rng = random.Random(seed)
    numbers = sorted(rng.sample(range(1_000_000, 15_000_000), n_leaves + n_parents))
    wnids = [f"n{n:08d}" for n in numbers]
    rng.shuffle(wnids)                       # non-leaf wnids fall among the leaves'
    leaves, parents = sorted(wnids[:n_leaves]), wnids[n_leaves:]
    ids = list(range(1, n_leaves + 1))
    while n_leaves > 1 and ids == sorted(ids):
        rng.shuffle(ids)                     # IDs not in wnid order, as in the real devkit
    words = [WORDS[i] if i < len(WORDS) else f"thing {i}, object {i}" for i in range(n_leaves)]
    rng.shuffle(words)
    found = [Synset(i, wnid, text) for i, wnid, text in zip(ids, leaves, words)]
    found.sort(key=lambda s: s.id)
    for k, wnid in enumerate(parents):
        children = tuple(range(1 + k, n_leaves + 1, n_parents)) or (1,)
        found.append(Synset(n_leaves + 1 + k, wnid, PARENT_WORDS[k % len(PARENT_WORDS)], children))
    return found


def write_meta_mat(path: str | os.PathLike | io.BytesIO, synset_list: Sequence[Synset]) -> None:
    """meta.mat as the devkit's: a (n, 1) struct array ``synsets`` with the devkit's fields and integer types."""
    from scipy.io import savemat

    records = np.empty((len(synset_list), 1), dtype=[(f, object) for f in META_FIELDS])
    for row, s in enumerate(synset_list):
        children = np.array(s.children, np.uint16) if s.children else np.zeros(0, np.uint8)
        records[row, 0] = (np.uint16(s.id), s.wnid, s.words, s.gloss, np.uint16(len(s.children)), children,
                           np.uint16(1 if s.children else 0), np.uint16(0 if s.children else 1300))
    savemat(path, {"synsets": records})


@dataclass
class Plan:
    """What a miniature ILSVRC-2012 holds: the synsets, train file names per wnid, and the val images' wnids."""

    synsets: list[Synset]
    train: dict[str, list[str]]      # wnid -> file names ("n01440764_3.JPEG"); only classes with train images
    val: list[str]                   # val[i - 1]: the wnid of ILSVRC2012_val_{i:08d}.JPEG

    @property
    def leaves(self) -> list[Synset]:
        return [s for s in self.synsets if not s.children]

    @property
    def val_files(self) -> list[tuple[str, str]]:
        """(file name, wnid) of the validation images, in number order."""
        return [(f"ILSVRC2012_val_{i:08d}.JPEG", wnid) for i, wnid in enumerate(self.val, 1)]

    @property
    def ground_truth(self) -> list[int]:
        ids = {s.wnid: s.id for s in self.leaves}
        return [ids[wnid] for wnid in self.val]

    @property
    def truth(self) -> dict[str, str]:
        """file name -> wnid of every labelled image (train and val)."""
        found = {name: wnid for wnid, names in self.train.items() for name in names}
        found.update(self.val_files)
        return found


def make_plan(synset_list: list[Synset], train_per_class: int = 3, val_per_class: int = 2,
              train_classes: int | None = None, seed: int = 0) -> Plan:
    """Train images for the first ``train_classes`` leaves by ID (all by default); val images of every leaf,
    shuffled as in the real val set."""
    rng = random.Random(seed)
    leaves = [s.wnid for s in synset_list if not s.children]
    with_train = leaves[:train_classes] if train_classes is not None else leaves
    train = {wnid: [f"{wnid}_{k}.JPEG" for k in rng.sample(range(1, 20_000), train_per_class)] for wnid in with_train}
    val = [wnid for wnid in leaves for _ in range(val_per_class)]
    rng.shuffle(val)
    return Plan(synset_list, train, val)


def small_jpeg(wnid: str, name: str) -> bytes:
    """A 24..40 px colour JPEG (quality 90): a gradient in the class's colour plus noise, fixed by ``name``."""
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    height, width = (int(v) for v in rng.integers(24, 41, size=2))
    colour = np.frombuffer(zlib.crc32(wnid.encode()).to_bytes(4, "little")[:3], np.uint8).astype(np.float32)
    ramp = np.linspace(0.5, 1.0, width, dtype=np.float32)[None, :, None]
    pixels = colour * ramp + rng.normal(0, 12, (height, width, 3))
    out = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(out, "JPEG", quality=90)
    return out.getvalue()


def _add(tar: tarfile.TarFile, name: str, data: bytes | None = None) -> None:
    """A file (``data``) or, with None, a directory member."""
    info = tarfile.TarInfo(name)
    info.mtime = MTIME
    if data is None:
        info.type, info.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(info)
    else:
        info.size, info.mode = len(data), 0o644
        tar.addfile(info, io.BytesIO(data))


def write_devkit(root: str | os.PathLike, synset_list: Sequence[Synset], ground_truth: Sequence[int],
                 as_tar_gz: bool = True) -> Path:
    """The devkit in ``root``: ``ILSVRC2012_devkit_t12.tar.gz`` (never extracted by readers) or the extracted
    ``ILSVRC2012_devkit_t12/data/{meta.mat, ILSVRC2012_validation_ground_truth.txt}``; line i of the ground truth is
    the ILSVRC2012_ID of ILSVRC2012_val_{i:08d}."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    meta = io.BytesIO()
    write_meta_mat(meta, synset_list)
    files = {f"{DEVKIT}/data/meta.mat": meta.getvalue(),
             f"{DEVKIT}/data/ILSVRC2012_validation_ground_truth.txt": "".join(f"{i}\n" for i in ground_truth).encode(),
             f"{DEVKIT}/readme.txt": b"ILSVRC2012 development kit (miniature)\n"}
    if not as_tar_gz:
        for name, data in files.items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_bytes(data)
        return root / DEVKIT
    path = root / f"{DEVKIT}.tar.gz"
    with tarfile.open(path, "w:gz", format=tarfile.GNU_FORMAT) as tar:
        for folder in (DEVKIT, f"{DEVKIT}/data"):
            _add(tar, folder)
        for name, data in files.items():
            _add(tar, name, data)
    return path


def _write_images(folder: Path, files: Sequence[tuple[str, str]], image: ImageBytes) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, wnid in files:
        (folder / name).write_bytes(image(wnid, name))


def _write_train(folder: Path, plan: Plan, image: ImageBytes) -> None:
    for wnid, names in plan.train.items():
        _write_images(folder / wnid, [(name, wnid) for name in names], image)


def write_devkit_layout(root: str | os.PathLike, plan: Plan, image: ImageBytes = small_jpeg,
                        devkit_tar_gz: bool = True) -> dict[str, str]:
    """Layout "devkit": ``train/<wnid>/``, a flat ``val/``, and the devkit (tar.gz, or extracted)."""
    root = Path(root)
    _write_train(root / "train", plan, image)
    _write_images(root / "val", plan.val_files, image)
    write_devkit(root, plan.synsets, plan.ground_truth, devkit_tar_gz)
    return plan.truth


def write_archives(root: str | os.PathLike, plan: Plan, image: ImageBytes = small_jpeg) -> dict[str, str]:
    """Layout "archives": ``ILSVRC2012_img_train.tar`` (per-synset tars, in ID order as downloaded, not sorted),
    ``ILSVRC2012_img_val.tar`` (flat) and ``ILSVRC2012_devkit_t12.tar.gz``."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    with tarfile.open(root / "ILSVRC2012_img_train.tar", "w", format=tarfile.GNU_FORMAT) as outer:
        for wnid, names in plan.train.items():
            inner = io.BytesIO()
            with tarfile.open(fileobj=inner, mode="w", format=tarfile.GNU_FORMAT) as tar:
                for name in names:
                    _add(tar, name, image(wnid, name))
            _add(outer, f"{wnid}.tar", inner.getvalue())
    with tarfile.open(root / "ILSVRC2012_img_val.tar", "w", format=tarfile.GNU_FORMAT) as tar:
        for name, wnid in plan.val_files:
            _add(tar, name, image(wnid, name))
    write_devkit(root, plan.synsets, plan.ground_truth)
    return plan.truth


def write_synset_mapping(path: str | os.PathLike, plan: Plan) -> None:
    """Kaggle's LOC_synset_mapping.txt: every leaf in wnid order, "n01440764 tench, Tinca tinca"."""
    Path(path).write_text("".join(f"{s.wnid} {s.words}\n" for s in sorted(plan.leaves, key=lambda s: s.wnid)))


def write_kaggle(root: str | os.PathLike, plan: Plan, image: ImageBytes = small_jpeg,
                 test_images: int = 2) -> dict[str, str]:
    """Layout "kaggle": ``ILSVRC/Data/CLS-LOC/{train/<wnid>,val,test}/``, ``LOC_synset_mapping.txt`` and
    ``LOC_val_solution.csv`` (rows shuffled, one or two boxes of the image's wnid)."""
    root = Path(root)
    data = root / "ILSVRC" / "Data" / "CLS-LOC"
    _write_train(data / "train", plan, image)
    _write_images(data / "val", plan.val_files, image)
    _write_images(data / "test", [(f"ILSVRC2012_test_{i:08d}.JPEG", "") for i in range(1, test_images + 1)], image)
    write_synset_mapping(root / "LOC_synset_mapping.txt", plan)
    rng = random.Random(len(plan.val))
    rows = []
    for name, wnid in plan.val_files:
        boxes = " ".join(f"{wnid} {rng.randrange(0, 20)} {rng.randrange(0, 20)} {rng.randrange(20, 40)} "
                         f"{rng.randrange(20, 40)}" for _ in range(rng.randint(1, 2)))
        rows.append(f"{name.split('.')[0]},{boxes}\n")
    rng.shuffle(rows)
    (root / "LOC_val_solution.csv").write_text("ImageId,PredictionString\n" + "".join(rows))
    return plan.truth


def write_sorted(root: str | os.PathLike, plan: Plan, image: ImageBytes = small_jpeg,
                 names: str | None = "devkit") -> dict[str, str]:
    """Layout "sorted": ``train/<wnid>/`` and ``val/<wnid>/``, the class names from ``names``: "devkit" (the tar.gz,
    as torchvision's ImageNet wants it), "devkit-folder" (extracted), "mapping" (LOC_synset_mapping.txt) or None."""
    root = Path(root)
    _write_train(root / "train", plan, image)
    for name, wnid in plan.val_files:
        _write_images(root / "val" / wnid, [(name, wnid)], image)
    if names in ("devkit", "devkit-folder"):
        write_devkit(root, plan.synsets, plan.ground_truth, as_tar_gz=names == "devkit")
    elif names == "mapping":
        write_synset_mapping(root / "LOC_synset_mapping.txt", plan)
    elif names is not None:
        raise ValueError(f"names must be devkit, devkit-folder, mapping or None, got {names!r}")
    return plan.truth
