"""The training stream over a prepared folder's TFRecord shards: crop, flip, PCA lighting.

A prepared folder (inputs/prepare.py writes it, inputs/prepared.py reads it) holds each image
once as a JPEG already resized to 256 px on its shorter side, in `*-NNNNN-of-NNNNN.tfrecord`
shards of `tf.train.Example`s. `train_batches` turns a split's shards into what
`data.make_dataset(..., training=True, crop=...)` gives for image files: batches of (uint8 HWC
images at input_size, one-hot float32 labels), repeating forever, every epoch shuffled afresh
and the same for the same seed.

Per epoch: the shard files in a new seeded order, several read at once and interleaved in a
fixed pattern, a shuffle buffer over the records. That is not a full permutation of the split as
the file pipeline's is (the JPEG bytes of a large split do not fit a buffer), but `prepare` filled
the shards in a seeded random order of the whole split, so each shard is already a mix of every
class, and the order of each epoch is a new one. Per image: the crop's JPEG blocks decoded
(`decode_and_crop_jpeg`), flipped, resized to the input (the paper's crop of an image already at
the prepared size is a 227 window taken as it is, `paper_window`), its own PCA lighting shift
added, and turned into bytes. Records are parsed a batch at a time, and each such batch draws the
random numbers of its images at once (no random stream zipped with the images); the per-image work
runs in one parallel map. docs/BENCHMARKS.md has what each step costs.
"""

from __future__ import annotations

# TensorFlow loads on first use (inside the functions), as in data.py: importing this module
# stays light for the app's pages and the command line.
import functools
import json
import os
from pathlib import Path

import numpy as np

from alexnet_core.inputs.splits import DataError

SHUFFLE_RECORDS = 8192  # records in the shuffle buffer (~25 KB each at 256 px: about 200 MB)
INTERLEAVE = 8  # shard files read at once
PARSE_BATCH = 128  # records parsed (and their random numbers drawn) together


def shard_counts(shards: list[str]) -> list[int]:
    """The number of records of each shard: from its `.json` record when that is readable and
    agrees with the shard's size, else by reading the shard through."""
    import tensorflow as tf

    counts = []
    for shard in shards:
        path = Path(shard)
        count = None
        try:
            info = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
            if int(info["bytes"]) == path.stat().st_size and int(info["count"]) >= 0:
                count = int(info["count"])
        except (OSError, ValueError, KeyError, TypeError):
            pass
        if count is None:
            try:
                count = sum(1 for _ in tf.data.TFRecordDataset(str(path)))
            except tf.errors.OpError as exc:
                raise DataError(f"Cannot read the prepared shard '{path}' ({exc.message.splitlines()[0][:200]}): "
                                "run `prepare` again to rewrite it.") from exc
        counts.append(count)
    return counts


def _check(shards, num_classes, input_size, batch_size, crop, shard, rows):
    if not shards:
        raise DataError("No prepared shards to train on: the split is empty. Run `prepare` on a folder with images.")
    missing = [s for s in shards if not os.path.isfile(s)]
    if missing:
        raise DataError(f"The prepared shard '{missing[0]}' is missing ({len(missing)} of {len(shards)} shards): "
                        "run `prepare` again to rewrite the folder.")
    if crop not in ("paper", "random-resized"):
        raise DataError(f"Unknown training crop {crop!r}: use 'paper' or 'random-resized'.")
    if num_classes < 1 or input_size < 1 or batch_size < 1:
        raise DataError(f"num_classes, input_size and batch_size must be positive (got {num_classes}, "
                        f"{input_size}, {batch_size}).")
    if shard is not None:
        count, index = shard
        if count < 1 or not 0 <= index < count:
            raise DataError(f"shard=(count, index) needs count >= 1 and 0 <= index < count, got {shard}.")
    if rows is not None and len(rows) == 0:
        raise DataError("rows selects no image: give at least one position, or None for all.")


