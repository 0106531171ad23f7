"""`anomaly mcp` / `anomaly-mcp`: the MCP server over stdio, for clients that launch it themselves (Claude
Desktop, Claude Code, Cursor, VS Code...). The same tools as `anomaly serve` offers over SSE and Streamable
HTTP, configured the way MCP clients configure servers: `command`, `args` and `env` (`anomaly.server.settings`).

stdout carries the protocol; logs go to stderr. No token: only the client that started the process talks to it.
"""

from __future__ import annotations

import argparse
import sys

from .. import memory
from . import settings as cfg

FLAGS = cfg.COMMON_FLAGS


def add_arguments(p: argparse.ArgumentParser) -> None:
    cfg.add_flags(p, FLAGS)


def run(args: argparse.Namespace) -> int:
    settings = cfg.from_args(args, FLAGS)
    if settings.device != "auto":
        from ..device import resolve_device
        resolve_device(settings.device)  # a GPU this machine lacks: one error line now, not per tool call
    import anyio

    from .core import Runtime
    from .mcp_app import build_mcp

    memory.keep_freed_heap()  # each detection reuses the heap the last one freed
    runtime = Runtime(settings)
    runtime.clean_leftovers()  # and a results folder that cannot be made is one error line now, not per call
    mcp = build_mcp(runtime)
    anyio.run(mcp.run_stdio_async)  # the SDK's stdio transport (MCPServer.run("stdio") does the same)
    return 0


def main() -> int:
    """The `anomaly-mcp` entry point: `anomaly mcp` with the same flags."""
    from ..cli import main as cli_main

    return cli_main(["mcp", *sys.argv[1:]])
