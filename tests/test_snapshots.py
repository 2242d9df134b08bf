"""Epoch snapshots: written by the trainer after every epoch, exact, small, and read defensively."""

import numpy as np
import pytest

from alexnet_core.store import layout
from alexnet_core.train.snapshots import (
    PROBE,
    Timeline,
    choose_probe,
    epoch_path,
    folder_bytes,
    read_timeline,
    write_epoch,
)
from tests.helpers import make_image_folder
from tests.test_training import TINY, cli, epochs_logged


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 3-epoch run of 3 classes with 4 validation images each."""
    tmp = tmp_path_factory.mktemp("snap")
    folder = make_image_folder(tmp / "data", classes=3, per_class=20, seed=4)
    result = cli("train", *TINY, "--data", str(folder), "--epochs", "3", "--val-split", "0.2",
                 "--runs-dir", str(tmp / "runs"), "--run-id", "snap")
    assert result.returncode == 0, result.stderr[-3000:]
    return folder, tmp / "runs" / "snap"


def test_every_epoch_has_a_snapshot_that_matches_the_model(trained):
    import keras

    from alexnet_core.inputs.data import load_folder, make_dataset

    folder, run_dir = trained
    timeline = read_timeline(run_dir, completed_epochs=3, num_classes=3)
    assert timeline.numbers() == [1, 2, 3] and not timeline.notes
    last = timeline.epochs[-1]
    # The last snapshot's predictions are the last checkpoint's, image by image, in file order.
    source = load_folder(folder, val_split=0.2)
    model = keras.models.load_model(run_dir / layout.CHECKPOINTS / layout.LAST, safe_mode=True)
    x = np.concatenate([b[0].numpy() for b in make_dataset(source.val, 3, 16, 8)])
    np.testing.assert_array_equal(last.labels, source.val.labels)
    np.testing.assert_array_equal(last.predicted, np.argmax(model.predict(x, verbose=0), axis=1))
    # The recorded validation accuracy of each epoch is its snapshot's.
    metrics = layout.read_metrics(run_dir)
    for epoch, accuracy in zip(timeline.epochs, metrics["val_accuracy"]):
        assert epoch.accuracy() == pytest.approx(accuracy, abs=1e-6)
        assert epoch.confusion(3).sum() == 12 and np.nansum(epoch.per_class(3) * 4) == round(accuracy * 12)
    np.testing.assert_allclose(last.conv1, np.asarray(model.get_layer("conv1").kernel), atol=2e-3)
    # The probe: spread over the classes, thumbnails of the network input, top-5 capped at 3 classes.
    assert timeline.probe_images.shape == (12, 16, 16, 3) and timeline.probe_images.dtype == np.uint8
    assert sorted(np.bincount(timeline.probe_labels)) == [4, 4, 4]
    assert last.probe_top.shape == (12, 3) and np.allclose(last.probe_prob.sum(axis=1), 1.0, atol=1e-2)
    assert (np.diff(last.probe_prob, axis=1) <= 1e-3).all()  # best first


def test_snapshots_are_small_and_travel_with_an_export(trained, tmp_path):
    folder, run_dir = trained
    assert folder_bytes(run_dir) < 3 * 20_000
    copy = tmp_path / "copy"
    assert cli("export", str(run_dir), str(copy)).returncode == 0
    assert read_timeline(copy, completed_epochs=3).numbers() == [1, 2, 3]


def test_a_run_killed_while_writing_a_snapshot_resumes_with_every_epoch(tmp_path):
    folder = make_image_folder(tmp_path / "data", classes=3, per_class=10)
    run_dir = tmp_path / "runs" / "killed"
    args = ("train", *TINY, "--data", str(folder), "--epochs", "3", "--runs-dir", str(tmp_path / "runs"),
            "--run-id", "killed")
    assert cli(*args, env={"ALEXNET_FAULT": "kill@snapshot#2"}).returncode == -9
    assert epochs_logged(run_dir) == [1]  # epoch 2 never committed
    assert not epoch_path(run_dir, 2).exists()  # the half-written file never took the name
    assert read_timeline(run_dir, completed_epochs=1).numbers() == [1]
    assert cli("train", "--resume", str(run_dir)).returncode == 0
    assert read_timeline(run_dir, completed_epochs=3).numbers() == [1, 2, 3]


def test_damaged_or_uncommitted_snapshots_are_left_out_with_a_note(tmp_path):
    run_dir = tmp_path / "run"
    labels = np.array([0, 1, 2, 2])
    for epoch in (1, 2, 3, 4):
        write_epoch(run_dir, epoch, labels, [0, 1, 1, 2], np.zeros((3, 3, 3, 4)), [[0, 1]] * 4, [[0.6, 0.4]] * 4)
    epoch_path(run_dir, 2).write_bytes(b"PK\x03\x04 not a zip")  # damaged
    write_epoch(run_dir, 3, labels, [0, 1, 7, 2], np.zeros((3, 3, 3, 4)), [[0, 1]] * 4, [[0.6, 0.4]] * 4)
    (run_dir / "snapshots" / PROBE).write_text("garbage")
    (run_dir / "snapshots" / "epoch-0001.npz.bak").write_text("ignored")
    timeline = read_timeline(run_dir, completed_epochs=3, num_classes=3)
    assert timeline.numbers() == [1]  # 2 damaged, 3 names a class that does not exist, 4 never committed
    assert len(timeline.notes) == 3 and any("epoch 2" in n for n in timeline.notes)
    assert any("probe" in n for n in timeline.notes) and timeline.probe_images is None
    assert timeline.epochs[0].per_class(3).tolist() == [1.0, 1.0, 0.5]
    assert not read_timeline(tmp_path / "nowhere") and isinstance(read_timeline(tmp_path / "nowhere"), Timeline)


def test_a_run_without_validation_or_with_snapshots_off_has_none(tmp_path):
    folder = make_image_folder(tmp_path / "data", classes=2, per_class=6)
    for run_id, extra in (("noval", ["--val-split", "0"]), ("off", ["--no-snapshots"])):
        result = cli("train", *TINY, "--data", str(folder), "--epochs", "1", "--runs-dir", str(tmp_path / "runs"),
                     "--run-id", run_id, *extra)
        assert result.returncode == 0, result.stderr[-2000:]
        assert not (tmp_path / "runs" / run_id / layout.SNAPSHOTS).exists()
    assert layout.read_config(tmp_path / "runs" / "off")["snapshots"] is False


def test_probe_spreads_over_classes():
    labels = np.repeat([0, 1, 2], [50, 3, 40])
    chosen = choose_probe(labels, 32)
    assert len(chosen) == 32 and len(set(chosen)) == 32
    assert np.bincount(labels[chosen]).tolist() == [15, 3, 14]
    assert choose_probe(labels[:5], 32).tolist() == [0, 1, 2, 3, 4]


def synthetic_timeline(classes: int, epochs: int, probe: bool):
    from alexnet_core.train.snapshots import Epoch, Timeline

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(classes), 4)
    made = [Epoch(epoch=e, labels=labels, predicted=np.where(rng.random(len(labels)) < e / epochs, labels, 0),
                  conv1=rng.normal(size=(5, 5, 3, 8)).astype(np.float32),
                  probe_top=np.tile(np.arange(5) % classes, (6, 1)) if probe else None,
                  probe_prob=np.full((6, 5), 0.2) if probe else None) for e in range(1, epochs + 1)]
    return Timeline(epochs=made, probe_images=rng.integers(0, 255, (6, 16, 16, 3), dtype=np.uint8) if probe else None,
                    probe_labels=np.arange(6) % classes if probe else None)


@pytest.mark.parametrize("classes, probe", [(3, True), (30, False)])
def test_the_epoch_animation_switches_pictures_and_never_redraws(classes, probe):
    """Each frame shows exactly its epoch's matrix and filters (laid in once, switched by opacity),
    updates the heading, the matrix's numbers and the bars in place, and nothing asks for a redraw:
    a redraw re-creates the pictures, which blank until the browser decodes them again."""
    from alexnet_core.analysis.charts import epoch_timeline_figure

    names = [f"class {i}" for i in range(classes)]
    fig = epoch_timeline_figure(synthetic_timeline(classes, 4, probe), names, 4)
    pictures = fig.layout.images
    assert len(pictures) == 2 * 4 + probe  # each epoch's matrix and filters, and the probe mosaic
    assert len({(p.xref, p.x) for p in pictures}) == len(pictures)  # one element each in plotly.js
    assert [p.opacity for p in pictures[:8]] == [0] * 6 + [1, 1]  # it opens on the last epoch
    assert [f.name for f in fig.frames] == ["1", "2", "3", "4"]
    for k, frame in enumerate(fig.frames):
        assert [p.opacity for p in frame.layout.images] == [1 if j // 2 == k else 0 for j in range(8)]
        assert frame.data[0].text[0].startswith(f"Epoch {k + 1} of 4: in-training validation accuracy")
        assert len(frame.data) == 3 + probe and all(t.type in ("scatter", "bar") for t in frame.data)
    steps = [s.args[1]["frame"]["redraw"] for s in fig.layout.sliders[0].steps]
    play = fig.layout.updatemenus[0].buttons[0].args[1]["frame"]["redraw"]
    assert steps == [False] * 4 and play is False
    cells = fig.data[1]
    assert len(cells.hovertext) == classes ** 2 and "true: class 0<br>predicted: class 0" in cells.hovertext[0]
    assert (cells.mode == "text") == (classes <= 20)  # many classes: no numbers, the hover still there
