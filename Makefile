# mto: set-up, demo, tests. `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch is installed first, so that pip never swaps in another build later:
# - a build available locally (pip's find-links, as on our CI machines) is used as is;
# - else, on a machine without nvidia-smi, the CPU build from PyTorch's CPU index (no CUDA wheels);
# - else (a GPU machine) PyPI's default CUDA build. Pick another with e.g.
#   make install TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
TORCH_SPEC ?= torch==2.13.0
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
STAMP := $(VENV)/.install-stamp

.PHONY: help install demo test test-extra test-all lint clean bench mini-mto

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --no-index --no-deps $(TORCH_SPEC) 2>/dev/null \
	  || command -v nvidia-smi >/dev/null \
	  || $(BIN)/python -m pip install -q $(TORCH_SPEC) --index-url $(TORCH_CPU_INDEX)
	$(BIN)/python -m pip install -q $(TORCH_SPEC)
	$(BIN)/python -m pip install -q -e ".[dev]"
	@touch $(STAMP)

install: $(STAMP) ## create .venv and install mto with its dependencies (idempotent)

demo: install ## train then evaluate on the embedded default (tiny T5, synthetic data), print metrics
	$(BIN)/mto train

test: install ## run the test suite (what CI runs)
	$(BIN)/python -m pytest -q -m "not slow and not slurm"

test-extra: install ## the slow tests and the SLURM ones (a real local SLURM, root only; CI runs them too)
	$(BIN)/python -m pytest -q -m "slow or slurm"

test-all: install ## every test, slow and SLURM ones included
	$(BIN)/python -m pytest -q

bench: install ## speed vs a plain Seq2SeqTrainer script, quick (3 interleaved repeats, 9 min quiet): outputs/bench/<date>/report.md
	$(BIN)/python scripts/bench_train.py --quick

mini-mto: install ## the miniature MTO experiment (about 35 min quiet): outputs/mini_mto/<date>_<time>/report/
	bash scripts/mini_mto.sh

lint: install ## ruff over the code and tests
	$(BIN)/ruff check mto tests scripts

clean: ## remove the venv, caches and run outputs (outputs/.gitkeep stays)
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
	find outputs -mindepth 1 ! -name .gitkeep -exec rm -rf {} +
