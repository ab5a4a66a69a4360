import gzip
import pickle

import numpy as np
import pytest
import torch

from rnascl_deploy.data import augment_batch, batches, load_split
from rnascl_deploy.errors import RnasclError


def test_fashion_mnist_splits_are_images_in_unit_range():
    train, info = load_split("fashion-mnist", "train", limit=100)
    val, _ = load_split("fashion-mnist", "val", val_size=5000)
    test, _ = load_split("fashion-mnist", "test")
    assert (len(val), len(test), info.input_shape, info.num_classes) == (5000, 10000, (1, 28, 28), 10)
    x, y = next(batches(train, 100))
    assert x.shape == (100, 1, 28, 28) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    assert y.dtype == torch.int64 and set(y.tolist()) <= set(range(10))


def test_split_is_deterministic_and_disjoint():
    full, _ = load_split("fashion-mnist", "train")
    val, _ = load_split("fashion-mnist", "val")
    a, _ = load_split("fashion-mnist", "train", limit=50)
    b, _ = load_split("fashion-mnist", "train", limit=50)
    assert torch.equal(a.images, b.images) and len(full) == 55000
    train_keys = {bytes(img.numpy()) for img in full.images[:3000]}
    assert not train_keys & {bytes(img.numpy()) for img in val.images[:3000]} - {bytes(np.zeros((1, 28, 28), np.uint8))}
    test, _ = load_split("fashion-mnist", "test", limit=10)
    assert torch.equal(test.images, load_split("fashion-mnist", "test")[0].images[:10])


def _write_idx(path, array, gz):
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    raw = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if gz else raw)


@pytest.mark.parametrize("gz", [True, False])
def test_idx_directory_gz_or_raw(tmp_path, gz):
    images = np.random.default_rng(0).integers(0, 256, (12, 28, 28))
    labels = np.arange(12) % 10
    for prefix in ("train", "t10k"):
        _write_idx(tmp_path / (f"{prefix}-images-idx3-ubyte" + (".gz" if gz else "")), images, gz)
        _write_idx(tmp_path / (f"{prefix}-labels-idx1-ubyte" + (".gz" if gz else "")), labels, gz)
    test, _ = load_split("fashion-mnist", "test", root=str(tmp_path))
    assert torch.equal(test.images[:, 0], torch.from_numpy(images.astype(np.uint8)))
    assert load_split("fashion-mnist", "val", root=str(tmp_path), val_size=2)[0].images.shape[0] == 2


def test_missing_fashion_mnist_says_where_and_how(tmp_path):
    with pytest.raises(RnasclError, match=r"(?s)looked for.*%s.*apt-get install dataset-fashion-mnist" % tmp_path):
        load_split("fashion-mnist", "train", root=str(tmp_path))


def _cifar_dir(tmp_path, n=6):
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"labels": list(range(n))}
        (tmp_path / name).write_bytes(pickle.dumps(batch))
    return tmp_path


def test_cifar10_python_batches_with_standard_augmentation(tmp_path):
    train, info = load_split("cifar10", "train", root=str(_cifar_dir(tmp_path)), val_size=5)
    assert len(train) == 25 and info.input_shape == (3, 32, 32) and info.augment == ("crop", "flip")


class Payload:
    def __reduce__(self):
        return (open, ("/tmp/rnascl-pwned", "w"))


def test_cifar10_batch_that_carries_code_is_refused(tmp_path):
    _cifar_dir(tmp_path)
    (tmp_path / "test_batch").write_bytes(pickle.dumps({b"data": Payload(), b"labels": [0]}))
    with pytest.raises(RnasclError, match="not a CIFAR-10 python batch"):
        load_split("cifar10", "test", root=str(tmp_path))


def test_cifar10_missing(tmp_path):
    with pytest.raises(RnasclError, match=r"missing .*test_batch.*cifar-10-python"):
        load_split("cifar10", "test", root=str(tmp_path))


def test_in_memory_data_moves_whole_to_a_gpu_only():
    from rnascl_deploy.data import on_device

    train, _ = load_split("fashion-mnist", "train", limit=64)
    assert on_device(train, torch.device("cpu")) is train
    moved = train.to("cpu")
    gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    assert all(torch.equal(a[0], b[0]) for a, b in zip(batches(train, 16, gen()), batches(moved, 16, gen())))


def _uploads(monkeypatch):
    """Records, for every copy from the CPU to another device, whether it was asked not to block."""
    uploads = []
    real = torch.Tensor.to

    def to(self, *args, **kwargs):
        out = real(self, *args, **kwargs)
        if self.device.type == "cpu" and out.device.type != "cpu":
            uploads.append(kwargs.get("non_blocking", False))
        return out
    monkeypatch.setattr(torch.Tensor, "to", to)
    return uploads


