"""End to end: the real server.py, the mcp SDK's own client over /sse and over /mcp (Streamable HTTP)."""

from __future__ import annotations

import csv
import json
import threading
import time

import anyio
import httpx
import numpy as np
import pytest

from anomaly import synthetic

from serverproc import ServerProcess, mcp_client, server_dirs, tool_json

TRANSPORTS = ["sse", "http"]


@pytest.fixture(scope="module")
def server(tmp_path_factory, dataset, trained):
    tmp = tmp_path_factory.mktemp("mcp_server")
    data_root, model_dir = server_dirs(tmp, dataset, trained)
    srv = ServerProcess(tmp, data_root, model_dir)
    yield srv
    srv.stop()


def call(server, transport, name, arguments=None, progress=None):
    async def run():
        async with mcp_client(server, transport) as client:
            return await client.call_tool(name, arguments or {}, progress_callback=progress)
    return anyio.run(run)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_tools_are_listed_with_typed_described_arguments(server, transport):
    async def run():
        async with mcp_client(server, transport) as client:
            return (await client.list_tools()).tools
    tools = {t.name: t for t in anyio.run(run)}
    assert set(tools) == {"run_detection", "get_model_info", "train_model", "list_models", "run_fleet_detection"}
    detect = tools["run_detection"].input_schema
    assert detect["required"] == ["file_path"]
    props = detect["properties"]
    assert {"file_path", "model_path", "threshold_path", "scaler_path", "config_path", "version", "return_details",
            "max_results"} <= set(props)
    assert props["return_details"]["default"] is True and props["file_path"]["description"]
    train = tools["train_model"].input_schema["properties"]
    assert train["epochs"]["default"] == 100 and train["batch_size"]["default"] == 32
    assert train["learning_rate"]["default"] == 0.001 and train["percentile"]["default"] == 95.0
    assert "model_type" in train and "window" in train and "encoding_dim" in train
    assert tools["run_detection"].output_schema["properties"]["anomaly_count"]["type"] == "integer"


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_run_detection_finds_the_injected_anomalies(server, dataset, transport):
    result = tool_json(call(server, transport, "run_detection", {"file_path": "test.csv", "version": "v1"}))
    assert result["status"] == "success" and result["total_rows"] == len(dataset["test_frame"])
    flagged = {r["index"] for r in result["results"] if r["is_anomaly"]}
    assert len(flagged) == result["anomaly_count"]
    recall = np.isin(dataset["anomalies"], sorted(flagged)).mean()
    assert recall >= 0.8, recall
    # The full per-row results are in the CSV whose path is returned.
    with open(result["output"]) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == result["total_rows"]
    assert sum(r["is_anomaly"] == "1" for r in rows) == result["anomaly_count"]


