"""torch.distributed for search and retrain, launched by torchrun (``torchrun --nproc_per_node N -m rnascl_deploy``).

One process per rank; torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT) is all the
configuration there is. Without it (a plain ``rnascl-deploy`` command) every function here is the single-process
identity, so the code paths are the same.

The rules the stages follow:
- the backend is nccl when the rank has a GPU, gloo otherwise;
- ``data.batch_size`` stays the GLOBAL batch: each rank trains on ``batch_size / world`` images of it, taken by a
  :class:`~torch.utils.data.DistributedSampler` from one shuffled order that every rank draws alike, so an epoch
  has the same number of optimiser steps on any number of processes;
- models are wrapped in :class:`~torch.nn.parallel.DistributedDataParallel` (gradients averaged, buffers broadcast
  from rank 0); after each epoch :func:`sync_buffers` makes BatchNorm statistics identical on every rank;
- the global RNG (Gumbel noise, attack starts) differs per rank, the data order does not;
- only rank 0 writes files, logs to files and shows progress bars; every rank reads the run directory, which
  must therefore be on a file system all nodes see (multi-node);
- :func:`barrier` separates checks that read the run directory from rank 0's first write.
"""
from __future__ import annotations

import datetime
import hashlib
import logging
import os
from typing import Iterable, List, TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DistributedSampler

from .errors import RnasclError

log = logging.getLogger(__name__)
T = TypeVar("T")


def launched() -> bool:
    """True inside a torchrun launch with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init() -> None:
    """Join the process group torchrun describes (no-op without one, or when already joined)."""
    if not launched() or dist.is_initialized():
        return
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    # long enough for rank 0 to evaluate the final student alone while the others wait
    dist.init_process_group(backend, timeout=datetime.timedelta(hours=2))
    log.debug("rank %d of %d joined (%s)", rank(), world(), backend)


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def world() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def is_main() -> bool:
    return rank() == 0


def device() -> torch.device:
    """The device of this rank: its GPU under nccl, the CPU otherwise."""
    if dist.is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def local_batch(batch_size: int) -> int:
    """This rank's share of the global batch."""
    if batch_size % world():
        raise RnasclError(f"data.batch_size {batch_size} does not split over {world()} processes; use a multiple "
                          f"of {world()} (it is the global batch: each process takes batch_size / processes)")
    return batch_size // world()


def shard(order: torch.Tensor) -> torch.Tensor:
    """This rank's indices of ``order`` (a permutation every rank drew alike), by DistributedSampler: positions
    rank, rank + world, ... so that the k-th local batch is a slice of the k-th global batch."""
    if world() == 1:
        return order
    # DistributedSampler reads only len() of its data set, which torch types as a Dataset
    sampler: DistributedSampler[int] = DistributedSampler(
        range(len(order)), num_replicas=world(), rank=rank(), shuffle=False, drop_last=True)  # type: ignore[arg-type]
    return order[list(sampler)]


def seed_rank(seed: int) -> None:
    """Give every rank its own global RNG stream (Gumbel noise, attack starts, TRADES noise) under ``seed``."""
    if world() > 1:
        torch.manual_seed(seed + 1_000_003 * rank())


def wrap(model: nn.Module) -> nn.Module:
    """DistributedDataParallel around ``model`` when launched, ``model`` itself otherwise."""
    if world() == 1:
        return model
    dev = next(model.parameters()).device
    ids = [dev.index] if dev.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def sync_buffers(model: nn.Module) -> None:
    """Copy rank 0's buffers (BatchNorm statistics) to every rank."""
    if world() > 1:
        for buffer in unwrap(model).buffers():
            dist.broadcast(buffer, 0)


def average_gradients(params: Iterable[torch.Tensor]) -> None:
    """Average the gradients of parameters that live outside a DistributedDataParallel wrapper over the ranks."""
    if world() == 1:
        return
    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= world()


def all_sum(values: List[float]) -> List[float]:
    """Sum numbers over ranks (e.g. correct-prediction counts of sharded evaluation)."""
    if world() == 1:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device())
    dist.all_reduce(t)
    return t.tolist()


def from_main(value: T) -> T:
    """Rank 0's ``value`` on every rank (a choice each rank measured alike but may have come to differently)."""
    if world() == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, 0)
    return box[0]


def digest(model: nn.Module) -> str:
    """SHA-256 of every parameter and buffer of ``model``, bit for bit."""
    h = hashlib.sha256()
    for name, t in unwrap(model).state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def check_in_sync(model: nn.Module, where: str) -> None:
    """Refuse to go on when the ranks' models differ in any bit (weights, architecture logits, BN statistics)."""
    if world() == 1:
        return
    digests: List[str] = [""] * world()  # filled by all_gather_object
    dist.all_gather_object(digests, digest(model))
    if len(set(digests)) > 1:
        raise RnasclError(f"{where}: the ranks' models have diverged ({', '.join(d[:12] for d in digests)}); "
                          "this is a bug, please report it")
    log.debug("%s: ranks in sync (%s)", where, digests[0][:12])
