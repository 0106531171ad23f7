"""The HTTP API (FastAPI; OpenAPI docs at /docs), with Server-Sent Events for results pushed as computed.
SSE streams are `sse_starlette` responses: every event has an `id:`, a keep-alive comment goes out every
`settings.sse_ping` seconds of silence, and a client that disconnects ends its stream (and its generator).

    GET  /health                        liveness, never waits for torch work
    GET  /api/models                    list versions          GET /api/models/{version}   one version
    POST /api/train                     train (JSON)           POST /api/train/stream      epoch/loss events
    POST /api/detect                    detect a file (JSON)   POST /api/detect/upload     detect a CSV body
    GET|POST /api/detect/stream         events: progress, anomaly (per anomalous row), summary
    POST /api/fleet/detect              every series file of a folder, each with its own version
    POST /api/live/{channel}            push points; GET /api/live/{channel}/events  subscribers' events
"""

from __future__ import annotations

import json
import logging
from typing import Annotated, Any, AsyncIterator, Callable, Iterator

import anyio
from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sse_starlette import EventSourceResponse, ServerSentEvent

from .. import specs
from ..errors import AnomalyError, DataError, message
from ..logs import log_call
from ..specs import MAX_RESULTS_LIMIT
from .core import Runtime, clean
from .live import LiveHub
from .security import BodyTooLarge
from .uploads import spool

log = logging.getLogger("anomaly.server")

STREAM_BLOCK_BYTES = 1 << 20  # the streaming endpoint scores in 1 MiB blocks, so events flow early
SSE_HEADERS = {"Cache-Control": "no-cache"}  # sse_starlette adds Connection: keep-alive and X-Accel-Buffering: no


# --- request bodies ----------------------------------------------------------------------------------------


class ArtifactArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")  # an unknown key is a 422 naming it, never silently dropped

    version: str | None = Field(None, description="model version (default: the latest)")
    model_path: str | None = Field(None, description="explicit model.pth inside the model store")
    threshold_path: str | None = None
    scaler_path: str | None = None
    config_path: str | None = None


# The bodies: the artifact fields above plus every remote field of the operation's spec (`anomaly.specs`).
DetectRequest = specs.request_model(
    "DetectRequest", specs.DetectSpec, ArtifactArgs,
    file_path=(str, Field(description="CSV/TXT file on the server, inside an allowed data root")))
TrainRequest = specs.request_model(
    "TrainRequest", specs.TrainSpec, ArtifactArgs,
    data_file=(str, Field(description="CSV/TXT file of mostly normal rows, inside an allowed data root")))


MAX_POINT_VALUES = 10_000  # values in one live point (a model has at most this many features)
Point = Annotated[list[float], Field(max_length=MAX_POINT_VALUES)] | Annotated[
    dict[str, float], Field(max_length=MAX_POINT_VALUES)]


class LivePoints(BaseModel):
    points: list[Point] = Field(min_length=1, max_length=100_000, description=(
        "new rows, oldest first: value lists in the model's feature order, or {feature: value} objects"))
    version: str | None = Field(None, description="model version (default: the latest)")
    threshold_window: int | None = Field(None, ge=50, le=10_000_000, description=(
        "rolling threshold over the preceding N points of the channel (default: the model's fixed threshold)"))


def detect_query(request: Request) -> BaseModel:
    """GET /api/detect/stream: the same fields as the POST body, from the query string (validated alike)."""
    try:
        return DetectRequest.model_validate(dict(request.query_params))
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from None


def _set(req: BaseModel) -> dict:
    """The fields the client gave (the spec fills in the rest, so defaults live in one place)."""
    return req.model_dump(exclude_unset=True)


# --- SSE helpers -------------------------------------------------------------------------------------------


def sse(event: str, data: Any, event_id: int) -> ServerSentEvent:
    """One event: its name, an `id:` (the event's number in its stream, from 1) and the JSON data on one line."""
    return ServerSentEvent(json.dumps(clean(data), separators=(",", ":")), event=event, id=str(event_id), sep="\n")


