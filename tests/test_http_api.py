"""The HTTP API of the real server.py with a real HTTP client: every route, the SSE streams parsed."""

from __future__ import annotations

import csv
import json
import threading
import time

import numpy as np
import pytest

from serverproc import ServerProcess, parse_sse, server_dirs


@pytest.fixture(scope="module")
def server(tmp_path_factory, dataset, trained, trained_window):
    tmp = tmp_path_factory.mktemp("http_server")
    data_root, model_dir = server_dirs(tmp, dataset, trained, trained_window)
    srv = ServerProcess(tmp, data_root, model_dir, "--sse-ping", "1")  # keep-alives every second of silence
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def http(server):
    with server.client() as client:
        yield client


def stream_events(http, method, url, **kwargs) -> list[tuple[str, dict]]:
    with http.stream(method, url, **kwargs) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"].startswith("text/event-stream")
        return parse_sse(r.iter_lines())


def test_health_models_and_docs(http, trained):
    health = http.get("/health").json()
    assert health["status"] == "ok" and health["training_running"] == 0
    models = http.get("/api/models").json()
    assert {"v1", "w5"} <= {m["version"] for m in models["models"]}
    info = http.get("/api/models/v1").json()
    assert info["features"] == trained["result"]["features"]
    assert info["threshold"] == pytest.approx(trained["result"]["threshold"])
    missing = http.get("/api/models/nope")
    assert missing.status_code == 404 and "not found" in missing.json()["error"]
    spec = http.get("/openapi.json").json()
    assert {"/api/detect", "/api/detect/stream", "/api/train/stream", "/api/live/{channel}"} <= set(spec["paths"])
    docs = http.get("/docs")
    assert docs.status_code == 200 and "/static/swagger/swagger-ui-bundle.js" in docs.text and "cdn" not in docs.text
    assert http.get("/static/swagger/swagger-ui-bundle.js").status_code == 200
    assert http.get("/redoc").status_code == 404  # dropped: its bundle would be another megabyte to vendor
    page = http.get("/")
    assert page.status_code == 200 and '<script type="module" src="/static/app.js">' in page.text


def test_detect_by_path_and_by_upload_agree(http, server, dataset):
    by_path = http.post("/api/detect", json={"file_path": "test.csv", "version": "v1", "max_results": 3}).json()
    assert by_path["total_rows"] == len(dataset["test_frame"]) and len(by_path["results"]) == 3
    assert by_path["results_truncated"] and all(r["is_anomaly"] for r in by_path["results"])
    recall = np.isin(dataset["anomalies"], [a["index"] for a in by_path["top_anomalies"]]).sum()
    assert recall >= 5  # the ten strongest anomalies are mostly the injected ones
    body = (server.data_root / "test.csv").read_bytes()
    uploaded = http.post("/api/detect/upload", params={"version": "v1", "max_results": 3}, content=body,
                         headers={"Content-Type": "text/csv"}).json()
    assert uploaded["anomaly_count"] == by_path["anomaly_count"]
    assert uploaded["results"] == by_path["results"]
    assert not list((server.workdir / "results" / ".uploads").glob("*")), "upload left behind"


def test_detect_errors_are_4xx_json(http, server):
    (server.data_root / "wrong.csv").write_text("a,b\n1,2\n3,4\n")
    cases = [
        ({"file_path": "missing.csv"}, 404, "missing.csv"),
        ({"file_path": "test.csv", "version": "nope"}, 404, "not found"),
        ({"file_path": "wrong.csv", "version": "v1"}, 422, "sensor_0"),
        ({"file_path": "test.csv", "max_results": -1}, 422, "max_results"),
        ({"path": "test.csv"}, 422, "file_path"),
    ]
    for body, status, fragment in cases:
        r = http.post("/api/detect", json=body)
        assert r.status_code == status, (body, r.text)
        assert fragment in r.json()["error"], (body, r.text)
    empty = http.post("/api/detect/upload", content=b"", headers={"Content-Type": "text/csv"})
    assert empty.status_code == 422 and "empty" in empty.json()["error"]


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_detection_stream_pushes_progress_anomalies_and_summary(http, method):
    args = {"file_path": "test.csv", "version": "v1"}
    kwargs = {"params": args} if method == "GET" else {"json": args}
    events = stream_events(http, method, "/api/detect/stream", **kwargs)
    names = [n for n, _ in events]
    assert names[-1] == "summary" and "progress" in names
    summary = events[-1][1]
    anomalies = [e for n, e in events if n == "anomaly"]
    assert len(anomalies) == summary["anomaly_count"] > 0
    flagged = sorted(r["index"] for r in summary["results"] if r["is_anomaly"])
    assert sorted(a["index"] for a in anomalies) == flagged
    assert all(a["reconstruction_error"] > summary["threshold"] and a["top_features"] for a in anomalies)
    with open(summary["output"]) as f:
        assert sum(1 for _ in csv.DictReader(f)) == summary["total_rows"]


