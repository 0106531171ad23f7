#!/usr/bin/env python3
"""The classic in-process tool API under its classic name (installed with the package): the same calls and
result dicts as the MCP tools, without a server. It lives in `anomaly.inprocess`; see its docstring.

    from mcp_tool import MCPAnomalyDetectionTool, run_detection
"""

from anomaly.inprocess import (
    MCPAnomalyDetectionTool,
    get_model_info,
    list_models,
    main,
    run_detection,
    train_model,
)

__all__ = ["MCPAnomalyDetectionTool", "run_detection", "get_model_info", "train_model", "list_models"]

if __name__ == "__main__":
    raise SystemExit(main())
