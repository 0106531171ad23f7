"""The dashboard (`/`) and the offline API docs (`/docs`) in a real browser: the real server.py with a token,
driven through Selenium by Debian's headless Chromium (`chromium`, `chromium-driver`; `.ci/run` installs them).
The page must log in with the token, run a detection on a small file with one injected anomaly and show it in
the chart and the segments table, draw a training's loss curve live, and chart live points as they arrive."""

from __future__ import annotations

import os
import shutil

import httpx
import pandas as pd
import pytest

from serverproc import ServerProcess, server_dirs

pytestmark = pytest.mark.browser

TOKEN = "dashboard-test-token"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
SPIKE_ROWS = range(150, 155)  # the injected anomaly: five rows of sensor_2 pushed far off
WAIT_S = 90

if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
    pytest.skip(f"needs Chromium and chromedriver ({CHROMIUM}, {CHROMEDRIVER} missing; on Debian: "
                "apt-get install chromium chromium-driver, as .ci/run does)", allow_module_level=True)
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is in the dev extra: pip install -r requirements.txt")
from selenium.common.exceptions import StaleElementReferenceException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as EC  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402


@pytest.fixture(scope="module")
def server(tmp_path_factory, dataset, trained):
    tmp = tmp_path_factory.mktemp("dashboard_server")
    data_root, model_dir = server_dirs(tmp, dataset, trained)
    frame = pd.read_csv(dataset["train"]).iloc[:300].copy()  # normal rows, with a timestamp column
    frame.loc[list(SPIKE_ROWS), "sensor_2"] += 9.0
    frame.to_csv(data_root / "spike.csv", index=False)
    srv = ServerProcess(tmp, data_root, model_dir, "--sse-ping", "1", token=TOKEN)
    srv.spike_times = frame["timestamp"].tolist()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def browser():
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1400,1800", "--no-first-run", "--disable-extensions"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = webdriver.ChromeService(executable_path=CHROMEDRIVER)
    driver = webdriver.Chrome(service=service, options=opts)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def wait(driver, condition, what: str, timeout: float = WAIT_S):
    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.2,  # the page redraws: elements go stale
                             ignored_exceptions=(StaleElementReferenceException,)).until(condition)
    except Exception:
        logs = "\n".join(str(e) for e in driver.get_log("browser"))
        message = driver.find_element(By.ID, "message").text if driver.find_elements(By.ID, "message") else ""
        pytest.fail(f"timed out waiting for {what}; page message: {message!r}\nbrowser console:\n{logs}")


def options(driver, select_id: str) -> list[str]:
    return driver.execute_script(f"return [...document.querySelectorAll('#{select_id} option')].map(o => o.value)")


