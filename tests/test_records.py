"""The training stream over prepared shards (inputs/records.py): what it yields, every image once
per epoch, the order per seed and per epoch, per-worker shards, subsets, per-image lighting."""

from __future__ import annotations

import io
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from alexnet_core.inputs import records  # noqa: E402
from alexnet_core.inputs.splits import DataError  # noqa: E402

SIZE = 16
PER_SHARD = (9, 8, 7)  # three shards of 24 images, each image its own label
TOTAL = sum(PER_SHARD)


def _jpeg(pixels: np.ndarray) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "JPEG", quality=95)
    return out.getvalue()


def _example(data: bytes, label: int) -> bytes:
    feature = {"image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[data])),
               "image/class/label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label]))}
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def _write(folder, groups) -> list[str]:
    """Shards (with their .json records) of [(jpeg bytes, label), ...] per shard."""
    paths = []
    for i, items in enumerate(groups):
        path = folder / f"train-{i:05d}-of-{len(groups):05d}.tfrecord"
        with tf.io.TFRecordWriter(str(path)) as writer:
            for data, label in items:
                writer.write(_example(data, label))
        path.with_suffix(".json").write_text(json.dumps({"count": len(items), "bytes": path.stat().st_size,
                                                         "labels": [label for _, label in items], "skipped": []}))
        paths.append(str(path))
    return paths


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """24 noisy images, label = position in shard-then-record order; half of them at the prepared
    size for SIZE (shorter side 18 ~ 16*256/224: the paper's window, no resampling), half larger
    (resampled)."""
    rng = np.random.default_rng(0)
    groups, label = [], 0
    for count in PER_SHARD:
        items = []
        for _ in range(count):
            shape = (18, 24, 3) if label % 2 else (30, 22, 3)
            items.append((_jpeg(rng.integers(0, 256, shape, dtype=np.uint8)), label))
            label += 1
        groups.append(items)
    return _write(tmp_path_factory.mktemp("shards"), groups)


def _labels(dataset) -> list[int]:
    return [int(i) for _, y in dataset for i in np.argmax(y.numpy(), axis=1)]


def _stream(shards, **kw):
    args = {"seed": 0, "crop": "paper", "lighting": 0.1, "epochs": 2}
    args.update(kw)
    return records.train_batches(shards, TOTAL, SIZE, 5, **args)


@pytest.mark.parametrize("crop", ["paper", "random-resized"])
def test_batches_are_uint8_images_and_one_hot_labels(shards, crop):
    dataset = records.train_batches(shards, TOTAL, SIZE, 4, seed=0, crop=crop, lighting=0.1, drop_remainder=True)
    images_spec, labels_spec = dataset.element_spec
    assert images_spec.dtype == tf.uint8 and images_spec.shape.as_list() == [4, SIZE, SIZE, 3]
    assert labels_spec.dtype == tf.float32 and labels_spec.shape.as_list() == [4, TOTAL]
    for images, labels in dataset.take(3):
        labels = labels.numpy()
        assert images.shape == (4, SIZE, SIZE, 3)
        assert set(np.unique(labels)) <= {0.0, 1.0} and np.all(labels.sum(axis=1) == 1.0)
        assert images.numpy().std() > 20  # noise images, not blank


def test_the_paper_crop_of_an_image_at_the_prepared_size_is_a_window_of_it(tmp_path):
    """Shorter side 18 ~ SIZE*256/224: a SIZE x SIZE window of the decoded pixels, maybe flipped,
    never resampled; a larger image is resampled (its pixels are no window of it). The window's
    outer ring is left out: libjpeg's cropped decoding upsamples the colour at a crop's edge from
    fewer neighbours than the whole image's decoding."""
    rng = np.random.default_rng(2)
    small, large = (rng.integers(0, 256, shape, dtype=np.uint8) for shape in ((18, 24, 3), (40, 52, 3)))
    paths = _write(tmp_path, [[(_jpeg(small), 0), (_jpeg(large), 1)]])
    decoded = {label: tf.io.decode_jpeg(_jpeg(pixels), channels=3).numpy() for label, pixels in ((0, small), (1, large))}

    def is_window(image, source):
        for picture in (source, source[:, ::-1]):
            for top in range(picture.shape[0] - SIZE + 1):
                for left in range(picture.shape[1] - SIZE + 1):
                    if np.array_equal(picture[top + 1:top + SIZE - 1, left + 1:left + SIZE - 1], image[1:-1, 1:-1]):
                        return True
        return False

    found = {0: 0, 1: 0}
    for images, labels in records.train_batches(paths, 2, SIZE, 2, seed=0, crop="paper", epochs=6):
        for image, label in zip(images.numpy(), np.argmax(labels.numpy(), axis=1)):
            found[int(label)] += is_window(image, decoded[int(label)])
    assert found == {0: 6, 1: 0}


@pytest.mark.parametrize("shift", [None, (7.0, -3.5, 0.25)])
def test_the_resized_crop_is_the_bilinear_resize_of_the_crop_s_bytes(shift):
    """decode_crop resizes a float copy of the crop (the CPU kernel is faster on floats): the
    pixels are those of resizing the decoded bytes themselves, rounded, for every box and flip."""
    from alexnet_core.inputs.crops import crop_window

    rng = np.random.default_rng(3)
    data = tf.constant(_jpeg(rng.integers(0, 256, (30, 41, 3), dtype=np.uint8)))
    for i in range(12):
        seed, flip = tf.constant([i, 5], tf.int64), tf.constant(i % 2 == 1)
        extra = None if shift is None else tf.constant(shift)
        image = records.decode_crop(data, SIZE, "random-resized", seed, tf.zeros([2]), flip, extra)
        begin, extent = crop_window(tf.io.extract_jpeg_shape(data), SIZE, "random-resized", seed)
        part = tf.io.decode_and_crop_jpeg(data, tf.concat([begin, extent], 0), channels=3)
        part = tf.reverse(part, [1]) if i % 2 else part
        offset = np.float32(0.5) + (np.float32(0) if shift is None else np.array(shift, np.float32))
        expected = np.clip(tf.image.resize(part, (SIZE, SIZE)).numpy() + offset, 0, 255).astype(np.uint8)
        assert image.dtype == tf.uint8 and image.shape == (SIZE, SIZE, 3)
        np.testing.assert_array_equal(image.numpy(), expected)


def test_every_image_once_per_epoch_and_reshuffled_each_epoch(shards):
    labels = _labels(_stream(shards))
    assert len(labels) == 2 * TOTAL
    first, second = labels[:TOTAL], labels[TOTAL:]
    assert sorted(first) == list(range(TOTAL)) and sorted(second) == list(range(TOTAL))
    assert first != second
    assert first != sorted(first)  # shuffled, not in file order


def test_same_seed_same_batches_other_seed_other_order(shards):
    one, two = list(_stream(shards, epochs=1)), list(_stream(shards, epochs=1))
    for (x1, y1), (x2, y2) in zip(one, two, strict=True):
        np.testing.assert_array_equal(x1.numpy(), x2.numpy())
        np.testing.assert_array_equal(y1.numpy(), y2.numpy())
    assert _labels(one) != _labels(_stream(shards, epochs=1, seed=1))


def test_forever_by_default(shards):
    labels = _labels(records.train_batches(shards, TOTAL, SIZE, 8, seed=0, crop="paper").take(10))
    assert len(labels) == 80 and sorted(labels[:TOTAL]) == list(range(TOTAL))


@pytest.mark.parametrize("count", [2, 4])  # 2: whole shard files per worker; 4 (> 3 files): every 4th record
def test_workers_read_disjoint_parts_that_cover_the_split(shards, count):
    parts = [_labels(_stream(shards, shard=(count, i), epochs=1)) for i in range(count)]
    assert all(parts)
    assert sorted(sum(parts, [])) == list(range(TOTAL))
    if count == 2:  # files 0 and 2 to the first worker, file 1 to the second
        assert sorted(parts[1]) == list(range(PER_SHARD[0], PER_SHARD[0] + PER_SHARD[1]))
    else:
        assert sorted(parts[1]) == list(range(1, TOTAL, 4))


def test_rows_keep_only_those_positions(shards):
    rows = [0, 5, 9, 17, 23]
    labels = _labels(_stream(shards, rows=rows))
    assert sorted(labels[:5]) == rows and sorted(labels[5:]) == rows
    both = _labels(_stream(shards, rows=rows, shard=(2, 1), epochs=1))  # file 1 holds positions 9..16
    assert both == [9]


def test_lighting_is_drawn_per_image(tmp_path):
    grey = _jpeg(np.full((18, 24, 3), 128, dtype=np.uint8))
    paths = _write(tmp_path, [[(grey, i) for i in range(12)]])

    def colours(lighting):
        images, _ = next(iter(records.train_batches(paths, 12, SIZE, 12, seed=0, crop="paper", lighting=lighting)))
        images = images.numpy().astype(np.float32)
        assert images.std(axis=(1, 2)).max() <= 1.0  # one shift over each whole image
        return images.mean(axis=(1, 2))

    plain = colours(0.0)
    assert np.abs(plain - 128).max() <= 1.0
    shifted = colours(0.5)
    assert len({tuple(np.round(c)) for c in shifted}) >= 10  # a shift of its own for each image
    assert np.abs(shifted - plain).max() > 5


def test_a_damaged_record_is_left_out(tmp_path):
    rng = np.random.default_rng(1)
    good = [(_jpeg(rng.integers(0, 256, (18, 24, 3), dtype=np.uint8)), i) for i in range(5)]
    paths = _write(tmp_path, [good[:2] + [(b"\xff\xd8\xff not a jpeg", 5)] + good[2:]])
    labels = [int(i) for _, y in records.train_batches(paths, 6, SIZE, 3, seed=0, crop="paper", epochs=1)
              for i in np.argmax(y.numpy(), axis=1)]
    assert sorted(labels) == [0, 1, 2, 3, 4]


def test_bad_arguments_are_refused_with_what_to_do(shards, tmp_path):
    with pytest.raises(DataError, match="paper"):
        records.train_batches(shards, TOTAL, SIZE, 4, seed=0, crop="center")
    with pytest.raises(DataError, match="prepare"):
        records.train_batches([str(tmp_path / "train-00000-of-00001.tfrecord")], TOTAL, SIZE, 4, seed=0, crop="paper")
    with pytest.raises(DataError, match="outside"):
        records.train_batches(shards, TOTAL, SIZE, 4, seed=0, crop="paper", rows=[0, TOTAL])
    with pytest.raises(DataError, match="shard"):
        records.train_batches(shards, TOTAL, SIZE, 4, seed=0, crop="paper", shard=(2, 2))
    with pytest.raises(DataError, match="empty"):
        records.train_batches([], TOTAL, SIZE, 4, seed=0, crop="paper")


def test_shifts_sent_to_the_step_are_the_ones_the_stream_would_add(tmp_path):
    grey = _jpeg(np.full((18, 24, 3), 128, dtype=np.uint8))
    paths = _write(tmp_path, [[(grey, i) for i in range(12)]])
    added, _ = next(iter(records.train_batches(paths, 12, SIZE, 12, seed=3, crop="paper", lighting=0.5)))
    sent = records.train_batches(paths, 12, SIZE, 12, seed=3, crop="paper", lighting=0.5, on_device=True)
    assert [spec.dtype for spec in sent.element_spec[:2]] == [tf.uint8, tf.float32]
    assert list(sent.element_spec[2]) == ["shift"]
    images, _, extras = next(iter(sent))
    shifts = extras["shift"]
    plain, _ = next(iter(records.train_batches(paths, 12, SIZE, 12, seed=3, crop="paper", lighting=0.0)))
    np.testing.assert_array_equal(images.numpy(), plain.numpy())  # the same crops, nothing added yet
    assert shifts.shape == (12, 3) and len({tuple(s) for s in np.round(shifts.numpy(), 3)}) == 12
    expected = np.clip(images.numpy().astype(np.float32) + shifts.numpy()[:, None, None, :], 0, 255)
    assert np.abs(expected - added.numpy().astype(np.float32)).max() <= 1.0  # what the stream adds, as bytes


def test_the_training_step_adds_the_shifts_before_standardising():
    import keras

    from alexnet_core.train.loop import make_steps

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4, 4, 3)), keras.layers.Flatten(), keras.layers.Dense(3, "softmax")])
    optimizer = keras.optimizers.SGD(learning_rate=0.0)
    loss = keras.losses.CategoricalCrossentropy(reduction=None)
    step, _ = make_steps(model, optimizer, tf.distribute.get_strategy(), loss, 6, 2, per_image=False)
    rng = np.random.default_rng(1)
    pixels = rng.integers(20, 236, (6, 4, 4, 3), dtype=np.uint8)
    labels = np.eye(3, dtype=np.float32)[[0, 1, 2, 0, 1, 2]]
    shifts = rng.uniform(-15, 15, (6, 3)).astype(np.float32)
    shifts[0] = [40.0, -40.0, 0.0]  # pixels 20..235: some leave 0..255 and are clipped, as the stream clips them
    with_shifts = step(iter(tf.data.Dataset.from_tensors((pixels, labels, {"shift": shifts}))))["loss"]
    shifted = np.clip(pixels.astype(np.float32) + shifts[:, None, None, :], 0, 255)
    plain = step(iter(tf.data.Dataset.from_tensors((pixels, labels))))["loss"]
    from alexnet_core.inputs.preprocess import normalize

    standardised = step(iter(tf.data.Dataset.from_tensors((normalize(shifted), labels))))["loss"]  # taken as is
    assert abs(float(with_shifts) - float(standardised)) < 1e-4 and abs(float(with_shifts) - float(plain)) > 1e-3


