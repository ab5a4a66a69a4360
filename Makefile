# `make run` and `make test` install what they need first (scripts/install.sh), into a virtual environment in
# $(VENV): a system Python that refuses `pip install` (PEP 668, "externally managed": Debian 12, Ubuntu 24.04) is used
# only to create it. `. .venv/bin/activate` puts rnascl-deploy on your PATH afterwards.
PYTHON ?= python3
VENV ?= .venv
STAMP := $(VENV)/.installed

.PHONY: install run test lint image
# The stamp means "installed into $(VENV)": where the environment cannot import the package (a fresh machine, or an
# environment made elsewhere), the stamp goes and the install runs again. The import runs from / so that the source
# folder itself cannot pass for an install (on every Python: PYTHONSAFEPATH needs 3.11).
install:
	@(cd / && $(abspath $(VENV))/bin/python -c "import rnascl_deploy") 2>/dev/null || rm -f $(STAMP)
	@$(MAKE) --no-print-directory --silent $(STAMP)

$(STAMP): pyproject.toml setup.py constraints.txt scripts/install.sh
	PYTHON=$(PYTHON) VENV=$(VENV) bash scripts/install.sh
	@touch $@

# The main job on the embedded default (Fashion-MNIST, 600K MACs): search, retrain, evaluate, export, verify, bench,
# report.
# Running it again skips every finished stage; the exit code is the verification verdict.
run: install
	$(VENV)/bin/rnascl-deploy run --recipe recipes/fashion-mnist.yaml --budget 600K --out runs/fashion-mnist-600k

test: install
	$(VENV)/bin/python -m pytest

# What CI runs before the tests (.ci/run), configured in pyproject.toml; .pre-commit-config.yaml runs the same.
lint: install
	$(VENV)/bin/ruff check
	$(VENV)/bin/mypy

# The CI image (Dockerfile) and its smoke job; never part of `make test` (it downloads gigabytes). docs/ci.md.
# `make image VARIANT=gpu` builds the GPU image. Missing tools (buildah; debootstrap where the base must be made) are
# all named before any work (exit 2); `RNASCL_INSTALL_PREREQS=1 make image` installs them with apt-get first (root).
VARIANT ?= cpu
image:
	bash scripts/build-image.sh --variant $(VARIANT)
