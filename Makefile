# pipeflow: the two commands are `make demo` and `make test`; both set up
# everything they need on first use (a virtual environment in .venv).

VENV    ?= .venv
PYTHON  ?= python3
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: demo test lint bench bench-quick docs clean setup browser soak audit pip-audit

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	@# the setuptools that venv seeds (65.5 on Python 3.11) is used by nothing here: the
	@# project builds in pip's isolated environment (setuptools>=77); left, it is one more
	@# old release in the audited set. A package that needs it gets the latest release.
	$(BIN)/python -m pip uninstall -qq --yes setuptools
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

setup: $(STAMP)

## Run the worked example offline: a phone order call, end to end.
demo: $(STAMP)
	$(BIN)/pipeflow run pipelines/call.yaml

## Debian's Chromium for the browser test (installed once, when apt is there).
browser:
	@if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing Debian's chromium for the browser test"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; \
	fi

## Lint and run the whole test suite.
test: $(STAMP) browser
	$(BIN)/ruff check pipeflow tests benchmarks pipelines
	@$(BIN)/python -m pytest -q $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: that is a failure"; exit 1; fi; \
	exit $$rc

lint: $(STAMP)
	$(BIN)/ruff check pipeflow tests benchmarks pipelines

## Every benchmark; writes benchmarks/results.md and results.json.
bench: $(STAMP)
	$(BIN)/python -m benchmarks

bench-quick: $(STAMP)
	$(BIN)/python -m benchmarks --quick

## The long reliability runs of docs/reliability.md (SOAK_MINUTES=10 by default).
SOAK_MINUTES ?= 10
soak: $(STAMP)
	$(BIN)/python -m benchmarks.soak leak --sessions 1000 --calls 1000
	$(BIN)/python -m benchmarks.soak calls --minutes $(SOAK_MINUTES) --concurrent 8
	-$(MAKE) audit  # reported, not fatal: packages behind their latest release fail it

## Known vulnerabilities of the installed packages, from PyPI's project JSON
## (benchmarks/audit.py): a package older than its latest release is "not audited",
## never clean, and fails the audit.
audit: $(STAMP)
	$(BIN)/python -m benchmarks.audit

## The same with pip-audit, where PyPI's per-release JSON (or OSV) answers;
## pip-audit lives in its own environment, so it is not part of the audited set.
AUDIT_VENV ?= .venv-audit
pip-audit: $(STAMP)
	@test -x $(AUDIT_VENV)/bin/pip-audit || ($(PYTHON) -m venv $(AUDIT_VENV) && $(AUDIT_VENV)/bin/pip install --quiet pip-audit)
	$(BIN)/python -m pip freeze --exclude-editable > $(AUDIT_VENV)/installed.txt
	$(AUDIT_VENV)/bin/pip-audit -s pypi -r $(AUDIT_VENV)/installed.txt --no-deps --disable-pip --strict --progress-spinner off

## Regenerate docs/yaml.md from the option structs.
docs: $(STAMP)
	$(BIN)/python -m pipeflow.docgen > docs/yaml.md

clean:
	rm -rf $(VENV) out .pytest_cache .ruff_cache .hypothesis
