"""The MCP tools: `run_detection`, `get_model_info`, `train_model`, `list_models`, on the SDK's `MCPServer`,
served over SSE and Streamable HTTP (`app.py`) and over stdio (`stdio.py`); resources (the model versions and
each one's card) and a prompt (`investigate_anomalies`).

The arguments of `run_detection` and `train_model` are derived from `anomaly.specs` (`DetectSpec`,
`TrainSpec`): the same names, defaults, bounds, enums and help as the CLI and the HTTP API; unknown arguments
are refused. Each tool runs the shared `Toolbox` call in a worker thread. A user error (`AnomalyError`)
becomes an MCP error result (`isError`) with its one-line message; the connection stays up.

`run_detection`'s reply is written for an LLM to read (`summary.lean_reply`): one compact JSON text, floats
to 6 significant digits, the anomalous rows first with their times and strongest features, at most
12,000 characters by default. It has no output schema: clients that get both a JSON text and the same
JSON as structured content hand both to the model, which doubles what it reads. The other tools' replies
are small and keep their structured content (an output schema plus the same JSON as text).
"""

from __future__ import annotations

import inspect
import json
import logging
from typing import Annotated, Any, Callable

import anyio.from_thread
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ToolError
from mcp_types import CallToolResult, Resource, TextContent, ToolAnnotations
from pydantic import ConfigDict, Field

from .. import defaults, specs, summary
from .._version import __version__
from ..errors import AnomalyError, message
from ..logs import log_call
from .core import Runtime, to_json
from .mcp_common import _progress_token, _Result
from .toolbox import Toolbox

log = logging.getLogger("anomaly.server")

INSTRUCTIONS = """Time-series anomaly detection on CSV/TXT files with PyTorch models.
Train a model on mostly-normal data with train_model, then score new files with run_detection.
File paths are on the server's machine, inside its allowed data folders; relative paths start there.
run_detection's reply is capped (anomalies first); its `output` CSV has every row."""


# --- structured results ------------------------------------------------------------------------------------


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


def _reply(encoded: tuple[str, dict], structured: bool = True) -> CallToolResult:
    """Compact JSON text (older clients read only this) plus, for a tool with an output schema, the same
    JSON as structured content (the SDK validates it against the tool's output model)."""
    text, data = encoded
    return CallToolResult(content=[TextContent(type="text", text=text)],
                          structured_content=data if structured else None)


def lean_detection(toolbox: Toolbox, file_path: str, max_results: int | None = None, **kwargs: Any) -> dict:
    """`run_detection` as the MCP tool replies: the toolbox's detection with each anomalous row's strongest
    features, shaped by `summary.lean_reply`; up to the default cap of rows the reply fits REPLY_CHARS
    (more rows asked for: up to the toolbox's limit for any MCP message)."""
    cap = defaults.MCP_MAX_RESULTS if max_results is None else max_results
    result = toolbox.run_detection(file_path, max_results=cap, row_features=True, **kwargs)
    return summary.lean_reply(result, summary.REPLY_CHARS if cap <= defaults.MCP_MAX_RESULTS else None)


def _unexpected(exc: Exception) -> str:
    return message(f"internal error: {type(exc).__name__}: {exc}", 500)


# --- argument types ----------------------------------------------------------------------------------------


def _arg(name: str, annotation: Any, default: Any = inspect.Parameter.empty) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=default)


FilePath = Annotated[str, Field(description="CSV/TXT file on the server (relative to its data folder)")]
# The classic layout's explicit files: still accepted, described in one line each (versions are the usual way).
ARTIFACTS = [_arg(f"{kind}_path", Annotated[str | None, Field(description=f"classic: {name} in the model store")],
                  None)
             for kind, name in (("model", "model.pth"), ("threshold", "threshold.json"), ("scaler", "scaler.pkl"),
                                ("config", "model_config.json"))]
VERSION = _arg("version", Annotated[str | None, Field(description="model version name (default: the latest)")], None)
NEW_VERSION = _arg("version", Annotated[str | None, Field(description="name of the new version (default: a "
                                                                      "timestamp); an existing one is never "
                                                                      "overwritten")], None)
CTX = _arg("ctx", Context)


def _register(mcp: MCPServer, fn: Callable, name: str, doc: str, leading: list, spec_cls: type[specs.Spec],
              returns: Any, annotations: ToolAnnotations, defaults: dict | None = None) -> None:
    """Register `fn(**kwargs)` as a tool whose arguments are `leading` and the spec's remote fields, and whose
    schema refuses unknown arguments (the SDK's default ignores them: `epoch=5` would train 100 epochs)."""
    fn.__name__, fn.__doc__ = name, doc
    specs.signature(fn, leading, spec_cls, returns=returns, defaults=defaults)
    mcp.tool(name=name, annotations=annotations)(fn)
    _forbid_unknown(mcp, name)


