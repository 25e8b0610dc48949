# The two set-up commands (README): `make repro` and `make test`. Both create .venv first.
VENV ?= .venv
PY := $(VENV)/bin/python
export PATH := $(abspath $(VENV))/bin:$(PATH)
# Offline by default: no model hub, W&B writes to ./wandb and syncs later.
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export WANDB_MODE ?= offline
export TF_CPP_MIN_LOG_LEVEL ?= 3
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: setup repro repro-check test mutation params snakemake-dry clean-venv

setup: $(VENV)/.installed

$(VENV)/.installed: requirements/base.txt requirements/nodeps.txt pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q -r requirements/base.txt
	$(PY) -m pip install -q --no-deps -r requirements/nodeps.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $@

repro: setup
	dvc repro

test: setup
	$(PY) -m pytest -q

# every deliberate engine error in tools/mutants.py must fail an engine test; writes tools/mutation_result.{json,md}
mutation: setup
	OMP_NUM_THREADS=1 $(PY) tools/mutation_check.py -j 2

# A fresh clone of HEAD reproduces the committed dvc.lock and metrics (reports/metrics/tolerances.yaml),
# Snakemake on a second fresh clone reproduces DVC's outputs, and a queued experiment re-runs only what
# its parameter reaches: two whole sample-profile runs in temporary folders; and the paper profile rehearsed
# on stand-ins (tests/test_rehearsal.py, about 4 min). CI runs it after `make test`.
repro-check: setup
	$(PY) -m pytest -q --repro-check tests/test_repro_check.py tests/test_rehearsal.py

params: setup
	$(PY) -m ipfacediff.config --write

snakemake-dry: setup
	snakemake -s workflow/Snakefile -n --cores 2

clean-venv:
	rm -rf $(VENV)
