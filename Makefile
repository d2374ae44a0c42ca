# Fresh machine: `make demo` installs and runs the audit demo; `make test` installs and runs the tests.
PYTHON ?= python
PIP ?= $(PYTHON) -m pip

.PHONY: install demo test lint

install:
	$(PIP) install -q torch==2.13.0   # the CPU wheel on this machine's disk; pins torch before anything else asks
	$(PIP) install -q -e '.[dev]'

demo: install
	gmint demo

test: install
	$(PYTHON) -m pytest -q

lint:
	ruff check gmint cli tests benchmarks
