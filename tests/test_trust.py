"""Training you can trust, by fault injection: stops, kills mid-write, a full disk, two trainers,
divergence, shuffling, and settings refused before anything is written."""

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from alexnet_core.settings.config import TrainConfig
from alexnet_core.store import catalog, fileio, layout, liveness
from alexnet_core.train import lifecycle
from alexnet_core.train.loop import Trainer, divergence
from alexnet_core.train.monitor import Progress
from alexnet_core.train.optimizer import plateau_learning_rate
from alexnet_core.train.training import Ending, run_training
from tests.helpers import TINY, TINY_ARGS, cli, make_image_folder


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("trust") / "data", classes=3, per_class=12)


def spawn_resume(run_dir, env=None):
    return subprocess.Popen([sys.executable, "-m", "alexnet_core", "train", "--resume", str(run_dir)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})


def optimizer_steps(path) -> int:
    import keras

    return int(keras.models.load_model(path, safe_mode=True).optimizer.iterations.numpy())


def assert_consistent(run_dir, epochs_done, steps_per_epoch):
    """Every epoch once, optimizer steps = epochs x steps, no step logged twice, no temp files,
    and every published model loads."""
    import keras

    assert list(layout.read_metrics(run_dir)["epoch"]) == list(range(1, epochs_done + 1))
    assert optimizer_steps(run_dir / layout.CHECKPOINTS / layout.LAST) == epochs_done * steps_per_epoch
    steps = layout.read_steps(run_dir)
    assert steps["step"].is_unique and steps["step"].max() <= epochs_done * steps_per_epoch
    for name in (layout.MODEL, f"{layout.CHECKPOINTS}/{layout.BEST}"):
        if (run_dir / name).exists():
            assert keras.models.load_model(run_dir / name, safe_mode=True).output_shape == (None, 3)
    leftovers = [p.name for p in run_dir.rglob("*.tmp*")]
    assert not leftovers, leftovers


def new_run(folder, root, epochs, **extra):
    config = TrainConfig(data=str(folder), epochs=epochs, **{**TINY, "log_every": 1, **extra})
    return config, lifecycle.new_run(config, root)


def test_stop_mid_epoch_never_records_the_partial_epoch(folder, tmp_path, monkeypatch):
    config, run_dir = new_run(folder, tmp_path / "runs", epochs=3)
    trainer = Trainer(config, run_dir, log=lambda m: None)
    stepped = Progress.stepped

    def stop_in_epoch_two(progress):
        stepped(progress)
        if progress.epoch == 2 and progress.step == 3:
            trainer.stop.set()

    monkeypatch.setattr(Progress, "stepped", stop_in_epoch_two)
    status = trainer.run()
    steps = status["steps_per_epoch"]
    assert status["state"] == "stopped" and status["completed_epochs"] == 1, status
    assert f"during epoch 2 of 3, after 3 of its {steps} steps" in status["message"]
    assert "resume redoes epoch 2" in status["message"]
    assert_consistent(run_dir, 1, steps)
    assert (run_dir / layout.MODEL).exists()

    monkeypatch.setattr(Progress, "stepped", stepped)
    status = Trainer(config, run_dir, log=lambda m: None).run()
    assert status["state"] == "finished" and status["completed_epochs"] == 3
    assert_consistent(run_dir, 3, steps)


# Every kind of file the trainer writes, and which of its writes is cut (best.keras and
# model.keras are written once in these runs; the rest are cut at the second epoch).
FAULTS = ["checkpoint#2", "state#2", "last.keras#2", "best.keras#1", "metrics#2", "model.keras#1",
          "status.json#3", "config.json#1", "steps.csv#1", "snapshot#2", "probe#1"]