def records(shards: list[str], *, seed: int, shard: tuple[int, int] | None = None, rows=None,
            epochs: int | None = None, buffer: int = SHUFFLE_RECORDS, interleave: int = INTERLEAVE):
    """The serialized records of `shards`, each epoch in a fresh seeded order, repeating forever
    (or `epochs` times): the shard order reshuffled per epoch, `interleave` shards read at once in
    a fixed pattern, then a shuffle buffer of `buffer` records. `shard=(count, index)` keeps the
    index-th of every count shard files (every count-th record when there are fewer files than
    count); `rows` keeps only the records at those positions of the split (shard-then-record
    order). Each epoch is complete before the next begins."""
    import tensorflow as tf

    shards = [str(s) for s in shards]
    count, index = shard or (1, 0)
    by_record = count > 1 and len(shards) < count
    mine = list(range(len(shards)))
    if count > 1 and not by_record:
        mine = mine[index::count]
    if rows is not None or by_record:
        counts = shard_counts(shards)
        total = sum(counts)
        mask = np.ones(total, dtype=bool)
        if rows is not None:
            rows = np.asarray(rows, dtype=np.int64)
            if rows.min() < 0 or rows.max() >= total:
                raise DataError(f"rows has position {int(rows.max() if rows.max() >= total else rows.min())}, "
                                f"outside the split's {total} images: the prepared folder changed; load it again.")
            mask[:] = False
            mask[rows] = True
        if by_record:
            mask &= np.arange(total) % count == index
        keep = tf.constant(mask)
        offsets = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        files = tf.data.Dataset.from_tensor_slices(([shards[i] for i in mine], offsets[mine]))

        def read(path, offset):
            return tf.data.TFRecordDataset(path).enumerate(offset).filter(lambda i, _: keep[i]).map(lambda _, r: r)
    else:
        files = tf.data.Dataset.from_tensor_slices([shards[i] for i in mine])

        def read(path):
            return tf.data.TFRecordDataset(path)

    shards = [shards[i] for i in mine]
    cycle = max(1, min(interleave, len(shards)))
    epoch = files.shuffle(max(1, len(shards)), seed=seed, reshuffle_each_iteration=True)
    epoch = epoch.interleave(read, cycle_length=cycle, block_length=1, num_parallel_calls=cycle, deterministic=True)
    if buffer > 1:
        epoch = epoch.shuffle(buffer, seed=seed + 1, reshuffle_each_iteration=True)
    return epoch.repeat(epochs)


def decode_crop(data, size: int, crop: str, seed, uniform, flip, shift=None):
    """One training crop of a JPEG's bytes, decoding only the crop's blocks, flipped when `flip`,
    as uint8 at size x size, with the per-channel lighting `shift` (float32 (3,), 0..255 scale)
    added when given.

    `seed` is the image's stateless seed pair (crops.crop_window's box); `uniform`, two numbers in
    [0, 1), places the paper's window in an image already at the prepared size (`paper_window`)."""
    import tensorflow as tf

    from alexnet_core.inputs.crops import crop_window

    shape = tf.io.extract_jpeg_shape(data)

    def cut(begin, extent, side=None):
        part = tf.io.decode_and_crop_jpeg(data, tf.concat([begin, extent], 0), channels=3)
        part.set_shape([side, side, 3])
        return tf.cond(flip, lambda: tf.reverse(part, [1]), lambda: part)

    def resized():
        # Bilinear, no antialiasing filter (crops.to_input says why), of a float copy of the crop:
        # the CPU kernel loads float pixels as vectors but converts uint8 ones one at a time, so
        # resizing the bytes directly cost about 1.7x the copy and its resize together (340-380
        # against 210 microseconds an image at 227 px). The pixels are the same.
        part = tf.cast(cut(*crop_window(shape, size, crop, seed)), tf.float32)
        return _to_bytes(tf.image.resize(part, (size, size)), shift)

    if crop != "paper":
        return resized()
    begin, resample = paper_window(shape, size, uniform)

    def window():
        pixels = cut(begin, tf.constant([size, size]), size)
        return pixels if shift is None else _to_bytes(tf.cast(pixels, tf.float32), shift)

    return tf.cond(resample, resized, window)


def _to_bytes(pixels, shift):
    """float32 0..255 pixels, plus a per-channel lighting shift when given, rounded to uint8.
    Bilinear pixels stay in 0..255, so without a shift + 0.5 and a cast round them; with one,
    bias_add (a broadcast add costs several times more here) and a single clip."""
    import tensorflow as tf

    if shift is None:
        return tf.cast(pixels + 0.5, tf.uint8)
    shifted = tf.nn.bias_add(pixels, shift + 0.5)
    return tf.cast(tf.raw_ops.ClipByValue(t=shifted, clip_value_min=0.0, clip_value_max=255.0), tf.uint8)


