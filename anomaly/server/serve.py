"""`anomaly serve` (and `python server.py`): the MCP server over SSE and Streamable HTTP plus the HTTP API.

Settings come from the environment (`anomaly.server.settings`), flags override them. FastAPI and uvicorn are
imported only once the settings are good, so `anomaly serve --help` and a bad flag are instant.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from .. import memory
from ..errors import AnomalyError
from . import settings as cfg

log = logging.getLogger("anomaly.server")
FLAGS = cfg.COMMON_FLAGS + cfg.SERVE_FLAGS


def add_arguments(p: argparse.ArgumentParser) -> None:
    cfg.add_flags(p, FLAGS)


def check(settings: cfg.Settings) -> None:
    """What must hold before listening; each failure is one `AnomalyError` line."""
    from .security import is_loopback

    if not is_loopback(settings.host) and not settings.token:
        raise AnomalyError(f"refusing to listen on {settings.host} without a token: anyone on the network could "
                           "train, read files and run models. Pass --token or set ANOMALY_API_TOKEN.")
    if settings.device != "auto":  # "auto" always resolves: checking it would only import torch at start-up
        from ..device import resolve_device
        resolve_device(settings.device)  # a server asked for a GPU it lacks refuses to start


def run(args: argparse.Namespace) -> int:
    settings = cfg.from_args(args, FLAGS)
    check(settings)
    try:
        import uvicorn

        from .app import KEEP_ALIVE_S, create_app, header_timeout_protocol
    except ImportError as exc:
        raise AnomalyError(f"anomaly serve needs the server extra ({exc.name} is missing): "
                           "pip install 'anomaly[server]'") from None
    memory.keep_freed_heap()  # each detection reuses the heap the last one freed
    app = create_app(settings)
    shown = f"[{settings.host}]" if ":" in settings.host else settings.host
    print(f"anomaly server on http://{shown}:{settings.port}  MCP: /sse and /mcp  API docs: /docs  "
          f"device: {settings.device}  models: {Path(settings.model_dir).resolve()}  "
          f"data roots: {', '.join(str(Path(r).resolve()) for r in settings.data_roots)}"
          f"{'  (token required)' if settings.token else ''}", file=sys.stderr, flush=True)
    # uvicorn's own access log is off: the app logs one line per request itself (with its outcome and time).
    # Its loop is uvloop when installed (the server extra pins it; loop="auto"), else asyncio.
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=logging.getLevelName(
        logging.getLogger("anomaly").getEffectiveLevel()).lower(), access_log=False, log_config=None,
        timeout_graceful_shutdown=3, http=header_timeout_protocol(settings.header_timeout),
        timeout_keep_alive=KEEP_ALIVE_S)
    return 0
