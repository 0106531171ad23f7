"""The documentation: every command in the README runs (here, on a small generated data set, or in the test
named for it), the demo's steps run, the site builds offline with `mkdocs build --strict`, its CLI reference
holds every option of `anomaly train --help`, a browser shows the built pages, and the example notebook runs."""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, cli_env

README = REPO / "README.md"
EXAMPLES = REPO / "examples"

# README commands that need more than a temporary folder (an install, a server, the make targets): each names
# the test that runs it, and the test below checks that the test still exists.
COVERED = {
    "pip install .": "tests/test_install.py::test_installed_cli_trains_and_detects",
    "pip install '.[server]'": "tests/test_install.py::test_the_install_brings_its_dependencies_and_no_cuda",
    "make demo": "tests/test_docs.py::test_the_demo_steps_run",
    "make test": "tests/test_docs.py::test_make_test_lists_skip_reasons",
    "make docs": "tests/test_docs.py::test_site_builds_strict_with_generated_reference",
    "anomaly serve": "tests/test_http_api.py::test_health_models_and_docs",
    "curl http://127.0.0.1:3001/health": "tests/test_http_api.py::test_health_models_and_docs",
    "curl -X POST http://127.0.0.1:3001/api/detect": "tests/test_http_api.py::test_detect_by_path_and_by_upload_agree",
    "curl -N http://127.0.0.1:3001/api/detect/stream":
        "tests/test_http_api.py::test_detection_stream_pushes_progress_anomalies_and_summary",
}


def fenced_blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", text, flags=re.S | re.M)


def readme_commands() -> list[str]:
    """Each command line of the README's bash blocks, without its trailing comment."""
    commands = []
    for block in fenced_blocks(README.read_text(encoding="utf-8"), "bash"):
        for line in block.splitlines():
            words = shlex.split(line, comments=True)
            if words:
                commands.append(shlex.join(words))
    return commands


def covering_test(command: str) -> str | None:
    words = shlex.split(command)
    for prefix, test in COVERED.items():
        want = shlex.split(prefix)
        if words[:len(want)] == want or (words[0] == "curl" and prefix.startswith("curl") and
                                         words[:2] == want[:2] and any(w.startswith(want[-1]) for w in words)):
            return test
    return None


def cli_argv(command: str) -> list[str] | None:
    """The `anomaly.cli.main` arguments of a runnable command, or None."""
    words = shlex.split(command)
    if words[:2] == ["python", "train.py"]:
        return ["train", *words[2:]]
    if words[:2] == ["python", "detect.py"]:
        return ["detect", *words[2:]]
    if words[0] == "anomaly" and words[1:2] not in (["serve"], ["mcp"]):
        return words[1:]
    return None


def write_data(folder: Path) -> None:
    from anomaly import synthetic

    synthetic.make_series(1500, seed=0).to_csv(folder / "normal.csv", index=False, float_format="%.5f")
    new = synthetic.inject_incidents(synthetic.make_series(1000, seed=2, start="2026-02-01"))
    new.to_csv(folder / "new.csv", index=False, float_format="%.5f")


def run_cli(argv: list[str]) -> tuple[int, str]:
    from anomaly import cli

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.main(argv)
        except SystemExit as exc:  # --help, --version
            code = exc.code or 0
    return code, out.getvalue() + err.getvalue()


def test_readme_is_short_and_keeps_the_test_command():
    text = README.read_text(encoding="utf-8")
    assert len(text.encode()) < 10 * 1024
    assert "make test" in text
    assert "python train.py --data normal.csv" in text
    assert "python detect.py --data new.csv --output results.csv" in text


def test_readme_links_point_to_files_and_benchmarks_md_is_gone():
    text = README.read_text(encoding="utf-8")
    links = [link.split("#")[0] for link in re.findall(r"\]\(([^)]+)\)", text) if "://" not in link]
    assert links and all((REPO / link).exists() for link in links), [x for x in links if not (REPO / x).exists()]
    assert not (REPO / "BENCHMARKS.md").exists()  # replaced by docs/benchmarks.md and docs/decisions/
    for page in [README, REPO / "CHANGELOG.md", *(REPO / "docs").rglob("*.md")]:
        assert "](BENCHMARKS.md" not in page.read_text(encoding="utf-8").replace("../", ""), page


