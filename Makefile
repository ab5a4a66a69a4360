# `make run` and `make test` install what they need first (scripts/install.sh), then run.
PYTHON ?= python3
STAMP := .make/installed

.PHONY: install run test image
# The stamp means "installed into this $(PYTHON)": where that interpreter cannot import the package (a fresh machine
# or environment beside an old checkout), the stamp goes and the install runs again. PYTHONSAFEPATH keeps the
# source folder itself from passing for an install.
install:
	@PYTHONSAFEPATH=1 $(PYTHON) -c "import rnascl_deploy" 2>/dev/null || rm -f $(STAMP)
	@$(MAKE) --no-print-directory --silent $(STAMP)

$(STAMP): setup.py constraints.txt scripts/install.sh
	PYTHON=$(PYTHON) bash scripts/install.sh
	@mkdir -p $(dir $@) && touch $@

# The main job on the embedded default (Fashion-MNIST, 600K MACs): search, retrain, export, verify, bench, report.
# Running it again skips every finished stage; the exit code is the verification verdict.
run: install
	rnascl-deploy run --recipe recipes/fashion-mnist.yaml --budget 600K --out runs/fashion-mnist-600k

test: install
	$(PYTHON) -m pytest

# The CI image (Dockerfile) and its smoke job; never part of `make test` (it downloads gigabytes). docs/ci.md.
# `make image VARIANT=gpu` builds the GPU image.
VARIANT ?= cpu
image:
	bash scripts/build-image.sh --variant $(VARIANT)