@pytest.mark.parametrize("fault", FAULTS)
def test_a_kill_during_any_write_leaves_loadable_models_and_resumes(folder, tmp_path, fault):
    """The trainer SIGKILLs itself halfway through one write of one kind of file."""
    config, run_dir = new_run(folder, tmp_path / "runs", epochs=3)
    if fault.startswith("steps.csv"):  # steps.csv is rewritten only when a resume trims it
        assert cli("train", "--resume", str(run_dir), env={"ALEXNET_FAULT": "kill@state#2"}).returncode == -9
    first = cli("train", "--resume", str(run_dir), env={"ALEXNET_FAULT": f"kill@{fault}"})
    assert first.returncode == -signal.SIGKILL, first.stderr[-2000:]
    assert liveness.read_status(run_dir)["state"] == "interrupted"
    import keras

    for name in (layout.MODEL, f"{layout.CHECKPOINTS}/{layout.LAST}", f"{layout.CHECKPOINTS}/{layout.BEST}"):
        if (run_dir / name).exists():  # whatever was published is whole
            keras.models.load_model(run_dir / name, safe_mode=True)
    second = cli("train", "--resume", str(run_dir), "--json")
    assert second.returncode == 0, second.stderr[-3000:]
    status = json.loads(second.stdout)
    assert status["state"] == "finished"
    assert_consistent(run_dir, 3, status["steps_per_epoch"])


def test_acceptance_stop_then_ten_random_kills(folder, tmp_path):
    """3 classes, batch 8, 80 epochs: stop mid-run, then SIGKILL at ten random moments, resuming
    after each. The run finishes with every epoch once and the optimizer's steps exact."""
    rng = random.Random(7)
    config, run_dir = new_run(folder, tmp_path / "runs", epochs=80)

    def committed():
        return fileio.read_object(run_dir / layout.CHECKPOINTS / layout.STATE).get("completed_epochs", 0)

    def wait_training(proc, timeout=120):
        """Until this trainer has logged a step of its own (it has compiled and is stepping)."""
        start = fileio.read_object(run_dir / layout.CHECKPOINTS / layout.STATE).get("iterations", 0)
        deadline = time.time() + timeout
        while time.time() < deadline:
            status = fileio.read_object(run_dir / layout.STATUS)
            logged = layout.read_steps(run_dir).get("step")
            if status.get("pid") == proc.pid and logged is not None and logged.max() > start:
                return
            assert proc.poll() is None, proc.stderr.read()[-2000:]
            time.sleep(0.05)
        raise AssertionError("the trainer did not start")

    proc = spawn_resume(run_dir)
    wait_training(proc)
    time.sleep(0.5)
    liveness.request_stop(run_dir)
    assert proc.wait(120) == 0
    assert liveness.read_status(run_dir)["state"] == "stopped"
    lost = []
    for _ in range(10):
        proc = spawn_resume(run_dir)
        wait_training(proc)
        time.sleep(rng.uniform(0.0, 2.5))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
        assert liveness.read_status(run_dir)["state"] in ("interrupted", "finished")
        logged = layout.read_steps(run_dir)["step"].max()  # steps.csv is written as the steps happen
        logged = 0 if logged != logged else logged  # none yet
        record = fileio.read_object(run_dir / layout.CHECKPOINTS / layout.STATE)
        per_epoch = fileio.read_object(run_dir / layout.STATUS)["steps_per_epoch"]
        lost.append((record.get("completed_epochs", 0), int(logged) - record.get("iterations", 0)))
        assert 0 <= lost[-1][1] < per_epoch + 2, (record, logged)  # at most the epoch in progress
    proc = spawn_resume(run_dir)
    proc.wait(600)
    status = liveness.read_status(run_dir)
    assert status["state"] == "finished", (run_dir / layout.LOG).read_text() if (run_dir / layout.LOG).exists() else status
    assert_consistent(run_dir, 80, status["steps_per_epoch"])
    print(f"\n(epochs committed, steps lost) at each kill: {lost}")


def test_disk_full_fails_cleanly_and_resumes_after_space_is_freed(folder, tmp_path):
    root = tmp_path / "small"
    root.mkdir()
    mounted = os.geteuid() == 0 and subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(root)], capture_output=True).returncode == 0
    try:
        config, run_dir = new_run(folder, root, epochs=6)
        env = {} if mounted else {"ALEXNET_FAULT": "enospc@checkpoint#3"}
        result = cli("train", "--resume", str(run_dir), "--json", env=env)
        assert result.returncode == 1, result.stderr[-3000:]
        status = json.loads(result.stdout)
        assert status["state"] == "failed" and status["reason"] == "disk"
        assert f"in {run_dir}" in status["message"] and "Free at least" in status["message"]
        assert "Traceback" not in result.stderr
        done = status["completed_epochs"]
        assert 1 <= done < 6
        assert optimizer_steps(run_dir / layout.CHECKPOINTS / layout.LAST) == done * status["steps_per_epoch"]
        assert not [p.name for p in run_dir.rglob("*.tmp*")]
        if mounted:
            subprocess.run(["mount", "-o", "remount,size=64m", str(root)], check=True)
        result = cli("train", "--resume", str(run_dir), "--json")
        assert result.returncode == 0, result.stderr[-3000:]
        assert json.loads(result.stdout)["state"] == "finished"
        assert_consistent(run_dir, 6, status["steps_per_epoch"])
    finally:
        if mounted:
            subprocess.run(["umount", str(root)], capture_output=True)


