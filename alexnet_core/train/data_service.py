"""Training input decoded and augmented on other machines' cores: TensorFlow's tf.data service.

`python -m alexnet_core data-service dispatcher|worker` runs TensorFlow's own DispatchServer or
WorkerServer until SIGTERM or Ctrl-C (`serve_dispatcher`, `serve_worker`). `train --data-service
ADDRESS` (TrainConfig.data_service) builds the training pipeline (inputs.data.make_dataset: decode,
crop, augmentation, batches of one replica's share) on the service's workers; the trainer only
receives finished batches (`ServiceInput.stream`).

Processing mode: `distributed_epoch`. The dispatcher hands each image (a split of the
from_tensor_slices source; the full shuffle of the paths happens there too) to exactly one worker,
so one pass over the data yields every image exactly once, whatever the number of workers. The
pipeline given to the service is one pass (`repeat=False`, no cache: a worker's cache would replay
its own share); the trainer asks for pass after pass (each a new job, pass i shuffled with the
run's seed + i: a job of the same pass would repeat its order) and cuts the passes into
batches of exactly one replica's share (`rebatch`), so an epoch is the same number of steps over
the same stream as without the service. TensorFlow's guarantee is at-most-once: the images a
worker holds when it is lost are missed for that pass (docs/DISTRIBUTED.md).

A lost worker: the service waits for workers forever, blocking the training step inside
TensorFlow. The `Watchdog` sees each batch arrive (a tap at the end of the client's pipeline) and
each step end; when a step has waited ALEXNET_DATA_SERVICE_TIMEOUT seconds (default 60) with no
batch arriving, it records the run `failed` (reason `data`) with a message naming the address and
what to do, and ends the process: only completed epochs are ever kept, so resume continues from
the last one. At start, the dispatcher must answer within seconds and one worker must serve a probe
within that timeout. A dispatcher that has lost its workers did not serve new `distributed_epoch` jobs
with new workers in our tests (TensorFlow 2.21), so the message says to start the dispatcher again
too. TensorFlow: imported lazily.
"""

from __future__ import annotations

# Imports inside functions are deliberate: TensorFlow and Keras, and the modules that reach them,
# load on first use, so importing this module (the app's pages, the command line) stays light.
import math
import os
import signal
import socket
import sys
import threading
import time

from alexnet_core.inputs.splits import DataError
from alexnet_core.settings.config import ConfigError, service_address
from alexnet_core.train.observers import Observer

PROCESSING_MODE = "distributed_epoch"
TIMEOUT_ENV = "ALEXNET_DATA_SERVICE_TIMEOUT"
TIMEOUT_S = 60.0  # a step that waits this long for a batch from the service ends the run
FIRST_BATCH_S = 600.0  # the first step also traces the step function: it may wait this long for its first batch
CONNECT_S = 5.0  # the dispatcher must accept a connection within this
FAILED_EXIT = 1  # the command line's exit code of a failed run (exits.FAILED)
HEARTBEAT_MS = 2_000  # a worker tells the dispatcher it is alive this often (TensorFlow's default: 30 s)
WORKER_TIMEOUT_MS = 10_000  # the dispatcher drops a worker silent this long, so its jobs go on without it
JOB_GC_TIMEOUT_MS = 10_000  # a job no trainer reads (its trainer gone) is dropped after this, freeing its workers


class DataServiceError(DataError):
    """The tf.data service cannot serve this run; the message names its address and what to do."""


def timeout_s() -> float:
    """ALEXNET_DATA_SERVICE_TIMEOUT in seconds (default 60)."""
    text = os.environ.get(TIMEOUT_ENV, "").strip()
    if not text:
        return TIMEOUT_S
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(f"{TIMEOUT_ENV} must be a number of seconds above 0, got {text!r}")
    return value


def normalised(address: str) -> str:
    """"grpc://HOST:PORT" from "grpc://HOST:PORT" or "HOST:PORT"; ConfigError otherwise."""
    target = service_address(address)
    if target is None:
        raise ConfigError(f"A tf.data service address is grpc://HOST:PORT or HOST:PORT, got {address!r}")
    return target


def host_port(address: str) -> tuple[str, int]:
    host, _, port = normalised(address).removeprefix("grpc://").rpartition(":")
    return host.strip("[]"), int(port)


def _plain(address: str) -> str:
    return normalised(address).removeprefix("grpc://")


def _worker_hint(address: str) -> str:
    return f"python -m alexnet_core data-service worker --dispatcher {_plain(address)}"


def check_dispatcher(address: str, seconds: float = CONNECT_S) -> None:
    """DataServiceError, within `seconds`, when nothing accepts a connection at the dispatcher's address."""
    host, port = host_port(address)
    try:
        with socket.create_connection((host, port), timeout=seconds):
            pass
    except OSError as exc:
        why = "no answer" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
        raise DataServiceError(
            f"No tf.data service dispatcher answers at {_plain(address)} ({why}). Start one there "
            f"(python -m alexnet_core data-service dispatcher --port {port}) and at least one worker "
            f"({_worker_hint(address)}), or give the address the dispatcher printed.") from exc


