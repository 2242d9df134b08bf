"""Start training as a detached subprocess (`python -m alexnet_core train --resume RUN_DIR`).

The app never trains in its own process: a run survives page reloads, closed tabs and
server restarts, and its folder is the only channel between the two.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from dataclasses import asdict
from pathlib import Path

from . import runs
from .training import TrainConfig


class ActiveRunError(RuntimeError):
    """Another run is training on this machine."""


def check_no_active_run(root) -> None:
    active = runs.active_runs(root)
    if active:
        run = active[0]
        raise ActiveRunError(
            f"Run {run['run_id']} is already training ({run['message'] or run['state']}). One run trains at "
            f"a time: stop it on the Train page or with `python -m alexnet_core stop {run['path']}`, or wait "
            "for it to finish.")


def _spawn(run_dir: Path) -> int:
    root_of_package = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root_of_package),
                                                                       os.environ.get("PYTHONPATH")]))}
    with open(run_dir / runs.LOG, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "alexnet_core", "train", "--resume", str(run_dir)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
            start_new_session=True,  # detached: survives the app's restart
        )
    # Reap the trainer when it exits so it never lingers as a zombie of the app's process.
    threading.Thread(target=proc.wait, name=f"reap-{proc.pid}", daemon=True).start()
    runs.write_status(run_dir, state="starting", pid=proc.pid, host=os.uname().nodename,
                      message="Starting the trainer")
    return proc.pid


def start(config: TrainConfig, root=None, run_id: str | None = None, allow_parallel: bool = False) -> Path:
    root = runs.runs_root(root)
    if not allow_parallel:
        check_no_active_run(root)
    root.mkdir(parents=True, exist_ok=True)
    run_dir = runs.create_run(root, run_id or runs.new_run_id(config.variant, config.data), asdict(config))
    _spawn(run_dir)
    return run_dir


def resume(run_dir, allow_parallel: bool = False) -> Path:
    run_dir = Path(run_dir)
    if runs.is_read_only(run_dir):
        raise runs.RunError(f"{run_dir.name} is bundled with the app and cannot be resumed")
    status = runs.read_status(run_dir)
    if status.get("state") in runs.ACTIVE_STATES:
        raise ActiveRunError(f"Run {run_dir.name} is still training")
    if status.get("state") == "finished":
        raise runs.RunError(f"Run {run_dir.name} has finished all its epochs")
    if not allow_parallel:
        check_no_active_run(run_dir.parent)
    _spawn(run_dir)
    return run_dir
