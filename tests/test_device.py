"""`--device` and `--precision`: resolution, device-neutral weights, equal scores on `cpu` and `auto`, the bf16
tolerance, and the model card. CI has no GPU: tests marked `gpu` are skipped without CUDA (conftest)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from anomaly import device as devices
from anomaly import service, synthetic
from anomaly.detector import Detector
from anomaly.errors import DeviceError
from anomaly.store import ModelStore

# bf16 mixed precision against fp32, per-row scores of the same model (docs/guides/gpu.md). Measured on CPU on the
# synthetic sensor data: max relative difference 0.6% at the default window 32, 1.8% row-wise unsmoothed;
# Spearman rank correlation >= 0.9999 for every model type.
BF16_MAX_REL = 0.05
BF16_MIN_SPEARMAN = 0.999
HAS_CUDA = torch.cuda.is_available()
HAS_GPU = HAS_CUDA or devices._mps_available()
FEATURES = ["sensor_0", "sensor_1", "sensor_2", "sensor_3"]


@pytest.fixture(scope="module")
def series() -> tuple[np.ndarray, np.ndarray]:
    train = synthetic.make_series(800, seed=0)[FEATURES].to_numpy(np.float32)
    test = synthetic.inject(synthetic.make_series(600, seed=2), n_anomalies=10, magnitude=6.0, seed=1)
    return train, test[FEATURES].to_numpy(np.float32)


# --- resolution --------------------------------------------------------------------------------------------


def test_auto_prefers_cuda_then_mps_then_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(devices, "_mps_available", lambda: False)
    assert devices.resolve_device("auto") == torch.device("cpu")
    monkeypatch.setattr(devices, "_mps_available", lambda: True)
    assert devices.resolve_device("auto") == torch.device("mps")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    assert devices.resolve_device("auto") == torch.device("cuda", 0)


@pytest.mark.skipif(HAS_GPU, reason="this machine has a GPU")
def test_auto_is_the_cpu_on_a_machine_without_a_gpu():
    assert devices.resolve_device("auto") == devices.resolve_device(None) == torch.device("cpu")


def test_cpu_by_any_spelling():
    for name in ("cpu", " CPU ", torch.device("cpu")):
        assert devices.resolve_device(name) == torch.device("cpu")


@pytest.mark.parametrize("name", ["tpu", "gpu", "cuda:x", "cuda:-1", "cpu:0", "vulkan"])
def test_unknown_devices_are_refused(name):
    with pytest.raises(DeviceError, match="unknown device") as err:
        devices.resolve_device(name)
    assert "\n" not in str(err.value) and "auto, cpu, cuda, cuda:N, mps" in str(err.value)


@pytest.mark.skipif(HAS_CUDA, reason="this machine has CUDA")
@pytest.mark.parametrize("name", ["cuda", "cuda:0", "cuda:3"])
def test_cuda_is_refused_without_cuda(name):
    with pytest.raises(DeviceError, match="not available") as err:
        devices.resolve_device(name)
    assert "\n" not in str(err.value) and name in str(err.value)


def test_precision_is_checked_against_the_device():
    cpu = torch.device("cpu")
    assert devices.check_precision("fp32", cpu) == torch.float32
    assert devices.check_precision("bf16", cpu) == torch.bfloat16
    with pytest.raises(DeviceError, match="fp16 needs a CUDA device"):
        devices.check_precision("fp16", cpu)
    with pytest.raises(DeviceError, match="unknown precision"):
        devices.check_precision("fp8", cpu)


@pytest.mark.skipif(HAS_CUDA, reason="this machine has CUDA")
def test_cli_refuses_an_unavailable_or_unknown_device_in_one_line(cli, user_error, dataset, trained, tmp_path):
    user_error(cli("train.py", "--data", dataset["train_small"], "--model-dir", tmp_path / "m", "--epochs", "1",
                   "--device", "cuda"), "cuda", "not available")
    user_error(cli("detect.py", "--data", dataset["test"], "--model-dir", trained["root"], "--device", "tpu"),
               "unknown device 'tpu'")
    user_error(cli("train.py", "--data", dataset["train_small"], "--model-dir", tmp_path / "m", "--epochs", "1",
                   "--precision", "fp16"), "fp16 needs a CUDA device")
    assert not (tmp_path / "m").exists() or not list((tmp_path / "m").iterdir())  # nothing was saved


@pytest.mark.skipif(HAS_CUDA, reason="this machine has CUDA")
def test_server_refuses_to_start_on_a_device_it_lacks(user_error, tmp_path):
    import subprocess

    from conftest import PYTHON, REPO, cli_env
    proc = subprocess.run([PYTHON, str(REPO / "server.py"), "--port", "1", "--device", "cuda:1"], cwd=tmp_path,
                          env=cli_env(), capture_output=True, text=True, timeout=60)
    user_error(proc, "cuda:1", "not available")


# --- weights, scores, model card ---------------------------------------------------------------------------


def test_weights_are_saved_device_neutral_and_load_anywhere(trained_window):
    paths = trained_window["store"].paths("w5")
    state = torch.load(paths.model, weights_only=True)  # no map_location: tensors land where they were saved
    assert state and all(t.device.type == "cpu" for t in state.values())
    X = np.random.default_rng(0).normal(size=(300, 4)).astype(np.float32)
    on_cpu = Detector.load(paths, device="cpu")
    on_auto = Detector.load(paths, device="auto")
    assert on_cpu.device_ == torch.device("cpu") and on_auto.device_ == devices.resolve_device("auto")
    np.testing.assert_allclose(on_auto.decision_function(X), on_cpu.decision_function(X), rtol=1e-5, equal_nan=True)


def test_scores_are_equal_on_cpu_and_auto(cli, trained_window, dataset, tmp_path):
    """`detect --device cpu` and `--device auto` give the same per-row scores (identical without a GPU)."""
    out = {}
    for name in ("cpu", "auto"):
        proc = cli("detect.py", "--data", dataset["test"], "--model-dir", trained_window["root"], "--version", "w5",
                   "--device", name, "--output", tmp_path / f"{name}.csv", "--json")
        assert proc.returncode == 0, proc.stderr
        out[name] = np.genfromtxt(tmp_path / f"{name}.csv", delimiter=",", names=True)["reconstruction_error"]
    if HAS_GPU:
        np.testing.assert_allclose(out["auto"], out["cpu"], rtol=1e-4, equal_nan=True)
    else:
        assert np.array_equal(out["auto"], out["cpu"], equal_nan=True)


def test_model_card_records_device_precision_and_training_time(trained, cli):
    config = json.loads((trained["dir"] / "model_config.json").read_text())
    assert config["device"] == str(devices.resolve_device("auto"))  # the fixture trains with the default, auto
    assert config["precision"] == "fp32" and config["device_name"]
    assert 0 < config["train_seconds"] < 600
    assert trained["result"]["device"] == config["device"] and trained["result"]["precision"] == "fp32"
    info = service.model_info("v1", trained["store"])
    assert {k: info[k] for k in ("device", "device_name", "precision", "train_seconds")} == \
        {k: config[k] for k in ("device", "device_name", "precision", "train_seconds")}
    shown = cli("anomaly", "models", "show", "v1", "--model-dir", trained["root"])
    assert shown.returncode == 0 and json.loads(shown.stdout)["train_seconds"] == config["train_seconds"]


@pytest.mark.parametrize("model_type,window,smooth", [
    ("dense", 8, None), ("lstm", 8, None), ("transformer", 8, None), ("vae", 8, None), ("dense", 1, 1)])
def test_bf16_scores_are_within_the_stated_tolerance_of_fp32(series, model_type, window, smooth):
    train, test = series
    det = Detector(model_type=model_type, window=window, smooth=smooth, epochs=3, batch_size=64,
                   device="cpu").fit(train)
    fp32 = det.decision_function(test)
    det.precision = "bf16"
    bf16 = det.decision_function(test)
    ok = np.isfinite(fp32)
    assert np.array_equal(ok, np.isfinite(bf16))
    assert np.max(np.abs(bf16[ok] - fp32[ok]) / np.abs(fp32[ok])) <= BF16_MAX_REL
    assert spearmanr(bf16[ok], fp32[ok])[0] >= BF16_MIN_SPEARMAN


def test_bf16_training_on_cpu(series, tmp_path):
    train, test = series
    # bf16 training: a neural model (pca is fitted in closed form, in float64, whatever the precision)
    det = Detector(model_type="dense", window=8, epochs=3, batch_size=64, device="cpu", precision="bf16").fit(train)
    assert all(np.isfinite(det.history_["loss"])) and det.history_["loss"][-1] < det.history_["loss"][0]
    store = ModelStore(tmp_path / "models")
    name = store.save(lambda p: det.save(p), version="bf16")
    assert json.loads(store.paths(name).config.read_text())["precision"] == "bf16"
    assert np.isfinite(Detector.load(store.paths(name), device="cpu").decision_function(test)).all()


# --- GPU only (skipped without CUDA) -----------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize("model_type", ["dense", "lstm", "transformer", "vae"])
def test_gpu_training_and_scoring_match_the_cpu(series, model_type, tmp_path):
    train, test = series
    det = Detector(model_type=model_type, window=8, epochs=3, batch_size=64, device="cuda").fit(train)
    assert det.device_.type == "cuda" and next(det.model_.parameters()).is_cuda
    store = ModelStore(tmp_path / "models")
    name = store.save(lambda p: det.save(p), version="gpu")
    assert json.loads(store.paths(name).config.read_text())["device"].startswith("cuda")
    on_cpu = Detector.load(store.paths(name), device="cpu")  # trained on the GPU, scored on the CPU
    np.testing.assert_allclose(on_cpu.decision_function(test), det.decision_function(test), rtol=1e-3, atol=1e-5,
                               equal_nan=True)


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_gpu_mixed_precision_stays_within_the_tolerance(series, precision):
    train, test = series
    det = Detector(window=8, epochs=3, batch_size=64, device="cuda", precision=precision).fit(train)
    assert all(np.isfinite(det.history_["loss"]))
    mixed = det.decision_function(test)
    det.precision = "fp32"
    fp32 = det.decision_function(test)
    ok = np.isfinite(fp32)
    assert np.max(np.abs(mixed[ok] - fp32[ok]) / np.abs(fp32[ok])) <= BF16_MAX_REL
    assert spearmanr(mixed[ok], fp32[ok])[0] >= BF16_MIN_SPEARMAN
