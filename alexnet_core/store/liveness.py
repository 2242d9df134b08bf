"""Whether a run's trainer is alive and what it is doing: the trainer's lock, status.json, stop
requests, and the runs folder's lock that makes starting a run one step. No TensorFlow."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import threading
import time
from pathlib import Path

from alexnet_core import locations
from alexnet_core.store import fileio, layout

STALE_AFTER_S = 60  # a trainer on another host writes a heartbeat every 2 s


STARTING_GRACE_S = 60  # a launched trainer takes its lock within a second or two of starting


class TrainerLock:
    """An exclusive flock on <run>/trainer.lock held for the trainer's whole life.

    The kernel drops it when the process dies however it dies, so a held lock means a live
    trainer and a free one means none, with no stale state to clean up.
    """

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / layout.LOCK
        self.fd = None

    def acquire(self, wait_s: float = 3.0) -> TrainerLock:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:  # held: by a trainer, or for an instant by a reader's check
                if time.monotonic() > deadline:
                    os.close(fd)
                    status = fileio.read_object(self.path.parent / layout.STATUS)
                    raise layout.ActiveRunError(f"Run {self.path.parent.name} is already being trained by another "
                                         f"process (pid {status.get('pid', '?')}); one trainer per run.") from None
                time.sleep(0.05)
            except OSError as exc:
                if exc.errno != errno.ENOLCK:  # a filesystem without locks: heartbeats only
                    os.close(fd)
                    raise
                break
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def lock_held(run_dir: Path) -> bool | None:
    """True if a trainer holds the run's lock, False if none does, None if it cannot be told."""
    try:
        fd = os.open(Path(run_dir) / layout.LOCK, os.O_RDONLY)
    except FileNotFoundError:
        return False
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    except BlockingIOError:
        return True
    except OSError:
        return None
    finally:
        os.close(fd)


def pid_alive(pid) -> bool:
    """Whether process `pid` is running (a zombie counts as gone; a pid we may not signal as alive)."""
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError, TypeError, OverflowError, OSError):
        return True
    try:  # a zombie (exited, not yet reaped) answers signal 0 but is gone
        return Path(f"/proc/{int(pid)}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except (OSError, ValueError, IndexError):
        return True


def trainer_alive(run_dir: Path, status: dict) -> bool:
    """Is a trainer working on this run? On this host the lock decides (a live trainer holds it
    even through a long validation pass); a just-launched trainer gets a short grace period to
    take it; a run trained on another host counts as alive while its heartbeat is fresh."""
    beat = status.get("heartbeat")
    age = time.time() - beat if isinstance(beat, (int, float)) else float("inf")
    host = status.get("host")
    if host in (None, os.uname().nodename):
        held = lock_held(run_dir)
        if held is not None:
            if held:
                return True
            pid = status.get("pid")
            if status.get("state") != "starting" or age > STARTING_GRACE_S:
                return False
            return pid_alive(pid) if pid else age < 10  # launched: the pid is recorded within milliseconds
    return age < STALE_AFTER_S


def with_liveness(run_dir: Path, status: dict) -> dict:
    """`status` with an active state turned into `interrupted` when its trainer has gone."""
    if status.get("state") in layout.ACTIVE_STATES and not trainer_alive(run_dir, status):
        return {**status, "state": "interrupted", "message": "The trainer stopped without finishing (killed or "
                "crashed). Resume continues from the last completed epoch."}
    return status


def read_status(run_dir: Path) -> dict:
    """status.json (fields of the wrong type dropped), read through `with_liveness`."""
    return with_liveness(run_dir, layout.read_checked(Path(run_dir) / layout.STATUS, layout.STATUS_SCHEMA)[0])


def write_status(run_dir: Path, **fields) -> dict:
    """Merge `fields` into status.json (atomically) with a fresh heartbeat. For writers other
    than the trainer (which owns status.json while it runs, see monitor.StatusWriter)."""
    status = fileio.read_object(Path(run_dir) / layout.STATUS)
    status.update(fields)
    status["heartbeat"] = time.time()
    fileio.write_json_atomic(Path(run_dir) / layout.STATUS, status)
    return status


def request_stop(run_dir: Path) -> None:
    (Path(run_dir) / layout.STOP_REQUEST).write_text(str(time.time()), encoding="utf-8")


def stop_requested(run_dir: Path) -> bool:
    return (Path(run_dir) / layout.STOP_REQUEST).exists()


RUNS_LOCK_WAIT_S = 30.0  # a holder checks the rule and creates a folder or writes a status: milliseconds


class _HeldRunsLocks(threading.local):
    """The runs folders whose lock this thread holds (a holder may take it again)."""

    def __init__(self):
        self.roots: set[str] = set()


_runs_locks_held = _HeldRunsLocks()


@contextlib.contextmanager
def runs_lock(root: str | os.PathLike | None = None, wait_s: float = RUNS_LOCK_WAIT_S):
    """Hold an exclusive flock on the runs folder itself while checking the one-run rule and
    creating a run or marking it `starting`, so that two Starts or Resumes at the same instant
    (two processes, or two sessions of the app's server) are one after the other: the second
    sees the first's run as active. A flock belongs to an open file description, so two threads
    that each open the folder exclude each other as two processes do; a thread that already holds
    it may take it again. No lock file: the folder is its own lock, and the kernel drops the lock
    however its holder ends."""
    root = locations.runs_root(root)
    key = os.path.realpath(root)
    held = _runs_locks_held.roots
    if key in held:
        yield
        return
    layout.check_runs_root(root)
    root.mkdir(parents=True, exist_ok=True)
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)  # not inherited by a spawned trainer (PEP 446)
    try:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise layout.ActiveRunError(f"Another run is being started or resumed in {root} and has not "
                                         f"finished after {wait_s:.0f} s: try again in a moment.") from None
                time.sleep(0.01)
            except OSError as exc:
                if exc.errno not in (errno.ENOLCK, errno.EBADF, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOSYS):
                    raise
                break  # a filesystem without locks: the rule is checked as before, without the lock
        held.add(key)
        try:
            yield
        finally:
            held.discard(key)
    finally:
        os.close(fd)


def mark_starting(run_dir: Path, pid: int | None) -> None:
    """The run's trainer is on its way, started by process `pid` (the trainer itself, or the
    launcher until it has spawned one; None while the spawn is under way): the one-run rule
    counts the run as active from now, before that trainer takes the run's lock
    (runs.trainer_alive's grace period)."""
    write_status(run_dir, state="starting", pid=pid, host=os.uname().nodename, message="Starting the trainer")
