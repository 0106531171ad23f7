"""Running a fleet's calls: in this process, in joblib's loky worker processes (each ending itself when the
fleet's process dies), or as futures on a Dask cluster; each yields the records in completion order."""

from __future__ import annotations

import os
import uuid
from typing import Callable, Iterator

from .errors import AnomalyError


def one_line(exc: BaseException) -> str:
    """A failure as one line, as the CLI prints it (an OSError names its file; a bug names its type)."""
    if isinstance(exc, AnomalyError):
        text = str(exc)
    elif isinstance(exc, OSError):
        text = f"{exc.strerror or exc}" + (f" ({exc.filename})" if getattr(exc, "filename", None) else "")
    else:
        text = f"internal error: {type(exc).__name__}: {exc}"
    return " ".join(text.split())[:1000]


def default_jobs() -> int:
    from joblib import cpu_count
    return max(1, cpu_count())


def run_local(fn: Callable, calls: list[tuple], jobs: int) -> Iterator[dict]:
    """Records in completion order: in this process for one job, else joblib's loky worker processes."""
    if jobs <= 1 or len(calls) <= 1:
        for args in calls:
            yield fn(*args)
        return
    from joblib import Parallel, delayed, parallel_config

    # inner_max_num_threads: loky caps OpenMP/MKL threads in its workers (torch reads OMP_NUM_THREADS).
    parent = os.getpid()
    with parallel_config(backend="loky", inner_max_num_threads=1):
        yield from Parallel(n_jobs=min(jobs, len(calls)), return_as="generator_unordered")(
            delayed(_in_worker)(fn, parent, *args) for args in calls)


def _in_worker(fn: Callable, parent: int, *args) -> dict:
    """Run one series in a loky worker that ends itself when the fleet's process dies: loky keeps its workers
    alive for reuse, and a killed `anomaly fleet` would otherwise leave them training and saving versions."""
    from .workers import watch_parent

    watch_parent(parent)
    return fn(*args)


def run_dask(fn: Callable, calls: list[tuple], scheduler: str) -> Iterator[dict]:
    """Records in completion order from `distributed` futures on the cluster at `scheduler`."""
    try:
        from distributed import Client, as_completed
    except ImportError:
        raise AnomalyError("--dask-scheduler needs dask[distributed]: pip install 'dask[distributed]'") from None
    try:
        client = Client(scheduler, timeout="20s", set_as_default=False)
    except (OSError, TimeoutError, ValueError) as exc:
        raise AnomalyError(f"cannot reach the Dask scheduler {scheduler}: {one_line(exc)}") from None
    run = uuid.uuid4().hex[:8]
    with client:
        futures = {client.submit(fn, *args, key=f"fleet-{run}-{i}", pure=False): args[0]
                   for i, args in enumerate(calls)}
        try:
            for future in as_completed(list(futures), loop=client.loop):
                try:
                    yield future.result()
                except Exception as exc:  # the task never returned (its worker died): that series failed
                    series = futures[future]
                    yield {"series": series.name, "file": series.origin, "status": "failed", "error": one_line(exc),
                           "seconds": None, "worker": "dask"}
        finally:
            client.cancel(list(futures))


def _run(fn: Callable, calls: list[tuple], jobs: int, scheduler: str | None) -> Iterator[dict]:
    return run_dask(fn, calls, scheduler) if scheduler else run_local(fn, calls, jobs)


def _threads(jobs: int, scheduler: str | None, n: int) -> int | None:
    # In-process (one job) keeps the process's own torch threads; worker processes get one each.
    return 1 if scheduler or (jobs > 1 and n > 1) else None
