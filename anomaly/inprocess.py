"""The tool calls in-process: the same calls and result dicts as the MCP tools, without a server. This is what
the top-level `mcp_tool` module (installed with the package) exports:

    from mcp_tool import MCPAnomalyDetectionTool, run_detection
    tool = MCPAnomalyDetectionTool(version="v1")          # or model_path="models/model.pth", ...
    tool.run_detection("new.csv")                          # {status, total_rows, anomaly_count, results, output, ...}
    tool.get_model_info(); tool.train_model("normal.csv", epochs=50); tool.list_models()
    run_detection("new.csv")                               # module level: the latest model in ./models

`run_detection` and `train_model` take the fields of `anomaly.specs.DetectSpec` / `TrainSpec` (their
signatures are derived from them; `help()` shows every one). A failure, an unknown argument or a value of
the wrong type included, returns {"status": "error", "error": "<one-line message>", "error_type": ...}
instead of raising.
"""

from __future__ import annotations

import inspect
import json
import logging
import sys
from pathlib import Path
from typing import Any

from . import specs
from .errors import AnomalyError
from .server.core import clean
from .server.toolbox import Toolbox

log = logging.getLogger("anomaly.inprocess")
_KW = inspect.Parameter.KEYWORD_ONLY


def _safely(call, *args: Any, **kwargs: Any) -> dict:
    try:
        return clean(call(*args, **kwargs))  # JSON-safe, exactly as the MCP tools return it
    except AnomalyError as exc:
        return {"status": "error", "error": str(exc), "error_type": type(exc).__name__}
    except Exception as exc:  # the promise is a status dict, never an exception (an OS refusal, a bug)
        log.exception("in-process tool call failed")
        message = " ".join(f"{type(exc).__name__}: {exc}".split())[:500]
        return {"status": "error", "error": message, "error_type": type(exc).__name__}


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

    def run_detection(self, file_path: str, **params: Any) -> dict:
        """Score every row of a CSV/TXT file (parameters: `anomaly.specs.DetectSpec`)."""
        # a call's own version or artifact path wins over the one the tool was made with
        return _safely(self.toolbox.run_detection, file_path, **({"version": self.version} | self.artifacts | params))

    def get_model_info(self) -> dict:
        return _safely(self.toolbox.get_model_info, version=self.version, **self.artifacts)

    def train_model(self, data_file: str, version: str | None = None, **params: Any) -> dict:
        """Train a new version in the store (or to explicit artifact paths given here: model_path, ...);
        never overwrites (parameters: `anomaly.specs.TrainSpec`)."""
        return _safely(self.toolbox.train_model, data_file, version=version, **params)

    def list_models(self) -> dict:
        return _safely(self.toolbox.list_models)


_SELF = inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)
_FILE = inspect.Parameter("file_path", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=str)
_DATA = inspect.Parameter("data_file", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=str)
_VERSION = inspect.Parameter("version", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=str | None, default=None)
_ARTIFACTS = [inspect.Parameter(n, _KW, annotation=str | None, default=None)
              for n in ("model_path", "threshold_path", "scaler_path", "config_path")]
# The signatures `help()` and editors show: every spec field with its type and default (validated on call).
specs.signature(MCPAnomalyDetectionTool.run_detection, [_SELF, _FILE], specs.DetectSpec, returns=dict)
specs.signature(MCPAnomalyDetectionTool.train_model, [_SELF, _DATA, _VERSION], specs.TrainSpec, _ARTIFACTS,
                returns=dict)


def run_detection(file_path: str, **kwargs: Any) -> dict:
    """Detect with the latest model in ./models (keyword arguments: `MCPAnomalyDetectionTool`'s, then
    `DetectSpec` fields)."""
    tool_args = {k: kwargs.pop(k) for k in list(kwargs) if k in inspect.signature(MCPAnomalyDetectionTool).parameters}
    return MCPAnomalyDetectionTool(**tool_args).run_detection(file_path, **kwargs)


def get_model_info(**kwargs: Any) -> dict:
    return MCPAnomalyDetectionTool(**kwargs).get_model_info()


def train_model(data_file: str, model_dir: str | None = None, **kwargs: Any) -> dict:
    return MCPAnomalyDetectionTool(model_dir=model_dir).train_model(data_file, **kwargs)


def list_models(model_dir: str | None = None) -> dict:
    return MCPAnomalyDetectionTool(model_dir=model_dir).list_models()


def main(argv: list[str] | None = None) -> int:
    """`python mcp_tool.py FILE`: detect with the latest model in ./models, print the JSON result."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python mcp_tool.py FILE   (detect with the latest model in ./models)", file=sys.stderr)
        return 2
    result = run_detection(argv[0])
    print(json.dumps(result, indent=2, default=str))
    return 0 if result.get("status") == "success" else 2


__all__ = ["MCPAnomalyDetectionTool", "run_detection", "get_model_info", "train_model", "list_models", "main"]
