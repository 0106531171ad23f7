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
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .._version import __version__
from .core import Runtime
from .http_api import add_error_handlers, build_router
from .live import LiveHub
from .mcp_app import build_mcp
from .security import MCP_MAX_BODY, MCP_PATHS, Guard
from .settings import Settings
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
                                       host=settings.host, max_sessions=settings.mcp_max_sessions,
                                       session_idle_timeout=settings.mcp_session_timeout)
    evict_idle_sessions(mcp.session_manager)

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
    mcp_routes = [*sse_app.routes, *http_app.routes]  # /sse, /messages/ and /mcp
    app.router.routes.extend(mcp_routes)
    app.state.runtime = runtime
    runtime.clean_leftovers()
    return RequestLog(Guard(MCPRoutes(app, mcp_routes), access))


def evict_idle_sessions(manager) -> None:
    """At the session cap, a new Streamable HTTP client replaces the session that has been idle the longest,
    instead of being refused: otherwise a burst of `initialize` calls (which cost nothing to send) locks every
    new client out until those sessions time out. A session with a request in flight, an open stream
    included, is never replaced. The SDK (mcp 2.3) has no hook for this: its admission step is extended."""
    admit = manager._admit_session

    def admit_or_evict(requestor):
        sessions = manager._server_instances
        if manager.max_sessions is not None and len(sessions) >= manager.max_sessions:
            idle = [(t.idle_scope.deadline, sid) for sid, t in list(sessions.items())
                    if t.idle_scope is not None and getattr(t, "_requests_in_flight", 1) == 0]
            if idle:
                sid = min(idle)[1]
                transport = sessions.pop(sid)
                manager._session_owners.pop(sid, None)
                transport.idle_scope.cancel()  # ends its server task, which terminates the transport
                log.info("MCP session cap reached: replaced the session idle the longest")
        return admit(requestor)

    manager._admit_session = admit_or_evict


class MCPRoutes:
    """The MCP transports' routes, served straight from the SDK's own route objects: an MCP call does not go
    through FastAPI's middleware stack and its list of API routes (nothing there is for MCP: the SDK answers
    its own errors). Anything these routes do not match in full (another path, a wrong method) is FastAPI's,
    where the same routes are registered, so its answers (404, 405) are unchanged."""

    def __init__(self, app: ASGIApp, routes: list):
        self.app, self.routes = app, routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(MCP_PATHS):
            for route in self.routes:
                match, child = route.matches(scope)
                if match is Match.FULL:
                    await route.handle({**scope, **child}, receive, send)
                    return
        await self.app(scope, receive, send)


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
            if log.isEnabledFor(logging.INFO):  # off by default: the line is not even built
                self._log(scope, facts, status["code"], (time.perf_counter() - started) * 1000)

    @staticmethod
    def _log(scope: Scope, facts: dict, code: int, ms: float) -> None:
        code = code or 500
        outcome = "ok" if code < 400 else "user_error" if code < 500 else "error"
        shown = " ".join(f"{k}={v}" for k, v in facts.items() if v is not None)
        log.info("http %s %s %s %.0fms %s", scope["method"], scope["path"], code, ms, shown,
                 extra={"kind": "http", "call": f"{scope['method']} {scope['path']}", "status": code,
                        "ms": round(ms, 1), "outcome": outcome, **{k: v for k, v in facts.items() if v is not None}})


KEEP_ALIVE_S = 5  # an idle keep-alive connection is closed after this


class CoalescingTransport:
    """A socket transport that sends a response's head with its body: uvicorn writes the status line and
    headers, then the body, separately, and each `send` on its own wakes the client and costs a system call
    (a JSON-RPC reply went out as two packets). A head is held until the next write, which takes it along at
    once, or at the latest until the end of the event-loop step; every other write goes straight out (a body
    or a stream's event is never delayed). Everything but `write` is the transport's own; a held head leaves
    before a close, never after an abort."""

    def __init__(self, transport, loop):
        self._transport, self._loop = transport, loop
        self._head: bytes | None = None

    def write(self, data) -> None:
        if not data:
            return
        data = bytes(data)
        if self._head is not None:
            data, self._head = self._head + data, None
        elif data.startswith(b"HTTP/1.") and data.endswith(b"\r\n\r\n"):  # a status line and headers
            self._head = data
            self._loop.call_soon(self._flush)
            return
        if not self._transport.is_closing():
            self._transport.write(data)

    def writelines(self, lines) -> None:
        for data in lines:
            self.write(data)

    def _flush(self) -> None:
        if self._head is not None:
            head, self._head = self._head, None
            if not self._transport.is_closing():
                self._transport.write(head)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def abort(self) -> None:
        self._head = None
        self._transport.abort()

    def get_write_buffer_size(self) -> int:
        return len(self._head or b"") + self._transport.get_write_buffer_size()

    def __getattr__(self, name: str):
        return getattr(self._transport, name)


def http_protocol_base() -> type:
    """uvicorn's HTTP/1.1 protocol: on httptools' parser (C) when it is installed (the server extra pins it),
    else on h11 (pure Python: a few hundred microseconds more of each MCP call)."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
        return HttpToolsProtocol
    except ImportError:
        from uvicorn.protocols.http.h11_impl import H11Protocol
        return H11Protocol


MIN_BODY_RATE = 1024  # bytes a second a request body must average, checked every header timeout


def header_timeout_protocol(seconds: float, base: type | None = None) -> type:
    """uvicorn's HTTP protocol (`http_protocol_base`) with a header-read timeout, which uvicorn 0.54 lacks: its
    keep-alive timer starts only after a response, so a client that connects and sends half a request line (or
    nothing) holds the connection forever; hundreds of them exhaust the server. Here a connection waiting for
    a request's headers is closed `seconds` after that wait began. A request body must then keep coming: a
    connection that sends less than MIN_BODY_RATE bytes a second over any `seconds` while its body is unread
    is closed too (a byte every few seconds would hold it, and its file descriptor, forever).
    Its writes go through `CoalescingTransport`."""

    class HeaderTimeoutProtocol(base or http_protocol_base()):
        header_timer = None
        body_timer = None
        body_bytes = 0

        def connection_made(self, transport) -> None:
            super().connection_made(CoalescingTransport(transport, self.loop))
            self._watch_headers()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            self.body_bytes += len(data)
            self._watch_headers()
            self._watch_body()

        def connection_lost(self, exc) -> None:
            self._stop_watch()
            if self.body_timer is not None:
                self.body_timer.cancel()
                self.body_timer = None
            super().connection_lost(exc)

        def _body_unread(self) -> bool:
            cycle = self.cycle
            return cycle is not None and not cycle.response_complete and cycle.more_body

        def _watch_body(self) -> None:
            if self.body_timer is None and self._body_unread() and not self.transport.is_closing():
                self.body_bytes = 0
                self.body_timer = self.loop.call_later(seconds, self._body_check)

        def _body_check(self) -> None:
            self.body_timer = None
            if not self._body_unread() or self.transport.is_closing():
                return
            if getattr(self.flow, "read_paused", False):  # the app is behind, not the client: wait on
                self._watch_body()
                return
            if self.body_bytes < MIN_BODY_RATE * seconds:
                log.info("closing a connection whose request body is too slow (%d bytes in %.0f s)",
                         self.body_bytes, seconds)
                self.transport.close()
                return
            self._watch_body()

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
