# Two commands do all the set-up on a fresh machine: `make demo` and `make test`; `make ui` starts the web UI.
# TORCH pins the torch build installed first; the default is the local CPU wheel, so that the
# package's own `torch>=2.1` requirement is already met and pip never pulls a CUDA build.
PYTHON ?= python3
VENV   ?= .venv
TORCH  ?= torch==2.13.0
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.setseq-installed
TORCH_STAMP := $(VENV)/.torch-installed
DEMO_OUT ?= demo-out
WORKSPACE ?= setseq-workspace
UI_FLAGS ?=
UI_STAMP := $(VENV)/.setseq-ui-installed

.PHONY: test demo docs ui install clean

install: $(STAMP)

$(TORCH_STAMP):
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	touch $(TORCH_STAMP)

$(STAMP): pyproject.toml $(TORCH_STAMP)
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

# the web UI on http://127.0.0.1:7860, its files in $(WORKSPACE)/ (the example clips are copied in);
# UI_FLAGS="--port 7870 --models ~/models" passes flags on
ui: $(UI_STAMP)
	$(BIN)/setseq ui --workspace $(WORKSPACE) $(UI_FLAGS)

$(UI_STAMP): pyproject.toml $(TORCH_STAMP)
	$(BIN)/python -m pip install -q -e ".[ui]"
	touch $(UI_STAMP)

clean:
	rm -rf $(VENV) $(DEMO_OUT) build src/*.egg-info
