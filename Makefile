# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
# TORCH pins the torch build installed first; the default is the local CPU wheel, so that the
# package's own `torch>=2.1` requirement is already met and pip never pulls a CUDA build.
PYTHON ?= python3
VENV   ?= .venv
TORCH  ?= torch==2.13.0
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.setseq-installed
DEMO_OUT ?= demo-out

.PHONY: test demo docs install clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m ruff check .
	$(BIN)/python -m ruff format --check .
	$(BIN)/python -m pytest -q
	$(BIN)/python -m mkdocs build --strict --quiet

# The guide (docs/, mkdocs.yml) as a static site in build/site; strict: a broken link or page fails.
docs: $(STAMP)
	$(BIN)/python -m mkdocs build --strict

demo: $(STAMP)
	$(BIN)/setseq demo --out $(DEMO_OUT)

clean:
	rm -rf $(VENV) $(DEMO_OUT) build src/*.egg-info
