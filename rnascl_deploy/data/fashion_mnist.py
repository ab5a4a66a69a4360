"""Fashion-MNIST: the Debian package ``dataset-fashion-mnist`` or any directory with the four IDX files, gzipped or
raw."""
from __future__ import annotations

import gzip
import zlib
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from ..errors import RnasclError
from .images import DATASETS, DatasetInfo, TensorImages, check_labels

FASHION_MNIST_DIRS = ("/usr/share/datasets/fashion-mnist", "~/.cache/rnascl-deploy/fashion-mnist", "data/fashion-mnist")
FASHION_MNIST_INFO = DatasetInfo(
    "fashion-mnist", (1, 28, 28), 10, (0.2860,), (0.3530,), (),
    ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"))


def _read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (gzipped or raw): magic 0x0000 type ndim, big-endian dims, then the data."""
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:  # not gzip after all, cut short, or corrupt
            raise RnasclError(f"{path} cannot be decompressed ({type(exc).__name__}: {exc}); the download is damaged "
                              "or incomplete: download it again") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise RnasclError(f"{path} is not an unsigned-byte IDX file")
    ndim = raw[3]
    if len(raw) < 4 + 4 * ndim:
        raise RnasclError(f"{path}: its header is truncated ({len(raw)} bytes, {4 + 4 * ndim} expected for "
                          f"{ndim} dimensions); download it again")
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
            x, y = _read_idx(images), _read_idx(labels).astype(np.int64)
            if x.ndim != 3 or x.shape[1:] != FASHION_MNIST_INFO.input_shape[1:] or y.ndim != 1:
                raise RnasclError(f"{images} / {labels}: shapes {list(x.shape)} and {list(y.shape)}, expected "
                                  "[N, 28, 28] images and [N] labels")
            check_labels(x, y, FASHION_MNIST_INFO.num_classes, f"{images} and {labels}")
            return TensorImages(torch.from_numpy(x.copy()).unsqueeze(1), torch.from_numpy(y)), FASHION_MNIST_INFO
    raise RnasclError(
        "Fashion-MNIST not found; looked for {p}-images-idx3-ubyte[.gz] and {p}-labels-idx1-ubyte[.gz] in: {dirs}. "
        "Install it with `apt-get install dataset-fashion-mnist` (Debian/Ubuntu) or set data.root to a directory "
        "holding the four IDX files.".format(p=prefix, dirs=", ".join(str(c) for c in candidates)))


