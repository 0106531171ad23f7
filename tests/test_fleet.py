"""Fleet: many series through the real `anomaly fleet` CLI, the Python API, a real Dask cluster and the server.

Models are real and tiny (window 1, two epochs, 300 rows a series), so 40 series train in seconds on 2 cores.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import anyio
import numpy as np
import pandas as pd
import pytest

from anomaly import fleet, service, synthetic
from anomaly.store import ModelStore

from conftest import PYTHON, cli_env
from serverproc import ServerProcess, free_port, mcp_client, tool_json

N_SERIES, ROWS = 40, 300
SPIKED = {"host-03", "host-17", "host-31"}  # series with blatant injected spikes: they must rank first
TRAIN_OPTS = ["--epochs", "2", "--window", "1", "--batch-size", "64", "--seed", "0"]


def make_fleet(folder: Path, n: int = N_SERIES, rows: int = ROWS, spiked=SPIKED) -> list[str]:
    folder.mkdir(parents=True)
    names = [f"host-{i:02d}" for i in range(n)]
    for i, name in enumerate(names):
        frame = synthetic.make_series(rows, n_features=2, seed=i)
        if name in spiked:
            frame = synthetic.inject(frame, n_anomalies=3, magnitude=25.0, seed=i).drop(columns=["label"])
        frame.to_csv(folder / f"{name}.csv", index=False, float_format="%.5f")
    return names


def assert_partial_failure(proc: subprocess.CompletedProcess, *series: str) -> None:
    """Some series failed: non-zero exit, each named with its one-line error, one final `error:` line, no traceback."""
    both = proc.stdout + proc.stderr
    assert "Traceback" not in both, both
    assert proc.returncode == 1, both
    lines = [line.split("\r")[-1] for line in proc.stderr.strip().splitlines()]  # the bar redraws with \r
    assert lines[-1].startswith("error: ") and "series failed" in lines[-1], lines
    for name in series:
        assert any(line.startswith(f"failed: {name}: ") for line in lines), lines


@pytest.fixture(scope="module")
def fleet_run(tmp_path_factory, cli) -> dict:
    """40 series plus one broken file, trained and scored through the real CLI on 2 worker processes."""
    tmp = tmp_path_factory.mktemp("fleet")
    data = tmp / "data"
    names = make_fleet(data)
    (data / "broken.csv").write_text('a,b\n1,2\n"unterminated\n')
    (data / "notes.md").write_text("not a series")  # ignored: not a data file
    models, out = tmp / "models", tmp / "out"
    train = cli("anomaly", "fleet", "train", "--data-dir", data, "--model-dir", models, "--jobs", "2", *TRAIN_OPTS)
    detect = cli("anomaly", "fleet", "detect", "--data-dir", data, "--model-dir", models, "--output-dir", out,
                 "--jobs", "2")
    return {"tmp": tmp, "data": data, "names": names, "models": models, "out": out, "train": train, "detect": detect}


def test_fleet_of_40_series_and_a_broken_file(fleet_run):
    names, models, out = fleet_run["names"], fleet_run["models"], fleet_run["out"]
    assert_partial_failure(fleet_run["train"], "broken")
    assert "40 done, 0 skipped (done before), 1 failed" in fleet_run["train"].stdout
    assert sorted(ModelStore(models).versions()) == names  # one version per series, named after it
    assert all(ModelStore(models).info(n)["status"] == "ok" for n in names)

    assert_partial_failure(fleet_run["detect"], "broken")
    assert sorted(p.stem for p in out.glob("*.csv")) == names
    summary = json.loads((out / fleet.SUMMARY_FILE).read_text())
    assert (summary["series_total"], summary["ok"], summary["failed"]) == (41, 40, 1)
    records = {r["series"]: r for r in summary["series"]}
    broken = records["broken"]
    assert broken["status"] == "failed" and "broken" in broken["error"] and "\n" not in broken["error"]
    ok = [records[n] for n in names]
    assert all(r["rows"] == ROWS and r["worker"] == "local" and r["seconds"] > 0 for r in ok)
    # Ranked by anomaly strength: the spiked series first, the failed one last.
    assert {r["series"] for r in summary["series"][:3]} == SPIKED
    assert summary["series"][-1]["series"] == "broken"
    top = summary["series"][0]
    seg = top["segments"][0]
    assert top["anomalies"] >= 3 and seg["time"].startswith("2026-01-01") and seg["first_row"] <= seg["index"]
    # A worker (one torch thread) trains the model the same calls give in this process, byte for byte.
    alone = ModelStore(fleet_run["tmp"] / "alone")
    service.train(str(fleet_run["data"] / "host-05.csv"), version="host-05", store=alone, epochs=2, window=1,
                  batch_size=64, seed=0)
    for name in ("model.pth", "threshold.json", "scaler.pkl"):
        assert (alone.root / "host-05" / name).read_bytes() == (models / "host-05" / name).read_bytes(), name
    # The per-row file is what `detect --output` writes for that series alone.
    one = service.detect(str(fleet_run["data"] / f"{top['series']}.csv"), version=top["series"],
                         store=ModelStore(models))
    rows = pd.read_csv(out / f"{top['series']}.csv")
    assert len(rows) == ROWS and int(rows["is_anomaly"].sum()) == one["anomaly_count"] == top["anomalies"]
    # The terminal table: ranked, one screen.
    table = fleet_run["detect"].stdout
    assert table.index("host-03") < table.index("fleet_summary.json") and len(table.splitlines()) < 40


def test_rerun_skips_series_already_done(fleet_run, cli):
    data, models, out = fleet_run["data"], fleet_run["models"], fleet_run["out"]
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("*.csv")}
    train = cli("anomaly", "fleet", "train", "--data-dir", data, "--model-dir", models, "--json", "-q", *TRAIN_OPTS)
    summary = json.loads(train.stdout)
    assert (summary["skipped"], summary["ok"], summary["failed"]) == (40, 0, 1)
    detect = cli("anomaly", "fleet", "detect", "--data-dir", data, "--model-dir", models, "-o", out, "--json", "-q")
    summary = json.loads(detect.stdout)
    assert (summary["skipped"], summary["ok"], summary["failed"]) == (40, 0, 1)
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.csv")} == before  # nothing scored again
    assert {r["series"] for r in summary["series"][:3]} == SPIKED  # skipped series keep their figures
    # --overwrite does them again.
    again = fleet.detect(data, model_dir=models, output_dir=out, overwrite=True, jobs=1)
    assert (again["ok"], again["skipped"]) == (40, 0)


def test_bad_options_fail_once_before_any_work(fleet_run, cli, user_error):
    proc = cli("anomaly", "fleet", "train", "--data-dir", fleet_run["data"], "--model-dir",
               fleet_run["tmp"] / "other", "--threshold-method", "bogus")
    user_error(proc, "threshold_method must be", "bogus")
    assert not (fleet_run["tmp"] / "other").exists() or not ModelStore(fleet_run["tmp"] / "other").versions()
    user_error(cli("anomaly", "fleet", "detect", "--data-dir", fleet_run["tmp"] / "nowhere", "--model-dir",
                   fleet_run["models"], "-o", fleet_run["tmp"] / "o2"), "does not exist")
    before = (fleet_run["data"] / "host-00.csv").read_bytes()
    with pytest.raises(fleet.DataError, match="results would replace the data"):
        fleet.detect(fleet_run["data"], model_dir=fleet_run["models"], output_dir=fleet_run["data"])
    assert (fleet_run["data"] / "host-00.csv").read_bytes() == before


def test_long_format_file_with_series_column(tmp_path, cli):
    parts = []
    for i, host in enumerate(["web-1", "web-2", "db-1"]):
        frame = synthetic.make_series(250, n_features=2, seed=10 + i)
        frame.insert(1, "host", host)
        parts.append(frame)
    # Interleaved, as a monitoring export is: each series' rows stay in file order.
    long = pd.concat(parts).sort_values(["timestamp", "host"], kind="stable")
    long.to_csv(tmp_path / "all.csv", index=False, float_format="%.5f")
    models, out = tmp_path / "models", tmp_path / "out"
    train = cli("anomaly", "fleet", "train", "--data", tmp_path / "all.csv", "--series-column", "host",
                "--model-dir", models, "-q", "-j", "1", *TRAIN_OPTS)
    assert train.returncode == 0, train.stderr
    assert sorted(ModelStore(models).versions()) == ["db-1", "web-1", "web-2"]
    assert ModelStore(models).info("web-1")["features"] == ["sensor_0", "sensor_1"]  # the host column is no feature
    detect = cli("anomaly", "fleet", "detect", "--data", tmp_path / "all.csv", "--series-column", "host",
                 "--model-dir", models, "-o", out, "-q", "-j", "1")
    assert detect.returncode == 0, detect.stderr
    for i, host in enumerate(["web-1", "web-2", "db-1"]):
        rows = pd.read_csv(out / f"{host}.csv")
        assert len(rows) == 250 and "host" not in rows
        assert rows["timestamp"].tolist() == parts[i]["timestamp"].tolist()
        # the same figures as the series' own file scored on its own
        own = tmp_path / f"{host}.csv"
        parts[i].drop(columns=["host"]).to_csv(own, index=False, float_format="%.5f")
        alone = service.detect(str(own), version=host, store=ModelStore(models))
        assert int(rows["is_anomaly"].sum()) == alone["anomaly_count"]
    assert not list(out.glob(".fleet-split-*")) and not list(models.glob(".fleet-split-*"))  # split files removed
    again = fleet.detect(data_file=str(tmp_path / "all.csv"), series_column="host", model_dir=models, output_dir=out)
    first = again["series"][0]
    assert again["skipped"] == 3 and first["file"] == f"{tmp_path / 'all.csv'} [host={first['series']}]"
    with pytest.raises(fleet.DataError, match="series column 'region' is not in all.csv"):
        fleet.detect(data_file=str(tmp_path / "all.csv"), series_column="region", model_dir=models, output_dir=out)


# --- Dask ------------------------------------------------------------------------------------------------------


@pytest.fixture
def dask_cluster(tmp_path):
    """A real Dask scheduler and two worker processes on 127.0.0.1 (the `dask` command line)."""
    pytest.importorskip("distributed")
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    common = ["--no-dashboard"]
    procs = [subprocess.Popen([PYTHON, "-m", "dask", "scheduler", "--host", "127.0.0.1", "--port", str(port), *common],
                              env=cli_env(), cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        for _ in range(2):
            procs.append(subprocess.Popen(
                [PYTHON, "-m", "dask", "worker", address, "--host", "127.0.0.1", "--nthreads", "1", "--no-nanny",
                 "--memory-limit", "0", *common], env=cli_env(), cwd=tmp_path, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL))
        from distributed import Client
        with Client(address, timeout="60s") as client:
            client.wait_for_workers(2, timeout=60)
            workers = sorted(client.scheduler_info()["workers"])
        yield address, workers
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()


def test_dask_cluster_gives_the_local_results(fleet_run, dask_cluster, cli):
    address, workers = dask_cluster
    out = fleet_run["tmp"] / "out_dask"
    proc = cli("anomaly", "fleet", "detect", "--data-dir", fleet_run["data"], "--model-dir", fleet_run["models"],
               "-o", out, "--dask-scheduler", address, "-q")
    assert_partial_failure(proc, "broken")
    assert "Dask cluster " + address in proc.stdout
    summary = json.loads((out / fleet.SUMMARY_FILE).read_text())
    assert summary["engine"] == "dask" and (summary["ok"], summary["failed"]) == (40, 1)
    used = {r["worker"] for r in summary["series"]}
    assert used == set(workers), (used, workers)  # both workers did work
    local = {r["series"]: r for r in json.loads((fleet_run["out"] / fleet.SUMMARY_FILE).read_text())["series"]}
    for r in summary["series"]:
        if r["status"] == "failed":
            assert local[r["series"]]["status"] == "failed"
            continue
        assert (out / f"{r['series']}.csv").read_bytes() == (fleet_run["out"] / f"{r['series']}.csv").read_bytes()
        same = ("rows", "anomalies", "segment_count", "segments", "threshold", "strength")
        assert {k: r[k] for k in same} == {k: local[r["series"]][k] for k in same}
    assert [r["series"] for r in summary["series"]] == list(local)  # the same ranking


# --- the server --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fleet_server(tmp_path_factory, fleet_run):
    tmp = tmp_path_factory.mktemp("fleet_server")
    root = tmp / "data"
    make_fleet(root / "hosts", n=6, spiked={"host-02"})
    (root / "hosts" / "broken.csv").write_text("x\n")
    models = tmp / "models"
    trained = fleet.train(root / "hosts", model_dir=models, jobs=1, epochs=2, window=1, batch_size=64)
    assert (trained["ok"], trained["failed"]) == (6, 1)
    srv = ServerProcess(tmp, root, models)
    yield srv
    srv.stop()


def test_mcp_fleet_tool_reports_progress_per_series_and_a_lean_reply(fleet_server):
    seen = []

    async def progress(value, total, message):
        seen.append((value, total, message))

    async def run():
        async with mcp_client(fleet_server, "sse") as client:
            return await client.call_tool("run_fleet_detection", {"data_dir": "hosts", "jobs": 2, "top": 3},
                                          progress_callback=progress)
    reply = tool_json(anyio.run(run))
    assert (reply["series_total"], reply["ok"], reply["failed"]) == (7, 6, 1)
    assert reply["top_series"][0]["series"] == "host-02" and len(reply["top_series"]) == 3
    assert reply["failed_series"][0]["series"] == "broken" and reply["failed_series"][0]["error"]
    assert "series" not in reply  # lean: the full summary stays in the file
    assert len(json.loads(Path(reply["summary_file"]).read_text())["series"]) == 7
    assert sorted(v for v, _, _ in seen) == list(range(1, 8)) and all(t == 7 for _, t, _ in seen)
    assert any(m.startswith("broken: failed") for *_, m in seen)


def test_http_fleet_route_skips_what_is_done_and_keeps_to_the_data_roots(fleet_server):
    with fleet_server.client() as http:
        first = http.post("/api/fleet/detect", json={"data_dir": "hosts", "jobs": 1})
        assert first.status_code == 200, first.text
        again = http.post("/api/fleet/detect", json={"data_dir": "hosts"}).json()
        assert again["skipped"] == 6 and again["top_series"][0]["series"] == "host-02"
        outside = http.post("/api/fleet/detect", json={"data_dir": "/etc"})
        assert outside.status_code == 403, outside.text
        missing = http.post("/api/fleet/detect", json={"data_dir": "nope"})
        assert missing.status_code == 404, missing.text


def test_series_names_from_files_and_globs(tmp_path):
    for name in ("a.csv", "b.txt.gz", "c.tsv", ".hidden.csv", "d.json"):
        (tmp_path / name).write_text("x\n1\n")
    assert [s.name for s in fleet.folder_series(tmp_path)] == ["a", "b", "c"]
    assert [s.name for s in fleet.glob_series(str(tmp_path / "*.csv"))] == ["a"]
    (tmp_path / "a.txt").write_text("x\n1\n")
    with pytest.raises(fleet.DataError, match="both give series 'a'"):
        fleet.folder_series(tmp_path)
    assert np.isclose(fleet.summarise_detection({
        "version": "v", "total_rows": 3, "scored_rows": 3, "anomaly_count": 1, "anomaly_ratio": 1 / 3,
        "anomaly_segments": 1, "threshold": 2.0, "top_anomalies": [{"index": 1, "reconstruction_error": 5.0,
                                                                    "first_row": 1, "last_row": 1}]})["strength"], 2.5)


def test_a_changed_input_is_scored_again(tmp_path):
    data = tmp_path / "data"
    make_fleet(data, n=2, spiked=set())
    models, out = tmp_path / "models", tmp_path / "out"
    fleet.train(data, model_dir=models, jobs=1, epochs=1, window=1)
    assert fleet.detect(data, model_dir=models, output_dir=out, jobs=1)["ok"] == 2
    frame = pd.read_csv(data / "host-01.csv")
    frame.iloc[:200].to_csv(data / "host-01.csv", index=False)  # new data in one file
    again = fleet.detect(data, model_dir=models, output_dir=out, jobs=1)
    assert {r["series"]: r["status"] for r in again["series"]} == {"host-00": "skipped", "host-01": "ok"}
    assert {r["series"]: r["rows"] for r in again["series"]} == {"host-00": ROWS, "host-01": 200}