def check_workers(address: str, seconds: float) -> None:
    """DataServiceError when no worker of the service serves a one-element probe job within `seconds`.
    The probe waits in a daemon thread: the service itself would wait for a worker forever."""
    import tensorflow as tf

    probe = tf.data.Dataset.range(1).apply(
        tf.data.experimental.service.distribute(processing_mode="parallel_epochs", service=normalised(address)))
    answer: list = []

    def fetch():
        try:
            answer.append(next(iter(probe)))
        except Exception as exc:  # reported below, in the caller's thread
            answer.append(exc)

    thread = threading.Thread(target=fetch, name="data-service-probe", daemon=True)
    thread.start()
    thread.join(seconds)
    if not answer:
        raise DataServiceError(
            f"The tf.data service at {_plain(address)} has no worker that answers (waited {seconds:g} s). Start "
            f"one ({_worker_hint(address)}), then train again or resume; {TIMEOUT_ENV} sets how long to wait.")
    if isinstance(answer[0], Exception):
        raise DataServiceError(f"The tf.data service at {_plain(address)} refused a probe job: "
                               f"{type(answer[0]).__name__}: {str(answer[0])[:300]}") from answer[0]


class Watchdog(Observer):
    """Ends a run whose training step has waited too long for the service (see the module's text).
    `tap(dataset)` stamps each batch's arrival; the step's start and end come from the hooks."""

    def __init__(self, address: str, status, log, timeout: float):
        self.address, self.status, self.log, self.timeout = address, status, log, timeout
        self.arrived = -math.inf  # time.monotonic() of the last batch that came from the service
        self.arrivals = 0
        self.waiting_since: float | None = None  # a training step has been waiting for a batch since then
        self.state = None
        self.finished = threading.Event()
        self.thread = threading.Thread(target=self._watch, name="data-service-watchdog", daemon=True)

    def tap(self, dataset):
        import numpy as np
        import tensorflow as tf

        def stamp():
            self.arrived = time.monotonic()
            self.arrivals += 1
            return np.int64(0)

        def passed(*batch):
            with tf.control_dependencies([tf.py_function(stamp, [], tf.int64)]):
                return tf.nest.map_structure(tf.identity, batch)

        return dataset.map(passed)

    def on_train_begin(self, state):
        self.state = state
        self.thread.start()

    def on_epoch_begin(self, state):
        self.waiting_since = time.monotonic()

    def on_step(self, state):
        self.waiting_since = time.monotonic()

    def on_phase(self, state):  # validating or saving: local work, nothing asked of the service
        self.waiting_since = None

    def on_end(self, state):
        self.waiting_since = None
        self.finished.set()

    def starved_for(self, now: float) -> float | None:
        """Seconds the current step has waited with no batch arriving, when that is over its limit."""
        since = self.waiting_since
        if since is None or self.arrived >= since:
            return None
        limit = self.timeout if self.arrivals else max(self.timeout, FIRST_BATCH_S)
        return now - since if now - since > limit else None

    def _watch(self) -> None:
        while not self.finished.wait(min(0.5, self.timeout / 4)):
            waited = self.starved_for(time.monotonic())
            if waited is not None:
                self._fail(waited)

    def _fail(self, waited: float) -> None:
        state = self.state
        done = state.completed_epochs if state is not None else 0
        run_dir = state.run_dir if state is not None else "RUN_DIR"
        kept = f"it continues after epoch {done}, its last completed one" if done else "no epoch had been completed"
        port = host_port(self.address)[1]
        message = (f"No training images came from the tf.data service at {_plain(self.address)} for {waited:.0f} s: "
                   f"its workers are gone or stalled. Start the dispatcher again on the same port (python -m "
                   f"alexnet_core data-service dispatcher --port {port}) and its workers ({_worker_hint(self.address)}), "
                   f"then resume this run (python -m alexnet_core train --resume {run_dir}): {kept}. "
                   f"{TIMEOUT_ENV} sets how long to wait (now {self.timeout:g} s).")
        try:
            self.status.update(state="failed", reason="data", message=message, finished=time.time(), phase=None,
                               completed_epochs=done)
        except OSError as exc:
            message += f" (status.json could not be written: {exc})"
        self.log(f"error: {message}")
        sys.stdout.flush()
        sys.stderr.flush()
        # The training step is blocked inside TensorFlow, waiting for the service, and cannot be
        # interrupted from Python: ending the process is the only way out. Every commit is atomic,
        # so nothing but the epoch in progress is lost; the trainer's lock goes with the process.
        os._exit(FAILED_EXIT)


