"""A stop requested at any moment lands, and a refused `train` leaves nothing behind.

Stop: before the trainer process exists, while it starts, loads data, builds the model, or
prepares its first step, the run ends `stopped` with every committed epoch kept. Refusals: a
model `--init-from` cannot start from, flags that cannot apply, input sizes no page can use."""

import subprocess
import sys
import time

import pytest

from alexnet_core.settings.config import TrainConfig
from alexnet_core.store import layout, liveness
from alexnet_core.train import lifecycle
from alexnet_core.train.launcher import start
from alexnet_core.train.loop import Trainer
from tests.helpers import TINY, TINY_ARGS, cli, make_image_folder, wait_for


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("stops") / "data", classes=3, per_class=12)


def ended(run_dir, timeout=240):
    return wait_for(lambda: (s := liveness.read_status(run_dir)).get("state") not in layout.ACTIVE_STATES and s,
                    timeout, "the run to end")


def epochs_logged(run_dir):
    metrics = layout.read_metrics(run_dir)
    return list(metrics["epoch"]) if "epoch" in metrics else []


# --- 1. Stop always lands ---------------------------------------------------------------------


def test_a_stop_pressed_while_the_app_starts_the_trainer_is_honoured(folder, tmp_path):
    """Stop right after Start, before the trainer process has even imported TensorFlow."""
    config = TrainConfig(data=str(folder), epochs=40, **TINY)
    run_dir = start(config, tmp_path / "runs")
    liveness.request_stop(run_dir)
    status = ended(run_dir)
    assert status["state"] == "stopped", (run_dir / layout.LOG).read_text()[-2000:]
    assert status["completed_epochs"] == 0 and epochs_logged(run_dir) == []
    assert "before the first step" in status["message"]
    assert not (run_dir / layout.STOP_REQUEST).exists()  # answered, so the next Resume trains


