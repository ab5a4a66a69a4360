"""Measuring an engine and its reference on the same points with AutoAttack's cascade.

1. :func:`reference_cascade`: the reference's clean predictions, then each attack of ``verify.attacks`` in order
   (APGD-CE, APGD-T with 9 targets, Square by default) on the points still robust, white-box attacks taking the
   reference's own gradients. Every adversarial example it makes is kept: they are the transfer attack's
   candidates. The result depends only on the reference, the points and the attacks, so ``verify`` keeps it on
   disk (:meth:`ReferenceResult.save`) and a second engine of the same reference reuses it.
2. :func:`engine_cascade`, on the points the engine classifies correctly:
   - ``transfer``: every adversarial example of the reference's cascade, replayed on the engine;
   - each attack of ``verify.attacks`` on the points still robust. White-box attacks run on :class:`EngineDecides`:
     every forward pass the attack sees is the engine's own output, the input gradient is the replica's (the
     differentiable twin of the engine's graph, BPDA), so a point counts as broken only when the engine
     misclassifies it. Square queries the engine itself.

A point is robust when it is classified correctly clean and survives every attack; ``after[name]`` is the robust
count after that attack and every earlier one, so the last is the worst case. Accuracies are percent of ``n``.
"""
from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Deque, Dict, Iterable, Iterator, List, Mapping, Optional, Tuple

import torch
from torch import nn

from ..attacks import QueryAttack, correct
from ..attacks.evaluate import json_key
from ..data import batches
from ..fileio import atomic_path
from ..progress import progress_bar

LogitsFn = Callable[[torch.Tensor], torch.Tensor]


class EngineDecides(nn.Module):
    """Forward: the engine's logits, exactly. Backward: the replica's gradient (straight through the engine).

    Every loss value, step-size decision and misclassification an attack sees on this module is the engine's; only
    the direction of each step comes from the replica."""

    def __init__(self, replica: nn.Module, engine: LogitsFn):
        super().__init__()
        self.replica = replica
        self.engine = engine

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.replica(x)
        with torch.no_grad():
            e = self.engine(x.detach()).to(z)
        return _StraightThrough.apply(z, e)


