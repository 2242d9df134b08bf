"""Observers: a feature joins a training run as an observer class, without an edit of the loop.

The rule for an observer that raises (observers.py): the run ends as with any error in the loop
(failed, an internal error), and every epoch committed before it stays committed and resumable."""

import threading

import pytest

from alexnet_core.settings.config import TrainConfig
from alexnet_core.store import fileio, layout, liveness
from alexnet_core.train import lifecycle
from alexnet_core.train.checkpoints import epoch_file
from alexnet_core.train.loop import Trainer
from alexnet_core.train.observers import Observer
from alexnet_core.train.training import Ending, run_training
from tests.helpers import TINY, make_image_folder

STEPS = 3


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("observers") / "data", classes=3, per_class=12)


def new_run(folder, root, epochs):
    config = TrainConfig(data=str(folder), epochs=epochs, steps_per_epoch=STEPS, log_every=1, **TINY)
    return config, lifecycle.new_run(config, root)


class Recorder(Observer):
    """Every call it gets, with what the run folder holds at that moment."""

    def __init__(self):
        self.calls = []

    def on_start(self, state):
        self.calls.append(("start", state.completed_epochs))

    def on_train_begin(self, state):
        self.calls.append(("train_begin", state.steps_per_epoch, state.model is not None))

    def on_epoch_begin(self, state):
        self.calls.append(("epoch_begin", state.epoch))

    def on_step(self, state):
        self.calls.append(("step", state.epoch, state.step, state.global_step))

    def on_validated(self, state, results):
        self.calls.append(("validated", state.epoch, len(results["label"]) == results["images"]))

    def on_epoch_committed(self, state):
        record = fileio.read_json(state.run_dir / layout.CHECKPOINTS / layout.STATE)
        published = list(layout.read_metrics(state.run_dir)["epoch"])
        on_disk = (state.run_dir / layout.CHECKPOINTS / epoch_file(state.epoch)).exists()
        self.calls.append(("committed", state.epoch, state.completed_epochs, record["completed_epochs"],
                           published[-1], on_disk, record["metrics"][-1] == state.metrics))

    def on_end(self, state):
        self.calls.append(("end", state.outcome, state.completed_epochs, type(state.error).__name__))


class Boom(Observer):
    def __init__(self, epoch):
        self.epoch = epoch

    def on_epoch_committed(self, state):
        if state.epoch == self.epoch:
            raise RuntimeError("an observer's bug")


def expected_epoch(epoch):
    return [("epoch_begin", epoch),
            *[("step", epoch, step, (epoch - 1) * STEPS + step) for step in range(1, STEPS + 1)],
            ("validated", epoch, True),
            ("committed", epoch, epoch, epoch, epoch, True, True)]


def test_a_new_observer_sees_every_step_each_commit_on_disk_and_the_end_once(folder, tmp_path):
    config, run_dir = new_run(folder, tmp_path / "runs", epochs=2)
    recorder = Recorder()
    status = Trainer(config, run_dir, log=lambda m: None, observers=[recorder]).run()
    assert status["state"] == "finished" and status["completed_epochs"] == 2
    assert recorder.calls == [("start", 0), ("train_begin", STEPS, True), *expected_epoch(1), *expected_epoch(2),
                              ("end", "finished", 2, "NoneType")]
    assert len(layout.read_steps(run_dir)) == 2 * STEPS  # the run's own observers ran beside it


def test_an_observer_that_raises_fails_the_run_and_keeps_every_committed_epoch(folder, tmp_path):
    config, run_dir = new_run(folder, tmp_path / "runs", epochs=3)
    recorder, messages = Recorder(), []
    assert run_training(config, run_dir, log=messages.append, observers=[Boom(epoch=2), recorder]) is Ending.FAILED
    status = liveness.read_status(run_dir)
    assert status["state"] == "failed" and status["reason"] == "internal", status
    assert "RuntimeError: an observer's bug" in status["message"] and "Traceback" in (run_dir / layout.LOG).read_text()
    assert status["completed_epochs"] == 2  # the epoch committed before the error is recorded as committed
    assert fileio.read_json(run_dir / layout.CHECKPOINTS / layout.STATE)["completed_epochs"] == 2
    assert [c for c in recorder.calls if c[0] == "end"] == [("end", None, 2, "RuntimeError")]  # once, with the error
    assert not [t for t in threading.enumerate() if t.name == "run-monitor"]  # the heartbeat ended with the run

    assert run_training(config, run_dir, log=messages.append) is Ending.DONE  # resumed after epoch 2, not from scratch
    assert list(layout.read_metrics(run_dir)["epoch"]) == [1, 2, 3]
    assert fileio.read_json(run_dir / layout.CHECKPOINTS / layout.STATE)["iterations"] == 3 * STEPS
    assert liveness.read_status(run_dir)["state"] == "finished"
