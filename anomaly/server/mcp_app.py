"""The MCP tools: `run_detection`, `get_model_info`, `train_model`, `list_models`, on the SDK's `MCPServer`,
served over SSE and Streamable HTTP (`app.py`) and over stdio (`stdio.py`).

The arguments of `run_detection` and `train_model` are derived from `anomaly.specs` (`DetectSpec`,
`TrainSpec`): the same names, defaults, bounds and help as the CLI and the HTTP API; unknown arguments are
refused. Each tool runs the shared `Toolbox` call in a worker thread and returns a structured (pydantic) result. A user error (`AnomalyError`) becomes an MCP error result (`isError`) with
its one-line message; the connection stays up.
"""

from __future__ import annotations

import inspect
import logging
from typing import Annotated, Any, Callable

import anyio.from_thread
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import CallToolResult, TextContent, ToolAnnotations
from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

from .. import __version__, specs
from ..errors import AnomalyError
from ..logs import log_call
from .core import Runtime, to_json

log = logging.getLogger("anomaly.server")

INSTRUCTIONS = """Time-series anomaly detection on CSV/TXT files with PyTorch models.
Train a model on mostly-normal data with train_model, then score new files with run_detection.
File paths are on the server's machine, inside its allowed data folders; relative paths start there."""


# --- structured results ------------------------------------------------------------------------------------


class _Result(BaseModel):
    model_config = ConfigDict(extra="allow")  # the service may add fields; clients see them all


class DetectionResult(_Result):
    status: str
    total_rows: int
    anomaly_count: int
    anomaly_ratio: float
    threshold: float
    # The rows' shape is described, not typed: clients validate structured results against the schema,
    # and per-row schemas make the SDK's Python client spend ~0.15 s per 1000 rows doing so.
    results: Annotated[list[dict[str, Any]] | None, WithJsonSchema({"type": ["array", "null"]})] = Field(
        None, description="per-row results {index (0-based data row), reconstruction_error (null: no score), "
                          "is_anomaly}, anomalies first, capped by max_results")
    results_truncated: bool | None = Field(None, description="true when results hold fewer rows than the file")
    output: str | None = Field(None, description="CSV with every row's reconstruction_error and is_anomaly")
    version: str | None = None


class _ModelFacts(_Result):
    status: str
    version: str
    model_type: str
    features: list[str]
    window: int
    threshold: float


class ModelInfo(_ModelFacts):
    threshold_method: str | None = None
    created: str | None = None


class TrainResult(_ModelFacts):
    epochs_run: int
    final_loss: float | None = None


class ModelList(_Result):
    status: str
    store: str
    latest: str | None = None
    models: list[dict[str, Any]]


def _reply(encoded: tuple[str, dict]) -> CallToolResult:
    """Compact JSON text (older clients read only this) plus the structured content, which the SDK
    validates against the tool's output model."""
    text, data = encoded
    return CallToolResult(content=[TextContent(type="text", text=text)], structured_content=data)


def _unexpected(exc: Exception) -> str:
    return " ".join(f"internal error: {type(exc).__name__}: {exc}".split())[:500]


def _progress_token(ctx: Context):
    meta = ctx.request_context.meta or {}
    return meta.get("progress_token")


# --- argument types ----------------------------------------------------------------------------------------


def _arg(name: str, annotation: Any, default: Any = inspect.Parameter.empty) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=default)


FilePath = Annotated[str, Field(description="CSV/TXT file on the server (relative to its data folder)")]
ARTIFACTS = [
    _arg("model_path", Annotated[str | None, Field(description="explicit model.pth inside the model store "
                                                               "(classic layout); default: the versioned store")], None),
    _arg("threshold_path", Annotated[str | None, Field(description="explicit threshold.json inside the model "
                                                                   "store")], None),
    _arg("scaler_path", Annotated[str | None, Field(description="explicit scaler.pkl inside the model store")], None),
    _arg("config_path", Annotated[str | None, Field(description="explicit model_config.json inside the model "
                                                                "store")], None),
]
VERSION = _arg("version", Annotated[str | None, Field(description="model version name (default: the latest)")], None)
NEW_VERSION = _arg("version", Annotated[str | None, Field(description="name of the new version (default: a "
                                                                      "timestamp); an existing one is never "
                                                                      "overwritten")], None)
CTX = _arg("ctx", Context)


def _register(mcp: MCPServer, fn: Callable, name: str, doc: str, leading: list, spec_cls: type[specs.Spec],
              returns: Any, annotations: ToolAnnotations) -> None:
    """Register `fn(**kwargs)` as a tool whose arguments are `leading` and the spec's remote fields, and whose
    schema refuses unknown arguments (the SDK's default ignores them: `epoch=5` would train 100 epochs)."""
    fn.__name__, fn.__doc__ = name, doc
    specs.signature(fn, leading, spec_cls, returns=returns)
    mcp.tool(name=name, annotations=annotations)(fn)
    _forbid_unknown(mcp, name)