class _StraightThrough(torch.autograd.Function):
    """``e`` bit for bit forward (``z + (e - z)`` can differ from ``e`` in its last bit, enough to turn a near-tie
    into a misclassification the engine never made), the gradient to ``z`` backward."""

    @staticmethod
    def forward(ctx, z: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        return e.clone()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, None


@dataclass
class Figures:
    """One model's results on the ``n`` points, in percent."""

    clean_acc_pct: float
    after_pct: Dict[str, float]  # robust after each attack and every earlier one (AutoAttack's cascade)
    worst_case_acc_pct: float
    seconds: Dict[str, float] = field(default_factory=dict)  # per attack, summed over batches (some ran at once)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class ReferenceResult:
    """The reference's cascade: its figures, its clean predictions and every adversarial example it made
    (``examples[attack] = (point indices, images)``)."""

    figures: Figures
    pred: torch.Tensor
    examples: Dict[str, Tuple[torch.Tensor, torch.Tensor]]

    def save(self, path: Path) -> None:
        from safetensors.torch import save

        tensors = {"pred": self.pred.cpu().contiguous()}
        for name, (idx, x) in self.examples.items():
            tensors[f"idx/{name}"], tensors[f"adv/{name}"] = idx.cpu().contiguous(), x.cpu().contiguous()
        blob = save(tensors, metadata={"figures": json.dumps(self.figures.to_dict()),
                                       "attacks": json.dumps(list(self.examples))})
        with atomic_path(Path(path)) as tmp:
            tmp.write_bytes(blob)

    @classmethod
    def load(cls, path: Path) -> Optional["ReferenceResult"]:
        """The result saved at ``path``, or None where it cannot be read (it is then measured again)."""
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata()
                names = json.loads(meta["attacks"])
                examples = {n: (f.get_tensor(f"idx/{n}"), f.get_tensor(f"adv/{n}")) for n in names}
                return cls(Figures(**json.loads(meta["figures"])), f.get_tensor("pred"), examples)
        except Exception:  # a damaged or foreign file: not trusted, measured again
            return None


class _Tally:
    def __init__(self, names: List[str]):
        self.clean, self.after = 0, {name: 0 for name in names}
        self.seconds = {name: 0.0 for name in names}

    def add(self, clean: int, after: Dict[str, int], seconds: Dict[str, float]) -> None:
        """One batch's counts (robust clean, after each attack) and seconds per attack."""
        self.clean += clean
        for name in self.after:
            self.after[name] += after[name]
            self.seconds[name] += seconds[name]

    def figures(self, n: int) -> Figures:
        pct = lambda k: round(100.0 * k / n, 4)  # noqa: E731
        last = list(self.after.values())[-1] if self.after else self.clean
        return Figures(pct(self.clean), {json_key(k): pct(v) for k, v in self.after.items()}, pct(last),
                       {json_key(k): round(v, 2) for k, v in self.seconds.items()})


def _attack_alive(attack, target, predict: LogitsFn, x, y, alive) -> Tuple[torch.Tensor, torch.Tensor]:
    """Run ``attack`` against ``target`` on the points still ``alive``; mark those ``predict`` then misclassifies.
    Returns (indices attacked, their adversarial examples)."""
    idx = alive.nonzero().squeeze(1)
    if len(idx) == 0:
        return idx, x[:0]
    x_adv = attack(target, x[idx], y[idx])
    with torch.no_grad():
        fooled = ~correct(predict(x_adv), y[idx]).to(y.device)
    alive[idx[fooled]] = False
    return idx, x_adv


def in_order(fn: Callable, items: Iterable, workers: int) -> Iterator:
    """``fn`` of each item, yielded in the items' order, up to ``workers`` items computed at once on threads (torch's
    and onnxruntime's kernels release the GIL); no more items are taken than are being computed. Each batch of a
    cascade is independent of the others (per-point results, a random start drawn per batch), so the results are
    those of one batch after the other. The threads are daemons: Ctrl-C stops the command at once instead of
    waiting for the batches under way. A batch's error is raised in the caller when its turn comes; the other
    batches under way then (at most ``workers - 1``) run to their end unseen."""
    if workers <= 1:
        yield from map(fn, items)
        return
    pending: Deque[Tuple[dict, threading.Event]] = deque()
    for item in items:
        pending.append(_start(fn, item))
        if len(pending) == workers:
            yield _result(*pending.popleft())
    while pending:
        yield _result(*pending.popleft())


def _start(fn: Callable, item) -> Tuple[dict, threading.Event]:
    box: dict = {}
    done = threading.Event()

    def run():
        try:
            box["value"] = fn(item)
        except BaseException as exc:  # handed to the caller's thread by _result
            box["error"] = exc
        finally:
            done.set()

    threading.Thread(target=run, daemon=True).start()
    return box, done


def _result(box: dict, done: threading.Event):
    done.wait()
    if "error" in box:
        raise box["error"]
    return box["value"]


def _batches(dataset, batch_size: int, device: torch.device) -> Iterator[Tuple[int, torch.Tensor, torch.Tensor]]:
    """(index of the batch's first point, images, labels) of each batch, on ``device``."""
    start = 0
    for x, y in batches(dataset, batch_size):
        yield start, x.to(device), y.to(device)
        start += len(y)


def reference_cascade(reference: nn.Module, dataset, attacks: Mapping[str, object], batch_size: int = 500,
                      device: torch.device = torch.device("cpu"), progress: bool = True,
                      workers: int = 1) -> ReferenceResult:
    """The reference's cascade over ``dataset``, ``workers`` batches at once (:func:`in_order`)."""
    tally, preds = _Tally(list(attacks)), []
    examples: Dict[str, List[Tuple[torch.Tensor, torch.Tensor]]] = {name: [] for name in attacks}
    bar = progress_bar(enabled=progress, total=len(dataset), desc="verify: reference", unit="img")

    def one(batch):
        start_of_batch, x, y = batch
        with torch.no_grad():
            logits = reference(x)
        pred, alive = logits.argmax(1), correct(logits, y)
        clean, made, after, seconds = int(alive.sum()), {}, {}, {}
        for name, attack in attacks.items():
            bar.set_postfix_str(name)
            start = time.perf_counter()
            idx, x_adv = _attack_alive(attack, reference, reference, x, y, alive)
            made[name] = (idx.cpu() + start_of_batch, x_adv.cpu())
            seconds[name], after[name] = time.perf_counter() - start, int(alive.sum())
        return len(y), pred.cpu(), clean, made, after, seconds

    for size, pred, clean, made, after, seconds in in_order(one, _batches(dataset, batch_size, device), workers):
        preds.append(pred)
        tally.add(clean, after, seconds)
        for name in attacks:
            examples[name].append(made[name])
        bar.update(size)
    bar.close()
    joined = {name: (torch.cat([i for i, _ in parts]), torch.cat([a for _, a in parts]))
              for name, parts in examples.items()}
    return ReferenceResult(tally.figures(len(dataset)), torch.cat(preds), joined)


@dataclass
class Measurement:
    n: int
    agreement_pct: float  # top-1 agreement of engine and reference on clean points
    reference: Figures
    engine: Figures
    query_only_breaks: int  # engine points a query attack broke after every white-box attack before it missed them


def engine_cascade(engine: LogitsFn, decides: nn.Module, dataset, attacks: Mapping[str, object],
                   reference: ReferenceResult, transfer: bool = True, batch_size: int = 500,
                   device: torch.device = torch.device("cpu"), progress: bool = True, workers: int = 1) -> Measurement:
    """The engine's cascade over ``dataset`` (white-box attacks through ``decides``), after the reference's,
    ``workers`` batches at once (:func:`in_order`; the engine must take concurrent calls)."""
    tally = _Tally((["transfer"] if transfer else []) + list(attacks))
    by_point: Dict[int, List[torch.Tensor]] = {}  # point -> the reference's adversarial examples of it
    if transfer:
        for idx, x_adv in reference.examples.values():
            for i, x in zip(idx.tolist(), x_adv):
                by_point.setdefault(i, []).append(x)
    bar = progress_bar(enabled=progress, total=len(dataset), desc="verify: engine", unit="img")

    def one(batch):
        start_of_batch, x, y = batch
        with torch.no_grad():
            logits = engine(x).to(device)
        pred, alive = logits.argmax(1), correct(logits, y)
        agree = int((pred == reference.pred[start_of_batch:start_of_batch + len(y)].to(device)).sum())
        clean, after, seconds, query_only = int(alive.sum()), {}, {}, 0
        if transfer:
            bar.set_postfix_str("transfer")
            start = time.perf_counter()
            points = [i for i in alive.nonzero().squeeze(1).tolist() if start_of_batch + i in by_point]
            if points:
                owners = torch.tensor([i for i in points for _ in by_point[start_of_batch + i]], device=device)
                x_adv = torch.stack([a for i in points for a in by_point[start_of_batch + i]]).to(device)
                with torch.no_grad():
                    fooled = ~correct(engine(x_adv).to(device), y[owners])
                alive[owners[fooled]] = False
            seconds["transfer"], after["transfer"] = time.perf_counter() - start, int(alive.sum())
        white_box_before = False
        for name, attack in attacks.items():
            bar.set_postfix_str(name)
            start = time.perf_counter()
            query = isinstance(attack, QueryAttack)
            before = int(alive.sum())
            _attack_alive(attack, engine if query else decides, engine, x, y, alive)
            if query and white_box_before:
                query_only += before - int(alive.sum())
            white_box_before |= not query
            seconds[name], after[name] = time.perf_counter() - start, int(alive.sum())
        return len(y), agree, clean, after, seconds, query_only

    agree = query_only = 0
    for size, agreed, clean, after, seconds, broke in in_order(one, _batches(dataset, batch_size, device), workers):
        agree, query_only = agree + agreed, query_only + broke
        tally.add(clean, after, seconds)
        bar.update(size)
    bar.close()
    n = len(dataset)
    return Measurement(n, round(100.0 * agree / max(n, 1), 4), reference.figures, tally.figures(n), query_only)
