"""Builtin datasets (Fashion-MNIST, MNIST): find the idx files locally, or download them with an MD5 check.

Looked up, in order, in: ``data_root`` (itself or ``data_root/<name>``), ``$ALEXNET_DATA/<name>``,
``/usr/share/datasets/<name>`` (Debian/Ubuntu ``dataset-fashion-mnist``), ``~/.cache/alexnet/<name>``;
otherwise downloaded from the canonical URLs into the last of these.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass

from tqdm import tqdm

from alexnet.errors import UsageError
from alexnet.util.atomic import atomic_path

FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
SYSTEM_DATASETS = "/usr/share/datasets"
DOWNLOAD_TIMEOUT_S = 30


@dataclass(frozen=True)
class Builtin:
    name: str
    url: str                       # base URL; file names are appended
    md5: dict[str, str]            # file name -> MD5 of the .gz file
    classes: tuple[str, ...]
    apt_package: str = ""


BUILTINS: dict[str, Builtin] = {
    "fashion-mnist": Builtin(
        "fashion-mnist", "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        {"train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
         "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
         "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
         "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310"},
        tuple(FASHION_MNIST_CLASSES), apt_package="dataset-fashion-mnist"),
    "mnist": Builtin(   # MD5s as in torchvision.datasets.MNIST
        "mnist", "https://ossci-datasets.s3.amazonaws.com/mnist/",
        {"train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
         "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
         "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
         "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c"},
        tuple(str(i) for i in range(10))),
}


def cache_root() -> str:
    """``$ALEXNET_CACHE`` or ``$XDG_CACHE_HOME/alexnet`` or ``~/.cache/alexnet``."""
    if os.environ.get("ALEXNET_CACHE"):
        return os.environ["ALEXNET_CACHE"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "alexnet")


def search_dirs(name: str, data_root: str | None = None) -> list[str]:
    """The folders looked in for builtin ``name``, in order."""
    dirs = []
    if data_root:
        dirs += [os.path.join(data_root, name), data_root]
    if os.environ.get("ALEXNET_DATA"):
        dirs.append(os.path.join(os.environ["ALEXNET_DATA"], name))
    dirs += [os.path.join(SYSTEM_DATASETS, name), os.path.join(cache_root(), name)]
    return dirs


def _has_files(folder: str, builtin: Builtin) -> bool:
    return all(os.path.isfile(os.path.join(folder, f)) or os.path.isfile(os.path.join(folder, f[:-3]))
               for f in builtin.md5)


def find_builtin(name: str, data_root: str | None = None, *, progress: bool = True) -> str:
    """The folder holding builtin ``name``'s four idx files, downloading them if nowhere to be found."""
    builtin = BUILTINS[name]
    dirs = search_dirs(name, data_root)
    for folder in dirs:
        if _has_files(folder, builtin):
            return folder
    target = dirs[-1]
    try:
        download(builtin, target, progress=progress)
    except (OSError, urllib.error.URLError, http.client.HTTPException) as err:
        if os.path.isdir(target) and not os.listdir(target):
            os.rmdir(target)
        files = ", ".join(builtin.md5)
        ways = [f"--data-root DIR (files in DIR or DIR/{name})" if not data_root else f"--data-root {data_root}",
                f"$ALEXNET_DATA/{name}", os.path.join(SYSTEM_DATASETS, name)
                + (f" (apt-get install {builtin.apt_package})" if builtin.apt_package else ""), target]
        raise UsageError(
            f"{name}: the files were not found and could not be downloaded from {builtin.url} ({err}).\n"
            f"Put the four files ({files}; gzipped or not) in one of:\n  " + "\n  ".join(ways)
            + f"\nor connect to the internet and run again to download them into {target}.") from None
    return target


def download(builtin: Builtin, folder: str, *, progress: bool = True) -> None:
    """Download each missing file into ``folder`` (a temporary file, checked against its MD5, then renamed:
    ``alexnet.util.atomic``)."""
    os.makedirs(folder, exist_ok=True)
    for filename, md5 in builtin.md5.items():
        path = os.path.join(folder, filename)
        if os.path.isfile(path) or os.path.isfile(path[:-3]):
            continue
        with atomic_path(path) as tmp:
            digest = hashlib.md5()
            with open(tmp, "wb") as out, urllib.request.urlopen(builtin.url + filename,
                                                                    timeout=DOWNLOAD_TIMEOUT_S) as response:
                total = int(response.headers.get("Content-Length") or 0) or None
                with tqdm(total=total, unit="B", unit_scale=True, desc=filename, disable=not progress,
                          file=sys.stderr, ascii=not sys.stderr.isatty()) as bar:
                    while chunk := response.read(1 << 20):
                        out.write(chunk)
                        digest.update(chunk)
                        bar.update(len(chunk))
            if digest.hexdigest() != md5:
                raise UsageError(f"{builtin.url + filename}: MD5 {digest.hexdigest()} does not match the expected "
                                 f"{md5}; the download is corrupt or the file changed. Run again, or put the "
                                 f"file in {folder} yourself.")