def _assorted(tmp_path, count=14):
    """Shards of `count` noise JPEGs of assorted sizes: their random-resized crops are enlarged and
    shrunk to SIZE. Label = position."""
    rng = np.random.default_rng(5)
    items = [(_jpeg(rng.integers(0, 256, (int(h), int(w), 3), dtype=np.uint8)), i)
             for i, (h, w) in enumerate(rng.integers(10, 48, (count, 2)))]
    return _write(tmp_path, [items[: count // 2], items[count // 2:]])


@pytest.mark.parametrize("lighting", [0.0, 0.5])
def test_crops_sent_unresized_are_resized_on_the_device_as_the_stream_resizes_them(tmp_path, lighting):
    paths = _assorted(tmp_path)
    same = {"seed": 3, "crop": "random-resized", "lighting": lighting, "epochs": 1, "on_device": True}
    here = records.train_batches(paths, 14, SIZE, 5, **same)
    sent = records.train_batches(paths, 14, SIZE, 5, resize_on_device=True, **same)
    spec = sent.element_spec
    assert spec[0].shape.as_list() == [None] and spec[0].dtype == tf.uint8  # one flat buffer per batch
    assert sorted(spec[2]) == sorted(["hw", "ends", "flip", *(["shift"] if lighting else [])])
    sizes, flips, labels_seen = [], [], []
    for (images, labels, *shifts), (flat, sent_labels, extras) in zip(here, sent, strict=True):
        np.testing.assert_array_equal(labels.numpy(), sent_labels.numpy())
        assert int(extras["ends"][-1]) == flat.shape[0]
        pixels, rest = records.resize_sent(flat, extras, SIZE)
        assert pixels.shape == images.shape and pixels.dtype == tf.float32
        # The stream rounds its float resize to bytes: the same pixels within half a level.
        assert np.abs(pixels.numpy() - images.numpy().astype(np.float32)).max() <= 0.5 + 1e-3
        if lighting:
            np.testing.assert_array_equal(rest["shift"].numpy(), shifts[0]["shift"].numpy())
        else:
            assert rest == {}
        sizes += list(extras["hw"].numpy().ravel())
        flips += list(extras["flip"].numpy())
        labels_seen += list(np.argmax(labels.numpy(), axis=1))
    assert sorted(labels_seen) == list(range(14))  # every image once
    assert min(sizes) < SIZE < max(sizes) and any(flips) and not all(flips)  # shrunk and enlarged, both ways


def test_large_batches_are_resized_in_the_stream_and_an_oversized_buffer_is_refused(tmp_path, monkeypatch):
    paths = _assorted(tmp_path)
    monkeypatch.setattr(records, "SENT_MAX_BATCH", 4)
    large = records.train_batches(paths, 14, SIZE, 5, seed=3, crop="random-resized", resize_on_device=True)
    assert large.element_spec[0].shape.as_list() == [None, SIZE, SIZE, 3]  # resized here
    monkeypatch.setattr(records, "SENT_MAX_BATCH", 1024)
    monkeypatch.setattr(records, "SENT_BUCKET", 2**31 - 64)  # any batch of crops passes the limit
    sent = records.train_batches(paths, 14, SIZE, 5, seed=3, crop="random-resized", resize_on_device=True)
    with pytest.raises(tf.errors.InvalidArgumentError, match="smaller --batch-size"):
        next(iter(sent))


@pytest.mark.parametrize("lighting", [0.0, 0.5])
def test_the_training_step_resizes_crops_sent_unresized(tmp_path, lighting):
    import keras

    from alexnet_core.inputs.preprocess import normalize
    from alexnet_core.train.loop import make_steps

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((SIZE, SIZE, 3)), keras.layers.Flatten(), keras.layers.Dense(14, "softmax")])
    loss = keras.losses.CategoricalCrossentropy(reduction=None)
    step, _ = make_steps(model, keras.optimizers.SGD(learning_rate=0.0), tf.distribute.get_strategy(), loss, 7, 2,
                         per_image=False)
    flat, labels, extras = next(iter(records.train_batches(
        _assorted(tmp_path), 14, SIZE, 7, seed=1, crop="random-resized", lighting=lighting, on_device=True,
        resize_on_device=True)))
    sent = step(iter(tf.data.Dataset.from_tensors((flat, labels, extras))))
    pixels, rest = records.resize_sent(flat, extras, SIZE)
    if lighting:
        pixels = tf.clip_by_value(pixels + rest["shift"][:, None, None, :], 0.0, 255.0)
    expected = step(iter(tf.data.Dataset.from_tensors((normalize(pixels), labels))))  # float input: taken as is
    unflipped = {key: value for key, value in extras.items() if key != "flip"}
    other = step(iter(tf.data.Dataset.from_tensors((flat, labels, {**unflipped, "flip": ~extras["flip"]}))))
    assert sent["count"] == 7 and abs(float(sent["loss"]) - float(expected["loss"])) < 1e-4
    assert abs(float(other["loss"]) - float(sent["loss"])) > 1e-4  # the flips are the step's to apply


def test_only_a_strategy_on_gpus_or_tpus_gets_crops_to_resize():
    from types import SimpleNamespace

    from alexnet_core.train.loop import accelerated

    def on(*devices):
        return SimpleNamespace(extended=SimpleNamespace(worker_devices=devices))

    assert not accelerated(tf.distribute.get_strategy())  # this machine: a CPU
    assert not accelerated(tf.distribute.OneDeviceStrategy("/cpu:0"))
    assert not accelerated(on("/job:localhost/replica:0/task:0/device:CPU:0"))
    assert accelerated(on("/job:localhost/replica:0/task:0/device:GPU:0", "/job:localhost/replica:0/task:0/device:GPU:1"))
    assert accelerated(on("/job:worker/replica:0/task:1/device:TPU:0"))


ALLOCATION_PROBE = """
import ctypes, json
import numpy as np
from alexnet_core.inputs import records

class Info(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                     "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = Info
out = {}
for phase in ("before", "after"):
    if phase == "after":
        out["set"] = records.roomy_allocator()
    base = libc.mallinfo2().hblkhd  # bytes held in mmap-ed blocks
    batch = np.ones(40 * 2**20, np.uint8)  # a batch of 256 images at 227 px
    out[phase] = libc.mallinfo2().hblkhd - base
    del batch
print(json.dumps(out))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
@pytest.mark.parametrize("environment", [{}, {"MALLOC_MMAP_THRESHOLD_": "1048576"}])
def test_the_stream_lets_the_heap_reuse_a_batch_sized_block(environment):
    import ctypes
    import subprocess

    if not hasattr(ctypes.CDLL(None), "mallinfo2"):
        pytest.skip("not glibc 2.33 or later")
    env = {key: value for key, value in os.environ.items() if key != "MALLOC_MMAP_THRESHOLD_"} | environment
    result = subprocess.run([sys.executable, "-c", ALLOCATION_PROBE], capture_output=True, text=True, env=env,
                            check=True, cwd=Path(__file__).resolve().parent.parent)
    out = json.loads(result.stdout.strip().splitlines()[-1])
    if environment:  # an allocator set by the environment is left as it is
        assert out["set"] is False and out["after"] >= 40 * 2**20
    else:
        assert out["before"] >= 40 * 2**20  # glibc's default: a fresh mapping for each batch
        assert out["set"] is True and out["after"] == 0  # now from the heap, reused batch after batch
