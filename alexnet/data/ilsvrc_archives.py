"""ILSVRC-2012's archives read in place: ``ILSVRC2012_img_train.tar`` (a tar of per-synset tars) and
``ILSVRC2012_img_val.tar`` indexed from their tar headers only (member data is seeked over, never read), each image
a ``TarMember``: its bytes' offset and size in the outer file, read with one ``pread`` when it is decoded.
Only uncompressed tars of regular files can be read in place; anything else is a UsageError naming the file.
"""
from __future__ import annotations

import os
import tarfile
from dataclasses import dataclass
from operator import attrgetter

from alexnet.data.decode import is_image_file
from alexnet.data.ilsvrc_devkit import COMPRESSED, GIF_REASON, TRAIN_TAR, Devkit, check_wnid
from alexnet.data.listing import GIF_EXTENSIONS
from alexnet.errors import UsageError


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


def index_train_tar(path: str, devkit: Devkit, skipped: list[tuple[str, str]]) -> dict[str, list[TarMember]]:
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
                check_wnid(wnid, where, devkit.words, devkit.meta)
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


def index_val_tar(path: str, skipped: list[tuple[str, str]]) -> list[tuple[str, TarMember]]:
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
