# The project's commands. `make demo` and `make test` do all the set-up on a fresh machine.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
HOST ?= 0.0.0.0
PORT ?= 8000

# Tests use the machine's real PostgreSQL and Redis (never mocks); override as needed.
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/agentplane
TEST_REDIS_URL ?= redis://127.0.0.1:6379/1

APPS := core tenants idempotency audit accounts credentials vault billing agents gateway tools autoscaler scaling organizations portal

.PHONY: install demo demo-stop test lint format migrate bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

migrate: install
	$(BIN)/python manage.py migrate_schemas --shared -v0
	$(BIN)/python manage.py migrate_schemas --tenant -v0

# One ASGI server for the portal, the API and the WebSocket gateway. Under ASGI every request runs
# in its own thread, so persistent database connections would pile up: CONN_MAX_AGE=0.
demo: export PORTAL_PORT = $(PORT)
demo: export CONN_MAX_AGE = 0
demo: migrate
	$(BIN)/python manage.py refill_schema_pool
	$(BIN)/python manage.py demo_setup
	# Beside the server: the autoscaler, a pass every 15 s (docs/scaling.md); with Redis, the
	# usage ledger's periodic rollup too (docs/billing.md); without Redis, usage is counted in the
	# server's own memory and read there, and the autoscaler's events reach no browser (its
	# decisions show on the next page load).
	$(BIN)/python manage.py autoscale --every 15 & BACKGROUND=$$!; \
	if [ -n "$$REDIS_URL" ]; then \
		$(BIN)/python manage.py rollup_usage --include-current --every 5 > /dev/null & \
		BACKGROUND="$$BACKGROUND $$!"; fi; \
	trap 'kill $$BACKGROUND' EXIT INT TERM; \
	$(BIN)/python -m uvicorn portal.asgi:application --host $(HOST) --port $(PORT) \
		--ws websockets-sansio

demo-stop:
	$(BIN)/python -c "from portal.devdata import stop_embedded_database; stop_embedded_database()"

test: install
	PYTHONWARNINGS=ignore::RuntimeWarning DATABASE_URL=$(TEST_DATABASE_URL) \
	$(BIN)/python manage.py makemigrations --check --dry-run -v0
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache --no-logo
	$(BIN)/bandit -q -r $(APPS) -ll -x '*/migrations/*'
	DEBUG=0 SECRET_KEY=$$($(BIN)/python -c "import secrets; print(secrets.token_urlsafe(64))") \
	DATABASE_URL=$(TEST_DATABASE_URL) REDIS_URL=$(TEST_REDIS_URL) \
	$(BIN)/python manage.py check --deploy --fail-level WARNING
	DATABASE_URL=$(TEST_DATABASE_URL) REDIS_URL=$(TEST_REDIS_URL) TENANT_CONTEXT_GUARD=1 \
	SCHEMA_POOL_BACKGROUND_REFILL=0 $(BIN)/pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache --no-logo
	$(BIN)/bandit -q -r $(APPS) -ll -x '*/migrations/*'

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: install
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) staticfiles