class ServiceInput:
    """A trainer's side of the service: checked at start (dispatcher, a worker), then the training
    stream (`stream`) and the watchdog (`watchdog`, an observer) of the run."""

    def __init__(self, address: str, status, log, cluster=None):
        if cluster is not None:
            raise ConfigError("--data-service with a multi-worker run (--workers or TF_CONFIG) is not supported yet: "
                              "use the tf.data service from one trainer (all of its GPUs), or train on several "
                              "machines without it (docs/DISTRIBUTED.md)")
        self.address = normalised(address)
        self.timeout = timeout_s()
        check_dispatcher(self.address)
        check_workers(self.address, self.timeout)
        self.watchdog = Watchdog(self.address, status, log, self.timeout)
        log(f"Training input from the tf.data service at {_plain(self.address)} ({PROCESSING_MODE}: "
            "every image once per pass)")

    def stream(self, one_pass, batch_size: int, seed: int):
        """The training batches: `one_pass(**changes)` (make_dataset with these arguments changed)
        built as one finite pass for the service's workers, pass i shuffled with seed `seed` + i and
        run as a job of its own, the passes cut into batches of exactly `batch_size`, as the local
        pipeline's repeat-then-batch does."""
        import tensorflow as tf

        def job(index):
            # This function's own graph-level seed: the op seeds below are tensors, which TensorFlow
            # cannot combine with a process-wide seed of 0 (keras' set_random_seed(0) sets one).
            tf.random.set_seed(None)
            remote = one_pass(seed=index + seed, repeat=False, cache_budget=0, drop_remainder=False, shard=None)
            return remote.apply(tf.data.experimental.service.distribute(processing_mode=PROCESSING_MODE,
                                                                        service=self.address))

        passes = tf.data.Dataset.range(2**62).flat_map(job)  # a new job, and a new shuffle, per pass
        return self.watchdog.tap(passes.rebatch(batch_size, drop_remainder=True))


# --- the servers ------------------------------------------------------------------------------------


def _until_stopped() -> None:
    """Wait until SIGTERM or Ctrl-C (the servers run in TensorFlow's threads meanwhile)."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(1.0):
        pass


def _port(target: str) -> int:
    return int(target.rpartition(":")[2])


def serve_dispatcher(port: int = 0, work_dir: str | None = None, host: str | None = None, out=print,
                     wait=_until_stopped) -> str:
    """Run a dispatcher on `port` (0: a free one) until stopped; returns the address to give workers
    and trainers. `work_dir` keeps its journal, so a restarted dispatcher resumes its jobs."""
    import tensorflow as tf

    if not 0 <= port <= 65535:
        raise ConfigError(f"--port must be 0..65535, got {port}")
    try:
        server = tf.data.experimental.service.DispatchServer(tf.data.experimental.service.DispatcherConfig(
            port=port, work_dir=work_dir, fault_tolerant_mode=bool(work_dir), worker_timeout_ms=WORKER_TIMEOUT_MS,
            job_gc_check_interval_ms=2_000, job_gc_timeout_ms=JOB_GC_TIMEOUT_MS))
    except Exception as exc:  # the port taken, the folder unwritable: TensorFlow's own words
        raise DataServiceError(f"Cannot start a tf.data service dispatcher on port {port}: "
                               f"{type(exc).__name__}: {str(exc)[:300]}") from exc
    address = f"{host or socket.gethostname()}:{_port(server.target)}"
    out(f"tf.data service dispatcher at {address}")
    out(f"  workers:  python -m alexnet_core data-service worker --dispatcher {address}")
    out(f"  trainer:  python -m alexnet_core train --data-service {address} ...")
    sys.stdout.flush()
    wait()
    return address


def serve_worker(dispatcher: str, port: int = 0, host: str | None = None, out=print, wait=_until_stopped) -> str:
    """Run a worker for `dispatcher` until stopped; `host` is the name or address trainers reach this
    machine at (default its host name). Returns the worker's address."""
    import tensorflow as tf

    if not 0 <= port <= 65535:
        raise ConfigError(f"--port must be 0..65535, got {port}")
    check_dispatcher(dispatcher)
    host = host or socket.gethostname()
    from alexnet_core.inputs.records import roomy_allocator

    roomy_allocator()  # the worker runs the prepared stream's maps and batches (records.py says why)
    try:
        server = tf.data.experimental.service.WorkerServer(tf.data.experimental.service.WorkerConfig(
            dispatcher_address=_plain(dispatcher), worker_address=f"{host}:%port%", port=port,
            heartbeat_interval_ms=HEARTBEAT_MS))
    except Exception as exc:
        raise DataServiceError(f"Cannot start a tf.data service worker on port {port}: "
                               f"{type(exc).__name__}: {str(exc)[:300]}") from exc
    address = f"{host}:{_port(server._address)}"
    out(f"tf.data service worker at {address}, serving the dispatcher at {_plain(dispatcher)}")
    sys.stdout.flush()
    wait()
    return address
