"""Data sets as float images in [0, 1], shape (C, H, W), with integer labels.

Supported: Fashion-MNIST (the Debian package ``dataset-fashion-mnist`` or any directory with the four IDX files,
gzipped or raw), CIFAR-10 (a directory with the python batches ``data_batch_1..5`` and ``test_batch``, read with a
restricted unpickler that only rebuilds numpy arrays), and ImageFolder directories (``root/train/<class>/*.jpg``,
``root/val/<class>/*.jpg``; ImageNet-100 and user data sets), decoded with PIL. torchvision is never needed: its
only build for torch 2.13 is a CUDA build that fails to import beside the CPU torch, so one PIL path serves everyone.

Splits: ``train`` is the training split minus ``val_size`` held-out images, ``val`` is that held-out part (the same
images for a given data set, whatever the seed), ``test`` is the official test split. ``limit`` takes a
deterministic subset: the first N test images (as robustness papers do), or the first N of a fixed permutation of
the training split. Augmentation is a batch operation (:func:`augment_batch`) driven by an explicit generator, so a
resumed run draws the same batches as an uninterrupted one.
"""
from __future__ import annotations

import gzip
import io
import logging
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ClassVar, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import Dataset

from . import distributed
from .errors import RnasclError
from .registry import Registry
from .schema import ANY, Each, Maybe, OneOf, at_least

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
SPLIT_SEED = 0  # fixed: the validation split never depends on a run's seed


@dataclass(frozen=True)
class DatasetInfo:
    """What a model needs to know about its data: input shape, classes, normalisation, default augmentation."""

    name: str
    input_shape: Tuple[int, int, int]
    num_classes: int
    mean: Tuple[float, ...]
    std: Tuple[float, ...]
    augment: Tuple[str, ...]
    class_names: Tuple[str, ...] = ()

    def to_dict(self) -> Dict:
        """What a checkpoint or arch.json records of the data: name, input shape, classes, normalisation."""
        return {"name": self.name, "input_shape": list(self.input_shape), "num_classes": self.num_classes,
                "mean": list(self.mean), "std": list(self.std)}


class TensorImages(Dataset):
    """Images held in memory as uint8 (N, C, H, W), served as float in [0, 1]."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        assert images.dtype == torch.uint8 and images.ndim == 4 and len(images) == len(labels)
        self.images, self.labels = images, labels.long()

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i].float().div_(255), self.labels[i]

    def subset(self, index: torch.Tensor) -> "TensorImages":
        return TensorImages(self.images[index], self.labels[index])


class FileImages(Dataset):
    """Images read from files on demand, resized to a fixed square size (ImageFolder data sets)."""

    def __init__(self, files: Sequence[str], labels: Sequence[int], size: int, channels: int = 3):
        self.files, self.labels, self.size, self.channels = list(files), torch.tensor(labels).long(), size, channels

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i):
        from PIL import Image

        with Image.open(self.files[i]) as img:
            img = img.convert("RGB" if self.channels == 3 else "L").resize((self.size, self.size), Image.BILINEAR)
            arr = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy())
        arr = arr.unsqueeze(-1) if arr.ndim == 2 else arr
        return arr.permute(2, 0, 1).float().div_(255), self.labels[i]

    def subset(self, index: torch.Tensor) -> "FileImages":
        idx = index.tolist()
        return FileImages([self.files[i] for i in idx], self.labels[index].tolist(), self.size, self.channels)


# ----------------------------------------------------------------------------------------------------- loaders
Loader = Callable[[Optional[str], str, Optional[int]], Tuple[Dataset, DatasetInfo]]
DATASETS: Registry[Loader] = Registry("data set")

FASHION_MNIST_DIRS = ("/usr/share/datasets/fashion-mnist", "~/.cache/rnascl-deploy/fashion-mnist", "data/fashion-mnist")
FASHION_MNIST_INFO = DatasetInfo(
    "fashion-mnist", (1, 28, 28), 10, (0.2860,), (0.3530,), (),
    ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"))
CIFAR10_INFO = DatasetInfo(
    "cifar10", (3, 32, 32), 10, (0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616), ("crop", "flip"),
    ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"))
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (gzipped or raw): magic 0x0000 type ndim, big-endian dims, then the data."""
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise RnasclError(f"{path} is not an unsigned-byte IDX file")
    ndim = raw[3]
    dims = np.frombuffer(raw, dtype=">u4", count=ndim, offset=4).astype(int)
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise RnasclError(f"{path} is truncated: expected {int(np.prod(dims))} values, found {data.size}")
    return data.reshape(dims)


