"""Logging: stdlib `logging` to stderr, plain or one JSON object per line (`--log-level`, `--log-json`).

The servers log one line per tool call and HTTP request (`log_call`) and every unexpected exception with
its traceback; stdout stays free for results (and for the MCP protocol over stdio).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from contextlib import contextmanager
from typing import Any, Iterator

LEVELS = ("critical", "error", "warning", "info", "debug")
log = logging.getLogger("anomaly")


class JsonFormatter(logging.Formatter):
    """{"time", "level", "logger", "message", <extra fields>, "traceback"}: one object per line."""

    BASE = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {"time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"), "level": record.levelname.lower(),
                               "logger": record.name, "message": record.getMessage()}
        out |= {k: v for k, v in vars(record).items() if k not in self.BASE and not k.startswith("_")}
        if record.exc_info:
            out["traceback"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def configure(level: str | None = None, as_json: bool | None = None) -> None:
    """Set up the `anomaly` logger (flags win over ANOMALY_LOG_LEVEL / ANOMALY_LOG_JSON; default warning)."""
    level = level or os.environ.get("ANOMALY_LOG_LEVEL") or "warning"
    if as_json is None:
        as_json = os.environ.get("ANOMALY_LOG_JSON", "").lower() in ("1", "true", "yes")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if as_json else
                         logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y-%m-%d %H:%M:%S"))
    log.handlers[:] = [handler]
    log.setLevel(level.upper())
    log.propagate = False


@contextmanager
def log_call(kind: str, name: str, **fields: Any) -> Iterator[dict]:
    """Log one line when a call ends: its kind and name, `fields` (file, version...), what the body adds to
    the yielded dict (rows...), milliseconds and outcome; an unexpected exception with its traceback."""
    extra = dict(fields)
    started = time.perf_counter()
    outcome = "ok"
    try:
        yield extra
    except Exception as exc:
        from .errors import AnomalyError

        outcome = "user_error" if isinstance(exc, AnomalyError) else "error"
        extra["error"] = " ".join(str(exc).split())[:300]
        if outcome == "error":
            log.exception("%s %s failed", kind, name, extra=_fields(kind, name, extra, started, outcome))
            raise
        raise
    finally:
        if outcome != "error" and log.isEnabledFor(logging.INFO):  # off by default: the line is not even built
            ms = (time.perf_counter() - started) * 1000
            shown = " ".join(f"{k}={v}" for k, v in extra.items() if v is not None)
            log.info("%s %s %s %.0fms %s", kind, name, outcome, ms, shown,
                     extra=_fields(kind, name, extra, started, outcome))


def _fields(kind: str, name: str, extra: dict, started: float, outcome: str) -> dict:
    return {"kind": kind, "call": name, "ms": round((time.perf_counter() - started) * 1000, 1),
            "outcome": outcome, **{k: v for k, v in extra.items() if v is not None}}