def sse_response(runtime: Runtime, events: AsyncIterator[tuple[str, Any]]) -> EventSourceResponse:
    """An SSE response of (event, data) pairs, numbered; keep-alive comments every `sse_ping` seconds."""

    async def numbered() -> AsyncIterator[ServerSentEvent]:
        n = 0
        async for name, data in events:
            n += 1
            yield sse(name, data, n)

    return EventSourceResponse(numbered(), headers=SSE_HEADERS, ping=runtime.settings.sse_ping, sep="\n",
                               ping_message_factory=lambda: ServerSentEvent(comment="keep-alive", sep="\n"))


def error_body(exc: AnomalyError) -> dict:
    return {"error": message(exc), "type": type(exc).__name__}


async def event_stream(runtime: Runtime, make: Callable[[], Iterator[dict]]) -> EventSourceResponse:
    """Stream a service generator's events. The first event is computed before answering, so a bad request
    (unknown version, missing file, wrong columns) is a plain 4xx, not an error inside a 200 stream."""
    events = make()
    done = object()
    first = await runtime.score(next, events, done)

    async def body() -> AsyncIterator[tuple[str, Any]]:
        event = first
        try:
            while event is not done:
                yield event.pop("event"), event
                event = await runtime.score(next, events, done)
        except AnomalyError as exc:
            yield "error", error_body(exc)
        except Exception as exc:  # midway through a 200 stream: the client gets an error event, the log the traceback
            log.exception("event stream failed")
            yield "error", {"error": f"internal error: {type(exc).__name__}: {exc}"[:500]}
        finally:
            with anyio.CancelScope(shield=True):  # a client that left: close the generator (drops its CSV)
                await anyio.to_thread.run_sync(events.close)

    return sse_response(runtime, body())


# --- routes ------------------------------------------------------------------------------------------------


