"""What the server lets a client touch, and who may talk to it.

- `PathPolicy`: data files only under the allowed data roots, model artifacts only inside the model store
  (the scaler is a pickle: loading one from anywhere else would run a stranger's code). Paths are resolved
  first (`..` and symlinks followed), then checked, so neither can lead out of a root.
- `Guard`: one ASGI middleware in front of every route, MCP and HTTP alike: DNS-rebinding protection
  (`Host` must name this server, a browser `Origin` must be local, this server itself or explicitly allowed),
  the optional bearer token, and request size limits answered with a clear 413. The dashboard's page, its
  static files and the docs page hold no data and need no token (their API calls do); Host/Origin still apply.
"""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

import anyio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import DataError, PathNotAllowed

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")
MCP_PATHS = ("/sse", "/messages", "/mcp")
MCP_MAX_BODY = 4 << 20  # one JSON-RPC message; the SDK's own default
# A JSON body costs many times its size once parsed (a Python object per number): the API's JSON routes take
# far less than an upload, whose CSV is streamed to disk. 8 MiB holds the largest live push (100,000 points).
JSON_MAX_BODY = 8 << 20
UPLOAD_PATHS = ("/api/detect/upload",)
LARGE_JSON_AT_ONCE = 2
# GET/HEAD without a token: the dashboard page, its bundled assets and the docs page (no data; their calls send it)
PUBLIC_PATHS = ("/", "/docs", "/favicon.ico")
PUBLIC_PREFIX = "/static/"


def is_public(method: str, path: str) -> bool:
    return method in ("GET", "HEAD") and (path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIX))


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


# --- file access -------------------------------------------------------------------------------------------


class PathPolicy:
    """Confines client-given paths. `data_roots=None` allows any data file (in-process use by `mcp_tool`)."""

    def __init__(self, data_roots: list[str | os.PathLike] | None, model_root: str | os.PathLike):
        self.data_roots = None if data_roots is None else [Path(r).resolve() for r in data_roots]
        self.model_root = Path(model_root).resolve()

    def data_file(self, path: str) -> Path:
        """A data file to read: relative paths are taken from the first data root."""
        check_path_text(path)
        if self.data_roots is None:
            return Path(path)
        p = Path(path)
        resolved = _resolve(p if p.is_absolute() else self.data_roots[0] / p)
        if not any(resolved.is_relative_to(root) for root in self.data_roots):
            roots = ", ".join(str(r) for r in self.data_roots)
            raise PathNotAllowed(f"{path} is outside the allowed data roots ({roots})")
        check_regular(resolved, path)
        return resolved

    def artifact(self, path: str) -> Path:
        """A model artifact file: it must lie inside the model store (relative paths: from the working
        directory, as in `models/model.pth`, or from the store itself, as in `v1/model.pth`)."""
        check_path_text(path)
        p = Path(path)
        candidates = [p] if p.is_absolute() else [Path.cwd() / p, self.model_root / p]
        for c in candidates:
            resolved = _resolve(c)
            if resolved.is_relative_to(self.model_root) and resolved != self.model_root:
                return resolved
        raise PathNotAllowed(f"{path} is outside the model store {self.model_root}; "
                             "model files are only loaded from there")


MAX_PATH_CHARS = 4096  # PATH_MAX
MAX_NAME_BYTES = 255  # NAME_MAX: one path component


def check_path_text(path) -> None:
    """A client's path must be a string the OS can take: no NUL byte, no component over 255 bytes (otherwise
    the OS call fails deep inside with an error that is not the user's to read)."""
    if not isinstance(path, str):
        raise DataError(f"a path must be a string, got {type(path).__name__}")
    if "\x00" in path:
        raise DataError("a path must not contain a NUL byte")
    if len(path) > MAX_PATH_CHARS or any(len(part.encode("utf-8", "replace")) > MAX_NAME_BYTES
                                         for part in path.split("/")):
        raise DataError(f"path too long: {path[:80]}... (at most {MAX_NAME_BYTES} bytes a name, "
                        f"{MAX_PATH_CHARS} characters in all)")


def check_regular(resolved: Path, given: str) -> None:
    """A data path must be a plain file or a folder: opening a FIFO (or a device) blocks its reader until a
    writer comes, which holds a scoring thread for good."""
    try:
        mode = resolved.stat().st_mode
    except OSError:
        return  # missing: the reader says so with its own message
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise DataError(f"{given[:200]} is not a regular file (a pipe, socket or device); give a data file")


def _resolve(p: Path) -> Path:
    try:
        return p.resolve()
    except (OSError, RuntimeError, ValueError) as exc:  # a symlink loop, an unreadable folder on the way
        raise DataError(f"cannot resolve path {str(p)[:200]}: {exc}") from None


# --- the ASGI guard ----------------------------------------------------------------------------------------


