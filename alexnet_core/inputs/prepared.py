"""A prepared dataset read back: a folder of TFRecord shards written by `python -m alexnet_core
prepare SOURCE DEST` (inputs/prepare.py), used wherever a SOURCE is accepted.

The format (docs/ARCHITECTURE.md, README "Prepare a large dataset once"): shards
`DEST/{split}-{i:05d}-of-{n:05d}.tfrecord` of `tf.train.Example`s (`image/encoded` JPEG bytes,
`image/class/label`, `image/class/name`, ...), one `.json` per shard (its count, bytes and
labels), `labels.npz` (one int32 array per split) and `prepared.json`, written last, the mark
that DEST is whole. Its checked readers (is_prepared, read_info, shard_paths, read_labels) are
inputs/prepared_format.py's, shared with the writer.

`load(DEST)` gives a `DataSource` whose splits hold *record paths*, `"<shard path>#<index>"`:
position i of a split is its i-th record in shard-name order, and its label is labels.npz's i-th.
`read_record(path)` reads one record (the reading of a single image, for the pages: Evaluate's
grids, Classify's galleries) without TensorFlow: the TFRecord framing is walked here and the
Example parsed with the protobuf runtime. The training and evaluation pipelines
(inputs/data.py, inputs/records.py) read the shards with TensorFlow.

A damaged folder (prepared.json unreadable, a shard missing or not the size its record says,
labels.npz damaged, a record that does not parse) is a DataError naming the file and saying to
run `prepare` again; a record path that is not a record of a prepared folder is one too.
"""

from __future__ import annotations

import functools
import os
import re
import struct
import time
from pathlib import Path

import numpy as np

from alexnet_core.inputs.prepared_format import (
    FEATURE_IMAGE,
    FEATURE_LABEL,
    FEATURE_NAME,
    INFO_FILE,
    WORK_DIR,
    is_prepared,
    read_info,
    read_labels,
    shard_paths,
    whole_at_least,
)
from alexnet_core.inputs.splits import SPLITS, DataError, DataSource, Split
from alexnet_core.store import fileio

RECORD_PATH = re.compile(r"(?P<shard>.+\.tfrecord)#(?P<index>\d{1,12})", re.S)
SHARD_NAME = re.compile(r"(?P<split>train|val|test)-(?P<index>\d{5})-of-(?P<total>\d{5})\.tfrecord")
MAX_RECORD_BYTES = 256 * 2**20  # one record (a JPEG and a few fields); images.py caps the JPEG lower

# Keys of a record's features (the TF-slim / TF Object Detection ImageNet names).
ENCODED, LABEL, NAME = FEATURE_IMAGE, FEATURE_LABEL, FEATURE_NAME


# --- Where a prepared folder is, and its record -----------------------------------------------


def detect(path) -> bool:
    """Whether `path` is meant as a prepared folder: whole (prepared_format.is_prepared: its
    prepared.json), or unfinished (a `.prepare` work folder, or shards without prepared.json).
    `load` then says which, and what to do."""
    try:
        folder = Path(path).expanduser()
        if is_prepared(folder) or (folder / WORK_DIR).is_dir():
            return True
        return folder.is_dir() and any(SHARD_NAME.fullmatch(p.name) for p in folder.iterdir())
    except (OSError, ValueError):
        return False


def _again(dest: Path, problem: str, source: str | None = None) -> DataError:
    command = f"python -m alexnet_core prepare {source or 'SOURCE'} {dest}"
    return DataError(f"The prepared dataset '{dest}' is damaged: {problem}. Run `{command}` again (with the same "
                     "options) to rebuild what is missing.")


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        info = os.stat(path)
    except (OSError, ValueError):
        return None
    return info.st_size, info.st_mtime_ns


def info_of(path) -> dict:
    """prepared_format.read_info of DEST, read once per version of its prepared.json (a record
    read in a pipeline asks for it once per image); DataError as read_info, and for a folder
    being prepared or interrupted, saying to run prepare again to finish it."""
    dest = Path(path).expanduser().resolve()
    stamp = _stamp(dest / INFO_FILE)
    if stamp is None and (dest / WORK_DIR).is_dir():
        raise DataError(f"'{dest}' is being prepared or was interrupted ({INFO_FILE} is not written yet). Run "
                        f"`python -m alexnet_core prepare SOURCE {dest}` again to finish it.")
    return _info(dest, stamp)


