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
from anomaly.errors import AnomalyError, DataError
from anomaly.server.core import clean
from anomaly.server.tools import Toolbox


def _safely(call, *args, **kwargs) -> dict:
    try:
        _check_types(kwargs)
        return clean(call(*args, **kwargs))  # JSON-safe, exactly as the MCP tools return it
    except AnomalyError as exc:
        return {"status": "error", "error": str(exc), "error_type": type(exc).__name__}
    except Exception as exc:  # the promise is a status dict, never an exception (an OS refusal, a bug)
        message = " ".join(f"{type(exc).__name__}: {exc}".split())[:500]
        return {"status": "error", "error": message, "error_type": type(exc).__name__}


# The argument types the tools take. Over MCP and HTTP, pydantic checks them; in-process, this does, so that
# max_results="5" is an error result instead of a TypeError deep inside.
_STRINGS = ("version", "model_path", "threshold_path", "scaler_path", "config_path", "model_type")
_INTEGERS = ("max_results", "epochs", "batch_size", "encoding_dim")
_NUMBERS = ("learning_rate", "percentile")


def _check_types(arguments: dict) -> None:
    for name, value in arguments.items():
        if value is None and name not in ("file_path", "data_file"):
            continue
        integer = isinstance(value, int) and not isinstance(value, bool)
        if name in ("file_path", "data_file") + _STRINGS:
            ok, want = isinstance(value, str), "a string"
        elif name in _INTEGERS:
            ok, want = integer, "a whole number"
        elif name in _NUMBERS:
            ok, want = integer or isinstance(value, float), "a number"
        elif name == "return_details":
            ok, want = isinstance(value, bool), "true or false"
        elif name == "window":
            ok, want = integer or value == "auto", "a whole number or 'auto'"
        else:
            continue
        if not ok:
            raise DataError(f"{name} must be {want}, got {type(value).__name__} {str(value)[:40]!r}")


class MCPAnomalyDetectionTool:
    def __init__(self, model_path: str | None = None, threshold_path: str | None = None,
                 scaler_path: str | None = None, config_path: str | None = None, version: str | None = None,
                 model_dir: str | None = None, results_dir: str = "results", device: str = "auto"):
        """Explicit artifact paths (classic layout) or a `version` of the store in `model_dir` (default
        `models`, or the folder of `model_path`). Result CSVs go to `results_dir`. `device`: auto, cpu, cuda,
        cuda:N or mps, for trainings and detections (each call may name another)."""
        if model_dir is None:
            model_dir = str(Path(model_path).parent) if model_path else "models"
        self.artifacts = {"model_path": model_path, "threshold_path": threshold_path, "scaler_path": scaler_path,
                          "config_path": config_path}
        self.version = version
        # in-process: any data file, and classic explicit files may use their scaler.pkl (the user's own files)
        self.toolbox = Toolbox(model_dir, results_dir, data_roots=None, device=device, allow_pickle=True)

    def run_detection(self, file_path: str, return_details: bool = True, max_results: int | None = None,
                      time_column: str | None = None, threshold_window: int | str | None = None,
                      device: str | None = None) -> dict:
        return _safely(self.toolbox.run_detection, file_path, version=self.version, return_details=return_details,
                       max_results=max_results, time_column=time_column, threshold_window=threshold_window,
                       device=device, **self.artifacts)

    def get_model_info(self) -> dict:
        return _safely(self.toolbox.get_model_info, version=self.version, **self.artifacts)

    def train_model(self, data_file: str, version: str | None = None, epochs: int = defaults.EPOCHS,
                    batch_size: int = defaults.BATCH_SIZE, learning_rate: float = defaults.LEARNING_RATE,
                    encoding_dim: int | None = None, percentile: float = defaults.PERCENTILE,
                    model_type: str = defaults.MODEL_TYPE, window: int | str = defaults.WINDOW,
                    device: str | None = None, **artifacts) -> dict:
        """Train a new version in the store (or to explicit artifact paths given here); never overwrites."""
        return _safely(self.toolbox.train_model, data_file, version=version, epochs=epochs, batch_size=batch_size,
                       learning_rate=learning_rate, encoding_dim=encoding_dim, percentile=percentile,
                       model_type=model_type, window=window, device=device, **artifacts)

    def list_models(self) -> dict:
        return _safely(self.toolbox.list_models)


def run_detection(file_path: str, **kwargs) -> dict:
    """Detect with the latest model in ./models (keyword arguments as `MCPAnomalyDetectionTool`)."""
    options = {k: kwargs.pop(k) for k in ("return_details", "max_results", "time_column", "threshold_window")
               if k in kwargs}
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
