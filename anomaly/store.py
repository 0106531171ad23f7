"""Versioned artifact store: `models/<version>/{model.pth, model_config.json, threshold.json, scaler.pkl}`.

A version is written into a hidden temporary folder and renamed into place, so a crash or Ctrl-C never
leaves half a version, and a rename onto an existing version fails instead of overwriting it. `latest` is a
small text file naming the newest version, replaced atomically.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import tempfile
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Callable

from .errors import AnomalyError, ArtifactError, NotFound, VersionExists
from .files import (  # noqa: F401 (re-exported: the store's callers have always imported them from here)
    STALE_AFTER_S,
    _age,
    _fsync,
    atomic_write_bytes,
    atomic_write_text,
    exchange,
    remove_entry,
    remove_stale_files,
    umask,
    writer_gone,
)

FILES = {"model": "model.pth", "config": "model_config.json", "threshold": "threshold.json", "scaler": "scaler.pkl"}
# \Z, not $: `$` also matches before a final newline, and "v1\n" must not pass for a name
VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}\Z")
DEFAULT_ROOT = "models"
MAX_WINDOW = 10_000  # rows per sample; training refuses more, loading calls more corrupt
MAX_SMOOTH = 100_000  # rows in the score smoothing
# Temporary entries carry their writer's process id: `.tmp-<pid>-*` (a version being written), `.trash-<pid>-*`
# (one being deleted), `.parked-<pid>-<version>-<hex>` (the old copy of a version being replaced where the two
# folders cannot be swapped in one step), `.<file>.<pid>.*` (a file being replaced). A killed writer's leftovers
# are removed by the next save or delete (a parked copy whose version is missing is put back instead); a running
# writer's never are.
TEMP_RE = re.compile(r"^\.(?:tmp-|trash-|parked-|latest\.)(\d+)[-.]")
PARKED_RE = re.compile(r"^\.parked-\d+-(.+)-[0-9a-f]{8}\Z")
OLD_TEMP_PREFIXES = (".tmp-", ".trash-", ".latest.")  # from versions that did not record the writer


@dataclass(frozen=True)
class ArtifactPaths:
    model: Path
    config: Path
    threshold: Path
    scaler: Path
    # Classic explicit files the user named in their own process (CLI, mcp_tool) may fall back to unpickling
    # scaler.pkl when model_config.json lacks the scaling; store versions and the server never do.
    allow_pickle: bool = field(default=False, compare=False)

    @classmethod
    def in_folder(cls, folder: str | os.PathLike) -> "ArtifactPaths":
        folder = Path(folder)
        return cls(**{k: folder / v for k, v in FILES.items()})

    @classmethod
    def explicit(cls, model=None, config=None, threshold=None, scaler=None,
                 allow_pickle: bool = False) -> "ArtifactPaths":
        """Classic-tool style paths; any not given sits beside the model file under its standard name."""
        given = {"model": model, "config": config, "threshold": threshold, "scaler": scaler}
        anchor = next(Path(p).parent for p in given.values() if p)
        return cls(**{k: Path(v) if v else anchor / FILES[k] for k, v in given.items()}, allow_pickle=allow_pickle)

    def items(self):
        return {"model": self.model, "config": self.config, "threshold": self.threshold, "scaler": self.scaler}.items()


def shown(value, limit: int = 80) -> str:
    """A value as an error message may repeat it: its repr, cut to `limit` characters (a client's 4 MB argument
    must not come back as a 4 MB error)."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"


def validate_name(value, what: str = "version name", pattern: re.Pattern = VERSION_RE,
                  rule: str = "use letters, digits, '_', '-', '.' (not 'latest')", folder: bool = True) -> str:
    """The one check of every name a user gives (a version, a live channel, a fleet series): a string of the
    allowed characters only (`folder`: it names a folder of the store, so not `latest` nor `..`). Control characters (a trailing newline from a shell's $'v1\\n') are never part of
    a name: "latest\\n" would get past the reserved name and "v1\\n" would be a second folder shown as v1."""
    if not isinstance(value, str):
        raise AnomalyError(f"invalid {what}: expected a string, got {type(value).__name__}")
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise AnomalyError(f"invalid {what} {shown(value)}: it contains a control character (a newline?)")
    if not pattern.match(value) or (folder and (value == "latest" or ".." in value)):
        raise AnomalyError(f"invalid {what} {shown(value)}: {rule}")
    return value


