"""End to end: the real server.py, the mcp SDK's own client over /sse and over /mcp (Streamable HTTP)."""

from __future__ import annotations

import csv
import json
import sys
import threading
import time
from pathlib import Path

import anyio
import httpx
import numpy as np
import pandas as pd
import pytest

from anomaly import defaults, synthetic, thresholds
from anomaly.models import MODEL_TYPES

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
    # Choices are enums derived from the registries: a newly registered model type or method shows up here.
    assert train["model_type"]["enum"] == list(MODEL_TYPES)
    assert train["threshold_method"]["enum"] == list(thresholds.METHODS)
    assert {"threshold_method", "columns", "smooth", "window"} <= set(train)
    assert props["max_results"]["default"] == defaults.MCP_MAX_RESULTS
    # run_detection's reply is one JSON text (no output schema, so no structured copy of it); the small
    # tools keep theirs.
    assert tools["run_detection"].output_schema is None
    assert tools["get_model_info"].output_schema["properties"]["window"]["type"] == "integer"
    # The classic path arguments stay, in one short line each; no schema carries pydantic's titles.
    for tool in ("run_detection", "get_model_info", "train_model"):
        schema = tools[tool].input_schema
        for name in ("model_path", "threshold_path", "scaler_path", "config_path"):
            text = schema["properties"][name]["description"]
            assert len(text) <= 50 and "\n" not in text, (tool, name, text)
        assert '"title"' not in json.dumps(schema), tool


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_run_detection_finds_the_injected_anomalies(server, dataset, transport):
    result = tool_json(call(server, transport, "run_detection", {"file_path": "test.csv", "version": "v1"}))
    assert result["status"] == "success" and result["total_rows"] == len(dataset["test_frame"])
    # The reply holds the first anomalous rows (capped); the full per-row results are in the CSV it names.
    assert 0 < len(result["results"]) <= defaults.MCP_MAX_RESULTS < result["anomaly_count"]
    assert all(r["is_anomaly"] for r in result["results"]) and result["results_truncated"] is True
    with open(result["output"]) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == result["total_rows"]
    flagged = [i for i, r in enumerate(rows) if r["is_anomaly"] == "1"]
    assert len(flagged) == result["anomaly_count"]
    assert [r["index"] for r in result["results"]] == flagged[:len(result["results"])]
    recall = np.isin(dataset["anomalies"], flagged).mean()
    assert recall >= 0.8, recall


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
    assert reply.structured_content is None and len(reply.model_dump_json(by_alias=True)) < 1 << 20
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
                                                                "version": f"mcp-{transport}",
                                                                "model_type": "dense"}, progress))
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
    # the default pca is fitted in one step: a single progress report, epoch 1 of 1
    seen.clear()
    pca = tool_json(call(server, transport, "train_model", {"data_file": "train.csv",
                                                             "version": f"mcp-pca-{transport}"}, progress))
    assert pca["version"] == f"mcp-pca-{transport}" and pca["epochs_run"] == 1
    assert [(s[0], s[1]) for s in seen] == [(1, 1)]


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
                # dense: a training that lasts (the pca default is fitted in ~0.1 s, between two /health polls)
                results["train"] = await client.call_tool("train_model", {"data_file": "train.csv", "epochs": 25,
                                                                          "version": "concurrent",
                                                                          "model_type": "dense"})

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


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator; faults read from /proc")
def test_repeated_detections_reuse_the_heap_instead_of_faulting_it_in_again(server):
    """The server keeps the heap a detection freed for the next one (`memory.keep_freed_heap`). With glibc's
    defaults its scoring thread gave 5-8 MB back after every call on a 10,000-row file, and the next call
    faulted ~2,000 pages in again (~4 ms of CPU on 2 cores)."""
    frame = synthetic.inject(synthetic.make_series(10_000, seed=11), n_anomalies=50).drop(columns="label")
    frame.to_csv(server.data_root / "heap.csv", index=False, float_format="%.5f")
    stat = Path(f"/proc/{server.proc.pid}/stat")

    async def faults_per_call():
        async with mcp_client(server, "http") as client:
            trained = await client.call_tool("train_model", {"data_file": "train.csv", "version": "heap"})  # pca
            assert not trained.is_error, trained.content[0].text
            for i in range(8):
                if i == 3:  # the first calls warm up: the model loaded, the heap grown to its size
                    before = int(stat.read_text().rsplit(")", 1)[1].split()[7])  # minflt
                reply = await client.call_tool("run_detection", {"file_path": "heap.csv", "version": "heap"})
                assert not reply.is_error, reply.content[0].text
        return (int(stat.read_text().rsplit(")", 1)[1].split()[7]) - before) / 5

    assert anyio.run(faults_per_call) < 1000


def test_device_argument_of_train_model_and_run_detection(server):
    trained = tool_json(call(server, "http", "train_model", {"data_file": "train.csv", "epochs": 1, "window": 1,
                                                             "version": "mcp-cpu", "device": "cpu"}))
    assert trained["device"] == "cpu"
    detected = tool_json(call(server, "http", "run_detection", {"file_path": "test.csv", "version": "mcp-cpu",
                                                                "device": "cpu", "max_results": 0}))
    assert detected["status"] == "success"
    bad = call(server, "http", "run_detection", {"file_path": "test.csv", "version": "v1", "device": "tpu"})
    assert bad.is_error and "unknown device 'tpu'" in bad.content[0].text


