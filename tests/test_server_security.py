"""Security of the real server: confined paths, DNS-rebinding protection, bearer token, size limits."""

from __future__ import annotations

import os
import shutil
import subprocess

import anyio
import httpx
import pytest

from conftest import PYTHON, REPO, cli_env
from serverproc import ServerProcess, mcp_client, server_dirs, tool_json

TOKEN = "s3cret-token-for-tests"


@pytest.fixture(scope="module")
def server(tmp_path_factory, dataset, trained):
    tmp = tmp_path_factory.mktemp("sec_server")
    data_root, model_dir = server_dirs(tmp, dataset, trained)
    outside = tmp / "outside"
    outside.mkdir()
    shutil.copy(dataset["test"], outside / "secret.csv")
    os.symlink(outside / "secret.csv", data_root / "link.csv")  # a symlink out of the data root
    os.symlink(outside, data_root / "linkdir")
    shutil.copytree(model_dir / "v1", outside / "v1")  # a complete model outside the store
    srv = ServerProcess(tmp, data_root, model_dir, "--max-upload-mb", "1")
    srv.outside = outside
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def token_server(tmp_path_factory, dataset, trained):
    tmp = tmp_path_factory.mktemp("token_server")
    data_root, model_dir = server_dirs(tmp, dataset, trained)
    srv = ServerProcess(tmp, data_root, model_dir, token=TOKEN)
    yield srv
    srv.stop()


def test_data_paths_outside_the_roots_are_refused(server):
    outside = server.outside
    escapes = ["../outside/secret.csv", str(outside / "secret.csv"), "link.csv", "linkdir/secret.csv",
               "/etc/passwd", "test.csv/../../outside/secret.csv"]
    with server.client() as http:
        for path in escapes:
            r = http.post("/api/detect", json={"file_path": path})
            assert r.status_code == 403 and "outside the allowed data roots" in r.json()["error"], (path, r.text)
            r = http.post("/api/train", json={"data_file": path, "epochs": 1})
            assert r.status_code == 403, (path, r.text)
            r = http.get("/api/detect/stream", params={"file_path": path})
            assert r.status_code == 403, (path, r.text)
        assert http.post("/api/detect", json={"file_path": "test.csv"}).status_code == 200


def test_model_files_outside_the_store_are_refused(server):
    outside = server.outside / "v1"
    with server.client() as http:
        for field in ("model_path", "scaler_path", "threshold_path", "config_path"):
            r = http.post("/api/detect", json={"file_path": "test.csv", field: str(outside / "model.pth")})
            assert r.status_code == 403 and "outside the model store" in r.json()["error"], (field, r.text)
        r = http.post("/api/detect", json={"file_path": "test.csv", "model_path": "../outside/v1/model.pth"})
        assert r.status_code == 403
        # the scaler pickle is never taken from outside, even when only it is given
        r = http.post("/api/detect", json={"file_path": "test.csv", "model_path": str(server.model_dir / "v1" / "model.pth"),
                                           "scaler_path": str(outside / "scaler.pkl")})
        assert r.status_code == 403
        ok = http.post("/api/detect", json={"file_path": "test.csv", "model_path": str(server.model_dir / "v1" / "model.pth")})
        assert ok.status_code == 200 and ok.json()["total_rows"] > 0


def test_mcp_refuses_escapes_with_error_results(server):
    async def run():
        async with mcp_client(server, "sse") as client:
            a = await client.call_tool("run_detection", {"file_path": "../outside/secret.csv"})
            b = await client.call_tool("get_model_info", {"model_path": str(server.outside / "v1" / "model.pth")})
            c = await client.call_tool("train_model", {"data_file": "link.csv", "epochs": 1})
            return a, b, c
    for result in anyio.run(run):
        assert result.is_error and "outside" in result.content[0].text


@pytest.mark.parametrize("path", ["/health", "/api/models", "/sse", "/mcp", "/docs"])
def test_foreign_host_and_origin_are_refused(server, path):
    url = server.url + path
    evil_host = httpx.get(url, headers={"Host": "evil.example:80"}, timeout=10)
    assert evil_host.status_code == 421 and "not allowed" in evil_host.json()["error"]
    evil_origin = httpx.get(url, headers={"Origin": "http://evil.example"}, timeout=10)
    assert evil_origin.status_code == 403 and "origin" in evil_origin.json()["error"]


def test_local_origin_and_hosts_are_accepted(server):
    for headers in ({"Origin": f"http://localhost:{server.port}"}, {"Host": f"localhost:{server.port}"},
                    {"Origin": "http://127.0.0.1:5173"}):
        assert httpx.get(server.url + "/health", headers=headers, timeout=10).status_code == 200, headers


def test_posted_mcp_message_with_foreign_origin_is_refused(server):
    r = httpx.post(server.url + "/mcp", headers={"Origin": "https://evil.example", "Content-Type": "application/json",
                                                  "Accept": "application/json, text/event-stream"},
                   json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, timeout=10)
    assert r.status_code == 403


def test_oversized_requests_get_a_clear_413(server):
    big = b"x" * (2 << 20)
    with server.client() as http:
        r = http.post("/api/detect/upload", content=big, headers={"Content-Type": "text/csv"})
        assert r.status_code == 413 and "too large" in r.json()["error"]

        def chunks():  # no Content-Length: the limit is enforced while reading
            for _ in range(4):
                yield b"x" * (600 << 10)

        r = http.post("/api/detect/upload", content=chunks(), headers={"Content-Type": "text/csv"})
        assert r.status_code == 413 and "too large" in r.json()["error"]
        r = http.post("/mcp", content=b"{" + b" " * (5 << 20) + b"}",
                      headers={"Content-Type": "application/json", "Accept": "application/json, text/event-stream"})
        assert r.status_code == 413
        assert http.get("/health").status_code == 200


