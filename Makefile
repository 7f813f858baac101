# Two commands for a newcomer on a fresh machine:
#   make run   — set up .venv from nothing, run the whole pipeline on the built-in demo data, then three simulated days
#                of production: serving, drift, delayed labels, monitoring, re-training and promotion through the gates
#   make test  — set up if needed, then every test (nbdev sync, notebook tests, pytest, docs processing)
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: setup run test test-nbs test-py sync-check export docs readme bench bench-serving clean-workspace

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@# the kernel's display name as nbdev-clean writes it into notebooks: JupyterLab then opens them unmodified
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 --display-name python3 >/dev/null
	@rm -f $(VENV)/.installed-*
	@touch $@

run: setup
	$(BIN)/mlops-nb run --config pipeline.yaml
	$(BIN)/mlops-nb simulate --config pipeline.yaml --days 3 --scenario concept_drift --drift-day 2 --rows-per-day 1000 --label-delay 0

test: setup sync-check docs test-nbs test-py

sync-check: setup
	$(BIN)/python tools/check_sync.py

export: setup  # after editing notebooks: library code, clean notebooks, the packaged stage notebooks, the README
	$(BIN)/nbdev-export
	$(BIN)/python tools/nb_metadata.py
	$(BIN)/nbdev-clean
	$(BIN)/python tools/sync_stages.py
	$(BIN)/python tools/readme.py

test-nbs: setup
	$(BIN)/nbdev-test --n-workers 2 --timing

test-py: setup
	$(BIN)/pytest tests -q -n 2 --dist loadfile --durations=15

docs: setup  # nbdev's docs processing (nbdev-proc-nbs) without its Quarto download; nbdev-docs where Quarto exists
	$(BIN)/python tools/proc_docs.py

readme: setup
	$(BIN)/python tools/readme.py

bench: setup
	$(BIN)/python bench/run_tuning.py

bench-serving: setup  # mlops-nb serve vs mlflow models serve, and reading the prediction log -> bench/serving.md
	$(BIN)/python bench/serving.py
	$(BIN)/python bench/predlog_read.py

clean-workspace:
	rm -rf .mlops