def paper_window(shape, size: int, uniform):
    """The paper's crop of an image already at the prepared size, as the paper's network was
    trained (the BVLC Caffe model: random 227 crops of 256-px images): a random size x size window,
    no resampling. crops.crop_window's square of side shorter*224/256 (224 at 256 px) resized to
    227 is the same crop within 1.3% of scale, and that resize costs about 40% of the stream on a
    CPU. Returns (begin, resample): `resample` (a boolean tensor) is true for an image not at the
    prepared size (its shorter side off size*256/224 by more than 3%), which gets crop_window's
    square resized, as from files."""
    import tensorflow as tf

    from alexnet_core.inputs.crops import PAPER_RESIZE

    hw = tf.cast(shape[:2], tf.float32)
    target = size * PAPER_RESIZE
    resample = tf.abs(tf.reduce_min(hw) - target) > 0.03 * target
    begin = tf.cast(tf.floor(uniform * tf.maximum(hw - size + 1.0, 1.0)), tf.int32)
    return begin, resample


# glibc serves an allocation above its mmap threshold (at most 32 MiB when left to adjust itself)
# with a fresh mapping, page-faulted in and unmapped again on free. A batch of 256 images at 227 px
# is 40 MiB, so every batch paid that, twice with the batching's copy. Raising the threshold above
# a batch (and the trim threshold with it, so freed batches are not handed back at once) lets the
# heap reuse them: 10-20% more images per CPU-second in the prepared stream, for 100-300 MiB more
# resident memory (docs/BENCHMARKS.md). Set once per process, on glibc only; an allocator chosen
# by the environment (MALLOC_MMAP_THRESHOLD_ set) is left alone.
MMAP_THRESHOLD = 64 * 2**20
TRIM_THRESHOLD = 256 * 2**20
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt's parameters (malloc.h)


def roomy_allocator() -> bool:
    """Let glibc's heap reuse batch-sized blocks (see above). True when it was set."""
    import ctypes
    import sys

    global _ROOMY
    if _ROOMY is not None:
        return _ROOMY
    _ROOMY = False
    if not sys.platform.startswith("linux") or "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _ROOMY = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    return _ROOMY


_ROOMY: bool | None = None


def stream_options():
    """tf.data options of the stream: autotuned parallelism and the usual fusions; the map is
    not reordered (determinism per seed)."""
    import tensorflow as tf

    options = tf.data.Options()
    options.deterministic = True
    options.autotune.enabled = True
    options.experimental_optimization.map_parallelization = True
    options.experimental_optimization.parallel_batch = True
    return options


