"""The package as a new user gets it: `pip install .` into a fresh venv (no Makefile), then the installed
`anomaly` command, `import mcp_tool`, and an MCP session over stdio with the SDK's own client launching
`anomaly-mcp` configured only through `env`, as Claude Desktop does.

pip uses this machine's configuration (its wheel cache and local index, which serve torch as the CPU build),
exactly as `make install` does; the plain install (no extras) must be enough for all of this.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import venv

import anyio
import pytest

from conftest import REPO

pytestmark = pytest.mark.slow

SOURCES = ["pyproject.toml", "README.md", "mcp_tool.py", "anomaly"]  # what a source distribution holds


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("install")
    src = tmp / "src"  # a copy: building in the checkout would leave build/ and *.egg-info behind
    src.mkdir()
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(REPO / name, src / name)
    env_dir = tmp / "venv"
    venv.create(env_dir, with_pip=True)
    bin_dir = env_dir / ("Scripts" if os.name == "nt" else "bin")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    proc = subprocess.run([str(bin_dir / "python"), "-m", "pip", "install", "--quiet", "--no-compile", str(src)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return {"bin": bin_dir, "env": env, "tmp": tmp}


def run(installed, *args, cwd=None, timeout=240) -> subprocess.CompletedProcess:
    env = installed["env"] | {"OMP_NUM_THREADS": "1"}
    return subprocess.run([str(a) for a in args], cwd=cwd or installed["tmp"], env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_the_install_brings_its_dependencies_and_no_cuda(installed):
    pip = run(installed, installed["bin"] / "python", "-m", "pip", "list", "--format", "json")
    names = {p["name"].lower(): p["version"] for p in json.loads(pip.stdout)}
    assert names["torch"].startswith("2.13.0") and {"numpy", "pandas", "scikit-learn", "mcp"} <= set(names)
    assert not [n for n in names if n.startswith("nvidia")], "a CUDA build was installed"
    # the dashboard and the offline docs ship inside the package (package-data), not only in the checkout
    code = ("import pathlib, anomaly.server as s; d = pathlib.Path(s.__file__).parent / 'static'; "
            "print(sorted(str(p.relative_to(d)) for p in d.rglob('*') if p.is_file()))")
    shipped = run(installed, installed["bin"] / "python", "-c", code)
    assert shipped.returncode == 0, shipped.stderr
    for name in ("index.html", "app.js", "chart.js", "api.js", "docs.html", "swagger/swagger-ui-bundle.js",
                 "swagger/swagger-ui.css", "swagger/LICENSE"):
        assert f"'{name}'" in shipped.stdout, (name, shipped.stdout)


def test_installed_cli_trains_and_detects(installed, dataset):
    anomaly = installed["bin"] / "anomaly"
    assert run(installed, anomaly, "--version").stdout.strip().startswith("anomaly ")
    train = run(installed, anomaly, "train", "--data", dataset["train_small"], "--model-dir", "m", "--window", "1",
                "--epochs", "2", "--version", "v1", "--quiet", "--json")
    assert train.returncode == 0, train.stderr
    assert json.loads(train.stdout)["version"] == "v1"
    detect = run(installed, anomaly, "detect", "--data", dataset["test"], "--model-dir", "m", "--json",
                 "--max-results", "0")
    assert detect.returncode == 0, detect.stderr
    assert json.loads(detect.stdout)["total_rows"] == len(dataset["test_frame"])
    serve = run(installed, anomaly, "serve", "--help")
    assert serve.returncode == 0 and "--data-root" in serve.stdout and "ANOMALY_MODEL_DIR" in serve.stdout
    for name in ("models", "evaluate", "threshold", "mcp"):
        assert run(installed, anomaly, name, "--help").returncode == 0, name
    tool = run(installed, installed["bin"] / "python", "-c",
               "import mcp_tool, json; print(json.dumps(mcp_tool.list_models(model_dir='m')))")
    assert tool.returncode == 0, tool.stderr
    assert [m["version"] for m in json.loads(tool.stdout)["models"]] == ["v1"]


def test_anomaly_mcp_over_stdio_configured_by_env_only(installed, dataset, tmp_path):
    from mcp.client.session import ClientSession
    from mcp.client.stdio import StdioServerParameters, stdio_client

    data_root = tmp_path / "data"
    data_root.mkdir()
    shutil.copy(dataset["train_small"], data_root / "train.csv")
    shutil.copy(dataset["test"], data_root / "test.csv")
    settings = {"ANOMALY_MODEL_DIR": str(tmp_path / "models"), "ANOMALY_DATA_ROOTS": str(data_root),
                "ANOMALY_RESULTS_DIR": str(tmp_path / "results"), "OMP_NUM_THREADS": "1"}
    # cwd: somewhere else, as a desktop client starts it (the settings alone say where things are)
    params = StdioServerParameters(command=str(installed["bin"] / "anomaly-mcp"), env=settings, cwd=str(tmp_path))

    async def session() -> dict:
        with open(tmp_path / "stderr.log", "w") as errlog:
            async with stdio_client(params, errlog=errlog) as (read, write), ClientSession(read, write) as client:
                await client.initialize()
                tools = {t.name: t for t in (await client.list_tools()).tools}
                trained = await client.call_tool("train_model", {"data_file": "train.csv", "version": "v1",
                                                                 "window": 1, "epochs": 2})
                detected = await client.call_tool("run_detection", {"file_path": "test.csv", "max_results": 0})
                refused = await client.call_tool("train_model", {"data_file": "train.csv", "epoch": 5})
                return {"tools": tools, "trained": trained, "detected": detected, "refused": refused}

    out = anyio.run(session)
    assert set(out["tools"]) == {"run_detection", "get_model_info", "train_model", "list_models", "run_fleet_detection"}
    assert not out["trained"].is_error, out["trained"].content
    assert out["trained"].structured_content["version"] == "v1"
    assert (tmp_path / "models" / "v1" / "model.pth").is_file()
    assert not out["detected"].is_error, out["detected"].content
    detected = json.loads(out["detected"].content[0].text)  # one JSON text, no structured copy
    assert out["detected"].structured_content is None
    assert detected["total_rows"] == len(dataset["test_frame"])
    assert detected["output"].startswith(str(tmp_path / "results"))
    assert out["refused"].is_error and "epoch" in out["refused"].content[0].text
    assert not (tmp_path / "models" / "train.csv").exists()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
