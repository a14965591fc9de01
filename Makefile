# The verbs of the project; `make help` lists them.
# ARGS passes extra arguments to up, test and token; BENCH_ARGS to bench.

PYTHON := .venv/bin/python
# uv from PATH, else the copy pip installed for python3 (a pyenv shim may not exist for it yet).
UV = $$(uv --version >/dev/null 2>&1 && echo uv || echo python3 -m uv)

.DEFAULT_GOAL := help
.PHONY: help install up deps test bench lint token clean

help: ## list the targets
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

install: ## install the locked dependencies into .venv (installs uv with pip if missing)
	@$(UV) --version >/dev/null 2>&1 || python3 -m pip install --quiet uv \
		|| python3 -m pip install --quiet --user --break-system-packages uv
	@$(UV) sync --frozen

up: install ## run the whole stack in the foreground; Ctrl-C stops it
	$(PYTHON) -m deploy.local.up $(ARGS)

deps: ## make sure Postgres, Redis and RabbitMQ are running (starts local ones)
	@python3 -m deploy.local.deps

test: install deps ## run the tests (ARGS="-k name -x" adds pytest flags)
	$(PYTHON) -m pytest -q -ra tests $(ARGS)

bench: install deps ## run the load benchmark (BENCH_ARGS="..." passes its options)
	$(PYTHON) -m tests.load.bench $(BENCH_ARGS)

lint: install ## check the code with ruff
	$(PYTHON) -m ruff check .

token: ## print a development token (ARGS="--help" tells the options)
	@test -x $(PYTHON) || $(MAKE) -s install >&2
	@$(PYTHON) -m services.gateway token $(ARGS)

clean: ## remove local data (var/: SeaweedFS objects, logs)
	rm -rf var/