def logged_in(driver, server) -> None:
    """Open the dashboard and log in with the token (kept in the tab's sessionStorage)."""
    driver.get(server.url + "/")
    wait(driver, lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1", "the page script")
    if driver.execute_script("return sessionStorage.getItem('anomaly-token')") != TOKEN:
        box = driver.find_element(By.ID, "token")
        box.clear()
        box.send_keys(TOKEN)
        driver.find_element(By.CSS_SELECTOR, "#login button[type=submit]").click()
    wait(driver, lambda d: "spike.csv" in options(d, "data-file"), "the data files")
    wait(driver, lambda d: "v1" in options(d, "model-version"), "the model versions")


def test_page_needs_the_token_for_data_and_keeps_it_in_the_session(browser, server):
    browser.get(server.url + "/")
    browser.execute_script("sessionStorage.clear()")
    browser.get(server.url + "/")
    wait(browser, EC.visibility_of_element_located((By.ID, "message")), "the login message")
    assert "token" in browser.find_element(By.ID, "message").text
    assert httpx.get(server.url + "/api/data", timeout=10).status_code == 401  # the API itself stays closed
    logged_in(browser, server)
    assert browser.execute_script("return sessionStorage.getItem('anomaly-token')") == TOKEN
    assert "token set" in browser.find_element(By.ID, "server-status").text
    wait(browser, lambda d: "v1" in options(d, "model-version"), "the model versions")


def test_detection_shows_the_injected_anomaly_in_chart_and_table(browser, server):
    logged_in(browser, server)
    Select(browser.find_element(By.ID, "data-file")).select_by_value("spike.csv")
    Select(browser.find_element(By.ID, "model-version")).select_by_value("v1")
    browser.find_element(By.ID, "run-detect").click()
    rows = wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#segments-table tbody tr"), "the segments table")

    # the chart: the series and the score are drawn, with a highlighted segment over the injected rows
    for chart in ("series-chart", "score-chart"):
        bands = browser.find_elements(By.CSS_SELECTOR, f"#{chart} rect.segment")
        over = [b for b in bands if int(b.get_attribute("data-first")) <= SPIKE_ROWS[-1]
                and int(b.get_attribute("data-last")) >= SPIKE_ROWS[0]]
        assert over, f"no highlighted segment over rows {SPIKE_ROWS} in #{chart}"
        assert float(over[0].get_attribute("width")) > 0
    names = [p.get_attribute("data-name") for p in browser.find_elements(By.CSS_SELECTOR, "#series-chart path.series")]
    assert names == ["sensor_0", "sensor_1", "sensor_2", "sensor_3"]
    assert browser.find_elements(By.CSS_SELECTOR, "#score-chart .threshold")
    flagged = {int(c.get_attribute("data-index")) for c in browser.find_elements(By.CSS_SELECTOR, "#score-chart circle.flag")}
    assert set(SPIKE_ROWS) <= flagged

    # the table: the segment holding the injected rows, with its times and sensor_2 as the driving feature
    hit = [r for r in rows if int(r.get_attribute("data-first-row")) <= SPIKE_ROWS[0]
           and int(r.get_attribute("data-last-row")) >= SPIKE_ROWS[-1]]
    assert len(hit) == 1, [r.text for r in rows]
    cells = [c.text for c in hit[0].find_elements(By.TAG_NAME, "td")]
    first, last = int(cells[1]), int(cells[2])
    assert cells[3] == server.spike_times[first] and cells[4] == server.spike_times[last]
    assert int(cells[6]) in SPIKE_ROWS
    # the driving feature in the data's units: its value and the range training expected
    assert cells[10].startswith("sensor_2 ") and ", expected " in cells[10]
    peak, threshold, severity = float(cells[7]), float(cells[8]), int(cells[9])
    assert peak > threshold and 0 <= severity <= 100
    assert all(peak >= float(r.find_elements(By.TAG_NAME, "td")[7].text) for r in rows)  # the strongest incident
    assert "spike.csv" in browser.find_element(By.ID, "detect-summary").text


def test_uploaded_file_is_detected_too(browser, server):
    logged_in(browser, server)
    browser.execute_script("document.querySelector('#segments-table tbody').replaceChildren()")
    browser.find_element(By.ID, "upload").send_keys(str(server.data_root / "spike.csv"))
    assert browser.find_element(By.ID, "data-file").get_attribute("value") == ""  # the upload replaces the choice
    browser.find_element(By.ID, "run-detect").click()
    rows = wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#segments-table tbody tr"), "the segments table")
    assert any(int(r.get_attribute("data-first-row")) <= SPIKE_ROWS[0] <= int(r.get_attribute("data-last-row"))
               for r in rows)
    assert browser.find_elements(By.CSS_SELECTOR, "#score-chart rect.segment")
    assert not list((server.workdir / "results" / ".uploads").glob("*")), "upload left behind"


def test_training_loss_curve_updates_as_epochs_arrive(browser, server):
    logged_in(browser, server)
    Select(browser.find_element(By.ID, "train-file")).select_by_value("train.csv")
    epochs = browser.find_element(By.ID, "epochs")
    epochs.clear()
    epochs.send_keys("3")
    browser.find_element(By.ID, "train-version").send_keys("web-1")
    browser.find_element(By.ID, "run-train").click()
    wait(browser, lambda d: d.find_element(By.ID, "loss-chart").get_attribute("data-epochs") == "3", "three epochs")
    wait(browser, lambda d: "saved web-1" in d.find_element(By.ID, "train-progress").text, "the training result")
    path = browser.find_element(By.CSS_SELECTOR, "#loss-chart path.series[data-name=loss]").get_attribute("d")
    assert path.count("L") == 2  # three points: a move and two lines
    wait(browser, lambda d: "web-1" in options(d, "model-version"), "the new version")


def test_live_chart_shows_points_and_flags_as_they_arrive(browser, server, dataset):
    logged_in(browser, server)
    channel = browser.find_element(By.ID, "live-channel")
    channel.clear()
    channel.send_keys("web-live")
    browser.find_element(By.ID, "live-watch").click()
    wait(browser, lambda d: d.find_element(By.ID, "live-chart").get_attribute("data-subscribed") == "1", "subscribed")
    X = pd.read_csv(dataset["train"])[dataset["features"]].to_numpy()[:40].copy()
    X[30, 1] += 9.0  # one far-off point
    with httpx.Client(base_url=server.url, headers=server.headers, timeout=60) as http:
        for start in (0, 20):
            r = http.post("/api/live/web-live", json={"points": X[start:start + 20].tolist(), "version": "v1"})
            assert r.status_code == 200, r.text
    wait(browser, lambda d: d.find_element(By.ID, "live-chart").get_attribute("data-points") == "40", "40 live points")
    flagged = wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#live-table tbody tr[data-index='30']"),
                   "the flagged point in the live table")
    assert "sensor_1" in flagged[0].text
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#live-chart circle.flag[data-index='30']"),
         "the flagged point in the live chart")
    browser.find_element(By.ID, "live-stop").click()
    wait(browser, lambda d: d.find_element(By.ID, "live-status").text == "stopped", "the stream to stop")


def test_docs_render_offline_with_the_sessions_token(browser, server):
    logged_in(browser, server)
    browser.get(server.url + "/docs")
    ops = wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, ".opblock"), "Swagger UI operations")
    paths = {o.get_attribute("textContent") for o in browser.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")}
    assert {"/api/detect", "/api/live/{channel}/events", "/api/data"} <= {p.replace("\u200b", "") for p in paths}
    assert len(ops) >= 10
    sources = browser.execute_script(
        "return [...document.scripts].map(s => s.src).concat([...document.querySelectorAll('link')].map(l => l.href))")
    assert all(s.startswith(server.url) for s in sources if s), sources  # nothing from a CDN