def test_one_trainer_per_run_and_one_run_at_a_time(folder, tmp_path):
    root = tmp_path / "runs"
    _, busy = new_run(folder, root, epochs=1)
    lock = liveness.TrainerLock(busy).acquire()
    try:
        # A live trainer is trusted over a stale heartbeat (e.g. during a long validation pass).
        liveness.write_status(busy, state="running", pid=os.getpid(), host=os.uname().nodename)
        status = fileio.read_object(busy / layout.STATUS)
        fileio.write_json_atomic(busy / layout.STATUS, {**status, "heartbeat": time.time() - 3600})
        assert liveness.read_status(busy)["state"] == "running"
        assert liveness.lock_held(busy) is True
        with pytest.raises(layout.ActiveRunError, match="already being trained"):
            liveness.TrainerLock(busy).acquire(wait_s=0.2)
        # The same rule for the app (launcher), `train --resume` and `train`.
        from alexnet_core.train import launcher

        with pytest.raises(layout.ActiveRunError, match="still training"):
            launcher.resume(busy)
        other = catalog.create_run(root, "other", json.loads((busy / layout.CONFIG).read_text()))
        liveness.write_status(other, state="stopped")
        with pytest.raises(layout.ActiveRunError, match=f"Run {busy.name} is already training"):
            launcher.resume(other)
        result = cli("train", "--resume", str(other))
        assert result.returncode == 2 and busy.name in result.stderr
        result = cli("train", *TINY_ARGS, "--data", str(folder), "--runs-dir", str(root))
        assert result.returncode == 2 and busy.name in result.stderr
        result = cli("train", "--resume", str(busy), "--allow-parallel")
        assert result.returncode == 2 and "still training" in result.stderr
    finally:
        lock.release()
    assert liveness.lock_held(busy) is False
    assert liveness.read_status(busy)["state"] == "interrupted"


def test_divergence_is_detected_early():
    assert divergence(float("nan"), 1.1) == "became NaN"
    assert "exploded" in divergence(4.8e32, 1.1)
    assert divergence(60.0, 1.1) is not None and divergence(40.0, 1.1) is None
    assert divergence(2.0, None) is None


def test_exploding_loss_ends_the_run_as_diverged(folder, tmp_path):
    result = cli("train", *TINY_ARGS, "--data", str(folder), "--epochs", "3", "--learning-rate", "10",
                 "--norm", "none", "--schedule", "constant", "--runs-dir", str(tmp_path / "runs"), "--json")
    assert result.returncode == 1, result.stderr[-2000:]
    status = json.loads(result.stdout)
    assert status["state"] == "diverged"
    assert "training loss" in status["message"] and "lower learning rate" in status["message"]


@pytest.mark.parametrize("schedule,monitor", [("step", "val_accuracy"), ("plateau", "val_loss")])
def test_plateau_schedules_follow_keras_reduce_lr_on_plateau(schedule, monitor):
    """Our resume-proof rule gives the learning rates Keras' own callback gives on the same history."""
    import keras

    from alexnet_core.train.optimizer import MIN_LR, PLATEAU

    rule = PLATEAU[schedule]
    values = [0.5, 0.6, 0.6, 0.6, 0.6, 0.61, 0.55, 0.55, 0.55, 0.55, 0.7, 0.7, 0.7, 0.7, 0.7, 0.7]
    if rule["mode"] == "min":
        values = [1.0 - v for v in values]
    config = TrainConfig(schedule=schedule, learning_rate=0.1)
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    callback = keras.callbacks.ReduceLROnPlateau(monitor=monitor, mode=rule["mode"], factor=rule["factor"],
                                                 patience=rule["patience"], min_lr=MIN_LR, verbose=0)
    callback.set_model(model)
    callback.on_train_begin()
    for epoch, value in enumerate(values):
        callback.on_epoch_end(epoch, {monitor: value})
        ours = plateau_learning_rate(config, [{monitor: v} for v in values[: epoch + 1]], monitor)
        assert ours == pytest.approx(float(model.optimizer.learning_rate), rel=1e-6), epoch


