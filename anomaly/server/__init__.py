"""The MCP server and HTTP API (`python server.py`): see `app.py`.

Imported lazily, so `mcp_tool.py` (which uses `tools.py` and `core.py`) does not load FastAPI and the MCP SDK.
"""


def main(argv: list[str] | None = None) -> int:
    from .app import main as run
    return run(argv)


def create_app(settings):
    from .app import create_app as build
    return build(settings)


__all__ = ["create_app", "main"]
