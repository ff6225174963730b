# Every target bootstraps .venv itself, so a fresh clone needs only python3.11, pip and make.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

## make run: OpenBao dev server + sandbox providers + sidecar (config/dev.yaml), demo credentials, curl examples
run: $(STAMP)
	$(BIN)/sidecar dev --config config/dev.yaml

## make test: the whole suite against a real OpenBao started by the suite
test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check sidecar tests bench
	$(BIN)/mypy

## make bench: direct vs minimal forwarder vs sidecar, ratios printed (human + JSON)
bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .venv-image .pytest_cache .mypy_cache .ruff_cache build *.egg-info
