"""Training's entry points, for the command line, the launcher and a supervised worker.

`check_fine_tune` (lifecycle's, named here for the command line) checks a fine-tuning run's base model
before a run folder exists, `prepare_tensorflow` sets TensorFlow's threads and logical CPUs once before it runs anything,
and `run_training` trains a run folder (loop.Trainer) with every ending recorded in status.json, then
starts the next queued run (queue.py).
The loop is loop.py, what a run does besides training observers.py, a worker's part of a
multi-worker run distributed.py, fine-tuning finetune.py and the Train page's estimate estimate.py.
TensorFlow: imported lazily.
"""

from __future__ import annotations

# Imports inside functions are deliberate: TensorFlow and Keras, and the modules that reach them,
# load on first use, so importing this module (the app's pages, the command line) stays light.
import enum
import os
import sys
import time
import traceback
from pathlib import Path

from alexnet_core.settings.config import ConfigError, TrainConfig
from alexnet_core.store import layout, liveness
from alexnet_core.train.lifecycle import check_fine_tune  # noqa: F401 - where the command line finds it


def train(config: TrainConfig, run_dir: Path, log=print, observers=()) -> dict:
    """Train into `run_dir` (fresh or resumed) and return the final status; `observers` are
    called beside the run's own (observers.py)."""
    from alexnet_core.train.loop import Trainer

    return Trainer(config, run_dir, log, observers).run()


def configure_threads() -> None:
    """Cap TensorFlow's thread pools at $ALEXNET_THREADS when set (to share a machine).

    Left alone otherwise: on this project's 2-core reference machine TensorFlow's defaults
    (one thread per core) spend about 3% of training time in system calls (bench/train_throughput.py).
    """
    import tensorflow as tf

    threads = os.environ.get("ALEXNET_THREADS")
    if not threads:
        return
    try:
        tf.config.threading.set_intra_op_parallelism_threads(int(threads))
        tf.config.threading.set_inter_op_parallelism_threads(min(2, int(threads)))
    except RuntimeError:  # already initialised (e.g. inside a test process)
        pass


_TENSORFLOW_READY = []


def prepare_tensorflow() -> None:
    """Thread pools and logical CPUs ($ALEXNET_THREADS, $ALEXNET_LOGICAL_CPUS): once, before
    TensorFlow first runs anything."""
    if _TENSORFLOW_READY:
        return
    _TENSORFLOW_READY.append(True)
    if os.environ.get("ALEXNET_LOGICAL_CPUS"):
        from alexnet_core.train.devices import split_cpu

        split_cpu(int(os.environ["ALEXNET_LOGICAL_CPUS"]))
    configure_threads()


class Ending(enum.Enum):
    """How run_training ended; the command line turns it into its exit code (exits.of_training)."""

    DONE = "done"  # finished, or stopped with every committed epoch kept
    FAILED = "failed"  # diverged, failed or an internal error (the traceback in train.log)
    BAD_INPUT = "bad input"  # settings, data or the run folder refused, with a message naming them


def run_training(config: TrainConfig, run_dir: Path, log=None, observers=()) -> Ending:
    """train() with every ending recorded in status.json, and how it ended. However the run ends
    (finished, stopped, failed, diverged), its trainer then starts the next queued run (train/queue.py),
    so a queue goes on with no browser open."""
    from alexnet_core.train.devices import cluster

    log = log or (lambda m: print(m, file=sys.stderr, flush=True))
    try:
        place = cluster()
    except ConfigError as exc:
        log(f"error: {exc}")
        return Ending.BAD_INPUT
    writes = place is None or place.is_chief  # only the chief writes the run folder
    try:
        ending = _run_training(config, run_dir, log, observers, writes)
    except layout.ActiveRunError as exc:  # another trainer owns this run: leave its status (and the queue) alone
        log(f"error: {exc}")
        return Ending.BAD_INPUT
    if writes:
        _start_next(run_dir, log)
    return ending


def _start_next(run_dir: Path, log) -> None:
    """Start the next queued run now that this one has ended; a problem with the queue is logged,
    never turned into this run's ending."""
    from alexnet_core.train import queue

    try:
        for started in queue.advance(Path(run_dir).parent, finishing=Path(run_dir)):
            log(f"queue: started the next run, {started.name}")
    except Exception as exc:  # noqa: BLE001 - the run has ended as it ended, whatever the queue says
        log(f"note: the queue could not start its next run: {type(exc).__name__}: {exc}")


def _run_training(config: TrainConfig, run_dir: Path, log, observers, writes: bool) -> Ending:
    from alexnet_core.inputs.data import DataError

    try:
        status = train(config, run_dir, log=log, observers=observers)
    except layout.ActiveRunError:
        raise
    except (DataError, ConfigError, layout.RunError) as exc:
        if writes:
            _record_failure(run_dir, str(exc), "data" if isinstance(exc, DataError) else "settings")
        log(f"error: {exc}")
        return Ending.BAD_INPUT
    except Exception as exc:
        if not writes:
            log(traceback.format_exc())
            log(f"error: internal error: {type(exc).__name__}: {exc}")
            return Ending.FAILED
        _record_failure(run_dir, f"Internal error: {type(exc).__name__}: {exc} (details in {layout.LOG})", "internal")
        _log_traceback(run_dir)
        log(f"error: internal error: {type(exc).__name__}: {exc}; the traceback is in {Path(run_dir) / layout.LOG}")
        return Ending.FAILED
    log(status.get("message", ""))
    return Ending.DONE if status["state"] in ("finished", "stopped") else Ending.FAILED


def _record_failure(run_dir: Path, message: str, reason: str) -> None:
    """status.json says failed, why in words (`message`) and in one word (`reason`: data,
    settings, internal; disk failures are recorded by the trainer itself)."""
    try:
        liveness.write_status(run_dir, state="failed", finished=time.time(), phase=None, message=message, reason=reason)
    except OSError:
        pass


def _log_traceback(run_dir: Path) -> None:
    """The traceback goes to train.log (once: the launcher already sends stderr there)."""
    text = traceback.format_exc()
    path = Path(run_dir) / layout.LOG
    try:
        same = path.exists() and os.path.samestat(os.fstat(2), path.stat())
    except OSError:
        same = False
    if same:
        print(text, file=sys.stderr, flush=True)
        return
    try:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(text)
    except OSError:
        print(text, file=sys.stderr, flush=True)
