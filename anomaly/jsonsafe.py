"""Strict JSON for every JSON the tool writes (stdout, result files): NaN and +-inf are not JSON (`json.dumps`
writes `NaN`/`Infinity`, which strict parsers reject, and `allow_nan=False` raises), so they become null."""

from __future__ import annotations

import json
import math
from typing import Any


def json_safe(obj: Any) -> Any:
    """A copy of `obj` where non-finite floats are None and numpy scalars/arrays are plain Python."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if hasattr(obj, "tolist") and type(obj).__module__ == "numpy":  # numpy scalar or array
        return json_safe(obj.tolist())
    return obj


def dumps(obj: Any, **kwargs) -> str:
    """`json.dumps` that never writes NaN/Infinity and never fails on a non-finite number."""
    return json.dumps(json_safe(obj), allow_nan=False, default=str, **kwargs)
