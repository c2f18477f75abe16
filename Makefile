# Two commands on a fresh machine: `make demo` and `make test`.
# Both create .venv on first use from the committed lock (requirements/constraints.txt).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
OUT    ?= outputs/demo
# CPU-only machines: torch/torchvision from PyTorch's CPU wheel index (no CUDA libraries):
#   make demo TORCH_INDEX=https://download.pytorch.org/whl/cpu
# PIP_OPTS passes any other pip options through (a mirror, a proxy, --no-cache-dir...).
TORCH_INDEX ?=
PIP_OPTS    ?=

.PHONY: demo test test-fast lint bench clean venv

$(STAMP): pyproject.toml requirements/constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(if $(TORCH_INDEX),$(PY) -m pip install -q $(PIP_OPTS) -c requirements/constraints.txt \
		--index-url $(TORCH_INDEX) torch torchvision)
	$(PY) -m pip install -q $(PIP_OPTS) -c requirements/constraints.txt -e '.[all]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(PY) -m fastvit demo --out $(OUT)

# pytest-xdist: one worker per core (each on its share of the cores, tests/conftest.py);
# worksteal: an idle worker takes tests queued for a busy one (slow cases are collected first)
test: $(STAMP)
	$(PY) -m pytest -q -n auto --dist worksteal

test-fast: $(STAMP)
	$(PY) -m pytest -q -n auto --dist worksteal -m "not slow"

lint: $(STAMP)
	$(VENV)/bin/ruff check .

bench: $(STAMP)
	$(PY) benchmarks/latency_core.py

clean:
	rm -rf $(VENV) outputs build *.egg-info src/*.egg-info .pytest_cache
