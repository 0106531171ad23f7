"""The MCP tools: `run_detection`, `get_model_info`, `train_model`, `list_models`, on the SDK's `MCPServer`.

Each tool validates its typed arguments, runs the shared `Toolbox` call in a worker thread and returns a
structured (pydantic) result. A user error (`AnomalyError`) becomes an MCP error result (`isError`) with
its one-line message; the connection stays up.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import anyio.from_thread
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import CallToolResult, TextContent, ToolAnnotations
from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

from .. import __version__, defaults
from ..errors import AnomalyError
from ..models import MODEL_TYPES
from .core import Runtime, to_json
from .tools import MAX_RESULTS_LIMIT

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

FilePath = Annotated[str, Field(description="CSV/TXT file on the server (relative to its data folder)")]
ModelPath = Annotated[str | None, Field(description="explicit model.pth inside the model store "
                                                     "(classic layout); default: the versioned store")]
ThresholdPath = Annotated[str | None, Field(description="explicit threshold.json inside the model store")]
ScalerPath = Annotated[str | None, Field(description="explicit scaler.pkl inside the model store")]
ConfigPath = Annotated[str | None, Field(description="explicit model_config.json inside the model store")]
Version = Annotated[str | None, Field(description="model version name (default: the latest)")]
Device = Annotated[str | None, Field(description="auto, cpu, cuda, cuda:N or mps (default: the server's --device)")]


def build_mcp(runtime: Runtime) -> MCPServer:
    mcp = MCPServer("anomaly-detection", instructions=INSTRUCTIONS, version=__version__, log_level="WARNING")
    toolbox = runtime.toolbox

    async def call(fn, *args, **kwargs) -> CallToolResult:
        """Run a toolbox call and encode its result in a worker thread (the event loop stays free)."""
        try:
            return _reply(await runtime.score(lambda: to_json(fn(*args, **kwargs))))
        except AnomalyError as exc:
            raise ToolError(str(exc)) from None
        except Exception as exc:  # a bug or an OS refusal: still an error result that says what happened
            raise ToolError(_unexpected(exc)) from None

    @mcp.tool(annotations=ToolAnnotations(read_only_hint=False, idempotent_hint=True))
    async def run_detection(
        file_path: FilePath,
        ctx: Context,
        model_path: ModelPath = None,
        threshold_path: ThresholdPath = None,
        scaler_path: ScalerPath = None,
        config_path: ConfigPath = None,
        version: Version = None,
        return_details: Annotated[bool, Field(description="include per-row results")] = True,
        max_results: Annotated[int | None, Field(ge=0, le=MAX_RESULTS_LIMIT, description=(
            f"cap on per-row results, anomalies first (default {defaults.MAX_RESULTS}); "
            "every row is in the CSV named by `output`"))] = None,
        time_column: Annotated[str | None, Field(description="column with each row's time, reported with every "
                                                 "anomaly (default: one named timestamp/time/date/datetime)")] = None,
        threshold_window: Annotated[int | str | None, Field(description=(
            "rolling threshold over the preceding N rows (a number) or a time span such as '7d'; "
            "default: the model's fixed threshold"))] = None,
        device: Device = None,
    ) -> DetectionResult:
        """Score every row of a CSV/TXT file with a trained model: counts, threshold, the strongest
        anomalies with the features that drove them, per-row results (capped) and a CSV with all rows."""

        def progress(event: dict) -> None:
            try:
                anyio.from_thread.run(ctx.report_progress, event["rows_read"], None,
                                      f"{event['rows_read']} rows scored")
            except Exception:
                pass

        # Only a client that asked for progress gets it (each report is a hop back to the event loop).
        wanted = progress if _progress_token(ctx) is not None else None
        return await call(toolbox.run_detection, file_path, model_path, threshold_path, scaler_path, config_path,
                          version, return_details, max_results, wanted, time_column=time_column,
                          threshold_window=threshold_window, device=device)

    @mcp.tool(annotations=ToolAnnotations(read_only_hint=True))
    async def get_model_info(
        model_path: ModelPath = None,
        threshold_path: ThresholdPath = None,
        scaler_path: ScalerPath = None,
        config_path: ConfigPath = None,
        version: Version = None,
    ) -> ModelInfo:
        """Describe a trained model: architecture, features, window, threshold and its method, training data
        summary and loss history, creation time."""
        return await call(toolbox.get_model_info, model_path, threshold_path, scaler_path, config_path, version)

    @mcp.tool(annotations=ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=False))
    async def train_model(
        data_file: Annotated[str, Field(description="CSV/TXT file of mostly normal rows (relative to the "
                                                     "server's data folder)")],
        ctx: Context,
        version: Annotated[str | None, Field(description="name of the new version (default: a timestamp); "
                                                          "an existing one is never overwritten")] = None,
        model_path: ModelPath = None,
        threshold_path: ThresholdPath = None,
        scaler_path: ScalerPath = None,
        config_path: ConfigPath = None,
        epochs: Annotated[int, Field(ge=1, le=100_000, description="maximum epochs")] = defaults.EPOCHS,
        batch_size: Annotated[int, Field(ge=1, le=1_000_000)] = defaults.BATCH_SIZE,
        learning_rate: Annotated[float, Field(gt=0, le=10)] = defaults.LEARNING_RATE,
        encoding_dim: Annotated[int | None, Field(ge=1, le=10_000, description="bottleneck size (default: "
                                                                               "from the input width)")] = None,
        percentile: Annotated[float, Field(gt=0, le=100, description="threshold percentile of normal "
                                                                      "errors")] = defaults.PERCENTILE,
        model_type: Annotated[str, Field(description=f"model type: {', '.join(MODEL_TYPES)}")] = defaults.MODEL_TYPE,
        window: Annotated[int | Literal["auto"], Field(description="rows per sample (1 = each row on its own; "
                                                                "'auto' = the series' dominant period)")] = defaults.WINDOW,
        device: Device = None,
    ) -> TrainResult:
        """Train an anomaly detector on a file of normal data and save it as a new model version. Reports
        progress (epoch and loss) while it runs."""

        async def on_epoch(event: dict) -> None:
            loss = f"loss {event['loss']:.5g}" + (f", val_loss {event['val_loss']:.5g}"
                                                  if event.get("val_loss") is not None else "")
            await ctx.report_progress(event["epoch"], event["epochs"], f"epoch {event['epoch']}/{event['epochs']}: {loss}")

        try:
            result = await runtime.train(on_epoch, data_file=data_file, version=version, model_path=model_path,
                                         threshold_path=threshold_path, scaler_path=scaler_path,
                                         config_path=config_path, epochs=epochs, batch_size=batch_size,
                                         learning_rate=learning_rate, encoding_dim=encoding_dim,
                                         percentile=percentile, model_type=model_type, window=window, device=device)
        except AnomalyError as exc:
            raise ToolError(str(exc)) from None
        except Exception as exc:
            raise ToolError(_unexpected(exc)) from None
        return _reply(to_json(result))

    @mcp.tool(annotations=ToolAnnotations(read_only_hint=True))
    async def list_models() -> ModelList:
        """List the trained model versions with their key facts (type, features, window, threshold)."""
        return await call(toolbox.list_models)

    from .fleet_tools import add_mcp_tool as add_fleet_tool
    add_fleet_tool(mcp, runtime, call)
    return mcp