# --- replies sized for an LLM, resources, prompt -----------------------------------------------------------



def significant_digits(x: float) -> int:
    """Significant digits of a float as JSON writes it (repr: the shortest text that reads back the same)."""
    mantissa = repr(float(x)).split("e")[0].replace("-", "").replace(".", "")
    return len(mantissa.strip("0"))


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_default_reply_on_a_2000_row_file_is_small_with_times_features_and_segments(server, transport):
    frame = synthetic.inject_incidents(synthetic.make_series(2000, seed=7)).drop(columns="label")
    frame.to_csv(server.data_root / "incidents.csv", index=False, float_format="%.5f")
    reply = call(server, transport, "run_detection", {"file_path": "incidents.csv", "version": "v1"})
    assert not reply.is_error, reply.content[0].text
    # Sized as a client receives it: the whole result, and the text the model reads; no structured copy.
    whole = reply.model_dump_json(by_alias=True, exclude_none=True)
    assert len(whole) <= 12_000 and len(reply.content[0].text) <= 12_000, (len(whole), len(reply.content[0].text))
    assert reply.structured_content is None and len(reply.content) == 1
    data = json.loads(reply.content[0].text)
    assert {"status", "total_rows", "anomaly_count", "anomaly_ratio", "threshold", "results"} <= set(data)
    assert data["total_rows"] == 2000 and data["anomaly_count"] > len(data["results"]) > 0
    times = frame["timestamp"].tolist()
    for row in data["results"]:  # anomalous rows first, each with its time and the features that drove it
        assert row["is_anomaly"] is True and row["time"] == times[row["index"]]
        assert row["top_features"] and row["top_features"][0]["feature"].startswith("sensor_")
    # Segments (incidents) with their start and end times; the injected level shift at rows 300-339 is one.
    segments = data["top_anomalies"]
    assert len(segments) >= 3 and data["anomaly_segments"] >= len(segments)
    for seg in segments:
        assert seg["first_time"] == times[seg["first_row"]] and seg["last_time"] == times[seg["last_row"]]
    assert any(seg["first_row"] <= 320 <= seg["last_row"] for seg in segments)
    # Floats are rounded to 6 significant digits.
    floats = [data["threshold"], data["anomaly_ratio"], *(r["reconstruction_error"] for r in data["results"]),
              *(s["reconstruction_error"] for s in segments)]
    assert all(significant_digits(x) <= 6 for x in floats), floats
    assert any(significant_digits(x) == 6 for x in floats)  # rounded, not truncated to fewer
    # Every row is in the CSV whose path is returned, at full precision.
    out = pd.read_csv(data["output"])
    assert len(out) == 2000 and int(out["is_anomaly"].sum()) == data["anomaly_count"]
    # Asking for more rows lifts the 12,000-character budget (up to the 1 MiB a client accepts).
    more = tool_json(call(server, transport, "run_detection", {"file_path": "incidents.csv", "version": "v1",
                                                               "max_results": 200}))
    assert len(more["results"]) == 200 and len(json.dumps(more)) > 12_000


def test_lean_reply_keeps_to_the_budget_whatever_the_rows_hold():
    from anomaly.summary import lean_reply

    wide = [{"index": i, "time": "2026-01-01 00:00:00", "reconstruction_error": 1 / 3, "is_anomaly": True,
             "top_features": [{"feature": "a_very_long_feature_name_" * 4 + str(j), "share": 0.333333333}
                              for j in range(3)]} for i in range(25)]
    summary = {"status": "success", "total_rows": 2000, "anomaly_count": 25, "anomaly_ratio": 0.0125,
               "threshold": 0.123456789, "results": wide, "results_truncated": True, "output": "/x.csv"}
    lean = lean_reply(summary)
    text = json.dumps(lean, separators=(",", ":"))
    assert len(json.dumps(text)) + 200 <= 12_000 < len(json.dumps(json.dumps(summary)))
    assert 0 < len(lean["results"]) < 25 and lean["results"] == [
        {**r, "reconstruction_error": 0.333333, "top_features": [{**f, "share": 0.333333} for f in r["top_features"]]}
        for r in wide[:len(lean["results"])]]
    assert lean["threshold"] == 0.123457 and lean["output"] == "/x.csv"
    assert lean_reply(summary, None)["results"].__len__() == 25  # no budget: every row, rounded


