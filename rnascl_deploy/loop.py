"""The one epoch loop of training and search (modelopt's ``RuntimeClient`` is the model: the public method owns the
invariants, a subclass supplies the step).

:meth:`EpochLoop.run` owns, once for every loop:
- resume: a run directory holding the state file is refused unless ``resume`` (and vice versa); a resumed run
  continues after its last finished epoch with the saved history and elapsed time;
- determinism: every epoch reseeds from (seed, epoch) (:func:`rundir.epoch_seed`) and draws its batches from a
  generator seeded alike, so a run resumed at an epoch boundary replays what an uninterrupted one does;
- the progress bar (rank 0, ``progress``), with the running mean of every term a step returns;
- under torchrun: BatchNorm buffers broadcast from rank 0 and a bit-for-bit rank consistency check every epoch;
- the state file (written atomically each epoch, rank 0 alone) and ``history.jsonl`` (one row per epoch).

A subclass supplies ``batches``, ``step`` (one optimiser step, returning named float terms), ``end_epoch`` (the
history row: validation, schedules) and ``state_dict``/``load_state_dict`` (what it needs to resume: models,
optimisers, bests). ``synced`` is the module the rank check covers.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Dict, Iterable, List

import torch
from torch import nn
from tqdm import tqdm

from . import distributed
from .errors import RnasclError
from .rundir import check_resume, epoch_seed, load_state, save_state, write_history

log = logging.getLogger(__name__)


class EpochLoop:
    desc = "epoch"  # progress-bar label

    def __init__(self, out: Path, epochs: int, seed: int, steps_per_epoch: int, state_name: str = "state.pt",
                 history_name: str = "history.jsonl", progress: bool = True):
        self.out, self.epochs, self.seed, self.steps = Path(out), epochs, seed, steps_per_epoch
        self.state_path, self.history_path = self.out / state_name, self.out / history_name
        self.progress = progress
        self.history: List[dict] = []
        self.elapsed = 0.0

    # ------------------------------------------------------------------------------------------ subclass hooks
    synced: nn.Module

    def batches(self, epoch: int, gen: torch.Generator) -> Iterable:
        raise NotImplementedError

    def step(self, epoch: int, i: int, batch, gen: torch.Generator) -> Dict[str, float]:
        raise NotImplementedError

    def end_epoch(self, epoch: int, means: Dict[str, float]) -> dict:
        """The epoch's history row (without ``epoch`` and ``seconds``, which the loop adds)."""
        return dict(means)

    def postfix(self, means: Dict[str, float]) -> Dict[str, str]:
        return {k: f"{v:.3g}" for k, v in means.items()}

    def state_dict(self) -> dict:
        raise NotImplementedError

    def load_state_dict(self, state: dict) -> None:
        raise NotImplementedError

    # ------------------------------------------------------------------------------------------ the loop
    def run(self, resume: bool = False) -> List[dict]:
        start = 0
        if check_resume(self.state_path, resume):
            state = load_state(self.state_path)
            try:
                self.load_state_dict(state)
            except (KeyError, RuntimeError, ValueError) as exc:  # another model, space or optimiser
                raise RnasclError(f"cannot resume from {self.state_path}: it holds another run's state "
                                  f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]}). Resume with the recipe "
                                  "it started with, or move it away and start again without --resume") from None
            self.history, self.elapsed, start = state["history"], state["seconds"], state["epoch"] + 1
            log.info("resuming from epoch %d of %d (%s)", start, self.epochs, self.state_path)
        for epoch in range(start, self.epochs):
            t0 = time.perf_counter()
            gen = torch.Generator().manual_seed(epoch_seed(self.seed, epoch))
            sums: Dict[str, float] = {}
            counts: Dict[str, int] = {}
            bar = tqdm(self.batches(epoch, gen), total=self.steps, unit="batch",
                       desc=f"{self.desc} {epoch + 1}/{self.epochs}",
                       disable=None if self.progress and distributed.is_main() else True, leave=False)
            for i, batch in enumerate(bar):
                for k, v in self.step(epoch, i, batch, gen).items():
                    sums[k], counts[k] = sums.get(k, 0.0) + v, counts.get(k, 0) + 1
                bar.set_postfix(self.postfix({k: sums[k] / counts[k] for k in sums}))
            bar.close()
            distributed.sync_buffers(self.synced)
            row = self.end_epoch(epoch, {k: round(sums[k] / counts[k], 5) for k in sums})
            distributed.check_in_sync(self.synced, f"{self.desc} {epoch + 1}")
            seconds = time.perf_counter() - t0
            self.elapsed += seconds
            self.history.append({"epoch": epoch + 1, **row, "seconds": round(seconds, 1)})
            save_state(self.state_path, {**self.state_dict(), "epoch": epoch, "history": self.history,
                                         "seconds": self.elapsed})
            write_history(self.history_path, self.history)
        return self.history