def test_results_are_capped_anomalies_first_and_stay_small(server, dataset):
    result = tool_json(call(server, "sse", "run_detection", {"file_path": "test.csv", "max_results": 5}))
    assert len(result["results"]) == 5 and result["results_truncated"] is True
    assert all(r["is_anomaly"] for r in result["results"])
    assert result["output"].endswith(".csv")
    # A big file with the largest cap still gives a reply far below the 1 MiB MCP clients can take.
    big = synthetic.make_series(20_000, seed=5)
    big.to_csv(server.data_root / "big.csv", index=False, float_format="%.5f")
    seen = []

    async def progress(value, total, message):
        seen.append(value)

    reply = call(server, "sse", "run_detection", {"file_path": "big.csv", "max_results": 5000}, progress)
    data = tool_json(reply)
    assert seen and seen[-1] == 20_000  # rows scored, reported as MCP progress
    assert len(reply.content[0].text) + len(json.dumps(reply.structured_content)) < 1 << 20
    assert data["total_rows"] == 20_000 and data["results_truncated"] is True and 0 < len(data["results"]) <= 5000


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_get_model_info_and_list_models(server, trained, transport):
    info = tool_json(call(server, transport, "get_model_info", {"version": "v1"}))
    assert info["features"] == trained["result"]["features"] and info["window"] == 1
    assert info["threshold"] == pytest.approx(trained["result"]["threshold"])
    assert info["threshold_method"] == "percentile" and info["created"] and info["history"]["loss"]
    assert info["data"]["rows"] == trained["result"]["rows"]
    listed = tool_json(call(server, transport, "list_models"))
    assert "v1" in [m["version"] for m in listed["models"]]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_train_reports_progress_and_saves_a_new_version(server, transport):
    seen = []

    async def progress(value, total, message):
        seen.append((value, total, message))

    result = tool_json(call(server, transport, "train_model", {"data_file": "train.csv", "epochs": 3,
                                                                "version": f"mcp-{transport}"}, progress))
    assert result["version"] == f"mcp-{transport}" and result["epochs_run"] == 3
    assert [s[0] for s in seen] == [1, 2, 3] and all(s[1] == 3 for s in seen)
    assert all("loss" in s[2] for s in seen)
    detected = tool_json(call(server, transport, "run_detection", {"file_path": "test.csv",
                                                                   "version": f"mcp-{transport}"}))
    assert detected["version"] == f"mcp-{transport}"
    # Never overwrites: the same version again is an error result, and the saved one is untouched.
    again = call(server, transport, "train_model", {"data_file": "train.csv", "epochs": 1,
                                                    "version": f"mcp-{transport}"})
    assert again.is_error and "already exists" in again.content[0].text


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_errors_are_error_results_and_the_session_survives(server, transport):
    (server.data_root / "wrong.csv").write_text("a,b\n1,2\n3,4\n")

    async def run():
        async with mcp_client(server, transport) as client:
            out = {}
            for label, name, args in [
                ("unknown version", "run_detection", {"file_path": "test.csv", "version": "nope"}),
                ("missing file", "run_detection", {"file_path": "missing.csv"}),
                ("wrong columns", "run_detection", {"file_path": "wrong.csv", "version": "v1"}),
                ("bad argument", "run_detection", {"file_path": "test.csv", "max_results": -1}),
                ("bad epochs", "train_model", {"data_file": "train.csv", "epochs": 0}),
                ("missing argument", "run_detection", {}),
                ("unknown model type", "train_model", {"data_file": "train.csv", "model_type": "nope"}),
            ]:
                out[label] = await client.call_tool(name, args)
            out["after"] = await client.call_tool("list_models", {})
            return out

    out = anyio.run(run)
    for label in list(out)[:-1]:
        assert out[label].is_error, label
    assert "not found" in out["unknown version"].content[0].text
    assert "missing.csv" in out["missing file"].content[0].text
    assert "sensor_0" in out["wrong columns"].content[0].text
    assert "max_results" in out["bad argument"].content[0].text
    assert "epochs" in out["bad epochs"].content[0].text
    assert "file_path" in out["missing argument"].content[0].text
    assert "nope" in out["unknown model type"].content[0].text
    assert not out["after"].is_error


def test_training_and_ten_detections_run_concurrently_and_health_stays_fast(server):
    health_times, stop = [], threading.Event()

    def poll_health():
        with httpx.Client(base_url=server.url, timeout=5) as http:
            while not stop.is_set():
                t0 = time.perf_counter()
                r = http.get("/health")
                health_times.append((time.perf_counter() - t0, r.json()["training_running"]))
                time.sleep(0.05)

    async def run():
        results = {}

        async def train():
            async with mcp_client(server, "http") as client:
                results["train"] = await client.call_tool("train_model", {"data_file": "train.csv", "epochs": 25,
                                                                          "version": "concurrent"})

        async def detect(i):
            await anyio.sleep(0.5)  # let the training start first
            async with mcp_client(server, TRANSPORTS[i % 2]) as client:
                results[i] = await client.call_tool("run_detection", {"file_path": "test.csv", "version": "v1"})

        async with anyio.create_task_group() as tg:
            tg.start_soon(train)
            for i in range(10):
                tg.start_soon(detect, i)
        return results

    poller = threading.Thread(target=poll_health)
    poller.start()
    try:
        results = anyio.run(run)
    finally:
        stop.set()
        poller.join()
    assert not results["train"].is_error, results["train"].content[0].text
    counts = {tool_json(results[i])["anomaly_count"] for i in range(10)}
    assert len(counts) == 1  # the same model on the same file: the same answer every time
    during = [t for t, training in health_times if training]
    assert during, "no /health answer was seen while the training ran"
    assert max(t for t, _ in health_times) < 0.5, sorted(health_times)[-5:]


def test_device_argument_of_train_model_and_run_detection(server):
    trained = tool_json(call(server, "http", "train_model", {"data_file": "train.csv", "epochs": 1, "window": 1,
                                                             "version": "mcp-cpu", "device": "cpu"}))
    assert trained["device"] == "cpu"
    detected = tool_json(call(server, "http", "run_detection", {"file_path": "test.csv", "version": "mcp-cpu",
                                                                "device": "cpu", "max_results": 0}))
    assert detected["status"] == "success"
    bad = call(server, "http", "run_detection", {"file_path": "test.csv", "version": "v1", "device": "tpu"})
    assert bad.is_error and "unknown device 'tpu'" in bad.content[0].text
