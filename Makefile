# lvd: `make demo` sets everything up and runs the demo chain; `make test` runs the test suite.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# CPU machines: the pinned CPU wheel. On a GPU machine: make TORCH_SPEC='torch' (or your CUDA build).
TORCH_SPEC ?= torch==2.13.0
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=
# The suite is CPU-bound (about 1,700 CPU-seconds); two xdist workers keep both cores of a CI
# machine busy. Whole files go to one worker (module fixtures are built once). PYTEST_WORKERS=0: one process.
PYTEST_WORKERS ?= 2

.PHONY: venv demo test bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q '$(TORCH_SPEC)'
	$(BIN)/python -m pip install -q -e '.[dev]'
	# The April-2023 official DINOv2 code, used only by the tests as the reference model (its pins are stale).
	$(BIN)/python -m pip install -q --no-deps 'dinov2==0.0.1.dev2'
	touch $(STAMP)

venv: $(STAMP)

# After the demo: README's demo numbers against what it printed (a warning line names each difference).
demo: venv
	PATH=$(CURDIR)/$(BIN):$$PATH bash stages/demo.sh
	@$(BIN)/python stages/demo_readme.py --check data/demo || true

test: venv
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

bench: venv
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python benchmarks/ingest.py

clean:
	rm -rf $(VENV) data/demo build *.egg-info
