"""Incidents, the unit a person reads: found at the injected rows, with first/peak/last row and time, duration,
the threshold crossed, a severity 0-100 and the driving features in the data's own units; `min_duration` and
`merge_gap` through the real CLI and the real MCP server; the same incidents whatever the block size."""

from __future__ import annotations

import json

import anyio
import numpy as np
import pandas as pd
import pytest

from anomaly import fleet, service
from anomaly.incidents import AlertHygiene, severity, tail_probability
from anomaly.service.pipeline import iter_detect, summary_of
from anomaly.store import ModelStore
from anomaly.summary import round_floats

from serverproc import ServerProcess, mcp_client, tool_json

SPIKE = 300  # one row of cpu far off
SHIFT = range(600, 630)  # 30 rows of mem shifted up
BURSTS = (range(600, 610), range(640, 650))  # two short mem shifts 30 quiet rows apart (the merge file)
CLOSE = 8  # rows: a window model spreads an incident's edges this far at most


def metrics(n: int, start: str, seed: int) -> pd.DataFrame:
    """5-minute server metrics: cpu and net with a daily cycle, mem flat, all noisy."""
    rng = np.random.default_rng(seed)
    i = np.arange(n)
    return pd.DataFrame({
        "timestamp": pd.date_range(start, periods=n, freq="5min").strftime("%Y-%m-%d %H:%M:%S"),
        "cpu": 40 + 5 * np.sin(2 * np.pi * i / 288) + rng.normal(0, 1, n),
        "mem": 62.6 + rng.normal(0, 0.5, n),
        "net": 100 + 10 * np.cos(2 * np.pi * i / 288) + rng.normal(0, 2, n)})


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("incidents")
    train = metrics(3000, "2026-01-01", 1)
    test = metrics(1000, "2026-02-01", 2)
    test.loc[SPIKE, "cpu"] += 40  # ~40 sd
    test.loc[SHIFT, "mem"] += 15  # ~30 sd
    merge = metrics(1000, "2026-02-01", 3)
    for burst in BURSTS:
        merge.loc[burst, "mem"] += 15
    for name, frame in (("train", train), ("test", test), ("merge", merge)):
        frame.to_csv(folder / f"{name}.csv", index=False, float_format="%.4f")
    root = folder / "models"
    service.train(str(folder / "train.csv"), version="m", store=ModelStore(root))  # the shipped defaults
    return {"dir": folder, "root": root, "frames": {"train": train, "test": test, "merge": merge},
            **{k: folder / f"{k}.csv" for k in ("train", "test", "merge")}}


def detect(files: dict, name: str = "test", **options) -> dict:
    return service.detect(str(files[name]), version="m", store=ModelStore(files["root"]), **options)


def holding(summary: dict, rows) -> list[dict]:
    return [i for i in summary["top_anomalies"] if i["first_row"] <= rows[-1] and i["last_row"] >= rows[0]]


def flags_of(path) -> np.ndarray:
    return pd.read_csv(path)["is_anomaly"].to_numpy().astype(bool)


def test_injected_incidents_are_reported_where_and_how_they_happened(files):
    out = detect(files)
    times, train = files["frames"]["test"]["timestamp"].tolist(), files["frames"]["train"]
    spike, = holding(out, [SPIKE])
    shift, = holding(out, SHIFT)
    assert spike["index"] == SPIKE and spike["time"] == times[SPIKE]  # the peak row, exactly
    assert abs(spike["first_row"] - SPIKE) <= CLOSE and abs(spike["last_row"] - SPIKE) <= CLOSE
    assert abs(shift["first_row"] - SHIFT[0]) <= CLOSE and abs(shift["last_row"] - SHIFT[-1]) <= CLOSE
    assert SHIFT[0] <= shift["index"] <= SHIFT[-1]
    for inc in (spike, shift):
        assert inc["first_time"] == times[inc["first_row"]] and inc["last_time"] == times[inc["last_row"]]
        assert inc["rows"] == inc["last_row"] - inc["first_row"] + 1
        assert inc["reconstruction_error"] > inc["threshold"] > 0
        assert 0 <= inc["severity"] <= 100
    minutes = 5 * (shift["rows"] - 1)
    assert shift["duration"] == (f"{minutes // 60}h {minutes % 60}min" if minutes % 60 else f"{minutes // 60}h")
    # the bigger incident reads more severe, and both more than any false alarm
    assert shift["severity"] > spike["severity"] > max(
        [i["severity"] for i in out["top_anomalies"] if i not in (spike, shift)], default=0)
    # driving features: the injected column, the value seen and the training range, in the data's units
    for inc, column, value in ((spike, "cpu", files["frames"]["test"].loc[SPIKE, "cpu"]),
                               (shift, "mem", files["frames"]["test"].loc[list(SHIFT), "mem"].max())):
        top = inc["top_features"][0]
        assert top["feature"] == column and top["share"] > 0.5
        assert top["value"] == pytest.approx(value, abs=1e-3)
        assert top["expected"] == pytest.approx(np.percentile(train[column], [1, 99]), rel=1e-4)
        assert not top["expected"][0] <= top["value"] <= top["expected"][1]


