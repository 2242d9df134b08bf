"""A multi-worker trainer's join, watched from a process that can still act.

TensorFlow joins the workers of a multi-worker run inside C++ while holding Python's lock, so
the joining trainer runs no Python until every worker has answered. `train` therefore runs each
worker's trainer as a child of this small process, which names the missing workers, honours
--join-timeout, Stop and SIGTERM during the wait, and afterwards passes signals on. No
TensorFlow here: the child imports it.
"""

from __future__ import annotations

# Imports inside functions are deliberate: TensorFlow and Keras, and the modules that reach them,
# load on first use, so importing this module (the app's pages, the command line) stays light.
import contextlib
import ctypes
import dataclasses
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from alexnet_core import exits, locations
from alexnet_core.settings.config import TrainConfig
from alexnet_core.store import fileio, layout, liveness

CLUSTER_CHILD_ENV = "ALEXNET_CLUSTER_CHILD"  # the settings and run folder of a supervised multi-worker trainer
JOIN_TIMEOUT_S = 300.0  # --join-timeout's default


def cluster_child() -> int:
    """The trainer of one worker of a multi-worker run, started by supervise_worker; its exit code."""

    from alexnet_core.train.training import prepare_tensorflow, run_training

    spec = json.loads(os.environ.pop(CLUSTER_CHILD_ENV))
    prepare_tensorflow()
    with contextlib.redirect_stdout(sys.stderr):
        return exits.of_training(run_training(TrainConfig.from_dict(spec["config"]), Path(spec["run_dir"])))


def _die_with_parent() -> None:  # in the child, before exec: killing the supervisor kills the trainer
    with contextlib.suppress(Exception):

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG (Linux)


class _Peers:
    """Which of the other workers answer on their address (a TCP connect every 2 s, in a thread)."""

    def __init__(self, place):

        self.place, self.answering, self.done = place, set(), threading.Event()
        others = [i for i in range(place.size) if i != place.position]

        def probe():
            while not self.done.is_set():
                for i in others:
                    host, _, port = place.workers[i].rpartition(":")
                    try:
                        socket.create_connection((host.strip("[]"), int(port)), timeout=1.0).close()
                        self.answering.add(i)
                    except (OSError, ValueError):
                        self.answering.discard(i)
                self.done.wait(2.0)

        self.others = others
        threading.Thread(target=probe, name="join-probe", daemon=True).start()

    def missing(self) -> list[str]:
        return [self.place.name(i) for i in self.others if i not in self.answering]


