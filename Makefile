# Everything a developer or CI needs; `make test` and `make demo` work from a fresh clone.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install test deploy-check deploy-tools test-unit test-integration test-faults test-compat test-dynamo lint format bench bench-gateway bench-recorder bench-dynamo demo kafka-up kafka-down kafka-install redis-install clean

install: $(STAMP)

# setup.py compiles the learner and the timestamp parser (mypyc): an edit of their sources
# needs a new build
$(STAMP): pyproject.toml setup.py $(wildcard worker/learner/*.py) worker/models/timestamps.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[stream,dev]'
	touch $(STAMP)

test: install
	$(PY) -m pytest -q

test-unit: install
	$(PY) -m pytest -q -m "not integration and not deploy and not dynamo"

# Dashboard queries and alert rules on a real Prometheus scraping a real worker, promtool rule
# tests, helm lint/template, the Dockerfile check. Installs Prometheus and Helm on first use.
deploy-check: install
	$(PY) -m pytest -q -m deploy

deploy-tools:
	./scripts/install-prometheus.sh
	./scripts/install-helm.sh

test-integration: install
	$(PY) -m pytest -q -m integration

test-faults: install
	WORKER_FAULTS_FULL=1 $(PY) -m pytest -q -m faults

# against NVIDIA Dynamo 1.6.1's real frontend and mocker (also in `make test`; the first use
# installs Dynamo into .cache/dynamo, ~100 s)
test-dynamo: install
	$(PY) -m pytest -q -m dynamo

test-compat: install
	KAFKA_VERSION=$${KAFKA_COMPAT_VERSION:-3.9.2} $(PY) -m pytest -q -m integration

lint: install
	$(VENV)/bin/ruff check setup.py worker tests benchmarks devtools
	$(VENV)/bin/ruff format --check setup.py worker tests benchmarks devtools
	$(VENV)/bin/mypy

format: install
	$(VENV)/bin/ruff check --fix setup.py worker tests benchmarks devtools
	$(VENV)/bin/ruff format setup.py worker tests benchmarks devtools

bench: install
	$(PY) -m benchmarks

# the router client library's lookups/s and the hints gateway's added latency (load from
# vegeta, built with the machine's Go on first use: scripts/install-vegeta.sh)
bench-gateway: install
	$(PY) -m benchmarks gateway

# issue 22's A/B: agent programs on Dynamo 1.6.1's real router and mocker, each priority
# policy against no hints (~35 min; installs Dynamo into .cache/dynamo on first use)
bench-dynamo: install
	$(PY) -m benchmarks dynamo

# what recording costs an agent: runs/s from one thread, overhead per LLM call (no broker needed)
bench-recorder: install
	$(PY) -m benchmarks recorder

demo: install
	./scripts/demo.sh

kafka-install:
	./scripts/kafka.sh install

kafka-up:
	./scripts/kafka.sh up $(if $(KAFKA_PORT),--port $(KAFKA_PORT))

kafka-down:
	./scripts/kafka.sh down

# redis-server for the NeMo Relay adapter tests (Debian's package, unpacked without root)
redis-install:
	./scripts/install-redis.sh

clean:
	rm -rf $(VENV) .cache .pytest_cache .ruff_cache .hypothesis build *.so worker/learner/*.so worker/models/*.so
