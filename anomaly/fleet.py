"""Fleet: train or score thousands of series in one call, on all local cores or on a Dask cluster.

    anomaly.fleet.train("metrics/", model_dir="models", epochs=5)          # one version per series
    anomaly.fleet.detect("metrics/", model_dir="models", output_dir="out")  # out/<series>.csv + fleet_summary.json

A series is one file of a folder (its stem is the series name and the model version), one file of a glob, or
the rows of one long-format file that share a `series_column` value. Each series is one call of the public
service functions (`service.train` / `service.detect`), run in joblib worker processes (one torch thread each)
or as Dask futures on an existing cluster; store and data must then be on a path every worker sees.

A failing series never stops the others: its record says `status: failed` with the one-line error. Rerunning
skips series that are already done (a trained version; a result CSV with an ok record) unless `overwrite`.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Callable, Iterator

from . import jsonsafe
from .errors import AnomalyError, DataError, NotFound
from .files import OUTPUT_TEMP_RE, remove_stale_files
from .fleet_run import _run, _threads, default_jobs, one_line, run_dask, run_local  # noqa: F401
from .fleet_series import (  # noqa: F401 (the fleet's public names, as before the split)
    DATA_SUFFIXES,
    Series,
    folder_series,
    glob_series,
    is_data_name,
    series_inputs,
    series_name,
    split_long_file,
)
from .store import FILES, VERSION_RE, ModelStore

SUMMARY_FILE = "fleet_summary.json"
FLUSH_EVERY_S = 5.0  # the detect summary is rewritten this often, so a killed run still records its progress

Progress = Callable[[dict], None]


# --- one series (runs in a worker process) -----------------------------------------------------------------


def _worker_name() -> str:
    """The Dask worker's address when run by one, else "local"."""
    if "distributed" not in sys.modules:  # a Dask worker has it loaded; importing it elsewhere costs a second
        return "local"
    from distributed import get_worker
    try:
        return get_worker().address
    except ValueError:  # not inside a Dask task
        return "local"


def _limit_threads(threads: int | None) -> None:
    # Parallel workers each get one torch thread: N processes x N threads would oversubscribe the cores.
    if threads:
        import torch
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)


def _run_one(series: Series, work: Callable[[], dict]) -> dict:
    started = time.perf_counter()
    record = {"series": series.name, "file": series.origin}
    try:
        if not VERSION_RE.match(series.name) or series.name == "latest":
            raise DataError(f"series name {series.name!r} cannot be a model version (letters, digits, '_', '-', "
                            "'.'; not 'latest'): rename the file")
        record |= {"status": "ok"} | work()
    except Exception as exc:  # one bad series never stops the others: it is reported with its error
        record |= {"status": "failed", "error": one_line(exc)}
    return record | {"seconds": round(time.perf_counter() - started, 3), "worker": _worker_name()}


def train_series(series: Series, store_root: str, options: dict, overwrite: bool, threads: int | None) -> dict:
    """Train one series' model as version `series.name` (module level: joblib and Dask pickle it by name)."""

    def work() -> dict:
        from . import service

        _limit_threads(threads)
        r = service.train(series.path, version=series.name, overwrite=overwrite, store=ModelStore(store_root),
                          **options)
        return {"version": r["version"], "rows": r["rows"], "features": r["features"], "threshold": r["threshold"],
                "epochs_run": r["epochs_run"], "final_loss": r["final_loss"]}

    return _run_one(series, work)


def detect_series(series: Series, store_root: str, output_dir: str, options: dict, threads: int | None) -> dict:
    """Score one series with its own version; every row goes to `output_dir/<series>.csv`."""

    def work() -> dict:
        from . import service

        _limit_threads(threads)
        output = Path(output_dir) / f"{series.name}.csv"
        # before reading: a file or model changed meanwhile is scored again next time
        stamp, model = series.stamp(), model_stamp(store_root, series.name)
        r = service.detect(series.path, version=series.name, store=ModelStore(store_root), output=str(output),
                           return_details=False, **options)
        return summarise_detection(r) | {"input": stamp, "model": model, "options": _options_record(options)}

    return _run_one(series, work)


