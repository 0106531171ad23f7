"""Starting the real `server.py` for tests: a subprocess on a free loopback port, waited for via /health,
and MCP clients (the `mcp` SDK's own) over `/sse` or `/mcp`."""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import time
from pathlib import Path

import httpx

from conftest import PYTHON, REPO, cli_env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    def __init__(self, workdir: Path, data_root: Path, model_dir: Path, *args: str, token: str | None = None):
        self.workdir, self.data_root, self.model_dir = workdir, data_root, model_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.token = token
        self.log_path = workdir / f"server-{self.port}.log"
        cmd = [PYTHON, str(REPO / "server.py"), "--port", str(self.port), "--data-root", str(data_root),
               "--model-dir", str(model_dir), "--results-dir", str(workdir / "results"), *args]
        if token:
            cmd += ["--token", token]
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(cmd, cwd=workdir, env=cli_env(), stdout=log, stderr=subprocess.STDOUT)
        self._wait()

    @property
    def headers(self) -> dict:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def _wait(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.url + "/health", headers=self.headers, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"server did not answer /health within {timeout}s:\n{self.log()}")

    def client(self, **kwargs) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=self.headers, timeout=120, **kwargs)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def server_dirs(tmp: Path, dataset: dict, *stores: dict) -> tuple[Path, Path]:
    """A data root holding the dataset's files and a model store holding copies of trained fixtures."""
    data_root = tmp / "data"
    data_root.mkdir()
    for name in ("train", "test"):
        shutil.copy(dataset[name], data_root / f"{name}.csv")
    model_dir = tmp / "models"
    for store in stores:
        shutil.copytree(store["root"], model_dir, dirs_exist_ok=True)
    return data_root, model_dir


@contextlib.asynccontextmanager
async def mcp_client(server: ServerProcess, transport: str = "sse", headers: dict | None = None):
    """An MCP `Client` connected to the server over `sse` (/sse) or `http` (Streamable HTTP, /mcp)."""
    import httpx2
    from mcp import Client
    from mcp.client.sse import sse_client
    from mcp.client.streamable_http import streamable_http_client

    headers = server.headers if headers is None else headers
    if transport == "sse":
        async with Client(sse_client(server.url + "/sse", headers=headers, timeout=30, sse_read_timeout=300)) as c:
            yield c
    else:
        async with httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=300)) as http:
            async with Client(streamable_http_client(server.url + "/mcp", http_client=http)) as c:
                yield c


def tool_json(result) -> dict:
    """A successful tool result as a dict; its text and structured content (where the tool has an output
    schema; `run_detection` has none: its reply is one JSON text) must agree."""
    assert not result.is_error, result.content[0].text
    data = json.loads(result.content[0].text)
    if result.structured_content is None:
        return data
    for key in ("status", "version"):
        if key in data:
            assert result.structured_content[key] == data[key]
    return data


def parse_sse(lines) -> list[tuple[str, dict]]:
    """(event, data) pairs from SSE text lines (comments and keep-alives skipped)."""
    events, name, data = [], None, []
    for line in lines:
        if line.startswith(":"):
            continue
        if line == "":
            if data:
                events.append((name or "message", json.loads("\n".join(data))))
            name, data = None, []
        elif line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())
    return events
