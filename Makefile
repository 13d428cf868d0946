# DESP Hub: `make run` sets up and starts the embedded stack; `make test` sets up and runs the whole suite.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: run test install system-packages helm docs

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -c constraints.txt -e ".[test]"
	touch $@

install: $(VENV)/.installed

# Debian packages the tests use: Chromium for the browser tests (Playwright drives it; no browser is ever
# downloaded) and PostgreSQL for the profile store's tests. Installed only when missing.
system-packages:
	@if [ ! -x /usr/bin/chromium ] || ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || ! ls /usr/lib/postgresql/*/lib/postgis-3.so >/dev/null 2>&1; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium postgresql postgresql-postgis >/dev/null; \
	fi

# helm for the chart's tests (tests/helm), built from the Go module proxy into the venv's bin; the stamp names the
# pinned version, so changing HELM_VERSION rebuilds it. Go comes with the machine (no prebuilt binary is downloaded).
HELM_VERSION := v3.22.0
$(VENV)/.helm-$(HELM_VERSION): | $(VENV)/.installed
	GOBIN=$(abspath $(VENV))/bin go install helm.sh/helm/v3/cmd/helm@$(HELM_VERSION)
	touch $@

helm: $(VENV)/.helm-$(HELM_VERSION)

run: install system-packages
	$(VENV)/bin/desp-hub up

test: install system-packages helm
	$(PY) -m pytest -n 2 --dist loadfile -p no:cacheprovider $(PYTEST_ARGS)

# Regenerate the configuration reference in README.md from the traitlets' help.
docs: install
	$(PY) -m desp_hub.docs --update README.md