def model_stamp(store_root: str | os.PathLike, version: str) -> list | None:
    """Size and modification time of each file of a version: a retrained (replaced) version differs."""
    try:
        return [[st.st_size, st.st_mtime_ns] for st in (os.stat(Path(store_root) / version / f)
                                                        for f in sorted(FILES.values()))]
    except (OSError, ValueError):
        return None


def _options_record(options: dict) -> dict:
    """What the options make a detection compute, as the summary file holds it (JSON), to compare with the
    next run's: each option's value with the defaults filled in (`per_feature=False` given or not is the same
    run). Not the device: where it runs does not change what it computes."""
    import json

    from .specs import DetectSpec, parse

    spec = parse(DetectSpec, **options)
    return json.loads(jsonsafe.dumps({name: getattr(spec, name) for name in DETECT_OPTIONS if name != "device"}))


def summarise_detection(r: dict) -> dict:
    """The per-series facts of a detect summary: counts, the incidents as the summary reports them, the
    strength (the peak score over the threshold) and the highest severity, both comparable across series that
    each have their own scale."""
    segments = r["top_anomalies"]
    severities = [s["severity"] for s in segments if s.get("severity") is not None]
    peak = max((s["reconstruction_error"] for s in segments if s["reconstruction_error"] is not None), default=None)
    threshold = r["threshold"]
    strength = None if peak is None else (peak / threshold if threshold and threshold > 0 else peak)
    return {"version": r["version"], "rows": r["total_rows"], "scored_rows": r["scored_rows"],
            "anomalies": r["anomaly_count"], "anomaly_ratio": r["anomaly_ratio"],
            "segment_count": r["anomaly_segments"], "segments": segments, "threshold": threshold,
            "strength": strength, "severity": max(severities, default=None), "warnings": r.get("warnings", []), "output": r.get("output")}


# --- running many --------------------------------------------------------------------------------------------


def _ranked(records: list[dict]) -> list[dict]:
    """Strongest anomalies first (failed series last), then by anomaly count, then by name."""
    def key(r: dict):
        strength = r.get("strength")
        return (r["status"] == "failed", -(strength if strength is not None else -1.0), -(r.get("anomalies") or 0),
                r["series"])
    return sorted(records, key=key)


def _summary(command: str, records: list[dict], started: float, jobs: int, scheduler: str | None, **extra) -> dict:
    counts = {s: sum(r["status"] == s for r in records) for s in ("ok", "skipped", "failed")}
    out = {"command": command, "status": "failed" if counts["failed"] else "success",
           "series_total": len(records), **counts,
           "engine": "dask" if scheduler else "local", "jobs": None if scheduler else jobs, "scheduler": scheduler,
           "seconds": round(time.perf_counter() - started, 3), **extra}
    if command == "detect":
        done = [r for r in records if r["status"] != "failed"]
        out["rows"] = sum(r.get("rows") or 0 for r in done)
        out["anomalies"] = sum(r.get("anomalies") or 0 for r in done)
        out["series_with_anomalies"] = sum(bool(r.get("anomalies")) for r in done)
    return out | {"series": _ranked(records) if command == "detect" else sorted(records, key=lambda r: r["series"])}


def _collect(results: Iterator[dict], records: list[dict], total: int, progress: Progress | None,
             flush: Callable[[], None] | None = None) -> None:
    last_flush, interval = time.monotonic(), FLUSH_EVERY_S
    for record in results:
        records.append(record)
        if progress:
            progress({"event": "series", "done": len(records), "total": total, **_brief(record)})
        if flush and time.monotonic() - last_flush > interval:
            began = time.monotonic()
            flush()
            last_flush = time.monotonic()
            # the summary grows with the series done, and this process shares the cores with the workers:
            # rewriting it takes at most ~5% of the time
            interval = max(FLUSH_EVERY_S, 20 * (last_flush - began))


