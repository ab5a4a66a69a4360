# `make run` and `make test` install what they need first (scripts/install.sh), then run.
PYTHON ?= python3
STAMP := .make/installed

.PHONY: install run test
install: $(STAMP)

$(STAMP): setup.py constraints.txt scripts/install.sh
	PYTHON=$(PYTHON) bash scripts/install.sh
	@mkdir -p $(dir $@) && touch $@

# The main job on the embedded default (Fashion-MNIST): the shipped robust teacher, full test set.
run: install
	rnascl-deploy teacher eval builtin:teacher-fashion-mnist/model.safetensors --recipe recipes/fashion-mnist.yaml

test: install
	$(PYTHON) -m pytest
