"""One spec per operation: every interface derives its parameters from `TrainSpec` / `DetectSpec` and refuses
the same things, before any training starts; the shared settings object; logging; the umask."""

from __future__ import annotations

import json
import logging
import os
import stat

import anyio
import pytest

import mcp_tool
from anomaly import cli as anomaly_cli
from anomaly import detector as detector_module
from anomaly import logs, service, specs
from anomaly.errors import DataError
from anomaly.server.settings import Settings
from anomaly.store import ModelStore


@pytest.fixture
def no_training(monkeypatch):
    """Any training that starts fails the test: refusals must come before it."""
    def fit(*args, **kwargs):
        raise AssertionError("training started")
    monkeypatch.setattr(detector_module.DetectorCore, "fit", fit)


def test_unknown_training_parameter_is_refused_before_any_training(dataset, tmp_path, no_training):
    with pytest.raises(DataError, match="unknown parameter 'epoch' .*did you mean 'epochs'"):
        service.train(str(dataset["train_small"]), store=ModelStore(tmp_path / "m"), epoch=5)
    with pytest.raises(DataError, match="unknown parameter 'windw'"):
        service.detect(str(dataset["test"]), store=ModelStore(tmp_path / "m"), windw=5)
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("params,fragment", [
    ({"percentile": 100}, "percentile must be less than 100"),
    ({"smooth": 0}, "smooth must be greater than or equal to 1"),
    ({"threshold_method": "magic"}, "threshold_method must be"),
    ({"epochs": "5"}, "epochs must be a valid integer"),
    ({"threshold_method": "best-f1"}, "needs labels"),  # known only once the file is read: still before training
])
def test_bad_values_are_refused_alike_on_every_interface(dataset, tmp_path, capsys, no_training, params, fragment):
    with pytest.raises(DataError, match=fragment):
        service.train(str(dataset["train_small"]), store=ModelStore(tmp_path / "m"), **params)
    result = mcp_tool.train_model(str(dataset["train_small"]), model_dir=str(tmp_path / "m"), **params)
    assert result["status"] == "error" and fragment in result["error"], result
    if "epochs" not in params:  # on the command line "5" is the number 5
        flags = [x for k, v in params.items() for x in (f"--{k.replace('_', '-')}", str(v))]
        code = anomaly_cli.main(["train", "--data", str(dataset["train_small"]), "--model-dir", str(tmp_path / "m"),
                                 "--quiet", *flags])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and err[0].startswith("error: ") and fragment in err[0], err


def test_the_cli_mcp_and_http_are_derived_from_the_specs():
    from anomaly.server import http_api

    parser = anomaly_cli.build_parser()
    train = parser._subparsers._group_actions[0].choices["train"]
    dests = {a.dest: a for a in train._actions}
    for name, info in specs.fields(specs.TrainSpec, cli=True).items():
        assert name in dests and dests[name].help == info.description, name
        assert dests[name].default == info.default, name
    remote = specs.fields(specs.TrainSpec, remote=True)
    assert set(remote) <= set(http_api.TrainRequest.model_fields) and "plot" not in http_api.TrainRequest.model_fields
    assert http_api.TrainRequest.model_fields["percentile"].metadata == specs.TrainSpec.model_fields["percentile"].metadata
    sig = mcp_tool.MCPAnomalyDetectionTool.train_model.__signature__.parameters
    assert sig["epochs"].default == specs.TrainSpec.model_fields["epochs"].default and "threshold_method" in sig
    assert "threshold_window" in mcp_tool.MCPAnomalyDetectionTool.run_detection.__signature__.parameters


def test_mcp_tool_schemas_come_from_the_specs_and_refuse_unknown_arguments(tmp_path):
    from anomaly.server.core import Runtime
    from anomaly.server.mcp_app import build_mcp

    mcp = build_mcp(Runtime(Settings(data_roots=[str(tmp_path)], model_dir=str(tmp_path / "m"))))
    tools = {t.name: t for t in anyio.run(mcp.list_tools)}
    train = tools["train_model"].input_schema
    assert train.get("additionalProperties") is False
    props = train["properties"]
    assert props["percentile"]["exclusiveMaximum"] == 100 and props["percentile"]["default"] == 95.0
    assert {"threshold_method", "device", "precision", "smooth", "window"} <= set(props) and "plot" not in props
    assert "dynamic" in json.dumps(props["threshold_method"])
    detect = tools["run_detection"].input_schema["properties"]
    assert {"time_column", "threshold_window", "device", "precision"} <= set(detect) and "output" not in detect


