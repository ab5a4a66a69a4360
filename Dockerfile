# rnascl-deploy image for CI pipelines (entrypoint: rnascl-deploy).
#   GPU, TensorRT-capable (default):
#     docker build -t rnascl-deploy:gpu .
#   CPU only:
#     docker build -t rnascl-deploy:cpu --build-arg BASE=python:3.11-slim-bookworm --build-arg VARIANT=cpu .
# UNVERIFIED: Docker cannot run on the project's machines; this file is linted (hadolint) in the tests only.
ARG BASE=nvcr.io/nvidia/tensorrt:24.12-py3
FROM ${BASE}

ARG VARIANT=gpu
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# The embedded default data set (Fashion-MNIST IDX files under /usr/share/datasets/fashion-mnist).
RUN apt-get update \
    && apt-get install -y --no-install-recommends dataset-fashion-mnist \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/rnascl-deploy
COPY setup.py constraints.txt README.md ./
COPY rnascl_deploy ./rnascl_deploy
COPY recipes ./recipes

# GPU: torch 2.13.0 from PyPI (CUDA build) and TensorRT from the base image or PyPI.
# CPU: torch 2.13.0+cpu from the PyTorch CPU index; constraints.txt pins every other package.
RUN if [ "${VARIANT}" = "cpu" ]; then \
        pip install --extra-index-url https://download.pytorch.org/whl/cpu -c constraints.txt . ; \
    else \
        pip install -c constraints.txt ".[tensorrt]" ; \
    fi \
    && rnascl-deploy --help > /dev/null

ENTRYPOINT ["rnascl-deploy"]
CMD ["--help"]
