"""The GPU check's probe (scripts/gpu-check.sh): a few real retraining steps watched for host synchronisations.

    python scripts/gpu-check-probe.py RUN --device cuda --precision fp16 --out probe.json

RUN is a copy of a searched run directory (its arch.json and recipe.yaml; retraining writes under RUN/retrain). The
probe runs retraining as ``rnascl-deploy retrain`` does (``retrain.run_retrain``, one epoch on ``--train-limit``
images) and watches the epoch loop's steps: after ``--warm`` steps, ``--steps`` steps (each with the fetch of its
batch) run under ``torch.cuda.set_sync_debug_mode("warn")``, which reports every operation that makes the host wait
for the GPU, with the Python line that called it; then one more step runs under ``"error"``, where the first such
operation raises with its whole Python stack, and the probe stops there (retraining is not finished: the copy is
scratch). Written to ``--out`` as JSON: the synchronisations per probed step, where they came from, the first one's
stack, the student's memory format, peak GPU memory, the step's seconds, and the backends' settings. On the CPU
there is nothing to synchronise with: the same steps run, uncounted (a dry run of the probe itself).
Exit 0 when the probe ran (whatever it found), 1 when retraining failed before the probe's steps.
"""
from __future__ import annotations

import argparse
import collections
import json
import logging
import sys
import time
import traceback
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
SYNC = "synchroniz"  # in the message of PyTorch's sync debug warning and error


class Stop(Exception):
    """Raised by the watched step once the probe has what it needs."""


def backends() -> dict:
    def get(path):
        obj = torch.backends
        for name in path.split("."):
            obj = getattr(obj, name, None)
        return obj

    return {"cudnn.benchmark": torch.backends.cudnn.benchmark,
            "cudnn.deterministic": torch.backends.cudnn.deterministic,
            "cudnn.conv.fp32_precision": get("cudnn.conv.fp32_precision"),
            "cuda.matmul.fp32_precision": get("cuda.matmul.fp32_precision"),
            "deterministic_algorithms": torch.are_deterministic_algorithms_enabled()}


def relative(site: str) -> str:
    """'path:line' with the path relative to the repository when it lies inside it."""
    path, line = site.rsplit(":", 1)
    return f"{Path(path).relative_to(ROOT)}:{line}" if Path(path).is_relative_to(ROOT) else site


def where(frames) -> list:
    """The frames of a stack inside this repository, innermost last, as 'path:line in function'."""
    return [f"{Path(f.filename).resolve().relative_to(ROOT)}:{f.lineno} in {f.name}" for f in frames
            if Path(f.filename).resolve().is_relative_to(ROOT)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--train-limit", type=int, default=2048)
    parser.add_argument("--warm", type=int, default=3, help="steps before the watched ones (first-step work)")
    parser.add_argument("--steps", type=int, default=5, help="steps watched in warn mode")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from rnascl_deploy.recipe import load_recipe
    from rnascl_deploy.retrain import run_retrain
    from rnascl_deploy.train import TrainLoop

    recipe = load_recipe(str(args.run / "recipe.yaml"), {
        "runtime.device": args.device, "runtime.precision": args.precision, "retrain.limit": args.train_limit,
        "retrain.train.epochs": 1, "retrain.eval_limit": 100})
    cuda = args.device.startswith("cuda")
    result: dict = {"device": args.device, "precision": args.precision, "warm": args.warm, "counted": cuda,
                    "syncs_per_step": [], "sync_sites": {}, "first_sync_stack": None, "memory_format": None,
                    "step_seconds": [], "peak_gpu_mib": None, "backends": None, "error": None}
    messages = []

    class Capture(logging.Handler):
        def emit(self, record):
            messages.append(record.getMessage())

    logging.getLogger("rnascl_deploy").addHandler(Capture())
    mode = torch.cuda.set_sync_debug_mode if cuda else (lambda m: None)
    real = TrainLoop.step
    last = args.warm + args.steps  # the step run in error mode
    state = {"n": 0, "t": time.perf_counter()}
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")

            def step(self, epoch, i, batch, gen):
                n = state["n"]
                if n == last:
                    caught.clear()
                    mode("error")  # its batch was fetched in warn mode; the step's first sync raises
                out = real(self, epoch, i, batch, gen)
                mode(0)
                if cuda and args.warm <= n < last:  # this step and the fetch of its batch
                    syncs = [w for w in caught if SYNC in str(w.message)]
                    result["syncs_per_step"].append(len(syncs))
                    for w in syncs:
                        site = f"{Path(w.filename).resolve()}:{w.lineno}"
                        result["sync_sites"][site] = result["sync_sites"].get(site, 0) + 1
                if cuda:
                    torch.cuda.synchronize()
                now = time.perf_counter()
                result["step_seconds"].append(round(now - state["t"], 4))
                state["t"], state["n"] = now, n + 1
                if result["backends"] is None:
                    result["backends"] = backends()
                if n >= last:
                    raise Stop()
                caught.clear()
                if args.warm <= n + 1 <= last:
                    mode("warn")  # from the next batch's fetch on
                return out

            TrainLoop.step = step  # type: ignore[method-assign]
            run_retrain(args.run, recipe, progress=False)
        result["error"] = f"the epoch ended after {state['n']} steps, before the probe's {last + 1}: raise " \
                          "--train-limit"
    except Stop:
        pass
    except RuntimeError as exc:
        if SYNC not in str(exc):
            raise
        result["first_sync_stack"] = where(traceback.extract_tb(exc.__traceback__))
        result["first_sync_error"] = str(exc).splitlines()[0]
    finally:
        mode(0)
        TrainLoop.step = real  # type: ignore[method-assign]
    sites = collections.Counter(result["sync_sites"])
    result["sync_sites"] = {relative(site): count for site, count in sites.most_common()}
    result["memory_format"] = next((m.split(":", 1)[1].split()[0] for m in messages
                                    if m.startswith("memory format of the student")), None)
    if cuda:
        result["peak_gpu_mib"] = round(torch.cuda.max_memory_allocated() / 2 ** 20, 1)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("syncs_per_step", "sync_sites", "first_sync_stack", "memory_format",
                                             "peak_gpu_mib")}, indent=2))
    return 0 if result["error"] is None else 1


if __name__ == "__main__":
    sys.exit(main())
