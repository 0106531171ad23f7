"""Issue 23, hardening II, the store and the fleet: every replacement leaves the old or the new model whatever the
kill point, corrupt artifacts are one line, names with control characters are refused, reruns are not stale,
and nothing of the user's is deleted. Kill points are simulated in a fresh process that exits (os._exit, as a
SIGKILL would: no clean-up runs) at the exact step."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import textwrap
import time
from pathlib import Path

import pytest

import mcp_tool
from anomaly import cli as anomaly_cli
from anomaly import fleet, service, synthetic
from anomaly.errors import AnomalyError
from anomaly.server.toolbox import RESULT_NAME_RE, Toolbox
from anomaly.store import FILES, ArtifactPaths, ModelStore

from conftest import PYTHON, assert_user_error, cli_env, run_cli


def dead_pid() -> int:
    """The id of a process that has exited (a killed writer's)."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def run_python(code: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, "-c", textwrap.dedent(code)], env=cli_env(), capture_output=True, text=True,
                          timeout=timeout)


def created(root: Path, version: str) -> str:
    return json.loads((root / version / "model_config.json").read_text())["created"]


# A replacement of version v1 in `root` whose config says created=NEW; `kill` is put in at one step.
REPLACE = """
import json, os, shutil, sys
from pathlib import Path
import anomaly.store as store
root = Path(sys.argv[1])
def write(paths):
    for kind, p in paths.items():
        shutil.copy(root / "v1" / p.name, p)
    config = json.loads(paths.config.read_text()); config["created"] = "NEW"
    paths.config.write_text(json.dumps(config))
{kill}
store.ModelStore(root).save(write, version="v1", overwrite=True)
"""


def test_overwrite_swaps_the_version_in_one_step(copy_store, trained):
    root = copy_store(trained)
    old = created(root, "v1")
    # killed right after the swap: the name holds the new version, the old one waits in a temporary folder
    kill = ("real = store.exchange\n"
            "def exchange(a, b):\n    assert real(a, b)\n    os._exit(9)\n"
            "store.exchange = exchange")
    proc = subprocess.run([PYTHON, "-c", REPLACE.format(kill=kill), str(root)], env=cli_env(), capture_output=True,
                          text=True)
    assert proc.returncode == 9, proc.stderr
    assert created(root, "v1") == "NEW"
    aside = [p for p in root.iterdir() if p.name.startswith(".tmp-")]
    assert len(aside) == 1 and json.loads((aside[0] / "model_config.json").read_text())["created"] == old
    ModelStore(root).save(lambda p: [shutil.copy(trained["dir"] / q.name, q) for _, q in p.items()], version="other")
    assert not [p for p in root.iterdir() if p.name.startswith(".")], "the dead writer's old copy stays"


@pytest.mark.parametrize("then", ["save", "resolve"])
def test_overwrite_killed_between_two_renames_keeps_the_old_version(copy_store, trained, then):
    """Where the two folders cannot be swapped in one step: a kill between the two renames leaves the old
    version parked; the next save or lookup puts it back (the old code deleted it)."""
    root = copy_store(trained)
    old = created(root, "v1")
    kill = ("store.exchange = lambda a, b: False\n"
            "calls = []\nreal = os.rename\n"
            "def rename(a, b):\n    calls.append(a)\n    if len(calls) == 2:\n        os._exit(9)\n    real(a, b)\n"
            "store.os.rename = rename")
    proc = subprocess.run([PYTHON, "-c", REPLACE.format(kill=kill), str(root)], env=cli_env(), capture_output=True,
                          text=True)
    assert proc.returncode == 9, proc.stderr
    assert not (root / "v1").exists()  # the kill point: between the two renames
    store = ModelStore(root)
    if then == "save":
        store.save(lambda p: [shutil.copy(trained["dir"] / q.name, q) for _, q in p.items()], version="other")
    else:
        store.paths("v1")
    assert created(root, "v1") == old
    assert ModelStore(root).info("v1")["status"] == "ok"


