#!/usr/bin/env python3
"""The classic in-process tool API: the same calls and result dicts as the MCP tools, without a server.

    from mcp_tool import MCPAnomalyDetectionTool, run_detection
    tool = MCPAnomalyDetectionTool(version="v1")          # or model_path="models/model.pth", ...
    tool.run_detection("new.csv")                          # {status, total_rows, anomaly_count, results, output, ...}
    tool.get_model_info(); tool.train_model("normal.csv", epochs=50); tool.list_models()
    run_detection("new.csv")                               # module level: the latest model in ./models

A failure returns {"status": "error", "error": "<one-line message>", "error_type": ...} instead of raising.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from anomaly import defaults
from anomaly.errors import AnomalyError
from anomaly.server.core import clean
from anomaly.server.tools import Toolbox


def _safely(call, *args, **kwargs) -> dict:
    try:
        return clean(call(*args, **kwargs))  # JSON-safe, exactly as the MCP tools return it
    except AnomalyError as exc:
        return {"status": "error", "error": str(exc), "error_type": type(exc).__name__}


class MCPAnomalyDetectionTool:
    def __init__(self, model_path: str | None = None, threshold_path: str | None = None,
                 scaler_path: str | None = None, config_path: str | None = None, version: str | None = None,
                 model_dir: str | None = None, results_dir: str = "results"):
        """Explicit artifact paths (classic layout) or a `version` of the store in `model_dir` (default
        `models`, or the folder of `model_path`). Result CSVs go to `results_dir`."""
        if model_dir is None:
            model_dir = str(Path(model_path).parent) if model_path else "models"
        self.artifacts = {"model_path": model_path, "threshold_path": threshold_path, "scaler_path": scaler_path,
                          "config_path": config_path}
        self.version = version
        # in-process: any data file, and classic explicit files may use their scaler.pkl (the user's own files)
        self.toolbox = Toolbox(model_dir, results_dir, data_roots=None, allow_pickle=True)

    def run_detection(self, file_path: str, return_details: bool = True, max_results: int | None = None) -> dict:
        return _safely(self.toolbox.run_detection, file_path, version=self.version, return_details=return_details,
                       max_results=max_results, **self.artifacts)

    def get_model_info(self) -> dict:
        return _safely(self.toolbox.get_model_info, version=self.version, **self.artifacts)

    def train_model(self, data_file: str, version: str | None = None, epochs: int = defaults.EPOCHS,
                    batch_size: int = defaults.BATCH_SIZE, learning_rate: float = defaults.LEARNING_RATE,
                    encoding_dim: int | None = None, percentile: float = defaults.PERCENTILE,
                    model_type: str = defaults.MODEL_TYPE, window: int | str = defaults.WINDOW, **artifacts) -> dict:
        """Train a new version in the store (or to explicit artifact paths given here); never overwrites."""
        return _safely(self.toolbox.train_model, data_file, version=version, epochs=epochs, batch_size=batch_size,
                       learning_rate=learning_rate, encoding_dim=encoding_dim, percentile=percentile,
                       model_type=model_type, window=window, **artifacts)

    def list_models(self) -> dict:
        return _safely(self.toolbox.list_models)


def run_detection(file_path: str, **kwargs) -> dict:
    """Detect with the latest model in ./models (keyword arguments as `MCPAnomalyDetectionTool`)."""
    options = {k: kwargs.pop(k) for k in ("return_details", "max_results") if k in kwargs}
    return MCPAnomalyDetectionTool(**kwargs).run_detection(file_path, **options)


def get_model_info(**kwargs) -> dict:
    return MCPAnomalyDetectionTool(**kwargs).get_model_info()


def train_model(data_file: str, model_dir: str | None = None, **kwargs) -> dict:
    return MCPAnomalyDetectionTool(model_dir=model_dir).train_model(data_file, **kwargs)


def list_models(model_dir: str | None = None) -> dict:
    return MCPAnomalyDetectionTool(model_dir=model_dir).list_models()


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: python mcp_tool.py FILE   (detect with the latest model in ./models)", file=sys.stderr)
        raise SystemExit(2)
    result = run_detection(sys.argv[1])
    print(json.dumps(result, indent=2, default=str))
    raise SystemExit(0 if result.get("status") == "success" else 2)
