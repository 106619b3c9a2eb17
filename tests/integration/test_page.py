"""The live page in a real headless Chromium, against a real daemon fed by real trainer
processes: the tuning job listed, one curve per job, the stopped jobs marked where the daemon
stopped them, the tooltip of a hovered point (job, epoch, value, median as the API gives them), a
new job appearing without a reload, the table equal to `status --json`.

Screenshots go to the test's tmp dir, and to SIDECAR_SCREENSHOTS when set (`make screenshots`
regenerates the docs' copy)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import skip_or_fail
from tests.helpers import wait_for
from tests.integration.test_api import Daemon

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
TRAINER = (
    "import sys, time\n"
    "path, start, step = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])\n"
    "with open(path, 'a') as f:\n"
    "    for e in range(1, 7):\n"
    "        f.write(f'epoch {e} val_loss={start - step * e:.4f}\\n'); f.flush()\n"
    "        time.sleep(0.15)\n"
)
NONE = "\u2013"  # what the table shows for no value (an en dash)
SWEEP = {"a": (1.0, 0.08), "b": (0.9, 0.09), "c": (1.6, 0.01), "d": (2.0, 0.01)}


@pytest.fixture
def browser() -> Iterator[Any]:
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        skip_or_fail("selenium is not installed (make setup)")
    if not (Path(CHROMIUM).exists() and Path(DRIVER).exists()):
        skip_or_fail("chromium and chromium-driver are not installed (apt-get install -y ...)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,900"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    with Daemon(tmp_path, token=False).running() as d:
        yield d


def train(d: Daemon, job: str, start: float, step: float) -> subprocess.Popen[bytes]:
    log = d.logs / f"{job}.log"
    return subprocess.Popen([sys.executable, "-c", TRAINER, str(log), str(start), str(step)])


def status_jobs(d: Daemon) -> dict[str, dict[str, Any]]:
    out = subprocess.run(
        [sys.executable, "-m", "sidecar", "status", "-c", str(d.config), "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    (tj,) = json.loads(out.stdout)["tuning_jobs"]
    return {j["job"]: j for j in tj["jobs"]}


def page_state(driver: Any) -> dict[str, Any]:
    result: dict[str, Any] = driver.execute_script(
        """
        const s = window.sidecarState;
        if (!s || !s.doc || !s.chart) return {};
        const rows = [...document.querySelectorAll('#jobs tbody tr')].map(
          (r) => [...r.children].map((c) => c.textContent));
        const lastEpoch = s.doc.jobs.map((j, i) => {
          const ys = s.chart.data[i + 1]; let at = -1;
          ys.forEach((v, k) => { if (v !== null && v !== undefined) at = k; });
          return at < 0 ? null : s.chart.data[0][at];
        });
        return {tuningJobs: [...document.querySelectorAll('nav button')].map((b) => b.dataset.name),
                curves: s.curves, series: s.chart.series.length, jobs: s.doc.jobs.map((j) => j.job),
                rows, lastEpoch, connection: document.getElementById('connection').textContent};
        """
    )
    return result


def screenshot(driver: Any, tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    driver.save_screenshot(str(path))
    assert path.stat().st_size > 10_000  # a drawn page, not a blank one
    target = os.environ.get("SIDECAR_SCREENSHOTS")
    if target:
        shutil.copy(path, Path(target) / name)


def hover_shows_the_point(daemon: Daemon, browser: Any) -> None:
    """The mouse on a job's curve at an epoch: the tooltip names the job, the epoch, its value
    and the median the rule held it to there, as the API gives them."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    status, doc = daemon.request("GET", "/api/v1/tuning-jobs/api")
    assert status == 200
    metric = doc["objective"]["metric"]
    # a point the rule compared: the latest epoch of any job where it had a median
    points = [
        (e, j, dict(map(tuple, j["values"][metric]))[e], t)
        for j in doc["jobs"]
        for e, t in j["thresholds"]
        if t is not None and e in dict(map(tuple, j["values"][metric]))
    ]
    assert points, "the rule compared some job with a median"
    epoch, job, value, median = max(points, key=lambda p: p[0])
    x, y, width, height = browser.execute_script(
        """
        const u = window.sidecarState.chart, doc = window.sidecarState.doc;
        const i = doc.jobs.findIndex((j) => j.job === arguments[0]);
        const at = u.data[0].indexOf(arguments[1]);
        const r = u.over.getBoundingClientRect();
        return [u.valToPos(u.data[0][at], 'x'), u.valToPos(u.data[i + 1][at], 'y'),
                r.width, r.height];
        """,
        job["job"],
        epoch,
    )
    over = browser.find_element(By.CSS_SELECTOR, "#chart .u-over")

    def inside(at: float, size: float) -> int:  # from the element's centre, 2 px within its edges
        return round(min(max(at, 2), size - 2) - size / 2)

    dx, dy = inside(x, width), inside(y, height)
    expected = browser.execute_script(
        "return `${arguments[0]} · epoch ${arguments[1]} · value ${fmt(arguments[2])}"
        " · median ${fmt(arguments[3])}`;",
        job["job"],
        epoch,
        value,
        median,
    )

    def shown() -> str | None:
        # the focus follows the nearest curve once the cursor has moved onto it
        ActionChains(browser).move_to_element_with_offset(over, dx, dy + 1).perform()
        ActionChains(browser).move_to_element_with_offset(over, dx, dy).perform()
        tip = browser.find_element(By.ID, "tooltip")
        return str(tip.text) if tip.is_displayed() else None

    wait_for(lambda: shown() == expected, 20, describe=lambda: f"{shown()!r}, not {expected!r}")


