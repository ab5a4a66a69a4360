# `make run` and `make test` install what they need first (scripts/install.sh), then run.
PYTHON ?= python3
STAMP := .make/installed

.PHONY: install run test
install: $(STAMP)

$(STAMP): setup.py constraints.txt scripts/install.sh
	PYTHON=$(PYTHON) bash scripts/install.sh
	@mkdir -p $(dir $@) && touch $@

# The main job on the embedded default (Fashion-MNIST, 600K MACs): search, retrain, export, verify, bench, report.
# Running it again skips every finished stage; the exit code is the verification verdict.
run: install
	rnascl-deploy run --recipe recipes/fashion-mnist.yaml --budget 600K --out runs/fashion-mnist-600k

test: install
	$(PYTHON) -m pytest
