"""Cold start and page switches, as a user's browser sees them.

    python bench/startup.py [--runs N]

For each of N cold starts: `streamlit run app.py` in a fresh, empty runs folder, with Chromium
already open (as a user's browser is); the clock starts when the command starts and stops when
the Home page's script has finished (the app's `data-test-script-state` is `notRunning` and the
title is shown). Then a tour: every page by its sidebar link (the switch time is the click to
the page's script finished), then every page by a direct link (a bookmark or a reload). The
tour records every host the browser asked, every failed response, console errors and
exceptions shown on the page. Targets: Home <= 3.0 s, a switch to a page that loads no model
<= 0.5 s, no host but the app's own, no console error, no exception.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
FINISHED = ("document.querySelector('[data-testid=\"stApp\"]')?.getAttribute('data-test-script-state') "
            "=== 'notRunning' && document.querySelector('h1') !== null")
# The clicked page is shown (its title) and its script run has finished.
SWITCHED = """(title) => {
  const state = document.querySelector('[data-testid="stApp"]')?.getAttribute('data-test-script-state');
  const h1 = document.querySelector('h1');
  return state === 'notRunning' && h1 !== null && h1.innerText.trim() === title;
}"""
# Pages that load no model (the others load the bundled model on first use).
NO_MODEL = {"Home", "Architecture", "Train", "Runs"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def finished(page, timeout_ms=120_000):
    # A script run that has not started yet also reads notRunning: wait a frame, then for the end.
    page.wait_for_timeout(50)
    page.wait_for_function(FINISHED, timeout=timeout_ms, polling=20)


def cold_start(browser, log_path: Path):
    """(seconds to Home finished, seconds to the server answering, url, process)."""
    port = free_port()
    env = {**os.environ, "ALEXNET_RUNS_DIR": tempfile.mkdtemp(prefix="runs-")}
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true", "--server.port", str(port),
         "--server.address", "127.0.0.1"], cwd=ROOT, env=env, stdout=log_path.open("w"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    while True:
        try:
            if urllib.request.urlopen(url + "/_stcore/health", timeout=1).read() == b"ok":
                break
        except OSError:
            if proc.poll() is not None:
                raise SystemExit(f"streamlit exited: {log_path.read_text()}") from None
            time.sleep(0.02)
    server_ready = time.perf_counter() - start
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(url)
    page.wait_for_selector("h1", timeout=60_000)
    finished(page)
    seconds = time.perf_counter() - start
    page.close()
    return seconds, server_ready, url, proc


def tour(browser, url: str) -> dict:
    hosts, failed, console = set(), [], []
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.on("request", lambda r: hosts.add(urlparse(r.url).netloc))
    page.on("response", lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    page.on("console", lambda m: console.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: console.append(str(e)))
    page.goto(url)
    finished(page)
    links = page.locator('[data-testid="stSidebarNavLink"]')
    names = [links.nth(i).inner_text().strip().splitlines()[-1] for i in range(links.count())]
    hrefs = [links.nth(i).get_attribute("href") for i in range(links.count())]
    link_of = dict(zip(names, hrefs))
    exceptions = []
    rounds = {}
    for _ in range(4):  # rounds after the first are what a user sees once each page has been opened
        for name in names[1:] + names[:1]:
            page.wait_for_timeout(1500)  # a user looks at a page before the next click
            title = "AlexNet Explorer" if name == "Home" else name
            start = time.perf_counter()
            page.locator(f'[data-testid="stSidebarNavLink"][href="{link_of[name]}"]').click()
            page.wait_for_function(SWITCHED, arg=title, timeout=120_000, polling=20)
            rounds.setdefault(name, []).append(time.perf_counter() - start)
            if page.locator('[data-testid="stException"]').count():
                exceptions.append(name)
    switches = {name: statistics.median(times[1:]) for name, times in rounds.items()}
    for href in hrefs:
        page.goto(href if href.startswith("http") else url + "/" + href.lstrip("/"))
        page.wait_for_selector("h1", timeout=60_000)
        finished(page)
        if page.locator('[data-testid="stException"]').count():
            exceptions.append(href)
    page.close()
    own = urlparse(url).netloc
    return {"switches": switches, "foreign_hosts": sorted(h for h in hosts if h != own), "failed": failed,
            "console_errors": console, "exceptions": exceptions}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="cold starts (default 5)")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    log_dir = Path(tempfile.mkdtemp(prefix="startup-"))
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=os.environ.get("CHROMIUM", "/usr/bin/chromium"),
                                    args=CHROMIUM_ARGS)
        times, result = [], None
        for i in range(args.runs):
            seconds, ready, url, proc = cold_start(browser, log_dir / f"streamlit-{i}.log")
            times.append(seconds)
            print(f"cold start {i + 1}: server answering after {ready:.2f} s, Home finished after {seconds:.2f} s",
                  flush=True)
            if i == args.runs - 1:
                result = tour(browser, url)
            proc.terminate()
            proc.wait(timeout=30)
        browser.close()
    terminal = (log_dir / f"streamlit-{args.runs - 1}.log").read_text()
    noise = [line for line in terminal.splitlines()
             if "tensorflow" in line.lower() or "cuda" in line.lower() or "onednn" in line.lower()]
    print(f"\ncold start to Home finished: median {statistics.median(times):.2f} s "
          f"(min {min(times):.2f}, max {max(times):.2f}; target <= 3.0 s)")
    print("page switches (median of rounds 2-4), seconds:")
    for name, seconds in result["switches"].items():
        target = " (target <= 0.5 s)" if name in NO_MODEL else ""
        print(f"  {name:14s} {seconds:5.2f}{target}")
    print(f"hosts other than the app's: {result['foreign_hosts'] or 'none'}")
    print(f"failed responses: {result['failed'] or 'none'}")
    print(f"console errors: {result['console_errors'] or 'none'}")
    print(f"pages showing an exception: {result['exceptions'] or 'none'}")
    print(f"TensorFlow/CUDA lines in the terminal: {len(noise)}")
    for line in noise[:5]:
        print("   ", line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