def test_the_live_page_follows_a_running_sweep(
    daemon: Daemon, browser: Any, tmp_path: Path
) -> None:
    browser.get(f"http://127.0.0.1:{daemon.port}/")
    wait_for(lambda: page_state(browser).get("tuningJobs") == ["api"], 20)
    trainers = [train(daemon, job, *curve) for job, curve in SWEEP.items()]
    for t in trainers:
        assert t.wait(30) == 0

    def read_all() -> bool:  # every job read to its end (or stopped)
        found = status_jobs(daemon)
        return len(found) == len(SWEEP) and all(
            j["decision"] or j["epochs"] == 6 for j in found.values()
        )

    wait_for(read_all, 30, describe=lambda: status_jobs(daemon))
    jobs = status_jobs(daemon)
    stopped = {name: j["decision"]["epoch"] for name, j in jobs.items() if j["decision"]}
    assert stopped, "the sweep has losers"

    def caught_up() -> bool:
        state = page_state(browser)
        rows = {r[0]: r for r in state.get("rows", [])}
        return set(rows) == set(jobs) and all(
            rows[n][1] == j["status"] and rows[n][2] == str(j["epochs"]) for n, j in jobs.items()
        )

    wait_for(caught_up, 20, describe=lambda: page_state(browser))
    state = page_state(browser)
    assert state["connection"] == "live"
    assert state["curves"] == len(jobs) and state["series"] == len(jobs) + 2
    for name, epoch in stopped.items():
        assert state["lastEpoch"][state["jobs"].index(name)] == epoch  # the curve ends at the stop
    for row in state["rows"]:
        job = jobs[row[0]]
        assert row[1] == job["status"] and row[2] == str(job["epochs"])
        assert row[3] == (str(job["decision"]["epoch"]) if job["decision"] else NONE)
        assert row[6] == (str(job["decision"]["compared_jobs"]) if job["decision"] else NONE)
    screenshot(browser, tmp_path, "live-page.png")
    hover_shows_the_point(daemon, browser)

    late = train(daemon, "e", 0.7, 0.1)  # a new job: shown without a reload
    assert late.wait(30) == 0
    wait_for(lambda: "e" in {r[0] for r in page_state(browser).get("rows", [])}, 20)
    assert browser.execute_script("return performance.getEntriesByType('navigation').length") == 1

    # the daemon restarts: the page reconnects by itself and shows the same sweep
    assert daemon.process.terminate() == 0
    wait_for(lambda: page_state(browser).get("connection") != "live", 20)
    daemon.process.start()
    wait_for(lambda: page_state(browser).get("connection") == "live", 30)
    wait_for(lambda: len(page_state(browser).get("rows", [])) == len(jobs) + 1, 20)
