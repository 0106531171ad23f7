"""One FastAPI app, served by one uvicorn process: MCP over SSE (`/sse`, messages at `/messages/`), MCP
Streamable HTTP (`/mcp`), the HTTP API with SSE push (`/health`, `/api/...`), the dashboard (`/`) and the
API docs (`/docs`), both from assets bundled in the package (`web.py`, `static/`): no CDN.
Started by `anomaly serve` (`serve.py`).
"""

from __future__ import annotations

import contextlib
import logging
import time

import anyio
from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import __version__
from ..settings import Settings
from .core import Runtime
from .http_api import add_error_handlers, build_router
from .live import LiveHub
from .mcp_app import build_mcp
from .security import MCP_MAX_BODY, Guard
from .web import add_web

log = logging.getLogger("anomaly.server")


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

    app = FastAPI(title="anomaly", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Time-series anomaly detection: train, detect, and results pushed as "
                              "Server-Sent Events. MCP clients connect to /sse or /mcp.")
    add_error_handlers(app)
    app.include_router(build_router(runtime, hub))
    add_web(app, runtime)  # /, /docs, /static/..., /api/data, /api/results/series
    app.router.routes.extend(sse_app.routes)  # /sse and /messages/
    app.router.routes.extend(http_app.routes)  # /mcp
    app.state.runtime = runtime
    return RequestLog(Guard(app, access))


class RequestLog:
    """One log line per HTTP request, rejected ones included: method, path, status, milliseconds, and what
    the route added to `request.state.log` (file, rows). Logged when the response ends (a stream: its end)."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        facts: dict = {}
        scope.setdefault("state", {})["log"] = facts
        status = {"code": 0}

        async def watch(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        started = time.perf_counter()
        try:
            await self.app(scope, receive, watch)
        finally:
            ms = (time.perf_counter() - started) * 1000
            code = status["code"] or 500
            outcome = "ok" if code < 400 else "user_error" if code < 500 else "error"
            shown = " ".join(f"{k}={v}" for k, v in facts.items() if v is not None)
            log.info("http %s %s %s %.0fms %s", scope["method"], scope["path"], code, ms, shown,
                     extra={"kind": "http", "call": f"{scope['method']} {scope['path']}", "status": code,
                            "ms": round(ms, 1), "outcome": outcome, **{k: v for k, v in facts.items() if v is not None}})


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