def test_stop_two_seconds_after_train_resume_ends_the_run_stopped(folder, tmp_path):
    """The reported bug: `stop RUN` 2 s after `train --resume RUN` left the run training."""
    config = TrainConfig(data=str(folder), epochs=40, **TINY)
    run_dir = lifecycle.new_run(config, tmp_path / "runs", "resumed")
    proc = subprocess.Popen([sys.executable, "-m", "alexnet_core", "train", "--resume", str(run_dir)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(2)
        assert cli("stop", str(run_dir)).returncode == 0
        code = proc.wait(240)
    finally:
        proc.kill()
    log = proc.stderr.read()
    status = liveness.read_status(run_dir)
    assert code == 0 and status["state"] == "stopped", log[-2000:]
    assert status["completed_epochs"] == 0 and epochs_logged(run_dir) == []


def test_a_stop_left_from_before_the_launch_does_not_stop_the_resumed_run(folder, tmp_path):
    config = TrainConfig(data=str(folder), epochs=1, **TINY)
    run_dir = lifecycle.new_run(config, tmp_path / "runs", "stale")
    (run_dir / layout.STOP_REQUEST).write_text(str(time.time() - 60))
    result = cli("train", "--resume", str(run_dir))
    assert result.returncode == 0, result.stderr[-2000:]
    assert liveness.read_status(run_dir)["state"] == "finished"


@pytest.mark.parametrize("module, name, where", [
    ("alexnet_core.inputs.data", "load_source", "while loading the data"),
    ("alexnet_core.models.variants", "build_model", "while building the model"),
    ("alexnet_core.train.loop", "make_steps", "while preparing the first step"),
])
def test_a_stop_during_each_phase_before_the_first_step_ends_the_run_stopped(folder, tmp_path, monkeypatch,
                                                                            module, name, where):
    """The request arrives exactly as the phase ends: the trainer reads it at the phase's end
    (not at the monitor's next poll) and takes no step."""
    import importlib

    config = TrainConfig(data=str(folder), epochs=3, log_every=1, **TINY)
    run_dir = lifecycle.new_run(config, tmp_path / "runs", "phases")
    target = importlib.import_module(module)
    original = getattr(target, name)

    def then_stop(*args, **kwargs):
        result = original(*args, **kwargs)
        liveness.request_stop(run_dir)
        return result

    monkeypatch.setattr(target, name, then_stop)
    status = Trainer(config, run_dir, log=lambda m: None).run()
    assert status["state"] == "stopped" and where in status["message"], status
    assert status["completed_epochs"] == 0 and len(layout.read_steps(run_dir)) == 0


def test_a_stop_while_a_resumed_run_loads_keeps_every_committed_epoch(folder, tmp_path, monkeypatch):
    from alexnet_core.inputs import data

    config = TrainConfig(data=str(folder), epochs=1, **TINY)
    run_dir = lifecycle.new_run(config, tmp_path / "runs", "kept")
    assert Trainer(config, run_dir, log=lambda m: None).run()["state"] == "finished"
    longer = TrainConfig(data=str(folder), epochs=3, **TINY)
    original = data.load_source

    def then_stop(*args, **kwargs):
        result = original(*args, **kwargs)
        liveness.request_stop(run_dir)
        return result

    monkeypatch.setattr(data, "load_source", then_stop)
    status = Trainer(longer, run_dir, log=lambda m: None).run()
    assert status["state"] == "stopped" and status["completed_epochs"] == 1 and status["has_model"], status
    assert "kept as it was after epoch 1 of 3" in status["message"]
    assert epochs_logged(run_dir) == [1] and (run_dir / layout.MODEL).exists()


# --- 5. A refused train leaves nothing behind; no flag is silently ignored ----------------------


@pytest.fixture(scope="module")
def base_run(folder, tmp_path_factory):
    """A tiny finished run to fine-tune from: compact, width 0.25, 16 px, 3 classes."""
    root = tmp_path_factory.mktemp("base")
    result = cli("train", *TINY_ARGS, "--data", str(folder), "--epochs", "1", "--runs-dir", str(root),
                 "--run-id", "base")
    assert result.returncode == 0, result.stderr[-2000:]
    return root / "base"


def hostile_model(kind):
    import keras

    from alexnet_core.models.variants import build_model

    if kind == "wrong shape":  # the record says width 0.25; the model is twice as wide
        return build_model("compact", num_classes=3, input_size=16, width=0.5)
    if kind == "one channel":
        inputs = keras.Input((16, 16, 1))
        x = keras.layers.Conv2D(8, 3, name="conv1")(inputs)
        return keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(keras.layers.Flatten()(x)))
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Flatten(name="flatten")(inputs)
    if kind == "a Lambda layer":
        x = keras.layers.Lambda(lambda t: t * 2.0, name="double")(x)
    return keras.Model(inputs, keras.layers.Dense(3, activation="softmax", name="predictions")(x))


@pytest.mark.parametrize("kind, message", [
    ("wrong shape", "has another shape"),
    ("one channel", "this app needs one RGB image"),
    ("no convolution", "has no layer 'conv1'"),
    ("a Lambda layer", "refused before anything in it was loaded. It contains a Lambda layer"),
])
def test_a_train_refused_for_its_init_from_model_leaves_no_run_folder(base_run, folder, tmp_path, kind, message):
    import re
    import shutil

    base = tmp_path / "hostile-base"
    shutil.copytree(base_run, base)
    (base / layout.MODEL).unlink()
    hostile_model(kind).save(base / layout.MODEL)
    root = tmp_path / "runs"
    result = cli("train", "--init-from", str(base), "--variant", "compact", "--data", str(folder), "--epochs", "1",
                 "--runs-dir", str(root))
    assert result.returncode == 2, result.stderr[-2000:]
    assert re.search(message, result.stderr) and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert not root.exists() or list(root.iterdir()) == []


def test_the_apps_start_refuses_a_base_model_it_cannot_use_and_leaves_no_run_folder(base_run, folder, tmp_path):
    """The Train and Your classes pages start runs through launcher.start, not the CLI."""
    import shutil

    from alexnet_core.settings.config import ConfigError, TrainConfig
    from alexnet_core.train import launcher

    base = tmp_path / "hostile-base"
    shutil.copytree(base_run, base)
    (base / layout.MODEL).unlink()
    hostile_model("no convolution").save(base / layout.MODEL)
    root = tmp_path / "runs"
    config = TrainConfig(variant="compact", data=str(folder), epochs=1, init_from=str(base))
    with pytest.raises(ConfigError, match="has no layer 'conv1'"):
        launcher.start(config, root)
    assert not root.exists() or list(root.iterdir()) == []


@pytest.mark.parametrize("flags, named", [
    (["--variant", "compact-hires"], "--variant compact-hires cannot apply with --init-from"),
    (["--variant", "compact", "--width", "0.5"], "--width 0.5 cannot apply with --init-from"),
    (["--variant", "compact", "--input-size", "24"], "--input-size 24 cannot apply with --init-from"),
])
def test_network_flags_that_init_from_would_replace_are_usage_errors(base_run, folder, tmp_path, flags, named):
    root = tmp_path / "runs"
    result = cli("train", "--init-from", str(base_run), *flags, "--data", str(folder), "--epochs", "1",
                 "--runs-dir", str(root))
    assert result.returncode == 2 and named in result.stderr, result.stderr[-2000:]
    assert "compact, width 0.25, input size 16" in result.stderr  # the network the run would keep
    assert not root.exists() or list(root.iterdir()) == []


def test_the_fine_tune_recipe_refuses_another_width_and_honours_dropout(folder, tmp_path):
    root = tmp_path / "runs"
    refused = cli("train", "--recipe", "fine-tune", "--data", str(folder), "--width", "0.5", "--epochs", "1",
                  "--runs-dir", str(root))
    assert refused.returncode == 2, refused.stderr[-2000:]
    assert "--width 0.5 cannot apply with --recipe fine-tune" in refused.stderr
    assert not root.exists() or list(root.iterdir()) == []
    tuned = cli("train", "--recipe", "fine-tune", "--data", str(folder), "--dropout", "0.1", "--epochs", "1",
                "--runs-dir", str(root))
    assert tuned.returncode == 0, tuned.stderr[-2000:]
    (run_dir,) = root.iterdir()
    config = layout.read_config(run_dir)
    assert "-compact-hires-" in run_dir.name and config["variant"] == "compact-hires"  # named as trained
    assert config["switches"]["width"] == 0.75 and config["switches"]["dropout"] == 0.1


def test_settings_given_with_resume_are_usage_errors_naming_both_flags(folder, tmp_path):
    config = TrainConfig(data=str(folder), epochs=1, **TINY)
    run_dir = lifecycle.new_run(config, tmp_path / "runs", "kept")
    for flags, named in ((["--recipe", "quick"], "--recipe"), (["--data", "sample"], "--data"),
                         (["--epochs", "5", "--no-groups"], "--epochs, --no-groups")):
        result = cli("train", "--resume", str(run_dir), *flags)
        assert result.returncode == 2, result.stderr[-2000:]
        assert f"{named} cannot apply with --resume" in result.stderr
    assert liveness.read_status(run_dir)["state"] == "created" and epochs_logged(run_dir) == []


def test_an_input_size_no_page_can_use_is_refused_with_its_rule(folder, tmp_path):
    root = tmp_path / "runs"
    result = cli("train", "--variant", "compact", "--input-size", "1", "--data", str(folder), "--epochs", "1",
                 "--runs-dir", str(root))
    assert result.returncode == 2, result.stderr[-2000:]
    assert "input_size must be >= 8 for 'compact'" in result.stderr and "8x8" in result.stderr
    assert not root.exists() or list(root.iterdir()) == []
    summary = cli("summary", "compact-hires", "--input-size", "4")
    assert summary.returncode == 2 and "input_size must be >= 8 for 'compact-hires'" in summary.stderr
    assert cli("summary", "compact", "--input-size", "8", "--json").returncode == 0
    paper = cli("summary", "paper", "--input-size", "32")
    assert paper.returncode == 2 and "input_size must be >= 67 for 'paper'" in paper.stderr


def test_a_model_too_small_to_classify_is_refused_by_the_size_rule(tmp_path):
    """A model trained at 4 px before the rule existed: loading names the size limit, not the
    shape of the input in general."""
    import dataclasses

    from alexnet_core.models.variants import build_from_arch, get_arch
    from alexnet_core.predict.inference import ModelLoadError, load_model

    arch = dataclasses.replace(get_arch("compact", num_classes=3, width=0.25), input_size=4)
    build_from_arch(arch, "compact").save(tmp_path / "tiny.keras")
    with pytest.raises(ModelLoadError, match="takes 4x4-pixel images; this app needs at least 8x8"):
        load_model(str(tmp_path / "tiny.keras"))
