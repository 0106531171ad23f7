"""The servers: `anomaly serve` (`serve.py`: MCP over SSE and Streamable HTTP plus the HTTP API, one FastAPI
app in `app.py`) and `anomaly mcp` (`stdio.py`: MCP over stdio). Both offer the same MCP tools (`mcp_app.py`)
on the same `Toolbox` (`toolbox.py`: the service calls with the server's path policy).

Imported lazily, so `mcp_tool` (which uses `toolbox.py` and `core.py`) does not load FastAPI.
"""


def main(argv: list[str] | None = None) -> int:
    """`python server.py ...` is `anomaly serve ...`."""
    import sys

    from ..cli import main as cli_main
    return cli_main(["serve", *(sys.argv[1:] if argv is None else argv)])


def create_app(settings):
    from .app import create_app as build
    return build(settings)


__all__ = ["create_app", "main"]
