"""One FastAPI app, served by one uvicorn process: MCP over SSE (`/sse`, messages at `/messages/`), MCP
Streamable HTTP (`/mcp`), and the HTTP API with SSE push (`/health`, `/api/...`, docs at `/docs`).

    python server.py [--host 127.0.0.1] [--port 3001] [--data-root DIR ...] [--model-dir models] [--token T]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path

import anyio
from fastapi import FastAPI

from .. import __version__
from .core import Runtime, Settings
from .http_api import add_error_handlers, build_router
from .live import LiveHub
from .mcp_tools import build_mcp
from .security import MCP_MAX_BODY, Guard, is_loopback


def create_app(settings: Settings) -> Guard:
    runtime = Runtime(settings)
    hub = LiveHub(runtime)
    mcp = build_mcp(runtime)
    access = settings.access()
    transport_security = access.transport_security()
    sse_app = mcp.sse_app(transport_security=transport_security, max_request_body_size=MCP_MAX_BODY,
                          host=settings.host)
    http_app = mcp.streamable_http_app(transport_security=transport_security, max_request_body_size=MCP_MAX_BODY,
                                       host=settings.host)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        # The Streamable HTTP session manager needs its own task group running for the app's lifetime.
        async with mcp.session_manager.run(), anyio.create_task_group() as tg:
            runtime.task_group = tg
            yield
            tg.cancel_scope.cancel()

    app = FastAPI(title="anomaly", version=__version__, lifespan=lifespan,
                  description="Time-series anomaly detection: train, detect, and results pushed as "
                              "Server-Sent Events. MCP clients connect to /sse or /mcp.")
    add_error_handlers(app)
    app.include_router(build_router(runtime, hub))
    app.router.routes.extend(sse_app.routes)  # /sse and /messages/
    app.router.routes.extend(http_app.routes)  # /mcp
    app.state.runtime = runtime
    return Guard(app, access)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="server.py", description="MCP server (SSE and Streamable HTTP) and HTTP API "
                                "for anomaly detection.", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--host", default="127.0.0.1", help="address to bind; a non-loopback one needs --token")
    p.add_argument("--port", type=int, default=3001)
    p.add_argument("--data-root", action="append", dest="data_roots", metavar="DIR",
                   help="folder clients may read data files from (repeatable; default: the working directory)")
    p.add_argument("--model-dir", default="models", help="model store; artifacts are only loaded from here")
    p.add_argument("--results-dir", default="results", help="where per-row result CSVs are written")
    # The environment is read in main(), not as the default: --help prints defaults, and must not print a secret.
    p.add_argument("--token", help="bearer token required on every route (default: $ANOMALY_API_TOKEN)")
    p.add_argument("--allowed-host", action="append", default=[], dest="allowed_hosts", metavar="HOST[:PORT]",
                   help="extra Host header value to accept, e.g. a DNS name (repeatable)")
    p.add_argument("--allowed-origin", action="append", default=[], dest="allowed_origins", metavar="ORIGIN",
                   help="extra browser Origin to accept, e.g. https://dash.example (repeatable)")
    p.add_argument("--max-upload-mb", type=float, default=64, help="largest HTTP request body (413 above)")
    p.add_argument("--workers", type=int, default=2, help="concurrent scoring threads")
    p.add_argument("--device", default="auto", help="where trainings and detections run unless a request names "
                   "another: auto (CUDA, else MPS, else CPU), cpu, cuda, cuda:N or mps")
    p.add_argument("--header-timeout", type=float, default=10.0, help="seconds a client has to send a request's "
                   "headers; a connection that has not is closed (idle keep-alive connections: 5 s)")
    p.add_argument("--log-level", default="warning", choices=("critical", "error", "warning", "info", "debug"))
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.token = args.token or os.environ.get("ANOMALY_API_TOKEN")
    if not is_loopback(args.host) and not args.token:
        print(f"error: refusing to listen on {args.host} without a token: anyone on the network could train, "
              "read files and run models. Pass --token or set ANOMALY_API_TOKEN.", file=sys.stderr)
        return 2
    roots = args.data_roots or [os.getcwd()]
    missing = [r for r in roots if not Path(r).is_dir()]
    if missing:
        print(f"error: --data-root {', '.join(missing)} is not a folder", file=sys.stderr)
        return 2
    if args.workers < 1:
        print("error: --workers must be at least 1", file=sys.stderr)
        return 2
    if args.device != "auto":  # "auto" always resolves: checking it would only import torch at start-up
        from ..device import resolve_device
        from ..errors import DeviceError
        try:
            resolve_device(args.device)  # a server asked for a GPU it lacks refuses to start
        except DeviceError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    if not args.header_timeout > 0:
        print("error: --header-timeout must be positive", file=sys.stderr)
        return 2
    settings = Settings(host=args.host, port=args.port, data_roots=roots, model_dir=args.model_dir,
                        results_dir=args.results_dir, token=args.token or None, allowed_hosts=args.allowed_hosts,
                        allowed_origins=args.allowed_origins, max_upload_mb=args.max_upload_mb, workers=args.workers,
                        device=args.device)
    import uvicorn

    app = create_app(settings)
    shown = f"[{args.host}]" if ":" in args.host else args.host
    print(f"anomaly server on http://{shown}:{args.port}  MCP: /sse and /mcp  API docs: /docs  "
          f"device: {args.device}  models: {Path(args.model_dir).resolve()}  "
          f"data roots: {', '.join(str(Path(r).resolve()) for r in roots)}"
          f"{'  (token required)' if settings.token else ''}", file=sys.stderr, flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, timeout_graceful_shutdown=3,
                http=header_timeout_protocol(args.header_timeout), timeout_keep_alive=KEEP_ALIVE_S)
    return 0


KEEP_ALIVE_S = 5  # an idle keep-alive connection is closed after this


def header_timeout_protocol(seconds: float) -> type:
    """uvicorn's h11 protocol with a header-read timeout, which uvicorn 0.54 lacks: its keep-alive timer starts
    only after a response, so a client that connects and sends half a request line (or nothing) holds the
    connection forever; hundreds of them exhaust the server. Here a connection waiting for a request's headers
    is closed `seconds` after that wait began."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HeaderTimeoutProtocol(H11Protocol):
        header_timer = None

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._watch_headers()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            self._watch_headers()

        def connection_lost(self, exc) -> None:
            self._stop_watch()
            super().connection_lost(exc)

        def _watch_headers(self) -> None:
            waiting = self.cycle is None or self.cycle.response_complete
            if not waiting:
                self._stop_watch()  # the headers are in: the request runs as long as it needs
            elif self.header_timer is None and not self.transport.is_closing():
                self.header_timer = self.loop.call_later(seconds, self._headers_too_slow)

        def _stop_watch(self) -> None:
            if self.header_timer is not None:
                self.header_timer.cancel()
                self.header_timer = None

        def _headers_too_slow(self) -> None:
            self.header_timer = None
            if (self.cycle is None or self.cycle.response_complete) and not self.transport.is_closing():
                self.transport.close()

    return HeaderTimeoutProtocol
