"""Observers: what a training run does besides training, hooked into the loop (loop.Trainer).

The loop calls its observers' hooks at fixed points of a run and shares one `RunState` with
them; a feature is an observer class, not an edit of the loop. The run's own features are
`builtin_observers()`: status.json's progress and heartbeat (StatusObserver), steps.csv
(StepLogObserver), the epoch snapshots (SnapshotObserver) and TensorBoard's event files
(TensorBoardObserver); `Trainer(..., observers=[...])` adds more, called after them.

Hooks, each optional (Observer defines every one as doing nothing), called in this order:

    on_start(state)               the trainer holds the run folder; nothing is loaded yet
    on_train_begin(state)         data, model and compiled steps ready; before the first epoch
    on_epoch_begin(state)         state.epoch is about to be trained (state.step is 0)
    on_step(state)                after each step: state.step, global_step, loss, batch
    on_phase(state)               state.phase became "validating" or "saving" (the epoch's end)
    on_validated(state, results)  the epoch's validation pass (loop.evaluate_distributed's dict,
                                  every image's label and predicted class included), before the
                                  commit: what it writes exists for every committed epoch
    on_epoch_committed(state)     the epoch's commit is on disk: state.completed_epochs is
                                  state.epoch and state.metrics its row of metrics.csv
    on_end(state)                 once, however the run ends: state.outcome and state.message
                                  (finished, stopped, diverged, failed), or state.error, the
                                  exception that is ending it; before the final status is written

A run that ends before training (a stop, bad data) goes from wherever it was to on_end, so an
observer closes only what it opened.

Errors. An observer is part of the run: an exception from a hook ends the run as an error in
the loop does (failed; a full disk as a disk failure, anything else as an internal error with
its traceback in train.log). It never costs a committed epoch: no hook runs between an epoch's
checkpoint and its commit record, so the run stays exactly as its last commit left it, and
`train --resume` continues from there. on_end is called on every observer even when one of them
raises (each may have something to close); the first error is raised after all of them ran.
"""

from __future__ import annotations

# Imports inside functions are deliberate: TensorFlow and Keras, and the modules that reach them,
# load on first use, so importing this module (the app's pages, the command line) stays light.
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from alexnet_core.settings.config import TrainConfig
from alexnet_core.store import layout
from alexnet_core.train.monitor import Monitor, Progress, StatusWriter, StepLog
from alexnet_core.train.optimizer import current_learning_rate

HOOKS = ("on_start", "on_train_begin", "on_epoch_begin", "on_step", "on_phase", "on_validated",
         "on_epoch_committed", "on_end")


@dataclass(eq=False)
class RunState:
    """What the loop knows about its run, shared with every observer: the loop writes it,
    observers read it."""

    run_dir: Path  # where this trainer writes (a worker other than the chief: its scratch folder)
    config: TrainConfig  # the run's settings (a fine-tuning run: with the base model's network)
    chief: bool = True  # this trainer writes the run folder (False: another worker of several)
    phase: str = "starting"  # before the first epoch: base, loading, building, preparing; then training,
    #                         validating, saving
    epoch: int = 0  # the epoch being trained, from 1
    step: int = 0  # steps taken in this epoch
    steps_per_epoch: int = 0
    global_step: int = 0  # (epoch - 1) x steps_per_epoch + step: the step's number in steps.csv
    committed_steps: int = 0  # the optimizer's steps in the last commit
    standardisation: tuple | None = None  # the run's (mean, std) of its recorded preprocessing; None: ImageNet's
    loss: float = math.nan  # this step's training loss (mean over the global batch)
    batch: dict = field(default_factory=dict)  # this step's sums over every replica: loss, correct, top5, count
    completed_epochs: int = 0  # epochs committed to disk
    metrics: dict = field(default_factory=dict)  # the last committed epoch's row (metrics.csv)
    history: list[dict] = field(default_factory=list)  # every committed epoch's row
    model: Any = None
    optimizer: Any = None
    source: Any = None  # the data (inputs.data.DataSource)
    num_classes: int = 0
    input_size: int = 0
    outcome: str | None = None  # at the end: finished, stopped, diverged or failed
    message: str | None = None  # at the end: what status.json says about it
    error: BaseException | None = None  # at the end: the exception ending the run, if one does

    @property
    def epochs(self) -> int:
        return self.config.epochs

    @property
    def learning_rate(self) -> float:
        return current_learning_rate(self.optimizer)


