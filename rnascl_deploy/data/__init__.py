"""Data sets as float images in [0, 1], shape (C, H, W), with integer labels.

Supported (one module each, registered in :data:`DATASETS`): Fashion-MNIST (the Debian package ``dataset-fashion-mnist``
or any directory with the four IDX files, gzipped or raw), CIFAR-10 (a directory with the python batches
``data_batch_1..5`` and ``test_batch``, read with a restricted unpickler that only rebuilds numpy arrays), and
ImageFolder directories (``root/train/<class>/*.jpg``, ``root/val/<class>/*.jpg``; ImageNet-100 and user data sets),
decoded with PIL. torchvision is never needed: its only build for torch 2.13 is a CUDA build that fails to import beside
the CPU torch, so one PIL path serves everyone.

Splits: ``train`` is the training split minus ``val_size`` held-out images, ``val`` is that held-out part (the same
images for a given data set, whatever the seed), ``test`` is the official test split. ``limit`` takes a
deterministic subset: the first N test images (as robustness papers do; an ImageFolder's test images come in a
fixed shuffled order, so that they mix the classes as the official files do), or the first N of a fixed permutation
of the training split. Augmentation is a batch operation (:func:`augment_batch`) driven by an explicit generator, so a
resumed run draws the same batches as an uninterrupted one.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import ClassVar, List, Optional, Sequence, Tuple

import torch

from .. import distributed
from ..errors import RnasclError
from ..schema import ANY, Each, Maybe, OneOf, at_least
from . import cifar10, fashion_mnist, imagefolder  # noqa: F401,E402  (register the data sets)
from .cifar10 import CIFAR10_INFO  # noqa: F401,E402
from .fashion_mnist import FASHION_MNIST_INFO  # noqa: F401,E402
from .images import DATASETS, DatasetInfo, FileImages, Images, TensorImages  # noqa: F401

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
SPLIT_SEED = 0  # fixed: the validation split never depends on a run's seed


# ----------------------------------------------------------------------------------------------------- splits
def load_split(name: str, split: str, root: Optional[str] = None, val_size: int = 5000,
               limit: Optional[int] = None, image_size: Optional[int] = None) -> Tuple[Images, DatasetInfo]:
    """One split of a data set as a Dataset of ([0,1] float image, label), and the data set's info."""
    if split not in SPLITS:
        raise RnasclError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
    if limit is not None and limit < 1:
        raise RnasclError(f"limit must be a positive number of images, got {limit}")
    data, info = DATASETS.get(name)(root, split, image_size)
    if split == "test":
        index = torch.arange(len(data), device="cpu")  # data indices live on the CPU, whatever the default
    else:
        if not 0 <= val_size < len(data):
            raise RnasclError(f"val_size {val_size} must be in [0, {len(data) - 1}] for {name}")
        perm = torch.randperm(len(data), generator=torch.Generator().manual_seed(SPLIT_SEED), device="cpu")
        index = perm[len(data) - val_size:] if split == "val" else perm[: len(data) - val_size]
    if limit is not None:
        index = index[:limit]
    if len(index) == 0:
        raise RnasclError(f"the {split} split of {name} is empty (val_size={val_size})")
    return data.subset(index), info


def augment_batch(x: torch.Tensor, ops: Sequence[str], generator: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Random crop (zero padding ``pad``, or H/8) and horizontal flip of a batch, drawn from ``generator`` (a CPU
    generator, so that a batch is augmented alike on every device) and applied on ``x``'s device, to which the draws
    go without waiting for it."""
    for op in ops:
        if op == "crop":
            n, _, h, w = x.shape
            p = pad if h >= 32 else max(1, h // 8)
            padded = torch.nn.functional.pad(x, (p, p, p, p))
            dy = torch.randint(0, 2 * p + 1, (n,), generator=generator, device="cpu").tolist()
            dx = torch.randint(0, 2 * p + 1, (n,), generator=generator, device="cpu").tolist()
            x = torch.stack([padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(n)])  # views, one copy
        elif op == "flip":
            flip = to_device(torch.rand(x.shape[0], generator=generator, device="cpu") < 0.5, x.device)
            x = torch.where(flip[:, None, None, None], x.flip(3), x)
        else:
            raise RnasclError(f"unknown augmentation {op!r}; valid: {', '.join(AUGMENTATIONS)}")
    return x


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``t`` (indices, random draws: CPU tensors) on ``device`` without waiting for the device: a plain ``.to`` waits
    for every queued kernel, and from pageable memory even a ``non_blocking`` copy may; from pinned memory it never
    does. A tensor on ``device`` already is returned as it is."""
    if device.type == "cuda" and t.device.type == "cpu":
        t = t.pin_memory()
    return t.to(device, non_blocking=True)


def batches(dataset: Images, batch_size: int, generator: Optional[torch.Generator] = None, workers: int = 0,
            drop_last: bool = False, shard: bool = False, pin_memory: bool = False, indices: bool = False):
    """Iterate (images, labels) batches; shuffled by ``generator`` when given, in order otherwise.

    In-memory data sets are sliced directly (on the device they are on, see :meth:`TensorImages.to`, with indices
    there too: a CPU index into GPU data is a blocking copy per batch); files are decoded by a DataLoader with
    ``workers`` processes, into pinned memory when ``pin_memory`` (for a GPU). ``indices``: batches are (images,
    labels, their indices in ``dataset``), the indices where the images are.

    ``shard``: under torch.distributed, this rank's part of every global batch of ``batch_size`` (whole global
    batches only, so that every rank takes the same number of steps; see :mod:`.distributed`)."""
    order = torch.randperm(len(dataset), generator=generator, device="cpu") if generator is not None \
        else torch.arange(len(dataset), device="cpu")
    if shard and distributed.world() > 1:
        whole = len(order) - len(order) % batch_size
        order, batch_size, drop_last = distributed.shard(order[:whole]), distributed.local_batch(batch_size), True
    if isinstance(dataset, TensorImages):
        stop = len(order) - len(order) % batch_size if drop_last else len(order)
        order = to_device(order, dataset.images.device)  # once an epoch, drawn on the CPU alike everywhere
        for start in range(0, stop, batch_size):
            idx = order[start:start + batch_size]
            batch = dataset.images[idx].float().div_(255), dataset.labels[idx]
            yield (*batch, idx) if indices else batch
        return
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, sampler=order.tolist(),
                                         num_workers=workers, drop_last=drop_last, pin_memory=pin_memory)
    try:
        for start, (x, y) in zip(range(0, len(order), batch_size), loader):
            yield (x, y, order[start:start + batch_size]) if indices else (x, y)
    except RnasclError as exc:
        raise RnasclError(_worker_message(exc)) from None


