"""What every data set gives: images as float tensors in [0, 1] (C, H, W), integer labels, and a :class:`DatasetInfo`.
A data set is a loader ``(root, split, image_size) -> (Images, DatasetInfo)`` registered in :data:`DATASETS`."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import RnasclError
from ..registry import Registry


def check_labels(images: np.ndarray, labels: np.ndarray, num_classes: int, source: str) -> None:
    """Refuse, naming ``source``, data whose image and label counts differ or whose labels are not classes."""
    if len(images) != len(labels):
        raise RnasclError(f"{source}: {len(images)} images but {len(labels)} labels; the file is damaged or not "
                          "of this data set (re-extract or download it again)")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        bad = labels[(labels < 0) | (labels >= num_classes)]
        raise RnasclError(f"{source}: label {int(bad[0])} is outside the {num_classes} classes (0..{num_classes - 1}); "
                          "the file is damaged or not of this data set")


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
        """What a checkpoint or arch.json records of the data: name, input shape, classes (their number and names),
        normalisation."""
        return {"name": self.name, "input_shape": list(self.input_shape), "num_classes": self.num_classes,
                "class_names": list(self.class_names), "mean": list(self.mean), "std": list(self.std)}


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

    def to(self, device) -> "TensorImages":
        """The whole data set on ``device`` (a GPU keeps Fashion-MNIST or CIFAR-10 in tens of MB): batches are then
        gathered, converted and augmented there, with no copy per step."""
        return TensorImages(self.images.to(device), self.labels.to(device))


class FileImages(Dataset):
    """Images read from files on demand, resized to a fixed square size (ImageFolder data sets)."""

    def __init__(self, files: Sequence[str], labels: Sequence[int], size: int, channels: int = 3):
        self.files, self.size, self.channels = list(files), size, channels
        self.labels = torch.tensor(labels, device="cpu").long()

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i):
        from PIL import Image

        try:
            with Image.open(self.files[i]) as img:
                img = _to_8_bit(img, self.files[i]).convert("RGB" if self.channels == 3 else "L")
                img = img.resize((self.size, self.size), Image.BILINEAR)
                arr = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy())
        except (OSError, SyntaxError, ValueError) as exc:  # PIL: unidentified, truncated or corrupt image data
            raise RnasclError(f"image {self.files[i]} cannot be decoded ({type(exc).__name__}: {exc}); remove or "
                              "replace it (it is truncated, empty or not an image)") from None
        arr = arr.unsqueeze(-1) if arr.ndim == 2 else arr
        return arr.permute(2, 0, 1).float().div_(255), self.labels[i]

    def subset(self, index: torch.Tensor) -> "FileImages":
        idx = index.tolist()
        return FileImages([self.files[i] for i in idx], self.labels[index].tolist(), self.size, self.channels)


def _to_8_bit(img, path: str):
    """``img`` with 8-bit values. PIL's ``convert`` clips wider values to 255 (a 16-bit PNG at 30000 would load as
    white), so 16-bit modes (I;16*) are scaled by 255/65535 here. Mode I (32-bit integers, how PIL opens some 16-bit
    files) is taken as 16-bit data too, and refused beyond 0..65535; floating-point pixels (mode F) have no agreed
    range and are refused."""
    from PIL import Image

    if img.mode == "F":
        raise RnasclError(f"image {path} has floating-point pixels (PIL mode F), whose range is unknown; convert it "
                          "to an 8- or 16-bit image (PNG, JPEG) or remove it")
    if not img.mode.startswith("I"):
        return img
    values = np.asarray(img)
    if values.min() < 0 or values.max() > 65535:
        raise RnasclError(f"image {path} has 32-bit pixels outside 0..65535 (PIL mode {img.mode}); convert it to an "
                          "8- or 16-bit image (PNG, JPEG) or remove it")
    return Image.fromarray((values / 257).round().astype(np.uint8))  # 65535 -> 255


Images = Union[TensorImages, FileImages]  # the data sets this package makes: sized, with subset()
Loader = Callable[[Optional[str], str, Optional[int]], Tuple[Images, DatasetInfo]]
DATASETS: Registry[Loader] = Registry("data set")