def test_severity_is_a_calibrated_monotone_scale():
    stats = {"count": 9999, "p50": 1.0, "p90": 2.0, "p95": 2.5, "p99": 3.5, "max": 6.0}
    assert tail_probability(2.0, stats) == pytest.approx(0.1)
    assert tail_probability(6.0, stats) == pytest.approx(1e-4)
    assert 0 < tail_probability(600.0, stats) < tail_probability(60.0, stats) < 1e-4  # beyond the max too
    scores = np.r_[np.linspace(0, 10, 200), np.geomspace(10, 1e9, 200)]
    values = [severity(s, stats) for s in scores]
    assert values == sorted(values) and values[0] == 3 and values[-1] == 100
    assert 10 <= severity(2.6, stats) <= 30  # barely over a 95th-percentile threshold
    assert severity(6.0, stats) == 40 and severity(float("inf"), stats) == 100
    assert severity(5.0, None) is None and severity(float("nan"), stats) is None
    flat = {"count": 100, "p50": 1.0, "p90": 1.0, "p95": 1.0, "p99": 1.0, "max": 1.0}
    assert severity(1.0001, flat) < severity(2.0, flat) <= 100


def test_min_duration_and_merge_gap_on_the_command_line(files, cli, tmp_path):
    def run(*options):
        out = tmp_path / "out.csv"
        proc = cli("detect.py", "--data", files["test"], "--model-dir", files["root"], "--version", "m", "--json",
                   "--max-results", "0", "--output", out, *options)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout), flags_of(out)

    plain, plain_flags = run()
    assert plain_flags[SPIKE] and holding(plain, [SPIKE])
    text = cli("detect.py", "--data", files["test"], "--model-dir", files["root"], "--version", "m")
    assert "severity" in text.stdout and "mem " in text.stdout and ", expected " in text.stdout, text.stdout
    for option in ("2", "10min"):  # rows, or a time span (5-minute rows: 10min spans 3 rows)
        short, flags = run("--min-duration", option)
        assert not holding(short, [SPIKE]) and not flags[SPIKE]  # not an incident, and not flagged either
        shortest = 2 if option == "2" else 3
        assert all(i["rows"] >= shortest for i in short["top_anomalies"]) and holding(short, SHIFT)
        assert short["anomaly_count"] == int(flags.sum()) < plain["anomaly_count"]
        assert short["anomaly_segments"] < plain["anomaly_segments"]
    # a gap as long as the file: one incident from the first flagged row to the last, every row between flagged
    merged, flags = run("--merge-gap", "1000")
    first, last = np.flatnonzero(plain_flags)[[0, -1]]
    assert merged["anomaly_segments"] == 1 and flags[first:last + 1].all() and flags.sum() == last - first + 1
    one, = merged["top_anomalies"]
    assert (one["first_row"], one["last_row"]) == (first, last) and one["index"] in SHIFT
    bad = cli("detect.py", "--data", files["test"], "--model-dir", files["root"], "--min-duration", "soon")
    assert bad.returncode != 0 and bad.stderr.strip() == ("error: min_duration takes a number of rows or a time "
                                                          "span such as 10min, got 'soon'")


@pytest.fixture(scope="module")
def server(tmp_path_factory, files):
    srv = ServerProcess(tmp_path_factory.mktemp("incidents_server"), files["dir"], files["root"])
    yield srv
    srv.stop()


def test_mcp_and_http_report_the_same_incidents(files, server):
    async def run(arguments: dict):
        async with mcp_client(server, "http") as client:
            return await client.call_tool("run_detection", {"file_path": "merge.csv", "version": "m", **arguments})

    async def schemas():
        async with mcp_client(server, "http") as client:
            return {t.name: t.input_schema["properties"] for t in (await client.list_tools()).tools}

    tools = anyio.run(schemas)  # declared once (DetectSpec): the same option in every tool that takes it
    for option in ("min_duration", "merge_gap"):
        fleet_option = {k: v for k, v in tools["run_fleet_detection"][option].items() if k != "title"}
        assert tools["run_detection"][option] == fleet_option
        assert "(a number)" in tools["run_detection"][option]["description"]
    reply = anyio.run(run, {})
    assert len(reply.model_dump_json(by_alias=True, exclude_none=True)) <= 12_000
    plain = tool_json(reply)
    assert len(holding(plain, BURSTS[0])) == 1 and holding(plain, BURSTS[0]) != holding(plain, BURSTS[1])
    inc = holding(plain, BURSTS[0])[0]
    assert {"index", "time", "reconstruction_error", "threshold", "severity", "first_row", "first_time", "last_row",
            "last_time", "rows", "duration", "top_features"} <= set(inc)
    assert inc["top_features"][0]["feature"] == "mem" and len(inc["top_features"][0]["expected"]) == 2
    # merge_gap as a time span over MCP: the two bursts become one incident, the rows between flagged
    merged = tool_json(anyio.run(run, {"merge_gap": "3h", "min_duration": 5}))
    both, = holding(merged, range(BURSTS[0][0], BURSTS[1][-1]))
    assert both["first_row"] <= BURSTS[0][0] + CLOSE and both["last_row"] >= BURSTS[1][-1] - CLOSE
    assert all(i["rows"] >= 5 for i in merged["top_anomalies"])
    flags = flags_of(merged["output"])
    assert flags[both["first_row"]:both["last_row"] + 1].all() and merged["anomaly_count"] == int(flags.sum())
    # the HTTP API returns the same incidents, field for field
    with server.client() as http:
        body = http.post("/api/detect", json={"file_path": "merge.csv", "version": "m", "max_results": 0,
                                              "merge_gap": "3h", "min_duration": 5}).json()
    assert round_floats(body["top_anomalies"]) == merged["top_anomalies"]
    # ... and a fleet summary carries them as they are
    series = fleet.summarise_detection(detect(files, "merge", merge_gap="3h", min_duration=5))
    assert series["segments"] == detect(files, "merge", merge_gap="3h", min_duration=5)["top_anomalies"]
    assert series["severity"] == max(i["severity"] for i in series["segments"])