@pytest.mark.parametrize("path", ["/health", "/api/models", "/sse", "/mcp", "/api/live/x/events", "/openapi.json",
                                  "/api/data", "/api/results/series?output=x.csv"])
def test_token_is_required_on_every_route(token_server, path):
    url = token_server.url + path
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        r = httpx.get(url, headers=headers, timeout=10)
        assert r.status_code == 401 and "token" in r.json()["error"], (headers, r.text)
        assert r.headers["www-authenticate"].startswith("Bearer")


def test_dashboard_page_and_assets_are_public_but_not_their_calls(token_server):
    """The page, its bundled assets and the docs page hold no data: a browser loads them without the token,
    which the page then sends on every API call. Only GET/HEAD; Host/Origin checks still apply."""
    for path in ("/", "/docs", "/favicon.ico", "/static/app.js", "/static/swagger/swagger-ui-bundle.js",
                 "/static/swagger/LICENSE"):
        r = httpx.get(token_server.url + path, timeout=10)
        assert r.status_code == 200, (path, r.status_code)
    assert httpx.post(token_server.url + "/", timeout=10).status_code == 401
    assert httpx.get(token_server.url + "/static/nope.js", timeout=10).status_code == 404
    assert httpx.get(token_server.url + "/", headers={"Host": "evil.example"}, timeout=10).status_code == 421
    assert httpx.get(token_server.url + "/docs", headers={"Origin": "http://evil.example"}, timeout=10).status_code == 403


def test_same_origin_page_requests_pass_the_origin_check(token_server):
    """A page's own POSTs carry Origin = its own address (the Host it asked): accepted; others are not."""
    body = {"file_path": "test.csv", "max_results": 0}
    for host in (f"127.0.0.1:{token_server.port}", f"localhost:{token_server.port}"):
        r = httpx.post(token_server.url + "/api/detect", json=body, timeout=60,
                       headers={"Origin": f"http://{host}", "Host": host, **token_server.headers})
        assert r.status_code == 200, r.text
    r = httpx.post(token_server.url + "/api/detect", json=body, timeout=60,
                   headers={"Origin": "http://evil.example", **token_server.headers})
    assert r.status_code == 403


def test_same_origin_counts_for_an_allowed_host_name():
    """Bound to 0.0.0.0 with --allowed-host box.lan:3001, the dashboard at http://box.lan:3001 may POST."""
    from anomaly.server.security import Access, Guard

    seen = []

    async def app(scope, receive, send):
        seen.append(scope["path"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    guard = Guard(app, Access(host="0.0.0.0", token="t", allowed_hosts=["box.lan:3001"]))

    async def call(host: str, origin: str) -> int:
        sent = []

        async def receive():
            return {"type": "http.request", "body": b""}

        async def send(message):
            sent.append(message)

        headers = [(b"host", host.encode()), (b"origin", origin.encode()), (b"authorization", b"Bearer t")]
        await guard({"type": "http", "method": "POST", "path": "/api/detect", "headers": headers}, receive, send)
        return sent[0]["status"]

    assert anyio.run(call, "box.lan:3001", "http://box.lan:3001") == 200
    assert anyio.run(call, "box.lan:3001", "http://evil.example") == 403
    assert anyio.run(call, "evil.example", "http://evil.example") == 421


def test_token_grants_http_and_mcp(token_server):
    with token_server.client() as http:
        assert http.get("/api/models").status_code == 200

    async def run(transport):
        async with mcp_client(token_server, transport) as client:
            return await client.call_tool("list_models", {})
    for transport in ("sse", "http"):
        assert "v1" in {m["version"] for m in tool_json(anyio.run(run, transport))["models"]}


def test_mcp_client_without_the_token_cannot_connect(token_server):
    async def run():
        async with mcp_client(token_server, "http", headers={}) as client:
            await client.list_tools()
    with pytest.raises(Exception):  # noqa: B017 - which error the SDK raises varies; the 401 is checked below
        anyio.run(run)
    # What that client was told: the initialize POST itself is refused with 401.
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}
    headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
    r = httpx.post(token_server.url + "/mcp", json=init, headers=headers, timeout=10)
    assert r.status_code == 401
    r = httpx.post(token_server.url + "/mcp", json=init, headers=headers | token_server.headers, timeout=10)
    assert r.status_code == 200


def test_non_loopback_bind_without_token_is_refused(tmp_path):
    env = cli_env()
    env.pop("ANOMALY_API_TOKEN", None)
    proc = subprocess.run([PYTHON, str(REPO / "server.py"), "--host", "0.0.0.0", "--port", "1"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: refusing to listen on 0.0.0.0 without a token")


def test_host_and_origin_rules_follow_the_bind_address():
    from anomaly.server.security import Access, _matches

    lan = Access(host="10.0.0.5", token="t")
    assert _matches("10.0.0.5:3001", lan.hosts()) and _matches("localhost:3001", lan.hosts())
    assert not _matches("evil.example:3001", lan.hosts()) and not _matches("10.0.0.5:3001x", lan.hosts())
    assert _matches("http://10.0.0.5:3001", lan.origins()) and not _matches("http://evil.example", lan.origins())
    assert Access(host="0.0.0.0", token="t").hosts() is None  # any name reaches it; the token guards
    named = Access(host="0.0.0.0", token="t", allowed_hosts=["box.lan:3001"])
    assert _matches("box.lan:3001", named.hosts()) and not _matches("evil.example:3001", named.hosts())
    assert not _matches("http://localhost.evil.example", Access().origins())
