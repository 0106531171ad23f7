"""`mcp_tool.py`: the classic in-process API returns the same result dicts as the MCP tools."""

from __future__ import annotations

import csv
import shutil

import numpy as np
import pytest

import mcp_tool
from mcp_tool import MCPAnomalyDetectionTool


@pytest.fixture
def workdir(tmp_path, monkeypatch, trained, dataset):
    shutil.copytree(trained["root"], tmp_path / "models")
    shutil.copy(dataset["test"], tmp_path / "test.csv")
    shutil.copy(dataset["train"], tmp_path / "train.csv")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_run_detection_with_a_version(workdir, dataset):
    result = MCPAnomalyDetectionTool(version="v1").run_detection("test.csv", max_results=20)
    assert result["status"] == "success" and result["total_rows"] == len(dataset["test_frame"])
    assert {"anomaly_count", "anomaly_ratio", "threshold", "results", "results_truncated", "output"} <= set(result)
    assert len(result["results"]) == 20 and result["results_truncated"]
    full = MCPAnomalyDetectionTool(version="v1").run_detection("test.csv")
    flagged = [r["index"] for r in full["results"] if r["is_anomaly"]]
    assert np.isin(dataset["anomalies"], flagged).mean() >= 0.8
    assert flagged[:20] == [r["index"] for r in result["results"]]  # capped: anomalies first
    with open(result["output"]) as f:
        assert sum(1 for _ in csv.DictReader(f)) == result["total_rows"]
    assert result["output"].startswith(str(workdir / "results"))


def test_classic_explicit_paths_and_module_functions(workdir, trained):
    folder = workdir / "models" / "v1"
    tool = MCPAnomalyDetectionTool(model_path=str(folder / "model.pth"), threshold_path=str(folder / "threshold.json"),
                                   scaler_path=str(folder / "scaler.pkl"))
    info = tool.get_model_info()
    assert info["features"] == trained["result"]["features"]
    assert info["threshold"] == pytest.approx(trained["result"]["threshold"])
    by_paths = tool.run_detection("test.csv")
    by_module = mcp_tool.run_detection("test.csv")  # the latest model in ./models: v1
    assert by_paths["anomaly_count"] == by_module["anomaly_count"] > 0
    assert mcp_tool.get_model_info()["version"] == "v1"


def test_train_model_makes_a_new_version_and_never_overwrites(workdir):
    result = mcp_tool.train_model("train.csv", version="tool-v", epochs=2, model_type="dense")  # epochs: neural
    pca = mcp_tool.train_model("train.csv", version="tool-pca")  # the default pca: one closed-form step
    assert pca["status"] == "success" and pca["model_type"] == "pca" and pca["epochs_run"] == 1
    assert result["status"] == "success" and result["version"] == "tool-v" and result["epochs_run"] == 2
    assert "tool-v" in {m["version"] for m in mcp_tool.list_models()["models"]}
    again = mcp_tool.train_model("train.csv", version="tool-v", epochs=1)
    assert again == {"status": "error", "error": again["error"], "error_type": "VersionExists"}
    assert MCPAnomalyDetectionTool(version="tool-v").run_detection("test.csv")["version"] == "tool-v"


def test_errors_are_status_dicts(workdir):
    assert MCPAnomalyDetectionTool(version="nope").run_detection("test.csv")["error_type"] == "NotFound"
    missing = MCPAnomalyDetectionTool(version="v1").run_detection("missing.csv")
    assert missing["status"] == "error" and "missing.csv" in missing["error"]


def test_train_with_window_auto_records_the_estimated_period(workdir):
    # the synthetic sensors cycle every 50 rows
    result = MCPAnomalyDetectionTool().train_model("train.csv", version="auto", epochs=2, window="auto")
    assert result["status"] == "success" and 45 <= result["window"] <= 55
    info = MCPAnomalyDetectionTool(version="auto").get_model_info()
    assert info["window"] == result["window"]


def test_device_for_the_tool_and_for_each_call(workdir):
    trained = MCPAnomalyDetectionTool(device="cpu").train_model("train.csv", version="on-cpu", epochs=1, window=1)
    assert trained["status"] == "success" and trained["device"] == "cpu"
    ok = MCPAnomalyDetectionTool(version="on-cpu").run_detection("test.csv", max_results=0, device="cpu")
    assert ok["status"] == "success"
    bad = MCPAnomalyDetectionTool(version="on-cpu", device="tpu").run_detection("test.csv")
    assert bad["status"] == "error" and bad["error_type"] == "DeviceError" and "unknown device" in bad["error"]