def _forbid_unknown(mcp: MCPServer, name: str) -> None:
    tool = mcp._tool_manager.get_tool(name)  # the SDK has no option for it: swap in a stricter argument model
    base = tool.fn_metadata.arg_model

    class Strict(base):  # type: ignore[valid-type, misc]
        model_config = ConfigDict(extra="forbid")

    Strict.__name__ = base.__name__
    tool.fn_metadata.arg_model = Strict
    tool.parameters = _untitled(Strict.model_json_schema(by_alias=True))


def _untitled(schema: Any) -> Any:
    """A JSON schema without pydantic's `title`s ("Max Results" for max_results): every client sees the
    names already, and tools/list is read by the model on every turn."""
    if isinstance(schema, dict):
        return {k: _untitled(v) for k, v in schema.items() if not (k == "title" and isinstance(v, str))}
    if isinstance(schema, list):
        return [_untitled(v) for v in schema]
    return schema


def build_mcp(runtime: Runtime) -> MCPServer:
    mcp = AnomalyMCP(runtime, "anomaly-detection", instructions=INSTRUCTIONS, version=__version__,
                     log_level="WARNING")
    toolbox = runtime.toolbox

    async def call(name: str, fn: Callable, facts: dict, structured: bool = True, **kwargs: Any) -> CallToolResult:
        """Run a toolbox call and encode its result in a worker thread (the event loop stays free); one log
        line per call, and a traceback in the log for anything but a user error."""
        try:
            with log_call("tool", name, **facts) as line:
                text, data = await runtime.score(lambda: to_json(fn(**kwargs)))
                line["rows"] = data.get("total_rows", data.get("rows")) if isinstance(data, dict) else None
            return _reply((text, data), structured)
        except AnomalyError as exc:
            raise ToolError(message(exc)) from None
        except Exception as exc:  # a bug or an OS refusal: logged above; still an error result that says what
            raise ToolError(_unexpected(exc)) from None

    def detect_lean(**kwargs: Any) -> dict:
        return lean_detection(toolbox, **kwargs)

    async def run_detection(ctx: Context, file_path: str, **kwargs: Any) -> CallToolResult:
        def progress(event: dict) -> None:
            try:
                anyio.from_thread.run(ctx.report_progress, event["rows_read"], None,
                                      f"{event['rows_read']} rows scored")
            except Exception:  # a client that went away: the detection goes on
                log.debug("progress report failed", exc_info=True)

        # Only a client that asked for progress gets it (each report is a hop back to the event loop).
        wanted = progress if _progress_token(ctx) is not None else None
        return await call("run_detection", detect_lean, {"file": file_path, "version": kwargs.get("version")},
                          structured=False, file_path=file_path, progress=wanted, **kwargs)

    _register(mcp, run_detection, "run_detection",
              "Score every row of a CSV/TXT file with a trained model. Reply (JSON): status, total_rows, "
              "anomaly_count, anomaly_ratio, threshold, anomaly_segments; top_anomalies: the strongest incidents "
              "(runs of anomalous rows), each with its peak (index, time, reconstruction_error, the threshold it "
              "crossed), severity 0-100, first/last row and time, rows, duration and top_features (the value "
              "seen and the range expected from training, in the data's units); results: per-row {index, time, "
              "reconstruction_error, is_anomaly, top_features}, anomalous rows first, capped (results_truncated); "
              "output: a CSV with every row.",
              [_arg("file_path", FilePath), CTX, *ARTIFACTS, VERSION], specs.DetectSpec, CallToolResult,
              ToolAnnotations(read_only_hint=False, idempotent_hint=True),
              defaults={"max_results": defaults.MCP_MAX_RESULTS})

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
            raise ToolError(message(exc)) from None
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
    add_resources(mcp, runtime)
    add_prompts(mcp)
    return mcp


# --- resources and prompts ---------------------------------------------------------------------------------

MODELS_URI = "anomaly://models"
CARD_URI = MODELS_URI + "/{version}"


