"""`anomaly.settings`, the name the server's settings had before they moved to `anomaly.server.settings`; kept
so that older imports (and the docs' reference generator) keep working."""

from __future__ import annotations

from .server.settings import COMMON_FLAGS, SERVE_FLAGS, Settings, add_flags, default_results_dir, from_args

__all__ = ["COMMON_FLAGS", "SERVE_FLAGS", "Settings", "add_flags", "default_results_dir", "from_args"]
