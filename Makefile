# kvtestbed — make targets. `make demo` and `make test` are the two entry points.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
INVENTORY ?= inventory/lab
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: help deps keydb venv install lint unit ansible-test integration lab-test molecule test demo bench lab-up lab-down lab-status deploy keydb-arm64 clean

help:
	@echo "make demo   - venv, install, lab up, deploy, scenarios/demo.yml and its report (needs root)"
	@echo "make test   - the whole test suite: lint, unit, integration, lab and Molecule checks (needs root)"
	@echo "make bench  - benchmarks (ratios measured side by side)"
	@echo "make lab-up | lab-down | lab-status | deploy"

deps:
	bash tools/install-deps.sh

# KeyDB's binaries for this machine, built once from a release archive into the controller's cache (the same bundle
# roles/kvstore unpacks on lab hosts of this kind, and the KeyDB the integration tests start). The vendored archive
# beside the project is used when it is there; KEYDB_ARCHIVE=<path> KEYDB_SHA256=<hex> KEYDB_VERSION=<x.y.z> for another.
KEYDB_VENDORED := $(abspath $(CURDIR)/../shared/vendor/KeyDB-6.3.4.tar.gz)
KEYDB_ARCHIVE ?= $(wildcard $(KEYDB_VENDORED))
KEYDB_VERSION ?= 6.3.4
KEYDB_SHA256 ?= $(if $(filter $(KEYDB_VENDORED),$(KEYDB_ARCHIVE)),fee57ba95c85108fdd6c970b0c177de328e7969b736b7fdb70b40a6245545191)
keydb:
	@if [ -n "$(KEYDB_ARCHIVE)" ]; then \
	  python3 roles/kvstore/files/keydb_build.py build --archive "$(KEYDB_ARCHIVE)" --version "$(KEYDB_VERSION)" \
	    --sha256 "$(KEYDB_SHA256)" --out "$${XDG_CACHE_HOME:-$$HOME/.cache}/kvtestbed/keydb"; \
	else echo "keydb: no KeyDB archive (../shared/vendor/KeyDB-6.3.4.tar.gz or KEYDB_ARCHIVE=...): its tests skip, or fail under CI"; fi

# the agents (agents/, kvagent) and the load generator (loadtests/, kvload) at the versions every host gets
# (their constraints.txt), then the controller
CONSTRAINTS := -c agents/constraints.txt -c loadtests/constraints.txt
# --no-compile: pip would byte-compile all ~30,000 files of ansible's collections (92 s -> 55 s for this venv,
# 2026-12-02); Python compiles what is imported on first use, into this writable venv
$(VENV)/.installed: pyproject.toml agents/pyproject.toml agents/constraints.txt loadtests/pyproject.toml loadtests/constraints.txt
	python3 -m venv $(VENV)
	$(BIN)/pip install -q --no-compile $(CONSTRAINTS) -e ./agents -e ./loadtests
	$(BIN)/pip install -q --no-compile $(CONSTRAINTS) -e '.[dev]'
	touch $@

venv install: $(VENV)/.installed

lint: install
	$(BIN)/ruff check agents src tests loadtests plugins roles tools
	$(BIN)/ansible-lint -q playbooks roles

unit: install
	$(BIN)/pytest -q tests/unit
	$(BIN)/pytest -q tests/load

# tests that run ansible/ansible-playbook on the controller (no lab)
ansible-test: install
	$(BIN)/pytest -q tests/ansible

integration: install
	$(BIN)/pytest -q -m integration tests/integration

lab-test: install
	$(BIN)/pytest -q tests/lab

molecule: install
	bash tools/molecule-all.sh

# tests/load imports Locust, which patches its process with gevent: a pytest process of its own.
# The Molecule and lab queue waits mostly on boots, SSH round trips and failovers (with two of its jobs running the
# 2 CPUs were 33-45 % idle, vmstat on 2026-12-02), so it runs beside the pytest suites rather than after them; the
# target waits for both and exits with the first failure's code. pytest's exit 5 (nothing collected) fails it like
# any other non-zero exit (tests/unit/test_layout.py checks it). Under CI=true a missing server binary fails.
test: deps install keydb
	$(MAKE) lint
	WITH_LAB_TESTS=1 bash tools/molecule-all.sh & queue=$$!; rc=0; \
	$(BIN)/pytest -q tests/unit tests/ansible tests/integration || rc=$$?; \
	if [ $$rc = 0 ]; then $(BIN)/pytest -q tests/load || rc=$$?; fi; \
	wait $$queue || { q=$$?; if [ $$rc = 0 ]; then rc=$$q; fi; }; \
	exit $$rc

# the lab, the deploy, then scenarios/demo.yml: ends with its summary table and the path of its report.html
demo: deps install keydb
	$(BIN)/kvtestbed lab up
	$(BIN)/kvtestbed deploy
	$(BIN)/kvtestbed lab status
	$(BIN)/kvtestbed run scenarios/demo.yml

bench: deps install
	$(BIN)/pytest -q -m bench tests/bench -s

# KeyDB's aarch64 build as the kvstore role does it for a Pi: on a pi4b-arm64 lab host (QEMU user emulation), the
# bundle fetched back into the controller's cache. Slow (compiling under emulation): not part of `make test`.
keydb-arm64: deps install
	$(BIN)/pytest -q -s -rs -p no:cacheprovider --timeout 10800 tests/emulated/test_keydb_aarch64_build.py

lab-up: install
	$(BIN)/kvtestbed lab up

lab-down: install
	$(BIN)/kvtestbed lab down

lab-status: install
	$(BIN)/kvtestbed lab status

deploy: install
	$(BIN)/kvtestbed deploy --inventory $(INVENTORY)

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .ruff_cache