def validate_version_name(version: str) -> str:
    return validate_name(version)


class ModelStore:
    def __init__(self, root: str | os.PathLike = DEFAULT_ROOT):
        self.root = Path(root)

    # --- writing -------------------------------------------------------------------------------------

    def save(self, write: Callable[[ArtifactPaths], None], version: str | None = None, overwrite: bool = False) -> str:
        """Write a new version with `write(paths)` into a temporary folder, then rename it into place. The store
        fsyncs every file before the rename, so `write` may write them plainly (it writes into a folder that no
        reader sees until then)."""
        self.ensure_root()
        self.remove_stale()
        if version is not None:
            validate_version_name(version)
            if (self.root / version).exists() and not overwrite:
                raise VersionExists(f"version {version!r} already exists in {self.root}; "
                                    "choose another --version or pass --overwrite")
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{os.getpid()}-", dir=self.root))
        try:
            os.chmod(tmp, 0o777 & ~umask())  # mkdtemp makes it 0700; a model holds no secret: colleagues may read it
            write(ArtifactPaths.in_folder(tmp))
            for f in FILES.values():
                _fsync(tmp / f)
            name = self._publish(tmp, version, overwrite)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self._set_latest(name)
        return name

    def _publish(self, tmp: Path, version: str | None, overwrite: bool) -> str:
        if version is not None:
            target = self.root / version
            if overwrite and target.exists():
                if exchange(tmp, target):  # one step: the name holds the old version, then the new one
                    shutil.rmtree(tmp, ignore_errors=True)  # now the old version
                    return version
                # No atomic swap here (not Linux, or a file system without it): park the old copy under a name
                # that says which version it is; if this process dies before the second rename, the next
                # save, delete or lookup puts it back (`_restore_parked`).
                parked = self.root / f".parked-{os.getpid()}-{version}-{uuid.uuid4().hex[:8]}"
                os.rename(target, parked)
                os.rename(tmp, target)
                shutil.rmtree(parked, ignore_errors=True)
                return version
            try:
                os.rename(tmp, target)  # fails if another process published this name meanwhile
            except OSError:
                raise VersionExists(f"version {version!r} already exists in {self.root}") from None
            return version
        base = datetime.now().strftime("%Y%m%d_%H%M%S")
        for n in range(1, 10_000):
            name = base if n == 1 else f"{base}_{n}"
            try:
                os.rename(tmp, self.root / name)
                return name
            except OSError:
                continue
        raise AnomalyError("could not find a free version name")

    def check_root(self) -> None:
        """Refuse a store that could not be created (a file in the way) before training, not after it."""
        try:
            folder = self.root
            while not folder.exists() and folder.parent != folder:
                folder = folder.parent
            usable = folder.is_dir()
        except OSError as exc:
            raise AnomalyError(f"cannot use model store {self.root}: {exc.strerror or exc}") from None
        if not usable:
            raise AnomalyError(f"cannot use model store {self.root}: {folder} is a file, not a folder")

    def ensure_root(self) -> None:
        """Create the store folder, or say clearly why not (checked before training, not after it)."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            raise AnomalyError(f"model store {self.root} is a file, not a folder; give another --model-dir") from None
        except OSError as exc:
            raise AnomalyError(f"cannot create model store {self.root}: {exc.strerror or exc}") from None
        if not self.root.is_dir():
            raise AnomalyError(f"model store {self.root} is not a folder; give another --model-dir")

    def remove_stale(self) -> None:
        """Remove temporary entries left by a writer that was killed (see TEMP_RE); never a running writer's."""
        try:
            entries = list(self.root.iterdir())
        except OSError:
            return
        for entry in entries:
            match = TEMP_RE.match(entry.name)
            if match:
                stale = writer_gone(int(match.group(1)), entry)
            else:
                stale = entry.name.startswith(OLD_TEMP_PREFIXES) and _age(entry) > STALE_AFTER_S
            if stale and not self._restore_parked(entry):
                try:
                    remove_entry(entry)
                except OSError:  # a read-only store (a lookup calls this too): leave it to a writer
                    pass

    def _restore_parked(self, entry: Path) -> bool:
        """Put a dead writer's parked old copy of a version back when nothing took its name (the writer died
        between its two renames); True when it was put back."""
        parked = PARKED_RE.match(entry.name)
        if not parked or not VERSION_RE.match(parked.group(1)) or (self.root / parked.group(1)).exists():
            return False
        try:
            os.rename(entry, self.root / parked.group(1))
            return True
        except OSError:
            return False

    def _set_latest(self, version: str) -> None:
        atomic_write_text(self.root / "latest", version + "\n")

    # --- reading -------------------------------------------------------------------------------------

    def versions(self) -> list[str]:
        if not self.root.is_dir():
            return []
        names = [p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")]
        return sorted(names, key=lambda n: ((self.root / n / FILES["config"]).stat().st_mtime
                                            if (self.root / n / FILES["config"]).exists() else 0, n))

    def latest(self) -> str | None:
        marker = self.root / "latest"
        if marker.is_file():
            name = marker.read_text(errors="replace").strip()
            # only a version name: a marker saying "../elsewhere" must not lead out of the store
            if VERSION_RE.match(name) and name != "latest" and (self.root / name).is_dir():
                return name
        versions = self.versions()
        return versions[-1] if versions else None

    def resolve(self, version: str | None = None) -> str:
        if version in (None, "", "latest"):
            name = self.latest()
            if name is None:
                raise NotFound(f"no trained model in {self.root}; train one first (python train.py --data FILE)")
            return name
        validate_version_name(version)
        if not (self.root / version).is_dir():
            self.remove_stale()  # a writer killed while replacing it may have left it parked
        if not (self.root / version).is_dir():
            known = ", ".join(self.versions()[-10:]) or "none"
            raise NotFound(f"model version {version!r} not found in {self.root} (available: {known})")
        return version

    def paths(self, version: str | None = None) -> ArtifactPaths:
        name = self.resolve(version)
        paths = ArtifactPaths.in_folder(self.root / name)
        check_complete(paths, name)
        return paths

    def info(self, version: str) -> dict:
        """One version's key facts; a broken version is reported as such (with the reason), never raised."""
        paths = ArtifactPaths.in_folder(self.root / version)
        missing = [p.name for _, p in paths.items() if not p.is_file()]
        if missing:
            return {"version": version, "status": "incomplete", "error": f"missing {', '.join(missing)}"}
        try:
            config = read_json(paths.config)
            threshold = read_json(paths.threshold)
            validate_artifacts(config, threshold, version)
        except ArtifactError as exc:
            return {"version": version, "status": "broken", "error": str(exc)}
        data = config.get("data") if isinstance(config.get("data"), dict) else {}
        return {"version": version, "status": "ok", "created": config.get("created"),
                "model_type": config.get("model_type"), "features": config.get("features"),
                "window": config.get("window"), "threshold": threshold.get("threshold"),
                "threshold_method": threshold.get("method"), "rows": data.get("rows"),
                "data_file": data.get("file")}

    def list(self) -> list[dict]:
        latest = self.latest()
        return [self.info(v) | {"latest": v == latest} for v in self.versions()]

    def delete(self, version: str) -> None:
        name = self.resolve(version)
        self.remove_stale()
        trash = self.root / f".trash-{os.getpid()}-{name}-{uuid.uuid4().hex[:8]}"
        os.rename(self.root / name, trash)
        shutil.rmtree(trash, ignore_errors=True)
        remaining = self.versions()
        if remaining:
            # the newest version that loads; a broken or incomplete one only when no other is left
            usable = [v for v in remaining if self.info(v)["status"] == "ok"]
            self._set_latest((usable or remaining)[-1])
        else:
            (self.root / "latest").unlink(missing_ok=True)


def check_complete(paths: ArtifactPaths, label: str) -> None:
    missing = [p.name for _, p in paths.items() if not p.is_file()]
    if missing:
        raise ArtifactError(f"model {label} is incomplete: missing {', '.join(missing)}")


def read_json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ArtifactError(f"missing artifact file {path}") from None
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError, and an integer of over 4,300 digits
        raise ArtifactError(f"corrupt artifact file {path}: {str(exc)[:200]}") from None
    except RecursionError:
        raise ArtifactError(f"corrupt artifact file {path}: nested too deeply") from None
    except OSError as exc:
        raise ArtifactError(f"cannot read artifact file {path}: {exc.strerror or exc}") from None


def validate_artifacts(config, threshold, label: str, require_affine: bool = True) -> None:
    """The schema of model_config.json and threshold.json, checked on every load and listing: a corrupt value
    (a null scaler, a window of 0 or 1e9, a threshold of -inf, ...) is refused with its reason instead of giving
    silently wrong scores. `require_affine`: the scaling must be in the config (store versions never unpickle)."""
    from .models import MODEL_TYPES

    def bad(problem: str):
        raise ArtifactError(f"model {label} is corrupt: {problem}")

    if not isinstance(config, dict):
        bad(f"model_config.json holds {type(config).__name__}, not an object")
    if not isinstance(threshold, dict):
        bad(f"threshold.json holds {type(threshold).__name__}, not an object")
    if config.get("model_type") not in MODEL_TYPES:
        bad(f"unknown model_type {str(config.get('model_type'))[:40]!r}")
    features = config.get("features")
    if not (isinstance(features, list) and features and all(isinstance(f, str) for f in features)):
        bad("features must be a non-empty list of column names")
    if "n_features" in config and config["n_features"] != len(features):
        bad(f"n_features {config['n_features']!r} does not match the {len(features)} features")
    for key, low, high, default in (("window", 1, MAX_WINDOW, None), ("smooth", 1, MAX_SMOOTH, 1),
                                    ("span", 1, MAX_WINDOW + 1, 1)):
        value = config.get(key, default)
        if not _whole(value) or not low <= value <= high:
            bad(f"{key} must be a whole number from {low} to {high}, got {str(value)[:40]}")
    if config.get("span", config["window"]) not in (config["window"], config["window"] + 1):  # exact: on load
        bad(f"span {config['span']} does not fit window {config['window']}")
    for key in ("model", "training"):
        if not isinstance(config.get(key), dict):
            bad(f"{key} must be an object")
    affine = config.get("scaler_affine", ...)
    if affine is ... and require_affine:
        bad("no scaler_affine in model_config.json (scaler.pkl is never unpickled for a stored version)")
    if affine is not ...:
        if not isinstance(affine, dict):
            bad(f"scaler_affine must be an object, got {str(affine)[:40]}")
        for key in ("mul", "add"):
            values = affine.get(key)
            if not (isinstance(values, list) and len(values) == len(features) and all(_finite(v) for v in values)):
                bad(f"scaler_affine.{key} must be {len(features)} finite numbers")
        if 0 in affine["mul"]:
            bad("scaler_affine.mul holds a zero scale")
    if not _finite(threshold.get("threshold")):
        bad(f"threshold must be a finite number, got {str(threshold.get('threshold'))[:40]}")
    if not isinstance(threshold.get("method"), str) or not isinstance(threshold.get("params", {}), dict):
        bad("threshold.json needs a method name and a params object")
    floor = config.get("spike_floor")
    if floor is not None and not (_finite(floor) or (isinstance(floor, list) and floor and all(map(_finite, floor)))):
        bad(f"spike_floor must be a finite number or a list of them, got {str(floor)[:40]}")
    from .thresholds import METHODS

    if threshold["method"] not in METHODS:  # a rolling threshold computes it again with this method
        bad(f"unknown threshold method {threshold['method'][:40]!r}")
    for key in ("stats", "params"):
        if not isinstance(threshold.get(key, {}), dict):
            bad(f"threshold.json {key} must be an object")
    for key, value in threshold.get("params", {}).items():  # every method's options are numbers
        if not _finite(value):
            bad(f"threshold params.{str(key)[:40]} must be a finite number, got {str(value)[:40]}")
    if not 0 < threshold.get("params", {}).get("percentile", 50) < 100:
        bad("threshold params.percentile must be between 0 and 100")
    if "expected_rate" in threshold and not (threshold["expected_rate"] is None or _finite(threshold["expected_rate"])):
        bad(f"expected_rate must be a number, got {str(threshold['expected_rate'])[:40]}")


def _whole(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def now_iso() -> str:
    return datetime.now().astimezone().isoformat(timespec="seconds")


__all__ = ["ArtifactPaths", "ModelStore", "FILES", "read_json", "validate_artifacts", "atomic_write_bytes", "atomic_write_text", "now_iso",
           "check_complete", "validate_name", "remove_stale_files", "shown"]
