"""Folders of real JPEG photographs for benchmarks and tests, no download needed.

The photos are the colour ones shipped with scikit-image and scikit-learn, randomly cropped (30-100%
of the area, aspect 3:4 to 4:3) and rescaled to ImageNet-like sizes, one class per source photo.

    write_photo_folder(Path("photos/train"), 24, classes=3)   # 24 JPEGs in photos/train/<class>/
    make_photo_folder(Path("bench/_data"), 3000, workers=2)    # bench/_data/photos-3000, built once, reused
"""
from __future__ import annotations

import shutil
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry", "retina")
# A second, unrelated set: the grey photographs and textures in scikit-image (8 classes).
GREY_PHOTOS = ("brick", "camera", "clock", "coins", "grass", "gravel", "moon", "page")


def source_photos(source: str = "colour") -> dict[str, np.ndarray]:
    """The colour (or, source="grey", grey) photographs shipped inside scikit-image/scikit-learn, by name."""
    import skimage.data

    if source == "grey":
        return {name: getattr(skimage.data, name)() for name in GREY_PHOTOS}
    from sklearn.datasets import load_sample_images

    photos = {name: getattr(skimage.data, name)() for name in PHOTOS}
    sample = load_sample_images()
    for path, image in zip(sample.filenames, sample.images):
        photos[Path(path).stem] = image
    return photos


def class_names(classes: int | None = None, source: str = "colour") -> list[str]:
    """The first ``classes`` source photo names in sorted order (all of them by default)."""
    names = sorted(GREY_PHOTOS if source == "grey" else [*PHOTOS, "china", "flower"])
    return names if classes is None else names[:classes]


def _write_photos(root: str, names: list[str], jobs: list[tuple[int, int, int]], short_side: tuple[int, int],
                  source: str = "colour") -> None:
    photos = source_photos(source)
    for index, class_index, seed in jobs:
        rng = np.random.default_rng(seed)
        image = photos[names[class_index]]
        h, w = image.shape[:2]
        area = rng.uniform(0.3, 1.0) * h * w                       # a random crop of 30-100% of the area ...
        aspect = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))  # ... with a random aspect ratio
        ch, cw = min(h, int(np.sqrt(area / aspect))), min(w, int(np.sqrt(area * aspect)))
        top, left = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
        crop = Image.fromarray(image[top:top + ch, left:left + cw])
        short = int(rng.integers(short_side[0], short_side[1] + 1))  # rescaled to an ImageNet-like size
        scale = short / min(ch, cw)
        crop = crop.resize((max(1, round(cw * scale)), max(1, round(ch * scale))), Image.BILINEAR)
        crop.save(Path(root) / names[class_index] / f"{index:05d}.jpg", quality=90)


def write_photo_folder(folder: Path, files: int, *, classes: int | None = None, seed: int = 1000,
                       short_side: tuple[int, int] = (300, 500), workers: int = 1, source: str = "colour") -> Path:
    """``files`` JPEGs in ``folder/<class>/``, classes in turn; ``seed`` + i seeds image i's crop and size."""
    names = class_names(classes, source)
    for name in names:
        (folder / name).mkdir(parents=True, exist_ok=True)
    jobs = [(i, i % len(names), seed + i) for i in range(files)]
    workers = max(1, min(workers, files))
    if workers == 1:
        _write_photos(str(folder), names, jobs, short_side, source)
        return folder
    chunks = [jobs[i::workers] for i in range(workers)]
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(_write_photos, [str(folder)] * workers, [names] * workers, chunks, [short_side] * workers,
                      [source] * workers))
    return folder


def make_photo_folder(root: Path, files: int, workers: int, source: str = "colour") -> Path:
    """``root/photos-<files>`` (nine colour classes) or ``root/photos-grey-<files>`` (eight grey ones): an
    ImageFolder of ``files`` JPEGs, built once and reused."""
    folder = root / (f"photos-{files}" if source == "colour" else f"photos-{source}-{files}")
    done = folder / ".complete"
    if done.exists():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    write_photo_folder(folder, files, workers=workers, source=source)
    done.write_text(f"{files}\n")
    return folder