def test_every_readme_command_runs_or_names_its_test(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_data(tmp_path)
    commands = readme_commands()
    assert len(commands) >= 10
    ran, unknown = [], []
    for command in commands:
        argv = cli_argv(command)
        if argv is not None:
            code, output = run_cli(argv)
            assert code == 0, f"{command}\n{output}"
            ran.append(command)
        elif covering_test(command) is None:
            unknown.append(command)
    assert not unknown, f"README commands neither run here nor named in COVERED: {unknown}"
    assert {"python train.py --data normal.csv", "python detect.py --data new.csv --output results.csv"} <= set(ran)
    assert (tmp_path / "results.csv").exists() and (tmp_path / "models" / "v1-pot").is_dir()


def test_the_tests_that_cover_readme_commands_exist():
    for test in set(COVERED.values()):
        path, name = test.split("::")
        assert re.search(rf"^def {name}\(", (REPO / path).read_text(encoding="utf-8"), flags=re.M), test


def test_readme_python_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_data(tmp_path)
    blocks = fenced_blocks(README.read_text(encoding="utf-8"), "python")
    assert blocks
    with contextlib.redirect_stdout(io.StringIO()):
        from anomaly import service
        service.train("normal.csv", version="v1")  # the in-process tool detects with the latest version
        for block in blocks:
            namespace: dict = {}
            exec(compile(block, "README.md", "exec"), namespace)
    assert namespace["flags"].sum() > 0 and namespace["reply"]["status"] == "success"


def test_readme_mcp_config_is_json():
    import json

    for block in fenced_blocks(README.read_text(encoding="utf-8"), "json"):
        assert "mcpServers" in json.loads(block)


def test_the_demo_steps_run(tmp_path, monkeypatch):
    """`make demo`'s recipe, step by step, in a temporary folder instead of examples/."""
    monkeypatch.chdir(tmp_path)
    recipe = re.search(r"^demo:.*\n((?:\t.*\n)+)", (REPO / "Makefile").read_text(encoding="utf-8"), re.M).group(1)
    steps = [shlex.split(line.strip().replace("$(PY)", "python")) for line in recipe.splitlines()]
    assert [s[:2] for s in steps] == [["python", "-m"], ["python", "train.py"], ["python", "detect.py"]]
    from anomaly import synthetic

    assert steps[0][2] == "anomaly.synthetic"
    synthetic.write_example(steps[0][3], n_train=1500, n_test=1000)
    for step in steps[1:]:
        code, output = run_cli(cli_argv(shlex.join(step)))
        assert code == 0, output
    assert (tmp_path / "examples" / "results.csv").exists()


def test_make_test_lists_skip_reasons():
    recipe = re.search(r"^test:.*\n((?:\t.*\n)+)", (REPO / "Makefile").read_text(encoding="utf-8"), re.M).group(1)
    assert "pytest" in recipe and "-rs" in recipe.split()


# --- the site --------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    env = cli_env() | {"NO_MKDOCS_2_WARNING": "1"}
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "WARNING" not in proc.stderr, proc.stderr
    return out


def train_help_options() -> set[str]:
    from anomaly import cli

    help_text = cli.build_parser()._subparsers._group_actions[0].choices["train"].format_help()
    return set(re.findall(r"(?<![\w-])(--?[A-Za-z][\w-]*)", help_text))


def test_site_builds_strict_with_generated_reference(site):
    assert (site / "index.html").exists()
    cli_page = site / "reference" / "cli.html"
    assert cli_page.exists() and (site / "reference" / "mcp-tools.html").exists()
    assert (site / "reference" / "python-api.html").exists() and (site / "benchmarks.html").exists()
    import html

    page = cli_page.read_text(encoding="utf-8")
    section = page[page.index('id="anomaly-train"'):page.index('id="anomaly-detect"')]  # the train section
    train = html.unescape(re.sub(r"<[^>]+>", "", section))
    # the option tables alone (not the --help text shown above them) must hold every option
    tables = html.unescape(re.sub(r"<[^>]+>", " ", "".join(re.findall(r"<table>.*?</table>", section, re.S))))
    options = train_help_options()
    assert {"--data", "--model-type", "--window", "--epochs", "--threshold-method", "--device"} <= options
    missing = {o for o in options if not re.search(rf"(?<![\w-]){re.escape(o)}(?![\w-])", tables)}
    assert "usage: anomaly train" in train
    assert not missing, f"options of `anomaly train --help` missing from the CLI reference: {sorted(missing)}"
    mcp = (site / "reference" / "mcp-tools.html").read_text(encoding="utf-8")
    assert all(t in mcp for t in ("run_detection", "train_model", "list_models", "get_model_info", "percentile"))


def test_site_needs_no_network(site):
    """Nothing the pages load comes from another host (fonts off, no CDN)."""
    for page in site.rglob("*.html"):
        text = page.read_text(encoding="utf-8")
        remote = re.findall(r'<(?:script|link|img)[^>]+(?:src|href)="(https?://[^"]+)"', text)
        assert not [u for u in remote if not u.startswith("http://127.0.0.1")], (page, remote)


CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


@pytest.mark.browser
def test_browser_shows_the_index_and_the_cli_reference(site):
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.skip(f"needs Chromium and chromedriver ({CHROMIUM}, {CHROMEDRIVER} missing; on Debian: "
                    "apt-get install chromium chromium-driver, as .ci/run does)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is in the dev extra")
    from selenium.webdriver.common.by import By

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1400,1800", "--no-first-run", "--disable-extensions", "--allow-file-access-from-files"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=CHROMEDRIVER), options=opts)
    try:
        driver.set_page_load_timeout(60)
        driver.get((site / "index.html").as_uri())
        heading = driver.find_element(By.CSS_SELECTOR, "article h1")
        assert heading.is_displayed() and "anomaly" in heading.text.lower()
        driver.get((site / "reference" / "cli.html").as_uri())
        assert driver.find_element(By.CSS_SELECTOR, "article h1").text.startswith("CLI reference")
        train = driver.find_element(By.ID, "anomaly-train")
        assert train.is_displayed()
        cells = [c for c in driver.find_elements(By.XPATH, "//td/code[text()='--model-type']") if c.is_displayed()]
        assert cells, "the --model-type option is not visible on the CLI reference page"
    finally:
        driver.quit()


# --- the example notebook ---------------------------------------------------------------------------------------

def test_quickstart_notebook_runs(tmp_path):
    nbformat = pytest.importorskip("nbformat", reason="nbformat is in the docs extra")
    nbclient = pytest.importorskip("nbclient", reason="nbclient is in the docs extra")
    pytest.importorskip("ipykernel", reason="ipykernel is in the docs extra")
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    notebook = nbformat.read(EXAMPLES / "quickstart.ipynb", as_version=4)
    work = tmp_path / "nb"
    work.mkdir()
    # the kernel of this interpreter (the venv's), whatever kernels the machine has installed
    try:
        KernelSpecManager().get_kernel_spec("python3")
    except NoSuchKernel:
        pytest.skip("no python3 Jupyter kernel (ipykernel installs one)")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = str(REPO) + (os.pathsep + old if old else "")
    try:
        client = nbclient.NotebookClient(notebook, timeout=120, kernel_name="python3",
                                         resources={"metadata": {"path": str(work)}})
        client.execute()
    finally:
        if old is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old
    outputs = "".join(o.get("text", "") + str(o.get("data", {}).get("text/plain", ""))
                      for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", []))
    assert "incidents" in outputs
    assert (work / "results.csv").exists()
