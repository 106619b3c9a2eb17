"""How long the live page takes to show a sweep: a daemon holding `--jobs` jobs of `--epochs`
epochs, the page opened in headless Chromium, from navigation to the first full render (tuning
jobs listed, the job's document fetched, the chart and the table drawn).

    .venv/bin/python benchmarks/page_load.py [--jobs 100] [--epochs 20] [--runs 3]

Needs Debian's chromium and chromium-driver, and selenium (a dev dependency).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

from tests.helpers import wait_for
from tests.integration.test_api import Daemon


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        d = Daemon(Path(scratch), token=False)
        for j in range(args.jobs):
            (d.logs / f"job-{j:03d}.log").write_text(
                "".join(
                    f"epoch {e} val_loss={1 / e + (j % 17) / 50:.4f}\n"
                    for e in range(1, args.epochs + 1)
                )
            )
        d.process.start()
        try:
            wait_for(d.ready, 60)

            def loaded() -> bool:
                _, doc = d.request("GET", "/api/v1/tuning-jobs/api")
                return isinstance(doc, dict) and len(doc.get("jobs", [])) == args.jobs

            wait_for(loaded, 120)
            options = webdriver.ChromeOptions()
            options.binary_location = "/usr/bin/chromium"
            for flag in (
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--window-size=1280,900",
            ):
                options.add_argument(flag)
            driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
            times = []
            try:
                for _ in range(args.runs):
                    t0 = time.perf_counter()
                    driver.get(f"http://127.0.0.1:{d.port}/")
                    wait_for(
                        lambda: driver.execute_script(
                            "return window.sidecarState && window.sidecarState.loadedAt"
                        ),
                        60,
                    )
                    in_page = driver.execute_script("return window.sidecarState.loadedAt")
                    times.append((time.perf_counter() - t0, in_page / 1000))
            finally:
                driver.quit()
        finally:
            d.process.terminate()
    wall = statistics.median(t for t, _ in times)
    page = statistics.median(p for _, p in times)
    print(
        f"page load, {args.jobs} jobs x {args.epochs} epochs: first full render {page * 1000:.0f} ms "
        f"after navigation (median of {args.runs}); {wall * 1000:.0f} ms as the test driver saw it"
    )


if __name__ == "__main__":
    main()