def test_detection_stream_error_before_streaming_is_a_4xx(http):
    r = http.get("/api/detect/stream", params={"file_path": "test.csv", "version": "nope"})
    assert r.status_code == 404 and "not found" in r.json()["error"]


def test_train_and_training_stream(http):
    # dense: per-epoch progress (the default pca is fitted in one step: below)
    result = http.post("/api/train", json={"data_file": "train.csv", "epochs": 2, "version": "http-a",
                                           "model_type": "dense"}).json()
    assert result["version"] == "http-a" and result["epochs_run"] == 2
    events = stream_events(http, "POST", "/api/train/stream", json={"data_file": "train.csv", "epochs": 3,
                                                                      "version": "http-b", "model_type": "dense"})
    epochs = [e for n, e in events if n == "epoch"]
    assert [e["epoch"] for e in epochs] == [1, 2, 3] and all(e["loss"] > 0 for e in epochs)
    assert events[-1][0] == "result" and events[-1][1]["version"] == "http-b"
    assert events[-1][1]["final_loss"] == pytest.approx(epochs[-1]["loss"])
    assert "http-b" in {m["version"] for m in http.get("/api/models").json()["models"]}
    again = stream_events(http, "POST", "/api/train/stream", json={"data_file": "train.csv", "epochs": 1,
                                                                     "version": "http-b"})
    assert again[-1][0] == "error" and "already exists" in again[-1][1]["error"]
    pca = stream_events(http, "POST", "/api/train/stream", json={"data_file": "train.csv", "version": "http-pca"})
    assert [(n, e["epoch"], e["epochs"]) for n, e in pca if n == "epoch"] == [("epoch", 1, 1)]  # closed form
    assert pca[-1][0] == "result" and pca[-1][1]["version"] == "http-pca" and pca[-1][1]["epochs_run"] == 1
    bad = http.post("/api/train", json={"data_file": "train.csv", "epochs": 0})
    assert bad.status_code == 422 and "epochs" in bad.json()["error"]


@pytest.mark.parametrize("version", ["v1", "w5"])
def test_live_stream_pushes_each_point_to_subscribers(http, server, dataset, version):
    channel = f"live-{version}"
    X = dataset["test_frame"][dataset["features"]].to_numpy()
    received, subscribed = [], threading.Event()

    def subscribe():
        with server.client() as sub, sub.stream("GET", f"/api/live/{channel}/events") as r:
            for name, event in parse_sse(_lines_until(r, 30, subscribed)):
                received.append((name, event))

    t = threading.Thread(target=subscribe)
    t.start()
    assert subscribed.wait(30)
    first = http.post(f"/api/live/{channel}", json={"points": X[:10].tolist(), "version": version}).json()
    named = [dict(zip(dataset["features"], map(float, x))) for x in X[10:30]]
    second = http.post(f"/api/live/{channel}", json={"points": named}).json()  # keeps the channel's version
    t.join(60)
    assert not t.is_alive()
    scores = [e for n, e in received if n == "score"]
    pushed = first["results"] + second["results"]
    assert [e["index"] for e in scores] == list(range(30)) == [p["index"] for p in pushed]
    assert [e["reconstruction_error"] for e in scores] == [p["reconstruction_error"] for p in pushed]
    assert all(e["version"] == version for e in scores) and second["version"] == version
    span = first["span"]
    assert all(p["reconstruction_error"] is None for p in pushed[:span - 1])
    assert all(p["reconstruction_error"] is not None for p in pushed[span - 1:])
    if version == "v1":  # window 1: a live score is exactly the batch score of that row
        batch = http.post("/api/detect/upload", params={"version": "v1", "max_results": 1000},
                          content=(server.data_root / "test.csv").read_bytes()).json()
        by_index = {r["index"]: r["reconstruction_error"] for r in batch["results"]}
        assert [p["reconstruction_error"] for p in pushed] == pytest.approx([by_index[i] for i in range(30)],
                                                                            rel=1e-4)
    wrong = http.post(f"/api/live/{channel}", json={"points": [[1.0, 2.0]]})
    assert wrong.status_code == 422 and "4" in wrong.json()["error"]


def _lines_until(response, n_scores: int, subscribed: threading.Event):
    """Lines of an SSE response until `n_scores` score events have arrived."""
    seen = 0
    for line in response.iter_lines():
        yield line
        if line.startswith("event: subscribed"):
            subscribed.set()
        elif line.startswith("event: score"):
            seen += 1
        elif line == "" and seen >= n_scores:
            return


