"""torch.distributed: search and retrain under torchrun with 2 gloo processes, and the pieces they rest on."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner

from rnascl_deploy import distributed
from rnascl_deploy.arch import ArchSpec
from rnascl_deploy.checkpoint import load_model
from rnascl_deploy.cli import main
from rnascl_deploy.cost import measure
from rnascl_deploy.data import TensorImages, batches, rank_part
from rnascl_deploy.errors import RnasclError


def torchrun(*args) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "rnascl_deploy", "-v", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


@pytest.mark.slow  # about 37 s on 2 cores: two processes search and retrain
def test_torchrun_search_and_retrain_on_two_gloo_processes(tmp_path):
    run = tmp_path / "run"
    search = torchrun("search", "--budget", "600K", "--out", str(run), "--epochs", "2", "--train-limit", "512")
    assert search.returncode == 0, search.stderr[-3000:]
    # every epoch ends with a bit-for-bit comparison of supernet weights, width logits, tutor logits and BN
    # statistics across the ranks; a difference would have stopped the run with an error
    assert search.stderr.count("ranks in sync") == 2
    arch = ArchSpec.load(run / "arch.json")
    assert measure(arch.build_student(), arch.input_shape).macs == arch.macs <= 600_000
    assert set(arch.tutors.values()) <= set(arch.teacher.tap_names)
    assert search.stdout.count("arch.json: widths") == 1  # rank 0 alone reports

    retrain = torchrun("retrain", str(run), "--epochs", "1", "--train-limit", "512", "--test-limit", "64",
                       "--set", "retrain.finetune.epochs=1", "--set", "retrain.finetune.adv=trades", "--json")
    assert retrain.returncode == 0, retrain.stderr[-3000:]
    assert retrain.stderr.count("ranks in sync") == 2  # the retrain epoch and the TRADES fine-tune epoch
    metrics = json.loads(retrain.stdout)  # one JSON object: only rank 0 prints
    assert metrics["n"] == 64 and metrics["macs"] == arch.macs and metrics["finetune"] == "trades"
    _, meta = load_model(run / "student.safetensors", kind="student")
    assert meta["model"]["kwargs"]["widths"] == list(arch.widths)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _diverge_worker(rank: int, port: int, results):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2")
    distributed.init()
    try:
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
        distributed.check_in_sync(model, "identical")
        if rank == 1:
            with torch.no_grad():
                model[1].running_mean[0] = torch.nextafter(model[1].running_mean[0], torch.tensor(1.0))
        try:
            distributed.check_in_sync(model, "one buffer one ulp apart")
            results[rank] = "missed"
        except RnasclError as exc:
            results[rank] = str(exc)
    finally:
        distributed.shutdown()


def test_check_in_sync_catches_a_one_ulp_difference_in_a_buffer():
    ctx = torch.multiprocessing.get_context("spawn")
    with ctx.Manager() as manager:
        results = manager.dict()
        torch.multiprocessing.start_processes(_diverge_worker, args=(_free_port(), results), nprocs=2,
                                              start_method="spawn")
        assert all("have diverged" in results[r] for r in (0, 1)), dict(results)


@pytest.fixture
def two_ranks(monkeypatch):
    """This process seen as rank ``r`` of 2, without a process group (for the data-splitting rules)."""
    def as_rank(r):
        monkeypatch.setattr(distributed, "world", lambda: 2)
        monkeypatch.setattr(distributed, "rank", lambda: r)
    return as_rank


def test_each_global_batch_splits_between_the_ranks(two_ranks):
    data = TensorImages(torch.zeros(50, 1, 2, 2, dtype=torch.uint8), torch.arange(50))
    seen = {}
    for r in (0, 1):
        two_ranks(r)
        seen[r] = [y for _, y in batches(data, 8, torch.Generator().manual_seed(3), drop_last=True, shard=True)]
    order = torch.randperm(50, generator=torch.Generator().manual_seed(3))
    assert len(seen[0]) == len(seen[1]) == 50 // 8
    for k, (a, b) in enumerate(zip(seen[0], seen[1])):
        assert len(a) == len(b) == 4
        assert sorted((a.tolist() + b.tolist())) == sorted(order[8 * k:8 * k + 8].tolist())
    parts = []
    for r in (0, 1):
        two_ranks(r)
        parts += rank_part(data).labels.tolist()
    assert sorted(parts) == list(range(50))  # a sharded evaluation sees every image once


def test_global_batch_must_split_over_the_processes(monkeypatch):
    monkeypatch.setattr(distributed, "world", lambda: 3)
    with pytest.raises(RnasclError, match="batch_size 128 does not split over 3 processes"):
        distributed.local_batch(128)


def test_stages_other_than_search_and_retrain_refuse_torchrun(tmp_path):
    result = CliRunner().invoke(main, ["export", str(tmp_path)], env={"WORLD_SIZE": "2"})
    assert result.exit_code == 2
    assert "does not run under torchrun; only search, retrain do" in result.output
