"""Did this environment compute on a GPU? Said plainly: the GPU image's smoke check (docs/gpu.md).

    docker run --rm --gpus all --entrypoint python rnascl-deploy:gpu scripts/gpu-smoke.py
    podman run --rm --device nvidia.com/gpu=all --entrypoint python rnascl-deploy:gpu scripts/gpu-smoke.py   # CDI

Three checks, each on the GPU alone (nothing may fall back to the CPU): torch is a CUDA build and sees a GPU; a
training step of a small CNN (forward, backward, Adam) runs there, its output, gradients and optimiser state on the
GPU, with GPU memory allocated for it; onnxruntime's CUDA execution provider runs a convolution graph with the CPU
provider's fallback disabled. The last line says ``GPU USED: <gpu>, ...`` (exit 0) or ``NO GPU: <why>`` (exit 1;
exit 0 with ``--allow-cpu``, for the CPU image or a run without a GPU, where the line still says NO GPU). Run
without ``--gpus all`` (or a CDI device) the container sees no GPU, and this says so instead of passing on the CPU.
"""
from __future__ import annotations

import argparse
import sys


def torch_step() -> str:
    """A training step on the GPU; returns what it ran on, raises AssertionError saying what did not."""
    import torch

    assert torch.version.cuda, f"torch {torch.__version__} is a CPU build"
    assert torch.cuda.is_available(), (f"torch {torch.__version__} (CUDA {torch.version.cuda}) sees no GPU: run the "
                                       "container with --gpus all (Docker) or --device nvidia.com/gpu=all (CDI), on a "
                                       "host with the NVIDIA driver (R580 or newer for CUDA 13)")
    device = torch.device("cuda", 0)
    torch.cuda.reset_peak_memory_stats(device)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                                torch.nn.Flatten(), torch.nn.Linear(16, 10)).to(device)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    x = torch.rand(64, 1, 28, 28, device=device)
    y = torch.randint(0, 10, (64,), device=device)
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    torch.cuda.synchronize(device)
    params = list(model.parameters())
    assert loss.is_cuda and all(p.is_cuda and p.grad is not None and p.grad.is_cuda for p in params), \
        "a tensor of the training step is not on the GPU"
    assert all(s["exp_avg"].is_cuda for s in opt.state.values()), "Adam's state is not on the GPU"
    peak = torch.cuda.max_memory_allocated(device)
    assert peak > 0, "no GPU memory was allocated by the training step"
    props = torch.cuda.get_device_properties(device)
    return (f"{props.name} (compute capability {props.major}.{props.minor}, {props.total_memory / 2 ** 30:.0f} GiB), "
            f"torch {torch.__version__} CUDA {torch.version.cuda}: a training step ran there ({peak / 2 ** 20:.1f} "
            "MiB allocated)")


def onnxruntime_conv() -> str:
    """A convolution graph on onnxruntime's CUDA provider, with no CPU fallback."""
    import numpy as np
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    assert "CUDAExecutionProvider" in ort.get_available_providers(), \
        f"onnxruntime {ort.__version__} has no CUDA provider ({ort.get_available_providers()}): install onnxruntime-gpu"
    weight = helper.make_tensor("w", TensorProto.FLOAT, [8, 1, 3, 3], np.random.rand(72).astype(np.float32).tolist())
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])], "smoke",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 1, 28, 28])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 8, 28, 28])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    options = ort.SessionOptions()
    options.add_session_config_entry("session.disable_cpu_ep_fallback", "1")  # every node on CUDA, or an error
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CUDAExecutionProvider"])
    assert session.get_providers()[0] == "CUDAExecutionProvider", \
        f"onnxruntime fell back to {session.get_providers()}: the CUDA provider's libraries did not load (see above)"
    out = session.run(None, {"x": np.random.rand(4, 1, 28, 28).astype(np.float32)})[0]
    assert out.shape == (4, 8, 28, 28)
    return f"onnxruntime {ort.__version__}: a convolution ran on CUDAExecutionProvider alone"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--allow-cpu", action="store_true", help="exit 0 without a GPU (still saying NO GPU)")
    args = parser.parse_args()
    try:
        said = [torch_step(), onnxruntime_conv()]
    except AssertionError as exc:
        print(f"NO GPU: {exc}")
        return 0 if args.allow_cpu else 1
    except Exception as exc:  # a CUDA or onnxruntime error: the GPU path is broken, say how
        print(f"NO GPU: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
        return 0 if args.allow_cpu else 1
    print("GPU USED: " + "; ".join(said))
    return 0


if __name__ == "__main__":
    sys.exit(main())
