"""Build-time check of the rnascl-deploy image (run by the Dockerfile's last RUN; exit 1 fails the build).

Imports what the pipeline imports (torch, onnxruntime, fvcore, the CLI; tensorrt where the image has it), prints
their versions, and checks them against the image's labels (``--python``, ``--cuda``, ``--tensorrt``: the build
arguments the labels are written from). A CPU image must hold the CPU torch, a GPU image the CUDA torch, and never
both ``onnxruntime`` and ``onnxruntime-gpu`` (they write the same module).
"""
import argparse
import importlib.metadata as md
import platform
import subprocess
import sys


def installed(dist):
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", choices=["cpu", "gpu"], required=True)
    parser.add_argument("--python", required=True, help="expected major.minor, e.g. 3.11")
    parser.add_argument("--cuda", required=True, help="expected torch.version.cuda prefix, or 'none'")
    parser.add_argument("--tensorrt", required=True, help="expected tensorrt version, or 'none'")
    args = parser.parse_args()

    import fvcore  # noqa: F401  (imported for the check; it emits jit deprecation warnings on torch 2.13)
    import onnxruntime
    import torch

    errors = []
    print(f"check-image: python {platform.python_version()}, torch {torch.__version__} (CUDA {torch.version.cuda}), "
          f"onnxruntime {onnxruntime.__version__} {onnxruntime.get_available_providers()}, "
          f"fvcore {installed('fvcore')}, onnx {installed('onnx')}")
    if not platform.python_version().startswith(args.python + "."):
        errors.append(f"python is {platform.python_version()}, the label says {args.python}")
    cuda = torch.version.cuda or "none"
    if not (cuda == args.cuda or cuda.startswith(args.cuda + ".")):
        errors.append(f"torch is built for CUDA {cuda}, the label says {args.cuda} (torch {torch.__version__})")
    cpu_ort, gpu_ort = installed("onnxruntime"), installed("onnxruntime-gpu")
    if cpu_ort and gpu_ort:
        errors.append(f"both onnxruntime {cpu_ort} and onnxruntime-gpu {gpu_ort} are installed")
    if args.variant == "gpu" and (not gpu_ort or "CUDAExecutionProvider" not in onnxruntime.get_available_providers()):
        errors.append("the GPU image needs onnxruntime-gpu with its CUDAExecutionProvider")
    if args.variant == "cpu" and not cpu_ort:
        errors.append("the CPU image needs onnxruntime")

    if args.tensorrt == "none":
        print("check-image: tensorrt not installed (label tensorrt=none)")
    else:
        try:
            import tensorrt
        except ImportError as exc:
            errors.append(f"tensorrt {args.tensorrt} does not import: {exc}")
        else:
            print(f"check-image: tensorrt {tensorrt.__version__}")
            if tensorrt.__version__ != args.tensorrt:
                errors.append(f"tensorrt is {tensorrt.__version__}, the label says {args.tensorrt}")

    cli = subprocess.run(["rnascl-deploy", "--help"], capture_output=True, text=True)
    if cli.returncode != 0:
        errors.append(f"rnascl-deploy --help exited {cli.returncode}: {cli.stderr[-500:]}")
    for error in errors:
        print(f"check-image: FAILED: {error}", file=sys.stderr)
    if not errors:
        print(f"check-image: OK ({args.variant} image)")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