def _brief(record: dict) -> dict:
    keys = ("series", "status", "error", "rows", "anomalies", "strength", "seconds", "worker")
    return {k: record[k] for k in keys if k in record}


def _check_jobs(jobs: int | None) -> int:
    jobs = default_jobs() if jobs is None else int(jobs)
    if jobs < 1:
        raise DataError(f"jobs must be at least 1, got {jobs}")
    return jobs


# --- train -----------------------------------------------------------------------------------------------------


def check_train_options(options: dict) -> None:
    """Options every series would reject alike fail once, before any work (not once per series)."""
    from .specs import TrainSpec, parse

    for name in ("progress", "should_stop", "version", "store", "paths", "plot", "labels_file"):
        if options.get(name) is not None:
            raise DataError(f"fleet training names versions and stores itself; {name!r} is not a fleet option")
    parse(TrainSpec, **options)


def train(data_dir: str | os.PathLike | None = None, *, data_file: str | None = None, glob: str | None = None,
          series_column: str | None = None, series: list[Series] | None = None, model_dir: str | os.PathLike = "models",
          overwrite: bool = False, jobs: int | None = None, dask_scheduler: str | None = None,
          progress: Progress | None = None, **train_options) -> dict:
    """Train one model version per series (version = series name); `train_options` are `service.train`'s.
    Returns the summary: counts and one record per series (status ok / skipped / failed, with its error)."""
    started = time.perf_counter()
    jobs = _check_jobs(jobs)
    check_train_options(train_options)
    store = ModelStore(model_dir)
    store.ensure_root()
    root = str(store.root.resolve())
    records: list[dict] = []
    with series_inputs(data_dir, data_file=data_file, glob=glob, series_column=series_column, series=series,
                       work_dir=root) as found:
        todo = []
        for s in found:
            if not overwrite and VERSION_RE.match(s.name) and store.info(s.name).get("status") == "ok":
                records.append({"series": s.name, "file": s.origin, "status": "skipped", "version": s.name,
                                "reason": "version exists (overwrite to retrain)", "seconds": 0.0, "worker": None})
            else:
                todo.append(s)
        if progress:
            for i, r in enumerate(records, 1):
                progress({"event": "series", "done": i, "total": len(found), **_brief(r)})
        threads = _threads(jobs, dask_scheduler, len(todo))
        calls = [(s, root, train_options, overwrite, threads) for s in todo]
        _collect(_run(train_series, calls, jobs, dask_scheduler), records, len(found), progress)
    return _summary("train", records, started, jobs, dask_scheduler, model_dir=root)


# --- detect ----------------------------------------------------------------------------------------------------


DETECT_OPTIONS = ("per_feature", "missing", "label_column", "time_column", "threshold_window", "min_duration",
                  "merge_gap", "device", "precision")


def check_detect_options(options: dict) -> None:
    """Options every series would reject alike fail once, before any work, and before a rerun skips anything."""
    from .specs import DetectSpec, parse

    parse(DetectSpec, **options)
    if options.get("device") is not None:
        from .device import resolve_device
        resolve_device(options["device"])


def _previous_records(out: Path) -> dict[str, dict]:
    """The ok records of an earlier run's summary, by series (an unreadable summary: none)."""
    import json

    try:
        previous = json.loads((out / SUMMARY_FILE).read_text())
        return {r["series"]: r for r in previous.get("series", []) if r.get("status") in ("ok", "skipped")}
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return {}


def _already_done(s: Series, out: Path, previous: dict[str, dict], root: str, options: dict) -> dict | None:
    """An earlier run's record for this series if its result file is still there and came from the same,
    unchanged input file, the same unchanged model version and the same options."""
    record = previous.get(s.name)
    if record is None or record.get("file") != s.origin or not (out / f"{s.name}.csv").is_file():
        return None
    model = model_stamp(root, s.name)
    if model is None or record.get("model") != model or record.get("options") != options:
        return None
    try:
        if record.get("input") != s.stamp():
            return None
    except OSError:
        return None
    return record | {"status": "skipped"}