def test_device_in_training_and_detection_requests(http):
    assert http.get("/health").json()["device"] == "auto"  # the server's --device, the requests' default
    trained = http.post("/api/train", json={"data_file": "train.csv", "epochs": 1, "window": 1, "version": "http-cpu",
                                            "device": "cpu"}).json()
    assert trained["device"] == "cpu" and trained["precision"] == "fp32"
    ok = http.post("/api/detect", json={"file_path": "test.csv", "version": "http-cpu", "device": "cpu",
                                        "max_results": 0})
    assert ok.status_code == 200 and ok.json()["status"] == "success"
    bad = http.post("/api/detect", json={"file_path": "test.csv", "version": "v1", "device": "tpu"})
    assert bad.status_code == 400 and bad.json()["type"] == "DeviceError" and "unknown device" in bad.json()["error"]
    stream = http.get("/api/detect/stream", params={"file_path": "test.csv", "version": "v1", "device": "tpu"})
    assert stream.status_code == 400 and "unknown device" in stream.json()["error"]


def test_sse_events_have_ids_and_keep_alive_pings(server):
    """Every event carries an `id:` (numbered from 1 in its stream); a silent stream gets keep-alive comments."""
    lines: list[str] = []
    done = threading.Event()

    def listen():
        with server.client() as sub, sub.stream("GET", "/api/live/pings/events") as r:
            started = time.monotonic()
            for line in r.iter_lines():
                lines.append(line)
                if time.monotonic() - started > 3.5:
                    break
        done.set()

    threading.Thread(target=listen, daemon=True).start()
    assert done.wait(30)
    assert lines[:3] == ["id: 1", "event: subscribed", 'data: {"channel":"pings"}']
    assert sum(1 for line in lines if line.startswith(": ")) >= 2, lines  # --sse-ping 1
    with server.client() as http, http.stream("GET", "/api/detect/stream",
                                              params={"file_path": "test.csv", "version": "v1"}) as r:
        body = list(r.iter_lines())
    ids = [int(line[4:]) for line in body if line.startswith("id: ")]
    events = [line for line in body if line.startswith("event: ")]
    assert ids == list(range(1, len(events) + 1)) and events[-1] == "event: summary"
    assert json.loads([line for line in body if line.startswith("data: ")][-1][6:])["status"] == "success"


def test_data_listing_and_result_series(http, server, dataset):
    listing = http.get("/api/data").json()
    assert {"test.csv", "train.csv"} <= {f["path"] for f in listing["files"]}
    assert listing["roots"] == [str(server.data_root.resolve())] and not listing["truncated"]
    summary = http.post("/api/detect", json={"file_path": "test.csv", "version": "v1", "max_results": 0}).json()
    params = {"output": summary["output"], "features": ",".join(summary["features"]), "time_column": "timestamp"}
    series = http.get("/api/results/series", params=params).json()
    rows = len(dataset["test_frame"])
    assert series["rows"] == rows and series["index"] == list(range(rows))
    assert series["features"] == dataset["features"] and set(series["values"]) == set(dataset["features"])
    assert series["anomaly_count"] == summary["anomaly_count"]
    assert series["segment_count"] == summary["anomaly_segments"] == len(series["segments"])
    assert series["time"] == dataset["test_frame"]["timestamp"].tolist()
    strongest = summary["top_anomalies"][0]
    assert {"first_row": strongest["first_row"], "last_row": strongest["last_row"]} in [
        {"first_row": s["first_row"], "last_row": s["last_row"]} for s in series["segments"]]
    small = http.get("/api/results/series", params=params | {"points": 20}).json()
    assert len(small["index"]) < rows and strongest["index"] in small["index"]  # spikes survive downsampling
    outside = http.get("/api/results/series", params={"output": str(server.data_root / "test.csv")})
    assert outside.status_code == 403 and "results folder" in outside.json()["error"]
    assert http.get("/api/results/series", params={"output": "nope.csv"}).status_code == 404


def test_client_leaving_a_detection_stream_closes_it(http, server, dataset):
    """A client that disconnects mid-stream: the generator is closed (its half-written result CSV removed) and
    the server goes on answering, with nothing logged as an error."""
    big = server.data_root / "big.csv"
    text = (server.data_root / "test.csv").read_text().splitlines(keepends=True)
    big.write_text(text[0] + "".join(text[1:]) * 40)  # several 1 MiB blocks
    results = server.workdir / "results"
    before = set(results.glob("big-*"))
    with server.client() as c, c.stream("GET", "/api/detect/stream", params={"file_path": "big.csv", "version": "v1"}) as r:
        for line in r.iter_lines():
            if line.startswith("event: progress"):
                break  # leave after the first block
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and list(results.glob(".big-*.tmp")):
        time.sleep(0.2)
    assert not list(results.glob(".big-*.tmp")), "the partial result was left behind"
    assert set(results.glob("big-*")) == before, "a stream that was left still wrote its result"
    assert http.get("/health").json()["status"] == "ok"
    assert "Traceback" not in server.log()
