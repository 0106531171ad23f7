"""What a saved detector carries besides its weights: the library versions, the checksums that tie explicit files
into one set, and the JSON form of numpy values."""

from __future__ import annotations

import hashlib
import platform

import numpy as np

from .._version import __version__
from ..errors import ArtifactError
from ..store import ArtifactPaths


def library_versions() -> dict:
    import pandas
    import sklearn
    import torch
    return {"anomaly": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "numpy": np.__version__, "pandas": pandas.__version__, "scikit-learn": sklearn.__version__}


SET_KEY = "artifact_sha256"  # in model_config.json of explicit files: the checksums of the other three


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _check_set(paths: ArtifactPaths, config: dict, label: str) -> None:
    """Explicit files saved together must still be the set the config was saved with (see `save`)."""
    sums = config.get(SET_KEY)
    if sums is None:  # a store version (renamed into place whole) or files from before the checksums
        return
    if not isinstance(sums, dict):
        raise ArtifactError(f"model {label} is corrupt: {SET_KEY} must be an object")
    for kind, expected in sums.items():
        path = getattr(paths, kind, None) if kind in ("model", "threshold", "scaler") else None
        if path is None:
            continue
        try:
            actual = _sha256(path.read_bytes())
        except OSError as exc:
            raise ArtifactError(f"model {label}: cannot read {path}: {exc.strerror or exc}") from None
        if actual != expected:
            raise ArtifactError(f"model {label} is a mixed set: {path.name} is not the file its "
                                f"{paths.config.name} was saved with (a save was interrupted?); train it again")


def _write_bytes(path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)


