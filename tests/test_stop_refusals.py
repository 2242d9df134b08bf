"""A stop requested at any moment lands, and a refused `train` leaves nothing behind.

Stop: before the trainer process exists, while it starts, loads data, builds the model, or
prepares its first step, the run ends `stopped` with every committed epoch kept. Refusals: a
model `--init-from` cannot start from, flags that cannot apply, input sizes no page can use."""

import os
import subprocess
import sys
import time

import pytest

from alexnet_core import runs
from alexnet_core.config import TrainConfig
from alexnet_core.launcher import start
from alexnet_core.training import Trainer
from tests.helpers import make_image_folder, wait_for

TINY = {"variant": "compact", "batch_size": 8, "input_size": 16, "switches": {"width": 0.25}}
TINY_ARGS = ["--variant", "compact", "--width", "0.25", "--input-size", "16", "--batch-size", "8"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("stops") / "data", classes=3, per_class=12)


def cli(*args, env=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "alexnet_core", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def ended(run_dir, timeout=240):
    return wait_for(lambda: (s := runs.read_status(run_dir)).get("state") not in runs.ACTIVE_STATES and s,
                    timeout, "the run to end")


def epochs_logged(run_dir):
    metrics = runs.read_metrics(run_dir)
    return list(metrics["epoch"]) if "epoch" in metrics else []


# --- 1. Stop always lands ---------------------------------------------------------------------


def test_a_stop_pressed_while_the_app_starts_the_trainer_is_honoured(folder, tmp_path):
    """Stop right after Start, before the trainer process has even imported TensorFlow."""
    config = TrainConfig(data=str(folder), epochs=40, **TINY)
    run_dir = start(config, tmp_path / "runs")
    runs.request_stop(run_dir)
    status = ended(run_dir)
    assert status["state"] == "stopped", (run_dir / runs.LOG).read_text()[-2000:]
    assert status["completed_epochs"] == 0 and epochs_logged(run_dir) == []
    assert "before the first step" in status["message"]
    assert not (run_dir / runs.STOP_REQUEST).exists()  # answered, so the next Resume trains


def test_stop_two_seconds_after_train_resume_ends_the_run_stopped(folder, tmp_path):
    """The reported bug: `stop RUN` 2 s after `train --resume RUN` left the run training."""
    config = TrainConfig(data=str(folder), epochs=40, **TINY)
    run_dir = runs.new_run(config, tmp_path / "runs", "resumed")
    proc = subprocess.Popen([sys.executable, "-m", "alexnet_core", "train", "--resume", str(run_dir)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(2)
        assert cli("stop", str(run_dir)).returncode == 0
        code = proc.wait(240)
    finally:
        proc.kill()
    log = proc.stderr.read()
    status = runs.read_status(run_dir)
    assert code == 0 and status["state"] == "stopped", log[-2000:]
    assert status["completed_epochs"] == 0 and epochs_logged(run_dir) == []


def test_a_stop_left_from_before_the_launch_does_not_stop_the_resumed_run(folder, tmp_path):
    config = TrainConfig(data=str(folder), epochs=1, **TINY)
    run_dir = runs.new_run(config, tmp_path / "runs", "stale")
    (run_dir / runs.STOP_REQUEST).write_text(str(time.time() - 60))
    result = cli("train", "--resume", str(run_dir))
    assert result.returncode == 0, result.stderr[-2000:]
    assert runs.read_status(run_dir)["state"] == "finished"


@pytest.mark.parametrize("module, name, where", [
    ("alexnet_core.data", "load_source", "while loading the data"),
    ("alexnet_core.variants", "build_model", "while building the model"),
    ("alexnet_core.training", "make_steps", "while preparing the first step"),
])
def test_a_stop_during_each_phase_before_the_first_step_ends_the_run_stopped(folder, tmp_path, monkeypatch,
                                                                            module, name, where):
    """The request arrives exactly as the phase ends: the trainer reads it at the phase's end
    (not at the monitor's next poll) and takes no step."""
    import importlib

    config = TrainConfig(data=str(folder), epochs=3, log_every=1, **TINY)
    run_dir = runs.new_run(config, tmp_path / "runs", "phases")
    target = importlib.import_module(module)
    original = getattr(target, name)

    def then_stop(*args, **kwargs):
        result = original(*args, **kwargs)
        runs.request_stop(run_dir)
        return result

    monkeypatch.setattr(target, name, then_stop)
    status = Trainer(config, run_dir, log=lambda m: None).run()
    assert status["state"] == "stopped" and where in status["message"], status
    assert status["completed_epochs"] == 0 and len(runs.read_steps(run_dir)) == 0


def test_a_stop_while_a_resumed_run_loads_keeps_every_committed_epoch(folder, tmp_path, monkeypatch):
    from alexnet_core import data

    config = TrainConfig(data=str(folder), epochs=1, **TINY)
    run_dir = runs.new_run(config, tmp_path / "runs", "kept")
    assert Trainer(config, run_dir, log=lambda m: None).run()["state"] == "finished"
    longer = TrainConfig(data=str(folder), epochs=3, **TINY)
    original = data.load_source

    def then_stop(*args, **kwargs):
        result = original(*args, **kwargs)
        runs.request_stop(run_dir)
        return result

    monkeypatch.setattr(data, "load_source", then_stop)
    status = Trainer(longer, run_dir, log=lambda m: None).run()
    assert status["state"] == "stopped" and status["completed_epochs"] == 1 and status["has_model"], status
    assert "kept as it was after epoch 1 of 3" in status["message"]
    assert epochs_logged(run_dir) == [1] and (run_dir / runs.MODEL).exists()