def test_a_plateau_schedule_without_validation_watches_the_training_loss(folder, tmp_path):
    config, run_dir = new_run(folder, tmp_path / "runs", epochs=1, schedule="plateau", val_split=0.0)
    status = Trainer(config, run_dir, log=lambda m: None).run()
    assert status["state"] == "finished"
    monitor = layout.read_config(run_dir)["monitor"]
    assert monitor["schedule"] == "loss" and "no validation set" in monitor["schedule_note"]
    assert monitor["best_checkpoint"] == "accuracy"


def test_bad_settings_and_data_are_refused_before_a_run_folder_exists(folder, tmp_path):
    root = tmp_path / "runs"
    for args, message in [(["--seed", "-1"], "seed must be"), (["--epochs", "0"], "epochs must be 1..10000, got 0"),
                          (["--label-smoothing", "1.5"], "label_smoothing must be")]:
        result = cli("train", *TINY_ARGS, "--data", str(folder), "--runs-dir", str(root), *args)
        assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr
    make_image_folder(tmp_path / "one", classes=1, per_class=3)
    result = cli("train", *TINY_ARGS, "--data", str(tmp_path / "one"), "--runs-dir", str(root))
    assert result.returncode == 2 and "only one class" in result.stderr
    assert not root.exists() or not any(root.iterdir())


def test_internal_errors_exit_1_with_a_traceback_in_the_log(folder, tmp_path, monkeypatch):
    from alexnet_core.train import loop

    def broken(*args, **kwargs):
        raise ValueError("an internal bug, not bad input")

    monkeypatch.setattr(loop, "make_steps", broken)
    config, run_dir = new_run(folder, tmp_path / "runs", epochs=1)
    messages = []
    assert run_training(config, run_dir, log=messages.append) is Ending.FAILED
    status = liveness.read_status(run_dir)
    assert status["state"] == "failed" and status["message"].startswith("Internal error: ValueError")
    assert "Traceback" in (run_dir / layout.LOG).read_text() and "Traceback" not in messages[-1]


def _batches_mix_classes(ds, batches=6) -> bool:
    mixed = []
    for _, y in ds.take(batches):
        mixed.append(len(set(np.argmax(y.numpy(), axis=1))) > 1)
    return all(mixed)


@pytest.mark.parametrize("budget", [0, 2**30], ids=["streamed", "cached"])
def test_every_source_is_shuffled_across_classes(tmp_path, budget):
    from alexnet_core.inputs.data import Split, load_folder, make_dataset

    labels = np.repeat(np.arange(4), 300).astype(np.int32)  # sorted by class, as sources arrive
    images = np.repeat(np.arange(4, dtype=np.uint8)[:, None, None, None] * 60, 300, axis=0)
    images = np.broadcast_to(images, (1200, 8, 8, 3)).copy()
    def first_batches(seed):
        ds = make_dataset(Split(labels, images=images), 4, 8, 16, training=True, seed=seed, cache_budget=budget)
        return [y.numpy().argmax(1).tolist() for _, y in ds.take(2)]

    assert _batches_mix_classes(make_dataset(Split(labels, images=images), 4, 8, 16, training=True, seed=1,
                                             cache_budget=budget))
    assert first_batches(1) == first_batches(1) != first_batches(2)  # deterministic per seed
    source = load_folder(make_image_folder(tmp_path / "f", classes=3, per_class=40, size=(8, 8)), 0.0)
    assert _batches_mix_classes(make_dataset(source.train, 3, 8, 12, training=True, cache_budget=budget), 4)


def test_a_fresh_runs_folder_has_no_leftovers_after_resume(folder, tmp_path):
    config, run_dir = new_run(folder, tmp_path / "runs", epochs=2)
    (run_dir / layout.CHECKPOINTS / ".epoch-00001.keras.123.tmp.keras").write_bytes(b"half")
    (run_dir / ".status.json.99.tmp").write_text("{")
    assert Trainer(config, run_dir, log=lambda m: None).run()["state"] == "finished"
    assert not [p.name for p in run_dir.rglob("*.tmp*")]
    shutil.rmtree(run_dir)
