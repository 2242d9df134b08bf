"""Data sources -> tf.data pipelines.

SOURCE is `cifar10` (keras.datasets, downloaded once and cached), `sample` (the bundled
sample in assets/), a folder laid out as PATH/<class>/* or PATH/{train,val,test}/<class>/*, or a
prepared folder of TFRecord shards (`prepare`, read by inputs/prepared.py).
Folders stream from disk; decoded images are cached in memory only when they fit the budget.
"""

from __future__ import annotations

# Imports inside functions are deliberate: TensorFlow and Keras, and the modules that reach them,
# load on first use, so importing this module (the app's pages, the command line) stays light.
import math
import os
import socket
from pathlib import Path

import numpy as np

from alexnet_core import locations
from alexnet_core.inputs.crops import PAPER_RESIZE, crop_image, crop_window, to_input  # noqa: F401 (PAPER_RESIZE: importable here too)
from alexnet_core.inputs.splits import SPLITS, DataError, DataSource, Split

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CACHE_BUDGET_BYTES = 2 * 2**30  # decoded float32 images kept in memory up to this size

# File signatures of the formats TensorFlow decodes in a pipeline.
_SIGNATURES = ((b"\xff\xd8\xff", "JPEG"), (b"\x89PNG\r\n\x1a\n", "PNG"), (b"GIF87a", "GIF"),
               (b"GIF89a", "GIF"), (b"BM", "BMP"))


