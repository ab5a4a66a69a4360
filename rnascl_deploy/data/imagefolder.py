"""ImageFolder data sets (ImageNet-100, a user's own): ``root/train/<class>/*`` and ``root/val/<class>/*``, decoded
with PIL and resized to a fixed square size.

The classes are the sub-directories of ``train/``, sorted; label k means the k-th of them in every split, ``val/``
included. A ``val/`` class folder that ``train/`` lacks is refused (it has no label); a class of ``train/`` that
``val/`` lacks is only warned about (the test split then measures the other classes). Names starting with ``.``
(``.ipynb_checkpoints``, macOS ``._x.jpg``) are skipped, and only files with a suffix of :data:`IMAGE_SUFFIXES`
count as images. A class folder without images, a broken symbolic link and an empty file are refused when the folder
is listed; an image that cannot be decoded (truncated, not an image) is refused, named, when it is first read.

The test split (``val/``) comes in a fixed shuffled order, the same for every run: its files are listed class by
class, so without it the first N test images (``limit``) would be the first few classes only.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import List, Optional, Tuple

import torch

from ..errors import RnasclError
from .images import DATASETS, DatasetInfo, FileImages

log = logging.getLogger(__name__)

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".webp", ".tif", ".tiff")
TEST_ORDER_SEED = 0  # fixed: the test split's order never depends on a run's seed


def _hidden(name: str) -> bool:
    return name.startswith(".")


def _refuse_broken_link(path: Path) -> None:
    if path.is_symlink() and not path.exists():
        raise RnasclError(f"{path} is a broken symbolic link (to {os.readlink(path)}); remove it or restore the "
                          "file it points to")


def list_classes(folder: Path) -> List[str]:
    """The class folders of ``folder``: its sub-directories, sorted, hidden ones left out."""
    classes = []
    for entry in folder.iterdir():
        if _hidden(entry.name):
            continue
        _refuse_broken_link(entry)
        if entry.is_dir():
            classes.append(entry.name)
    return sorted(classes)


def list_images(class_dir: Path) -> List[str]:
    """The image files under ``class_dir`` (at any depth), sorted; refuses a class folder without any."""
    found = []
    for path in class_dir.rglob("*"):
        if any(_hidden(part) for part in path.relative_to(class_dir).parts) \
                or path.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        if path.is_file():
            found.append(str(path))
        else:
            _refuse_broken_link(path)  # otherwise a directory named like an image: not one
    if not found:
        raise RnasclError(f"class folder {class_dir} holds no images ({', '.join(IMAGE_SUFFIXES)}); add its images "
                          "or remove the folder (an empty class still takes a label)")
    return sorted(found)


def _split_folder(root: str, sub: str) -> Path:
    folder = Path(root).expanduser() / sub
    if not folder.is_dir():
        raise RnasclError(f"image folder {folder} not found: expected {root}/train/<class>/ and {root}/val/<class>/")
    return folder


def _val_classes(val: Path, classes: List[str], train: Path) -> List[str]:
    """The classes of ``val``: refuses one that ``train`` lacks, warns about those it lacks itself."""
    present = list_classes(val)
    unknown = [c for c in present if c not in classes]
    if unknown:
        more = f" (and {len(unknown) - 1} more: {', '.join(unknown[1:4])})" if len(unknown) > 1 else ""
        raise RnasclError(f"{val / unknown[0]} is not a class of {train}{more}: labels come from train/'s class "
                          "folders, so its images would have none; add the class to train/ or remove it from val/")
    missing = [c for c in classes if c not in present]
    if missing:
        log.warning("%s has no folder for %d of the %d classes of %s (%s%s): the test split measures the other "
                    "classes only", val, len(missing), len(classes), train, ", ".join(missing[:5]),
                    ", ..." if len(missing) > 5 else "")
    return present


def _labelled_files(folder: Path, classes: List[str], present: List[str]) -> Tuple[List[str], List[int]]:
    """The images of the ``present`` classes in ``folder``, each labelled by its class's place in ``classes``."""
    files: List[str] = []
    labels: List[int] = []
    for label, cls in enumerate(classes):
        if cls in present:
            found = list_images(folder / cls)
            files += found
            labels += [label] * len(found)
    return files, labels


def _refuse_empty_files(files: List[str]) -> None:
    empty = [f for f in files if Path(f).stat().st_size == 0]  # cheap at load time; the rest is checked at decode
    if empty:
        more = f" (and {len(empty) - 1} more)" if len(empty) > 1 else ""
        raise RnasclError(f"image {empty[0]} is empty (0 bytes){more}; remove or replace it")


@DATASETS.register("imagefolder")
def load_imagefolder(root: Optional[str], split: str, image_size: Optional[int] = None):
    """``root/train/<class>/*`` and ``root/val/<class>/*`` (ImageNet layout; ``test`` reads ``val``)."""
    if root is None:
        raise RnasclError("imagefolder needs data.root: a directory with train/<class>/ and val/<class>/ images")
    train = _split_folder(root, "train")
    classes = list_classes(train)
    if not classes:
        raise RnasclError(f"{train} has no class sub-directories")
    if split == "test":
        val = _split_folder(root, "val")
        files, labels = _labelled_files(val, classes, _val_classes(val, classes, train))
        generator = torch.Generator().manual_seed(TEST_ORDER_SEED)
        order = torch.randperm(len(files), generator=generator, device="cpu").tolist()
        files, labels = [files[i] for i in order], [labels[i] for i in order]
    else:
        files, labels = _labelled_files(train, classes, classes)
    _refuse_empty_files(files)
    size = image_size or 64
    info = DatasetInfo("imagefolder", (3, size, size), len(classes), IMAGENET_MEAN, IMAGENET_STD, ("crop", "flip"),
                       tuple(classes))
    return FileImages(files, labels, size), info
