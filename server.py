#!/usr/bin/env python3
"""MCP server (SSE at /sse, Streamable HTTP at /mcp) and HTTP API: python server.py [--port 3001] (see --help)."""
from anomaly.server import main

if __name__ == "__main__":
    raise SystemExit(main())
