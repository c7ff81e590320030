# pointgate: `make test` and `make demo` work on a fresh machine with only Python 3.11+.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test demo soak serve venv clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

# The merchant-API files that run a second time, unchanged, on an embedded Redis Cluster of 3
# primaries and 3 replicas (`--redis=cluster`, tests/conftest.py): the same tests on one Redis and on
# a cluster. About a minute more on 2 cores; CLUSTER_SUITE="tests/e2e/..." runs other files there.
CLUSTER_SUITE ?= tests/e2e/test_payments_api.py tests/e2e/test_idempotency.py \
  tests/e2e/test_authorization_matrix.py tests/e2e/test_merchant_security.py \
  tests/e2e/test_interop_outbound.py tests/e2e/test_interop_inbound.py tests/e2e/test_settlement.py \
  tests/e2e/test_network_settlement.py tests/e2e/test_batch_reconciliation.py \
  tests/e2e/test_concurrent_duplicates.py

test: $(STAMP)
	$(BIN)/python -m pytest
	$(BIN)/python -m pytest --redis=cluster $(CLUSTER_SUITE)

demo: $(STAMP)
	$(BIN)/simulators demo

# The gateway (bundled Redis), the bank and Taishin simulators and a background shopper, kept
# running until Ctrl-C; prints the links to the member's wallet and the operator console.
# PORT=8081 for another port, QUIET=1 for no background shopper.
serve: $(STAMP)
	$(BIN)/simulators serve $(if $(PORT),--port $(PORT)) $(if $(QUIET),--quiet)

# About eight minutes: five rounds of load while Redis, gateway workers and the network fail
# (simulators/soak.py); the figures go to var/reliability/report.json.
soak: $(STAMP)
	$(BIN)/simulators soak

# About two and a half minutes: the load on the embedded 3+3 Redis Cluster through
# `gateway serve --workers 2`, steady rounds and a primary SIGKILLed mid-run, with the WAIT option
# on and off (simulators/cluster_failover.py); var/cluster/report.json and a table.
.PHONY: failover
failover: $(STAMP)
	$(BIN)/simulators cluster-failover

# Schemathesis against /openapi.json with far more generated requests per operation than
# `make test` runs (several minutes at the default); SCHEMATHESIS_EXAMPLES=1000 for more.
SCHEMATHESIS_EXAMPLES ?= 200
.PHONY: soak-api fuzz
soak-api: $(STAMP)
	POINTGATE_SCHEMATHESIS_EXAMPLES=$(SCHEMATHESIS_EXAMPLES) $(BIN)/python -m pytest tests/e2e/test_schemathesis.py

# Each parser's atheris harness (fuzz/) for FUZZ_SECONDS, one after the other, growing its corpus
# in var/fuzz/<harness>/; an input that breaks a parser's contract is saved in var/fuzz/crashes/
# and stops the run. `make test` runs the same contracts briefly with Hypothesis.
FUZZ_SECONDS ?= 60
FUZZ_HARNESSES := codes_parser signature_headers scanner_input json_requests
fuzz: $(STAMP)
	mkdir -p var/fuzz/crashes
	for harness in $(FUZZ_HARNESSES); do \
	  mkdir -p var/fuzz/$$harness && \
	  $(BIN)/python -m fuzz.$$harness -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
	    -artifact_prefix=var/fuzz/crashes/$$harness- var/fuzz/$$harness || exit 1; \
	done

# About ten minutes: authorisations/s, latency and scaling (members, workers, a 3-primary Redis
# Cluster against one Redis) as ratios to a baseline aiohttp app measured in the same run
# (bench/run.py); var/bench/report.json and a table. Needs wrk, a Debian package (apt-get
# install -y wrk). BENCH_ARGS=--update-readme puts the table in README.md.
.PHONY: bench
bench: $(STAMP)
	@command -v wrk >/dev/null 2>&1 || { echo "make bench needs wrk: apt-get update && apt-get install -y wrk" >&2; exit 2; }
	$(BIN)/python -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) var .pytest_cache .hypothesis
