"""The versioned artifact store: never overwrite, `latest`, list/show/delete, concurrent and interrupted
trainings, corrupt versions."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time

import pytest
import torch

from anomaly import cli as anomaly_cli
from anomaly import service
from anomaly.errors import AnomalyError, ArtifactError, NotFound, VersionExists
from anomaly.store import FILES, ModelStore, atomic_write_text

from conftest import cli_command, cli_env, run_cli


def _write_fake(paths, marker: str = "x"):
    for _, p in paths.items():
        p.write_text(json.dumps({"marker": marker, "threshold": 1.0, "method": "percentile"}))


def test_save_publishes_complete_versions_and_latest(tmp_path):
    store = ModelStore(tmp_path / "models")
    a = store.save(_write_fake, version="a")
    b = store.save(_write_fake)  # default name: a timestamp
    assert a == "a" and b != "a" and len(b) >= 15 and b[:8].isdigit()
    assert sorted(p.name for p in (store.root / b).iterdir()) == sorted(FILES.values())
    assert (store.root / "latest").read_text().strip() == b
    assert store.latest() == b
    assert store.resolve(None) == b and store.resolve("latest") == b and store.resolve("a") == "a"
    assert [p.name for p in store.root.iterdir() if p.name.startswith(".")] == []


def test_versions_are_never_overwritten(tmp_path):
    store = ModelStore(tmp_path / "models")
    store.save(lambda p: _write_fake(p, "first"), version="v1")
    with pytest.raises(VersionExists, match="already exists"):
        store.save(lambda p: _write_fake(p, "second"), version="v1")
    assert json.loads((store.root / "v1" / FILES["config"]).read_text())["marker"] == "first"
    store.save(lambda p: _write_fake(p, "third"), version="v1", overwrite=True)
    assert json.loads((store.root / "v1" / FILES["config"]).read_text())["marker"] == "third"
    assert store.versions() == ["v1"]
    assert [p.name for p in store.root.iterdir() if p.name.startswith(".")] == []


def test_same_second_default_names_are_distinct(tmp_path):
    store = ModelStore(tmp_path / "models")
    names = [store.save(_write_fake) for _ in range(3)]
    assert len(set(names)) == 3
    assert store.latest() == names[-1]


@pytest.mark.parametrize("exc", [RuntimeError("disk full"), KeyboardInterrupt()])
def test_failed_write_leaves_no_version(tmp_path, exc):
    store = ModelStore(tmp_path / "models")
    store.save(_write_fake, version="good")

    def half_write(paths):
        paths.model.write_bytes(b"partial")
        raise exc

    with pytest.raises(type(exc)):
        store.save(half_write, version="bad")
    with pytest.raises(type(exc)):
        store.save(half_write)
    assert sorted(p.name for p in store.root.iterdir()) == ["good", "latest"]
    assert store.latest() == "good"
    assert [m["version"] for m in service.list_models(store)["models"]] == ["good"]


def test_leftover_temporary_folder_is_invisible(tmp_path):
    """A hard kill (SIGKILL, power loss) during a save leaves a hidden .tmp- folder: not a version."""
    store = ModelStore(tmp_path / "models")
    store.save(_write_fake, version="good")
    half = store.root / ".tmp-abc123"
    half.mkdir()
    (half / "model.pth").write_bytes(b"partial")
    assert store.versions() == ["good"]
    assert [m["version"] for m in store.list()] == ["good"]
    assert store.latest() == "good"


def test_delete_moves_latest_back(tmp_path):
    store = ModelStore(tmp_path / "models")
    store.save(_write_fake, version="old")
    time.sleep(0.01)
    store.save(_write_fake, version="new")
    assert store.latest() == "new"
    assert service.delete_model("latest", store) == {"status": "success", "deleted": "new", "latest": "old"}
    assert store.versions() == ["old"] and store.latest() == "old"
    service.delete_model("old", store)
    assert store.versions() == [] and store.latest() is None
    assert not (store.root / "latest").exists()
    with pytest.raises(NotFound, match="no trained model"):
        store.resolve(None)


@pytest.mark.parametrize("name", ["../escape", "a/b", "/abs", "latest", ".hidden", "x" * 101])
def test_invalid_version_names(tmp_path, name):
    store = ModelStore(tmp_path / "models")
    with pytest.raises(AnomalyError, match="invalid version name"):
        store.save(_write_fake, version=name)
    if name != "latest":
        with pytest.raises(AnomalyError, match="invalid version name"):
            store.resolve(name)
    assert [p.name for p in store.root.iterdir()] == []


def test_unknown_version_lists_available(tmp_path):
    store = ModelStore(tmp_path / "models")
    store.save(_write_fake, version="v1")
    with pytest.raises(NotFound, match=r"'v9' not found.*available: v1"):
        store.paths("v9")


def test_incomplete_or_garbage_versions(tmp_path):
    store = ModelStore(tmp_path / "models")
    store.save(_write_fake, version="v1")
    (store.root / "v1" / FILES["scaler"]).unlink()
    with pytest.raises(ArtifactError, match="missing scaler.pkl"):
        store.paths("v1")
    store.save(_write_fake, version="v2")
    (store.root / "v2" / FILES["config"]).write_text("{not json")
    info = {m["version"]: m for m in store.list()}
    assert info["v2"]["status"] == "broken" and "corrupt" in info["v2"]["error"]


def test_latest_marker_pointing_nowhere_falls_back(tmp_path):
    store = ModelStore(tmp_path / "models")
    store.save(_write_fake, version="v1")
    atomic_write_text(store.root / "latest", "gone\n")
    assert store.latest() == "v1"


# --- through the real service and CLI ----------------------------------------------------------------------


def test_train_refuses_existing_version_and_overwrite_replaces(dataset, tmp_path):
    store = ModelStore(tmp_path / "models")
    opts = dict(store=store, epochs=2, batch_size=128)
    first = service.train(str(dataset["train"]), version="v1", percentile=90, **opts)
    with pytest.raises(VersionExists):
        service.train(str(dataset["train"]), version="v1", percentile=99, **opts)
    assert service.model_info("v1", store)["threshold"] == first["threshold"]
    second = service.train(str(dataset["train"]), version="v1", percentile=99, overwrite=True, **opts)
    assert second["threshold"] > first["threshold"]
    assert service.model_info("v1", store)["threshold"] == second["threshold"]
    assert store.versions() == ["v1"]


def test_models_list_show_delete_cli(trained, copy_store, capsys):
    root = copy_store(trained)
    listed = run_cli("anomaly", "models", "list", "--model-dir", root, "--json")
    assert listed.returncode == 0, listed.stderr
    body = json.loads(listed.stdout)
    assert body["latest"] == "v1"
    assert [(m["version"], m["status"], m["latest"]) for m in body["models"]] == [("v1", "ok", True)]
    assert body["models"][0]["features"] == trained["result"]["features"]

    # show and delete through `anomaly.cli.main` in this process (list above ran as a real command)
    assert anomaly_cli.main(["models", "show", "v1", "--model-dir", str(root)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["version"] == "v1" and info["threshold"] == pytest.approx(trained["result"]["threshold"])
    assert info["n_features"] == 4 and info["window"] == 1 and info["scaler"] == "standard"
    assert info["data"]["fingerprint"].startswith("sha256:")
    assert set(info["library_versions"]) >= {"torch", "numpy", "pandas", "scikit-learn", "python"}

    assert anomaly_cli.main(["models", "delete", "v1", "--model-dir", str(root)]) == 0
    assert "deleted v1" in capsys.readouterr().out
    assert not (root / "v1").exists()
    assert ModelStore(root).versions() == []
    assert anomaly_cli.main(["models", "show", "v1", "--model-dir", str(root)]) == 2
    assert capsys.readouterr().err.startswith("error: model version 'v1' not found")


def test_two_trainings_started_at_the_same_moment(dataset, tmp_path):
    root = tmp_path / "models"
    args = ["--data", dataset["train_small"], "--model-dir", root, "--epochs", "2", "--quiet", "--json"]
    procs = [subprocess.Popen(cli_command("train.py", *args), env=cli_env(), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=240) for p in procs]
    for p, (_out, err) in zip(procs, outs):
        assert p.returncode == 0, err
    names = [json.loads(out)["version"] for out, _ in outs]
    assert names[0] != names[1]
    store = ModelStore(root)
    assert sorted(store.versions()) == sorted(names)
    assert store.latest() in names
    for name in names:  # both complete and loadable
        assert service.model_info(name, store)["n_features"] == 4
    # same seed and data in two processes: the same weights, bit for bit
    weights = [torch.load(root / name / "model.pth", weights_only=True) for name in names]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert [p.name for p in root.iterdir() if p.name.startswith(".")] == []


def test_ctrl_c_during_training_leaves_no_version(dataset, tmp_path):
    root = tmp_path / "models"
    proc = subprocess.Popen(cli_command("train.py", "--data", dataset["train"], "--model-dir", root,
                                        "--epochs", "100000", "--patience", "0", "--batch-size", "8"),
                            env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            # a test run started in the background inherits an ignored SIGINT: restore Ctrl-C
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    seen = bytearray()
    started = threading.Event()

    def watch():  # the progress bar shows the loss once an epoch has finished: training is under way
        while chunk := proc.stderr.read1(4096):
            seen.extend(chunk)
            if b"loss=" in seen:
                started.set()

    reader = threading.Thread(target=watch, daemon=True)
    reader.start()
    try:
        assert started.wait(180), seen.decode(errors="replace")
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    reader.join(10)
    text = seen.decode(errors="replace")
    assert proc.returncode == 130, text
    assert "Traceback" not in text
    assert "interrupted; nothing was saved" in text
    assert not root.exists() or [p.name for p in root.iterdir()] == []
    assert service.list_models(ModelStore(root))["models"] == []
