"""The Train page tells the truth: the first run on the bundled sample is one that works (and a
recipe made for other data says what to expect before Start), the run picker says each run's
state as it is now, the status line says what the trainer does before its first step, the curves
start with the first step (of a new run and of a resumed one), and in-training figures are
labelled apart from the model's headline accuracy."""

import os

import pandas as pd
import streamlit as st

from alexnet_core import locations
from alexnet_core.inputs import data as data_module
from alexnet_core.settings.config import TrainConfig
from alexnet_core.settings.recipes import RECIPES
from alexnet_core.store import fileio, layout, liveness
from alexnet_core.train import lifecycle
from alexnet_core.train.loop import Trainer
from alexnet_core.train.observers import Observer
from alexnet_ui.train_view import progress_words
from tests.helpers import TINY, make_image_folder
from tests.test_pages import fake_run, metric, run_page


def picker_labels(at) -> dict[str, str]:
    return {label.split(":")[0]: label.rsplit(", ", 1)[-1] for label in at.selectbox(key="train_run").options}


def test_the_run_picker_says_each_run_as_it_is_now():
    root = locations.runs_root()
    live = fake_run(root, "live-a", state="running", pid=os.getpid())
    done = fake_run(root, "done-b", state="running", pid=os.getpid())
    lock, other = liveness.TrainerLock(live).acquire(), liveness.TrainerLock(done).acquire()
    try:
        at = run_page("pages/train.py")
        assert picker_labels(at) == {"live-a": "running", "done-b": "running", "demo": "finished"}
        liveness.write_status(live, state="stopped", message="Stopped after epoch 2 of 3")
        liveness.write_status(done, state="finished", message="Finished 3 epochs")
    finally:
        lock.release()
        other.release()
    at.run()
    assert not at.exception
    assert picker_labels(at) == {"live-a": "stopped", "done-b": "finished", "demo": "finished"}


def test_the_first_run_on_the_sample_is_one_that_works_and_other_recipes_say_what_to_expect():
    sample = RECIPES["sample"]
    assert (sample.data, sample.settings["init_from"], sample.settings["freeze_features"]) == ("sample", "demo", True)
    assert sample.expect("sample", 2_000) is None and "87" in sample.result and "22.4%" in sample.result
    at = run_page("pages/train.py")  # CIFAR-10 is not cached in tests: the sample, and its recipe
    assert at.selectbox(key="train_recipe").value == "sample"
    assert any("87.9% validation accuracy" in c.value for c in at.caption)
    assert not at.warning
    at.selectbox(key="train_recipe").select("quick").run()
    warned = [w.value.replace("\\", "") for w in at.warning]
    assert len(warned) == 1 and "made for CIFAR-10" in warned[0] and "45,000 training images; this data has 2,000" \
        in warned[0] and "First run on the sample" in warned[0], warned
    assert not any(b.key == "train_start" and b.disabled for b in at.button)  # said, not refused


def test_cifar10_says_how_to_get_it_offline(monkeypatch):
    st.cache_data.clear()
    monkeypatch.setattr(data_module, "cifar10_reachable", lambda timeout=2.0: False)
    at = run_page("pages/train.py")
    at.radio(key="train_data_kind").set_value("cifar10").run()
    told = " ".join(w.value.replace("\\", "") for w in at.warning)
    assert "~/.keras/datasets/cifar-10-batches-py" in told and "class subfolders" in told
    st.cache_data.clear()


