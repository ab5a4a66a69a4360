"""ImageFolder data sets: one class list (train/'s) labels every split, only visible image files count, pixel
formats beyond 8 bits keep their brightness, and the test split's first N images mix the classes."""
import logging

import numpy as np
import pytest
import torch
from PIL import Image

from rnascl_deploy.data import batches, load_split
from rnascl_deploy.errors import RnasclError


def image_folder(root, classes, val_classes=None, n=2):
    """``root/train/<class>/<i>.png`` and ``root/val/<class>/<i>.png`` (val: ``val_classes``, default the same);
    every image of class k has red value 10 * k, so a label can be checked against its pixels."""
    shade = {cls: 10 * k for k, cls in enumerate(sorted(set(classes) | set(val_classes or ())))}
    for split, names in (("train", classes), ("val", classes if val_classes is None else val_classes)):
        for cls in names:
            (root / split / cls).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.new("RGB", (12, 10), (shade[cls], 0, 200)).save(root / split / cls / f"{i}.png")
    return root


def test_imagefolder(tmp_path):
    image_folder(tmp_path, ["cat", "dog"], n=3)
    train, info = load_split("imagefolder", "train", root=str(tmp_path), val_size=2, image_size=16)
    x, y = next(batches(train, 8))
    assert info.num_classes == 2 and info.class_names == ("cat", "dog") and x.shape == (4, 3, 16, 16)
    assert 0 <= x.min() and x.max() <= 1
    # DataLoader workers and pinned memory (the GPU feed) give the same batches in the same order
    gen = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    plain = list(batches(train, 2, gen()))
    fed = list(batches(train, 2, gen(), workers=2, pin_memory=torch.cuda.is_available()))
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(plain, fed))


def test_val_is_labelled_with_train_classes_and_a_missing_class_is_warned(tmp_path, caplog):
    image_folder(tmp_path, ["cat", "dog", "fox"], val_classes=["dog", "fox"])
    with caplog.at_level(logging.WARNING):
        test, info = load_split("imagefolder", "test", root=str(tmp_path), image_size=8)
    assert info.class_names == ("cat", "dog", "fox") and info.num_classes == 3
    x, y = next(batches(test, 100))
    assert sorted(set(y.tolist())) == [1, 2]
    assert torch.equal(y, (x[:, 0, 0, 0] * 255 / 10).round().long())  # each label is its pixels' class
    assert "no folder for 1 of the 3 classes" in caplog.text and "(cat)" in caplog.text


def test_a_val_class_unknown_to_train_is_refused_naming_it(tmp_path):
    image_folder(tmp_path, ["cat", "dog"], val_classes=["cat", "cow", "dog"])
    with pytest.raises(RnasclError, match=r"val/cow.*not a class of .*train"):
        load_split("imagefolder", "test", root=str(tmp_path))


def test_hidden_entries_and_folders_named_like_images_are_skipped(tmp_path):
    image_folder(tmp_path, ["cat", "dog"])
    for split in ("train", "val"):
        hidden = tmp_path / split / ".ipynb_checkpoints"
        hidden.mkdir()
        Image.new("RGB", (4, 4)).save(hidden / "0.png")
        (tmp_path / split / "cat" / "._0.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")  # macOS metadata
        (tmp_path / split / "dog" / "frames.png").mkdir()
    for split in ("train", "test"):
        data, info = load_split("imagefolder", split, root=str(tmp_path), val_size=1, image_size=8)
        assert info.class_names == ("cat", "dog")
        assert all("._" not in f and ".ipynb" not in f and not f.endswith("frames.png") for f in data.files)
        next(batches(data, 100))  # every listed file decodes


def test_a_class_without_images_is_refused_naming_it(tmp_path):
    image_folder(tmp_path, ["cat", "dog"])
    (tmp_path / "train" / "emu").mkdir()
    (tmp_path / "train" / "emu" / "notes.txt").write_text("to do")
    with pytest.raises(RnasclError, match=r"train/emu holds no images"):
        load_split("imagefolder", "train", root=str(tmp_path), val_size=1)


def test_a_broken_link_is_refused_naming_it(tmp_path):
    image_folder(tmp_path, ["cat", "dog"])
    (tmp_path / "train" / "cat" / "gone.png").symlink_to(tmp_path / "nowhere.png")
    with pytest.raises(RnasclError, match=r"cat/gone.png is a broken symbolic link"):
        load_split("imagefolder", "train", root=str(tmp_path), val_size=1)


def test_16_bit_images_keep_their_brightness_and_float_images_are_refused(tmp_path):
    image_folder(tmp_path, ["cat", "dog"], n=1)
    Image.fromarray(np.full((8, 8), 30000, np.uint16)).save(tmp_path / "val" / "cat" / "0.png")  # mode I;16
    test, _ = load_split("imagefolder", "test", root=str(tmp_path), image_size=8)
    index = test.files.index(str(tmp_path / "val" / "cat" / "0.png"))
    x, _ = test[index]
    assert torch.allclose(x, torch.full_like(x, 30000 / 65535), atol=1 / 255)  # not saturated to 1.0
    Image.fromarray(np.full((8, 8), 0.5, np.float32)).save(tmp_path / "val" / "dog" / "0.tif")  # mode F
    test, _ = load_split("imagefolder", "test", root=str(tmp_path), image_size=8)
    with pytest.raises(RnasclError, match=r"dog/0.tif has floating-point pixels"):
        next(batches(test, 100))


def test_the_test_split_is_a_fixed_mix_of_classes(tmp_path):
    image_folder(tmp_path, ["a", "b", "c", "d"], n=5)
    full, _ = load_split("imagefolder", "test", root=str(tmp_path), image_size=8)
    torch.manual_seed(1)  # the order is the data set's own, not the process's random state
    first, _ = load_split("imagefolder", "test", root=str(tmp_path), limit=8, image_size=8)
    assert first.files == full.files[:8] and len(set(first.labels.tolist())) >= 3
    assert sorted(full.files) == sorted(str(p) for p in (tmp_path / "val").rglob("*.png"))
