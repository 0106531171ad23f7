"""The dashboard at `/` and the offline API docs at `/docs`, both from files bundled in the package
(`static/`: plain ES modules and an SVG chart, Swagger UI's own bundle), plus the two JSON routes the
dashboard needs besides the API it drives:

    GET /api/data                       data files under the data roots (what the dashboard offers to detect on)
    GET /api/results/series             a detection's result CSV, downsampled for a chart, with every segment

The page, its assets and the docs page need no token (they hold no data); every API call they make sends it.
"""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from fastapi import APIRouter, FastAPI, Query
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from .. import data, metrics
from ..errors import DataError, NotFound, PathNotAllowed
from ..fleet import is_data_name  # the files `anomaly fleet` takes as series are the ones offered here
from .core import Runtime, clean
from .security import check_path_text

STATIC = Path(__file__).resolve().parent / "static"
MAX_LISTED = 1000
MAX_DEPTH = 4  # folders below a data root that are searched
MAX_SEGMENTS = 2000
RESULT_COLUMNS = ("reconstruction_error", "is_anomaly", "threshold")


def add_web(app: FastAPI, runtime: Runtime) -> None:
    """Mount the bundled assets and the page routes on `app`, and the dashboard's JSON routes."""
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    async def dashboard() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    @app.get("/docs", include_in_schema=False)
    async def docs() -> FileResponse:
        return FileResponse(STATIC / "docs.html", headers={"Cache-Control": "no-cache"})

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon() -> FileResponse:
        return FileResponse(STATIC / "favicon.svg", media_type="image/svg+xml")

    app.include_router(build_router(runtime))


def build_router(runtime: Runtime) -> APIRouter:
    router = APIRouter()
    toolbox = runtime.toolbox

    @router.get("/api/data", tags=["data"],
                description="Data files (.csv, .txt, .tsv, .dat, optionally .gz) under the data roots, up to "
                            f"{MAX_DEPTH} folders deep and {MAX_LISTED} files; `path` is what detection and "
                            "training take (relative to the first root, else absolute).")
    async def list_data() -> dict:
        exclude = [toolbox.results_dir.resolve(), toolbox.store.root.resolve()]
        return await runtime.score(list_data_files, toolbox.policy.data_roots, exclude)

    @router.get("/api/results/series", tags=["detection"],
                description="A detection's per-row result CSV (its `output`, in the server's results folder) "
                            "downsampled for a chart: per bucket of rows the rows holding each series' minimum "
                            "and maximum, so spikes survive. `segments` are every run of anomalous rows.")
    async def result_series(output: str, features: str | None = Query(None, description="comma-separated"),
                            time_column: str | None = None,
                            points: int = Query(1500, ge=10, le=20_000, description="buckets of rows")) -> dict:
        path = result_file(toolbox.results_dir, output)
        names = [f for f in (features or "").split(",") if f] or None
        return clean(await runtime.score(read_series, path, names, time_column, points))

    return router


# --- data files --------------------------------------------------------------------------------------------


def list_data_files(roots: list[Path] | None, exclude: list[Path]) -> dict:
    """Data files under the roots (hidden names, the results folder and the model store skipped). A file whose
    real path leaves the roots (a symlink out) is not listed: detection would refuse it."""
    roots = roots or [Path.cwd().resolve()]
    files: dict[str, dict] = {}
    truncated = False
    for root in roots:
        for folder, dirs, names in os.walk(root):
            here = Path(folder)
            depth = len(here.relative_to(root).parts)
            dirs[:] = sorted(d for d in dirs if not d.startswith(".") and depth < MAX_DEPTH
                             and (here / d).resolve() not in exclude)
            for name in sorted(n for n in names if is_data_name(n)):
                p = here / name
                try:
                    real = p.resolve()
                    st = real.stat()
                except (OSError, RuntimeError):
                    continue
                if not real.is_file() or not any(real.is_relative_to(r) for r in roots):
                    continue
                shown = str(real.relative_to(roots[0])) if real.is_relative_to(roots[0]) else str(real)
                if shown in files:
                    continue
                if len(files) >= MAX_LISTED:
                    truncated = True
                    break
                files[shown] = {"path": shown, "size": st.st_size,
                                "modified": datetime.fromtimestamp(st.st_mtime, timezone.utc).isoformat(timespec="seconds")}
            if truncated:
                break
    return {"roots": [str(r) for r in roots], "files": list(files.values()), "truncated": truncated}


