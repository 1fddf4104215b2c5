# The two commands of the README: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# every direct and transitive dependency pinned to what CI tested; `make lock` refreshes it
LOCK   := requirements.lock
# pytest-xdist workers: each starts its own brokers, databases and ports
JOBS   ?= 2

.PHONY: demo test test-serial install lint bench lock clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -c $(LOCK) --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml $(LOCK)
	$(BIN)/python -m pip install -q -c $(LOCK) -e '.[test]'
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/scale-sim demo

# prints the suite's wall time (issue 13: under 15 min on an idle 2-core machine)
test: install
	@start=$$(date +%s); \
	$(BIN)/python -m pytest -n $(JOBS) --dist loadgroup; rc=$$?; \
	echo "test suite: $$(( $$(date +%s) - start )) s wall time"; \
	[ $$rc -eq 0 ] && $(BIN)/lint-imports && $(MAKE) --no-print-directory lint

# one process, in file order: for debugging a failure without xdist in the way
test-serial: install
	$(BIN)/python -m pytest -p no:xdist

# ruff, and mypy (pydantic plugin) over every package: part of `make test`, so CI runs it
lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy weighing device_profiles edge_agent gateway_server simulators bench

bench: install
	$(BIN)/python bench/run_all.py

# Re-resolve every dependency from pyproject.toml in a throw-away venv and pin the result.
# Run it on purpose (a new dependency, a security update), then `make test` and commit both.
lock:
	rm -rf .lock-venv
	$(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install -q --upgrade pip
	.lock-venv/bin/python -m pip install -q -e '.[test]'
	{ echo "# Pinned by \`make lock\` on $$(date -u +%F) with $$(.lock-venv/bin/python -V):"; \
	  echo "# every direct and transitive dependency of '.[test]', used by \`make install\` (pip -c)."; \
	  .lock-venv/bin/python -m pip freeze --all --exclude-editable | grep -v '^setuptools=='; \
	} > $(LOCK)
	rm -rf .lock-venv
	@echo "wrote $(LOCK): $$(grep -vc '^#' $(LOCK)) pins"

clean:
	rm -rf $(VENV) .lock-venv build *.egg-info .pytest_cache .mypy_cache .ruff_cache
