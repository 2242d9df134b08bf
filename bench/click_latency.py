"""Evaluate's common clicks as a user's browser sees them, before and after, side by side.

    python bench/click_latency.py [--base 2e044cd] [--clicks 4]

Starts the app twice in one run: from a `git worktree` of the base commit (in /tmp, made once)
and from this tree, each in a fresh, empty runs folder (so nothing is cached on disk), and
drives both with Chromium (1440 px wide), one after the other for each measurement so both see
the same machine. For each it measures, from the click to the script run finished and the new
content shown (`data-test-script-state` back to `notRunning`):

- a confusion-matrix cell clicked (cat→dog, then dog→cat, and so on): its images shown;
- the Grad-CAM toggle of the cell's images switched on (Grad-CAM shown), then off;
- the map of what the network learned (t-SNE of the sample's 1,000 images): "Draw the map"
  clicked until the map is drawn, or, where the map ships with the model and there is no button,
  the Evaluate page opened until the map is drawn.

The first opening of Evaluate (model load and evaluation) is not part of any figure. Prints each
latency before and after (median over the clicks, the first one too) and the ratio. Targets on
this 2-core machine, idle: cell click <= 1.5 s, Grad-CAM toggle <= 1.5 s, the map <= 10 s.
The machine's load average is printed with the figures: on a busy machine every figure grows.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
STATE = "document.querySelector('[data-testid=\"stApp\"]')?.getAttribute('data-test-script-state')"
TARGETS = {"cell": 1.5, "cam_on": 1.5, "map": 10.0}
CELLS = ((3, 5), (5, 3))  # (true, predicted) of the sample's classes: cat→dog, dog→cat
CAM_TOGGLE = "Show Grad-CAM (what the network looked at)"
CAM_SHOWN = "Grad-CAM colours"  # the colour legend's caption, shown with the toggle on (both versions)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def base_tree(commit: str) -> Path:
    """A worktree of `commit` in /tmp (made once, detached, so no branch is touched)."""
    full = subprocess.run(["git", "rev-parse", commit], cwd=ROOT, check=True, capture_output=True,
                          text=True).stdout.strip()
    tree = Path(tempfile.gettempdir()) / f"alexnet-bench-{full[:12]}"
    if not (tree / "app.py").exists():
        subprocess.run(["git", "worktree", "add", "--detach", str(tree), full], cwd=ROOT, check=True,
                       capture_output=True)
    return tree


class App:
    """`streamlit run app.py` from `tree`, importing that tree's packages, in a fresh runs folder."""

    def __init__(self, name: str, tree: Path, log_dir: Path):
        self.name, self.tree, self.port = name, tree, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        runs = tempfile.mkdtemp(prefix=f"runs-{name}-")
        env = {**os.environ, "ALEXNET_RUNS_DIR": runs, "PYTHONPATH": str(tree)}
        self.log = log_dir / f"{name}.log"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true", "--server.port",
             str(self.port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false"],
            cwd=tree, env=env, stdout=self.log.open("w"), stderr=subprocess.STDOUT)
        where = subprocess.run([sys.executable, "-c", "import alexnet_ui; print(alexnet_ui.__file__)"], cwd=tree,
                               env=env, capture_output=True, text=True).stdout.strip()
        if not where.startswith(str(tree)):
            raise SystemExit(f"{name}: the app would import {where}, not the tree {tree}")

    def wait_ready(self) -> None:
        while True:
            try:
                if urllib.request.urlopen(self.url + "/_stcore/health", timeout=1).read() == b"ok":
                    return
            except OSError:
                if self.proc.poll() is not None:
                    raise SystemExit(f"{self.name}: streamlit exited: {self.log.read_text()[-2000:]}") from None
                time.sleep(0.1)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def settled(page, condition: str, arg=None, timeout_ms: int = 600_000) -> None:
    """Wait until `condition` (a JS function of `arg`) holds and the script run has finished."""
    page.wait_for_function(f"(arg) => ({condition})(arg) && {STATE} === 'notRunning'", arg=arg,
                           timeout=timeout_ms, polling=20)


def has_text(text: str) -> str:
    return f"(t) => document.body.innerText.includes({text!r})"


def open_evaluate(page, app: App) -> None:
    page.goto(app.url + "/evaluate")
    page.wait_for_timeout(100)
    settled(page, "() => !!document.querySelector('.js-plotly-plot')")