def test_train_model_takes_threshold_method_columns_window_and_smoothing(server):
    args = {"data_file": "train.csv", "version": "mcp-options", "epochs": 2, "threshold_method": "meanstd",
            "k": 4.0, "columns": ["sensor_0", "sensor_2"], "window": 4, "smooth": 3, "model_type": "dense"}
    trained = tool_json(call(server, "http", "train_model", args))
    assert trained["features"] == ["sensor_0", "sensor_2"] and trained["window"] == 4
    info = tool_json(call(server, "http", "get_model_info", {"version": "mcp-options"}))
    assert info["threshold_method"] == "meanstd" and info["threshold_params"] == {"k": 4.0}
    assert info["features"] == ["sensor_0", "sensor_2"] and info["window"] == 4
    config = json.loads((server.model_dir / "mcp-options" / "model_config.json").read_text())
    assert config["smooth"] == 3
    bad = call(server, "http", "train_model", {"data_file": "train.csv", "threshold_method": "median"})
    assert bad.is_error and "threshold_method" in bad.content[0].text


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_model_resources_and_the_investigate_prompt(server, trained, transport):
    async def run():
        async with mcp_client(server, transport) as client:
            listed = (await client.list_resources()).resources
            templates = (await client.list_resource_templates()).resource_templates
            index = (await client.read_resource("anomaly://models")).contents[0]
            card = (await client.read_resource("anomaly://models/v1")).contents[0]
            try:
                await client.read_resource("anomaly://models/nope")
                missing = None
            except Exception as exc:  # the SDK raises the server's error
                missing = str(exc)
            prompts = (await client.list_prompts()).prompts
            prompt = await client.get_prompt("investigate_anomalies", {"file_path": "incidents.csv",
                                                                       "version": "v1"})
            return listed, templates, index, card, missing, prompts, prompt

    listed, templates, index, card, missing, prompts, prompt = anyio.run(run)
    uris = {str(r.uri) for r in listed}
    assert {"anomaly://models", "anomaly://models/v1"} <= uris  # every version's card is listed
    assert [t.uri_template for t in templates] == ["anomaly://models/{version}"]
    models = json.loads(index.text)["models"]
    v1 = next(m for m in models if m["version"] == "v1")
    assert v1["card"] == "anomaly://models/v1" and v1["features"] == trained["result"]["features"]
    assert card.mime_type == "text/markdown" and card.text.startswith("# Model v1")
    assert "sensor_0, sensor_1, sensor_2, sensor_3" in card.text and "by percentile" in card.text
    assert f"{trained['result']['threshold']:.6g}" in card.text
    assert missing and "nope" in missing
    assert [p.name for p in prompts] == ["investigate_anomalies"]
    assert {a.name: a.required for a in prompts[0].arguments} == {"file_path": True, "version": False}
    text = prompt.messages[0].content.text
    assert "incidents.csv" in text and "run_detection" in text and "version='v1'" in text


def test_mcp_paths_outside_the_transports_keep_their_http_answers(server):
    """The MCP routes are served before FastAPI's stack; what they do not match in full is still FastAPI's."""
    with httpx.Client(base_url=server.url, timeout=10) as http:
        assert http.post("/sse").status_code == 405  # /sse is GET only
        assert http.get("/mcpx").status_code == 404
        assert http.get("/messages/", params={"session_id": "0" * 32}).status_code == 405  # POST only
        assert http.get("/messages").status_code == 307  # to /messages/, as FastAPI's router redirects
        assert http.get("/health").status_code == 200


def test_coalescing_transport_sends_a_response_head_with_its_body():
    from anomaly.server.app import CoalescingTransport

    class Transport:
        def __init__(self):
            self.sent, self.closed, self.aborted = [], False, False

        def write(self, data):
            self.sent.append(data)

        def is_closing(self):
            return self.closed

        def close(self):
            self.closed = True

        def abort(self):
            self.aborted = True

        def get_write_buffer_size(self):
            return 0

        def get_extra_info(self, name):
            return f"info:{name}"

    class Loop:
        def __init__(self):
            self.ready = []

        def call_soon(self, fn):
            self.ready.append(fn)

        def step(self):
            ready, self.ready = self.ready, []
            for fn in ready:
                fn()

    real, loop = Transport(), Loop()
    t = CoalescingTransport(real, loop)
    head = b"HTTP/1.1 200 OK\r\ncontent-length: 8\r\n\r\n"
    t.write(head)
    t.write(b"")
    assert real.sent == [] and t.get_write_buffer_size() == len(head)
    t.write(bytearray(b'{"a": 1}'))
    assert real.sent == [head + b'{"a": 1}']  # status line, headers and body: one send, at once
    loop.step()
    assert len(real.sent) == 1
    t.write(b"data: event\r\n\r\n")  # not a head: straight out
    assert real.sent[-1] == b"data: event\r\n\r\n"
    t.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")  # a stream's head alone...
    loop.step()  # ...leaves at the end of the step
    assert real.sent[-1].startswith(b"HTTP/1.1 200 OK") and len(real.sent) == 3
    t.write(head)
    t.close()  # a held head leaves before the close
    assert real.sent[-1] == head and real.closed
    t.write(b"after")
    loop.step()
    assert real.sent[-1] == head  # nothing is written to a closed transport
    t2 = CoalescingTransport(Transport(), loop)
    t2.write(head)
    t2.abort()
    loop.step()
    assert t2._transport.sent == [] and t2._transport.aborted
    assert t2.get_extra_info("peername") == "info:peername"  # the rest is the transport's own
