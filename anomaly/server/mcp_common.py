"""What every MCP tool module shares: the base of the structured results and the client's progress token.
Below `mcp_app` and `fleet_tools`, so that neither imports the other for them."""

from __future__ import annotations

from mcp.server.mcpserver import Context
from pydantic import BaseModel, ConfigDict


class _Result(BaseModel):
    model_config = ConfigDict(extra="allow")  # the service may add fields; clients see them all


def _progress_token(ctx: Context):
    meta = ctx.request_context.meta or {}
    return meta.get("progress_token")
