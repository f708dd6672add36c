# lookalike — `make demo` and `make test` work on a fresh machine; both run `make setup` first.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
LOOKALIKE := $(VENV)/bin/lookalike
LOOKALIKE_DATA ?= ../shared/data
DATA ?= $(LOOKALIKE_DATA)/caltech101
OUT ?= demo-out
K ?= 10
STAMP := $(VENV)/.setup-stamp

.PHONY: setup demo test lint bench clean browser-deps serve

setup: $(STAMP)  ## create .venv and install lookalike with all extras + test tools (idempotent)

# The dev extra pins the CPU build torch==2.13.0 (for the torch-vs-ONNX equivalence test). Where no
# local wheel provides it, `make setup TORCH_INDEX=https://download.pytorch.org/whl/cpu` installs it from
# PyTorch's CPU index first; PyPI's Linux torch would pull the multi-GB CUDA build.
TORCH_INDEX ?=
$(STAMP): pyproject.toml
	@$(PY) -m pip --version >/dev/null 2>&1 || $(PYTHON) -m venv --clear $(VENV)  # also repairs a half-made .venv
	$(PY) -m pip install -q --upgrade pip
	$(if $(TORCH_INDEX),$(PY) -m pip install -q 'torch==2.13.0' --index-url $(TORCH_INDEX))
	$(PY) -m pip install -q -e '.[dev]'
	@touch $@

demo: setup  ## index the demo collection, search it, write a result grid
	@if [ ! -d "$(DATA)" ]; then \
	  echo "Demo data not found at $(DATA)."; \
	  echo "Run the demo on any folder of images instead:  make demo DATA=~/Pictures"; \
	  exit 2; fi
	$(LOOKALIKE) index "$(DATA)" --db $(OUT)/index
	@q="$(QUERY)"; if [ -z "$$q" ]; then \
	  if [ -f "$(DATA)/accordion/image_0001.jpg" ]; then q="$(DATA)/accordion/image_0001.jpg"; \
	  else q=$$($(PY) -c 'import sys; from lookalike.images import discover; print(next(iter(discover(sys.argv[1]))))' "$(DATA)"); fi; fi; \
	echo "query: $$q"; \
	$(LOOKALIKE) search "$$q" --db $(OUT)/index -k $(K) --grid $(OUT)/grid.png

test: setup browser-deps  ## run the whole test suite
	$(PY) -m pytest

# Debian's Chromium for the browser test (Playwright drives it; no browser downloads).
browser-deps:
	@if [ ! -x /usr/bin/chromium ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian chromium for the browser test"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	      || echo "warning: could not install chromium; the browser test will be skipped"; \
	  else echo "note: /usr/bin/chromium missing (sudo apt-get install chromium); the browser test will be skipped"; fi; \
	fi

serve: setup  ## serve the demo collection's web page on http://127.0.0.1:8000
	$(LOOKALIKE) serve --db $(OUT)/index

lint: setup
	$(VENV)/bin/ruff check src tests benchmarks

clean:
	rm -rf $(OUT) .pytest_cache