@functools.lru_cache(maxsize=64)
def _info(dest: Path, stamp) -> dict:
    return read_info(dest)


# --- A shard's records --------------------------------------------------------------------------


def _check_shard(dest: Path, shard: Path, info: dict) -> int:
    """The number of records in `shard`, checked: there, a regular file, and the size and count
    its .json says (when it has one; a shard without one is walked)."""
    source = info.get("source")
    try:
        if not fileio.regular_file(shard):
            raise _again(dest, f"the shard {shard.name} is not a regular file", source)
        size = shard.stat().st_size
    except FileNotFoundError:
        raise _again(dest, f"the shard {shard.name} is missing", source) from None
    except OSError as exc:
        raise _again(dest, f"the shard {shard.name} cannot be read ({exc.strerror or exc})", source) from None
    record = fileio.read_json(shard.with_suffix(".json"))
    if isinstance(record, dict) and whole_at_least(record.get("count")) and whole_at_least(record.get("bytes")):
        if record["bytes"] != size:
            raise _again(dest, f"the shard {shard.name} holds {size:,} bytes, not the {record['bytes']:,} written "
                         "(truncated or changed)", source)
        return record["count"]
    return len(record_offsets(shard))


def record_offsets(shard) -> np.ndarray:
    """(offset, length) of each record's data in a TFRecord file, from its framing (each record
    is its length, 8 bytes, a checksum, 4, the data and its checksum, 4). DataError when the
    framing does not end exactly at the end of the file (truncated or not a TFRecord file)."""
    shard = Path(shard)
    stamp = _stamp(shard)
    if stamp is None:
        raise DataError(f"'{shard}' cannot be read: run `python -m alexnet_core prepare` again to rebuild it.")
    return _offsets(shard, stamp)


@functools.lru_cache(maxsize=4096)
def _offsets(shard: Path, stamp) -> np.ndarray:
    size = stamp[0]
    found, position = [], 0
    try:
        if not fileio.regular_file(shard):
            raise DataError(f"'{shard}' is not a regular file")
        with open(shard, "rb") as fh:
            while position < size:
                header = fh.read(12)
                if len(header) < 12:
                    break
                (length,) = struct.unpack("<Q", header[:8])
                end = position + 12 + length + 4
                if end > size:
                    break
                found.append((position + 12, length))
                position = end
                fh.seek(position)
    except OSError as exc:
        raise DataError(f"'{shard}' cannot be read ({exc.strerror or exc}): run `python -m alexnet_core prepare` "
                        "again to rebuild it.") from None
    if position != size:
        raise DataError(f"'{shard}' is truncated or not a TFRecord file (its records end at byte {position:,} of "
                        f"{size:,}): run `python -m alexnet_core prepare` again to rebuild it.")
    return np.array(found, dtype=np.int64).reshape(-1, 2)


def record_path(shard, index: int) -> str:
    """The record path of the `index`-th record of `shard`."""
    return f"{Path(shard)}#{int(index)}"


def parse_record_path(path) -> tuple[Path, int] | None:
    """(shard, index) of a record path, or None when `path` is not one."""
    match = RECORD_PATH.fullmatch(str(path))
    return (Path(match["shard"]), int(match["index"])) if match else None


def is_record_path(path) -> bool:
    return parse_record_path(path) is not None


