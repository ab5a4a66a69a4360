"""CIFAR-10: a directory with the python batches ``data_batch_1..5`` and ``test_batch``, read with a restricted
unpickler that only rebuilds numpy arrays (a batch cannot run code)."""
from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Optional, Tuple

import numpy as np
import torch

from ..errors import RnasclError
from .images import DATASETS, DatasetInfo, TensorImages, check_labels

CIFAR10_INFO = DatasetInfo(
    "cifar10", (3, 32, 32), 10, (0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616), ("crop", "flip"),
    ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"))


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
    check_labels(data, labels, CIFAR10_INFO.num_classes, str(path))
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


