"""The one epoch loop of training and search (modelopt's ``RuntimeClient`` is the model: the public method owns the
invariants, a subclass supplies the step).

:meth:`EpochLoop.run` owns, once for every loop:
- resume: a run directory holding the state file is refused unless ``resume`` (and vice versa); a resumed run
  continues after its last finished epoch with the saved history and elapsed time;
- determinism: every epoch reseeds from (seed, epoch) (:func:`rundir.epoch_seed`) and draws its batches from a
  generator seeded alike, so a run resumed at an epoch boundary replays what an uninterrupted one does;
- the progress bar (rank 0, ``progress``), with the running mean of every term a step returns. Terms are detached
  tensors summed on their device and read once every ``log_every`` steps, so a step never waits for the device;
  a term that is not finite then stops the run (training diverged);
- under torchrun: BatchNorm buffers broadcast from rank 0 and a bit-for-bit rank consistency check every epoch;
- the state file (written atomically each epoch, rank 0 alone) and the history file (one row per epoch).

A subclass supplies ``batches``, ``step`` (one optimiser step, returning named scalar terms), ``end_epoch`` (the
history row: validation, schedules) and ``state_dict``/``load_state_dict`` (what it needs to resume: models,
optimisers, bests). ``synced`` is the module the rank check covers.
"""
from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Dict, Iterable, List

import torch
from torch import nn

from . import distributed
from .errors import RnasclError
from .progress import progress_bar
from .rundir import check_resume, epoch_seed, load_state, save_state, write_history

log = logging.getLogger(__name__)


class EpochLoop:
    desc = "epoch"  # progress-bar label
    log_every = 25  # steps between reads of the running terms (progress bar, divergence check)

    def __init__(self, state_path: Path, history_path: Path, epochs: int, seed: int, steps_per_epoch: int,
                 progress: bool = True):
        self.epochs, self.seed, self.steps = epochs, seed, steps_per_epoch
        self.state_path, self.history_path = Path(state_path), Path(history_path)
        self.progress = progress
        self.history: List[dict] = []
        self.elapsed = 0.0

    # ------------------------------------------------------------------------------------------ subclass hooks
    synced: nn.Module

    def batches(self, epoch: int, gen: torch.Generator) -> Iterable:
        raise NotImplementedError

    def step(self, epoch: int, i: int, batch, gen: torch.Generator) -> Dict[str, torch.Tensor]:
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
    stopped = False  # a subclass sets it to end the run after the current epoch (saved with the state)

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
            self.stopped = state.get("stopped", False)
            log.info("resuming from epoch %d of %d (%s)", start, self.epochs, self.state_path)
        for epoch in range(start, self.epochs):
            if self.stopped:
                break
            t0 = time.perf_counter()
            gen = torch.Generator().manual_seed(epoch_seed(self.seed, epoch))
            sums: Dict[str, torch.Tensor] = {}
            counts: Dict[str, int] = {}
            bar = progress_bar(self.batches(epoch, gen), enabled=self.progress and distributed.is_main(),
                              total=self.steps, unit="batch", desc=f"{self.desc} {epoch + 1}/{self.epochs}")
            means: Dict[str, float] = {}
            for i, batch in enumerate(bar):
                for k, v in self.step(epoch, i, batch, gen).items():
                    v = v.detach().double() if torch.is_tensor(v) else \
                        torch.tensor(float(v), dtype=torch.float64, device="cpu")
                    sums[k], counts[k] = sums[k] + v if k in sums else v, counts.get(k, 0) + 1
                if (i + 1) % self.log_every == 0:
                    means = self._read(sums, counts, epoch, i)
                    bar.set_postfix(self.postfix(means))
            bar.close()
            means = self._read(sums, counts, epoch, self.steps - 1)
            distributed.sync_buffers(self.synced)
            row = self.end_epoch(epoch, {k: round(v, 5) for k, v in means.items()})
            distributed.check_in_sync(self.synced, f"{self.desc} {epoch + 1}")
            seconds = time.perf_counter() - t0
            self.elapsed += seconds
            self.history.append({"epoch": epoch + 1, **row, "seconds": round(seconds, 1)})
            save_state(self.state_path, {**self.state_dict(), "epoch": epoch, "history": self.history,
                                         "seconds": self.elapsed, "stopped": self.stopped})
            write_history(self.history_path, self.history)
        return self.history

    def _read(self, sums: Dict[str, torch.Tensor], counts: Dict[str, int], epoch: int, i: int) -> Dict[str, float]:
        """The running means of the terms (one host sync); a term that is not finite stops the run."""
        values = torch.stack([sums[k].cpu() for k in sums]).tolist() if sums else []
        means = {k: v / counts[k] for k, v in zip(sums, values)}
        bad = [k for k, v in means.items() if not math.isfinite(v)]
        if bad:
            raise RnasclError(f"training diverged in epoch {epoch + 1} by batch {i + 1} ({', '.join(bad)} not "
                              "finite); lower the learning rate")
        return means