@functools.cache
def _example_class():
    """tf.train.Example's message (example.proto and feature.proto, wire for wire) built for the
    protobuf runtime in a pool of its own, so reading a record needs no TensorFlow."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    field = descriptor_pb2.FieldDescriptorProto
    file = descriptor_pb2.FileDescriptorProto(name="alexnet_prepared/example.proto", package="alexnet_prepared",
                                              syntax="proto3")

    def message(name, *fields):
        made = file.message_type.add(name=name)
        for field_name, number, kind, repeated, type_name in fields:
            added = made.field.add(name=field_name, number=number, type=kind,
                                   label=field.LABEL_REPEATED if repeated else field.LABEL_OPTIONAL)
            if type_name:
                added.type_name = f".alexnet_prepared.{type_name}"

    message("BytesList", ("value", 1, field.TYPE_BYTES, True, None))
    message("FloatList", ("value", 1, field.TYPE_FLOAT, True, None))
    message("Int64List", ("value", 1, field.TYPE_INT64, True, None))
    message("Feature", ("bytes_list", 1, field.TYPE_MESSAGE, False, "BytesList"),
            ("float_list", 2, field.TYPE_MESSAGE, False, "FloatList"),
            ("int64_list", 3, field.TYPE_MESSAGE, False, "Int64List"))
    message("FeatureEntry", ("key", 1, field.TYPE_BYTES, False, None),  # map<string, Feature>'s entries
            ("value", 2, field.TYPE_MESSAGE, False, "Feature"))
    message("Features", ("feature", 1, field.TYPE_MESSAGE, True, "FeatureEntry"))
    message("Example", ("features", 1, field.TYPE_MESSAGE, False, "Features"))
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("alexnet_prepared.Example"))


def parse_example(data: bytes) -> dict:
    """{feature name: list of values} of a serialised tf.train.Example; ValueError if it does not parse."""
    from google.protobuf.message import DecodeError

    example = _example_class()()
    try:
        example.ParseFromString(data)
    except (DecodeError, RuntimeError) as exc:
        raise ValueError(f"the record does not parse ({exc})") from None
    features = {}
    for entry in example.features.feature:
        value = entry.value
        values = (list(value.bytes_list.value) or list(value.int64_list.value) or list(value.float_list.value))
        features[entry.key.decode("utf-8", "replace")] = values
    return features


def _owning_folder(shard: Path) -> tuple[Path, dict]:
    """The prepared folder `shard` is a listed shard of, and its record; DataError otherwise."""
    match = SHARD_NAME.fullmatch(shard.name)
    dest = shard.parent
    if not match or not is_prepared(dest):
        raise DataError(f"'{shard}' is not a shard of a prepared dataset (a folder written by "
                        "`python -m alexnet_core prepare`).")
    info = info_of(dest)
    if shard.name not in info["splits"].get(match["split"], {}).get("shards", []):
        raise DataError(f"'{shard}' is not one of the shards {dest / INFO_FILE} lists.")
    return dest, info


def read_example(path) -> dict:
    """The features of the record at a record path (parse_example); DataError when the path is
    not a record of a prepared folder, its index is out of range, or the record is damaged."""
    parsed = parse_record_path(path)
    if parsed is None:
        raise DataError(f"'{str(path)[:300]}' is not a record path ('<shard>.tfrecord#<index>').")
    shard, index = parsed
    try:
        shard = shard.expanduser().resolve()
    except (OSError, RuntimeError, ValueError) as exc:
        raise DataError(f"'{str(path)[:300]}' cannot be resolved ({exc})") from None
    dest, info = _owning_folder(shard)
    offsets = record_offsets(shard)
    if not 0 <= index < len(offsets):
        raise DataError(f"'{shard.name}' has {len(offsets):,} records; there is no record {index:,}.")
    offset, length = (int(v) for v in offsets[index])
    if length > MAX_RECORD_BYTES:
        raise _again(dest, f"record {index} of {shard.name} declares {length:,} bytes", info.get("source"))
    try:
        with open(shard, "rb") as fh:
            fh.seek(offset)
            data = fh.read(length)
    except OSError as exc:
        raise DataError(f"'{shard}' cannot be read ({exc.strerror or exc})") from None
    try:
        if len(data) != length:
            raise ValueError("the file is shorter than its records say")
        return parse_example(data)
    except ValueError as exc:
        raise _again(dest, f"record {index} of {shard.name}: {exc}", info.get("source")) from None


def read_record(path) -> tuple[bytes, int, str]:
    """(JPEG bytes, label, class name) of the record at a record path; DataError as read_example."""
    features = read_example(path)
    encoded, label, name = features.get(ENCODED), features.get(LABEL), features.get(NAME)
    if not encoded or not isinstance(encoded[0], bytes) or not label or not isinstance(label[0], int):
        raise DataError(f"'{str(path)[:300]}' has no image or no label: run `python -m alexnet_core prepare` again "
                        "to rebuild it.")
    class_name = name[0].decode("utf-8", "replace") if name and isinstance(name[0], bytes) else ""
    return encoded[0], int(label[0]), class_name


def record_jpeg(path) -> bytes:
    """The image bytes of the record at a record path (a tf.data pipeline's numpy_function)."""
    if isinstance(path, (bytes, np.bytes_)):
        path = bytes(path).decode("utf-8", "surrogateescape")
    return read_record(path)[0]


# --- The data source ----------------------------------------------------------------------------


def load(path, name: str | None = None) -> DataSource:
    """DEST as a DataSource: each split's record paths (position i: the i-th record in shard-name
    order) and labels (labels.npz), the class names and words, and its description. Every shard
    is checked to be there and of the size written (no record is read)."""
    dest = Path(path).expanduser().resolve()
    info = info_of(dest)
    source = DataSource(name=name or str(path), class_names=list(info["class_names"]),
                        class_words={k: v for k, v in info.get("class_words", {}).items() if k in info["class_names"]},
                        description=describe(info, dest))
    for split in SPLITS:
        part = info["splits"].get(split)
        if part is None:
            continue
        counts = [_check_shard(dest, dest / shard, info) for shard in part["shards"]]  # names the one that is wrong
        shards = shard_paths(dest, split, info)
        labels = read_labels(dest, split, info)
        if sum(counts) != part["count"]:
            raise _again(dest, f"the {split!r} shards hold {sum(counts):,} images, not the {part['count']:,} "
                         f"{INFO_FILE} says", info.get("source"))
        paths = [f"{shard}#{i}" for shard, count in zip(shards, counts, strict=True) for i in range(count)]
        setattr(source, split, Split(labels, paths=paths, records=True))
        source.skipped[split] = int(part.get("skipped", 0))
    return source


def describe(info: dict, dest: Path | None = None) -> str:
    """What a prepared dataset is, in one sentence: where from, when, how many images in which
    splits, how it was resized and compressed, its shards and bytes, the files skipped."""
    splits = info["splits"]
    count = sum(p["count"] for p in splits.values())
    parts = ", ".join(f"{s} {splits[s]['count']:,}" for s in SPLITS if s in splits)
    shards = sum(len(p["shards"]) for p in splits.values())
    size = sum(p.get("bytes", 0) for p in splits.values())
    skipped = sum(p.get("skipped", 0) for p in splits.values())
    created = info.get("created")
    when = (f" on {time.strftime('%Y-%m-%d', time.gmtime(created))}" if isinstance(created, (int, float))
            and 0 < created < 2**40 else "")
    origin = str(info.get("source") or (dest.name if dest else "a source"))[:300]
    resize = f"shorter side {info['size']}" if whole_at_least(info.get("size"), 1) else "resized"
    quality = f", JPEG quality {info['quality']}" if whole_at_least(info.get("quality"), 1) else ""
    held = f": {info['val_split']:.0%} of each class held out" if isinstance(
        info.get("val_split"), (int, float)) and 0 < info["val_split"] < 1 and "val" in splits else ""
    amount = f"{size / 1e6:,.1f} MB" if size >= 1e5 else f"{size / 1e3:,.0f} kB"
    words = (f"Prepared from {origin}{when}: {count:,} images ({parts}{held}), {len(info['class_names']):,} classes, "
             f"{resize}{quality}, {shards:,} shard{'s' if shards != 1 else ''}, {amount}")
    if skipped:
        words += f"; {skipped:,} damaged file{'s' if skipped != 1 else ''} skipped"
    return words + "."


def summary(path) -> dict | None:
    """{name, images, size, classes, description} of a whole prepared folder from its record
    alone (cheap: for pickers), or None when `path` is not one or its record is damaged."""
    try:
        dest = Path(path).expanduser().resolve()
        if not is_prepared(dest):
            return None
        info = info_of(dest)
    except (DataError, OSError):
        return None
    return {"name": str(info.get("name") or dest.name)[:200], "path": str(dest),
            "images": sum(p["count"] for p in info["splits"].values()), "size": info.get("size"),
            "classes": len(info["class_names"]), "description": describe(info, dest)}


def find(root) -> list[Path]:
    """The whole prepared folders directly inside `root`, by name."""
    try:
        folders = sorted((p for p in Path(root).iterdir() if p.is_dir() and not p.name.startswith(".")),
                         key=lambda p: p.name.lower())
    except OSError:
        return []
    return [p for p in folders if is_prepared(p)]
