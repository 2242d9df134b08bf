"""The trainer end to end on tiny folders the tests write: run folders, stop, kill, resume, NaN."""

import json
import os
import signal

import numpy as np
import pytest

from alexnet_core.settings.config import TrainConfig
from alexnet_core.store import catalog, fileio, layout, liveness
from alexnet_core.store.layout import ActiveRunError
from alexnet_core.train.launcher import resume, start
from tests import helpers
from tests.helpers import WNIDS, make_ilsvrc_folder, make_image_folder, wait_for, with_keras_alone

TINY = ["--variant", "compact", "--width", "0.25", "--input-size", "16", "--batch-size", "8"]
TINY_SWITCHES = {"width": 0.25}


def cli(*args, env=None, timeout=300):
    return helpers.cli(*args, env=env, timeout=timeout)


@pytest.fixture
def folder(tmp_path):
    return make_image_folder(tmp_path / "data", classes=3, per_class=12)


def epochs_logged(run_dir):
    metrics = layout.read_metrics(run_dir)
    return list(metrics["epoch"]) if "epoch" in metrics else []


def test_cli_train_writes_a_complete_run_folder(folder, tmp_path):
    result = cli("train", *TINY, "--data", str(folder), "--epochs", "2", "--augment", "cifar", "--log-every", "1",
                 "--runs-dir", str(tmp_path / "runs"), "--run-id", "tiny", "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = tmp_path / "runs" / "tiny"
    final = json.loads(result.stdout)
    assert final["state"] == "finished" and final["run_dir"] == str(run_dir)
    for name in (layout.CONFIG, layout.STATUS, layout.METRICS, layout.STEPS, layout.MODEL, layout.CHECKPOINTS, layout.TENSORBOARD):
        assert (run_dir / name).exists(), name
    assert epochs_logged(run_dir) == [1, 2]
    metrics = layout.read_metrics(run_dir)
    assert {"loss", "accuracy", "top5_accuracy", "val_loss", "val_accuracy"} <= set(metrics.columns)
    assert len(layout.read_steps(run_dir)) >= 2
    config = layout.read_config(run_dir)
    assert config["class_names"] == ["class0", "class1", "class2"]
    assert config["environment"]["tensorflow"]
    assert config["preprocessing"]["input_size"] == 16 and len(config["preprocessing"]["mean"]) == 3
    assert config["environment"]["replicas"] == 1 and config["monitor"]["best_checkpoint"] == "val_accuracy"
    assert TrainConfig.from_dict(config).epochs == 2  # the run can be rebuilt from config.json alone

    import keras

    model = keras.models.load_model(run_dir / layout.MODEL, safe_mode=True)
    assert model.output_shape == (None, 3)

    held_out = make_image_folder(tmp_path / "held-out", classes=3, per_class=20, seed=1)
    refused = cli("export", str(run_dir), str(tmp_path / "no-copy"), "--headline", "held-out images")
    assert refused.returncode == 2 and "give the data to evaluate on" in refused.stderr
    assert not (tmp_path / "no-copy").exists()
    unfinished = cli("export", str(run_dir), str(tmp_path / "no-copy"), "--evaluate", str(tmp_path / "missing"))
    assert unfinished.returncode == 2 and "missing" in unfinished.stderr, unfinished.stderr[-2000:]
    assert not (tmp_path / "no-copy").exists()  # the half-made copy is removed, so the command can be run again
    exported = cli("export", str(run_dir), str(tmp_path / "shared-copy"), "--evaluate", str(folder),
                   "--evaluate", str(held_out), "--split", "val", "--headline", "20 held-out images a class",
                   "--data-description", "generated colour patches", "--read-only")
    assert exported.returncode == 0, exported.stderr[-2000:]
    copy = tmp_path / "shared-copy"
    assert layout.is_read_only(copy) and epochs_logged(copy) == [1, 2]
    first, second = fileio.read_json(copy / layout.STATUS)["evaluations"]  # one record per --evaluate, in order
    assert (first["data"], first["n"], second["data"], second["n"]) == (str(folder), 3, str(held_out), 6)
    assert 0.0 <= first["accuracy"] <= 1.0 and not first.get("headline")
    assert catalog.headline_accuracy(copy) == second and second["description"] == "20 held-out images a class"
    assert layout.read_config(copy)["data_description"] == "generated colour patches"
    assert layout.read_config(copy)["class_names"] == config["class_names"]  # the rest of config.json is kept
    assert getattr(keras.models.load_model(copy / layout.MODEL, safe_mode=True), "optimizer", None) is None  # weights only

    # The exported model loads with Keras alone (no import of ours) and predicts as the run's model.
    alone = with_keras_alone(copy / layout.MODEL, "m.predict(np.random.default_rng(0).random((4, 16, 16, 3)), "
                                                "verbose=0).tolist()")
    import numpy as np

    expected = model.predict(np.random.default_rng(0).random((4, 16, 16, 3)), verbose=0)
    np.testing.assert_allclose(alone, expected, atol=1e-5)


def test_train_per_class_trains_on_the_first_images_of_each_class_and_validates_on_all(folder, tmp_path):
    """--train-per-class N: a smaller training set (the first N files of each class), the same validation split."""
    result = cli("train", *TINY, "--data", str(folder), "--epochs", "1", "--batch-size", "2", "--val-split", "0.25",
                 "--train-per-class", "4", "--runs-dir", str(tmp_path / "runs"), "--run-id", "few", "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    config = layout.read_config(tmp_path / "runs" / "few")
    assert config["train_per_class"] == 4 and config["steps_per_epoch"] == 3 * 4 // 2  # not 3 * 9 // 2
    snapshot = np.load(tmp_path / "runs" / "few" / "snapshots" / "epoch-0001.npz")
    assert len(snapshot["labels"]) == 3 * 3  # every validation image still: the last 3 of each class


def test_stop_from_the_app_then_resume_continues_without_duplicate_epochs(folder, tmp_path):
    config = TrainConfig(variant="compact", data=str(folder), epochs=3, batch_size=8, input_size=16,
                         switches=TINY_SWITCHES, log_every=1)
    run_dir = start(config, tmp_path / "runs")
    wait_for(lambda: len(layout.read_steps(run_dir)) > 0, what="the run to start stepping")
    liveness.request_stop(run_dir)
    status = wait_for(lambda: (s := liveness.read_status(run_dir))["state"] not in layout.ACTIVE_STATES and s,
                      what="the run to stop")
    assert status["state"] in ("stopped", "finished"), status
    done = status["completed_epochs"]
    assert epochs_logged(run_dir) == list(range(1, done + 1))
    assert (run_dir / layout.MODEL).exists() == (done >= 1)
    if status["state"] == "stopped":
        resume(run_dir)
        status = wait_for(lambda: (s := liveness.read_status(run_dir))["state"] not in layout.ACTIVE_STATES and s,
                          what="the resumed run to finish")
    assert status["state"] == "finished", (run_dir / layout.LOG).read_text()[-2000:]
    assert epochs_logged(run_dir) == [1, 2, 3]


def test_sigkill_loses_at_most_one_epoch_and_resumes(folder, tmp_path):
    config = TrainConfig(variant="compact", data=str(folder), epochs=3, batch_size=8, input_size=16,
                         switches=TINY_SWITCHES, steps_per_epoch=1000, log_every=5)
    epochs_logged(tmp_path)  # load the CSV reader now: the polls below must be quick, epochs here take 0.3 s
    run_dir = start(config, tmp_path / "runs")
    # An epoch is committed (state.json) and then published (metrics.csv): kill after both, since
    # what survives is read from metrics.csv below (a kill in between is recovered on the next start).
    wait_for(lambda: (fileio.read_json(run_dir / "checkpoints" / "state.json", {}) or {}).get("completed_epochs", 0) >= 1
             and len(epochs_logged(run_dir)) >= 1, what="the first epoch")
    pid = fileio.read_json(run_dir / layout.STATUS)["pid"]
    os.killpg(pid, signal.SIGKILL)
    wait_for(lambda: liveness.read_status(run_dir)["state"] == "interrupted", timeout=30, what="interrupted state")
    kept = len(epochs_logged(run_dir))
    assert kept >= 1
    resume(run_dir)
    status = wait_for(lambda: (s := liveness.read_status(run_dir))["state"] not in layout.ACTIVE_STATES and s,
                      what="the resumed run")
    assert status["state"] == "finished", (run_dir / layout.LOG).read_text()[-2000:]
    assert epochs_logged(run_dir) == [1, 2, 3]  # every epoch once, in order
    assert "Resuming after epoch" in (run_dir / layout.LOG).read_text()


def test_bad_settings_are_usage_errors(folder, tmp_path):
    result = cli("train", *TINY, "--data", str(folder), "--epochs", "0", "--runs-dir", str(tmp_path))
    assert result.returncode == 2 and "epochs must be 1..10000, got 0" in result.stderr
    result = cli("train", "--variant", "paper", "--data", str(folder), "--input-size", "32", "--runs-dir", str(tmp_path))
    assert result.returncode == 2 and "input_size must be >= 67" in result.stderr


def test_second_start_names_the_active_run(folder, tmp_path):
    root = tmp_path / "runs"
    run_dir = catalog.create_run(root, "busy", {"variant": "compact", "data": "x", "epochs": 1})
    lock = liveness.TrainerLock(run_dir).acquire()  # what a live trainer holds
    liveness.write_status(run_dir, state="running", pid=os.getpid(), message="Epoch 1 of 1")
    config = TrainConfig(variant="compact", data=str(folder), epochs=1, switches=TINY_SWITCHES)
    try:
        with pytest.raises(ActiveRunError, match="Run busy is already training.*stop"):
            start(config, root)
        result = cli("train", *TINY, "--data", str(folder), "--runs-dir", str(root))
        assert result.returncode == 2 and "busy" in result.stderr
    finally:
        lock.release()


def test_mirrored_strategy_on_two_logical_cpus(folder, tmp_path):
    result = cli("train", *TINY, "--data", str(folder), "--epochs", "1", "--runs-dir", str(tmp_path / "runs"),
                 "--run-id", "mirrored", env={"ALEXNET_LOGICAL_CPUS": "2"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "MirroredStrategy with 2 replica(s)" in result.stderr
    assert epochs_logged(tmp_path / "runs" / "mirrored") == [1]


def test_ilsvrc_layout_trains_with_streamed_crops_and_predicts_words(tmp_path):
    root = make_ilsvrc_folder(tmp_path / "ilsvrc", size=(40, 60))
    result = cli("train", *TINY, "--data", str(root), "--epochs", "1", "--augment", "random-resized-crop",
                 "--runs-dir", str(tmp_path / "runs"), "--run-id", "imagenet-like")
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = tmp_path / "runs" / "imagenet-like"
    config = layout.read_config(run_dir)
    assert config["class_names"] == sorted(WNIDS) and config["class_words"] == WNIDS
    image = next((root / "val" / "n01443537").iterdir())
    result = cli("predict", str(run_dir), str(image), "--json")
    assert result.returncode == 0, result.stderr[-2000:]
    predictions = json.loads(result.stdout)[0]["predictions"]
    assert {p["label"] for p in predictions} == set(WNIDS)
    assert all(p["words"] == WNIDS[p["label"]] for p in predictions)
