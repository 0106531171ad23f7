# `make demo` and `make test` work on a fresh machine with Python 3.11 and make. requirements.txt is the pinned
# lock of pyproject.toml's dependencies and extras; the package itself is installed editable, without deps.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint docs bench install clean

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(PY) -c "import torch, pandas, sklearn, mcp, fastapi, pydantic_settings, mkdocs"
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m anomaly.synthetic examples
	$(PY) train.py --data examples/train.csv --model-dir examples/models --epochs 30 --quiet
	$(PY) detect.py --data examples/test.csv --model-dir examples/models --output examples/results.csv --label-column label

lint: $(STAMP)
	$(VENV)/bin/ruff check .

test: lint
	$(PY) -m pytest -q -rs -n 2 tests  # two workers: the suite is CPU-bound and CI has 2 cores; -rs: why each skip

# The documentation site, offline: the CLI and MCP reference pages are generated from the code during the build
# (docs/hooks.py runs docs/gen_reference.py); --strict turns every warning (a broken link, a missing page) into an error.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict --site-dir site

# Every benchmark runs candidate and baseline alternately and prints min / median / max of the ratio with the load
# average (bench/pairs.py). BENCH_QUICK=1 make bench: the quick sizes (3 pairs, smaller files, no 10M-row file),
# about a quarter of an hour on 2 cores. Needs the benchmark-only packages: .venv/bin/python -m pip install -r
# bench/requirements.txt
bench: $(STAMP)
	$(PY) -c "import pyod" || $(PY) -m pip install --quiet --disable-pip-version-check -r bench/requirements.txt
	$(PY) bench/train_speed.py
	$(PY) bench/detect_scale.py
	$(PY) bench/fleet.py --jobs 2 $(if $(filter-out 0,$(BENCH_QUICK)),,--series 200)
	$(PY) bench/server_load.py
	$(PY) bench/server_memory.py
	$(PY) bench/device_speed.py

clean:
	rm -rf $(VENV) examples/models examples/*.csv site