def _find_idx(root: Path, stem: str) -> Optional[Path]:
    for name in (f"{stem}.gz", stem):
        if (root / name).is_file():
            return root / name
    return None


@DATASETS.register("fashion-mnist")
def load_fashion_mnist(root: Optional[str], split: str, image_size: Optional[int] = None):
    prefix = "t10k" if split == "test" else "train"
    candidates = [Path(root).expanduser()] if root else [Path(d).expanduser() for d in FASHION_MNIST_DIRS]
    for folder in candidates:
        images = _find_idx(folder, f"{prefix}-images-idx3-ubyte")
        labels = _find_idx(folder, f"{prefix}-labels-idx1-ubyte")
        if images and labels:
            x = torch.from_numpy(_read_idx(images).copy()).unsqueeze(1)
            y = torch.from_numpy(_read_idx(labels).astype(np.int64))
            return TensorImages(x, y), FASHION_MNIST_INFO
    raise RnasclError(
        "Fashion-MNIST not found; looked for {p}-images-idx3-ubyte[.gz] and {p}-labels-idx1-ubyte[.gz] in: {dirs}. "
        "Install it with `apt-get install dataset-fashion-mnist` (Debian/Ubuntu) or set data.root to a directory "
        "holding the four IDX files.".format(p=prefix, dirs=", ".join(str(c) for c in candidates)))


class _ArraysOnlyUnpickler(pickle.Unpickler):
    """Unpickles dicts/lists/bytes/strings and numpy arrays, nothing else: a CIFAR batch cannot run code."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype")}

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: not part of a CIFAR-10 batch")


def _read_cifar_batch(path: Path) -> Tuple[np.ndarray, np.ndarray]:
    try:
        batch = _ArraysOnlyUnpickler(io.BytesIO(path.read_bytes()), encoding="bytes").load()
        data = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        labels = np.asarray(batch[b"labels"], dtype=np.int64)
    except (pickle.UnpicklingError, KeyError, ValueError, TypeError, EOFError) as exc:
        raise RnasclError(f"{path} is not a CIFAR-10 python batch ({exc})") from None
    return data, labels


@DATASETS.register("cifar10")
def load_cifar10(root: Optional[str], split: str, image_size: Optional[int] = None):
    if root is None:
        raise RnasclError("CIFAR-10 needs data.root: a directory with data_batch_1..5 and test_batch "
                          "(the 'python version' archive cifar-10-python.tar.gz, extracted)")
    folder = Path(root).expanduser()
    if (folder / "cifar-10-batches-py").is_dir():
        folder = folder / "cifar-10-batches-py"
    names = ["test_batch"] if split == "test" else [f"data_batch_{i}" for i in range(1, 6)]
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        raise RnasclError(f"CIFAR-10 not found in {folder}: missing {', '.join(missing)}. Download the python "
                          "version (cifar-10-python.tar.gz) from https://www.cs.toronto.edu/~kriz/cifar.html, "
                          "extract it and point data.root at the extracted directory.")
    parts = [_read_cifar_batch(folder / n) for n in names]
    x = torch.from_numpy(np.concatenate([p[0] for p in parts]))
    y = torch.from_numpy(np.concatenate([p[1] for p in parts]))
    return TensorImages(x, y), CIFAR10_INFO


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
    size = image_size or 64
    info = DatasetInfo("imagefolder", (3, size, size), len(classes), IMAGENET_MEAN, IMAGENET_STD, ("crop", "flip"),
                       tuple(classes))
    return FileImages(files, labels, size), info


# ----------------------------------------------------------------------------------------------------- splits
def load_split(name: str, split: str, root: Optional[str] = None, val_size: int = 5000,
               limit: Optional[int] = None, image_size: Optional[int] = None) -> Tuple[Dataset, DatasetInfo]:
    """One split of a data set as a Dataset of ([0,1] float image, label), and the data set's info."""
    if split not in SPLITS:
        raise RnasclError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
    if limit is not None and limit < 1:
        raise RnasclError(f"limit must be a positive number of images, got {limit}")
    data, info = DATASETS.get(name)(root, split, image_size)
    if split == "test":
        index = torch.arange(len(data))
    else:
        if not 0 <= val_size < len(data):
            raise RnasclError(f"val_size {val_size} must be in [0, {len(data) - 1}] for {name}")
        perm = torch.randperm(len(data), generator=torch.Generator().manual_seed(SPLIT_SEED))
        index = perm[len(data) - val_size:] if split == "val" else perm[: len(data) - val_size]
    if limit is not None:
        index = index[:limit]
    if len(index) == 0:
        raise RnasclError(f"the {split} split of {name} is empty (val_size={val_size})")
    return data.subset(index), info


