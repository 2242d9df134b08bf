"""Start training as a detached subprocess (`python -m alexnet_core train --resume RUN_DIR`).

The app never trains in its own process: a run survives page reloads, closed tabs and
server restarts, and its folder is the only channel between the two. Which runs may start or
resume is decided by train.lifecycle; this module only spawns the process.
"""

from __future__ import annotations

# Imports inside functions are deliberate: TensorFlow and Keras, and the modules that reach them,
# load on first use, so importing this module (the app's pages, the command line) stays light.
import os
import subprocess
import sys
import threading
from pathlib import Path

from alexnet_core import locations
from alexnet_core.settings.config import TrainConfig
from alexnet_core.store import layout, liveness
from alexnet_core.train import lifecycle

LAUNCHED_ENV = "ALEXNET_LAUNCHED_RUN"  # set by the launcher for the trainer it starts


GPUS_ENV = "ALEXNET_GPUS"  # the GPUs the queue shares out ("0,1"); set by tests, and for the trainers it starts


def spawn(run_dir: Path, gpu: int | None = None, devices: list[int] | None = None,
           allow_parallel: bool = False) -> int:
    """Start `train --resume RUN_DIR` detached. `gpu`: the one GPU it may see (CUDA_VISIBLE_DEVICES),
    recorded in status.json; `devices`: every GPU the queue shares out, passed on so the trainer,
    which sees only its own, starts the next queued run on the right one; `allow_parallel`: other
    runs train at the same time, on other GPUs."""
    root_of_package = locations.ROOT
    env = {**os.environ, LAUNCHED_ENV: str(run_dir),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(root_of_package), os.environ.get("PYTHONPATH")]))}
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = str(gpu)
    if devices:
        env[GPUS_ENV] = ",".join(str(d) for d in devices)
    # A stop request left from before this start is stale; one made from here on (while the
    # trainer starts, loads data, builds) is honoured by the trainer as soon as it can.
    (run_dir / layout.STOP_REQUEST).unlink(missing_ok=True)
    # Marked as starting before the process exists: the trainer takes the run's lock within a
    # second or two, and until then liveness.trainer_alive() gives it a short grace period.
    liveness.mark_starting(run_dir, pid=None)
    liveness.write_status(run_dir, gpu=gpu)
    command = [sys.executable, "-m", "alexnet_core", "train", "--resume", str(run_dir)]
    with open(run_dir / layout.LOG, "ab") as log:
        proc = subprocess.Popen(
            command + (["--allow-parallel"] if allow_parallel else []),
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
            start_new_session=True,  # detached: survives the app's restart
        )
    # Reap the trainer when it exits so it never lingers as a zombie of the app's process.
    threading.Thread(target=proc.wait, name=f"reap-{proc.pid}", daemon=True).start()
    liveness.write_status(run_dir, pid=proc.pid)  # the trainer writes the same pid as soon as it starts
    return proc.pid


def start(config: TrainConfig, root=None, run_id: str | None = None, allow_parallel: bool = False) -> Path:
    """Create a run (lifecycle.new_run checks the data and the one-run rule first) and train it detached.
    The run is created `starting` in one step with the rule's check, so of two Starts at the same
    instant (two tabs, two processes) one gets the run and the other ActiveRunError. A run that
    fine-tunes has its base model loaded and checked first (ConfigError), so a base it cannot use
    leaves no run folder, and the run records the network it will train (the base's)."""
    if config.init_from:
        config = lifecycle.check_fine_tune(config)  # TensorFlow: only when a Start fine-tunes
    run_dir = lifecycle.new_run(config, root, run_id, allow_parallel=allow_parallel, starter_pid=os.getpid())
    spawn(run_dir)
    return run_dir


def resume(run_dir, allow_parallel: bool = False) -> Path:
    """Resume a run detached; as with `start`, of two Resumes at once one spawns the trainer and
    the other gets ActiveRunError (the run is already starting)."""
    run_dir = Path(run_dir)
    lifecycle.check_resumable(run_dir, allow_parallel=allow_parallel, starter_pid=os.getpid())
    spawn(run_dir)
    return run_dir