def click_cell(page, true: int, predicted: int) -> float:
    """Click the matrix's cell (true, predicted); seconds until its images are shown."""
    plot = page.locator(".js-plotly-plot").first
    plot.scroll_into_view_if_needed()
    x, y = plot.evaluate("""(gd, cell) => {
        const [t, p] = cell, lay = gd._fullLayout, n = lay.yaxis._categories.length;
        const box = gd.getBoundingClientRect();
        return [box.left + lay.xaxis._offset + lay.xaxis.l2p(p), box.top + lay.yaxis._offset + lay.yaxis.l2p(n - 1 - t)];
    }""", [true, predicted])
    names = plot.evaluate("(gd) => gd._fullLayout.xaxis._categories")
    heading = f"True {names[true]}, predicted {names[predicted]}"
    start = time.perf_counter()
    page.mouse.click(x, y)
    settled(page, "(h) => [...document.querySelectorAll('h3')].some(e => e.innerText.startsWith(h)) && "
                  "document.querySelectorAll('[data-testid=\"stImage\"]').length > 0", heading)
    return time.perf_counter() - start


def toggle_cam(page, on: bool) -> float:
    """Switch the cell images' Grad-CAM toggle; seconds until Grad-CAM is shown (or gone)."""
    toggle = page.get_by_text(CAM_TOGGLE).first
    toggle.scroll_into_view_if_needed()
    start = time.perf_counter()
    toggle.click()
    shown = has_text(CAM_SHOWN)
    settled(page, shown if on else f"(t) => !({shown})(t)")
    return time.perf_counter() - start


def draw_map(page, app: App) -> tuple[float, str]:
    """Seconds until the map is drawn: from "Draw the map" clicked, or, with no such button (the
    map ships with the model), from opening the Evaluate page."""
    drawn = "() => !!document.querySelector('[data-testid=\"stVegaLiteChart\"]')"
    button = page.get_by_role("button", name=re.compile("Draw the map"))
    if button.count():
        button.first.scroll_into_view_if_needed()
        start = time.perf_counter()
        button.first.click()
        settled(page, drawn)
        return time.perf_counter() - start, "Draw the map clicked to map drawn"
    start = time.perf_counter()
    page.goto(app.url + "/evaluate")
    page.wait_for_timeout(100)
    settled(page, drawn)
    return time.perf_counter() - start, "no button: Evaluate opened to map drawn"


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3]) if Path("/proc/loadavg").exists() else "?"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="2e044cd", help="the commit to compare with (default 2e044cd)")
    parser.add_argument("--clicks", type=int, default=4, help="cell clicks and Grad-CAM toggles each (default 4)")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    log_dir = Path(tempfile.mkdtemp(prefix="click-latency-"))
    apps = [App("before", base_tree(args.base), log_dir), App("after", ROOT, log_dir)]
    times = {app.name: {} for app in apps}
    notes = {}
    try:
        for app in apps:
            app.wait_ready()
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=os.environ.get("CHROMIUM", "/usr/bin/chromium"),
                                        args=CHROMIUM_ARGS)
            pages = {app.name: browser.new_page(viewport={"width": 1440, "height": 1000}) for app in apps}
            for app in apps:  # model load and evaluation: not measured
                start = time.perf_counter()
                open_evaluate(pages[app.name], app)
                print(f"{app.name}: Evaluate first opened in {time.perf_counter() - start:.1f} s", flush=True)
            for k in range(args.clicks):
                for app in apps:
                    seconds = click_cell(pages[app.name], *CELLS[k % 2])
                    times[app.name].setdefault("cell", []).append(seconds)
                    print(f"{app.name}: cell click {k + 1}: {seconds:.2f} s (load {load()})", flush=True)
            for _ in range(args.clicks):
                for app in apps:
                    on = toggle_cam(pages[app.name], True)
                    off = toggle_cam(pages[app.name], False)
                    times[app.name].setdefault("cam_on", []).append(on)
                    times[app.name].setdefault("cam_off", []).append(off)
                    print(f"{app.name}: Grad-CAM on {on:.2f} s, off {off:.2f} s (load {load()})", flush=True)
            for app in apps:
                seconds, how = draw_map(pages[app.name], app)
                times[app.name]["map"] = [seconds]
                notes[app.name] = how
                print(f"{app.name}: map {seconds:.2f} s ({how}; load {load()})", flush=True)
            browser.close()
    finally:
        for app in apps:
            app.stop()
    print(f"\nbefore: {args.base}, after: this tree; load average at the end {load()} (2 cores here)")
    print(f"{'':34s} {'before':>9s} {'after':>9s} {'ratio':>7s}  target")
    rows = [("cell click (median)", "cell", statistics.median), ("cell click (first)", "cell", lambda t: t[0]),
            ("Grad-CAM on (median)", "cam_on", statistics.median), ("Grad-CAM on (first)", "cam_on", lambda t: t[0]),
            ("Grad-CAM off (median)", "cam_off", statistics.median), ("t-SNE map of 1,000 images", "map", min)]
    for label, key, pick in rows:
        before, after = pick(times["before"][key]), pick(times["after"][key])
        target = f"<= {TARGETS[key]} s" if key in TARGETS else ""
        print(f"{label:34s} {before:8.2f}s {after:8.2f}s {before / max(after, 1e-9):6.1f}x  {target}")
    print(f"map: before {notes['before']}; after {notes['after']}")
    print(f"logs: {log_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
