"""Issue 13, hardening: no silent wrong answer, no user file touched, no secret shown. One test (or a few) per
finding of the issue, each through the real command line in a fresh process or the real server."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import anyio
import httpx
import numpy as np
import pandas as pd
import pytest

import mcp_tool
from anomaly import cli as anomaly_cli
from anomaly.server.toolbox import Toolbox
from anomaly.store import ModelStore

from conftest import PYTHON, REPO, assert_user_error, cli_command, cli_env, run_cli
from serverproc import ServerProcess, mcp_client, server_dirs, tool_json

HUGE = ["3e38", "1e308", "-1e308", "1e39", "1e20", "inf", "-inf"]
HUGE_ROWS = [100, 200, 300, 400, 500, 600, 700]


def strict_json(text: str):
    """json.loads that refuses NaN/Infinity, as strict parsers (browsers, jq, Go, ...) do."""
    def refuse(token):
        raise ValueError(f"not JSON: {token}")
    return json.loads(text, parse_constant=refuse)


def huge_file(dataset, folder: Path) -> Path:
    """test.csv with values beyond float32 (and inf) written into sensor_2 at HUGE_ROWS."""
    lines = dataset["test"].read_text().splitlines()
    header = lines[0].split(",")
    col = header.index("sensor_2")
    for row, value in zip(HUGE_ROWS, HUGE):
        fields = lines[row + 1].split(",")
        fields[col] = value
        lines[row + 1] = ",".join(fields)
    path = folder / "huge.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def run_all(commands: list[list], cwd=None, timeout: float = 240) -> list[subprocess.CompletedProcess]:
    """Several real CLI processes, 3 at a time (each spends ~3 s importing torch)."""
    def one(args):
        return run_cli(*args, cwd=cwd, timeout=timeout)
    with ThreadPoolExecutor(max_workers=3) as pool:
        return list(pool.map(one, commands))


# --- 1. values beyond float32 are the strongest anomalies, never missing; JSON stays strict -----------------


def test_huge_values_are_the_strongest_anomalies_and_json_stays_strict(tmp_path, dataset, trained):
    f = huge_file(dataset, tmp_path)
    out = tmp_path / "out.json"
    proc = run_cli("detect.py", "--data", f, "--model-dir", trained["root"], "--json", "--output", out)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    summary = strict_json(proc.stdout)
    assert summary["missing"]["missing_values"] == 0  # a huge value is a value, not a gap
    assert summary["scored_rows"] == summary["total_rows"]
    top = summary["top_anomalies"][:len(HUGE)]
    assert sorted(a["index"] for a in top) == HUGE_ROWS  # the strongest anomalies of the file, every one
    assert all(a["top_features"][0]["feature"] == "sensor_2" for a in top)
    flagged = {r["index"] for r in summary["results"] if r["is_anomaly"]}
    assert set(HUGE_ROWS) <= flagged
    written = strict_json(out.read_text())  # the .json output holds no Infinity/NaN either
    rows = {r["index"]: r for r in written["results"]}
    assert all(rows[i]["is_anomaly"] and rows[i]["reconstruction_error"] > 1e3 for i in HUGE_ROWS)


# --- 3. --output: through symlinks, streamed to pipes and devices, never onto the input ---------------------


def test_output_targets_are_respected(tmp_path, dataset, trained, capsys):
    real = tmp_path / "real.csv"
    link = tmp_path / "link.csv"
    os.symlink(real, link)  # a dangling link: the rows go to its target, the link stays a link
    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)
    data = tmp_path / "data.csv"
    shutil.copy(dataset["test"], data)
    hard = tmp_path / "hard.csv"
    os.link(data, hard)
    data_link = tmp_path / "data-link.csv"
    os.symlink(data, data_link)
    # A private "full" device (the kernel's /dev/full: every write fails with ENOSPC): a regression that replaced
    # the target with a regular file must not damage the machine's own /dev/full.
    full = tmp_path / "full"
    try:
        os.mknod(full, stat.S_IFCHR | 0o666, os.makedev(1, 7))
    except OSError:  # not root: /dev/null's kin cannot be made; a FIFO stands in (streamed to, never replaced)
        os.mkfifo(full)
        threading.Thread(target=lambda: open(full, "rb").close(), daemon=True).start()
    before = data.read_bytes()
    received = []
    reader = threading.Thread(target=lambda: received.append(Path(fifo).read_bytes()))
    reader.start()
    store = ["--model-dir", trained["root"]]
    procs = run_all([
        ("detect.py", "--data", data, "--output", link, *store),
        ("detect.py", "--data", data, "--output", fifo, *store),
        ("detect.py", "--data", data, "--output", full, *store),
        ("detect.py", "--data", data, "--output", data, *store),
    ])
    reader.join(60)
    to_link, to_fifo, to_full, same = procs
    assert to_link.returncode == 0, to_link.stderr
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert len(pd.read_csv(real)) == len(dataset["test_frame"])
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(real.stat().st_mode) == 0o666 & ~umask  # a new file's usual mode, not mkstemp's 0600
    assert to_fifo.returncode == 0, to_fifo.stderr
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)  # still a pipe, and the rows went through it
    assert received and received[0].count(b"\n") == len(dataset["test_frame"]) + 1
    if stat.S_ISCHR(os.stat(full).st_mode):  # still the device, and its write error is one line
        assert_user_error(to_full, "cannot write output", str(full))
    else:
        assert stat.S_ISFIFO(os.stat(full).st_mode) and "Traceback" not in to_full.stderr
    assert_user_error(same, "input file")
    for other_name in (hard, data_link):  # the same file by another name: in process
        assert anomaly_cli.main(["detect", "--data", str(data), "--output", str(other_name), *map(str, store)]) == 2
        assert "input file" in capsys.readouterr().err
    assert data.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temp file left


# --- 4. the token is never shown -----------------------------------------------------------------------------


def test_server_help_does_not_print_the_token(tmp_path):
    secret = "S3cretTokenNotForHelp0123456789"  # no hyphen: argparse may wrap a help line there
    env = cli_env() | {"ANOMALY_API_TOKEN": secret}
    proc = subprocess.run([PYTHON, str(REPO / "server.py"), "--help"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0 and "--token" in proc.stdout
    assert secret not in "".join((proc.stdout + proc.stderr).split())


# --- 5 and 8: corrupt versions are refused with the reason, and listed as broken -------------------------------

CORRUPTIONS = {
    # name: (file, change, fragment of the reason)
    "config-list": ("model_config.json", lambda c: [], "not an object"),
    "config-null": ("model_config.json", lambda c: None, "not an object"),
    "config-string": ("model_config.json", lambda c: "x", "not an object"),
    "threshold-no-number": ("threshold.json", lambda t: {k: v for k, v in t.items() if k != "threshold"}, "threshold"),
    "threshold-minus-inf": ("threshold.json", lambda t: t | {"threshold": float("-inf")}, "threshold"),
    "scaler-null": ("model_config.json", lambda c: c | {"scaler_affine": None}, "scaler_affine"),
    "scaler-missing": ("model_config.json", lambda c: {k: v for k, v in c.items() if k != "scaler_affine"},
                       "scaler_affine"),
    "scaler-short": ("model_config.json", lambda c: c | {"scaler_affine": {"mul": [1.0], "add": [0.0]}},
                     "scaler_affine"),
    "smooth-huge": ("model_config.json", lambda c: c | {"smooth": 10 ** 9}, "smooth"),
    "smooth-text": ("model_config.json", lambda c: c | {"smooth": "x"}, "smooth"),
    "window-zero": ("model_config.json", lambda c: c | {"window": 0}, "window"),
    "window-negative": ("model_config.json", lambda c: c | {"window": -3}, "window"),
    "window-huge": ("model_config.json", lambda c: c | {"window": 10 ** 9}, "window"),
    "span-wrong": ("model_config.json", lambda c: c | {"span": 7}, "span"),
}


def corrupt_store(trained, folder: Path) -> Path:
    """A store with the good v1 and one broken copy of it per CORRUPTIONS entry (plus a nested config)."""
    root = folder / "models"
    shutil.copytree(trained["root"], root)
    for name, (file, change, _) in CORRUPTIONS.items():
        shutil.copytree(root / "v1", root / name)
        path = root / name / file
        path.write_text(json.dumps(change(json.loads(path.read_text()))))
    shutil.copytree(root / "v1", root / "nested")
    (root / "nested" / "model_config.json").write_text("[" * 100_000 + "]" * 100_000)
    (root / "latest").write_text("v1\n")
    return root


def test_corrupt_versions_are_refused_with_the_reason(tmp_path, dataset, trained, capsys):
    root = corrupt_store(trained, tmp_path)
    # A pickle that would leave a mark if anything unpickled it: store versions must never do so.
    marker = tmp_path / "pickle-ran"
    payload = (b"cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR.")
    (root / "scaler-missing" / "scaler.pkl").write_bytes(payload)
    names = list(CORRUPTIONS) + ["nested"]
    in_subprocess = ["scaler-missing", "threshold-minus-inf", "window-huge"]
    procs = dict(zip(in_subprocess, run_all([("detect.py", "--data", dataset["test"], "--model-dir", root,
                                              "--version", n, "--json") for n in in_subprocess])))
    for name in names:
        fragment = CORRUPTIONS[name][2] if name in CORRUPTIONS else "nested"
        if name in procs:
            line = assert_user_error(procs[name], "corrupt")
        else:  # the same path in this process (a fresh interpreter each costs ~3 s)
            code = anomaly_cli.main(["detect", "--data", str(dataset["test"]), "--model-dir", str(root), "--version",
                                     name, "--json"])
            err = capsys.readouterr().err.strip().splitlines()
            assert code == 2 and len(err) == 1, (name, err)
            line = err[0]
        assert line.startswith("error: ") and "corrupt" in line and fragment in line, (name, line)
    assert not marker.exists()


def test_listing_survives_broken_versions(tmp_path, trained):
    root = corrupt_store(trained, tmp_path)
    listed = run_cli("anomaly", "models", "list", "--model-dir", root, "--json")
    assert listed.returncode == 0 and "Traceback" not in listed.stderr, listed.stderr
    models = {m["version"]: m for m in strict_json(listed.stdout)["models"]}
    assert models["v1"]["status"] == "ok"
    for name in list(CORRUPTIONS) + ["nested"]:
        assert models[name]["status"] == "broken" and models[name]["error"], models[name]
    table = run_cli("anomaly", "models", "list", "--model-dir", root)
    assert table.returncode == 0 and "Traceback" not in table.stderr
    assert "config-null" in table.stdout and "broken" in table.stdout


# --- 6. no traceback for over-long names, a file as the store, ... -----------------------------------------------


def test_long_names_and_a_file_as_model_dir_are_one_line(tmp_path, dataset, trained):
    long_name = str(tmp_path / ("x" * 300 + ".csv"))
    a_file = tmp_path / "not-a-folder"
    a_file.write_text("hello")
    started = time.monotonic()
    procs = run_all([
        ("detect.py", "--data", long_name, "--model-dir", trained["root"]),
        ("detect.py", "--data", dataset["test"], "--model-dir", trained["root"], "--output", long_name),
        ("train.py", "--data", dataset["train"], "--model-dir", a_file, "--epochs", "100000", "--quiet"),
        ("train.py", "--data", dataset["train"], "--model-dir", a_file / "sub", "--epochs", "100000", "--quiet"),
    ], timeout=90)
    assert_user_error(procs[0], "name too long")
    assert_user_error(procs[1], "cannot write output", "name too long")
    assert_user_error(procs[2], "not-a-folder", "not a folder")
    assert_user_error(procs[3], "not-a-folder", "not a folder")
    assert time.monotonic() - started < 80  # refused before 100,000 epochs of training
    assert a_file.read_text() == "hello"


# --- 7. one reader contract for training and detection -------------------------------------------------------


def test_training_and_detection_accept_and_refuse_the_same_files(tmp_path, dataset, trained, capsys):
    text = dataset["train_frame"].iloc[:300].to_csv(index=False, float_format="%.5f")
    files = {
        "cr-only": text.replace("\n", "\r"),
        "quoted-newlines": text.replace("2026-01-01 00:01:00", '"2026-01-01\n00:01:00"', 1),
        "truncated-last-line": text.rstrip("\n").rsplit(",", 3)[0],  # the last row cut after two fields
    }
    paths = {}
    for name, body in files.items():
        paths[name] = tmp_path / f"{name}.csv"
        paths[name].write_bytes(body.encode())

    def train(name):
        return ("train.py", "--data", paths[name], "--model-dir", tmp_path / name, "--epochs", "1", "--quiet",
                "--window", "1")

    def detect(name):
        return ("detect.py", "--data", paths[name], "--model-dir", trained["root"], "--output",
                tmp_path / f"{name}.out.csv")

    procs = run_all([train("cr-only"), detect("cr-only"), train("quoted-newlines"), detect("quoted-newlines")])
    for proc in procs[:2]:
        assert_user_error(proc, "CR-only")
    for proc in procs[2:]:
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    for args in (train("truncated-last-line"), detect("truncated-last-line")):  # the same contract, in process
        assert anomaly_cli.main(["train" if args[0] == "train.py" else "detect", *map(str, args[1:])]) == 0
        assert "error" not in capsys.readouterr().err
    for name in ("quoted-newlines", "truncated-last-line"):
        out = pd.read_csv(tmp_path / f"{name}.out.csv")
        assert len(out) == 300 and out["reconstruction_error"].notna().all()
    quoted = pd.read_csv(tmp_path / "quoted-newlines.out.csv")
    assert quoted["timestamp"][1] == "2026-01-01\n00:01:00"  # the record passed through whole


# --- 9. leftovers of killed writers are cleaned; SIGTERM cleans up like Ctrl-C ---------------------------------


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_stale_temporary_entries_are_removed_by_the_next_save(tmp_path, dataset, trained):
    root = tmp_path / "models"
    shutil.copytree(trained["root"], root)
    gone = dead_pid()
    stale = [root / f".tmp-{gone}-abcd1234", root / f".trash-{gone}-v0-0123abcd", root / ".tmp-oldstyle"]
    for folder in stale:
        folder.mkdir()
        (folder / "model.pth").write_bytes(b"half")
    (root / f".latest.{gone}.xyz").write_text("v0\n")
    stale.append(root / f".latest.{gone}.xyz")
    two_hours_ago = time.time() - 7200
    os.utime(root / ".tmp-oldstyle", (two_hours_ago, two_hours_ago))
    live = root / f".tmp-{os.getpid()}-inprogress"  # a running writer (this process): must be left alone
    live.mkdir()
    proc = run_cli("train.py", "--data", dataset["train_small"], "--model-dir", root, "--epochs", "1", "--quiet",
                   "--window", "1", "--version", "v2")
    assert proc.returncode == 0, proc.stderr
    assert not any(p.exists() for p in stale)
    assert live.is_dir()
    assert ModelStore(root).versions()[-1] == "v2"


def _wait_for(predicate, timeout: float = 60) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_sigterm_is_handled_like_ctrl_c(tmp_path, dataset, trained_window):
    big = tmp_path / "big.csv"
    frame = dataset["test_frame"]
    pd.concat([frame] * 200, ignore_index=True).to_csv(big, index=False, float_format="%.5f")  # 200,000 rows
    out = tmp_path / "out.csv"
    detect = subprocess.Popen(cli_command("detect.py", "--data", big, "--model-dir", trained_window["root"], "--output",
                                          out), cwd=REPO, env=cli_env(), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    temp_files = lambda: [p for p in tmp_path.iterdir() if p.name.startswith(".out.csv")]  # noqa: E731
    assert _wait_for(temp_files), "detection never started writing"
    detect.send_signal(signal.SIGTERM)
    stdout, stderr = detect.communicate(timeout=60)
    assert detect.returncode not in (0, -signal.SIGTERM) and "Traceback" not in stderr, stderr
    assert temp_files() == [] and not out.exists()

    store = tmp_path / "models"
    log = tmp_path / "train.err"
    with open(log, "w") as err:
        train = subprocess.Popen(cli_command("train.py", "--data", dataset["train"], "--model-dir", store, "--epochs",
                                             "100000", "--window", "1", "--patience", "0", "--model-type", "dense"),  # epochs to interrupt
                                 cwd=REPO, env=cli_env(),
                                 stdout=subprocess.DEVNULL, stderr=err)
        assert _wait_for(lambda: "training" in log.read_text()), "training never started"  # the progress bar
        train.send_signal(signal.SIGTERM)
        train.wait(60)
    stderr = log.read_text()
    assert train.returncode not in (0, -signal.SIGTERM) and "Traceback" not in stderr, stderr
    assert "terminated" in stderr
    assert not store.exists() or list(store.iterdir()) == []


# --- 10. mcp_tool returns error dicts for wrong argument types ---------------------------------------------


def test_mcp_tool_wrong_argument_types_are_error_results(tmp_path, monkeypatch, trained, dataset):
    shutil.copytree(trained["root"], tmp_path / "models")
    shutil.copy(dataset["test"], tmp_path / "test.csv")
    monkeypatch.chdir(tmp_path)
    tool = mcp_tool.MCPAnomalyDetectionTool(version="v1")
    results = [
        tool.run_detection("test.csv", max_results="5"),
        tool.run_detection("test.csv", return_details="yes"),
        tool.run_detection("x" * 5000),
        tool.run_detection("bad\x00name.csv"),
        tool.train_model("test.csv", epochs="x"),
        tool.train_model("test.csv", learning_rate="fast"),
        tool.train_model("test.csv", window=[1]),
        mcp_tool.run_detection(12345),
    ]
    for result in results:
        assert result["status"] == "error" and result["error"] and "\n" not in result["error"], result
    assert "max_results" in results[0]["error"] and "epochs" in results[4]["error"]
    assert tool.run_detection("test.csv", max_results=5)["status"] == "success"


# --- 2. result pruning only ever removes our own files ------------------------------------------------------


def test_mcp_tool_results_dir_keeps_user_files(tmp_path, trained, dataset):
    folder = tmp_path / "mixed"
    folder.mkdir()
    shutil.copy(dataset["test"], folder / "test.csv")
    user_files = []
    for i in range(210):  # the user's own CSVs, older than anything the tool writes
        user_files.append(folder / f"user-{i:03d}.csv")
        user_files[-1].write_text("a,b\n1,2\n")
        os.utime(user_files[-1], (1_000_000 + i, 1_000_000 + i))
    tool = mcp_tool.MCPAnomalyDetectionTool(model_dir=str(trained["root"]), results_dir=str(folder))
    for _ in range(16):  # the 16th write prunes
        assert tool.run_detection(str(folder / "test.csv"), max_results=0)["status"] == "success"
    assert all(p.exists() for p in user_files)
    # and our own files are still pruned, down to the limit
    box = Toolbox(trained["root"], folder, keep_results=3)
    for _ in range(16):
        box.run_detection(str(folder / "test.csv"), max_results=0)
    ours = [p for p in folder.glob("*.csv") if p.name.startswith("test-")]
    assert len(ours) == 3 and all(p.exists() for p in user_files)


# --- the real server: 1, 2, 5, 6, 11 ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory, dataset, trained):
    tmp = tmp_path_factory.mktemp("hardening_server")
    data_root, model_dir = server_dirs(tmp, dataset, trained)
    for name, (file, change, _) in list(CORRUPTIONS.items())[:4]:  # a few broken versions beside v1
        shutil.copytree(model_dir / "v1", model_dir / name)
        path = model_dir / name / file
        path.write_text(json.dumps(change(json.loads(path.read_text()))))
    huge_file(dataset, data_root)
    user_files = []
    for i in range(210):  # the results folder is the data folder: the user's CSVs live there
        user_files.append(data_root / f"user-{i:03d}.csv")
        user_files[-1].write_text("a,b\n1,2\n")
        os.utime(user_files[-1], (1_000_000 + i, 1_000_000 + i))
    srv = ServerProcess(tmp, data_root, model_dir, "--results-dir", str(data_root), "--max-upload-mb", "1",
                        "--header-timeout", "1")
    srv.user_files = user_files
    yield srv
    srv.stop()


def test_server_huge_values_and_broken_versions(server):
    with server.client() as http:
        r = http.post("/api/detect", json={"file_path": "huge.csv", "max_results": 0})
        assert r.status_code == 200, r.text
        top = strict_json(r.text)["top_anomalies"][:len(HUGE)]
        assert sorted(a["index"] for a in top) == HUGE_ROWS
        listed = http.get("/api/models")
        assert listed.status_code == 200, listed.text
        status = {m["version"]: m["status"] for m in listed.json()["models"]}
        assert status["v1"] == "ok" and status["config-list"] == status["config-null"] == "broken"

    async def run():
        async with mcp_client(server, "http") as client:
            return await client.call_tool("list_models", {})
    models = {m["version"]: m for m in tool_json(anyio.run(run))["models"]}
    assert models["config-string"]["status"] == "broken" and "not an object" in models["config-string"]["error"]


def test_server_results_dir_keeps_user_files(server):
    with server.client() as http:
        for _ in range(17):
            assert http.post("/api/detect", json={"file_path": "test.csv", "max_results": 0}).status_code == 200
    assert all(p.exists() for p in server.user_files)


def test_server_bad_path_text_is_a_4xx_and_an_mcp_error_with_a_message(server):
    bad = ["test\x00.csv", "y" * 256 + ".csv", "a/" + "z" * 300 + "/b.csv"]
    with server.client() as http:
        for path in bad:
            r = http.post("/api/detect", json={"file_path": path})
            assert 400 <= r.status_code < 500 and r.json()["error"], (path, r.status_code, r.text)
            r = http.post("/api/train", json={"data_file": path, "epochs": 1})
            assert 400 <= r.status_code < 500 and r.json()["error"], (path, r.status_code, r.text)

    async def run():
        async with mcp_client(server, "sse") as client:
            out = []
            for path in bad:
                out.append(await client.call_tool("run_detection", {"file_path": path}))
                out.append(await client.call_tool("train_model", {"data_file": path, "epochs": 1}))
            return out
    for result in anyio.run(run):
        assert result.is_error and result.content[0].text.strip(), result


def test_server_explicit_training_paths_stay_in_a_version_folder(server):
    store = server.model_dir
    before = sorted(p.name for p in store.iterdir())
    started = time.monotonic()
    escapes = [".hidden/model.pth", "a/b/c/model.pth", "latest/model.pth", str(store / "model.pth")]
    with server.client() as http:
        for path in escapes:
            r = http.post("/api/train", json={"data_file": "train.csv", "epochs": 100000, "model_path": path})
            assert r.status_code == 403 and "version folder" in r.json()["error"], (path, r.text)

    async def run():
        async with mcp_client(server, "http") as client:
            return await client.call_tool("train_model", {"data_file": "train.csv", "epochs": 100000,
                                                          "model_path": "latest/model.pth"})
    result = anyio.run(run)
    assert result.is_error and "version folder" in result.content[0].text
    assert time.monotonic() - started < 60  # refused before training, not after
    assert sorted(p.name for p in store.iterdir()) == before


def test_server_chunked_oversized_json_is_413(server):
    def chunks():  # no Content-Length: the limit (1 MiB here) is found while reading
        yield b'{"file_path": "test.csv", "version": "'
        for _ in range(4):
            yield b"x" * (400 << 10)
        yield b'"}'
    with server.client() as http:
        r = http.post("/api/detect", content=chunks(), headers={"Content-Type": "application/json"})
        assert r.status_code == 413 and "too large" in r.json()["error"], r.text
        assert http.get("/health").status_code == 200


def test_server_host_names_are_case_insensitive(server):
    for host in (f"LOCALHOST:{server.port}", f"LocalHost:{server.port}", "Localhost"):
        assert httpx.get(server.url + "/health", headers={"Host": host}, timeout=10).status_code == 200, host
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}
    r = httpx.post(server.url + "/mcp", json=init, timeout=10, headers={
        "Host": f"LOCALHOST:{server.port}", "Content-Type": "application/json",
        "Accept": "application/json, text/event-stream"})
    assert r.status_code == 200, r.text
    assert httpx.get(server.url + "/health", headers={"Host": "EVIL.example"}, timeout=10).status_code == 421


def test_server_closes_connections_that_never_send_their_headers(server):
    socks = []
    for i in range(30):
        s = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        if i % 2:
            s.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # half a request, never finished
        socks.append(s)
    time.sleep(3)  # the server's --header-timeout is 1 s here
    closed = 0
    for s in socks:
        s.settimeout(5)
        try:
            closed += s.recv(1024) == b""
        except ConnectionResetError:
            closed += 1
        except socket.timeout:
            pass  # still open: the finding
        finally:
            s.close()
    assert closed == len(socks)
    with server.client() as http:  # a request that does send its headers is served as always
        assert http.get("/health").status_code == 200


# --- 11. a column of 1e30 is learned from; denormal-only data gets a clear message ------------------------------


def test_extreme_column_scales(tmp_path, dataset):
    frame = dataset["train_frame"].iloc[:600].copy()
    frame["sensor_3"] = frame["sensor_3"].astype(np.float64) * 1e30
    big = tmp_path / "big.csv"
    frame.to_csv(big, index=False)
    test = dataset["test_frame"].iloc[:300].copy()
    test["sensor_3"] = test["sensor_3"].astype(np.float64) * 1e30
    test.loc[150, "sensor_3"] = 40e30  # a spike in the 1e30 column
    big_test = tmp_path / "big_test.csv"
    test.to_csv(big_test, index=False)
    tiny = tmp_path / "tiny.csv"
    rng = np.random.default_rng(0)
    pd.DataFrame({"a": rng.normal(size=300) * 1e-310, "b": rng.normal(size=300) * 1e-311}).to_csv(tiny, index=False)
    store = tmp_path / "models"
    trained, denormal = run_all([
        ("train.py", "--data", big, "--model-dir", store, "--epochs", "15", "--window", "1", "--quiet", "--json",
         "--version", "big"),
        ("train.py", "--data", tiny, "--model-dir", tmp_path / "tiny_models", "--epochs", "2", "--quiet"),
    ])
    assert trained.returncode == 0, trained.stderr
    assert "sensor_3" in json.loads(trained.stdout)["features"]
    config = json.loads((store / "big" / "model_config.json").read_text())
    assert 0 < config["scaler_affine"]["mul"][3] < 1e-25  # a real scale, not 0 (which ignored the column)
    detected = run_cli("detect.py", "--data", big_test, "--model-dir", store, "--json", "--max-results", "0")
    top = strict_json(detected.stdout)["top_anomalies"][0]
    assert top["index"] == 150 and top["top_features"][0]["feature"] == "sensor_3"
    assert_user_error(denormal, "vary too little")
