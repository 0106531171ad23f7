"""The toolbox: the classic tool calls (`run_detection`, `get_model_info`, `train_model`, `list_models`) on top
of the service layer, shared by the MCP tools, the HTTP API and `mcp_tool.py` so all three return the same dicts.

What this adds to `anomaly.service`: the path policy (confinement), a results CSV for every detection, and
results small enough for an MCP message (clients drop a message of 1 MiB or more).
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

from .. import data, defaults, service, specs
from ..errors import AnomalyError, DataError, PathNotAllowed, VersionExists
from ..specs import MAX_RESULTS_LIMIT, DetectSpec, Spec, TrainSpec, parse
from ..store import VERSION_RE, ArtifactPaths, ModelStore, atomic_write_text
from .security import PathPolicy

RESULTS_BYTES = 400_000  # the rows of a reply serialise to at most this (MCP clients drop a message of 1 MiB)
KEEP_RESULT_FILES = 200  # older result CSVs written by this tool in the results folder are removed
# The names `_new_result_path` gives ...
RESULT_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]+-\d{8}-\d{6}-[0-9a-f]{6}\.csv\Z")
# ... and the record of the ones it wrote: only a file both named so and recorded there is ever pruned, so a
# results folder that is also a data folder keeps every file its user put there, whatever its name.
LEDGER = ".anomaly-results"


class Toolbox:
    def __init__(self, model_dir: str | Path = "models", results_dir: str | Path = "results",
                 data_roots: list | None = None, keep_results: int = KEEP_RESULT_FILES, device: str = "auto",
                 allow_pickle: bool = False):
        self.store = ModelStore(model_dir)
        self.device = device  # the default for trainings and detections; a call may name another
        self.policy = PathPolicy(data_roots, model_dir)
        self.results_dir = Path(results_dir)
        self.keep_results = keep_results
        self.allow_pickle = allow_pickle  # explicit classic files may fall back to scaler.pkl (in-process only)
        self._written = 0  # result files written, for pruning now and then
        self._ledger_lock = threading.Lock()

    # --- artifacts -----------------------------------------------------------------------------------

    def explicit_paths(self, model_path=None, threshold_path=None, scaler_path=None,
                       config_path=None) -> ArtifactPaths | None:
        """Classic explicit artifact paths, each confined to the model store; None when none is given."""
        given = {"model": model_path, "config": config_path, "threshold": threshold_path, "scaler": scaler_path}
        if not any(given.values()):
            return None
        checked = {k: str(self.policy.artifact(v)) if v else None for k, v in given.items()}
        paths = ArtifactPaths.explicit(**checked, allow_pickle=self.allow_pickle)
        for _, p in paths.items():  # the defaulted siblings too
            self.policy.artifact(str(p))
        return paths

    def _locate(self, version, model_path, threshold_path, scaler_path, config_path) -> tuple[ArtifactPaths, str]:
        paths = self.explicit_paths(model_path, threshold_path, scaler_path, config_path)
        if paths is not None:
            return paths, str(paths.model.parent)
        return service.artifact_paths(version, self.store)

    # --- detection ----------------------------------------------------------------------------------------

    def detect_events(self, file_path: str, spec: DetectSpec | None = None, *, model_path: str | None = None,
                      threshold_path: str | None = None, scaler_path: str | None = None,
                      config_path: str | None = None, version: str | None = None, block_bytes: int = data.BLOCK_BYTES,
                      trusted: bool = False, anomaly_events: bool = True, row_features: bool = False,
                      **params: Any) -> Iterator[dict]:
        """`service.iter_detect` with confined paths and the full per-row results written to a CSV.
        `trusted`: a file the server wrote itself (an upload), exempt from the data roots. `row_features`:
        anomalous rows in `results` name their strongest features (the MCP reply)."""
        spec = self._remote(DetectSpec, spec, params)
        if "max_results" in spec.model_fields_set and spec.max_results is None:
            spec = spec.model_copy(update={"max_results": defaults.MAX_RESULTS})  # null: the default cap
        if not 0 <= spec.max_results <= MAX_RESULTS_LIMIT:
            raise DataError(f"max_results must be between 0 and {MAX_RESULTS_LIMIT}, got {spec.max_results}")
        data_file = Path(file_path) if trusted else self.policy.data_file(file_path)
        paths, label = self._locate(version, model_path, threshold_path, scaler_path, config_path)
        output = self._new_result_path(data_file, label)
        spec = spec.model_copy(update={"output": str(output), "device": spec.device or self.device})
        events = service.iter_detect(str(data_file), spec, paths=paths, block_bytes=block_bytes,
                                     anomaly_events=anomaly_events, row_features=row_features)
        for event in events:
            if event["event"] == "summary":
                event["version"] = label  # the version name, not its folder
                event = fit_reply(event)
                self._prune_results()
            yield event

    def run_detection(self, file_path: str, spec: DetectSpec | None = None, *,
                      progress: Callable[[dict], None] | None = None, **params: Any) -> dict:
        """`detect_events` to its summary; `params`: artifact paths, `version`, `trusted` and `DetectSpec` fields."""
        return service.summary_of(self.detect_events(file_path, spec, anomaly_events=False, **params), progress)

    def _remote(self, spec_cls: type[Spec], spec: Spec | None, params: dict) -> Spec:
        """The spec of a call from a client: the fields offered remotely only (no output paths of its choosing)."""
        spec = parse(spec_cls, spec, **params)
        local = [name for name in spec.model_fields_set if name not in specs.fields(spec_cls, remote=True)]
        if local:
            raise DataError(f"{', '.join(sorted(local))} cannot be set here (the server chooses where files go)")
        return spec

    def _new_result_path(self, data_file: Path, label: str) -> Path:
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", data_file.name.split(".")[0])[:60] or "data"
        tag = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(label).name)[:40]
        self.ensure_results_dir()
        name = f"{stem}-{tag}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}.csv"
        try:  # recorded before it is written: a file the tool made is always in the record
            with self._ledger_lock, open(self.results_dir / LEDGER, "a") as f:
                f.write(name + "\n")
        except OSError as exc:
            raise AnomalyError(f"cannot write to the results folder {self.results_dir}: {exc.strerror or exc}") from None
        return (self.results_dir / name).resolve()

    def ensure_results_dir(self) -> None:
        """Create the results folder, or say in one line why it cannot be (a file in the way, no permission)."""
        try:
            self.results_dir.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            raise AnomalyError(f"results folder {self.results_dir} is a file, not a folder; set "
                               "ANOMALY_RESULTS_DIR or --results-dir to another") from None
        except OSError as exc:
            raise AnomalyError(f"cannot create results folder {self.results_dir}: {exc.strerror or exc}; set "
                               "ANOMALY_RESULTS_DIR or --results-dir to another") from None

    def _prune_results(self) -> None:
        self._written += 1
        if self._written % 16:  # reading the record costs a stat per file: only now and then
            return
        with self._ledger_lock:
            try:
                ledger = self.results_dir / LEDGER
                names = dict.fromkeys(n for n in ledger.read_text().split("\n") if RESULT_NAME_RE.match(n))
                present = []
                for name in names:
                    try:
                        present.append((os.stat(self.results_dir / name).st_mtime, name))
                    except FileNotFoundError:
                        pass  # removed by hand, or a detection that failed before writing
                present.sort()
                old = present[:-self.keep_results] if len(present) > self.keep_results else []
                for _, name in old:
                    (self.results_dir / name).unlink(missing_ok=True)
                atomic_write_text(ledger, "".join(f"{n}\n" for _, n in present[len(old):]))
            except OSError:
                pass  # a concurrent prune by another process; the next one catches up

    # --- models --------------------------------------------------------------------------------------

    def get_model_info(self, model_path: str | None = None, threshold_path: str | None = None,
                       scaler_path: str | None = None, config_path: str | None = None,
                       version: str | None = None) -> dict:
        paths = self.explicit_paths(model_path, threshold_path, scaler_path, config_path)
        if paths is None:
            return service.model_info(version, self.store)
        return service.model_info(store=self.store, model_path=paths.model, config_path=paths.config,
                                  threshold_path=paths.threshold, scaler_path=paths.scaler)

    def list_models(self) -> dict:
        return service.list_models(self.store)

    def train_model(self, data_file: str, spec: TrainSpec | None = None, *, version: str | None = None,
                    model_path: str | None = None, threshold_path: str | None = None, scaler_path: str | None = None,
                    config_path: str | None = None, progress: Callable[[dict], None] | None = None,
                    **params: Any) -> dict:
        """Train a new version (never overwriting one, nor explicit artifact files that exist). Every
        parameter is checked (`TrainSpec`) before the data file is even looked at."""
        spec = self._remote(TrainSpec, spec, params)
        confined = self.policy.data_file(data_file)
        if spec.labels_file:
            spec = spec.model_copy(update={"labels_file": str(self.policy.data_file(spec.labels_file))})
        paths = self.explicit_paths(model_path, threshold_path, scaler_path, config_path)
        if paths is not None:
            self._check_new_version_folder(paths)
            existing = [str(p) for _, p in paths.items() if p.exists()]
            if existing:
                raise VersionExists(f"{', '.join(existing)} already exist(s); training never overwrites a model")
        spec = spec.model_copy(update={"device": spec.device or self.device})
        if paths is not None and paths == ArtifactPaths.in_folder(paths.model.parent) \
                and not paths.model.parent.exists():
            # a new version folder under the standard names: saved as a store version, written aside and renamed
            # into place whole (file by file, a kill would leave half a version)
            version, paths = paths.model.parent.name, None
        return service.train(str(confined), spec, version=version, store=self.store, paths=paths, progress=progress)

    def _check_new_version_folder(self, paths: ArtifactPaths) -> None:
        """Explicit training paths name files in one version folder directly inside the store: a client must not
        create hidden or nested folders there (`.hidden/`, `a/b/c/`) nor write into `latest`."""
        root = self.policy.model_root
        for _, p in paths.items():
            folder = p.parent
            if folder.parent != root or not VERSION_RE.match(folder.name) or folder.name == "latest":
                raise PathNotAllowed(f"{p} is not in a version folder directly inside the model store; "
                                     f"give e.g. {root / 'v1' / 'model.pth'} (version names: letters, digits, "
                                     "'_', '-', '.', not 'latest')")
            if folder.exists() and not folder.is_dir():
                raise PathNotAllowed(f"{folder} is a file, not a version folder")

    def live_scorer(self, version: str | None = None, threshold_window: int | None = None) -> service.LiveScorer:
        return service.LiveScorer(version, self.store, threshold_window=threshold_window, device=self.device)


def fit_reply(summary: dict, limit: int = RESULTS_BYTES) -> dict:
    """Cut per-row results further if they would make the reply too large for an MCP client."""
    rows = summary.get("results")
    if rows:
        size = len(json.dumps(rows))
        if size > limit:
            summary["results"] = rows[: max(0, int(len(rows) * limit / size) - 1)]
            summary["results_truncated"] = True
    return summary
