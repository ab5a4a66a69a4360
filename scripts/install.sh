#!/usr/bin/env bash
# Install everything rnascl-deploy needs on a fresh machine: the Debian Fashion-MNIST package (the embedded default
# data set) where the files are not already there and apt is available, and the Python package with pinned
# dependencies (CPU torch) into the virtual environment $VENV (default .venv), made with $PYTHON. A venv, because a
# system Python may refuse `pip install` (PEP 668); Debian ships venv support apart (python3-venv), installed here when
# it is missing and apt is at hand.
#
# torch: PyPI's torch 2.13.0 is the CUDA 13 build (several GB); the CPU build, 2.13.0+cpu, is on PyTorch's CPU index
# or in a wheelhouse. It is taken from pip's configured sources first, else from https://download.pytorch.org/whl/cpu;
# where neither has it, the install says so and goes on with PyPI's CUDA build. RNASCL_TORCH=any skips all that and
# takes whichever torch 2.13.0 pip's sources give (a CUDA build for a GPU machine, or the one already installed).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
RNASCL_TORCH=${RNASCL_TORCH:-cpu}
TORCH_CPU="torch==2.13.0+cpu"  # the pin of constraints.txt, CPU build
TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
apt_install() {
  echo "install: apt-get install $*"
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@"
}
case "$RNASCL_TORCH" in
  cpu|any) ;;
  *) echo "install: RNASCL_TORCH must be cpu (the default) or any, not '$RNASCL_TORCH'" >&2; exit 2 ;;
esac

# Fashion-MNIST: where the data loader looks (rnascl_deploy/data/fashion_mnist.py), each folder holding the four IDX
# files, gzipped or raw.
has_fashion_mnist() {
  local name
  for name in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
    [ -f "$1/$name.gz" ] || [ -f "$1/$name" ] || return 1
  done
}
fashion_mnist=""
for dir in /usr/share/datasets/fashion-mnist "$HOME/.cache/rnascl-deploy/fashion-mnist" data/fashion-mnist; do
  if has_fashion_mnist "$dir"; then fashion_mnist=$dir; break; fi
done
if [ -n "$fashion_mnist" ]; then
  echo "install: Fashion-MNIST present ($fashion_mnist)"
elif ! command -v apt-get >/dev/null 2>&1 || ! apt_install dataset-fashion-mnist; then
  echo "install: WARNING: the Debian package dataset-fashion-mnist could not be installed (no apt-get, no sudo or no" >&2
  echo "install: mirror); the rest of the install goes on. For the default recipe, put the four Fashion-MNIST IDX" >&2
  echo "install: files (train/t10k images/labels, .gz or raw) in ~/.cache/rnascl-deploy/fashion-mnist, or set" >&2
  echo "install: data.root in your recipe (--set data.root=DIR)." >&2
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "install: $PYTHON -m venv $VENV"
  if ! "$PYTHON" -m venv "$VENV" 2>/dev/null; then
    rm -rf "$VENV"
    if command -v apt-get >/dev/null 2>&1; then
      apt_install python3-venv
      "$PYTHON" -m venv "$VENV"
    else
      echo "install: $PYTHON cannot make a virtual environment (its venv module or ensurepip is missing); install" >&2
      echo "install: your distribution's venv package, or give another interpreter: make PYTHON=python3.11" >&2
      exit 1
    fi
  fi
fi
pip_install() {
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$@"
}

# The CPU torch alone first (--no-deps: only torch is looked up, so an unreachable index costs one lookup, not one per
# package); the install below keeps it, since the pin torch==2.13.0 admits 2.13.0+cpu.
if [ "$RNASCL_TORCH" = cpu ]; then
  echo "install: $TORCH_CPU from pip's configured sources"
  if ! pip_install --no-deps "$TORCH_CPU"; then
    echo "install: $TORCH_CPU is not in pip's configured sources; trying PyTorch's CPU index, $TORCH_CPU_INDEX"
    if ! pip_install --no-deps --retries 1 --timeout 20 --extra-index-url "$TORCH_CPU_INDEX" "$TORCH_CPU"; then
      echo "install: WARNING: $TORCH_CPU was found neither in pip's configured sources nor at $TORCH_CPU_INDEX" >&2
      echo "install: (unreachable from here?). Installing PyPI's torch 2.13.0 instead: the CUDA 13 build, several GB" >&2
      echo "install: with NVIDIA's libraries; it runs on the CPU too. For the CPU build, name a source that has it in" >&2
      echo "install: pip's configuration (extra-index-url = $TORCH_CPU_INDEX, or find-links = a wheelhouse)" >&2
      echo "install: and run scripts/install.sh again; RNASCL_TORCH=any takes the CUDA build without this warning." >&2
    fi
  fi
fi

echo "install: $VENV/bin/pip install -c constraints.txt -e .[dev]"
pip_install -c constraints.txt -e '.[dev]'
