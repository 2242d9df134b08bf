"""A worker's side of a multi-worker run (MultiWorkerMirroredStrategy, TF_CONFIG).

Every worker runs the same loop (loop.py) on its own shard of the data. The chief (worker 0)
writes the run folder; every other worker reads it (to resume) and writes only a scratch folder
of its own (`scratch_folder`), removed when it ends. Every decision that ends an epoch early (a
stop request, divergence) is taken from values reduced over all replicas: each step returns its
workers' stop wishes summed (loop.make_steps), and the first collective carries every worker's
wish so far (`check_workers_agree`), so all workers stop at the same step. A worker that dies
makes the others' next collective fail; `lost_worker` turns that error into WorkerLost naming it.

The join itself is watched from a supervising process (join_watch.py), told here when the wait
starts and ends. TensorFlow: imported lazily.
"""

from __future__ import annotations

# Imports inside functions are deliberate: TensorFlow and Keras, and the modules that reach them,
# load on first use, so importing this module (the app's pages, the command line) stays light.
import os
import re
import shutil
import signal
import tempfile
import threading
from pathlib import Path

from alexnet_core.store import fileio, layout

JOIN_PIPE_ENV = "ALEXNET_JOIN_PIPE"  # a pipe to the process that supervises this worker's join (join_watch.py)


class WorkerLost(RuntimeError):
    """Another worker of a multi-worker run stopped answering."""


def tell_supervisor(line: str) -> None:
    """One line to the supervising process, if there is one: `joining`, `joined`, `scratch PATH`."""
    fd = os.environ.get(JOIN_PIPE_ENV)
    if not fd:
        return
    try:
        os.write(int(fd), (line + "\n").encode())
    except (OSError, ValueError):
        pass


def strategy_name(strategy) -> str:
    """The strategy's public name (MultiWorkerMirroredStrategy's class is CollectiveAllReduceStrategy)."""
    import tensorflow as tf

    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return "MultiWorkerMirroredStrategy"
    return type(strategy).__name__


def scratch_folder(shared_dir: Path, position: int) -> Path:
    """A private folder for a worker other than the chief, holding a copy of the run's last commit
    (read from the shared run folder, if this worker can see it) so it resumes where the chief does."""
    scratch = Path(tempfile.mkdtemp(prefix=f"alexnet-worker{position}-"))
    source = shared_dir / layout.CHECKPOINTS
    record = fileio.read_json(source / layout.STATE, None) if (source / layout.STATE).exists() else None
    (scratch / layout.CHECKPOINTS).mkdir()
    if isinstance(record, dict) and isinstance(record.get("last"), str) and "/" not in record["last"]:
        if (source / record["last"]).exists():
            shutil.copy2(source / record["last"], scratch / layout.CHECKPOINTS / record["last"])
            shutil.copy2(source / layout.STATE, scratch / layout.CHECKPOINTS / layout.STATE)
    if (shared_dir / layout.CONFIG).exists():
        shutil.copy2(shared_dir / layout.CONFIG, scratch / layout.CONFIG)
    return scratch


def join_workers(pick_strategy, cluster, status, log, restore_signals):
    """MultiWorkerMirroredStrategy (`pick_strategy()`), created once every worker has joined.

    TensorFlow waits for the other workers inside C++ holding Python's lock, so nothing of
    Python runs in this process meanwhile (no thread, no signal handler; SIGTERM is taken by
    TensorFlow's preemption watcher). `train` therefore runs a multi-worker trainer as the
    child of a small supervising process (join_watch.py), told here when the wait starts and
    ends: it says whom the wait is for, and ends this process on the join timeout, Stop, SIGTERM
    or Ctrl-C. Alone (no supervisor), Ctrl-C keeps its default meaning for the wait.
    `restore_signals()` puts the trainer's own handlers back after the wait."""
    status.update(phase="joining", message=f"Waiting for the other workers to join ({cluster.size} in all)")
    main = threading.current_thread() is threading.main_thread()
    supervised = bool(os.environ.get(JOIN_PIPE_ENV))
    if main:  # supervised: the supervisor answers Ctrl-C until the join ends
        signal.signal(signal.SIGINT, signal.SIG_IGN if supervised else signal.SIG_DFL)
    tell_supervisor("joining")
    try:
        strategy = pick_strategy()
    finally:
        if main:
            restore_signals()
    tell_supervisor("joined")
    status.update(phase="loading", message="Loading data")
    log(f"All {cluster.size} workers joined")
    return strategy


def lost_worker(exc: BaseException, cluster, kept: int) -> WorkerLost | None:
    """WorkerLost naming the worker that a failed collective or RPC points to (a multi-worker run
    that has committed `kept` epochs; it failed during the next one), or None for any other error."""
    import tensorflow as tf

    who = cluster.lost_task(str(exc)) if cluster else None
    cluster_error = isinstance(exc, (tf.errors.UnavailableError, tf.errors.CancelledError, tf.errors.AbortedError,
                                     tf.errors.DeadlineExceededError))
    if cluster is None or not (who or cluster_error):
        return None
    text = str(exc)
    grpc = re.search(r'grpc_message:"([^"]{1,200})"', text)
    if "stopped sending heartbeats" in text:
        detail = "it stopped sending heartbeats"
    else:
        detail = f"{type(exc).__name__}: {grpc.group(1)}" if grpc else type(exc).__name__
    return WorkerLost(f"Lost contact with {who or 'another worker'} during epoch {kept + 1} ({detail}). The run "
                      f"is kept as it was after epoch {kept}; start every worker again with --resume to continue "
                      "from there.")


def check_workers_agree(strategy, done: int, stop_wished: bool, shared_dir: Path) -> bool:
    """The first collective: every worker must resume from the same epoch (a worker that cannot see
    the run folder would start from scratch while the others resume: RunError), and it carries
    every worker's stop wish so far. True: some worker was asked to stop, so all stop together.
    A failed collective raises TensorFlow's OpError (see lost_worker)."""
    import tensorflow as tf

    @tf.function
    def gather(stop):
        wish = tf.stack([tf.constant(float(done)), tf.constant(float(done) ** 2), tf.constant(1.0), stop])
        return strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(lambda: tf.identity(wish)), axis=None)

    total, squares, count, stop = (float(v) for v in gather(tf.constant(float(stop_wished))).numpy())
    if stop > 0:
        return True
    if abs(total * total - count * squares) > 1e-6 * max(1.0, squares * count):
        raise layout.RunError(
            f"The workers disagree on where this run stands: this one sees {done} completed epochs, the "
            f"average over all of them is {total / count:g}. Every worker must read the same run folder "
            f"({shared_dir}): put it on storage they all share, as docs/DISTRIBUTED.md says.")
    return False
