# `make demo` and `make test` work on a fresh machine with Python 3.11 and make. requirements.txt is the pinned
# lock of pyproject.toml's dependencies and extras; the package itself is installed editable, without deps.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench install clean

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(PY) -c "import torch, pandas, sklearn, mcp, fastapi, pydantic_settings"
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
	$(PY) -m pytest -q -n 2 tests  # two workers: the suite is CPU-bound and CI has 2 cores

bench: $(STAMP)
	$(PY) bench/detect_scale.py
	$(PY) bench/train_speed.py
	$(PY) bench/server_load.py
	$(PY) bench/server_memory.py
	$(PY) bench/device_speed.py
	$(PY) bench/fleet.py --series 200

clean:
	rm -rf $(VENV) examples/models examples/*.csv