class Observer:
    """The observer protocol: every hook, doing nothing. Subclass and define the hooks you need
    (an object of any class that has some of them works too)."""

    def on_start(self, state: RunState) -> None:
        pass

    def on_train_begin(self, state: RunState) -> None:
        pass

    def on_epoch_begin(self, state: RunState) -> None:
        pass

    def on_step(self, state: RunState) -> None:
        pass

    def on_phase(self, state: RunState) -> None:
        pass

    def on_validated(self, state: RunState, results: dict) -> None:
        pass

    def on_epoch_committed(self, state: RunState) -> None:
        pass

    def on_end(self, state: RunState) -> None:
        pass


class Observers:
    """A run's observers, called in order. A hook an observer leaves as Observer's no-op is not
    called at all, so the step loop calls only the on_step hooks that do something."""

    def __init__(self, observers=()):
        self.observers = list(observers)
        self.ended = False

    def hooks(self, name: str) -> list:
        """The bound `name` hooks of the observers that define one, in order."""
        assert name in HOOKS, name
        found = []
        for observer in self.observers:
            hook = getattr(observer, name, None)
            if hook is not None and getattr(type(observer), name, None) is not getattr(Observer, name):
                found.append(hook)
        return found

    def call(self, name: str, state: RunState, *args) -> None:
        for hook in self.hooks(name):
            hook(state, *args)

    def end(self, state: RunState) -> Exception | None:
        """on_end on every observer, once per run (later calls do nothing), even when one raises;
        returns the first error, for the caller to raise when the run's ending is recorded."""
        if self.ended:
            return None
        self.ended = True
        first = None
        for hook in self.hooks("on_end"):
            try:
                hook(state)
            except Exception as exc:
                first = first or exc
        return first


def builtin_observers(status: StatusWriter, stop) -> list[Observer]:
    """The run's own features: status.json's progress and heartbeat (which also watches for a stop
    request and sets `stop`, a threading.Event), steps.csv, epoch snapshots, TensorBoard."""
    return [StatusObserver(status, stop), StepLogObserver(), SnapshotObserver(), TensorBoardObserver()]


class StatusObserver(Observer):
    """status.json while the run trains: the epoch, step and phase, completed epochs, speed and
    time left, rewritten every 2 s by the heartbeat thread (monitor.Monitor) from on_start on, so
    a slow data load, validation pass or checkpoint never makes a live run look dead. The thread
    also watches for the run's stop.request; a status write it could not make is raised at the
    next step."""

    def __init__(self, status: StatusWriter, stop):
        self.status, self.stop = status, stop
        self.progress: Progress | None = None
        self.monitor: Monitor | None = None

    def on_start(self, state):
        self.progress = Progress(state.epochs, 0, state.config.batch_size)
        self.progress.epoch = state.completed_epochs
        self.monitor = Monitor(self.status, self.progress, self.stop, state.run_dir)
        self.monitor.start()  # heartbeats from here on, however long loading the data takes

    def on_train_begin(self, state):
        self.progress.steps_per_epoch = state.steps_per_epoch

    def on_epoch_begin(self, state):
        self.progress.begin_epoch(state.epoch)
        first = self.progress.phase == "first step"
        self.status.update(epoch=state.epoch, step=0, phase=self.progress.phase,
                           message=f"Epoch {state.epoch} of {state.epochs}"
                                   + (": compiling the training step and running the first one" if first else ""))

    def on_step(self, state):
        if self.monitor.error:
            raise self.monitor.error
        first = self.progress.phase == "first step"
        self.progress.stepped()
        if first:  # compiled and taken: the status says so now, not at the next heartbeat
            self.status.update(**self.progress.fields(), message=f"Epoch {state.epoch} of {state.epochs}")

    def on_phase(self, state):
        self.progress.phase = state.phase
        where = f"Epoch {state.epoch} of {state.epochs}"
        if state.phase == "validating":
            self.status.update(phase="validating", message=f"{where}: validating")
        elif state.phase == "saving":
            self.status.update(phase="saving", step=state.steps_per_epoch, message=f"{where}: saving checkpoint")

    def on_epoch_committed(self, state):
        self.status.update(completed_epochs=state.completed_epochs, phase="training")

    def on_end(self, state):
        if self.monitor:
            self.monitor.close()