def image_kind(path: str | os.PathLike) -> str | None:
    """The image format by file signature, or None for anything we cannot decode."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(16)
    except OSError:
        return None
    for signature, kind in _SIGNATURES:
        if head.startswith(signature):
            return kind
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    return None


def _class_dirs(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))


def _scan(path: Path) -> tuple[dict[str, list[str]], int, list[str]]:
    """{class: sorted readable image files} of PATH/<class>/*, the number of unreadable files
    skipped, and the class folders left out because they have no readable image."""
    classes, skipped, empty = {}, 0, []
    for folder in _class_dirs(path):
        files = sorted(f for f in folder.iterdir() if f.is_file() and not f.name.startswith("."))
        readable = [str(f) for f in files if image_kind(f)]
        skipped += len(files) - len(readable)
        if readable:
            classes[folder.name] = readable
        else:
            empty.append(folder.name)
    return classes, skipped, empty


def _split_tail(files_by_class: dict[str, list[str]], class_names: list[str], fraction: float):
    """Deterministic per-class split: the last `fraction` of each class's files in name order."""
    train_paths, train_labels, val_paths, val_labels = [], [], [], []
    for label, name in enumerate(class_names):
        files = files_by_class[name]
        n_val = int(round(len(files) * fraction)) if fraction > 0 else 0
        if fraction > 0 and len(files) >= 2:
            n_val = min(max(n_val, 1), len(files) - 1)
        cut = len(files) - n_val
        train_paths += files[:cut]
        train_labels += [label] * cut
        val_paths += files[cut:]
        val_labels += [label] * n_val
    return (Split(np.array(train_labels, dtype=np.int32), paths=train_paths),
            Split(np.array(val_labels, dtype=np.int32), paths=val_paths))


def _labelled(files_by_class, class_names, where: Path) -> Split:
    unknown = sorted(set(files_by_class) - set(class_names))
    if unknown:
        raise DataError(f"'{where}' has class folders not in train/: {', '.join(unknown)}. "
                        f"The classes are: {', '.join(class_names)}")
    paths, labels = [], []
    for name, files in files_by_class.items():
        paths += files
        labels += [class_names.index(name)] * len(files)
    return Split(np.array(labels, dtype=np.int32), paths=paths)


# Files beside train/ that name the classes: "<folder> <words>" per line, as ILSVRC's
# LOC_synset_mapping.txt ("n01440764 tench, Tinca tinca") and synset_words.txt.
CLASS_WORDS_FILES = ("class_names.txt", "LOC_synset_mapping.txt", "synset_words.txt")
MAX_CLASS_WORDS_BYTES = 4 * 2**20


def read_class_words(root: Path, class_names: list[str]) -> dict[str, str]:
    """{folder name: words} from the first class-names file in `root` (or, for a split folder
    such as ILSVRC's val/ given alone, beside it), for the folders that exist; lines that do not
    parse are skipped, and an unreadable file counts as none."""
    places = [root] + ([root.parent] if root.name in SPLITS else [])
    for path in (place / name for place in places for name in CLASS_WORDS_FILES):
        try:
            if not path.is_file() or path.stat().st_size > MAX_CLASS_WORDS_BYTES:
                continue
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        wanted, words = set(class_names), {}
        for line in text.splitlines():
            parts = line.strip().split(None, 1)
            if len(parts) == 2 and parts[0] in wanted:
                words[parts[0]] = " ".join(parts[1].split())[:200]
        if words:
            return words
    return {}


def load_folder(path: str | os.PathLike, val_split: float = 0.1, name: str | None = None) -> DataSource:
    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(f"Data folder '{path}' does not exist. Give a folder laid out as "
                        "PATH/<class>/<image> or PATH/train/<class>/<image>.")
    if not path.is_dir():
        raise DataError(f"'{path}' is a file; give a folder laid out as PATH/<class>/<image>.")
    split_layout = (path / "train").is_dir() or _splits_only(path)
    root = path / "train" if (path / "train").is_dir() else path
    if split_layout and root == path:  # val/ and/or test/ alone (e.g. ILSVRC's val/<wnid>/ to evaluate on)
        return _load_splits_only(path, name)
    if not _class_dirs(root):
        raise DataError(f"'{root}' has no class folders. Lay images out as {path}/<class>/<image> "
                        f"(or {path}/train/<class>/<image> with optional val/ and test/).")
    files, skipped_train, empty = _scan(root)
    class_names = sorted(files)
    if len(class_names) < 2:
        found = f"only one class with images ({class_names[0]!r})" if class_names else "no class with images"
        left_out = f"; {len(empty)} class folder(s) have no readable image" if empty else ""
        raise DataError(f"Found {found} in '{root}'{left_out}. Training and evaluation need at least two class "
                        "folders of JPEG, PNG, GIF, BMP or WebP images.")
    source = DataSource(name=name or str(path), class_names=class_names, skipped={"train": skipped_train},
                        empty_classes=empty, class_words=read_class_words(path, class_names))
    if split_layout and (path / "val").is_dir():
        val_files, source.skipped["val"], empty_val = _scan(path / "val")
        source.empty_classes += [n for n in empty_val if n not in source.empty_classes and n not in class_names]
        source.val = _labelled(val_files, class_names, path / "val")
        source.train = _labelled(files, class_names, root)
    else:
        source.train, source.val = _split_tail(files, class_names, val_split)
    if split_layout and (path / "test").is_dir():
        test_files, source.skipped["test"], empty_test = _scan(path / "test")
        source.empty_classes += [n for n in empty_test if n not in source.empty_classes and n not in class_names]
        source.test = _labelled(test_files, class_names, path / "test")
    return source


def _splits_only(path: Path) -> bool:
    """Whether `path` holds val/ or test/ (no train/) and no other folder: a split layout with
    nothing to train on, such as an evaluation copy of ILSVRC's val/<wnid>/."""
    folders = {p.name for p in _class_dirs(path)}
    return bool(folders) and folders <= {"val", "test"}


def _load_splits_only(path: Path, name: str | None) -> DataSource:
    """PATH/{val,test}/<class>/* without train/: the classes are those of both splits."""
    scanned = {split: _scan(path / split) for split in ("val", "test") if (path / split).is_dir()}
    class_names = sorted({c for files, _, _ in scanned.values() for c in files})
    empty = sorted({c for _, _, gone in scanned.values() for c in gone} - set(class_names))
    if not class_names:
        raise DataError(f"'{path}' has {' and '.join(f'{s}/' for s in scanned)} but no class folder of JPEG, PNG, "
                        "GIF, BMP or WebP images inside: lay images out as "
                        f"{path}/val/<class>/<image>.")
    source = DataSource(name=name or str(path), class_names=class_names, empty_classes=empty,
                        skipped={split: skipped for split, (_, skipped, _) in scanned.items()},
                        class_words=read_class_words(path, class_names))
    for split, (files, _, _) in scanned.items():
        setattr(source, split, _labelled(files, class_names, path / split))
    return source


def _cifar10_cached() -> bool:
    keras_home = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras"))
    return (keras_home / "datasets" / "cifar-10-batches-py").is_dir()


CIFAR10_HOST = "www.cs.toronto.edu"  # where keras.datasets.cifar10 downloads from (HTTPS)


def cifar10_available() -> bool:
    """CIFAR-10 is on this machine (Keras' cache)."""
    return _cifar10_cached()


def cifar10_reachable(timeout: float = 2.0) -> bool:
    """Whether CIFAR-10's download server answers from here (a TCP connection, nothing sent)."""

    try:
        with socket.create_connection((CIFAR10_HOST, 443), timeout=timeout):
            return True
    except OSError:
        return False


def load_cifar10(val_split: float = 0.1) -> DataSource:
    import keras

    try:
        (x_train, y_train), (x_test, y_test) = keras.datasets.cifar10.load_data()
    except Exception as exc:  # no network, proxy, corrupt cache: all end here
        raise DataError(
            "CIFAR-10 is not cached on this machine and could not be downloaded "
            f"({type(exc).__name__}: {str(exc)[:200]}). Connect this machine to the internet once "
            "(the download is 170 MB and is kept), or use other data: an image folder laid out as "
            "PATH/<class>/<image> (for example a CIFAR-10 export) or the bundled sample.") from exc
    y_train, y_test = y_train.reshape(-1).astype(np.int32), y_test.reshape(-1).astype(np.int32)
    train_idx, val_idx = [], []
    for label in range(10):
        idx = np.flatnonzero(y_train == label)
        n_val = int(round(len(idx) * val_split))
        train_idx.append(idx[: len(idx) - n_val])
        val_idx.append(idx[len(idx) - n_val:])
    tr, va = np.concatenate(train_idx), np.concatenate(val_idx)
    return DataSource(
        name="cifar10", class_names=list(CIFAR10_CLASSES),
        train=Split(y_train[tr], images=x_train[tr]), val=Split(y_train[va], images=x_train[va]),
        test=Split(y_test, images=x_test), description="CIFAR-10 (keras.datasets)")


def load_source(source: str, val_split: float = 0.1) -> DataSource:
    """Resolve SOURCE (cifar10 | sample | PATH) to its splits; DataError on bad data."""
    if not 0.0 <= val_split < 1.0:
        raise DataError(f"val_split must be in [0, 1), got {val_split}")
    if source == "cifar10":
        return load_cifar10(val_split)
    if source == "sample":
        if not locations.SAMPLE_DIR.is_dir():
            raise DataError(f"The bundled sample is missing ({locations.SAMPLE_DIR}); reinstall the app.")
        return load_folder(locations.SAMPLE_DIR, val_split, name="sample")
    from alexnet_core.inputs import prepared

    if prepared.detect(source):  # its splits are its own: val_split does not apply
        return prepared.load(source)
    return load_folder(source, val_split)


def is_records(split: Split) -> bool:
    """Whether a split's paths are record paths of a prepared folder (inputs/prepared.py): marked
    so by the loader, or a part of such a split built by hand (a probe set, an evaluation's files)."""
    from alexnet_core.inputs.prepared import is_record_path

    return split.records or bool(split.paths) and all(is_record_path(p) for p in split.paths)


def record_bytes(path):
    """The image bytes of a record path in a tf.data pipeline; an error (left out by
    ignore_errors, as a damaged file) when the record cannot be read."""
    import tensorflow as tf

    from alexnet_core.inputs.prepared import record_jpeg

    data = tf.numpy_function(record_jpeg, [path], tf.string, stateful=False)
    data.set_shape([])
    return data


def shards_and_rows(split: Split) -> tuple[list[str], np.ndarray | None]:
    """The shard files a record split reads (in the order they first appear) and, unless the
    split is exactly all their records in order, the positions of its records in the shards'
    concatenation (records.train_batches' `rows`)."""
    from alexnet_core.inputs.prepared import parse_record_path, record_offsets

    shards, first, rows = [], {}, []
    for path in split.paths:
        shard, index = parse_record_path(path)
        key = str(shard)
        if key not in first:
            first[key] = None
            shards.append(key)
        rows.append((key, index))
    starts, total = {}, 0
    for key in shards:
        starts[key] = total
        total += len(record_offsets(key))
    positions = np.array([starts[key] + index for key, index in rows], dtype=np.int64)
    if len(positions) == total and np.array_equal(positions, np.arange(total)):
        return shards, None
    return shards, positions


def _decode_any(data, dct_method: str = ""):
    """Decoded HWC uint8 RGB of an image file's bytes (JPEG, PNG, GIF, BMP, WebP)."""
    import tensorflow as tf

    image = tf.cond(
        tf.io.is_jpeg(data),
        lambda: tf.io.decode_jpeg(data, channels=3, dct_method=dct_method),
        lambda: tf.io.decode_image(data, channels=3, expand_animations=False),
    )
    image.set_shape([None, None, 3])
    return image


def decode_file(path, size: int):
    """Read and decode one image file to float32 0..255 RGB at size x size."""
    import tensorflow as tf

    return decode_bytes(tf.io.read_file(path), size)


def decode_bytes(data, size: int):
    """Decode one image file's bytes to float32 0..255 RGB at size x size, as decode_file."""
    from alexnet_core.inputs.preprocess import resize

    # JPEGs with libjpeg's accurate integer DCT: pixel for pixel what Pillow decodes, so an image
    # gets the same probabilities in evaluation (tf.data) and classification (Pillow).
    return resize(_decode_any(data, "INTEGER_ACCURATE"), size)


def decode_record(path, size: int):
    """decode_file of a record path (inputs/prepared.py)."""
    return decode_bytes(record_bytes(path), size)


def _fitted(record: dict, from_file: bool):
    """A tf.data map of one image file path (or in-memory image) to the pixels a model with the
    ImageNet recipe `record` gets from it, exactly as Classify frames a photo: decoded by the
    safe decoder (Pillow, as Classify decodes), then preprocess.fit (the intermediate size and the
    centre crop), float32 0..255."""
    import tensorflow as tf

    from alexnet_core.inputs.images import read_image
    from alexnet_core.inputs.preprocess import fit

    size = int(record["input_size"])

    def one(item):
        image = read_image(item.numpy().decode()) if from_file else item.numpy()
        return fit(image, record, "crop").astype(np.float32)

    def mapped(item):
        pixels = tf.py_function(one, [item], tf.float32)
        pixels.set_shape([size, size, 3])
        return pixels

    return mapped


def model_pixels(split: Split, size: int, positions=None, batch: int = 256, skip_unreadable: bool = True,
                 record: dict | None = None):
    """Batches of (positions, pixels): the images of `split` at `positions` (default: all of them,
    in order) as a model of input `size` gets them before standardisation, float32 0..255 at
    size x size. Files are decoded by `decode_file`, as training decodes them (the records of a
    prepared folder by `decode_record`); in-memory images are taken as they are. A model whose
    preprocessing `record` has an ImageNet recipe (preprocess.has_recipe: shorter side to 256,
    centre crop 224) gets each image as Classify gives it (`_fitted`; a record through
    images.read_image). The one pixel pipeline of evaluation and the embedding map: with
    `skip_unreadable`, a file that cannot be decoded is left out (tf.data logs it), its position
    with it; without, iterating raises tf.errors.OpError at the first such file."""
    import tensorflow as tf

    from alexnet_core.inputs.preprocess import has_recipe, resize

    autotune = tf.data.AUTOTUNE
    every = positions is None
    positions = np.arange(len(split), dtype=np.int64) if every else np.asarray(positions, dtype=np.int64)
    recipe = has_recipe(record) and int(record["input_size"]) == size
    if recipe:
        from_file = split.images is None
        items = np.array(split.paths, dtype=str) if from_file else split.images
        ds = tf.data.Dataset.from_tensor_slices((positions, items if every else items[positions]))
        take = _fitted(record, from_file)
        ds = ds.map(lambda i, x: (i, take(x)), num_parallel_calls=autotune)
        if from_file and skip_unreadable:
            ds = ds.ignore_errors(log_warning=True)
        return ds.batch(batch).prefetch(autotune)
    if split.images is not None:
        images = split.images if every else split.images[positions]
        ds = tf.data.Dataset.from_tensor_slices((positions, images))
        ds = ds.map(lambda i, x: (i, resize(x, size)), num_parallel_calls=autotune)
    else:
        paths = np.array(split.paths, dtype=str)
        ds = tf.data.Dataset.from_tensor_slices((positions, paths if every else paths[positions]))
        decode = decode_record if is_records(split) else decode_file
        ds = ds.map(lambda i, p: (i, decode(p, size)), num_parallel_calls=autotune)
        if skip_unreadable:
            ds = ds.ignore_errors(log_warning=True)
    return ds.batch(batch).prefetch(autotune)


def crop_file(path, size: int, crop: str, seed):
    """crop_image of an image file; of a JPEG only the crop's blocks are decoded."""
    import tensorflow as tf

    data = tf.io.read_file(path)

    def jpeg():
        begin, extent = crop_window(tf.io.extract_jpeg_shape(data), size, crop, seed)
        image = tf.io.decode_and_crop_jpeg(data, tf.concat([begin, extent], 0), channels=3)
        image.set_shape([None, None, 3])
        return to_input(image, size, seed)

    return tf.cond(tf.io.is_jpeg(data), jpeg, lambda: crop_image(_decode_any(data), size, crop, seed))


def make_dataset(split: Split, num_classes: int, input_size: int, batch_size: int, training: bool = False,
                 augment=None, seed: int = 0, cache_budget: int = CACHE_BUDGET_BYTES, drop_remainder: bool = False,
                 shard: tuple[int, int] | None = None, crop: str | None = None, lighting: float = 0.0,
                 standardisation: tuple | None = None, repeat: bool = True, resize_on_device: bool = False):
    """A batched tf.data pipeline of (standardised images, one-hot labels).

    Training shuffles the whole split every epoch, deterministically for a seed: decoded images
    that fit `cache_budget` are cached and shuffled with a buffer as large as the split;
    otherwise the paths (or in-memory images) are shuffled with a full buffer *before*
    decoding or resizing, which costs one small element each. Sources arrive sorted by class,
    so anything less than a full shuffle would feed one class at a time.
    Files that fail to decode are dropped (and logged by tf.data) instead of stopping a run.
    Training datasets repeat forever (the trainer counts steps), so every batch is full; with
    `repeat=False`, one epoch (each image once; the tf.data service's per-epoch jobs).
    `shard=(count, index)` keeps every count-th file from the index-th on, before anything is
    read: each worker of a multi-worker run decodes only its own disjoint part.
    `crop` ("paper", "random-resized"; training only) takes each image's random crop (and a
    random horizontal flip) from the decoded image at its own resolution, streamed (never
    cached: every epoch crops afresh), with PCA lighting of std `lighting`, then `augment`; these
    batches hold uint8 pixels, which the training step standardises (preprocess.as_input).
    `standardisation` (mean, std): the run's own (a fine-tuning base's recipe), else ImageNet's.
    `resize_on_device`: a prepared folder's random-resized crops go to the training step unresized
    (records.train_batches), for a step on a GPU to resize.
    """
    import tensorflow as tf

    from alexnet_core.inputs.augment import lighting as colour_noise
    from alexnet_core.inputs.preprocess import MEAN, STD, normalize, resize

    autotune = tf.data.AUTOTUNE
    count, index = shard or (1, 0)
    n = len(range(index, len(split), count))
    fits = n * input_size * input_size * 3 * 4 <= cache_budget

    def shuffled(ds):
        return ds.shuffle(max(n, 1), seed=seed, reshuffle_each_iteration=True) if training else ds

    if training and crop and split.images is None and is_records(split):
        # A prepared folder's shards: the fast stream over them (inputs/records.py), which keeps
        # these guarantees: a full shuffle per epoch per seed, per-worker shards, the same batches.
        from alexnet_core.inputs.records import train_batches

        # Its lighting shifts travel beside the labels, added in the training step on its device
        # (records.py, `on_device`).
        shards, rows = shards_and_rows(split)
        return train_batches(shards, num_classes, input_size, batch_size, seed=seed, crop=crop, lighting=lighting,
                             augment=augment, shard=shard, drop_remainder=drop_remainder, rows=rows,
                             epochs=None if repeat else 1, on_device=True, resize_on_device=resize_on_device)
    if training and crop:
        pixels = split.images if split.images is not None else np.array(split.paths, dtype=str)
        ds = shuffled(tf.data.Dataset.from_tensor_slices((pixels, split.labels)).shard(count, index))
        ds = ds.repeat() if repeat else ds
        pairs = tf.data.Dataset.random(seed=seed).batch(2)  # a seed pair per image
        if lighting:  # colour shifts drawn 1,024 at a time; + 0.5 rounds when the pixels become bytes
            shifts = (tf.data.Dataset.random(seed=seed + 1).batch(2)
                      .map(lambda pair: 0.5 + colour_noise(pair, lighting, 1024)).unbatch())
            ds = tf.data.Dataset.zip((ds, pairs, shifts))
        else:  # no third stream: each zipped stream costs every image (10-15% here)
            ds = tf.data.Dataset.zip((ds, pairs))
        take = crop_image if split.images is not None else crop_file

        def one(item, pair, shift=0.5):  # all of it per image: parallel maps scale better than on whole batches
            image = take(item[0], input_size, crop, pair)
            if augment is not None:
                image = augment(image[None], training=True)[0]
            # Back to bytes with the colour noise in the same pass (saturate_cast clips and truncates);
            # the training step standardises them on its device: a quarter of the memory to batch
            # and to copy to a GPU, and no float pass on the CPU for it.
            return tf.saturate_cast(image + shift, tf.uint8), tf.one_hot(item[1], num_classes)

        ds = ds.map(one, num_parallel_calls=autotune)
        if split.images is None:
            ds = ds.ignore_errors(log_warning=True)
        return ds.batch(batch_size, drop_remainder=drop_remainder).prefetch(autotune)

    if split.images is not None:
        ds = tf.data.Dataset.from_tensor_slices((split.images, split.labels)).shard(count, index)
        if not fits:
            ds = shuffled(ds)
        ds = ds.map(lambda x, y: (resize(x, input_size), y), num_parallel_calls=autotune)
    else:
        ds = tf.data.Dataset.from_tensor_slices((np.array(split.paths, dtype=str), split.labels)).shard(count, index)
        if not fits:
            ds = shuffled(ds)
        decode = decode_record if is_records(split) else decode_file
        ds = ds.map(lambda p, y: (decode(p, input_size), y), num_parallel_calls=autotune)
        ds = ds.ignore_errors(log_warning=True)
    if fits:
        ds = shuffled(ds.cache())
    if training and repeat:
        ds = ds.repeat()
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    if training and augment is not None:
        ds = ds.map(lambda x, y: (augment(x, training=True), y), num_parallel_calls=autotune)
    mean, std = standardisation or (MEAN, STD)
    ds = ds.map(lambda x, y: (normalize(x, mean, std), tf.one_hot(y, num_classes)), num_parallel_calls=autotune)
    return ds.prefetch(autotune)


def steps_for(split: Split, batch_size: int) -> int:
    return max(1, math.ceil(len(split) / batch_size))
