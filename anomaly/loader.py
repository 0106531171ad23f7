"""Where a model's files are (a store version or explicit classic paths) and a cache of loaded detectors.

Detection, the live scorer and model info all load through here, so a version is read from disk once and
reloaded only when its files change.
"""

from __future__ import annotations

import threading

from .store import ArtifactPaths, ModelStore


def artifact_paths(version: str | None = None, store: ModelStore | None = None, model_path=None, config_path=None,
                   threshold_path=None, scaler_path=None) -> tuple[ArtifactPaths, str]:
    """Explicit classic-tool paths win; otherwise the named (or latest) version of the store."""
    if any((model_path, config_path, threshold_path, scaler_path)):
        paths = ArtifactPaths.explicit(model_path, config_path, threshold_path, scaler_path)
        return paths, str(paths.model.parent)
    store = store or ModelStore()
    name = store.resolve(version)
    return store.paths(name), name


_cache: dict = {}
_cache_lock = threading.Lock()


def load_detector(paths: ArtifactPaths, label: str = "", device: str = "auto", precision: str = "fp32"):
    """Load a saved detector onto `device`, cached in memory; a changed or replaced version is reloaded."""
    from .store import check_complete

    check_complete(paths, label or str(paths.model.parent))
    key = tuple(str(p.resolve()) for _, p in paths.items()) + (device, precision)
    stamp = tuple(p.stat().st_mtime_ns for _, p in paths.items())
    with _cache_lock:
        hit = _cache.get(key)
        if hit and hit[0] == stamp:
            return hit[1]
    # torch: imported only once there is a model to load; the core, not the estimator (scikit-learn's import is
    # slow: docs/decisions/0012-detection-fast-paths.md)
    from .detector import DetectorCore

    det = DetectorCore.load(paths, label, device, precision)
    with _cache_lock:
        if len(_cache) >= 16:
            _cache.pop(next(iter(_cache)))
        _cache[key] = (stamp, det)
    return det
