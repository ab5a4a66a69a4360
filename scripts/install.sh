#!/usr/bin/env bash
# Install everything rnascl-deploy needs on a fresh machine: the Debian Fashion-MNIST package (the embedded
# default data set) where apt is available, and the Python package with pinned dependencies (CPU torch).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

if [ -f /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz ]; then
  echo "install: Fashion-MNIST present (/usr/share/datasets/fashion-mnist)"
elif command -v apt-get >/dev/null 2>&1; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "install: apt-get install dataset-fashion-mnist"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq dataset-fashion-mnist
else
  echo "install: apt-get is not available here, so the Debian package dataset-fashion-mnist cannot be installed." >&2
  echo "install: put the four Fashion-MNIST IDX files (train/t10k images/labels, .gz or raw) in" >&2
  echo "install: ~/.cache/rnascl-deploy/fashion-mnist or set data.root in your recipe." >&2
fi

echo "install: pip install -c constraints.txt -e .[dev]"
"$PYTHON" -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
