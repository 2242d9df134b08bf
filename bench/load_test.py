"""A crowded server: concurrent sessions classifying uploads, against one Streamlit server on
127.0.0.1 (nothing else is contacted).

  1. memory: one session uploads `--large` big photos one after another; the server's resident
     memory before and after (goal: back within 300 MB of where it started).
  2. load: `--sessions` browser sessions (Playwright contexts in headless Chromium) each upload
     an image on Classify and wait for its result, over and over for `--seconds`; errors (an
     exception on the page or no result within 120 s), p50/p95 latency, and the server's peak
     resident memory.

    python bench/load_test.py [--sessions 20] [--seconds 60] [--large 20]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from big_images import CHROMIUM, ROOT, free_port, photo  # noqa: E402


def rss(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return float(line.split()[1]) * 1024
    return float("nan")


async def open_classify(context, port: int):
    page = await context.new_page()
    await page.goto(f"http://127.0.0.1:{port}/classify", wait_until="networkidle", timeout=180_000)
    await page.get_by_text("where it looked for").first.wait_for(timeout=180_000)
    return page


_UPLOADS = iter(range(10**9))


async def classify(page, path: Path) -> float:
    """Upload `path`, wait for its result; seconds taken. Raises on an error or a time-out.
    Each upload gets a fresh name (a hard link): a browser does not re-send a file it sent before."""
    fresh = path.with_name(f"{path.stem}-{next(_UPLOADS)}{path.suffix}")
    os.link(path, fresh)
    path = fresh
    start = time.perf_counter()
    await page.locator("input[type=file]").set_input_files(str(path), timeout=120_000)
    # Done when this upload's result is the only one on the page (the examples step aside), or failed.
    await page.wait_for_function(
        "name => document.querySelector('[data-testid=stException]') || "
        "(document.body.innerText.includes(name + ' (') && "
        "(document.body.innerText.match(/where it looked for/g) || []).length === 1)", arg=path.name,
        timeout=120_000)
    if await page.locator("[data-testid=stException]").count():
        raise RuntimeError("the page shows an exception")
    elapsed = time.perf_counter() - start
    await clear_uploads(page, path.name)
    return elapsed


async def clear_uploads(page, name: str):
    """Remove the uploaded file as a user does (the x beside it), and wait until its result is gone."""
    buttons = page.locator("[data-testid=stFileUploader] button[aria-label^='Remove ']")
    while await buttons.count():
        await buttons.first.click()
        await page.wait_for_timeout(200)
    await page.wait_for_function("name => !document.body.innerText.includes(name + ' (')", arg=name,
                                 timeout=120_000)


async def run(args, server_pid: int, port: int, images: list[Path], large: Path):
    from playwright.async_api import async_playwright

    mib = 2**20
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])

        # 1. memory after many large uploads
        context = await browser.new_context()
        page = await open_classify(context, port)
        await classify(page, images[0])
        before = rss(server_pid)
        for _ in range(args.large):
            await classify(page, large)
        await asyncio.sleep(5)
        after = rss(server_pid)
        await context.close()
        print(f"memory: {before / mib:.0f} MiB before {args.large} uploads of a 48 MP photo, {after / mib:.0f} MiB "
              f"after ({(after - before) / mib:+.0f} MiB; goal within 300 MB)", flush=True)

        # 2. concurrent sessions
        latencies, errors, peak = [], [], [0.0]

        async def watch():
            while True:
                peak[0] = max(peak[0], rss(server_pid))
                await asyncio.sleep(0.5)

        async def session(n: int):
            context = await browser.new_context()
            try:
                page = await open_classify(context, port)
                deadline = time.time() + args.seconds
                i = n
                while time.time() < deadline:
                    try:
                        latencies.append(await classify(page, images[i % len(images)]))
                    except Exception as exc:  # noqa: BLE001 - every failure counts as an error
                        errors.append(f"session {n}: {type(exc).__name__}: {str(exc)[:120]}")
                    i += 1
            except Exception as exc:  # noqa: BLE001
                errors.append(f"session {n} could not open Classify: {type(exc).__name__}: {str(exc)[:120]}")
            finally:
                await context.close()

        watcher = asyncio.create_task(watch())
        start = time.time()
        await asyncio.gather(*(session(n) for n in range(args.sessions)))
        watcher.cancel()
        wall = time.time() - start
        await browser.close()
    q = statistics.quantiles(latencies, n=20) if len(latencies) >= 2 else [float("nan")] * 19
    print(f"load: {args.sessions} sessions for {args.seconds} s ({wall:.0f} s with start-up): {len(latencies)} "
          f"classifications, {len(errors)} errors, latency p50 {statistics.median(latencies) if latencies else 0:.2f} s "
          f"p95 {q[18]:.2f} s, server peak {peak[0] / mib:.0f} MiB", flush=True)
    for error in errors[:10]:
        print("  " + error)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--large", type=int, default=20)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-load-"))
    images = [photo(folder / f"photo{i}.jpg", w, h) for i, (w, h) in enumerate([(640, 480), (1280, 960),
                                                                                 (2000, 1500)])]
    large = photo(folder / "large48mp.jpg", 8000, 6000)
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
                               "--server.port", str(port), "--server.address", "127.0.0.1"], cwd=ROOT,
                              env={**os.environ, "ALEXNET_RUNS_DIR": tempfile.mkdtemp(), "TF_CPP_MIN_LOG_LEVEL": "3"},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(3)
        asyncio.run(run(args, server.pid, port, images, large))
    finally:
        server.terminate()
        server.wait(30)


if __name__ == "__main__":
    main()
