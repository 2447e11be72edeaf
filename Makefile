# Capacity Forecaster — the two commands are `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DATA ?= $(or $(CAPFC_DATA),./data)
SERVERS ?= 1000
PORT ?= 8080
# Sign-in mode for make run / make serve: dev (this machine only, no sign-in) unless set.
# The container has no default: it refuses to start until CAPFC_AUTH_MODE is chosen.
AUTH_MODE ?= $(or $(CAPFC_AUTH_MODE),dev)
export CAPFC_DATA := $(DATA)

.PHONY: install run demo-data test test-fast lint format bench serve clean diagrams lock audit

# Installs exactly the lock file: every package pinned with its sha256 hashes (pip refuses any
# file whose hash differs) and no dependency resolution (--no-deps: the lock is complete).
# The lock includes pip itself, so the venv's pip is upgraded to the pinned, hashed one.
$(STAMP): requirements-dev.lock
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --require-hashes --no-deps -r requirements-dev.lock
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install runtime + test dependencies

demo-data: install  ## generate a demo fleet when the store is empty, then a plan when none exists
	@$(PY) -m forecasting has-data || $(PY) -m forecasting generate --servers $(SERVERS)
	@$(PY) -m forecasting has-plan || $(PY) -m forecasting run

# A developer's terminal gets readable log lines; everything else (serve, the container, Lambda,
# the CLI) writes JSON. CAPFC_LOG_FORMAT=json make run shows what production writes.
run demo-data: export CAPFC_LOG_FORMAT ?= text

run: demo-data  ## serve the app on http://127.0.0.1:8050
	CAPFC_AUTH_MODE=$(AUTH_MODE) $(PY) -m app

serve: install  ## the container's exact command: gunicorn on $$PORT (default 8080)
	CAPFC_AUTH_MODE=$(AUTH_MODE) PORT=$(PORT) $(VENV)/bin/gunicorn --config gunicorn.conf.py app.wsgi:server

test: install lint audit  ## every test: unit, integration, browser, the image built and run, infrastructure (CDK synth, no AWS)
	bash scripts/ensure-browser.sh
	bash scripts/ensure-redis.sh
	bash scripts/ensure-poppler.sh
	bash scripts/ensure-docker.sh
	bash scripts/ensure-infra.sh
	$(PY) -m pytest -n 2 --headless

test-fast: install  ## unit tests only (no browser, no slow)
	$(PY) -m pytest -n 2 -m "not browser and not slow"

# Lock files from the exact pins in requirements*.txt: re-run after changing a pin (a test fails
# while a pin and the lock disagree). Python 3.11 on Linux (the container's and CI's platform);
# the runtime lock is constrained by the dev lock, so the image runs the versions the tests ran.
UV_COMPILE := $(VENV)/bin/uv pip compile --quiet --generate-hashes --python-version 3.11 \
	--python-platform linux --custom-compile-command "make lock"
lock:  ## re-create requirements-dev.lock and requirements.lock (hash-pinned) from the pins
	$(UV_COMPILE) -o requirements-dev.lock requirements-dev.txt
	$(UV_COMPILE) -c requirements-dev.lock -o requirements.lock requirements.txt

# Known vulnerabilities in every locked package (pip-audit --strict, PyPI's vulnerability data);
# says so and skips when that data is unreachable, unless CAPFC_AUDIT_REQUIRED=1.
audit: install  ## pip-audit of the lock (fails on any known vulnerability)
	bash scripts/audit.sh requirements-dev.lock

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: install  ## benchmarks: figures and ratios against a baseline, side by side
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache

diagrams:  ## render docs/*.dot (Graphviz) to the committed PNG/SVG pictures
	bash scripts/render-diagrams.sh