def _refuse_overwriting_inputs(found: list[Series], out: Path) -> None:
    """`--output-dir` the data folder itself would replace each input with its results."""
    for s in found:
        if Path(s.path) == out / f"{s.name}.csv":
            raise DataError(f"the output folder {out} holds the input {Path(s.path).name}; results would replace "
                            "the data: give another --output-dir")


def write_summary(path: Path, summary: dict) -> None:
    """Atomically (a reader never sees half a summary)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(jsonsafe.dumps(summary, indent=1) + "\n")
    os.replace(tmp, path)


def detect(data_dir: str | os.PathLike | None = None, *, output_dir: str | os.PathLike, data_file: str | None = None,
           glob: str | None = None, series_column: str | None = None, series: list[Series] | None = None,
           model_dir: str | os.PathLike = "models", overwrite: bool = False, jobs: int | None = None,
           dask_scheduler: str | None = None, progress: Progress | None = None, **detect_options) -> dict:
    """Score every series with its own version: `output_dir/<series>.csv` (every row, as `detect --output`) and
    `output_dir/fleet_summary.json` (also returned): per series status, rows, anomalies, segments with their
    times, the error if it failed, seconds and the worker; series ranked by anomaly strength."""
    started = time.perf_counter()
    jobs = _check_jobs(jobs)
    unknown = set(detect_options) - set(DETECT_OPTIONS)
    if unknown:
        raise DataError(f"unknown fleet detect option(s): {', '.join(sorted(unknown))} "
                        f"(known: {', '.join(DETECT_OPTIONS)})")
    check_detect_options(detect_options)
    store = ModelStore(model_dir)
    if not store.root.is_dir():
        raise NotFound(f"model store {store.root} does not exist; run `anomaly fleet train` first")
    root = str(store.root.resolve())
    out = Path(output_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise AnomalyError(f"cannot create output folder {out}: {exc.strerror or exc}") from None
    out = out.resolve()
    remove_stale_files(out, OUTPUT_TEMP_RE)  # result CSVs and summaries a killed run left half-written
    previous = {} if overwrite else _previous_records(out)
    wanted = _options_record(detect_options)
    records: list[dict] = []
    extra = {"model_dir": root, "output_dir": str(out)}

    def flush() -> None:
        write_summary(out / SUMMARY_FILE, _summary("detect", records, started, jobs, dask_scheduler, **extra))

    with series_inputs(data_dir, data_file=data_file, glob=glob, series_column=series_column, series=series,
                       work_dir=out) as found:
        _refuse_overwriting_inputs(found, out)
        todo = []
        for s in found:
            done = _already_done(s, out, previous, root, wanted)
            if done is not None:
                records.append(done)
                if progress:
                    progress({"event": "series", "done": len(records), "total": len(found), **_brief(done)})
            else:
                todo.append(s)
        threads = _threads(jobs, dask_scheduler, len(todo))
        calls = [(s, root, str(out), detect_options, threads) for s in todo]
        try:
            _collect(_run(detect_series, calls, jobs, dask_scheduler), records, len(found), progress, flush)
        finally:
            flush()  # also when interrupted: the next run skips what is done
    return _summary("detect", records, started, jobs, dask_scheduler, **extra)


def lean(summary: dict, top: int = 10) -> dict:
    """A short reply for MCP / HTTP clients: counts, the `top` strongest series and the failed ones (capped)."""
    keys = ("series", "status", "rows", "anomalies", "anomaly_ratio", "segment_count", "strength", "severity",
            "output")
    series = summary.get("series", [])
    head = {k: v for k, v in summary.items() if k != "series"}
    failed = [{"series": r["series"], "error": r.get("error")} for r in series if r["status"] == "failed"]
    ranked = [r for r in series if r["status"] != "failed"]
    return head | {"top_series": [{k: r[k] for k in keys if k in r} for r in ranked[:top]],
                   "failed_series": failed[:top], "failed_truncated": len(failed) > top}
