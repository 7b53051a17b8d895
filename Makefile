# Quickstart: `make run` (execute every notebook offline, reports/index.html) and `make test`.
# Both create .venv and install the project into it when it is missing.
PYTHON_BOOT ?= python3
VENV        ?= .venv
PY          := $(VENV)/bin/python
STAMP       := $(VENV)/.installed
# torch and torchvision are installed as a matching pair first (timm needs torchvision).
TORCH_SPEC  ?= torch==2.14.1 torchvision==0.29.1
PRESET      ?= cpu
DATA        ?= data/synthad
PYTEST_ARGS ?=

export HF_HUB_OFFLINE ?= 1
export PYTHONUNBUFFERED := 1

.PHONY: install data run notebooks test browser clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON_BOOT) -m venv $(VENV)
	$(PY) -m pip install --quiet $(TORCH_SPEC)
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

# SynthAD categories that are missing or were written by another generator version, seed or preset
# are (re)generated; current ones are kept.
data: $(STAMP)
	$(PY) -c "from nbhelpers.data.synth import ensure; ensure('$(DATA)', preset='$(PRESET)')"

run: data
	$(VENV)/bin/nbhelpers run --preset $(PRESET) --data $(DATA) --out reports

notebooks: run

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

# Debian's Chromium for tests/test_site.py (Playwright drives it; `playwright install` would download
# a browser from outside and fails offline). Needs root or sudo; skipped when Chromium is there.
browser:
	command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  { $$(command -v sudo) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$(command -v sudo) apt-get install -y -qq chromium; }

clean:
	rm -rf reports .pytest_cache
	find . -name __pycache__ -prune -exec rm -rf {} +