@dataclass
class Access:
    """Who may connect: Host/Origin allow-lists, the bearer token and body size limits."""

    host: str = "127.0.0.1"
    token: str | None = None
    allowed_hosts: list[str] = field(default_factory=list)  # extra Host values (e.g. a DNS name)
    allowed_origins: list[str] = field(default_factory=list)  # extra browser origins
    max_body: int = 64 << 20  # HTTP API uploads
    mcp_max_body: int = MCP_MAX_BODY

    def hosts(self) -> list[str] | None:
        """Host header patterns; None = not checked (a wildcard bind with no names given: the token guards)."""
        names = list(LOOPBACK_HOSTS)
        if self.host not in ("0.0.0.0", "::"):
            names.append(f"[{self.host}]" if ":" in self.host else self.host)
        elif not self.allowed_hosts:
            return None
        return [n.lower() for n in [f"{n}:*" for n in names] + names + list(self.allowed_hosts)]

    def origins(self) -> list[str]:
        names = list(LOOPBACK_HOSTS)
        if self.host not in ("0.0.0.0", "::") and not is_loopback(self.host):
            names.append(f"[{self.host}]" if ":" in self.host else self.host)
        return [o.lower() for o in [f"http://{h}:*" for h in names] + [f"http://{h}" for h in names]
                + list(self.allowed_origins)]

    def transport_security(self):
        """The same rules for the MCP SDK's own transport check (the guard already applied them)."""
        from mcp.server.transport_security import TransportSecuritySettings

        hosts = self.hosts()
        return TransportSecuritySettings(enable_dns_rebinding_protection=hosts is not None,
                                         allowed_hosts=hosts or [], allowed_origins=self.origins())


def _matches(value: str, patterns: list[str]) -> bool:
    for pattern in patterns:
        if value == pattern:
            return True
        if pattern.endswith(":*") and value.startswith(pattern[:-1]) and value[len(pattern) - 1:].isdigit():
            return True
    return False


class BodyTooLarge(Exception):
    pass


class Guard:
    """Host/Origin checks, bearer token and body size limit for every HTTP request."""

    def __init__(self, app: ASGIApp, access: Access):
        self.app = app
        self.access = access
        self.hosts = access.hosts()
        self.origins = access.origins()
        self.token = access.token.encode() if access.token else None
        self.large_json = None  # made on first use, inside the event loop

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        host = headers.get("host", "").lower()  # host names are case-insensitive (RFC 3986): LOCALHOST is localhost
        if host != headers.get("host", ""):  # the MCP SDK checks Host again, case-sensitively: hand it lower case
            scope = dict(scope, headers=[(k, v.lower()) if k.lower() == b"host" else (k, v) for k, v in scope["headers"]])
        if self.hosts is not None and not _matches(host, self.hosts):
            return await _reply(send, 421, f"host {host!r} is not allowed (DNS-rebinding protection); "
                                           "start the server with --allowed-host to add it")
        origin = headers.get("origin")
        same_origin = origin is not None and origin.lower() in (f"http://{host}", f"https://{host}")
        if origin and not same_origin and not _matches(origin.lower(), self.origins):
            return await _reply(send, 403, f"origin {origin!r} is not allowed; start the server with "
                                           "--allowed-origin to add it")
        public = is_public(scope.get("method", ""), scope.get("path", ""))
        if origin is None and not public and headers.get("sec-fetch-site") == "cross-site":
            # a page elsewhere making the browser fetch a URL (<img src>, a link): no Origin is sent then, but
            # the browser says where the request comes from; without a token it would run a detection
            return await _reply(send, 403, "cross-site requests are not allowed (Sec-Fetch-Site: cross-site); "
                                           "call the API from this server's pages or a non-browser client")
        if self.token is not None and not public:
            auth = headers.get("authorization", "")
            given = auth[7:].strip().encode() if auth[:7].lower() == "bearer " else b""
            if not hmac.compare_digest(given, self.token):
                return await _reply(send, 401, "missing or wrong bearer token (Authorization: Bearer <token>)",
                                    [(b"www-authenticate", b'Bearer realm="anomaly"')])
        path = scope.get("path", "")
        limit = (self.access.mcp_max_body if path.startswith(MCP_PATHS) else self.access.max_body
                 if path in UPLOAD_PATHS else min(self.access.max_body, JSON_MAX_BODY))
        declared = headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            return await _reply(send, 413, _too_large(limit))
        seen = 0
        started = False
        too_large = False

        async def counted_receive() -> Message:
            nonlocal seen, too_large
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    too_large = True
                    raise BodyTooLarge(_too_large(limit))
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal started
            if too_large:
                # A chunked body (no Content-Length) was cut off while the app read it; the app's own answer
                # (FastAPI's 400 "error parsing the body") is replaced by the 413 that says why.
                if message["type"] == "http.response.start" and not started:
                    started = True
                    await _reply(send, 413, _too_large(limit))
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        large = (scope.get("method") in ("POST", "PUT", "PATCH") and not path.startswith(MCP_PATHS)
                 and path not in UPLOAD_PATHS and not (declared and declared.isdigit() and int(declared) <= 1 << 20))
        try:
            if large:  # parsed whole, at many times its size: at most LARGE_JSON_AT_ONCE at a time
                async with self._large_json_slot():
                    await self.app(scope, counted_receive, tracked_send)
            else:
                await self.app(scope, counted_receive, tracked_send)
        except BodyTooLarge:
            if not started:
                await _reply(send, 413, _too_large(limit))

    @contextlib.asynccontextmanager
    async def _large_json_slot(self):
        """A JSON body over 1 MiB (or of unknown length) takes many times its size while it is parsed: a few at
        once stay within memory, more wait their turn. (The API's streams take small bodies: none waits here.)"""
        if self.large_json is None:
            self.large_json = anyio.Semaphore(LARGE_JSON_AT_ONCE)
        async with self.large_json:
            yield


def _too_large(limit: int) -> str:
    return f"request body too large (limit {limit / (1 << 20):.0f} MiB)"


async def _reply(send: Send, status: int, message: str, extra_headers: list | None = None) -> None:
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *(extra_headers or [])]})
    await send({"type": "http.response.body", "body": body})