@pytest.mark.parametrize("options", [{}, {"min_duration": 3, "merge_gap": 12}, {"merge_gap": "2h"}])
def test_tiny_blocks_give_the_whole_file_incidents(files, tmp_path, options):
    store = ModelStore(files["root"])
    whole = service.detect(str(files["merge"]), version="m", store=store, output=str(tmp_path / "whole.csv"),
                           max_results=None, **options)
    small = summary_of(iter_detect(str(files["merge"]), version="m", store=store, block_bytes=1024,
                                   output=str(tmp_path / "small.csv"), max_results=None, **options))
    assert (small["anomaly_count"], small["anomaly_segments"]) == (whole["anomaly_count"], whole["anomaly_segments"])
    # scores may differ in float32's last digits between batchings; everything else is equal
    assert alike(small["top_anomalies"], whole["top_anomalies"])
    assert [(r["index"], r["is_anomaly"]) for r in small["results"]] == \
        [(r["index"], r["is_anomaly"]) for r in whole["results"]]
    assert (flags_of(tmp_path / "whole.csv") == flags_of(tmp_path / "small.csv")).all()


def alike(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return a == pytest.approx(b, rel=1e-5)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(alike(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(alike(x, y) for x, y in zip(a, b))
    return a == b


def test_alert_hygiene_equals_the_whole_file_rule_for_any_blocks():
    rng = np.random.default_rng(0)
    times = np.datetime64("2026-01-01", "ns") + np.arange(300) * np.timedelta64(5, "m")
    for _ in range(200):
        flags = (rng.random(300) < rng.uniform(0.02, 0.4)).astype(np.int8)
        shortest, gap = int(rng.integers(1, 6)), int(rng.integers(1, 5))
        expected = np.zeros_like(flags)  # the rule, on the whole file: merge, then drop the short ones
        edges = np.flatnonzero(np.diff(np.r_[0, flags, 0]))
        runs: list[list[int]] = []
        for a, b in zip(edges[::2], edges[1::2]):
            if runs and a - runs[-1][1] <= gap:
                runs[-1][1] = b
            else:
                runs.append([a, b])
        for a, b in runs:
            expected[a:b] = b - a >= shortest
        cuts = np.r_[0, np.sort(rng.choice(np.arange(1, 300), rng.integers(1, 40), replace=False)), 300]
        for hygiene in (AlertHygiene(shortest, gap),
                        AlertHygiene(np.timedelta64(5 * (shortest - 1), "m"), np.timedelta64(5 * (gap + 1), "m"))):
            got = []
            for a, b in zip(cuts[:-1], cuts[1:]):
                got += hygiene.push(int(a), flags[a:b], times[a:b], int(a))
            got += hygiene.finish()
            assert [p for p, _ in got] == cuts[:-1].tolist()  # every block, in order
            assert (np.concatenate([f for _, f in got]) == expected).all()


def test_versions_without_expected_ranges_name_drivers_without_one(files, tmp_path):
    import shutil

    root = tmp_path / "models"
    shutil.copytree(files["root"], root)
    config = root / "m" / "model_config.json"
    saved = json.loads(config.read_text())
    assert set(saved["expected_ranges"]) == {"cpu", "mem", "net"}
    config.write_text(json.dumps({k: v for k, v in saved.items() if k != "expected_ranges"}))
    spike, = holding(service.detect(str(files["test"]), version="m", store=ModelStore(root)), [SPIKE])
    top = spike["top_features"][0]
    assert top["feature"] == "cpu" and "expected" not in top
    assert top["value"] == pytest.approx(files["frames"]["test"].loc[SPIKE, "cpu"], abs=1e-3)
