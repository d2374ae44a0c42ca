# Fresh machine: `make demo` installs and runs the audit demo; `make test` installs and runs the tests.
PYTHON ?= python
PIP ?= $(PYTHON) -m pip

.PHONY: install demo test lint typecheck docs

install:
	$(PIP) install -q torch==2.13.0   # the CPU wheel on this machine's disk; pins torch before anything else asks
	$(PIP) install -q -e '.[dev]'

demo: install
	gmint demo

test: install
	$(MAKE) lint typecheck
	$(PYTHON) -m pytest -q

lint:
	$(PYTHON) -m ruff check gmint cli tests benchmarks

# The CLI package lives in cli/ and installs as gmint_cli: mypy finds it under that name through a link.
typecheck:
	mkdir -p build/typecheck && ln -sfn ../../cli build/typecheck/gmint_cli
	MYPYPATH=build/typecheck $(PYTHON) -m mypy -p gmint -p gmint_cli

# The documentation site (docs/, mkdocs.yml) into site/; --strict turns every broken link or reference into a failure.
docs:
	NO_MKDOCS_2_WARNING=1 $(PYTHON) -m mkdocs build --strict -d site
