# rnascl-deploy image for CI pipelines (entrypoint: rnascl-deploy). Build it with scripts/build-image.sh
# (`make image`), which passes the host's pip configuration and CA bundle as build secrets and makes the base from
# Debian's packages where no registry answers. By hand, with Docker/BuildKit:
#   CPU:  docker build -t rnascl-deploy:cpu --build-arg VARIANT=cpu \
#           --secret id=pipconf,src=pip.conf --secret id=cacert,src=/etc/ssl/certs/ca-certificates.crt .
#   GPU:  docker build -t rnascl-deploy:gpu --build-arg VARIANT=gpu --build-arg CUDA=13.0 \
#           --build-arg TENSORRT=11.4.0.106 .
# Secrets: a pip.conf in pip's ini format, a PEM bundle; neither is written into a layer. The CA bundle is optional,
# and so is the pip.conf for the GPU variant. The CPU variant needs a pip.conf naming a source of torch==2.13.0+cpu,
# which PyPI does not have (extra-index-url = https://download.pytorch.org/whl/cpu, or find-links to a wheelhouse the
# build can reach): without one, pip finds no such torch and the build fails (docs/ci.md).
# The base is plain Debian bookworm (Python 3.11 from Debian); python:3.11-slim-bookworm works as BASE too.
# The GPU variant's CUDA 13 runtime comes from the NVIDIA wheels that torch 2.13.0 and onnxruntime-gpu 1.31.1
# depend on (no vendor base image); running it needs an NVIDIA driver R580 or newer on the host and the GPU passed
# in: `docker run --gpus all` (NVIDIA Container Toolkit) or `podman run --device nvidia.com/gpu=all` (CDI). Without
# it the container sees no GPU; `python scripts/gpu-smoke.py` in the image says plainly which (docs/gpu.md).
ARG BASE=debian:bookworm-slim
# cpu: torch 2.13.0+cpu and onnxruntime. gpu: torch 2.13.0 (CUDA 13) and onnxruntime-gpu, plus TensorRT from
# NVIDIA's index unless TENSORRT=none. Both pinned by constraints.txt.
ARG VARIANT=cpu

# One base per variant; the GPU one carries what the NVIDIA container runtime reads to expose the GPUs and the
# driver's compute and utility (nvidia-smi) libraries. The CPU image sets neither.
FROM ${BASE} AS base-cpu
FROM ${BASE} AS base-gpu
ENV NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
# hadolint ignore=DL3006
FROM base-${VARIANT}
ARG VARIANT
# What the labels say; the build-time check below fails when the installed stack disagrees.
ARG PYTHON=3.11
ARG CUDA=none
ARG TENSORRT=none
# TensorRT's PyPI packages are stubs that download the libraries from this index at install time.
ARG TENSORRT_INDEX=https://pypi.nvidia.com

LABEL org.opencontainers.image.title="rnascl-deploy" \
      org.opencontainers.image.description="RNAS-CL search, robust retraining, export and verification on the engine" \
      io.rnascl-deploy.variant="${VARIANT}" \
      io.rnascl-deploy.python="${PYTHON}" \
      io.rnascl-deploy.cuda="${CUDA}" \
      io.rnascl-deploy.tensorrt="${TENSORRT}"

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    MPLBACKEND=Agg

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# Python from Debian where the base has none (a python:3.11 base brings its own), and the embedded default data
# set (Fashion-MNIST IDX files in /usr/share/datasets/fashion-mnist). One virtual environment holds every package.
# hadolint ignore=SC2086
RUN if ! command -v "python${PYTHON}" > /dev/null; then PY_DEBS="python3 python3-venv"; fi \
    && apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ${PY_DEBS:-} dataset-fashion-mnist \
    && rm -rf /var/lib/apt/lists/* \
    && "python${PYTHON}" -m venv /opt/venv \
    && useradd --create-home --uid 1000 --shell /bin/bash rnascl

# Dependencies: their own layer, before the source, so a code change reuses it. pyproject.toml with only the
# package's __init__.py (where the version is read) installs nothing but the dependencies of the chosen extra (the
# real package replaces it below). setuptools is the build backend of that offline install (70.1+ builds wheels
# without the `wheel` package; a Debian venv comes with 66).
WORKDIR /opt/rnascl-deploy
COPY pyproject.toml setup.py constraints.txt ./
COPY rnascl_deploy/__init__.py ./rnascl_deploy/
RUN --mount=type=secret,id=pipconf --mount=type=secret,id=cacert \
    if [ -s /run/secrets/pipconf ]; then export PIP_CONFIG_FILE=/run/secrets/pipconf; fi \
    && case "${VARIANT}" in \
         cpu) pip install -c constraints.txt "torch==2.13.0+cpu" setuptools ".[cpu]" ;; \
         gpu) pip install -c constraints.txt "torch==2.13.0" setuptools ".[onnxruntime-gpu]" ;; \
         *) echo "VARIANT must be cpu or gpu, not '${VARIANT}'" >&2; exit 2 ;; \
       esac \
    && pip uninstall -y rnascl-deploy

# TensorRT, the way its users install it: NVIDIA's index as an extra index. Its own layer; skipped with
# TENSORRT=none (the build of this project's machines, where that index is not reachable).
RUN --mount=type=secret,id=pipconf --mount=type=secret,id=cacert \
    if [ -s /run/secrets/pipconf ]; then export PIP_CONFIG_FILE=/run/secrets/pipconf; fi \
    && if [ "${VARIANT}" != gpu ] || [ "${TENSORRT}" = none ]; then \
         echo "TensorRT: NOT INSTALLED (VARIANT=${VARIANT}, TENSORRT=${TENSORRT}): tensorrt-* export formats will exit 2"; \
       else \
         pip install --extra-index-url "${TENSORRT_INDEX}" -c constraints.txt "tensorrt-cu13==${TENSORRT}"; \
       fi

# The package itself: no network, no dependency resolution (a code-only change rebuilds this layer only).
COPY README.md ./
COPY rnascl_deploy ./rnascl_deploy
COPY recipes ./recipes
COPY scripts/check-image.py scripts/gpu-smoke.py ./scripts/
RUN pip install --no-deps --no-build-isolation . \
    && rm -rf build rnascl_deploy.egg-info \
    && python scripts/check-image.py --variant "${VARIANT}" --python "${PYTHON}" --cuda "${CUDA}" \
         --tensorrt "${TENSORRT}" \
    && install -d -o rnascl -g rnascl /work

USER 1000:1000
WORKDIR /work
ENTRYPOINT ["rnascl-deploy"]
CMD ["--help"]
