import pytest
import torch

from rnascl_deploy.distill import AttentionTransfer, FixedPairs, KDLoss, TutorSearch, attention_map


def test_attention_map_is_unit_norm_and_resized():
    amap = attention_map(torch.rand(3, 5, 14, 14), 7)
    assert amap.shape == (3, 49) and torch.allclose(amap.norm(dim=1), torch.ones(3))
    feat = torch.rand(2, 4, 7, 7)
    assert torch.allclose(attention_map(feat, 7), attention_map(feat * 3, 7), atol=1e-6)  # scale free


def test_attention_transfer_zero_on_identical_maps():
    feat = torch.rand(2, 4, 8, 8)
    assert AttentionTransfer(8)(feat, feat * 2) == pytest.approx(0, abs=1e-10)
    assert AttentionTransfer(8)(feat, torch.rand(2, 9, 8, 8)) > 0


def test_kd_is_zero_for_equal_logits_and_positive_otherwise():
    logits = torch.randn(4, 10)
    assert KDLoss(4.0)(logits, logits) == pytest.approx(0, abs=1e-6)
    assert KDLoss(1.0)(logits, torch.randn(4, 10)) > 0


def test_tutor_search_matches_the_papers_formula_and_learns():
    torch.manual_seed(0)
    student = {"s0": torch.rand(4, 3, 8, 8), "s1": torch.rand(4, 6, 4, 4)}
    teacher = {"t0": torch.rand(4, 2, 8, 8), "t1": torch.rand(4, 5, 4, 4), "t2": torch.rand(4, 7, 2, 2)}
    search = TutorSearch(["s0", "s1"], ["t0", "t1", "t2"], 4, tau=1.0)
    d = search.distances(student, teacher)
    expect = torch.tensor([[AttentionTransfer(4)(student[s], teacher[t]) for t in teacher] for s in student])
    assert torch.allclose(d, expect, atol=1e-6)
    opt = torch.optim.Adam([search.logits], 0.1)
    for _ in range(100):
        opt.zero_grad()
        search(student, teacher).backward()
        opt.step()
    assert search.tutors() == {s: ["t0", "t1", "t2"][int(d[i].argmin())] for i, s in enumerate(["s0", "s1"])}
    assert search.probabilities().max(1).values.min() > 0.5  # left uniform (1/3)


def test_fixed_pairs_use_only_their_pairs():
    student = {"a": torch.rand(2, 3, 4, 4), "b": torch.rand(2, 3, 4, 4)}
    teacher = {"x": torch.rand(2, 3, 4, 4), "y": torch.rand(2, 3, 4, 4)}
    loss = FixedPairs({"a": "x"}, 4)
    expected = AttentionTransfer(4)(student["a"], teacher["x"])
    assert torch.allclose(loss(student, teacher), expected)
    student["b"] = torch.full((2, 3, 4, 4), float("nan"))  # an unpaired tap cannot influence the loss
    teacher["y"] = torch.full((2, 3, 4, 4), float("nan"))
    assert torch.isfinite(loss(student, teacher))


def test_the_teacher_cache_lives_on_the_device_it_was_built_on(tmp_path):
    """Built on a device, the cache stays there (the training step indexes it there with indices on that device);
    ``meta`` stands in for a GPU on the CPU. Its file is written from the CPU and read back onto the device."""
    import copy

    from torch import nn

    from rnascl_deploy.data import TensorImages
    from rnascl_deploy.distill.cache import TeacherCache

    teacher = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                            nn.Linear(4, 10))
    images = TensorImages(torch.randint(0, 256, (6, 1, 8, 8), dtype=torch.uint8), torch.arange(6) % 10)
    meta = TeacherCache.build(copy.deepcopy(teacher), images, ["1"], 4,
                              torch.device("meta"), batch_size=4, progress=False)
    assert meta.logits.device.type == "meta" and meta.maps["1"].device.type == "meta"
    assert meta.logits.shape == (6, 10) and meta.maps["1"].shape == (6, 16)
    cache = TeacherCache.load_or_build(tmp_path, "k", teacher, images, ["1"], 4, torch.device("cpu"), progress=False)
    again = TeacherCache.load_or_build(tmp_path, "k", teacher, images, ["1"], 4, torch.device("cpu"), progress=False)
    assert torch.equal(cache.logits, again.logits) and torch.equal(cache.maps["1"], again.maps["1"])
