#!/usr/bin/env bash
# Install everything rnascl-deploy needs on a fresh machine: the Debian Fashion-MNIST package (the embedded default
# data set) where apt is available, and the Python package with pinned dependencies (CPU torch) into the virtual
# environment $VENV (default .venv), made with $PYTHON. A venv, because a system Python may refuse `pip install`
# (PEP 668); Debian ships venv support apart (python3-venv), installed here when it is missing and apt is at hand.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
apt_install() {
  echo "install: apt-get install $*"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@"
}

if [ -f /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz ]; then
  echo "install: Fashion-MNIST present (/usr/share/datasets/fashion-mnist)"
elif command -v apt-get >/dev/null 2>&1; then
  apt_install dataset-fashion-mnist
else
  echo "install: apt-get is not available here, so the Debian package dataset-fashion-mnist cannot be installed." >&2
  echo "install: put the four Fashion-MNIST IDX files (train/t10k images/labels, .gz or raw) in" >&2
  echo "install: ~/.cache/rnascl-deploy/fashion-mnist or set data.root in your recipe." >&2
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

echo "install: $VENV/bin/pip install -c constraints.txt -e .[dev]"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