def test_settings_come_from_the_environment_and_flags_override(tmp_path, monkeypatch):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    monkeypatch.setenv("ANOMALY_MODEL_DIR", str(tmp_path / "store"))
    monkeypatch.setenv("ANOMALY_DATA_ROOTS", f"{a}{os.pathsep}{b}")
    monkeypatch.setenv("ANOMALY_API_TOKEN", "t0ken")
    s = Settings()
    assert s.model_dir == str(tmp_path / "store") and s.data_roots == [str(a), str(b)] and s.token == "t0ken"
    assert "t0ken" not in repr(s)
    args = anomaly_cli.build_parser().parse_args(["serve", "--model-dir", "other", "--port", "4000"])
    from anomaly.server.serve import FLAGS
    from anomaly.server.settings import from_args
    s = from_args(args, FLAGS)
    assert s.model_dir == "other" and s.port == 4000 and s.data_roots == [str(a), str(b)]
    monkeypatch.setenv("ANOMALY_DATA_ROOTS", str(tmp_path / "nope"))
    assert anomaly_cli.main(["mcp"]) == 2  # a bad setting is one error line, before any server starts


def test_one_log_line_per_call_and_tracebacks_for_failures(capsys):
    logs.configure("info", as_json=True)
    try:
        with logs.log_call("tool", "run_detection", file="x.csv") as line:
            line["rows"] = 12
        with pytest.raises(ZeroDivisionError), logs.log_call("tool", "train_model", file="y.csv"):
            raise ZeroDivisionError("boom")
    finally:
        logs.configure("warning", as_json=False)
    lines = [json.loads(x) for x in capsys.readouterr().err.strip().splitlines()]
    assert lines[0]["call"] == "run_detection" and lines[0]["file"] == "x.csv" and lines[0]["rows"] == 12
    assert lines[0]["outcome"] == "ok" and lines[0]["ms"] >= 0
    assert lines[1]["outcome"] == "error" and "ZeroDivisionError" in lines[1]["traceback"]
    assert logging.getLogger("anomaly").level == logging.WARNING


def test_versions_get_the_users_umask(trained, tmp_path):
    old = os.umask(0o002)
    try:
        store = ModelStore(tmp_path / "m")
        name = store.save(lambda p: [p.model.write_bytes(b"x"), p.config.write_text("{}"),
                                     p.threshold.write_text("{}"), p.scaler.write_bytes(b"x")], version="v")
        from anomaly.store import atomic_write_text
        atomic_write_text(tmp_path / "m" / "v" / "note.json", "{}")
    finally:
        os.umask(old)
    folder = tmp_path / "m" / name
    assert stat.S_IMODE(folder.stat().st_mode) == 0o775  # not mkdtemp's 0700: a colleague may read it
    assert stat.S_IMODE((folder / "note.json").stat().st_mode) == 0o664  # not mkstemp's 0600


def test_documented_client_configs_are_valid_json_and_name_the_installed_commands():
    import re

    from conftest import REPO

    text = (REPO / "docs" / "guides" / "mcp-clients.md").read_text()  # the MCP clients guide
    blocks = [json.loads(b) for b in re.findall(r"```json\n(.*?)```", text, re.S) if "mcpServers" in b or '"servers"' in b]
    servers = [s for b in blocks for s in (b.get("mcpServers") or b.get("servers")).values()]
    commands = {s.get("command", "").rsplit("/", 1)[-1] for s in servers}
    assert {"anomaly-mcp", "uvx", "npx"} <= commands
    assert any("${AUTH_HEADER}" in " ".join(s.get("args", [])) and "AUTH_HEADER" in s.get("env", {}) for s in servers)
    assert all(set(s.get("env", {})) <= {"ANOMALY_MODEL_DIR", "ANOMALY_DATA_ROOTS", "ANOMALY_RESULTS_DIR", "AUTH_HEADER"}
               for s in servers)
