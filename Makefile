# The two set-up commands: `make demo` and `make test`. Everything CI needs to install
# lives here, so a clean clone needs nothing but Python 3.10+.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
# Two pytest workers: one per core of the CI machine.
PYTEST_WORKERS ?= 2

.PHONY: install test test-slow demo bench lint clean verify-julia

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev,examples]"
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -n $(PYTEST_WORKERS) --durations=15

test-slow: $(STAMP)
	$(PY) -m pytest -m slow -n $(PYTEST_WORKERS)

demo: $(STAMP)
	$(PY) -m pysciml demo

# Where Julia exists: every check of the Julia bridge, as a pass/fail table.
verify-julia: $(STAMP)
	$(PY) -m pysciml julia --selftest

bench: $(STAMP)
	$(PY) benchmarks/overhead.py

lint: $(STAMP)
	$(PY) -m ruff check pysciml tests examples benchmarks

clean:
	rm -rf $(VENV) .pytest_cache