# --- result series -----------------------------------------------------------------------------------------


def result_file(results_dir: Path, output: str) -> Path:
    """A result CSV this server wrote: it must lie in its results folder (a bare name is taken from there)."""
    check_path_text(output)
    root = results_dir.resolve()
    p = Path(output)
    real = (p if p.is_absolute() else root / p).resolve()
    if not real.is_relative_to(root) or real == root:
        raise PathNotAllowed(f"{output} is not in the results folder {root}")
    if not real.is_file():
        raise NotFound(f"result file not found: {output}")
    if real.suffix.lower() != ".csv":
        raise DataError(f"{output} is not a result CSV")
    return real


def read_series(path: Path, features: list[str] | None, time_column: str | None, points: int) -> dict:
    fmt = data.sniff(path)
    names = list(fmt.names)
    if "reconstruction_error" not in names or "is_anomaly" not in names:
        raise DataError(f"{path.name} is not a detection result (no reconstruction_error / is_anomaly columns)")
    numeric, _ = data.numeric_columns(path, fmt)
    if features:
        unknown = [f for f in features if f not in numeric]
        if unknown:
            raise DataError(f"{', '.join(unknown)}: not a numeric column of {path.name}")
    else:
        features = [c for c in numeric if c not in RESULT_COLUMNS and not c.endswith("_contribution")
                    and c != time_column]
    time_col = time_column if time_column in names else None
    cols = list(dict.fromkeys([*features, *[c for c in RESULT_COLUMNS if c in names]]))
    parts: dict[str, list[np.ndarray]] = {c: [] for c in cols}
    times: list[np.ndarray] = []
    for block in data.iter_blocks(path, fmt, cols, all_columns=False, text_cols=[time_col] if time_col else []):
        for c in cols:
            parts[c].append(block.frame[c].to_numpy(np.float64))
        if time_col:
            times.append(block.frame[time_col].astype(str).to_numpy())
    values = {c: np.concatenate(v) if v else np.zeros(0) for c, v in parts.items()}
    n = len(values["reconstruction_error"])
    score, flags = values["reconstruction_error"], np.nan_to_num(values["is_anomaly"]) > 0
    rows = chart_rows(score, [values[f] for f in features], points)
    t = np.concatenate(times) if times else None
    segments = [(int(a), int(b)) for a, b in metrics.segments(flags)]
    out = {
        "rows": n, "features": features, "time_column": time_col, "index": rows,
        "time": t[rows].tolist() if t is not None else None,
        "values": {f: values[f][rows] for f in features},
        "score": score[rows], "is_anomaly": flags[rows].astype(int),
        "threshold": values["threshold"][rows] if "threshold" in values else None,
        "anomaly_count": int(flags.sum()), "segment_count": len(segments),
        "segments": [segment(a, b, score, t) for a, b in segments[:MAX_SEGMENTS]],
        "segments_truncated": len(segments) > MAX_SEGMENTS,
    }
    return out


def chart_rows(score: np.ndarray, series: list[np.ndarray], points: int) -> np.ndarray:
    """The rows to draw: all of them when few, else per bucket of rows the ones holding each series' minimum
    and maximum (and the score's maximum), so a one-row spike is never averaged away."""
    n = len(score)
    if n <= 2 * points:
        return np.arange(n)
    edges = np.linspace(0, n, points + 1).astype(np.int64)
    keep = [edges[:-1]]
    for s in [score, *series]:
        hi = np.where(np.isfinite(s), s, -np.inf)
        lo = np.where(np.isfinite(s), s, np.inf)
        keep.append(np.array([a + int(np.argmax(hi[a:b])) for a, b in zip(edges[:-1], edges[1:])]))
        keep.append(np.array([a + int(np.argmin(lo[a:b])) for a, b in zip(edges[:-1], edges[1:])]))
    return np.unique(np.concatenate(keep))


def segment(a: int, b: int, score: np.ndarray, times: np.ndarray | None) -> dict:
    part = np.where(np.isfinite(score[a:b + 1]), score[a:b + 1], -np.inf)
    peak = a + int(np.argmax(part))
    out = {"first_row": a, "last_row": b, "index": peak, "reconstruction_error": float(score[peak])}
    if times is not None:
        out |= {"first_time": str(times[a]), "last_time": str(times[b]), "time": str(times[peak])}
    return out
