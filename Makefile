# Developer shortcuts. Everything runs from the project's .venv (created by scripts/install.sh).
PY ?= .venv/bin/python

.PHONY: proto test lint

# Regenerate movakit/api/v1/ from proto/ (tests/contract checks the checked-in stubs match).
proto:
	bash scripts/gen_proto.sh

# The whole test suite.
test:
	$(PY) -m pytest -q

# ruff check + format check when ruff is installed; otherwise a byte-compile of the sources.
lint:
	@if $(PY) -m ruff --version >/dev/null 2>&1; then \
		$(PY) -m ruff check movakit services tests && $(PY) -m ruff format --check movakit services tests; \
	else \
		echo "ruff not installed: byte-compiling instead"; $(PY) -m compileall -q movakit services tests; \
	fi
