"""ImageFolder data sets (ImageNet-100, a user's own): ``root/train/<class>/*`` and ``root/val/<class>/*``, decoded
with PIL and resized to a fixed square size. An empty file is refused when the folder is listed; an image that
cannot be decoded (truncated, not an image) is refused, named, when it is first read."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from ..errors import RnasclError
from .images import DATASETS, DatasetInfo, FileImages

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".webp", ".tif", ".tiff")


@DATASETS.register("imagefolder")
def load_imagefolder(root: Optional[str], split: str, image_size: Optional[int] = None):
    """``root/train/<class>/*`` and ``root/val/<class>/*`` (ImageNet layout; ``test`` reads ``val``)."""
    if root is None:
        raise RnasclError("imagefolder needs data.root: a directory with train/<class>/ and val/<class>/ images")
    sub = "train" if split in ("train", "val") else "val"
    folder = Path(root).expanduser() / sub
    if not folder.is_dir():
        raise RnasclError(f"image folder {folder} not found: expected {root}/train/<class>/ and {root}/val/<class>/")
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
    if not classes:
        raise RnasclError(f"{folder} has no class sub-directories")
    files, labels = [], []
    for label, cls in enumerate(classes):
        found = sorted(str(f) for f in (folder / cls).rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)
        files += found
        labels += [label] * len(found)
    if not files:
        raise RnasclError(f"{folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    empty = [f for f in files if Path(f).stat().st_size == 0]  # cheap at load time; the rest is checked at decode
    if empty:
        more = f" (and {len(empty) - 1} more)" if len(empty) > 1 else ""
        raise RnasclError(f"image {empty[0]} is empty (0 bytes){more}; remove or replace it")
    size = image_size or 64
    info = DatasetInfo("imagefolder", (3, size, size), len(classes), IMAGENET_MEAN, IMAGENET_STD, ("crop", "flip"),
                       tuple(classes))
    return FileImages(files, labels, size), info