def test_explicit_files_killed_midway_are_refused_as_a_mixed_set(tmp_path, dataset):
    folder = tmp_path / "classic"
    args = dict(model_type="dense", window=1, epochs=1, seed=0)
    service.train(str(dataset["train_small"]), paths=ArtifactPaths.in_folder(folder), **args)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    # retrain with --overwrite, killed after the first file was replaced (weights new, the rest old)
    proc = run_python(f"""
        import os
        import anomaly.detector.core as d
        real, calls = d.atomic_write_bytes, []
        def write(path, data):
            real(path, data); calls.append(path)
            if len(calls) == 1:
                os._exit(9)
        d.atomic_write_bytes = write
        from anomaly import cli
        cli.main(["train", "--data", {str(dataset["train"])!r}, "--model", {str(folder / "model.pth")!r},
                  "--model-type", "dense", "--window", "1", "--epochs", "1", "--seed", "1", "--overwrite", "--quiet"])
    """)
    assert proc.returncode == 9, proc.stderr
    after = {p.name: p.read_bytes() for p in folder.iterdir() if not p.name.startswith(".")}
    assert after["model.pth"] != before["model.pth"] and after["model_config.json"] == before["model_config.json"]
    detect = run_cli("detect.py", "--data", dataset["test"], "--model", folder / "model.pth", "--json")
    assert_user_error(detect, "mixed set", "model.pth")


def test_explicit_files_are_not_overwritten_without_overwrite_and_leftovers_go(tmp_path, dataset):
    folder = tmp_path / "classic"
    args = dict(model_type="dense", window=1, epochs=1, seed=0)
    service.train(str(dataset["train_small"]), paths=ArtifactPaths.in_folder(folder), **args)
    before = (folder / "model.pth").read_bytes()
    leftover = folder / f".model_config.json.{dead_pid()}.k2j3x_9a"
    leftover.write_text("{")
    proc = run_cli("train.py", "--data", dataset["train_small"], "--model", folder / "model.pth", "--model-type",
                   "dense", "--window", "1", "--epochs", "1")
    assert_user_error(proc, "already exist", "--overwrite")
    assert (folder / "model.pth").read_bytes() == before
    service.train(str(dataset["train_small"]), paths=ArtifactPaths.in_folder(folder), overwrite=True,
                  **args | {"seed": 3})
    assert not leftover.exists()
    assert sorted(p.name for p in folder.iterdir()) == sorted(FILES.values())


def test_server_explicit_training_path_writes_a_whole_version(tmp_path, dataset, trained):
    root = tmp_path / "models"
    shutil.copytree(trained["root"], root)
    box = Toolbox(root, tmp_path / "results", [str(dataset["dir"])])
    result = box.train_model("train_small.csv", model_path=str(root / "v9" / "model.pth"), epochs=1, window=1,
                             model_type="dense")
    assert result["version"] == "v9"
    assert ModelStore(root).info("v9")["status"] == "ok"
    assert not [p for p in root.iterdir() if p.name.startswith(".tmp")]


# --- D6: corrupt artifacts ------------------------------------------------------------------------------------

TAMPERED = {
    "floor-text": ("model_config.json", lambda c: c | {"spike_floor": "x"}, "spike_floor"),
    "floor-empty": ("model_config.json", lambda c: c | {"spike_floor": []}, "spike_floor"),
    "floor-ragged": ("model_config.json", lambda c: c | {"spike_floor": [[1], [2, 3]]}, "spike_floor"),
    "floor-object": ("model_config.json", lambda c: c | {"spike_floor": {}}, "spike_floor"),
    "stats-text": ("threshold.json", lambda t: t | {"stats": "x"}, "stats"),
    "rate-text": ("threshold.json", lambda t: t | {"expected_rate": "x"}, "expected_rate"),
    "percentile-text": ("threshold.json", lambda t: t | {"params": {"percentile": "x"}}, "percentile"),
    "method-unknown": ("threshold.json", lambda t: t | {"method": "nope"}, "method"),
}


def tampered_store(trained, tmp_path: Path) -> Path:
    root = tmp_path / "models"
    shutil.copytree(trained["root"], root)
    for name, (file, change, _) in TAMPERED.items():
        shutil.copytree(root / "v1", root / name)
        path = root / name / file
        path.write_text(json.dumps(change(json.loads(path.read_text()))))
    shutil.copytree(root / "v1", root / "huge-int")
    config = root / "huge-int" / "model_config.json"
    config.write_text(config.read_text().replace('"window": 1', '"window": 1' + "0" * 5000, 1))
    (root / "latest").write_text("v1\n")
    return root


