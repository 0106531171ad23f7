"""What the MCP tools and the HTTP routes share: the toolbox, worker threads and JSON cleaning (the settings
are `anomaly.server.settings.Settings`).

Torch work never runs on the event loop: it goes to worker threads through capacity limiters (one for
training, one for scoring), so while a model trains, other clients' detections, `/health` and SSE streams
keep answering.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
import uuid
from functools import partial
from pathlib import Path
from typing import Any, Awaitable, Callable

import anyio
import anyio.from_thread
import anyio.to_thread

from .._version import __version__
from ..files import OUTPUT_TEMP_RE, remove_stale_files
from ..jsonsafe import numpy_default
from .settings import Settings
from .toolbox import Toolbox

log = logging.getLogger("anomaly.server")
UPLOAD_RE = re.compile(r"^upload-(\d+)-[0-9a-f]+\.csv\Z")


class Runtime:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.toolbox = Toolbox(settings.model_dir, settings.results_dir, settings.data_roots, device=settings.device)
        self.score_limiter = anyio.CapacityLimiter(settings.workers)
        self.train_limiter = anyio.CapacityLimiter(settings.train_workers)
        self.started = time.time()
        self.task_group = None  # set by the app's lifespan: background jobs that outlive a request
        self.uploads = Path(settings.results_dir) / ".uploads"

    def clean_leftovers(self) -> None:
        """At start: what a killed server left in its results folder (half-written result CSVs, uploads being
        scored), only where the process that made it is gone (another server may share the folder)."""
        self.toolbox.ensure_results_dir()
        remove_stale_files(self.toolbox.results_dir, OUTPUT_TEMP_RE)
        remove_stale_files(self.uploads, UPLOAD_RE)

    def new_upload(self) -> Path:
        """A new file for an upload's body; its name carries this process's id (see `clean_leftovers`)."""
        self.uploads.mkdir(parents=True, exist_ok=True)
        return self.uploads / f"upload-{os.getpid()}-{uuid.uuid4().hex[:12]}.csv"

    async def score(self, fn: Callable, *args, **kwargs) -> Any:
        """Run scoring / loading work in a worker thread."""
        return await anyio.to_thread.run_sync(partial(fn, *args, **kwargs), limiter=self.score_limiter)

    async def train(self, on_epoch: Callable[[dict], Awaitable[None]] | None = None, **kwargs) -> dict:
        """Train in a worker thread; `on_epoch` (async) runs on the event loop after every epoch."""

        def progress(event: dict) -> None:
            if on_epoch is None:
                return
            try:
                anyio.from_thread.run(on_epoch, event)
            except Exception:  # a listener that went away must not kill the training; the log says why
                log.warning("progress report failed; training goes on", exc_info=True)

        return await anyio.to_thread.run_sync(partial(self.toolbox.train_model, progress=progress, **kwargs),
                                              limiter=self.train_limiter)

    def health(self) -> dict:
        return {"status": "ok", "version": __version__, "uptime_s": round(time.time() - self.started, 1),
                "model_dir": str(self.toolbox.store.root.resolve()), "device": self.settings.device,
                "training_running": self.train_limiter.borrowed_tokens,
                "scoring_running": self.score_limiter.borrowed_tokens}


def to_json(obj: Any) -> tuple[str, Any]:
    """(compact JSON text, JSON-safe data) of a result: NaN/inf become null, numpy scalars plain numbers.
    The data is `obj` itself when it already is plain JSON (the usual case: no copy)."""
    converted = []

    def default(o: Any) -> Any:
        converted.append(o)
        return _default(o)

    text = json.dumps(obj, separators=(",", ":"), default=default)
    if not converted and "NaN" not in text and "Infinity" not in text:
        return text, obj
    data = json.loads(text, parse_constant=lambda _: None)  # NaN, Infinity, -Infinity -> None
    return json.dumps(data, separators=(",", ":")), data


def clean(obj: Any) -> Any:
    """JSON-safe copy of a result (see `to_json`)."""
    return to_json(obj)[1]


def _default(o: Any) -> Any:
    try:
        return numpy_default(o)
    except TypeError:  # a path or another object: its text
        return str(o)
