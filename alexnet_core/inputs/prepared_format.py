"""The format of a prepared folder (`python -m alexnet_core prepare` writes it, inputs/prepare.py):
its file names, and the checked reading of what describes it: `is_prepared`, `read_info`,
`shard_paths`, `read_labels`.

A prepared folder DEST holds `{split}-{i:05d}-of-{n:05d}.tfrecord` shards (one tf.train.Example
per image), a `.json` beside each shard (its count, bytes, labels and skipped files), `labels.npz`
(one int32 array per split, in shard-then-record order) and `prepared.json`, written last: the
mark that DEST is complete. Work files live in `DEST/.prepare/` while it is being written.

Imports nothing of the package but the data source types and the file helpers, so the readers
(inputs/data.py, inputs/prepared.py, inputs/records.py) can use it without an import cycle through
the writer (inputs/prepare.py, which lists its SOURCE with data.load_source). No TensorFlow.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import numpy as np

from alexnet_core.inputs.splits import SPLITS, DataError
from alexnet_core.store import fileio

FORMAT = "alexnet-prepared"
VERSION = 1
INFO_FILE = "prepared.json"
LABELS_FILE = "labels.npz"
WORK_DIR = ".prepare"  # the plan and the shards being written; removed when DEST is complete
SHARD_SUFFIX = ".tfrecord"
SHARD_PATTERN = re.compile(r"^(train|val|test)-(\d{5})-of-(\d{5})\.(tfrecord|json)$")
MAX_SHARDS = 1024  # per split
RESIZE_RULE = "shorter side to {size}, aspect kept, never enlarged"
MAX_INFO_BYTES = 64 * 2**20  # prepared.json (1,000 classes with their words: about 100 KB)

# The features of each record (the TF-slim / TF Object Detection ImageNet names).
FEATURE_IMAGE = "image/encoded"
FEATURE_LABEL = "image/class/label"
FEATURE_NAME = "image/class/name"
FEATURE_SPLIT = "image/split"
FEATURE_HEIGHT = "image/height"
FEATURE_WIDTH = "image/width"
FEATURE_FILENAME = "image/filename"


def shard_name(split: str, index: int, count: int) -> str:
    """`train-00003-of-00016.tfrecord`: the `index`-th of a split's `count` shards."""
    return f"{split}-{index:05d}-of-{count:05d}{SHARD_SUFFIX}"


def shard_info_name(name: str) -> str:
    """The name of a shard's .json (`train-00003-of-00016.json` for `train-00003-of-00016.tfrecord`)."""
    return name[: -len(SHARD_SUFFIX)] + ".json" if name.endswith(SHARD_SUFFIX) else name + ".json"


def is_prepared(path) -> bool:
    """Whether `path` is a prepared folder: it holds prepared.json (read_info checks it; a damaged
    one still counts, so that its reader says it is damaged instead of taking DEST for images)."""
    try:
        return stat.S_ISREG(os.stat(Path(path).expanduser() / INFO_FILE).st_mode)
    except (OSError, ValueError):
        return False


def _damaged(dest: Path, file: str, what: str) -> DataError:
    return DataError(f"The prepared folder '{dest}' is damaged: {dest / file} {what}. Run "
                     f"`python -m alexnet_core prepare SOURCE {dest} --overwrite` again to write it afresh.")