def build_router(runtime: Runtime, hub: LiveHub) -> APIRouter:
    router = APIRouter()
    toolbox = runtime.toolbox

    @router.get("/health", tags=["service"])
    async def health() -> dict:
        return runtime.health()

    @router.get("/api/models", tags=["models"])
    async def list_models() -> dict:
        return clean(await runtime.score(toolbox.list_models))

    @router.get("/api/models/{version}", tags=["models"])
    async def model_info(version: str) -> dict:
        return clean(await runtime.score(toolbox.get_model_info, version=version))

    @router.post("/api/train", tags=["training"])
    async def train(req: TrainRequest, request: Request) -> dict:
        request.state.log["file"] = req.data_file
        result = await runtime.train(**_set(req))
        request.state.log |= {"rows": result.get("rows"), "version": result.get("version")}
        return clean(result)

    @router.post("/api/train/stream", tags=["training"],
                 description="Server-Sent Events: `epoch` {epoch, epochs, loss, val_loss} after every epoch, "
                             "then `result` (the train result) or `error`.")
    async def train_stream(req: TrainRequest, request: Request) -> EventSourceResponse:
        request.state.log["file"] = req.data_file
        toolbox.policy.data_file(req.data_file)  # a path outside the roots is a 403 before the stream starts
        send, receive = anyio.create_memory_object_stream[tuple[str, dict]](1000)

        async def on_epoch(event: dict) -> None:
            send.send_nowait(("epoch", event))

        async def job() -> None:
            with send:
                try:
                    with log_call("job", "train_stream", file=req.data_file, version=req.version) as line:
                        result = await runtime.train(on_epoch, **_set(req))
                        line["rows"], line["version"] = result.get("rows"), result.get("version")
                    message = ("result", result)
                except AnomalyError as exc:
                    message = ("error", error_body(exc))
                except Exception as exc:  # a background job must never take the server down (logged above)
                    message = ("error", {"error": f"training failed: {type(exc).__name__}: {exc}"[:500]})
                try:
                    await send.send(message)  # waits while a slow client catches up
                except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                    log.info("train_stream client left; the model is saved all the same")

        # The training outlives the request: a client that disconnects still gets its model saved.
        runtime.task_group.start_soon(job)

        async def body() -> AsyncIterator[tuple[str, Any]]:
            with receive:
                async for name, event in receive:
                    yield name, event

        return sse_response(runtime, body())

    @router.post("/api/detect", tags=["detection"])
    async def detect(req: DetectRequest, request: Request) -> dict:
        request.state.log["file"] = req.file_path
        result = await runtime.score(toolbox.run_detection, **_set(req))
        request.state.log["rows"] = result.get("total_rows")
        return clean(result)

    @router.post("/api/detect/upload", tags=["detection"],
                 description="Detect on the request body: a CSV/TXT file (gzip ok), e.g. "
                             "`curl --data-binary @new.csv -H 'Content-Type: text/csv' .../api/detect/upload`.")
    async def detect_upload(request: Request, version: str | None = None, return_details: bool = True,
                            max_results: int | None = Query(None, ge=0, le=MAX_RESULTS_LIMIT),
                            device: str | None = None) -> dict:
        path = runtime.new_upload()
        try:
            await spool(request.stream(), path, int(runtime.settings.max_upload_decompressed_mb * (1 << 20)))
            if path.stat().st_size == 0:
                raise DataError("the request body is empty; send the CSV as the body")
            return clean(await runtime.score(toolbox.run_detection, str(path), version=version, trusted=True,
                                             return_details=return_details, max_results=max_results,
                                             device=device))
        finally:
            path.unlink(missing_ok=True)

    async def detect_stream(req: DetectRequest) -> EventSourceResponse:
        return await event_stream(runtime, lambda: toolbox.detect_events(**_set(req),
                                                                          block_bytes=STREAM_BLOCK_BYTES))

    stream_doc = ("Server-Sent Events: `progress` {rows_done, rows_read, bytes_total} after each block, `anomaly` "
                  "{index, reconstruction_error, top_features} for each anomalous row as soon as its block is "
                  "scored, and a final `summary` (the /api/detect result); `error` if it fails midway.")

    @router.get("/api/detect/stream", tags=["detection"], description=stream_doc)
    async def detect_stream_get(req: BaseModel = Depends(detect_query)) -> EventSourceResponse:
        return await detect_stream(req)

    @router.post("/api/detect/stream", tags=["detection"], description=stream_doc)
    async def detect_stream_post(req: DetectRequest) -> EventSourceResponse:
        return await detect_stream(req)

    @router.post("/api/live/{channel}", tags=["live"],
                 description="Score new points at once; every subscriber of the channel gets a `score` event "
                             "per point. Live scores use the newest window ending at each point (batch detection "
                             "averages overlapping windows, so window models can differ slightly).")
    async def live_push(channel: str, body: LivePoints) -> dict:
        return clean(await hub.push(channel, body.points, body.version, body.threshold_window))

    @router.get("/api/live/{channel}/events", tags=["live"],
                description="Server-Sent Events: `score` {channel, version, index, reconstruction_error, "
                            "is_anomaly, top_features, threshold} for every point posted to the channel.")
    async def live_events(channel: str) -> EventSourceResponse:
        send, receive = hub.subscribe(channel)

        async def body() -> AsyncIterator[tuple[str, Any]]:
            try:
                yield "subscribed", {"channel": channel}
                while True:  # keep-alives come from the response's ping task; a client that left cancels this
                    yield "score", await receive.receive()
            except (anyio.EndOfStream, anyio.ClosedResourceError):
                yield "error", {"error": "this subscriber fell too far behind and was dropped"}
            finally:
                hub.unsubscribe(channel, send, receive)

        return sse_response(runtime, body())

    from .fleet_tools import add_route as add_fleet_route
    add_fleet_route(router, runtime)
    return router


def add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(AnomalyError)
    async def anomaly_error(request: Request, exc: AnomalyError) -> JSONResponse:
        return JSONResponse(error_body(exc), status_code=exc.http_status)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()[:20]
        problems = [f"{'.'.join(str(p)[:80] for p in e['loc'] if p != 'body') or 'body'}: {e['msg'][:200]}"
                    for e in errors]
        # each problem without the value the client sent (it may be megabytes; the client has it)
        detail = [{"loc": [p if isinstance(p, int) else str(p)[:80] for p in e["loc"]], "msg": e["msg"][:200],
                   "type": e["type"]} for e in errors]
        return JSONResponse({"error": message("invalid request: " + "; ".join(problems)), "detail": detail},
                            status_code=422)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return JSONResponse({"error": message(f"internal error: {type(exc).__name__}: {exc}", 500)}, status_code=500)

    @app.exception_handler(BodyTooLarge)
    async def too_large(request: Request, exc: BodyTooLarge) -> JSONResponse:
        return JSONResponse({"error": str(exc) or "request body too large"}, status_code=413)
