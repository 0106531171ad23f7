"""The fleet on the server: MCP tool `run_fleet_detection` and `POST /api/fleet/detect`.

Both score every series file of a folder under the data roots (the toolbox's path policy) with its own version
in the server's model store (`anomaly.fleet.detect`), writing the per-series CSVs and `fleet_summary.json` to a
folder of the results directory that is the same for the same data folder, so a rerun skips what is done.
The reply is lean: counts, the strongest series and the failed ones; the full summary is in the file.
"""

from __future__ import annotations

import hashlib
import logging
import re
from pathlib import Path
from typing import Annotated, Any, Callable

import anyio.from_thread
from mcp.server.mcpserver import Context
from mcp_types import ToolAnnotations
from pydantic import BaseModel, Field

from .. import fleet, specs
from ..errors import DataError, NotFound
from .core import Runtime, clean
from .mcp_common import _progress_token, _Result
from .toolbox import Toolbox

MAX_JOBS = 256
# alert hygiene as DetectSpec declares it (type, bounds, help), one default for every series
MinDuration = specs.annotated(specs.DetectSpec.model_fields["min_duration"])
MergeGap = specs.annotated(specs.DetectSpec.model_fields["merge_gap"])
MIN_DURATION, MERGE_GAP = (specs.DetectSpec.model_fields[n].default for n in ("min_duration", "merge_gap"))
log = logging.getLogger(__name__)
MAX_TOP = 100


def output_dir_for(toolbox: Toolbox, folder: Path) -> Path:
    """results/fleet/<folder name>-<hash of its path>: stable per data folder, distinct for equal names."""
    tag = hashlib.sha256(str(folder).encode()).hexdigest()[:8]
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", folder.name)[:60] or "data"
    return (toolbox.results_dir / "fleet" / f"{name}-{tag}").resolve()


def fleet_detection(toolbox: Toolbox, data_dir: str, overwrite: bool = False, jobs: int | None = None,
                        top: int = 10, time_column: str | None = None, threshold_window: int | str | None = None,
                        device: str | None = None, progress: Callable[[dict], None] | None = None,
                        min_duration: int | str = MIN_DURATION, merge_gap: int | str = MERGE_GAP) -> dict:
    folder = toolbox.policy.data_file(data_dir)  # confined to the data roots, like a single file
    if not folder.is_dir():
        raise NotFound(f"{data_dir} is not a folder" if folder.exists() else f"folder {data_dir} does not exist")
    series = fleet.folder_series(folder)
    for s in series:  # a symlink inside the folder must not lead out of the roots either
        toolbox.policy.data_file(s.path)
    if jobs is not None and not 1 <= jobs <= MAX_JOBS:
        raise DataError(f"jobs must be between 1 and {MAX_JOBS}, got {jobs}")
    out = output_dir_for(toolbox, folder)
    summary = fleet.detect(series=series, model_dir=toolbox.store.root, output_dir=out, overwrite=overwrite,
                           jobs=jobs, progress=progress, time_column=time_column, threshold_window=threshold_window,
                           min_duration=min_duration, merge_gap=merge_gap, device=device or toolbox.device)
    return fleet.lean(summary, top) | {"summary_file": str(out / fleet.SUMMARY_FILE)}


# --- MCP ---------------------------------------------------------------------------------------------------


class FleetResult(_Result):
    status: str
    series_total: int
    ok: int
    skipped: int
    failed: int
    rows: int
    anomalies: int
    top_series: list[dict[str, Any]] = Field(description="the strongest series first: series, rows, anomalies, "
                                                         "segment_count, strength (peak score / threshold), output")
    failed_series: list[dict[str, Any]] = Field(description="series that failed, each with its one-line error")
    output_dir: str
    summary_file: str


def add_mcp_tool(mcp, runtime: Runtime, call: Callable) -> None:
    """Register `run_fleet_detection` on the MCP server; `call` is `build_mcp`'s toolbox-call wrapper."""

    @mcp.tool(annotations=ToolAnnotations(read_only_hint=False, idempotent_hint=True))
    async def run_fleet_detection(
        data_dir: Annotated[str, Field(description="folder on the server (relative to its data folder) with one "
                                                   "CSV/TXT file per series; each is scored with the model version "
                                                   "named like the file's stem")],
        ctx: Context,
        overwrite: Annotated[bool, Field(description="score again series an earlier call already did")] = False,
        jobs: Annotated[int | None, Field(ge=1, le=MAX_JOBS, description="worker processes (default: all "
                                                                         "cores)")] = None,
        top: Annotated[int, Field(ge=0, le=MAX_TOP, description="strongest series in the reply")] = 10,
        time_column: Annotated[str | None, Field(description="column with each row's time (default: one named "
                                                 "timestamp/time/date/datetime)")] = None,
        threshold_window: Annotated[int | str | None, Field(description="rolling threshold over the preceding N "
                                                            "rows or a time span such as '7d'")] = None,
        device: Annotated[str | None, Field(description="auto, cpu, cuda, cuda:N or mps (default: the "
                                                        "server's device)")] = None,
        min_duration: MinDuration = MIN_DURATION,
        merge_gap: MergeGap = MERGE_GAP,
    ) -> FleetResult:
        """Score every series file of a folder with its own model version (one version per series, as
        `anomaly fleet train` makes them): counts, the series ranked by anomaly strength, the failed ones with
        their error, and a folder with every series' per-row CSV and fleet_summary.json. Reports progress per
        series."""

        def progress(event: dict) -> None:
            try:
                anyio.from_thread.run(ctx.report_progress, event["done"], event["total"],
                                      f"{event['series']}: {event['status']}")
            except Exception:  # a client that went away: the fleet goes on
                log.debug("progress report failed", exc_info=True)

        wanted = progress if _progress_token(ctx) is not None else None
        return await call("run_fleet_detection", fleet_detection, {"file": data_dir}, toolbox=runtime.toolbox,
                          data_dir=data_dir, overwrite=overwrite, jobs=jobs, top=top, time_column=time_column,
                          threshold_window=threshold_window, device=device, progress=wanted,
                          min_duration=min_duration, merge_gap=merge_gap)



# --- HTTP --------------------------------------------------------------------------------------------------


class FleetDetectRequest(BaseModel):
    data_dir: str = Field(description="folder inside an allowed data root, one CSV/TXT file per series")
    overwrite: bool = False
    jobs: int | None = Field(None, ge=1, le=MAX_JOBS, description="worker processes (default: all cores)")
    top: int = Field(10, ge=0, le=MAX_TOP, description="strongest series in the reply")
    time_column: str | None = None
    threshold_window: int | str | None = None
    device: str | None = None
    min_duration: MinDuration = MIN_DURATION
    merge_gap: MergeGap = MERGE_GAP


def add_route(router: "APIRouter", runtime: Runtime) -> None:  # noqa: F821 (fastapi: the [server] extra)
    @router.post("/api/fleet/detect", tags=["detection"],
                 description="Score every series file of a folder with its own version (see the MCP tool "
                             "run_fleet_detection): counts, the strongest series, the failed ones; the full "
                             "summary and per-series CSVs are in `output_dir`.")
    async def fleet_detect(req: FleetDetectRequest) -> dict:
        return clean(await runtime.score(fleet_detection, runtime.toolbox, **req.model_dump()))