def augment_batch(x: torch.Tensor, ops: Sequence[str], generator: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Random crop (zero padding ``pad``, or H/8) and horizontal flip of a batch, drawn from ``generator``."""
    for op in ops:
        if op == "crop":
            n, _, h, w = x.shape
            p = pad if h >= 32 else max(1, h // 8)
            padded = torch.nn.functional.pad(x, (p, p, p, p))
            dy = torch.randint(0, 2 * p + 1, (n,), generator=generator)
            dx = torch.randint(0, 2 * p + 1, (n,), generator=generator)
            x = torch.stack([padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(n)])
        elif op == "flip":
            flip = torch.rand(x.shape[0], generator=generator) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(3), x)
        else:
            raise RnasclError(f"unknown augmentation {op!r}; valid: {', '.join(AUGMENTATIONS)}")
    return x


def batches(dataset: Dataset, batch_size: int, generator: Optional[torch.Generator] = None, workers: int = 0,
            drop_last: bool = False, shard: bool = False):
    """Iterate (images, labels) batches; shuffled by ``generator`` when given, in order otherwise.

    ``shard``: under torch.distributed, this rank's part of every global batch of ``batch_size`` (whole global
    batches only, so that every rank takes the same number of steps; see :mod:`.distributed`)."""
    order = torch.randperm(len(dataset), generator=generator) if generator is not None else torch.arange(len(dataset))
    if shard and distributed.world() > 1:
        whole = len(order) - len(order) % batch_size
        order, batch_size, drop_last = distributed.shard(order[:whole]), distributed.local_batch(batch_size), True
    if isinstance(dataset, TensorImages):
        stop = len(order) - len(order) % batch_size if drop_last else len(order)
        for start in range(0, stop, batch_size):
            idx = order[start:start + batch_size]
            yield dataset.images[idx].float().div_(255), dataset.labels[idx]
        return
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, sampler=order.tolist(),
                                         num_workers=workers, drop_last=drop_last)
    yield from loader


def rank_part(dataset: Dataset) -> Dataset:
    """Images rank, rank + world, ... of ``dataset`` (all of it without torch.distributed): a sharded evaluation."""
    if distributed.world() == 1:
        return dataset
    index = torch.arange(distributed.rank(), len(dataset), distributed.world())
    return dataset.subset(index)


def num_batches(dataset: Dataset, batch_size: int, drop_last: bool = False) -> int:
    return len(dataset) // batch_size if drop_last else -(-len(dataset) // batch_size)


# ----------------------------------------------------------------------------------------------------- recipe
AUGMENTATIONS = ("crop", "flip")


@dataclass
class DataConfig:
    """The recipe's ``data`` section: which data set, where it lives, and how batches are drawn."""

    CHECKS: ClassVar[dict] = {"name": OneOf(lambda: list(DATASETS)), "root": ANY, "val_size": at_least(1),
                              "batch_size": at_least(1), "augment": Maybe(Each(OneOf(AUGMENTATIONS))), "image_size": Maybe(at_least(8)),
                              "workers": at_least(0)}

    name: str = "fashion-mnist"  # fashion-mnist | cifar10 | imagefolder
    root: Optional[str] = None  # None: the data set's default locations (the Debian package for Fashion-MNIST)
    val_size: int = 5000  # images held out of the training split for validation (and architecture steps)
    batch_size: int = 128
    augment: Optional[List[str]] = None  # None: the data set's standard augmentation; [] for none; crop, flip
    image_size: Optional[int] = None  # ImageFolder only: images are resized to this square size
    workers: int = 0

    def load(self, split: str, limit: Optional[int] = None) -> Tuple[Dataset, DatasetInfo]:
        """One split of this data set (see :func:`load_split`)."""
        return load_split(self.name, split, self.root, self.val_size, limit, self.image_size)

    def augmentation(self, info: DatasetInfo) -> Tuple[str, ...]:
        """The augmentation to train with: the recipe's, or the data set's standard one when it says null."""
        return tuple(self.augment) if self.augment is not None else info.augment