def whole_at_least(value, least: int = 0) -> bool:
    """Whether a value read from JSON is a whole number (not a bool) of at least `least`."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


def read_info(path) -> dict:
    """prepared.json of the prepared folder `path`, checked: its format and version, the classes,
    each split's shard names, counts and bytes. DataError naming the file (and saying to run
    prepare again) when it is missing, unreadable or not what prepare writes."""
    dest = Path(path).expanduser()
    file = dest / INFO_FILE
    try:
        if not fileio.regular_file(file):
            raise _damaged(dest, INFO_FILE, "is not a regular file")
        with open(file, "rb") as fh:
            raw = fh.read(MAX_INFO_BYTES + 1)
    except FileNotFoundError:
        raise DataError(f"'{dest}' is not a prepared folder (it has no {INFO_FILE}). Make one with "
                        f"`python -m alexnet_core prepare SOURCE {dest}`.") from None
    except OSError as exc:
        raise _damaged(dest, INFO_FILE, f"cannot be read ({exc.strerror or exc})") from exc
    if len(raw) > MAX_INFO_BYTES:
        raise _damaged(dest, INFO_FILE, f"is over {MAX_INFO_BYTES // 2**20} MiB")
    try:
        info = fileio.parse_json(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _damaged(dest, INFO_FILE, f"is not valid JSON ({str(exc)[:120]})") from exc
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise _damaged(dest, INFO_FILE, f"is not a prepared dataset's description (no \"format\": \"{FORMAT}\")")
    if info.get("version") != VERSION:
        raise DataError(f"{file} is of format version {info.get('version')!r}; this version of the app reads "
                        f"version {VERSION}. Run `python -m alexnet_core prepare SOURCE {dest} --overwrite` to "
                        "write it afresh.")
    names = info.get("class_names")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise _damaged(dest, INFO_FILE, "has no list of class names")
    words = info.get("class_words", {})
    if not isinstance(words, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in words.items()):
        raise _damaged(dest, INFO_FILE, "has class words that are not text")
    for key in ("size", "quality"):
        if not whole_at_least(info.get(key), 1):
            raise _damaged(dest, INFO_FILE, f"has no valid {key!r}")
    splits = info.get("splits")
    if not isinstance(splits, dict) or not splits or not set(splits) <= set(SPLITS):
        raise _damaged(dest, INFO_FILE, f"has no splits (or splits other than {', '.join(SPLITS)})")
    for split, part in splits.items():
        shards = part.get("shards") if isinstance(part, dict) else None
        if (not isinstance(shards, list) or not shards or len(shards) > MAX_SHARDS
                or not all(isinstance(s, str) for s in shards)):
            raise _damaged(dest, INFO_FILE, f"lists no shards for the {split!r} split")
        for i, name in enumerate(shards):
            if name != shard_name(split, i, len(shards)):
                raise _damaged(dest, INFO_FILE, f"names a shard {name!r} where {shard_name(split, i, len(shards))!r} "
                                                "belongs")
        for key in ("count", "skipped", "bytes"):
            if not whole_at_least(part.get(key)):
                raise _damaged(dest, INFO_FILE, f"has no valid {key!r} for the {split!r} split")
    return info


def _split_of(dest: Path, info: dict, split: str) -> dict:
    if split not in info["splits"]:
        raise DataError(f"The prepared folder '{dest}' has no {split!r} split. Available: "
                        f"{', '.join(s for s in SPLITS if s in info['splits'])}")
    return info["splits"][split]


def shard_paths(path, split: str, info: dict | None = None) -> list[Path]:
    """The shard files of `split`, in order (position i of the split is the i-th record of these,
    shard after shard). DataError when one is missing, not a regular file, or the shards do not
    hold the bytes prepared.json records."""
    dest = Path(path).expanduser()
    info = read_info(dest) if info is None else info
    part = _split_of(dest, info, split)
    paths, total = [], 0
    for name in part["shards"]:
        file = dest / name
        try:
            st = os.stat(file)
        except OSError:
            raise _damaged(dest, name, "is missing") from None
        if not stat.S_ISREG(st.st_mode):
            raise _damaged(dest, name, "is not a regular file")
        total += st.st_size
        paths.append(file)
    if total != part["bytes"]:
        raise _damaged(dest, f"{split}-*{SHARD_SUFFIX}", f"hold {total:,} bytes where {INFO_FILE} records "
                                                          f"{part['bytes']:,} (a shard is truncated or replaced)")
    return paths


def read_labels(path, split: str, info: dict | None = None) -> np.ndarray:
    """The int32 labels of `split` in shard-then-record order, from labels.npz, checked against
    prepared.json (their number, and each a class index). DataError when damaged."""
    dest = Path(path).expanduser()
    info = read_info(dest) if info is None else info
    part = _split_of(dest, info, split)
    count = part["count"]
    arrays = fileio.load_npz(dest / LABELS_FILE, [split], limits={split: ((count,), "iu", 8)})
    if arrays is None:
        raise _damaged(dest, LABELS_FILE, f"is missing, unreadable or has no {split!r} labels")
    labels = arrays[split]
    if labels.shape != (count,):
        raise _damaged(dest, LABELS_FILE, f"holds {labels.size} {split!r} labels where {INFO_FILE} counts {count}")
    if count and (labels.min() < 0 or labels.max() >= len(info["class_names"])):
        raise _damaged(dest, LABELS_FILE, f"holds a {split!r} label outside the {len(info['class_names'])} classes")
    return labels.astype(np.int32)