def _worker_message(exc: RnasclError) -> str:
    """The message ``exc`` was raised with, also where a DataLoader worker raised it: torch then re-raises it in
    this process with the message "Caught RnasclError in DataLoader worker process 0. Original Traceback ...",
    which ends with the original exception's line ("rnascl_deploy.errors.RnasclError: <message>")."""
    text = str(exc)
    if not text.startswith(f"Caught {RnasclError.__name__} "):
        return text
    _, found, message = text.rpartition(f"\n{RnasclError.__module__}.{RnasclError.__qualname__}: ")
    return message.rstrip("\n") if found else text


def points_sha256(dataset: Images) -> str:
    """A fingerprint of ``dataset``'s points, their pixels and labels in order: equal fingerprints, the same points
    (whatever the data set's name or path says)."""
    import hashlib

    digest = hashlib.sha256()
    for x, y in batches(dataset, 1000):
        digest.update(x.contiguous().numpy().tobytes())
        digest.update(y.contiguous().numpy().tobytes())
    return digest.hexdigest()


def on_device(dataset: Images, device: torch.device) -> Images:
    """``dataset`` where training reads it: an in-memory data set moves to a GPU whole; files stay where they are
    (their batches come through DataLoader workers and pinned memory)."""
    if isinstance(dataset, TensorImages) and device.type == "cuda":
        return dataset.to(device)
    return dataset


def rank_part(dataset: Images) -> Images:
    """Images rank, rank + world, ... of ``dataset`` (all of it without torch.distributed): a sharded evaluation."""
    if distributed.world() == 1:
        return dataset
    index = torch.arange(distributed.rank(), len(dataset), distributed.world(), device="cpu")
    return dataset.subset(index)


def num_batches(dataset: Images, batch_size: int, drop_last: bool = False) -> int:
    return len(dataset) // batch_size if drop_last else -(-len(dataset) // batch_size)


# ----------------------------------------------------------------------------------------------------- recipe
AUGMENTATIONS = ("crop", "flip")


@dataclass
class DataConfig:
    """The recipe's ``data`` section: which data set, where it lives, and how batches are drawn."""

    CHECKS: ClassVar[dict] = {"name": OneOf(lambda: list(DATASETS)), "root": ANY, "val_size": at_least(1),
                              "batch_size": at_least(1), "augment": Maybe(Each(OneOf(AUGMENTATIONS))),
                              "image_size": Maybe(at_least(8)), "workers": at_least(0)}

    name: str = "fashion-mnist"  # fashion-mnist | cifar10 | imagefolder
    root: Optional[str] = None  # None: the data set's default locations (the Debian package for Fashion-MNIST)
    val_size: int = 5000  # images held out of the training split for validation (and architecture steps)
    batch_size: int = 128
    augment: Optional[List[str]] = None  # None: the data set's standard augmentation; [] for none; crop, flip
    image_size: Optional[int] = None  # ImageFolder only: images are resized to this square size
    workers: int = 0

    def load(self, split: str, limit: Optional[int] = None) -> Tuple[Images, DatasetInfo]:
        """One split of this data set (see :func:`load_split`)."""
        return load_split(self.name, split, self.root, self.val_size, limit, self.image_size)

    def declared_input(self) -> Tuple[Tuple[int, int, int], int]:
        """(input shape, classes) without reading the data: known for Fashion-MNIST and CIFAR-10; for an
        ImageFolder (3, image_size, image_size) and 1 class (its folders are not listed): a lower bound for size
        checks."""
        known = {"fashion-mnist": FASHION_MNIST_INFO, "cifar10": CIFAR10_INFO}.get(self.name)
        if known is not None:
            return known.input_shape, known.num_classes
        size = self.image_size or 64
        return (3, size, size), 1

    def augmentation(self, info: DatasetInfo) -> Tuple[str, ...]:
        """The augmentation to train with: the recipe's, or the data set's standard one when it says null."""
        return tuple(self.augment) if self.augment is not None else info.augment