def supervise_worker(config, run_dir, place, join_timeout) -> int:
    """Run this worker's trainer as a child and supervise its join.

    TensorFlow joins the workers inside C++ holding Python's lock, so a waiting trainer can run
    no Python at all: it could neither say whom it waits for nor answer SIGTERM, Stop or a
    timeout. This process can: while the child waits (it says `joining` and `joined` on a pipe)
    it names the workers that do not answer on their address (terminal and status.json), and
    on --join-timeout, Stop (the chief), SIGTERM or Ctrl-C it ends the child and records the
    run failed (timeout) or stopped. Nothing has been trained then. After the join it passes
    SIGTERM and Ctrl-C on to the trainer, which stops as always, and exits with its code."""

    from alexnet_core.train.distributed import JOIN_PIPE_ENV

    timeout = JOIN_TIMEOUT_S if join_timeout is None else join_timeout
    root_of_package = locations.ROOT
    read, write = os.pipe()
    env = {**os.environ, JOIN_PIPE_ENV: str(write),
           CLUSTER_CHILD_ENV: json.dumps({"config": dataclasses.asdict(config), "run_dir": str(run_dir)}),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(root_of_package), os.environ.get("PYTHONPATH")]))}
    asked: list[int] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda sig, _: asked.append(sig))
    proc = subprocess.Popen([sys.executable, "-c", "import sys; from alexnet_core.join_watch import cluster_child; "
                             "sys.exit(cluster_child())"], env=env, pass_fds=(write,), preexec_fn=_die_with_parent)
    os.close(write)
    joining = peers = scratch = None
    said, said_at, pending = None, 0.0, b""

    def log(message):
        print(message, file=sys.stderr, flush=True)

    def end(state: str, message: str, code: int) -> int:
        proc.kill()
        proc.wait()
        if scratch:

            shutil.rmtree(scratch, ignore_errors=True)
        log(("error: " if state == "failed" else "") + message)
        if place.is_chief:
            _record_join_end(run_dir, state, message)
        return code

    while True:
        if select.select([read], [], [], 0.5)[0]:
            chunk = os.read(read, 4096)
            if not chunk:
                break  # the trainer ended (or joined and closed the pipe)
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in (x.decode(errors="replace") for x in lines):
                if line == "joining":
                    joining, peers = time.monotonic(), _Peers(place)
                elif line == "joined":
                    joining = None
                    if peers:
                        peers.done.set()
                elif line.startswith("scratch "):
                    scratch = line[len("scratch "):]
            if joining is None and peers is not None:
                break  # joined: training proper
        if proc.poll() is not None:
            break
        waited = time.monotonic() - joining if joining is not None else None
        who = ", ".join(peers.missing()) or "the other workers to finish joining (all of them answer)" \
            if peers else "the other workers"
        if asked or (waited is not None and place.is_chief and liveness.stop_requested(run_dir)):
            why = "Ctrl-C" if signal.SIGINT in asked else "SIGTERM" if asked else "Stop"
            where = f"while waiting for {who} to join" if waited is not None else "as the trainer started"
            return end("stopped", f"Stopped ({why}) {where}, before the first step; {_kept(run_dir, place)}; "
                                  "start every worker again with --resume to continue.", exits.OK)
        if waited is None:
            continue
        if waited > timeout:
            return end("failed", f"{who} did not join within {timeout:g} s (--join-timeout): start "
                                 f"{'it' if len(peers.missing()) == 1 else 'every worker'} with the same arguments, "
                                 f"check that each address is reachable from here, then start this worker again "
                                 f"({_kept(run_dir, place)}).", exits.FAILED)
        message = f"Waiting for {who} to join ({waited:.0f} s of the {timeout:g} s join timeout)"
        if place.is_chief:
            with contextlib.suppress(OSError):
                liveness.write_status(run_dir, phase="joining", message=message)
        if who != said or time.monotonic() - said_at > 30:
            log(message)
            said, said_at = who, time.monotonic()
    os.close(read)
    for sig in (signal.SIGTERM, signal.SIGINT):  # from here on the trainer answers them itself
        signal.signal(sig, lambda sig, _: proc.poll() is None and proc.send_signal(sig))
    if asked and proc.poll() is None:
        proc.send_signal(asked[-1])
    return exits.of_child(proc.wait())


def _kept(run_dir, place) -> str:

    if not place.is_chief:
        return "the run is kept as it was"
    done = fileio.read_object(run_dir / layout.CHECKPOINTS / layout.STATE).get("completed_epochs")
    return f"the run is kept as it was after epoch {done}" if done else "no epoch had been trained"


def _record_join_end(run_dir, state: str, message: str) -> None:
    """status.json of a run whose trainer this process ended during the join: its last commit
    republished (nothing was trained since), the state and why."""
    from alexnet_core.train.checkpoints import CheckpointStore

    fields = {}
    with contextlib.suppress(Exception):
        store = CheckpointStore(run_dir)
        store.recover()
        fields = {"completed_epochs": store.completed_epochs, "has_model": store.publish_model() is not None}
    with contextlib.suppress(OSError):
        (run_dir / fileio.RESERVE).unlink(missing_ok=True)
        if state == "stopped":
            (run_dir / layout.STOP_REQUEST).unlink(missing_ok=True)
        liveness.write_status(run_dir, state=state, message=message, finished=time.time(), phase=None,
                              **({"reason": "cluster"} if state == "failed" else {}), **fields)
