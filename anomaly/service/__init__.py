"""The public service API: train, detect, model info, list and delete models.

The CLI, the MCP server, the HTTP API and `mcp_tool` all call these functions and get plain JSON-able
dicts back; none of them re-implements any of this. Failures raise `anomaly.errors.AnomalyError` with a
one-line message. The work itself lives in small modules: `loader` (artifacts and the detector cache),
`pipeline` (block-by-block detection), `summary` (what a detection reports) and `live` (point-by-point scoring).
"""

from __future__ import annotations

from ..loader import artifact_paths, load_detector
from ..thresholds import threshold_params
from .live import LiveScorer
from .operations import DEFAULT_MAX_RESULTS, delete_model, detect, fingerprint, list_models, model_info, train
from .pipeline import iter_detect, summary_of

__all__ = ["DEFAULT_MAX_RESULTS", "LiveScorer", "artifact_paths", "delete_model", "detect", "fingerprint",
           "iter_detect", "list_models", "load_detector", "model_info", "summary_of", "threshold_params", "train"]
