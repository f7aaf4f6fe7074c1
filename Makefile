# claimcheck: every entry point a user or CI needs. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV      ?= .venv
CLAIMCHECK = $(VENV)/bin/claimcheck
PYTEST     = $(VENV)/bin/python -m pytest
# Each component runs as its own role on the local stack (claimcheck/localstack/accounts.py, docs/security.md).
AS_ROLE    = env $$($(VENV)/bin/python -m claimcheck.localstack env $(1))
# Declare the groups' queues and create the role accounts: an administrator's step (guest, locally).
PROVISION  = CLAIMCHECK_BROKER_USERS=$$($(VENV)/bin/python -m claimcheck.localstack broker-users $(1)) \
             $(CLAIMCHECK) provision --recipients $(1) >/dev/null

# Seed-compatible knobs.
MSG_SIZE   ?= 1MB
COUNT      ?= 5
VERIFY     ?= 0
RECIPIENT  ?= billing
RECIPIENTS ?= billing,audit
NODE       ?= 1
PYTEST_ARGS ?=

export MSG_SIZE COUNT VERIFY RECIPIENT RECIPIENTS

.PHONY: help install up down status demo coordinator consumer producer ledger test test-unit \
        rmq-stop rmq-kill rmq-start helm bench kind-up kind-down

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

install: ## Create .venv and install claimcheck with its dependencies
	@bash scripts/bootstrap.sh

up: install ## Start the local stack: 3-node RabbitMQ + HAProxy, PostgreSQL, S3 (SeaweedFS)
	@bash scripts/stack.sh up
	@$(CLAIMCHECK) migrate
	@$(call PROVISION,$(RECIPIENTS))

down: ## Stop the local stack (PURGE=1 also deletes its data)
	@bash scripts/stack.sh down $(if $(PURGE),--purge)

status: ## Show the local stack's components
	@bash scripts/stack.sh status

demo: up ## The whole job end to end on the local stack, with a summary
	@$(CLAIMCHECK) demo --count $(COUNT) --size $(MSG_SIZE)

coordinator: install ## Run a coordinator in the foreground
	@$(call AS_ROLE,coordinator) $(CLAIMCHECK) coordinator

consumer: install ## Run one consumer replica of RECIPIENT (default billing)
	@$(call PROVISION,$(RECIPIENT))
	@$(call AS_ROLE,recipient $(RECIPIENT)) $(CLAIMCHECK) consumer --recipient $(RECIPIENT)

producer: install ## Produce COUNT payloads of MSG_SIZE for RECIPIENTS; VERIFY=1 waits for deletion
	@$(call PROVISION,$(RECIPIENTS))
	@$(call AS_ROLE,producer) $(CLAIMCHECK) producer --count $(COUNT) --size $(MSG_SIZE) --recipients $(RECIPIENTS) \
	    $(if $(filter 1 true yes,$(VERIFY)),--verify,--no-verify)

ledger: install ## Print the ledger (claimcheck status)
	@$(call AS_ROLE,reader) $(CLAIMCHECK) status

rmq-stop: ## Gracefully stop RabbitMQ node NODE (0-2), like `kubectl delete pod rmq-NODE`
	@bash scripts/stack.sh stop rmq-$(NODE)

rmq-kill: ## kill -9 RabbitMQ node NODE
	@bash scripts/stack.sh kill rmq-$(NODE)

rmq-start: ## Start RabbitMQ node NODE again and wait until it rejoined
	@bash scripts/stack.sh start rmq-$(NODE)

helm: ## Install the pinned helm and kubectl into .tools/bin
	@bash scripts/helm.sh

test: up helm ## Install what is needed, start the stack, run every test
	@$(PYTEST) $(PYTEST_ARGS)

test-unit: install ## Only the tests that need no services
	@$(PYTEST) tests/unit $(PYTEST_ARGS)

bench: up ## Benchmarks against the local stack -> docs/benchmarks.md (FULL=1: longer, 5 repeats, 1 GiB case)
	@$(VENV)/bin/pip install -q -e '.[bench]'
	@$(VENV)/bin/python -m bench $(if $(filter 1 true yes,$(FULL)),--full)

kind-up: install ## Create (or reuse) a kind cluster and install or upgrade both charts (needs Docker, kind)
	@bash scripts/kind-up.sh

kind-down: install ## Delete the kind cluster
	@bash scripts/kind-down.sh
