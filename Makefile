# `make run` and `make test` set everything up on a machine with Python 3.11+ and make.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
FLASK := $(BIN)/flask --app app
PG_VERSION_DIR := $(firstword $(wildcard /etc/postgresql/*))

.PHONY: run worker test install install-dev upgrade postgres clean

run: install upgrade
	$(FLASK) run

worker: install upgrade
	$(FLASK) worker

test: install-dev postgres chromium
	$(BIN)/pytest

install: $(VENV)/.installed

install-dev: $(VENV)/.installed-dev

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml $(VENV)/.installed
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

# Create the database, or bring it up to the latest migration.
upgrade: install
	$(FLASK) db upgrade

# Start the local PostgreSQL server when it is installed but stopped. Without
# one, the PostgreSQL half of the test suite is skipped and says why.
postgres:
	@if command -v pg_isready >/dev/null && ! pg_isready -q -h 127.0.0.1 -p 5432; then \
		if [ -n "$(PG_VERSION_DIR)" ] && command -v pg_ctlcluster >/dev/null; then \
			pg_ctlcluster --skip-systemctl-redirect $(notdir $(PG_VERSION_DIR)) main start || true; \
		fi; \
	fi

# Debian's Chromium, which the browser tests (tests/browser) and `make
# screenshots` drive through Playwright; Playwright's own browser download is
# never used. Installed when missing and apt-get can run as root. Without it,
# the browser tests are skipped and say why.
CHROMIUM ?= /usr/bin/chromium

.PHONY: chromium screenshots
chromium:
	@if [ ! -x "$(CHROMIUM)" ]; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) \
				|| echo "Installing chromium failed; the browser tests will be skipped."; \
		else \
			echo "$(CHROMIUM) is missing; install Debian's chromium package as root," \
				"or the browser tests will be skipped."; \
		fi; \
	fi

# Seed a fresh database with sample tasks and save the pages as PNG files in
# docs/screenshots/, as README.md shows them.
screenshots: install-dev chromium
	$(BIN)/python -m scripts.screenshots --chromium $(CHROMIUM) docs/screenshots

clean:
	rm -rf $(VENV) .pytest_cache

# Benchmarks against huey, procrastinate and pgqueuer (docs/benchmarks.md).
# They get a venv of their own, so that the peers never enter .venv.
# BENCH_QUICK=1 make bench runs a short smoke version.
BENCH_VENV ?= .venv-bench
BENCH_PEERS ?= huey==3.5.4 procrastinate==3.10.0 pgqueuer==1.6.0 py-spy==0.4.3

.PHONY: bench
bench: postgres
	test -x $(BENCH_VENV)/bin/python || $(PYTHON) -m venv $(BENCH_VENV)
	echo '*' > $(BENCH_VENV)/.gitignore
	$(BENCH_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -e . $(BENCH_PEERS)
	$(BENCH_VENV)/bin/python -m bench.run

# Page timings on 1,000,000 tasks and 5,000,000 events (docs/benchmarks.md).
# The first run seeds instance/bench_pages.db and the PostgreSQL database
# taskboard_bench_pages, a few minutes each. Later runs reuse them: they
# apply new migrations and recreate any index that a changed migration
# now defines differently. PAGES_ARGS passes options to bench.pages, for
# example PAGES_ARGS="--database sqlite --only /tasks".
PAGES_ARGS ?=

.PHONY: bench-pages
bench-pages: install postgres
	$(BIN)/python -m bench.seed_pages --rebuild-indexes
	$(BIN)/python -m bench.pages $(PAGES_ARGS)