def train_batches(shards: list[str], num_classes: int, input_size: int, batch_size: int, *, seed: int,
                  crop: str | None, lighting: float = 0.0, augment=None, shard: tuple[int, int] | None = None,
                  drop_remainder: bool = False, rows=None, epochs: int | None = None,
                  buffer: int = SHUFFLE_RECORDS, on_device: bool = False, resize_on_device: bool = False):
    """Training batches of (uint8 images at input_size, one-hot float32 labels) from prepared
    shards, the element spec of `data.make_dataset(..., training=True, crop=crop)`, repeating
    forever (`epochs` limits it, for checks), deterministic for a seed (see `records`).

    `crop` is "paper" or "random-resized" (crops.crop_window; the paper's crop of an image at the
    prepared size is `paper_window`); `lighting` the std of the paper's PCA lighting noise
    (augment.lighting), one shift per image; `augment` (Keras layers) runs per image after the
    crop, as in make_dataset. A record whose JPEG cannot be decoded is left out (tf.data logs it).

    `on_device` (with `lighting` and no `augment`): each image's lighting shift is drawn here but
    added by the training step (train.loop.make_steps) as it turns the bytes into floats on its
    device: the batches are (uint8 images, one-hot labels, {"shift": float32 (B, 3)}), which
    saves the CPU its costliest pass after decoding.

    `resize_on_device` (`random-resized`, no `augment`, batches up to SENT_MAX_BATCH; for a step on
    a GPU): the crops are sent as decoded, unresized and unflipped, packed into one flat uint8
    buffer per batch, and the training step resizes and flips them on its device (`resize_sent`).
    The batches are (uint8 buffer (N,), one-hot labels, {"hw": int32 (B, 2), "ends": int32 (B,),
    "flip": bool (B,)[, "shift": float32 (B, 3)]}). It spares the stream the resize and the float
    passes around it, about 35% of its CPU time (docs/BENCHMARKS.md); on a CPU the step would only
    pay it instead.
"""
    import tensorflow as tf

    from alexnet_core.inputs.augment import lighting as colour_noise

    _check(shards, num_classes, input_size, batch_size, crop, shard, rows)
    roomy_allocator()
    ds = records(shards, seed=seed, shard=shard, rows=rows, epochs=epochs, buffer=buffer)
    spec = {"image/encoded": tf.io.FixedLenFeature([], tf.string),
            "image/class/label": tf.io.FixedLenFeature([], tf.int64)}
    # The random numbers of a batch of records at once, from one stateless seed per batch (the
    # batch's number and `seed`): each image's crop seed pair, window place, flip and lighting shift.
    ds = ds.batch(PARSE_BATCH).enumerate()

    def parse(step, serialized):
        parsed = tf.io.parse_example(serialized, spec)
        n = tf.shape(serialized)[0]
        keys = [tf.stack([tf.cast(seed, tf.int64), 3 * step + k]) for k in range(3)]  # three streams
        pairs = tf.random.stateless_uniform([n, 2], keys[0], minval=None, maxval=None, dtype=tf.int64)
        uniform = tf.random.stateless_uniform([n, 3], keys[1])
        shifts = colour_noise(keys[2], lighting, n) if lighting else tf.zeros([n, 3])
        labels = tf.one_hot(parsed["image/class/label"], num_classes)
        return parsed["image/encoded"], labels, pairs, uniform, shifts

    ds = ds.map(parse, num_parallel_calls=tf.data.AUTOTUNE).unbatch()

    if resize_on_device and crop == "random-resized" and augment is None and batch_size <= SENT_MAX_BATCH:
        return _sent_unresized(ds, input_size, batch_size, drop_remainder, lighting)

    def one(data, label, pair, uniform, shift):
        if on_device and augment is None and lighting:
            image = decode_crop(data, input_size, crop, pair, uniform[:2], uniform[2] < 0.5)
            return image, label, {"shift": shift}
        if augment is None:
            return decode_crop(data, input_size, crop, pair, uniform[:2], uniform[2] < 0.5,
                               shift if lighting else None), label
        image = tf.cast(decode_crop(data, input_size, crop, pair, uniform[:2], uniform[2] < 0.5),
                        tf.float32)
        image = augment(image[None], training=True)[0]
        return tf.saturate_cast(image + (shift + 0.5), tf.uint8), label

    ds = ds.map(one, num_parallel_calls=tf.data.AUTOTUNE).ignore_errors(log_warning=True)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder).prefetch(tf.data.AUTOTUNE)
    return ds.with_options(stream_options())


# -- random-resized crops resized on the training step's device -----------------------------------

def _sent_unresized(ds, size: int, batch_size: int, drop_remainder: bool, lighting: float):
    """train_batches' stream with `resize_on_device`: each image's random-resized crop decoded (only
    its blocks) and nothing more; a batch of them packed into one flat buffer.

    Each crop is serialized as a TensorProto, whose pixel bytes are its last h*w*3 bytes (protobuf
    writes fields in number order, tensor_content last), and a batch's protos are joined into one
    string read as uint8: three copies of the bytes, cheaper than tf.data's ragged batching (about
    700 against 1,400 images per CPU-second here). `ends` is where each image's bytes end."""
    import tensorflow as tf

    from alexnet_core.inputs.crops import crop_window

    def one(data, label, pair, uniform, shift):
        part = tf.io.decode_and_crop_jpeg(
            data, tf.concat(crop_window(tf.io.extract_jpeg_shape(data), size, "random-resized", pair), 0), channels=3)
        extras = {"hw": tf.shape(part)[:2], "flip": uniform[2] < 0.5}
        if lighting:
            extras["shift"] = shift
        return tf.io.serialize_tensor(tf.reshape(part, [-1])), label, extras

    def pack(protos, labels, extras):
        flat = tf.io.decode_raw(tf.strings.reduce_join(protos), tf.uint8)
        ends = tf.cumsum(tf.cast(tf.strings.length(protos), tf.int64))
        check = tf.debugging.assert_less(
            ends[-1], tf.constant(2**31 - SENT_BUCKET, tf.int64),
            message="A batch of crops sent to the GPU passed 2 GiB (images of extreme shapes): train with a "
                    "smaller --batch-size.")
        with tf.control_dependencies([check]):
            return flat, labels, {**extras, "ends": tf.cast(ends, tf.int32)}

    ds = ds.map(one, num_parallel_calls=tf.data.AUTOTUNE).ignore_errors(log_warning=True)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder).map(pack, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE).with_options(stream_options())


