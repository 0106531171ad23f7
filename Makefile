# `make demo` and `make test` work on a fresh machine with Python 3.11 and make.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test bench install clean

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(PY) -c "import torch, pandas, sklearn, mcp, fastapi" 
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m anomaly.synthetic examples
	$(PY) train.py --data examples/train.csv --model-dir examples/models --epochs 30 --quiet
	$(PY) detect.py --data examples/test.csv --model-dir examples/models --output examples/results.csv --label-column label

test: $(STAMP)
	$(PY) -m pytest -q tests

bench: $(STAMP)
	$(PY) bench/detect_scale.py
	$(PY) bench/train_speed.py
	$(PY) bench/server_load.py
	$(PY) bench/device_speed.py
	$(PY) bench/fleet.py --series 200

clean:
	rm -rf $(VENV) examples/models examples/*.csv