class StepLogObserver(Observer):
    """steps.csv: every log_every-th step's loss, accuracy and learning rate, and each of the first
    log_every steps this trainer takes (a new run's, or a resumed run's), so the live curves start
    with the first step instead of the log_every-th. It holds only steps that stay part of the
    run: those after the last commit are dropped when training resumes and when the run stops
    mid-epoch (the resumed run redoes them)."""

    def __init__(self):
        self.log: StepLog | None = None
        self.every = 1
        self.taken = 0  # steps this trainer has taken

    def on_train_begin(self, state):
        layout.truncate_steps(state.run_dir, state.committed_steps)
        self.every = state.config.log_every
        self.log = StepLog(state.run_dir)

    def on_step(self, state):
        self.taken += 1
        if self.taken <= self.every or state.global_step % self.every == 0:
            batch = state.batch
            self.log.log(state.global_step, state.epoch, state.loss, batch["correct"] / max(batch["count"], 1.0),
                         state.learning_rate)

    def on_end(self, state):
        if self.log is None:
            return
        self.log.close()
        self.log = None
        if state.outcome == "stopped" and state.step:  # mid-epoch: the resumed run redoes that epoch's steps
            layout.truncate_steps(state.run_dir, state.committed_steps)


class TensorBoardObserver(Observer):
    """tensorboard/train and tensorboard/validation: every committed epoch's metrics."""

    def __init__(self):
        self.writers: dict | None = None

    def on_train_begin(self, state):
        import tensorflow as tf

        folder = state.run_dir / layout.TENSORBOARD
        self.writers = {"train": tf.summary.create_file_writer(str(folder / "train")),
                        "validation": tf.summary.create_file_writer(str(folder / "validation"))}

    def on_epoch_committed(self, state):
        import tensorflow as tf

        for key, value in state.metrics.items():
            if key == "epoch":
                continue
            side = "validation" if key.startswith("val_") else "train"
            with self.writers[side].as_default():
                tf.summary.scalar(f"epoch_{key.removeprefix('val_')}", value, step=state.epoch)
        for writer in self.writers.values():
            writer.flush()


class SnapshotObserver(Observer):
    """The epoch snapshots (snapshots.py) of a run with snapshots on and a validation set: every
    validation prediction, conv1's kernels and the probe images' top-5, written before each
    commit. Given a run folder, a model and probe inputs it writes alone (`write`)."""

    def __init__(self, run_dir: Path | None = None, model=None, probe=None):
        self.run_dir = self.model = self.probe = self.predict = None
        if probe is not None:
            self.attach(run_dir, model, probe)

    def attach(self, run_dir: Path, model, probe) -> None:
        import tensorflow as tf

        self.run_dir, self.model, self.probe = Path(run_dir), model, probe
        # Compiled once: half the time of an eager call, every epoch.
        self.predict = tf.function(lambda x: model(x, training=False), autograph=False)

    def on_train_begin(self, state):
        val = state.source.val if state.source is not None else None
        if not state.config.snapshots or val is None or not len(val):
            return
        probe = probe_inputs(state.run_dir, val, state.num_classes, state.input_size, state.standardisation)
        if probe is not None:
            self.attach(state.run_dir, state.model, probe)

    def on_validated(self, state, results):
        if self.probe is not None:  # before the commit: a committed epoch has its snapshot
            self.write(state.epoch, results)

    def write(self, epoch: int, validation: dict) -> Path:
        from alexnet_core.models.anatomy import conv1_kernels
        from alexnet_core.train.snapshots import write_epoch

        probs = np.asarray(self.predict(self.probe), dtype=np.float32)
        top = np.argsort(-probs, axis=1, kind="stable")[:, :min(5, probs.shape[1])]
        return write_epoch(self.run_dir, epoch, validation["label"], validation["predicted"],
                           conv1_kernels(self.model), top, np.take_along_axis(probs, top, axis=1))


def probe_inputs(run_dir: Path, split, num_classes: int, size: int, standardisation: tuple | None = None):
    """The probe set's network inputs (None if none of its images reads), written once to
    snapshots/probe.npz as thumbnails. `standardisation`: the run's (mean, std), else ImageNet's."""
    from alexnet_core.inputs.data import Split, make_dataset
    from alexnet_core.inputs.preprocess import MEAN, STD
    from alexnet_core.train.snapshots import choose_probe, write_probe

    chosen = choose_probe(split.labels)
    part = Split(split.labels[chosen], paths=None if split.paths is None else [split.paths[i] for i in chosen],
                 images=None if split.images is None else split.images[chosen])
    mean, std = standardisation or (MEAN, STD)
    batches = list(make_dataset(part, num_classes, size, len(chosen), standardisation=(mean, std)))  # unreadable dropped
    if not batches:
        return None
    x = np.concatenate([b[0].numpy() for b in batches])
    labels = np.concatenate([np.argmax(b[1].numpy(), axis=-1) for b in batches])
    thumbnails = np.clip((x * np.array(std) + np.array(mean)) * 255 + 0.5, 0, 255).astype(np.uint8)
    write_probe(run_dir, thumbnails, labels)
    return x