def is_sent_unresized(extras) -> bool:
    """Whether a batch's extras are those of a stream sent with `resize_on_device`."""
    return bool(extras) and "ends" in extras


SENT_BUCKET = 2**22  # a sent buffer is padded to a multiple of 4 MiB: few shapes for XLA to compile
# Batches (per replica) up to this many images are sent unresized: about 100 KB an image, so 100 MB
# a batch, far from the 2 GiB that int32 positions in the buffer allow (checked per batch).
SENT_MAX_BATCH = 1024


def resize_sent(flat, extras, size: int):
    """A batch sent with `resize_on_device` as float32 pixels (B, size, size, 3), 0..255: each crop
    resized bilinearly (half-pixel centres, no antialiasing: what `tf.image.resize` gives the
    stream on a CPU, before its rounding to bytes) and flipped where `flip`. Returns (pixels, the
    extras left: the lighting shift when sent).

    Compiled by XLA, which fuses the index arithmetic, the four gathers of each output pixel's
    corners and the interpolation into a pass over the output (as plain TensorFlow ops each would
    be a pass of its own over (B, size, size, 3) values). The buffer is padded to a multiple of
    SENT_BUCKET so that batches of nearly the same size share one compiled program."""
    import tensorflow as tf

    padded = tf.pad(flat, [[0, tf.math.floormod(-tf.shape(flat)[0], SENT_BUCKET)]])
    pixels = _compiled_resize()(padded, extras["hw"], extras["ends"], extras["flip"], size)
    return pixels, {key: value for key, value in extras.items() if key not in ("hw", "ends", "flip")}


@functools.cache
def _compiled_resize():
    import tensorflow as tf

    return tf.function(_resize_packed, jit_compile=True, reduce_retracing=True)


def _resize_packed(flat, hw, ends, flip, size: int):
    """resize_sent's work: the four corners of every output pixel gathered from the flat buffer."""
    import tensorflow as tf

    h, w = tf.cast(hw[:, 0], tf.int32), tf.cast(hw[:, 1], tf.int32)
    starts = tf.cast(ends, tf.int32) - h * w * 3  # the pixel bytes are the last h*w*3 of each proto

    def axis(extent):  # tf.image.resize's half-pixel bilinear weights along one axis, per image
        scale = tf.cast(extent, tf.float32)[:, None] / float(size)
        source = (tf.range(size, dtype=tf.float32)[None, :] + 0.5) * scale - 0.5
        floor = tf.floor(source)
        lower = tf.maximum(tf.cast(floor, tf.int32), 0)
        upper = tf.minimum(tf.cast(tf.math.ceil(source), tf.int32), extent[:, None] - 1)
        return lower, upper, source - floor

    y0, y1, wy = axis(h)
    x0, x1, wx = axis(w)
    # A flipped image reads its columns right to left: column j of the output is column
    # size-1-j of the unflipped one.
    mirrored = tf.reshape(flip, [-1, 1])
    x0, x1, wx = (tf.where(mirrored, tf.reverse(v, [1]), v) for v in (x0, x1, wx))
    channel = tf.range(3, dtype=tf.int32)

    def corner(rows, cols):  # (B, size, size, 3) values at rows (B, size) x cols (B, size)
        index = (starts[:, None, None, None] + (rows * w[:, None])[:, :, None, None] * 3
                 + cols[:, None, :, None] * 3 + channel)
        return tf.cast(tf.gather(flat, index), tf.float32)

    wx4, wy4 = wx[:, None, :, None], wy[:, :, None, None]
    top_left, bottom_left = corner(y0, x0), corner(y1, x0)
    top = top_left + (corner(y0, x1) - top_left) * wx4
    bottom = bottom_left + (corner(y1, x1) - bottom_left) * wx4
    return top + (bottom - top) * wy4
