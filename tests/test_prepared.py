"""A prepared dataset (`prepare SOURCE DEST`) read back wherever a SOURCE is accepted: the data
source and its record paths, damaged folders and hostile record paths refused with a message,
the training and evaluation pipelines over its records, the command line, and the app's pickers."""

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from alexnet_core.inputs import data, prepared
from alexnet_core.inputs.images import ImageDecodeError, read_image
from alexnet_core.inputs.splits import DataError, Split

CLASSES = ["n01440764", "n01443537", "n01484850"]
WORDS = {"n01440764": "tench, Tinca tinca", "n01443537": "goldfish, Carassius auratus",
         "n01484850": "great white shark"}
SIDE = 32  # stored images are 32x32, so a 32-px pipeline decodes them without resampling
TINY = ["--variant", "compact", "--width", "0.25", "--input-size", "16", "--batch-size", "8"]


def jpeg(i: int) -> bytes:
    """A distinct 32x32 JPEG for image i: noise around a brightness of its own (3 levels apart)."""
    rng = np.random.default_rng(i)
    pixels = np.clip(rng.integers(0, 40, (SIDE, SIDE, 3)) + 20 + 3 * i, 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def write_prepared(dest: Path, counts=None, shards=2) -> Path:
    """A prepared folder in the format `prepare` writes (docs: prepared datasets): per split,
    `shards` shards of tf.train.Examples, a .json per shard, labels.npz, prepared.json last."""
    import tensorflow as tf

    counts = counts or {"train": 24, "val": 6}
    dest.mkdir(parents=True)
    splits, labels, first = {}, {}, 0
    for split, count in counts.items():
        names = [f"{split}-{i:05d}-of-{shards:05d}.tfrecord" for i in range(shards)]
        order, total = [], 0
        for s, name in enumerate(names):
            members = list(range(first + s, first + count, shards))
            with tf.io.TFRecordWriter(str(dest / name)) as writer:
                for i in members:
                    label = i % len(CLASSES)
                    feature = {
                        "image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[jpeg(i)])),
                        "image/class/label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
                        "image/class/name": tf.train.Feature(bytes_list=tf.train.BytesList(
                            value=[CLASSES[label].encode()])),
                        "image/split": tf.train.Feature(bytes_list=tf.train.BytesList(value=[split.encode()])),
                        "image/height": tf.train.Feature(int64_list=tf.train.Int64List(value=[SIDE])),
                        "image/width": tf.train.Feature(int64_list=tf.train.Int64List(value=[SIDE])),
                        "image/filename": tf.train.Feature(bytes_list=tf.train.BytesList(
                            value=[f"{CLASSES[label]}/{i}.jpg".encode()])),
                    }
                    writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
            size = (dest / name).stat().st_size
            (dest / name).with_suffix(".json").write_text(json.dumps(
                {"count": len(members), "bytes": size, "labels": [i % 3 for i in members], "skipped": []}))
            order += members
            total += size
        labels[split] = np.array([i % len(CLASSES) for i in order], dtype=np.int32)
        splits[split] = {"shards": names, "count": count, "skipped": 1 if split == "train" else 0, "bytes": total}
        first += count
    np.savez(dest / "labels.npz", **labels)
    (dest / "prepared.json").write_text(json.dumps({
        "format": "alexnet-prepared", "version": 1, "name": dest.name, "source": "/photos/fish",
        "created": 1_780_000_000, "size": 256, "resize": "shorter side to 256, aspect kept, never enlarged",
        "quality": 90, "seed": 0, "class_names": CLASSES, "class_words": WORDS, "splits": splits,
        "val_split": 0.2}))
    return dest


@pytest.fixture(scope="module")
def dest(tmp_path_factory):
    return write_prepared(tmp_path_factory.mktemp("prepared") / "fish")


def identity(pixels: np.ndarray) -> int:
    """Which image i (jpeg(i)) decoded pixels are: by their mean brightness."""
    return int(round((float(np.mean(pixels)) - 20 - 19.5) / 3))


# --- The data source ------------------------------------------------------------------------------


def test_a_prepared_folder_is_a_source_of_record_paths_in_shard_order(dest):
    source = data.load_source(str(dest))
    assert source.class_names == CLASSES and source.class_words == WORDS
    assert len(source.train) == 24 and len(source.val) == 6 and source.test is None
    assert source.train.records and source.val.records
    assert source.train.paths[0] == f"{dest / 'train-00000-of-00002.tfrecord'}#0"
    assert source.train.paths[12] == f"{dest / 'train-00001-of-00002.tfrecord'}#0"
    for split in (source.train, source.val):  # position i: the i-th record in shard order, labelled as labels.npz
        for path, label in zip(split.paths, split.labels, strict=True):
            _, record_label, name = prepared.read_record(path)
            assert record_label == label and name == CLASSES[label]
    assert source.skipped == {"train": 1, "val": 0}
    described = source.description
    assert described.startswith("Prepared from /photos/fish on 2026-05-28: 30 images (train 24, val 6: 20% of each "
                                "class held out), 3 classes")
    assert "shorter side 256" in described and "JPEG quality 90" in described and "4 shards" in described
    assert "1 damaged file skipped" in described
    assert data.is_records(source.split("all")) and len(source.split("all")) == 30


def test_a_record_path_reads_as_an_image_everywhere(dest):
    path = data.load_source(str(dest)).val.paths[4]
    encoded, label, _ = prepared.read_record(path)
    assert np.array_equal(read_image(path), np.asarray(Image.open(io.BytesIO(encoded)).convert("RGB")))
    assert identity(read_image(path)) == 27  # val images 24-29: shard 0 holds 24, 26, 28, shard 1 25, 27, 29
    assert label == 27 % 3


@pytest.mark.parametrize("hostile", ["{shard}#3", "{shard}#99999999", "{dest}/missing-00000-of-00001.tfrecord#0",
                                     "{dest}/prepared.json#0", "/etc/passwd.tfrecord#0", "{other}#0",
                                     "{shard}\x00x.tfrecord#0", "{shard}#0\x00", "{dest}/../fish/train-00000-of-00002.tfrecord#12"])
def test_a_hostile_record_path_is_a_message_never_a_crash(dest, tmp_path, hostile):
    other = tmp_path / "train-00000-of-00001.tfrecord"  # a shard outside any prepared folder
    shutil.copy(dest / "val-00000-of-00002.tfrecord", other)
    path = hostile.format(shard=dest / "val-00000-of-00002.tfrecord", dest=dest, other=other)
    with pytest.raises(ImageDecodeError) as caught:
        read_image(path)
    assert str(caught.value).strip()
    if prepared.is_record_path(path):
        with pytest.raises(DataError):
            prepared.read_record(path)


def damage(folder: Path, how: str) -> str:
    """Damage a copy of a prepared folder; the file its message must name."""
    if how == "garbage record":
        (folder / "prepared.json").write_bytes(b"\x00{not json")
        return "prepared.json"
    if how == "missing shard":
        (folder / "train-00001-of-00002.tfrecord").unlink()
        return "train-00001-of-00002.tfrecord"
    if how == "truncated shard":
        shard = folder / "val-00000-of-00002.tfrecord"
        shard.write_bytes(shard.read_bytes()[:-100])
        return "val-00000-of-00002.tfrecord"
    if how == "damaged labels":
        (folder / "labels.npz").write_bytes(b"PK\x03\x04 half a zip")
        return "labels.npz"
    if how == "labels of another folder":
        np.savez(folder / "labels.npz", train=np.zeros(5, np.int32), val=np.zeros(6, np.int32))
        return "labels.npz"
    raise AssertionError(how)


@pytest.mark.parametrize("how", ["garbage record", "missing shard", "truncated shard", "damaged labels",
                                 "labels of another folder"])
def test_a_damaged_prepared_folder_says_which_file_and_to_prepare_again(dest, tmp_path, how):
    folder = shutil.copytree(dest, tmp_path / "fish")
    named = damage(folder, how)
    with pytest.raises(DataError) as caught:
        data.load_source(str(folder))
    message = str(caught.value)
    assert named in message and "prepare" in message and "again" in message, message


def test_a_truncated_shard_without_its_record_is_found_by_its_framing(dest, tmp_path):
    folder = shutil.copytree(dest, tmp_path / "fish")
    shard = folder / "val-00001-of-00002.tfrecord"
    shard.with_suffix(".json").unlink()
    shard.write_bytes(shard.read_bytes()[:-7])
    with pytest.raises(DataError, match="truncated"):
        data.load_source(str(folder))


def test_an_unfinished_prepared_folder_says_to_finish_it(tmp_path):
    folder = tmp_path / "half"
    (folder / ".prepare").mkdir(parents=True)
    with pytest.raises(DataError, match="being prepared or was interrupted") as caught:
        data.load_source(str(folder))
    assert "prepare SOURCE" in str(caught.value)


# --- Training and evaluation pipelines ---------------------------------------------------------


def identities(x) -> list[int]:
    """The images (by identity) of a batch of standardised network inputs."""
    from alexnet_core.inputs.preprocess import MEAN, STD

    return [identity(p) for p in (x.numpy() * np.array(STD) + np.array(MEAN)) * 255.0]


def test_training_shuffles_each_epoch_by_the_seed_and_shards_disjointly(dest):
    split = data.load_source(str(dest)).train

    def epochs(seed, shard=None, count=2):
        part = len(range(shard[1], 24, shard[0])) if shard else 24
        ds = data.make_dataset(split, 3, SIDE, part, training=True, seed=seed, shard=shard)
        batches = iter(ds)
        return [identities(next(batches)[0]) for _ in range(count)]

    first, second = epochs(seed=3)
    assert sorted(first) == sorted(second) == list(range(24))  # every image once an epoch
    assert first != second and first != sorted(first)  # shuffled, afresh each epoch
    assert epochs(seed=3) == [first, second]  # the same order for the same seed: resume redoes it exactly
    assert epochs(seed=4)[0] != first
    a, b = epochs(seed=3, shard=(2, 0), count=1)[0], epochs(seed=3, shard=(2, 1), count=1)[0]
    assert not set(a) & set(b) and sorted(a + b) == list(range(24))


def test_a_part_of_a_record_split_trains_like_the_probe_set(dest):
    split = data.load_source(str(dest)).train
    chosen = [5, 0, 17]
    part = Split(split.labels[chosen], paths=[split.paths[i] for i in chosen])  # as observers.py picks a probe set
    x, y = next(iter(data.make_dataset(part, 3, SIDE, 3)))
    images = [10, 0, 11]  # positions 5, 0, 17: shard 0 holds images 0, 2, ... 22, shard 1 images 1, 3, ... 23
    assert identities(x) == images and [identity(read_image(part.paths[i])) for i in range(3)] == images
    assert list(np.argmax(y.numpy(), axis=1)) == [i % 3 for i in images]


def test_evaluation_pixels_are_each_records_jpeg_at_its_position(dest):
    split = data.load_source(str(dest)).val
    seen = {}
    for positions, pixels in data.model_pixels(split, SIDE, batch=4):
        for i, p in zip(positions.numpy(), pixels.numpy(), strict=True):
            seen[int(i)] = p
    assert sorted(seen) == list(range(6))
    for i, pixels in seen.items():
        encoded, label, _ = prepared.read_record(split.paths[i])
        assert label == split.labels[i]
        assert np.abs(pixels - np.asarray(Image.open(io.BytesIO(encoded)).convert("RGB"), np.float32)).max() < 1e-3
    some = [4, 1]
    got = [(int(i), identity(p)) for b in data.model_pixels(split, SIDE, positions=some) for i, p in
           zip(b[0].numpy(), b[1].numpy(), strict=True)]
    assert got == [(4, identity(seen[4])), (1, identity(seen[1]))]


def test_the_crop_stream_over_records_gives_training_batches(dest):
    split = data.load_source(str(dest)).train
    x, y = next(iter(data.make_dataset(split, 3, 24, 8, training=True, crop="random-resized", seed=1)))
    assert x.dtype.name == "uint8" and x.shape == (8, 24, 24, 3) and y.shape == (8, 3)
    x, y, extras = next(iter(data.make_dataset(split, 3, 24, 8, training=True, crop="paper", lighting=0.1, seed=1)))
    assert x.shape == (8, 24, 24, 3) and extras["shift"].shape == (8, 3)  # added by the training step
    shards, rows = data.shards_and_rows(split)
    assert shards == [str(dest / "train-00000-of-00002.tfrecord"), str(dest / "train-00001-of-00002.tfrecord")]
    assert rows is None
    part = Split(split.labels[[13, 2]], paths=[split.paths[13], split.paths[2]])  # shard 1's second, shard 0's third
    part_shards, part_rows = data.shards_and_rows(part)
    assert part_shards == shards[::-1] and list(part_rows) == [1, 14]
    x, y = next(iter(data.make_dataset(part, 3, 24, 2, training=True, crop="paper", seed=1)))
    assert sorted(np.argmax(y.numpy(), axis=1)) == sorted(split.labels[[13, 2]])


# --- Written by `prepare`: the command line and the app ------------------------------------------


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A tiny dataset (3 classes, 10 photos each, 40x30 JPEGs) written by prepare.prepare."""
    from alexnet_core.inputs.prepare import prepare
    from tests.helpers import make_image_folder

    root = tmp_path_factory.mktemp("made")
    photos = make_image_folder(root / "photos", classes=3, per_class=10, size=(30, 40), fmt="jpg")
    prepare(str(photos), root / "fish", shards=4, workers=1)
    return root / "fish"


def test_what_prepare_writes_reads_back_image_for_image(made):
    source = data.load_source(str(made))
    photos = made.parent / "photos"
    assert source.class_names == ["class0", "class1", "class2"] and (len(source.train), len(source.val)) == (27, 3)
    seen = []
    for split in (source.train, source.val):
        for path, label in zip(split.paths, split.labels, strict=True):
            features = prepared.read_example(path)
            name = features["image/filename"][0].decode()
            assert features["image/encoded"][0] == (photos / name).read_bytes()  # small JPEGs kept byte for byte
            assert name.startswith(f"class{label}/") and prepared.read_record(path)[1:] == (label, f"class{label}")
            seen.append(name)
    assert sorted(seen) == sorted(str(p.relative_to(photos)) for p in photos.rglob("*.jpg"))  # each once


def cli(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "alexnet_core", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ})


def test_train_and_evaluate_on_a_prepared_folder_from_the_command_line(made, tmp_path):
    trained = cli("train", *TINY, "--data", str(made), "--epochs", "1", "--augment", "paper",
                  "--runs-dir", str(tmp_path / "runs"), "--run-id", "fish", "--json")  # records; lighting in the step
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert json.loads(trained.stdout)["state"] == "finished"
    run = tmp_path / "runs" / "fish"
    config = json.loads((run / "config.json").read_text())
    assert config["class_names"] == ["class0", "class1", "class2"] and config["data"] == str(made)
    assert len(np.load(run / "snapshots" / "probe.npz")["labels"]) == 3  # the probe set: chosen record paths
    evaluated = cli("evaluate", str(run), "--data", str(made), "--json")
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    result = json.loads(evaluated.stdout)
    assert result["n"] == 3 and result["classes"] == config["class_names"] and 0.0 <= result["accuracy"] <= 1.0
    from tests.helpers import cli as fast_cli

    boxed = fast_cli("train", *TINY, "--data", str(made), "--epochs", "1", "--augment", "random-resized-crop",
                     "--runs-dir", str(tmp_path / "runs"), "--run-id", "resized", "--json")  # no lighting: nothing for the step
    assert boxed.returncode == 0, boxed.stderr[-3000:]
    assert json.loads(boxed.stdout)["state"] == "finished"
    broken = shutil.copytree(made, tmp_path / "broken")
    (broken / "labels.npz").write_bytes(b"garbage")
    refused = cli("evaluate", str(run), "--data", str(broken))
    assert refused.returncode == 2 and "labels.npz" in refused.stderr and "Traceback" not in refused.stderr


def test_a_run_on_a_gpu_gets_random_resized_crops_unresized_for_its_step_to_resize(made, tmp_path, monkeypatch):
    from alexnet_core.inputs import records
    from alexnet_core.settings.config import TrainConfig
    from alexnet_core.store import layout
    from alexnet_core.train import lifecycle, loop
    from alexnet_core.train.loop import Trainer
    from tests.helpers import TINY

    resized = []

    def spy(flat, extras, size):
        resized.append(size)
        return real(flat, extras, size)

    real = records.resize_sent
    monkeypatch.setattr(records, "resize_sent", spy)
    monkeypatch.setattr(loop, "accelerated", lambda strategy: True)  # as on a GPU
    config = TrainConfig(data=str(made), epochs=2, steps_per_epoch=2, augment="random-resized-crop", **TINY)
    run_dir = lifecycle.new_run(config, tmp_path / "runs")
    status = Trainer(config, run_dir, log=lambda m: None).run()
    assert status["state"] == "finished" and status["completed_epochs"] == 2
    assert resized == [16]  # traced once, into the compiled step that ran every batch
    metrics = layout.read_metrics(run_dir)
    assert len(metrics["epoch"]) == 2 and np.isfinite(metrics["loss"]).all()


def test_the_pickers_list_prepared_datasets_with_their_description(made):
    from streamlit.testing.v1 import AppTest

    from alexnet_core.inputs.datasets import data_root
    from alexnet_ui.loaders import data_choices

    root = data_root()
    shutil.copytree(made, root / "fish")
    (root / "mine" / "cat").mkdir(parents=True)  # a dataset of the Your classes page beside it
    choices = data_choices()
    assert choices[str(root / "fish")] == "Prepared: fish (30 images, 256 px)"
    assert choices[str(root / "mine")] == "Your classes: mine"
    app = str(Path(__file__).resolve().parent.parent / "app.py")
    at = AppTest.from_file(app, default_timeout=120)
    at.switch_page("pages/train.py")
    at.run()
    assert not at.slider(key="train_val_split").disabled
    at.radio(key="train_data_kind").set_value(str(root / "fish")).run()
    assert not at.exception and not at.error
    assert at.slider(key="train_val_split").disabled  # its splits are its own
    at.radio(key="train_data_kind").set_value("folder").run()
    at.text_input(key="train_folder").set_value(str(made)).run()
    assert not at.exception and not at.error
    captions = [c.value.replace("\\", "") for c in at.caption]
    assert any(f"Prepared from {made.parent / 'photos'} on " in c and "30 images (train 27, val 3: 10% of each class "
               "held out), 3 classes, shorter side 256, JPEG quality 90, 5 shards" in c for c in captions), captions
    assert any("27 training and 3 validation images in 3 classes" in c for c in captions)
    at = AppTest.from_file(app, default_timeout=120)
    at.switch_page("pages/evaluate.py")
    at.run()
    assert "Prepared: fish (30 images, 256 px)" in at.selectbox(key="eval_data").options
    at.selectbox(key="eval_data").select(str(root / "fish")).run()
    assert not at.exception
    assert any("30 images (train 27, val 3" in c.value.replace("\\", "") for c in at.caption)


def test_a_prepared_datasets_images_open_in_evaluate_and_in_a_gallery(tmp_path):
    from streamlit.testing.v1 import AppTest

    from alexnet_core.inputs.prepare import prepare
    from alexnet_core.locations import SAMPLE_DIR

    photos = tmp_path / "pets"
    for name in ("cat", "dog"):
        shutil.copytree(SAMPLE_DIR / "val" / name, photos / "val" / name)
    prepare(str(photos), tmp_path / "pets-prepared", workers=1)
    dest = tmp_path / "pets-prepared"
    at = AppTest.from_file(str(Path(__file__).resolve().parent.parent / "app.py"), default_timeout=120)
    at.switch_page("pages/evaluate.py")
    at.run()
    at.selectbox(key="eval_data").select("folder").run()
    at.text_input(key="eval_folder").set_value(str(dest)).run()
    assert not at.exception and not at.error
    assert any("Prepared from" in c.value for c in at.caption)
    at.session_state["eval_cell"] = (3, 5)  # what a click on (true cat, predicted dog) stores
    at.run()
    assert not at.exception and not at.error and not at.warning
    heading = next(s.value for s in at.subheader if s.value.startswith("True cat, predicted dog"))
    shown = int(heading.rsplit(": ", 1)[1].split()[0])
    captions = [i.caption for e in at.get("image") for i in e.proto.imgs]
    assert shown and sum(c.endswith(" dog") for c in captions) == min(shown, 12)  # each read from its record

    from alexnet_ui.classify_view import gallery_bank

    paths = tuple(data.load_source(str(dest)).val.paths[:3])
    features, kept, damaged = gallery_bank("demo", "", paths + (f"{dest}/val-00000-of-00001.tfrecord#9999",))
    assert features.shape[0] == 3 and list(kept) == list(paths) and len(damaged) == 1 and "no record 9,999" in damaged[0]
