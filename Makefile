# Two commands for a fresh machine:  `make run`  and  `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
ARGS   ?=

.PHONY: run test system-deps bench clean

run: $(VENV)/.runtime            ## create the venv, install, start the exporter with defaults
	$(BIN)/otel-claude serve $(ARGS)

test: $(VENV)/.test system-deps  ## install test dependencies and run the whole suite
	$(BIN)/ruff check otel_claude tests bench examples grafana deploy docs setup.py
	$(BIN)/ruff format --check otel_claude tests bench examples grafana deploy docs setup.py
	$(BIN)/mypy
	$(BIN)/pytest -q

bench: $(VENV)/.test             ## run every benchmark, one table + bench/results.json (ARGS=--quick)
	$(BIN)/python -m bench $(ARGS)

system-deps:                     ## Debian prometheus/alertmanager (promtool, amtool) when root
	@sh scripts/system-deps.sh

$(VENV)/.runtime: pyproject.toml setup.py otel_claude/sources/_linescan.c
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.test: pyproject.toml setup.py otel_claude/sources/_linescan.c
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -e '.[test]'
	touch $@ $(VENV)/.runtime

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache .pytest_cache
	rm -f otel_claude/sources/_linescan*.so
