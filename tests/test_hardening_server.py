"""Issue 23, hardening II, the server: bodies bounded before parsing and decompressed uploads, slow bodies and
session floods that cannot lock others out, names with control characters, short error replies, no cross-site
detections, no FIFO reads, the token off the command line, leftovers of a killed server removed, and a per-user
results folder for an MCP client started anywhere. Each against the real server on a free loopback port."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import anyio
import httpx
import pytest

from conftest import PYTHON, REPO, cli_env
from serverproc import ServerProcess, free_port, mcp_client, server_dirs, tool_json

MCP_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


def initialize(http: httpx.Client) -> httpx.Response:
    from mcp_types import LATEST_PROTOCOL_VERSION

    return http.post("/mcp", headers=MCP_HEADERS, json={
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": LATEST_PROTOCOL_VERSION, "capabilities": {},
                   "clientInfo": {"name": "flood", "version": "1"}}})


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


@pytest.fixture(scope="module")
def server(tmp_path_factory, dataset, trained):
    tmp = tmp_path_factory.mktemp("hardening2_server")
    data_root, model_dir = server_dirs(tmp, dataset, trained)
    os.mkfifo(data_root / "fifo.csv")
    # what a killed server left: a half result, an upload being scored
    results = tmp / "results"
    (results / ".uploads").mkdir(parents=True)
    leftovers = [results / f".test-v1-20260101-000000-abcdef.csv.{dead_pid()}.q1w2e3.tmp",
                 results / ".uploads" / f"upload-{dead_pid()}-0123456789ab.csv"]
    for p in leftovers:
        p.write_text("half\n")
    srv = ServerProcess(tmp, data_root, model_dir, "--header-timeout", "2", "--mcp-max-sessions", "5",
                        "--max-upload-decompressed-mb", "4")
    srv.leftovers = leftovers
    yield srv
    srv.stop()


def test_leftovers_of_a_killed_server_are_removed_at_start(server):
    assert not any(p.exists() for p in server.leftovers)


def test_a_slow_body_is_cut_off_and_health_answers(server):
    sockets = []
    try:
        for _ in range(20):
            s = socket.create_connection(("127.0.0.1", server.port))
            s.sendall(b"POST /api/detect HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                      b"Content-Length: 100000\r\n\r\n{")
            sockets.append(s)
        time.sleep(5)  # two checks of 2 s: one byte in 5 s is far under the rate
        for s in sockets:
            s.settimeout(3)
            received = b""
            try:
                while chunk := s.recv(4096):  # a 4xx answer may come first; then the server closes
                    received += chunk
            except ConnectionResetError:
                pass
            except TimeoutError:
                pytest.fail("a connection sending its body a byte at a time is still open")
        assert httpx.get(server.url + "/health", timeout=5).status_code == 200
    finally:
        for s in sockets:
            s.close()


def test_a_session_flood_does_not_lock_out_new_mcp_clients(server):
    with server.client() as http:
        for _ in range(12):  # more than the cap of 5, none of them ever closed
            assert initialize(http).status_code == 200

    async def run():
        async with mcp_client(server, "http") as client:
            return await client.call_tool("list_models", {})
    assert tool_json(anyio.run(run))["status"] == "success"


def test_json_bodies_are_bounded_before_parsing(server):
    with server.client() as http:
        big = b'{"points": [' + b",".join([b"[1.5, 2.5, 3.5, 4.5]"] * 450_000) + b"]}"  # ~9.4 MiB
        r = http.post("/api/live/big", content=big, headers={"Content-Type": "application/json"})
        assert r.status_code == 413 and "8 MiB" in r.json()["error"]

        def chunks():
            for _ in range(10):
                yield b" " * (1 << 20)
        r = http.post("/api/live/big", content=chunks(), headers={"Content-Type": "application/json"})
        assert r.status_code == 413
        wide = {"points": [[1.0] * 20_000]}
        r = http.post("/api/live/big", json=wide)
        assert r.status_code == 422
        assert http.get("/health").status_code == 200


def test_uploads_are_limited_once_decompressed(server, dataset):
    bomb = gzip.compress(b"sensor_0,sensor_1,sensor_2,sensor_3\n" + b"0,0,0,0\n" * (1 << 20), 9)  # 8 MiB of rows
    assert len(bomb) < 100_000
    with server.client() as http:
        r = http.post("/api/detect/upload", content=bomb, headers={"Content-Type": "text/csv"})
        assert r.status_code == 413 and "decompressed" in r.json()["error"], r.text
        line = b"1.5," * (3 << 18)  # 3 MiB without a newline
        r = http.post("/api/detect/upload", content=line, headers={"Content-Type": "text/csv"})
        assert r.status_code == 422 and "longer than 1 MiB" in r.json()["error"], r.text
        ok = gzip.compress(dataset["test"].read_bytes())
        r = http.post("/api/detect/upload", params={"max_results": 0}, content=ok)
        assert r.status_code == 200, r.text
    assert not list((server.workdir / "results" / ".uploads").glob("upload-*"))


def test_names_with_a_newline_are_refused_over_http_and_mcp(server):
    with server.client() as http:
        assert http.post("/api/live/ch%0A", json={"points": [[1, 2, 3, 4]]}).status_code == 422
        r = http.get("/api/models/latest%0A")
        assert r.status_code == 400 and "control character" in r.json()["error"]
        r = http.post("/api/train", json={"data_file": "train.csv", "version": "latest\n", "epochs": 1})
        assert r.status_code == 400 and "control character" in r.json()["error"]

    async def run():
        async with mcp_client(server, "http") as client:
            return [await client.call_tool("get_model_info", {"version": "latest\n"}),
                    await client.call_tool("train_model", {"data_file": "train.csv", "version": "v1\n",
                                                           "epochs": 1})]
    for result in anyio.run(run):
        assert result.is_error and "control character" in result.content[0].text


def test_huge_arguments_are_not_echoed_and_the_sse_session_survives(server):
    huge = "v" * 1_200_000

    async def run():
        async with mcp_client(server, "sse") as client:
            bad = await client.call_tool("run_detection", {"file_path": "test.csv", "version": huge})
            col = await client.call_tool("run_detection", {"file_path": "test.csv", "time_column": huge})
            after = await client.call_tool("list_models", {})
            return bad, col, after
    bad, col, after = anyio.run(run)
    for result in (bad, col):
        assert result.is_error and len(result.content[0].text) < 1100, len(result.content[0].text)  # with the SDK's prefix
    assert tool_json(after)["status"] == "success"
    with server.client() as http:
        r = http.post("/api/detect", json={"file_path": "test.csv", "version": huge})
        assert 400 <= r.status_code < 500 and len(r.content) < 5000
        r = http.post("/api/detect", json={"file_path": "test.csv", "x" * 1_000_000: 1})
        assert r.status_code == 422 and len(r.content) < 5000


def test_cross_site_get_does_not_run_a_detection(server):
    results = server.workdir / "results"
    before = set(results.glob("*.csv"))
    with server.client() as http:
        r = http.get("/api/detect/stream", params={"file_path": "test.csv"},
                     headers={"Sec-Fetch-Site": "cross-site", "Referer": "https://evil.example/"})
        assert r.status_code == 403
        assert http.get("/api/models", headers={"Sec-Fetch-Site": "same-origin"}).status_code == 200
        assert http.get("/", headers={"Sec-Fetch-Site": "cross-site"}).status_code == 200  # a link to the page
    assert set(results.glob("*.csv")) == before


def test_a_fifo_in_the_data_root_is_refused_at_once(server):
    with server.client() as http:
        started = time.monotonic()
        r = http.post("/api/detect", json={"file_path": "fifo.csv"}, timeout=20)
        assert r.status_code == 422 and "not a regular file" in r.json()["error"]
        assert time.monotonic() - started < 10
        assert http.get("/health").json()["scoring_running"] == 0


def test_the_token_from_a_file_or_the_environment_stays_out_of_ps(tmp_path, dataset, trained):
    data_root, model_dir = server_dirs(tmp_path, dataset, trained)
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-from-file\n")
    class TokenFileServer(ServerProcess):
        headers = {"Authorization": "Bearer s3cret-from-file"}  # the token it read, not one it was given

    srv = TokenFileServer(tmp_path, data_root, model_dir, "--token-file", str(token_file))
    try:
        assert "s3cret" not in Path(f"/proc/{srv.proc.pid}/cmdline").read_bytes().decode(errors="replace")
        assert httpx.get(srv.url + "/api/models").status_code == 401
        ok = httpx.get(srv.url + "/api/models", headers={"Authorization": "Bearer s3cret-from-file"})
        assert ok.status_code == 200
    finally:
        srv.stop()
    port = free_port()
    env = cli_env() | {"ANOMALY_TOKEN": "s3cret-from-env"}
    env.pop("ANOMALY_API_TOKEN", None)
    proc = subprocess.Popen([PYTHON, str(REPO / "server.py"), "--port", str(port), "--data-root", str(data_root),
                             "--model-dir", str(model_dir), "--results-dir", str(tmp_path / "r2")],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(300):
            try:
                if httpx.get(url + "/health", headers={"Authorization": "Bearer s3cret-from-env"}).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        assert httpx.get(url + "/api/models").status_code == 401
    finally:
        proc.terminate()
        proc.wait(15)
    warned = subprocess.run([PYTHON, "-m", "anomaly", "serve", "--token", "x", "--port", "-1"], env=cli_env(),
                            capture_output=True, text=True, timeout=60)
    assert "--token-file" in warned.stderr


def test_mcp_server_started_anywhere_writes_results_to_a_user_folder(tmp_path, dataset, trained):
    from mcp.client.session import ClientSession
    from mcp.client.stdio import StdioServerParameters, stdio_client

    data_root = tmp_path / "data"
    data_root.mkdir()
    shutil.copy(dataset["test"], data_root / "test.csv")
    home = tmp_path / "home"
    env = {"ANOMALY_MODEL_DIR": str(trained["root"]), "ANOMALY_DATA_ROOTS": str(data_root),
           "XDG_DATA_HOME": str(home / "data"), "HOME": str(home), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(REPO)}
    # no ANOMALY_RESULTS_DIR, started in / as a desktop client does
    params = StdioServerParameters(command=PYTHON, args=["-m", "anomaly", "mcp"], env=env, cwd="/")
    before = set(Path("/results").glob("*")) if Path("/results").is_dir() else set()

    async def session():
        with open(tmp_path / "stderr.log", "w") as errlog:
            async with stdio_client(params, errlog=errlog) as (read, write), ClientSession(read, write) as client:
                await client.initialize()
                return await client.call_tool("run_detection", {"file_path": "test.csv", "max_results": 0})

    result = anyio.run(session)
    assert not result.is_error, result.content[0].text
    output = json.loads(result.content[0].text)["output"]
    assert output.startswith(str(home / "data" / "anomaly" / "results")), output
    after = set(Path("/results").glob("*")) if Path("/results").is_dir() else set()
    assert after == before  # nothing written into the client's working directory

    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the results folder would be")
    proc = subprocess.run([PYTHON, "-m", "anomaly", "mcp", "--results-dir", str(blocked)], env=cli_env(),
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: ") and "not a folder" in proc.stderr
