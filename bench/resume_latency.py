"""Resume to the first curve point, before and after, side by side in one run.

    python bench/resume_latency.py [--old 2e044cd] [--recipe quick] [--data sample] [--after-epochs 1]
                                   [--repeat 1]

For each side (the old commit, checked out once as a `git worktree` under /tmp, and this
working tree): a run of the recipe is started with that side's command line and stopped after
`--after-epochs` committed epochs (where the resume starts decides how many steps the old
code's every-10th-step log waits for); then the clock starts, `train --resume RUN` is started as the app's
launcher starts it, and the clock stops at the first row steps.csv gains (the first point the
Train page's curves can draw; the page reads the folder every 2 s on top of this). Meanwhile
status.json is read every 50 ms, and the time each phase first appears is printed: where the
seconds go (the old code reports fewer phases). The machine's load average is printed beside
each figure: the measurement means something on an idle machine only.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def worktree(commit: str) -> Path:
    """The old commit checked out under /tmp (once; reused by later runs)."""
    path = Path(tempfile.gettempdir()) / f"alexnet-{commit}"
    if not (path / "alexnet_core").is_dir():
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(path), commit], check=True,
                       stdout=subprocess.DEVNULL)
    return path


def cli(side: Path, *args: str, **popen) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(side), "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.Popen([sys.executable, "-m", "alexnet_core", *args], cwd=side, env=env,
                            stdin=subprocess.DEVNULL, **popen)


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def step_rows(run_dir: Path) -> list[int]:
    try:
        with open(run_dir / "steps.csv", newline="") as fh:
            return [int(row["step"]) for row in csv.DictReader(fh) if row.get("step", "").isdigit()]
    except OSError:
        return []


def stop(run_dir: Path, proc: subprocess.Popen) -> None:
    (run_dir / "stop.request").write_text(str(time.time()))
    try:
        proc.wait(timeout=300)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def first_epochs(side: Path, runs: Path, recipe: str, data: str, epochs: int, log) -> Path:
    """A run of `recipe` stopped after `epochs` committed epochs."""
    run_dir = runs / "r"
    proc = cli(side, "train", "--recipe", recipe, "--data", data, "--epochs", str(epochs + 3), "--runs-dir",
               str(runs), "--run-id", "r", stdout=log, stderr=log)
    while not (run_dir / "metrics.csv").exists() or len((run_dir / "metrics.csv").read_text().splitlines()) <= epochs:
        if proc.poll() is not None:
            raise SystemExit(f"the first epochs did not run ({side}); see {log.name}")
        time.sleep(0.2)
    stop(run_dir, proc)
    return run_dir


def resume(side: Path, run_dir: Path, log) -> dict:
    """Seconds from `train --resume` to each phase and to the first new row of steps.csv."""
    committed = max(step_rows(run_dir), default=0)
    seen, start = {}, time.perf_counter()
    proc = cli(side, "train", "--resume", str(run_dir), stdout=log, stderr=log)
    while True:
        now = time.perf_counter() - start
        status = read_json(run_dir / "status.json")
        key = f"{status.get('state')}/{status.get('phase')}"
        if status.get("pid") == proc.pid and key not in seen:
            seen[key] = now
        if max(step_rows(run_dir), default=0) > committed:
            seen["first curve point"] = now
            break
        if proc.poll() is not None:
            raise SystemExit(f"the resumed trainer ended before a step ({side}); see {log.name}")
        time.sleep(0.05)
    stop(run_dir, proc)
    return seen


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--old", default="2e044cd", help="the commit to compare with (default 2e044cd)")
    parser.add_argument("--recipe", default="quick")
    parser.add_argument("--data", default="sample")
    parser.add_argument("--after-epochs", type=int, default=1, help="epochs trained before the stop (default 1)")
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    sides = {"before": worktree(args.old), "after": ROOT}
    results: dict[str, list[float]] = {name: [] for name in sides}
    work = Path(tempfile.mkdtemp(prefix="resume-latency-"))
    for attempt in range(args.repeat):
        for name, side in sides.items():
            runs = work / f"{name}-{attempt}"
            with open(work / f"{name}-{attempt}.log", "w") as log:
                run_dir = first_epochs(side, runs, args.recipe, args.data, args.after_epochs, log)
                load = os.getloadavg()[0]
                seen = resume(side, run_dir, log)
            results[name].append(seen["first curve point"])
            phases = ", ".join(f"{k} {v:.1f}s" for k, v in seen.items())
            print(f"{name} ({side}): {seen['first curve point']:.1f} s to the first curve point "
                  f"(load average {load:.2f} before the resume); {phases}", flush=True)
    before, after = (min(results[n]) for n in ("before", "after"))
    print(f"resume to first curve point: before {before:.1f} s, after {after:.1f} s, ratio {before / after:.2f}x "
          f"(best of {args.repeat}; {args.recipe} recipe on {args.data}, resumed after {args.after_epochs} epoch(s); "
          f"logs in {work})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
