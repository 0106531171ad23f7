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


def numpy_default(obj: Any) -> Any:
    """`json.dumps`'s `default` for numpy scalars and arrays (plain Python values); anything else is not JSON."""
    if hasattr(obj, "tolist") and type(obj).__module__ == "numpy":
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def dumps(obj: Any, **kwargs) -> str:
    """`json.dumps` that never writes NaN/Infinity and never fails on a non-finite number."""
    return json.dumps(json_safe(obj), allow_nan=False, default=str, **kwargs)
