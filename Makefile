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
# pip --no-compile: byte-compiling all 24k installed .py files took 45 s of the install on
# the 2-core VM; Python compiles the modules a run imports on first use instead, and keeps
# them (so PYTHONDONTWRITEBYTECODE, if the shell sets it, is cleared for our commands).
PIP_INSTALL := $(PY) -m pip install -q --no-compile
RUN         := PYTHONDONTWRITEBYTECODE= $(PY)

.PHONY: demo test test-fast lint bench clean venv

$(STAMP): pyproject.toml requirements/constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(if $(TORCH_INDEX),$(PIP_INSTALL) $(PIP_OPTS) -c requirements/constraints.txt \
		--index-url $(TORCH_INDEX) torch torchvision)
	$(PIP_INSTALL) $(PIP_OPTS) -c requirements/constraints.txt -e '.[all]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(RUN) -m fastvit demo --out $(OUT)

# pytest-xdist: one worker per core (each on its share of the cores, tests/conftest.py);
# worksteal: an idle worker takes tests queued for a busy one (slow cases are collected first)
test: $(STAMP)
	$(RUN) -m pytest -q -n auto --dist worksteal

test-fast: $(STAMP)
	$(RUN) -m pytest -q -n auto --dist worksteal -m "not slow"

lint: $(STAMP)
	$(VENV)/bin/ruff check .

bench: $(STAMP)
	$(RUN) benchmarks/latency_core.py

clean:
	rm -rf $(VENV) outputs build *.egg-info src/*.egg-info .pytest_cache
