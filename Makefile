# rollguard — every target does its own set-up on a fresh machine.
#   make demo   the whole loop on a local Kafka broker, end to end
#   make test   the whole test suite, against a real local Kafka broker
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?= -q
# Two pytest-xdist workers: broker tests mostly wait (on the broker, a worker subprocess, a
# session timeout), so two modules at a time halve the wall time on two cores. A module, and
# the secured broker's tests, stay on one worker (tests/conftest.py); modules go out in file
# order, broker tests first. PYTEST_XDIST= runs everything in one process, as before.
PYTEST_XDIST ?= -n 2 --dist loadgroup --no-loadscope-reorder

.PHONY: help install test unit lint demo kafka-start kafka-stop kafka-status bench clean

help:
	@echo "make demo | make test | make unit | make lint | make bench | make kafka-start | make kafka-stop"

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

# Starts the broker unless one is already running, runs every test with the broker mandatory,
# and stops the broker again if it started it.
test: $(STAMP)
	scripts/ensure-chromium.sh >/dev/null
	scripts/ensure-prometheus.sh >/dev/null
	@was_running=0; scripts/kafka.sh status >/dev/null 2>&1 && was_running=1; \
	scripts/kafka.sh start || exit 1; \
	status=0; ROLLGUARD_REQUIRE_BROKER=1 $(PY) -m pytest $(PYTEST_XDIST) $(PYTEST_ARGS) || status=$$?; \
	if [ $$was_running = 0 ]; then scripts/kafka.sh stop; fi; \
	exit $$status

unit: $(STAMP)
	$(PY) -m pytest -q tests/unit

# mypy reads files, not the editable install's import hook: it gets a tree where the folders
# models/ and streams/ appear under their installed names, rollguard.models and rollguard.streams.
MYPY_PATH := .cache/mypy-path
lint: $(STAMP)
	$(VENV)/bin/ruff check models streams tests bench
	mkdir -p $(MYPY_PATH)/rollguard
	ln -sfn ../../../models $(MYPY_PATH)/rollguard/models
	ln -sfn ../../../streams $(MYPY_PATH)/rollguard/streams
	MYPYPATH=$(MYPY_PATH) $(VENV)/bin/mypy --strict -p rollguard.models -p rollguard.streams
	$(VENV)/bin/lint-imports

demo: $(STAMP)
	scripts/demo.sh

bench: $(STAMP)
	$(PY) bench/replay_throughput.py

kafka-start:
	scripts/kafka.sh start

kafka-stop:
	scripts/kafka.sh stop

kafka-status:
	scripts/kafka.sh status

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