def test_tampered_artifacts_are_one_line_and_listing_shows_them_broken(tmp_path, dataset, trained, capsys):
    root = tampered_store(trained, tmp_path)
    fragments = {name: frag for name, (_, _, frag) in TAMPERED.items()} | {"huge-int": "corrupt artifact file"}
    for name, fragment in fragments.items():
        for extra in ([], ["--threshold-window", "100"]):
            code = anomaly_cli.main(["detect", "--data", str(dataset["test"]), "--model-dir", str(root), "--version",
                                     name, "--json", *extra])
            err = capsys.readouterr().err.strip().splitlines()
            assert code == 2 and len(err) == 1 and err[0].startswith("error: "), (name, err)
            assert fragment in err[0], (name, err[0])
    listed = run_cli("anomaly", "models", "list", "--model-dir", root, "--json")
    assert listed.returncode == 0 and "Traceback" not in listed.stderr, listed.stderr
    models = {m["version"]: m for m in json.loads(listed.stdout)["models"]}
    assert models["v1"]["status"] == "ok"
    assert all(models[name]["status"] == "broken" for name in fragments), models
    assert "4300" in models["huge-int"]["error"] or "digits" in models["huge-int"]["error"]


# --- D12: names with control characters ---------------------------------------------------------------------


def test_names_with_a_newline_are_refused_everywhere(tmp_path, dataset, trained, copy_store):
    root = copy_store(trained)
    proc = run_cli("train.py", "--data", dataset["train_small"], "--model-dir", root, "--version", "v2\n",
                   "--epochs", "1")
    assert_user_error(proc, "control character")
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == ["v1"]
    store = ModelStore(root)
    for name in ("latest\n", "v1\n", "v1\r", "v\x001"):
        with pytest.raises(AnomalyError, match="control character"):
            store.resolve(name)
    box = Toolbox(root, tmp_path / "results", [str(dataset["dir"])])
    with pytest.raises(AnomalyError, match="control character"):
        box.train_model("train_small.csv", version="latest\n", epochs=1)
    with pytest.raises(AnomalyError, match="version folder|control"):
        box.train_model("train_small.csv", model_path=str(root / "latest\n" / "model.pth"), epochs=1)


# --- D26: delete points latest at a version that loads -------------------------------------------------------


def test_delete_points_latest_at_a_version_that_loads(copy_store, trained):
    root = copy_store(trained)
    store = ModelStore(root)
    for name in ("good", "newest", "broken"):
        shutil.copytree(root / "v1", root / name)
    (root / "broken" / "threshold.json").unlink()  # incomplete, and the newest by time
    now = time.time()
    for i, name in enumerate(("v1", "good", "newest", "broken")):
        os.utime(root / name / "model_config.json", (now + i, now + i))
    store.delete("newest")
    assert store.latest() == "good"


# --- D24: mcp_tool returns error dicts, and a call's version wins ---------------------------------------------


def test_mcp_tool_call_arguments_override_the_tool_and_never_raise(tmp_path, dataset, trained, copy_store):
    root = copy_store(trained)
    shutil.copytree(root / "v1", root / "v2")
    tool = mcp_tool.MCPAnomalyDetectionTool(version="nope", model_dir=str(root), results_dir=str(tmp_path / "r"))
    result = tool.run_detection(str(dataset["test"]), version="v2", max_results=0)
    assert result["status"] == "success" and result["version"] == "v2", result
    result = tool.run_detection(str(dataset["test"]), model_path=str(root / "v1" / "model.pth"), max_results=0)
    assert result["status"] == "success", result
    assert tool.run_detection(str(dataset["test"]), threshold_path=123)["status"] == "error"


# --- D25: pruning only removes what the tool recorded writing ------------------------------------------------


def test_pruning_keeps_user_files_named_like_results(tmp_path, dataset, trained):
    folder = tmp_path / "shared"
    folder.mkdir()
    user = [folder / n for n in ("export-20260101-120000-a1b2c3.csv", "sensor-pump7-20251231-235959-000000.csv",
                                 "backup-data-20240101-000000-abcdef.csv")]
    for i, p in enumerate(user):
        p.write_text("a\n1\n")
        os.utime(p, (1_000_000 + i, 1_000_000 + i))
        assert RESULT_NAME_RE.match(p.name)
    shutil.copy(dataset["test"], folder / "test.csv")
    box = Toolbox(trained["root"], folder, keep_results=3)
    for _ in range(16):
        box.run_detection(str(folder / "test.csv"), max_results=0)
    assert all(p.exists() for p in user)
    ours = [p for p in folder.glob("test-*.csv")]
    assert len(ours) == 3


