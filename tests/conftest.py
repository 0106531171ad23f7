"""Shared fixtures: synthetic data, small real trained models, and a runner for the real command line.

Models here are real but tiny (a few hundred rows, a handful of epochs) and trained once per session, so
every test that needs one shares it. Tests must not modify the shared stores; copy them first
(`copy_store`) when a test deletes, overwrites or corrupts something.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from anomaly import service, synthetic  # noqa: E402
from anomaly.store import ModelStore  # noqa: E402

FEATURES = ["sensor_0", "sensor_1", "sensor_2", "sensor_3"]
TRAIN_ROWS, TEST_ROWS, N_ANOMALIES = 1500, 1000, 20


def cli_env() -> dict:
    """Environment for CLI subprocesses: the repository importable, one thread each (2 shared cores)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("MKL_NUM_THREADS", "1")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def cli_command(entry: str, *args) -> list[str]:
    """`entry` is "train.py", "detect.py" (the scripts) or "anomaly" (`python -m anomaly`)."""
    args = [str(a) for a in args]
    if entry == "anomaly":
        return [PYTHON, "-m", "anomaly", *args]
    return [PYTHON, str(REPO / entry), *args]


def run_cli(entry: str, *args, cwd=None, timeout: float = 240) -> subprocess.CompletedProcess:
    """Run the real command line in a fresh Python process, as a user would."""
    return subprocess.run(cli_command(entry, *args), cwd=cwd or REPO, env=cli_env(), capture_output=True,
                          text=True, timeout=timeout)


def assert_user_error(proc: subprocess.CompletedProcess, *fragments: str) -> str:
    """A user error: non-zero exit, stderr exactly one line `error: ...`, no traceback anywhere."""
    both = proc.stdout + proc.stderr
    assert "Traceback" not in both, both
    assert proc.returncode != 0, both
    lines = proc.stderr.strip("\n").splitlines()
    assert len(lines) == 1, f"expected one stderr line, got {len(lines)}:\n{proc.stderr}"
    assert lines[0].startswith("error: "), lines[0]
    for frag in fragments:
        assert frag.lower() in lines[0].lower(), f"{frag!r} not in {lines[0]!r}"
    return lines[0]


def pytest_collection_modifyitems(config, items):
    """Tests marked `gpu` run only where CUDA is available."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if item.get_closest_marker("gpu"):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def cli():
    """`cli("detect.py", "--data", f, ...)` runs the real CLI in a subprocess (see `run_cli`)."""
    return run_cli


@pytest.fixture(scope="session")
def user_error():
    """`user_error(proc, "fragment", ...)` asserts a one-line `error:` failure without a traceback."""
    return assert_user_error


@pytest.fixture(scope="session")
def dataset(tmp_path_factory) -> dict:
    """Synthetic sensor data: `train` (normal rows), `test` (with injected blatant anomalies and a `label`
    column), as CSV paths, plus the frames and the anomalous row indices."""
    folder = tmp_path_factory.mktemp("data")
    train = synthetic.make_series(TRAIN_ROWS, seed=0)
    clean = synthetic.make_series(TEST_ROWS, seed=2, start="2026-02-01")
    test = synthetic.inject(clean, n_anomalies=N_ANOMALIES, magnitude=6.0, seed=1)
    train.to_csv(folder / "train.csv", index=False, float_format="%.5f")
    train.iloc[:300].to_csv(folder / "train_small.csv", index=False, float_format="%.5f")
    test.to_csv(folder / "test.csv", index=False, float_format="%.5f")
    anomalies = np.flatnonzero(test["label"].to_numpy() == 1)
    moved = (test[FEATURES] - clean[FEATURES]).abs().to_numpy()
    return {"dir": folder, "train": folder / "train.csv", "train_small": folder / "train_small.csv",
            "test": folder / "test.csv", "train_frame": train, "test_frame": pd.read_csv(folder / "test.csv"),
            "anomalies": anomalies, "features": FEATURES,
            # the column that was perturbed in each anomalous row
            "anomaly_columns": {int(r): FEATURES[int(np.argmax(moved[r]))] for r in anomalies}}


def _train(data_file, root: Path, version: str, **kwargs) -> dict:
    options = dict(epochs=15, seed=0, batch_size=64, window=1) | kwargs  # window 1 unless a test asks
    return service.train(str(data_file), version=version, store=ModelStore(root), **options)


@pytest.fixture(scope="session")
def trained(tmp_path_factory, dataset) -> dict:
    """A real dense model (window 1) trained on `dataset["train"]`, saved as version `v1` in its own store.
    Read-only: copy it with `copy_store` before changing anything."""
    root = tmp_path_factory.mktemp("store") / "models"
    result = _train(dataset["train"], root, "v1")
    return {"root": root, "version": "v1", "result": result, "store": ModelStore(root),
            "dir": root / "v1"}


@pytest.fixture(scope="session")
def trained_window(tmp_path_factory, dataset) -> dict:
    """A real window model (`--window 5`) trained on the first 600 training rows; version `w5`."""
    folder = tmp_path_factory.mktemp("wstore")
    small = folder / "train_small.csv"
    dataset["train_frame"].iloc[:600].to_csv(small, index=False, float_format="%.5f")
    root = folder / "models"
    result = _train(small, root, "w5", window=5, epochs=8)
    return {"root": root, "version": "w5", "result": result, "store": ModelStore(root), "dir": root / "w5"}


@pytest.fixture
def copy_store(tmp_path):
    """`copy_store(trained)` -> a private copy of a trained fixture's store (root Path) to modify freely."""
    def copy(fixture: dict) -> Path:
        dest = tmp_path / f"copy_{fixture['version']}"
        shutil.copytree(fixture["root"], dest)
        return dest
    return copy
