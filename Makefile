# Two commands do everything on a fresh machine with Python 3.11+:
#   make demo   - create .venv, install pinned packages, run `billing-recon demo`
#   make test   - create .venv, install pinned packages, run lint, types and the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test lint pytest install clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/billing-recon demo

lint: $(STAMP)
	$(BIN)/ruff check src flows tasks blocks billing_recon_cli tests bench setup.py
	mkdir -p .typecheck  # flows/ tasks/ blocks/ under their installed names, for mypy
	for pkg in flows tasks blocks; do ln -sfn ../$$pkg .typecheck/billing_recon_$$pkg; done
	$(BIN)/mypy -p billing_recon -p billing_recon_cli -p billing_recon_flows \
		-p billing_recon_tasks -p billing_recon_blocks

pytest: $(STAMP)
	$(BIN)/pytest -n 2 --dist loadfile  # two workers; a module stays on one

test: lint pytest

clean:
	-[ -x $(BIN)/billing-recon ] && $(BIN)/billing-recon server stop  # the demo's local server
	rm -rf $(VENV) .typecheck demo billing_recon.db* billing_recon_gateway.db*