# --- D8, D16, D17: the fleet ----------------------------------------------------------------------------------


@pytest.fixture
def small_fleet(tmp_path):
    data = tmp_path / "d"
    data.mkdir()
    for i, name in enumerate(("hostA", "hostB")):
        synthetic.make_series(300, seed=i).to_csv(data / f"{name}.csv", index=False, float_format="%.4f")
    models = tmp_path / "fm"
    fleet.train(data, model_dir=models, jobs=1, model_type="dense", window=1, epochs=1, seed=0)
    return data, models


def test_fleet_rerun_after_a_retrain_or_new_options_scores_again(tmp_path, small_fleet):
    data, models = small_fleet
    out = tmp_path / "out"
    first = fleet.detect(data, model_dir=models, output_dir=out, jobs=1)
    assert first["ok"] == 2
    again = fleet.detect(data, model_dir=models, output_dir=out, jobs=1)
    assert again["skipped"] == 2  # nothing changed: reused
    service.train(str(data / "hostA.csv"), version="hostA", overwrite=True, store=ModelStore(models),
                  model_type="pca", window=1)
    retrained = {r["series"]: r["status"] for r in fleet.detect(data, model_dir=models, output_dir=out,
                                                                 jobs=1)["series"]}
    assert retrained == {"hostA": "ok", "hostB": "skipped"}
    options = fleet.detect(data, model_dir=models, output_dir=out, jobs=1, per_feature=True)
    assert options["ok"] == 2 and options["skipped"] == 0
    with pytest.raises(AnomalyError):
        fleet.detect(data, model_dir=models, output_dir=out, jobs=1, per_feature=True, device="\x00")


def test_fleet_leftovers_of_a_killed_run_are_removed(tmp_path, small_fleet):
    data, models = small_fleet
    long = tmp_path / "long.csv"
    frame = synthetic.make_series(200, seed=3)
    frame["host"] = ["a", "b"] * 100
    frame.to_csv(long, index=False, float_format="%.4f")
    split = models / f".fleet-split-{dead_pid()}-x1y2"
    split.mkdir()
    (split / "a.csv").write_text("copy of the user's data\n")
    out = tmp_path / "out"
    out.mkdir()
    partial = out / f".hostA.csv.{dead_pid()}.abc_12.tmp"
    partial.write_text("half")
    fleet.train(data_file=long, series_column="host", model_dir=models, jobs=1, model_type="dense", window=1,
                epochs=1)
    fleet.detect(data, model_dir=models, output_dir=out, jobs=1)
    assert not split.exists() and not partial.exists()


def test_fleet_workers_end_with_a_killed_parent(tmp_path):
    psutil = pytest.importorskip("psutil")
    data = tmp_path / "d"
    data.mkdir()
    for i in range(6):
        synthetic.make_series(3000, seed=i).to_csv(data / f"s{i}.csv", index=False, float_format="%.4f")
    models = tmp_path / "fm"
    proc = subprocess.Popen([PYTHON, "-m", "anomaly", "fleet", "train", "--data-dir", str(data), "--model-dir",
                              str(models), "--jobs", "2", "--model-type", "dense", "--window", "1", "--epochs", "200",
                             "--patience", "200"], env=cli_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    parent = psutil.Process(proc.pid)
    deadline = time.monotonic() + 120
    workers = []
    while time.monotonic() < deadline and len(workers) < 2:
        workers = [c for c in parent.children(recursive=True) if "loky" in " ".join(c.cmdline())
                   or "joblib" in " ".join(c.cmdline())]
        time.sleep(0.3)
    try:
        assert workers, "no fleet workers started"
        time.sleep(2)  # they are training now
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        gone, alive = psutil.wait_procs(workers, timeout=10)
        assert not alive, f"workers outlived the parent: {[p.pid for p in alive]}"
    finally:
        for p in workers:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        if proc.poll() is None:
            proc.kill()