def test_data_on_a_device_is_indexed_and_augmented_there_without_blocking_copies(monkeypatch):
    """The ``meta`` device stands in for a GPU: a CPU index into data on a GPU, or a mask copied there with a plain
    ``.to``, is a copy the host waits for on every batch (issue 39)."""
    from rnascl_deploy.data import TensorImages

    train, _ = load_split("fashion-mnist", "train", limit=40)
    on_device = TensorImages(train.images.to("meta"), train.labels.to("meta"))
    uploads = _uploads(monkeypatch)
    for x, y, index in batches(on_device, 16, torch.Generator().manual_seed(0), indices=True):
        assert x.device.type == y.device.type == index.device.type == "meta"
    augmented = augment_batch(torch.rand(8, 3, 32, 32, device="meta"), ["crop", "flip"], torch.Generator())
    assert augmented.device.type == "meta" and augmented.shape == (8, 3, 32, 32)
    assert uploads and all(uploads)  # one order per epoch, one mask per batch: none waited for


def test_indices_and_draws_reach_a_gpu_through_pinned_memory(monkeypatch):
    from rnascl_deploy.data import to_device

    calls = []
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda self: calls.append("pin") or self)
    monkeypatch.setattr(torch.Tensor, "to", lambda self, *a, **k: calls.append((a, k)) or self)
    to_device(torch.arange(3), torch.device("cuda", 0))
    assert calls == ["pin", ((torch.device("cuda", 0),), {"non_blocking": True})]
    calls.clear()
    to_device(torch.arange(3), torch.device("cpu"))
    assert calls == [((torch.device("cpu"),), {"non_blocking": True})]  # a no-op: nothing to pin


def test_augment_batch_is_reproducible_and_shape_preserving():
    x = torch.rand(8, 3, 32, 32)
    a = augment_batch(x, ["crop", "flip"], torch.Generator().manual_seed(1))
    b = augment_batch(x, ["crop", "flip"], torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and a.shape == x.shape and not torch.equal(a, x)
    with pytest.raises(RnasclError, match="unknown augmentation"):
        augment_batch(x, ["rotate"], torch.Generator())


@pytest.mark.parametrize("labels, words", [(list(range(4)), "5 images but 4 labels"), ([0, 1, 2, 3, 10], "label 10")])
def test_cifar10_batch_with_bad_labels_is_refused_naming_it(tmp_path, labels, words):
    _cifar_dir(tmp_path)
    batch = {b"data": np.zeros((5, 3072), dtype=np.uint8), b"labels": labels}
    (tmp_path / "test_batch").write_bytes(pickle.dumps(batch))
    with pytest.raises(RnasclError, match=f"test_batch.*{words}"):
        load_split("cifar10", "test", root=str(tmp_path))


def test_fashion_mnist_labels_that_disagree_are_refused(tmp_path):
    _write_idx(tmp_path / "t10k-images-idx3-ubyte", np.zeros((4, 28, 28)), False)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.array([0, 1, 2]), False)
    with pytest.raises(RnasclError, match="4 images but 3 labels"):
        load_split("fashion-mnist", "test", root=str(tmp_path))


def test_imagefolder_empty_or_truncated_images_are_refused_naming_the_file(tmp_path):
    from PIL import Image

    for split in ("train", "val"):
        for cls in ("cat", "dog"):
            (tmp_path / split / cls).mkdir(parents=True)
            Image.new("RGB", (40, 30), (0, 0, 200)).save(tmp_path / split / cls / "0.jpg")
    (tmp_path / "val" / "dog" / "empty.png").write_bytes(b"")
    with pytest.raises(RnasclError, match="empty.png is empty"):
        load_split("imagefolder", "test", root=str(tmp_path), image_size=16)
    (tmp_path / "val" / "dog" / "empty.png").unlink()
    good = (tmp_path / "val" / "cat" / "0.jpg").read_bytes()
    (tmp_path / "val" / "cat" / "0.jpg").write_bytes(good[: len(good) // 2])
    test, _ = load_split("imagefolder", "test", root=str(tmp_path), image_size=16)
    with pytest.raises(RnasclError, match="cat/0.jpg cannot be decoded") as in_process:
        next(batches(test, 2))
    # from a DataLoader worker: the same message, not torch's "Caught RnasclError in DataLoader worker process 0"
    with pytest.raises(RnasclError) as in_worker:
        next(batches(test, 2, workers=1))
    assert str(in_worker.value) == str(in_process.value)


@pytest.mark.parametrize("damage, words", [
    (lambda raw: raw[:6], "header is truncated"),  # 2 of the 12 bytes of dimensions
    (lambda raw: gzip.compress(raw)[:-12], "cannot be decompressed"),  # a download cut short
    (lambda raw: b"\x1f\x8b" + b"not gzip data at all", "cannot be decompressed")])
def test_damaged_idx_files_are_refused_naming_them(tmp_path, damage, words):
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.arange(4), False)
    _write_idx(tmp_path / "t10k-images-idx3-ubyte", np.zeros((4, 28, 28)), False)
    images = tmp_path / "t10k-images-idx3-ubyte"
    images.write_bytes(damage(images.read_bytes()))
    with pytest.raises(RnasclError, match=f"t10k-images-idx3-ubyte.*{words}"):
        load_split("fashion-mnist", "test", root=str(tmp_path))
