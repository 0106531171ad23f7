"""The MCP server and HTTP API (`python server.py`): see `app.py`."""

from .app import create_app, main
from .core import Settings

__all__ = ["create_app", "main", "Settings"]