def test_the_status_line_says_what_the_trainer_does():
    status = {"state": "starting", "completed_epochs": 0}
    assert progress_words(status, 4) == (0.0, "Starting the trainer process (loading TensorFlow)")
    assert progress_words({**status, "phase": "base"}, 4)[1] == "Loading the base model to fine-tune from"
    assert progress_words({**status, "phase": "loading", "steps_per_epoch": 0}, 4)[1] == "Loading the data"
    assert progress_words({**status, "phase": "building", "completed_epochs": 2}, 4) == (
        0.5, "Loading the checkpoint of epoch 2")
    running = {"state": "running", "epoch": 3, "steps_per_epoch": 16, "completed_epochs": 2}
    assert progress_words({**running, "phase": "first step", "step": 0}, 4) == (
        0.5, "Epoch 3 of 4: compiling the training step and running the first of 16")
    fraction, text = progress_words({**running, "phase": "training", "step": 4, "images_per_sec": 120.0,
                                     "eta_seconds": 65}, 4)
    assert fraction == (2 + 4 / 16) / 4 and text.startswith("Epoch 3 of 4, step 4 of 16, 120 images/s, about")


class Phases(Observer):
    """status.json's phase and message where the loop calls its hooks."""

    def __init__(self, stop_after=None):
        self.seen, self.stop_after = [], stop_after

    def _read(self, state, hook):
        status = fileio.read_json(state.run_dir / layout.STATUS)
        self.seen.append((hook, status.get("phase"), status.get("message")))

    def on_train_begin(self, state):
        self._read(state, "train_begin")

    def on_epoch_begin(self, state):
        self._read(state, f"epoch {state.epoch}")

    def on_epoch_committed(self, state):
        if state.epoch == self.stop_after:
            liveness.request_stop(state.run_dir)


def test_the_curves_start_with_the_first_step_of_a_run_and_of_its_resume(tmp_path):
    folder = make_image_folder(tmp_path / "data", classes=2, per_class=16, size=(16, 16))
    config = TrainConfig(data=str(folder), epochs=2, steps_per_epoch=3, log_every=3, **TINY)
    run_dir = lifecycle.new_run(config, tmp_path / "runs")
    first = Phases(stop_after=1)
    assert Trainer(config, run_dir, log=lambda m: None, observers=[first]).run()["state"] == "stopped"
    assert list(layout.read_steps(run_dir)["step"]) == [1, 2, 3]  # every one of a trainer's first log_every steps
    assert first.seen[0] == ("train_begin", "preparing", "Preparing the input pipeline and the training step")
    assert first.seen[1][:2] == ("epoch 1", "first step") and "compiling" in first.seen[1][2]
    (run_dir / layout.STOP_REQUEST).unlink(missing_ok=True)
    again = Phases()
    assert Trainer(config, run_dir, log=lambda m: None, observers=[again]).run()["state"] == "finished"
    assert list(layout.read_steps(run_dir)["step"]) == [1, 2, 3, 4, 5, 6]  # the resume's first step: 4, not 6
    assert again.seen[1][:2] == ("epoch 2", "first step")


def test_a_finished_model_is_quoted_by_its_headline_and_training_figures_are_labelled():
    root = locations.runs_root()
    run_dir = fake_run(root, "quoted-a")
    liveness.write_status(run_dir, evaluations=[{"accuracy": 0.612, "split": "val", "n": 1000, "data": "sample",
                                                 "headline": True}])
    at = run_page("pages/train.py")
    assert metric(at, "Validation accuracy") == "61.2%"  # widgets.headline_metric: the model's one figure
    last = next(m for m in at.metric if m.label == "Last epoch's validation")
    assert last.value == "55.0%" and last.proto.delta == "+10.0 points"
    assert any("measured during training" in c.value for c in at.caption)


def test_the_toolbar_sits_above_the_panel_titles_and_one_step_is_a_dot():
    from alexnet_core.analysis.charts import training_curves

    steps = pd.DataFrame({"step": [1], "epoch": [1], "loss": [2.3], "accuracy": [0.1], "learning_rate": [1e-3]})
    fig = training_curves(pd.DataFrame(), steps, 16, epochs=3)
    assert fig.layout.margin.t >= 60  # Plotly's toolbar is about 30 px high
    assert list(fig.layout.xaxis.range) == [0, 3 * 1.02]  # the whole run, not 0..0.06 for one point
    assert {t.mode for t in fig.data} == {"lines+markers"}  # one point: a line alone would draw nothing