def _forbid_unknown(mcp: MCPServer, name: str) -> None:
    tool = mcp._tool_manager.get_tool(name)  # the SDK has no option for it: swap in a stricter argument model
    base = tool.fn_metadata.arg_model

    class Strict(base):  # type: ignore[valid-type, misc]
        model_config = ConfigDict(extra="forbid")

    Strict.__name__ = base.__name__
    tool.fn_metadata.arg_model = Strict
    tool.parameters = Strict.model_json_schema(by_alias=True)


def build_mcp(runtime: Runtime) -> MCPServer:
    mcp = MCPServer("anomaly-detection", instructions=INSTRUCTIONS, version=__version__, log_level="WARNING")
    toolbox = runtime.toolbox

    async def call(name: str, fn: Callable, facts: dict, **kwargs: Any) -> CallToolResult:
        """Run a toolbox call and encode its result in a worker thread (the event loop stays free); one log
        line per call, and a traceback in the log for anything but a user error."""
        try:
            with log_call("tool", name, **facts) as line:
                text, data = await runtime.score(lambda: to_json(fn(**kwargs)))
                line["rows"] = data.get("total_rows", data.get("rows")) if isinstance(data, dict) else None
            return _reply((text, data))
        except AnomalyError as exc:
            raise ToolError(str(exc)) from None
        except Exception as exc:  # a bug or an OS refusal: logged above; still an error result that says what
            raise ToolError(_unexpected(exc)) from None

    async def run_detection(ctx: Context, file_path: str, **kwargs: Any) -> CallToolResult:
        def progress(event: dict) -> None:
            try:
                anyio.from_thread.run(ctx.report_progress, event["rows_read"], None,
                                      f"{event['rows_read']} rows scored")
            except Exception:  # a client that went away: the detection goes on
                log.debug("progress report failed", exc_info=True)

        # Only a client that asked for progress gets it (each report is a hop back to the event loop).
        wanted = progress if _progress_token(ctx) is not None else None
        return await call("run_detection", toolbox.run_detection, {"file": file_path, "version": kwargs.get("version")},
                          file_path=file_path, progress=wanted, **kwargs)

    _register(mcp, run_detection, "run_detection",
              "Score every row of a CSV/TXT file with a trained model: counts, threshold, the strongest anomalies "
              "with the features that drove them, per-row results (capped) and a CSV with all rows.",
              [_arg("file_path", FilePath), CTX, *ARTIFACTS, VERSION], specs.DetectSpec, DetectionResult,
              ToolAnnotations(read_only_hint=False, idempotent_hint=True))

    async def get_model_info(**kwargs: Any) -> CallToolResult:
        return await call("get_model_info", toolbox.get_model_info, {"version": kwargs.get("version")}, **kwargs)

    get_model_info.__doc__ = ("Describe a trained model: architecture, features, window, threshold and its method, "
                              "training data summary and loss history, creation time.")
    params = [*ARTIFACTS, VERSION]
    get_model_info.__signature__ = inspect.Signature(params, return_annotation=ModelInfo)
    get_model_info.__annotations__ = {p.name: p.annotation for p in params} | {"return": ModelInfo}
    mcp.tool(annotations=ToolAnnotations(read_only_hint=True))(get_model_info)
    _forbid_unknown(mcp, "get_model_info")

    async def train_model(ctx: Context, data_file: str, **kwargs: Any) -> CallToolResult:
        async def on_epoch(event: dict) -> None:
            loss = f"loss {event['loss']:.5g}" + (f", val_loss {event['val_loss']:.5g}"
                                                  if event.get("val_loss") is not None else "")
            await ctx.report_progress(event["epoch"], event["epochs"], f"epoch {event['epoch']}/{event['epochs']}: {loss}")

        try:
            with log_call("tool", "train_model", file=data_file, version=kwargs.get("version")) as line:
                result = await runtime.train(on_epoch, data_file=data_file, **kwargs)
                line["rows"], line["version"] = result.get("rows"), result.get("version")
        except AnomalyError as exc:
            raise ToolError(str(exc)) from None
        except Exception as exc:
            raise ToolError(_unexpected(exc)) from None
        return _reply(to_json(result))

    _register(mcp, train_model, "train_model",
              "Train an anomaly detector on a file of normal data and save it as a new model version. Reports "
              "progress (epoch and loss) while it runs.",
              [_arg("data_file", Annotated[str, Field(description="CSV/TXT file of mostly normal rows (relative to "
                                                                  "the server's data folder)")]),
               CTX, NEW_VERSION, *ARTIFACTS], specs.TrainSpec, TrainResult,
              ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=False))

    @mcp.tool(annotations=ToolAnnotations(read_only_hint=True))
    async def list_models() -> ModelList:
        """List the trained model versions with their key facts (type, features, window, threshold)."""
        return await call("list_models", toolbox.list_models, {})

    from .fleet_tools import add_mcp_tool as add_fleet_tool
    add_fleet_tool(mcp, runtime, call)

    return mcp