class AnomalyMCP(MCPServer):
    """`MCPServer` whose resource list also names every model version's card (versions come and go while the
    server runs; the SDK's list holds only what was registered at start)."""

    def __init__(self, runtime: Runtime, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.runtime = runtime

    async def list_resources(self) -> list[Resource]:
        listed = await super().list_resources()
        try:
            models = (await self.runtime.score(self.runtime.toolbox.list_models))["models"]
        except AnomalyError:  # no store yet: only the index
            return listed
        return listed + [Resource(uri=CARD_URI.format(version=m["version"]), name=f"model {m['version']}",
                                  description=f"model card: {m.get('model_type')} on {len(m.get('features') or [])} "
                                              f"features, window {m.get('window')}", mime_type="text/markdown")
                         for m in models if m.get("status") == "ok"]


def add_resources(mcp: MCPServer, runtime: Runtime) -> None:
    toolbox = runtime.toolbox

    @mcp.resource(MODELS_URI, name="models", mime_type="application/json",
                  description="The trained model versions (type, features, window, threshold, created), newest "
                              "last, each with the URI of its card.")
    async def models_index() -> str:
        try:
            listed = await runtime.score(toolbox.list_models)
        except AnomalyError as exc:
            raise ResourceError(message(exc)) from None
        for m in listed["models"]:
            m["card"] = CARD_URI.format(version=m["version"])
        return to_json(summary.round_floats(listed))[0]

    @mcp.resource(CARD_URI, name="model_card", mime_type="text/markdown",
                  description="One model version's card: what it was trained on, how, its threshold and when.")
    async def model_card_resource(version: str) -> str:
        try:
            info = await runtime.score(toolbox.get_model_info, version=version)
        except AnomalyError as exc:
            raise ResourceError(message(exc)) from None
        return model_card(info)


def model_card(info: dict) -> str:
    """A model version in a few lines of Markdown, for a person or an LLM."""
    g = summary.round_floats
    data, training = info.get("data") or {}, info.get("training") or {}
    loss = ((info.get("history") or {}).get("loss") or [None])[-1]
    lines = [
        f"# Model {info['version']}",
        f"- type: {info.get('model_type')} ({info.get('parameters')} parameters), window {info.get('window')}, "
        f"architecture {json.dumps(info.get('architecture'))}",
        f"- features ({len(info.get('features') or [])}): {', '.join(info.get('features') or [])}",
        f"- threshold: {g(info.get('threshold'))} by {info.get('threshold_method')} "
        f"{json.dumps(info.get('threshold_params') or {})}",
        f"- trained on: {data.get('file')} ({data.get('rows')} rows), scaler {info.get('scaler')}",
        f"- training: {json.dumps(training)}, final loss {g(loss)}, {info.get('train_seconds')} s on "
        f"{info.get('device')} ({info.get('precision')})",
        f"- created: {info.get('created')}",
    ]
    ranges = data.get("feature_ranges")
    if ranges:
        lines.append("- training ranges: " + ", ".join(f"{k} {g(v[0])}..{g(v[1])}" for k, v in ranges.items()))
    expected = info.get("expected_ranges")
    if expected:
        lines.append("- expected ranges (1st-99th percentile): " + ", ".join(f"{k} {g(v[0])}..{g(v[1])}"
                                                                            for k, v in expected.items()))
    return "\n".join(lines) + "\n"


INVESTIGATE = """Investigate the anomalies in {file_path}{with_version}.

1. Call run_detection with file_path={file_path!r}{version_arg}. Its reply has the counts, the threshold,
   top_anomalies (the strongest incidents: first, peak and last row and time, duration, severity 0-100, the
   threshold crossed, and the driving features with the value seen and the range expected), the first
   anomalous rows, any warnings, and `output`, a CSV with every row's score.
2. Read the model's card (resource anomaly://models/<version>, or get_model_info) for the features it knows,
   their training ranges and how its threshold was chosen.
3. Report: how many rows and incidents are anomalous and whether that is plausible (compare anomaly_ratio with
   expected_ratio; heed warnings), then each important incident: when it started and ended, how strong it was
   (severity; its peak against the threshold), and which features drove it, in the data's units (the value
   seen against the range expected). Say what the data cannot tell. Where short blips crowd the list,
   min_duration hides them and merge_gap joins incidents that are one; a retrained or rolling threshold
   (threshold_window) may be worth trying when the warnings say the data drifted.
"""


def add_prompts(mcp: MCPServer) -> None:
    @mcp.prompt(name="investigate_anomalies", title="Investigate anomalies in a file",
                description="Detect anomalies in a CSV/TXT file and explain the incidents: when, how strong, "
                            "which features.")
    def investigate_anomalies(
            file_path: Annotated[str, Field(description="CSV/TXT file on the server to investigate")],
            version: Annotated[str | None, Field(description="model version (default: the latest)")] = None) -> str:
        return INVESTIGATE.format(file_path=file_path, with_version=f" with model version {version}" if version
                                  else "", version_arg=f", version={version!r}" if version else "")
