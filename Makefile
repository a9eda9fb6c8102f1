# kwatt's two entry points for a newcomer: `make demo` shows kwatt at work on the sandbox
# cluster, `make test` passes the tests. Both build the virtual environment themselves.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv controlplane helm prometheus test lint typecheck unit bench bench-sandbox bench-client mutation gpu-check images demo clean

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check --upgrade pip -c constraints.txt 2>/dev/null || true
	PIP_CONSTRAINT=constraints.txt $(BIN)/python -m pip install -q --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: venv
	$(BIN)/mypy core/kwatt_core client/kwatt_client cli/kwatt_cli sandbox/kwatt_sandbox \
		sidecar/kwatt_sidecar operator/kwatt_operator

# The sandbox's real Kubernetes control plane, built with Go once per machine into
# ~/.cache/kwatt (or $KWATT_CACHE_DIR); does nothing when it is already there.
controlplane: venv
	$(BIN)/python -m kwatt_sandbox.controlplane.build

# The Helm chart's tools (helm 3, helm 4, kubecheck), built with Go once per machine into the
# same cache (kwatt_sandbox.controlplane.tools); does nothing when they are already there.
helm: venv
	$(BIN)/python -m kwatt_sandbox.controlplane.tools helm3 helm4 kubecheck

# Prometheus, for the test that runs the chart's Grafana dashboard's queries, built the same
# way (without its service-discovery plugins: a few minutes on 2 cores, once per machine).
prometheus: venv
	$(BIN)/python -m kwatt_sandbox.controlplane.tools prometheus

# Two workers (pytest-xdist): the tests that need a cluster run one after another on one of
# them, with one sandbox, and the tests that need none on whichever is free (tests/conftest.py).
unit: venv controlplane helm prometheus
	$(BIN)/python -m pytest -n 2 --dist loadgroup

test: lint typecheck unit

# Speed and quality targets live here, not in timed tests. --peer zeus runs real Zeus
# (PyPI zeus==0.16.0's own simulator) beside the policies; its Python environment is built
# once per machine into ~/.cache/kwatt/peers (about a minute, the one download).
bench: venv
	$(BIN)/kwatt bench --gpu v100 --seeds 20 --peer zeus
	$(BIN)/kwatt bench --gpu p100 --seeds 20 --peer zeus
	$(BIN)/kwatt bench --gpu v100 --seeds 20 --charge upstream --policy zeus --peer zeus
	$(BIN)/python benchmarks/operator_scale.py

bench-sandbox: venv
	$(BIN)/python benchmarks/sandbox_scale.py --objects 1000

bench-client: venv
	$(BIN)/python benchmarks/client_overhead.py

# Mutation testing of core, client, sidecar and operator against each part's fast tests
# (docs/testing.md): a deterministic sample, under 30 minutes on 2 cores. Not part of
# `make test`. MUTATION_ARGS narrows it, e.g. MUTATION_ARGS="core --only core/kwatt_core/cost.py".
MUTATION_ARGS ?=
mutation: venv
	$(BIN)/python tools/mutation.py $(MUTATION_ARGS)

# On a machine with an NVIDIA GPU: train a small model through the client and a real
# sidecar (NVML). Without a GPU it says so and succeeds.
gpu-check: venv
	$(BIN)/python examples/gpu_check.py

# The operator's and the sidecar's images (docs/images.md), built from the repository root
# with docker or podman, whichever answers here (ENGINE=... to choose). Not part of `make
# test`: tests/images checks what can be checked without an engine.
IMAGE_REPO ?= ghcr.io/kwatt
IMAGE_TAG ?= $(shell sed -n 's/^version = "\(.*\)"$$/\1/p' pyproject.toml)
ENGINE ?=

images:
	@engine="$(ENGINE)"; \
	if [ -z "$$engine" ]; then \
		for e in podman docker; do \
			if command -v $$e >/dev/null 2>&1 && $$e info >/dev/null 2>&1; then engine=$$e; break; fi; \
		done; \
	fi; \
	if [ -z "$$engine" ]; then \
		echo "make images needs a running container engine (docker or podman), and none answers here."; \
		exit 2; \
	fi; \
	set -x; \
	$$engine build -f operator/Dockerfile -t $(IMAGE_REPO)/operator:$(IMAGE_TAG) . && \
	$$engine build -f sidecar/Dockerfile -t $(IMAGE_REPO)/sidecar:$(IMAGE_TAG) .

# The newcomer's first command: builds what is missing (the venv; the control plane and Helm,
# once per machine, with progress), starts the sandbox cluster, installs kwatt with its Helm
# chart, runs two TrainingJobs for 20 recurrences each and prints their tables, savings and
# charts (./out/demo). Under 3 minutes once the control plane is built; Ctrl-C stops it all.
# DEMO_ARGS is passed on, e.g. DEMO_ARGS="--runs 5".
DEMO_ARGS ?=
demo: venv controlplane helm
	$(BIN)/kwatt demo $(DEMO_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info
