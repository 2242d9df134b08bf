"""What a 48-megapixel photo costs over a small one, in the CLI and in the app, side by side.

  CLI: `python -m alexnet_core predict demo PHOTO` in a fresh process each time; wall time after
       the imports (loading the model, reading, decoding, predicting) and the process's peak
       resident memory.
  app: a Streamlit server on 127.0.0.1; headless Chromium uploads the photo on Classify and
       waits for its Grad-CAM; wall time and the server's peak resident memory during that
       upload (VmHWM, reset before each upload).

Prints both costs and the differences (goal: at most +250 MB peak and +1.5 s for 48 MP).

    python bench/big_images.py [--repeat 3]
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
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"


def photo(path: Path, width: int, height: int) -> Path:
    """A photo-like JPEG: smooth gradients and shapes with mild sensor noise (compresses like a
    phone photo, unlike pure noise)."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    image = np.stack([128 + 100 * np.sin(x / 700 + c) * np.cos(y / 500 - c) for c in (0.0, 1.0, 2.0)], axis=-1)
    image += rng.normal(0, 6, (height, width, 1)).astype(np.float32)
    Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(path, quality=92)
    return path


def cli_cost(path: Path) -> tuple[float, float]:
    code = ("import resource, runpy, sys, time; sys.argv = ['alexnet_core', 'predict', 'demo', sys.argv[1]]\n"
            "import alexnet_core.cli, alexnet_core.predict.inference, keras, tensorflow  # start-up is not the photo's cost\n"
            "start = time.perf_counter()\n"
            "try:\n    runpy.run_module('alexnet_core', run_name='__main__')\nexcept SystemExit:\n    pass\n"
            "print('COST', time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)")
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, check=True).stdout
    line = next(line for line in out.splitlines() if line.startswith("COST"))
    _, seconds, peak = line.split()
    return float(seconds), float(peak)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def peak_rss(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return float(line.split()[1]) * 1024
    return float("nan")


def reset_peak(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def app_costs(paths: list[Path], repeat: int) -> dict[Path, list[tuple[float, float]]]:
    from playwright.sync_api import sync_playwright

    port = free_port()
    runs_dir = tempfile.mkdtemp(prefix="bench-runs-")
    server = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
                               "--server.port", str(port), "--server.address", "127.0.0.1"], cwd=ROOT,
                              env={**os.environ, "ALEXNET_RUNS_DIR": runs_dir, "TF_CPP_MIN_LOG_LEVEL": "3"},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    costs = {p: [] for p in paths}
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1300, "height": 1000})
            deadline = time.time() + 60
            while True:
                try:
                    page.goto(f"http://127.0.0.1:{port}/classify", wait_until="networkidle")
                    break
                except Exception:
                    if time.time() > deadline:
                        raise
                    time.sleep(1)
            page.get_by_text("where it looked for").first.wait_for(timeout=120_000)  # the examples: model loaded
            for _ in range(repeat):
                for path in paths:
                    buttons = page.locator("[data-testid=stFileUploader] button[aria-label^='Remove ']")
                    while buttons.count():  # remove the previous upload, as a user does
                        buttons.first.click()
                        page.wait_for_timeout(200)
                    page.wait_for_timeout(1500)
                    reset_peak(server.pid)
                    start = time.perf_counter()
                    page.locator("input[type=file]").set_input_files(str(path))
                    # Done when the upload's own result is the only one left (the examples step aside).
                    page.wait_for_function(
                        "name => document.body.innerText.includes(name + ' (') && "
                        "(document.body.innerText.match(/where it looked for/g) || []).length === 1",
                        arg=path.name, timeout=120_000)
                    costs[path].append((time.perf_counter() - start, peak_rss(server.pid)))
            browser.close()
    finally:
        server.terminate()
        server.wait(30)
    return costs


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-photos-"))
    small = photo(folder / "small.jpg", 1280, 960)
    big = photo(folder / "big48mp.jpg", 8000, 6000)
    print(f"small: 1280x960, {small.stat().st_size / 2**20:.1f} MiB; big: 8000x6000 (48 MP), "
          f"{big.stat().st_size / 2**20:.1f} MiB", flush=True)

    mib = 2**20
    cli = {p: [cli_cost(p) for _ in range(args.repeat)] for p in (small, big)}
    for p, rows in cli.items():
        print(f"CLI predict {p.name:<12} wall {statistics.median(r[0] for r in rows):6.2f} s   "
              f"peak {statistics.median(r[1] for r in rows) / mib:7.0f} MiB", flush=True)
    d_time = statistics.median(r[0] for r in cli[big]) - statistics.median(r[0] for r in cli[small])
    d_mem = statistics.median(r[1] for r in cli[big]) - statistics.median(r[1] for r in cli[small])
    print(f"CLI: 48 MP costs {d_time:+.2f} s and {d_mem / mib:+.0f} MiB peak over the small photo", flush=True)

    app = app_costs([small, big], args.repeat)
    for p, rows in app.items():
        print(f"app upload  {p.name:<12} wall {statistics.median(r[0] for r in rows):6.2f} s   "
              f"server peak {statistics.median(r[1] for r in rows) / mib:7.0f} MiB", flush=True)
    d_time = statistics.median(r[0] for r in app[big]) - statistics.median(r[0] for r in app[small])
    d_mem = statistics.median(r[1] for r in app[big]) - statistics.median(r[1] for r in app[small])
    print(f"app: 48 MP costs {d_time:+.2f} s and {d_mem / mib:+.0f} MiB peak over the small photo "
          "(goal: at most +1.5 s and +250 MiB)", flush=True)


if __name__ == "__main__":
    main()
