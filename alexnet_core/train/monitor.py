"""What a running trainer tells the world through its run folder, independent of training steps.

`StatusWriter` owns status.json while the trainer runs (one lock, whole-file atomic writes).
`Monitor` is a thread that writes the heartbeat every 2 s and watches for a stop request, so
a long validation pass, a slow first read of the data or a checkpoint save never makes a live
run look dead. `StepLog` appends steps.csv.
"""

from __future__ import annotations

import os
import platform
import threading
import time
from pathlib import Path

from alexnet_core.store import fileio, layout, liveness

HEARTBEAT_S = 2.0
STOP_POLL_S = 0.5
WARMUP_STEPS = 5  # steps before images/s and time left are estimated (the first steps compile)


class StatusWriter:
    """status.json of a run held in memory and rewritten whole on every change."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.lock = threading.Lock()
        self.status = fileio.read_object(self.run_dir / layout.STATUS)
        self.session_start = time.time()
        self.elapsed_before = float(self.status.get("elapsed_s") or 0.0) if isinstance(
            self.status.get("elapsed_s"), (int, float)) else 0.0

    def update(self, write: bool = True, **fields) -> dict:
        with self.lock:
            self.status.update(fields)
            if write:
                self._write()
            return dict(self.status)

    def _write(self) -> None:
        now = time.time()
        self.status["heartbeat"] = now
        self.status["elapsed_s"] = self.elapsed_before + (now - self.session_start)
        fileio.write_json_atomic(self.run_dir / layout.STATUS, self.status)

    def beat(self) -> None:
        with self.lock:
            self._write()


class Progress:
    """Step counts and measured speed, updated by the training loop (cheap, no I/O)."""

    def __init__(self, epochs: int, steps_per_epoch: int, batch_size: int):
        self.epochs, self.steps_per_epoch, self.batch_size = epochs, steps_per_epoch, batch_size
        self.epoch = 0
        self.step = 0
        self.phase = None  # until the first epoch: the loop writes its phases before it (loading, building...)
        self.steps_timed = 0
        self.timer_start = None
        self.seconds_per_step = None

    def begin_epoch(self, epoch: int) -> None:
        """An epoch begins: its first step is this trainer's first ("first step": the step compiles)
        or a plain one ("training")."""
        self.epoch, self.step = epoch, 0
        self.phase = "training" if self.steps_timed else "first step"

    def stepped(self) -> None:
        self.step += 1
        self.phase = "training" if self.phase == "first step" else self.phase
        now = time.perf_counter()
        self.steps_timed += 1
        if self.steps_timed == WARMUP_STEPS:
            self.timer_start = now
        elif self.steps_timed > WARMUP_STEPS:
            self.seconds_per_step = (now - self.timer_start) / (self.steps_timed - WARMUP_STEPS)

    def fields(self) -> dict:
        images_per_sec = self.batch_size / self.seconds_per_step if self.seconds_per_step else None
        remaining = (self.epochs - self.epoch) * self.steps_per_epoch + (self.steps_per_epoch - self.step)
        eta = remaining * self.seconds_per_step if self.seconds_per_step else None
        fields = {"epoch": self.epoch, "step": self.step, "steps_per_epoch": self.steps_per_epoch,
                  "images_per_sec": images_per_sec, "eta_seconds": eta}
        return fields if self.phase is None else {**fields, "phase": self.phase}


class Monitor(threading.Thread):
    """Heartbeat and stop watcher. `error` holds a write failure for the training loop to raise."""

    def __init__(self, status: StatusWriter, progress: Progress, stop: threading.Event, run_dir: Path):
        super().__init__(name="run-monitor", daemon=True)
        self.status, self.progress, self.stop_event, self.run_dir = status, progress, stop, Path(run_dir)
        self.finished = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        last_beat = 0.0
        while not self.finished.wait(STOP_POLL_S):
            if liveness.stop_requested(self.run_dir):
                self.stop_event.set()
            if time.monotonic() - last_beat >= HEARTBEAT_S:
                last_beat = time.monotonic()
                try:
                    self.status.update(**self.progress.fields())
                except OSError as exc:
                    self.error = exc

    def close(self) -> None:
        self.finished.set()
        if self.is_alive():
            self.join(timeout=5)


class StepLog:
    """steps.csv: global step, epoch, batch loss and accuracy, learning rate; a line at a time.
    Which steps it holds is its caller's choice (observers.StepLogObserver)."""

    HEADER = "step,epoch,loss,accuracy,learning_rate\n"

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / layout.STEPS
        new = not self.path.exists() or self.path.stat().st_size == 0
        self.file = open(self.path, "a", encoding="utf-8", buffering=1)
        if new:
            self.file.write(self.HEADER)

    def log(self, step: int, epoch: int, loss: float, accuracy: float, learning_rate: float) -> None:
        self.file.write(f"{step},{epoch},{loss:.6g},{accuracy:.6g},{learning_rate:.6g}\n")

    def close(self) -> None:
        self.file.close()


def identity() -> dict:
    return {"pid": os.getpid(), "host": platform.node()}
