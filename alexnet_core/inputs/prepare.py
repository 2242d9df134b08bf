"""Prepare once: turn an image source into a prepared folder of TFRecord shards of JPEGs resized as
the paper did (`python -m alexnet_core prepare SOURCE DEST`; the format: inputs/prepared_format.py,
re-exported here).

The resize rule: the shorter side to `size` (256), aspect kept, never enlarged. The paper
rescaled each image so that its shorter side was 256 and kept the central 256x256; we keep the
whole rescaled image, so the paper's centre square is still a crop of it, the training crops see
the whole photo, and evaluation's "shorter side 256, centre crop 224" reads it without resizing
again. A JPEG that needs no resizing is stored byte for byte (once it decodes).

How it survives what happens to long jobs:
- a plan first (DEST/.prepare/plan.json, written atomically: the options and every shard's files,
  in a permutation fixed by the seed); a rerun with the same options reuses it and writes only
  the shards not done; a rerun with other options is refused (or starts over with `overwrite`);
- each shard is written to a temporary file in DEST/.prepare, fsynced and renamed into place, its
  .json after it: a shard counts as done only when its .json agrees with the file's size, so a
  kill at any instant leaves whole shards and temporary files, which the next run removes;
- one prepare per DEST at a time (a lock held for the whole run); the worker processes die with
  the process that started them;
- damaged files are skipped and counted with the reason; a full disk ends with how much room is
  needed, keeping the shards already written.

Modules that inputs/data.py imports (directly or not) must take the format's functions from
inputs/prepared_format.py, not from here: this module imports data.load_source.
TensorFlow: only where the shards are written (in the worker processes).
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import math
import multiprocessing
import os
import shutil
import stat
import sys
import threading
import time
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import numpy as np

from alexnet_core import locations
from alexnet_core.inputs.data import load_source
from alexnet_core.inputs.images import MAX_IMAGE_BYTES, ImageDecodeError, decode_image
from alexnet_core.inputs.prepared_format import (
    FEATURE_FILENAME,
    FEATURE_HEIGHT,
    FEATURE_IMAGE,
    FEATURE_LABEL,
    FEATURE_NAME,
    FEATURE_SPLIT,
    FEATURE_WIDTH,
    FORMAT,
    INFO_FILE,
    LABELS_FILE,
    MAX_SHARDS,
    RESIZE_RULE,
    SHARD_PATTERN,
    VERSION,
    WORK_DIR,
    is_prepared,
    read_info,
    read_labels,
    shard_info_name,
    shard_name,
    shard_paths,
)
from alexnet_core.inputs.splits import SPLITS, DataError
from alexnet_core.store import fileio

__all__ = ["PrepareError", "DiskFullError", "prepare", "is_prepared", "read_info", "shard_paths", "read_labels",
           "IMAGES_PER_SHARD", "usable_cores"]

IMAGES_PER_SHARD = 1000  # the default: about this many images per shard
MIN_IMAGES_PER_WORKER = 2000  # by default, a worker process for every this many images to write (at least one)
PLAN_FILE = "plan.json"
LOCK_FILE = "lock"
PLAN_FORMAT = "alexnet-prepare-plan"
MAX_PLAN_BYTES = 2**30  # every file of ImageNet's 1.33 million is about 100 MB of plan
RESAMPLE = "bilinear, antialiased (Pillow)"
FULL_DISK = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
SCAN_REASON = "not an image (its first bytes are not JPEG, PNG, GIF, BMP or WebP)"


class PrepareError(DataError):
    """A prepare that cannot go on: the message says why and what to do."""


class DiskFullError(PrepareError):
    """The disk holding DEST is full: the shards already written are kept."""


class WorkerLostError(PrepareError):
    """A worker process died (killed, out of memory): the shards already written are kept."""


def usable_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


# --- one image ------------------------------------------------------------------------------


def _read_bytes(path: Path) -> bytes:
    """A source file's bytes: regular files only, at most MAX_IMAGE_BYTES (as images.read_image)."""
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise ImageDecodeError("not a regular file (a folder, pipe, device or socket)")
        if info.st_size > MAX_IMAGE_BYTES:
            raise ImageDecodeError(f"{info.st_size / 2**20:.0f} MiB is over the {MAX_IMAGE_BYTES / 2**20:.0f} MiB "
                                   "limit for one image file")
        with open(path, "rb") as fh:
            data = fh.read(MAX_IMAGE_BYTES + 1)
    except OSError as exc:
        raise ImageDecodeError(f"cannot read the file ({exc.strerror or exc})") from exc
    if len(data) > MAX_IMAGE_BYTES:
        raise ImageDecodeError(f"over the {MAX_IMAGE_BYTES / 2**20:.0f} MiB limit for one image file")
    return data


def _kept_as_is(data: bytes, size: int) -> tuple[int, int] | None:
    """(height, width) of a JPEG that can be stored byte for byte: shorter side at most `size`,
    8-bit RGB or grey (what every JPEG decoder reads), no EXIF rotation to apply; else None."""
    from PIL import Image

    if not data.startswith(b"\xff\xd8\xff"):
        return None
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.format != "JPEG" or image.mode not in ("RGB", "L") or min(image.size) > size:
                return None
            if image.getexif().get(0x0112, 1) not in (0, 1):  # an orientation to apply: stored upright
                return None
            return image.height, image.width
    except Exception:  # anything odd: decoded and encoded afresh (or refused) instead
        return None


def encode_image(data: bytes, name: str, size: int, quality: int) -> tuple[bytes, int, int]:
    """(JPEG bytes, height, width) of one source image as a prepared folder stores it: decoded by
    the safe decoder (limits, EXIF orientation; a large JPEG by the decoder's own downscale, never
    below `size`), its shorter side brought to `size` (never enlarged) with an antialiased bilinear filter, encoded as a baseline 4:2:0 JPEG of `quality`;
    a JPEG already small enough is kept byte for byte. ImageDecodeError when it cannot be used."""
    from PIL import Image

    pixels = decode_image(data, name, shorter_at_least=size)  # a large JPEG decoded at 1/2, 1/4 or 1/8 scale
    kept = _kept_as_is(data, size)
    if kept is not None and kept == pixels.shape[:2]:
        return data, kept[0], kept[1]
    image = Image.fromarray(pixels)
    w, h = image.size
    if min(w, h) > size:
        scale = size / min(w, h)
        target = (size, max(1, round(h * scale))) if w <= h else (max(1, round(w * scale)), size)
        image = image.resize(target, Image.Resampling.BILINEAR)
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=quality, subsampling="4:2:0", progressive=False, optimize=False)
    return out.getvalue(), image.height, image.width


def _reason(exc: Exception, name: str) -> str:
    text = str(exc)
    return text[len(name) + 2:] if text.startswith(f"{name}: ") else text


def reason_kind(reason: str) -> str:
    """A short kind of a skipped file's reason, to count them by."""
    text = reason.lower()
    for words, kind in ((("empty",), "empty file"), (("not an image", "not supported", "svg"), "not an image"),
                        (("megapixel", "mib limit", "bomb"), "over the image limits"),
                        (("damaged", "truncated", "no pixels"), "damaged or truncated"),
                        (("cannot read", "regular file"), "unreadable")):
        if any(w in text for w in words):
            return kind
    return reason.split(" (")[0][:60]


# --- one shard (in a worker process, or in this one) ------------------------------------------


_COUNTER = None  # images done, shared with the process that started the workers


def _worker_start(counter, parent: int) -> None:
    """A worker's start: die with the process that started it (Linux), count into `counter`."""
    global _COUNTER
    _COUNTER = counter
    with contextlib.suppress(Exception):
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # it died before that took hold
        os._exit(1)


def _tick_shared() -> None:
    with _COUNTER.get_lock():
        _COUNTER.value += 1


def _write_records(tmp: Path, records) -> None:
    """Write serialised tf.train.Examples as a TFRecord file at `tmp`, flushed to disk. TensorFlow
    reports a full disk as its own error: it becomes the OSError it is."""
    import tensorflow as tf

    try:
        with tf.io.TFRecordWriter(str(tmp)) as writer:
            for record in records:
                writer.write(record)
    except tf.errors.OpError as exc:
        text = str(exc.message)
        code = (errno.ENOSPC if "No space left" in text else errno.EDQUOT if "quota" in text.lower()
                else errno.EFBIG if "too large" in text.lower() else errno.EIO)
        raise OSError(code, f"{os.strerror(code)} ({text.splitlines()[0][:200]})", str(tmp)) from exc
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())


def _write_shard(job: dict, tick) -> dict:
    """Encode the files of one shard and write it: a temporary file in DEST/.prepare, fsynced and
    renamed into DEST, then its .json. Returns the .json's content with the shard's name."""
    import tensorflow as tf

    def feature(value):
        if isinstance(value, int):
            return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))

    dest, root, split = Path(job["dest"]), Path(job["root"]), job["split"]
    class_names, size, quality = job["class_names"], job["size"], job["quality"]
    labels, skipped = [], []

    def records():
        for rel, label in job["files"]:
            try:
                encoded, height, width = encode_image(_read_bytes(root / rel), rel, size, quality)
            except ImageDecodeError as exc:
                skipped.append([rel, _reason(exc, rel)])
                tick()
                continue
            labels.append(label)
            example = tf.train.Example(features=tf.train.Features(feature={
                FEATURE_IMAGE: feature(encoded), FEATURE_LABEL: feature(int(label)),
                FEATURE_NAME: feature(class_names[label].encode("utf-8", "surrogateescape")),
                FEATURE_SPLIT: feature(split.encode()), FEATURE_HEIGHT: feature(height),
                FEATURE_WIDTH: feature(width), FEATURE_FILENAME: feature(rel.encode("utf-8", "surrogateescape"))}))
            yield example.SerializeToString()
            tick()

    name = job["name"]
    target = dest / name
    tmp = dest / WORK_DIR / f"{name}.{os.getpid()}-{threading.get_ident()}-{os.urandom(4).hex()}.tmp"
    try:
        _write_records(tmp, records())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fileio.fsync_dir(dest)
    info = {"count": len(labels), "bytes": target.stat().st_size, "labels": labels, "skipped": skipped}
    try:
        fileio.write_json_atomic(dest / shard_info_name(name), info)
    except BaseException:
        target.unlink(missing_ok=True)  # a shard without its .json is not done: leave none behind
        raise
    return {"name": name, **info}


def _pool_shard(job: dict) -> dict:
    return _write_shard(job, _tick_shared)


# --- the plan ---------------------------------------------------------------------------------


def _shard_counts(lengths: dict[str, int], shards: int | None) -> dict[str, int]:
    """Shards per split: about IMAGES_PER_SHARD images each by default, else `shards` shared by
    the splits in proportion to their images; at least one per split, at most MAX_SHARDS, and
    never more than the split's images."""
    total = sum(lengths.values())
    counts = {}
    for split, n in lengths.items():
        want = math.ceil(n / IMAGES_PER_SHARD) if shards is None else round(shards * n / total)
        counts[split] = max(1, min(want, MAX_SHARDS, n))
    return counts


def _source_root(source: str) -> Path:
    if source == "sample":
        return locations.SAMPLE_DIR
    return Path(source).expanduser()


def _make_plan(source: str, options: dict, shards: int | None) -> dict:
    """List SOURCE (data.load_source) and assign each split's files to shards in a permutation
    fixed by the seed."""
    loaded = load_source(source, options["val_split"])
    parts = {s: getattr(loaded, s) for s in SPLITS if getattr(loaded, s) is not None and len(getattr(loaded, s))}
    if any(part.paths is None for part in parts.values()):
        raise PrepareError(f"{source} is held in memory, not in image files: prepare reads image folders "
                           "(PATH/<class>/<image> or PATH/{train,val,test}/<class>/<image>). Train on it directly.")
    if not parts:
        raise PrepareError(f"{source} has no images to prepare.")
    root = _source_root(source)
    counts = _shard_counts({s: len(p) for s, p in parts.items()}, shards)
    splits, held_out = {}, False
    for split, part in parts.items():
        rels = [os.path.relpath(p, root) for p in part.paths]
        if split == "val":
            held_out = any(Path(r).parts[0] != "val" for r in rels)
        order = np.random.default_rng([options["seed"], SPLITS.index(split)]).permutation(len(rels))
        splits[split] = [[[rels[i], int(part.labels[i])] for i in chunk]
                         for chunk in np.array_split(order, counts[split])]
    return {"format": PLAN_FORMAT, "version": VERSION, "options": options, "root": str(root.resolve()),
            "class_names": list(loaded.class_names), "class_words": dict(loaded.class_words),
            "scan_skipped": {s: int(loaded.skipped.get(s, 0)) for s in splits}, "held_out": held_out,
            "splits": splits}


def _write_plan(path: Path, plan: dict) -> None:
    text = json.dumps(plan, separators=(",", ":"))  # lone surrogates (undecodable names) escaped, as JSON allows
    with fileio.atomic_write(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def _read_plan(path: Path) -> dict | None:
    """The plan in `path`, None when there is none; PrepareError when it is damaged."""
    try:
        if not fileio.regular_file(path):
            raise ValueError("not a regular file")
        with open(path, "rb") as fh:
            raw = fh.read(MAX_PLAN_BYTES + 1)
        if len(raw) > MAX_PLAN_BYTES:
            raise ValueError("too large")
        plan = fileio.parse_json(raw)
        if (not isinstance(plan, dict) or plan.get("format") != PLAN_FORMAT or not isinstance(plan.get("splits"), dict)
                or not isinstance(plan.get("options"), dict)):
            raise ValueError("not a plan")
        for split, shards in plan["splits"].items():
            if split not in SPLITS or not isinstance(shards, list) or not shards or not all(
                    isinstance(s, list) and all(isinstance(f, list) and len(f) == 2 and isinstance(f[0], str)
                                                and isinstance(f[1], int) for f in s) for s in shards):
                raise ValueError("a damaged list of files")
        return plan
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise PrepareError(f"{path} (the plan of an unfinished prepare) is damaged ({exc}): add --overwrite to "
                           "start over.") from exc


# --- DEST -------------------------------------------------------------------------------------


def _ours(name: str) -> bool:
    """Whether an entry of DEST is one prepare writes (never delete anything else)."""
    return (name in (WORK_DIR, INFO_FILE, LABELS_FILE) or bool(SHARD_PATTERN.match(name))
            or (name.startswith(".") and name.endswith(".tmp")))


def _clear(dest: Path) -> None:
    """Remove what prepare wrote in DEST (shards, their .json, labels, prepared.json, the plan),
    keeping the lock of the run in progress; nothing else is touched."""
    with contextlib.suppress(FileNotFoundError):
        (dest / INFO_FILE).unlink()  # first: DEST stops being complete before its parts go
    for entry in dest.iterdir():
        if entry.name != WORK_DIR and _ours(entry.name):
            entry.unlink(missing_ok=True)
    work = dest / WORK_DIR
    if work.is_dir():
        for entry in work.iterdir():
            if entry.name != LOCK_FILE:
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)


def _remove_temporaries(dest: Path) -> None:
    fileio.remove_leftovers(dest)
    work = dest / WORK_DIR
    if work.is_dir():
        for entry in work.iterdir():
            if entry.name.endswith(".tmp"):
                entry.unlink(missing_ok=True)


@contextlib.contextmanager
def _locked(dest: Path):
    """Hold DEST/.prepare/lock for the whole run: one prepare per DEST."""
    import fcntl

    work = dest / WORK_DIR
    work.mkdir(exist_ok=True)
    fd = os.open(work / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise PrepareError(f"Another prepare is writing {dest} now: wait for it to finish (or stop it), "
                               "then run this again.") from None
        yield
    finally:
        os.close(fd)


def _shard_done(dest: Path, name: str, files: list) -> dict | None:
    """A shard's .json when the shard is done (its .json agrees with the file and the plan)."""
    info = fileio.read_object(dest / shard_info_name(name))
    try:
        size = os.stat(dest / name).st_size
    except OSError:
        return None
    labels, skipped = info.get("labels"), info.get("skipped")
    if (not isinstance(labels, list) or not isinstance(skipped, list) or info.get("count") != len(labels)
            or info.get("bytes") != size or len(labels) + len(skipped) != len(files)):
        return None
    return {"name": name, **info}


def _describe_options(options: dict) -> str:
    return (f"source {options.get('source')}, size {options.get('size')}, quality {options.get('quality')}, "
            f"seed {options.get('seed')}, val_split {options.get('val_split')}, "
            f"shards {options.get('shards') if options.get('shards') is not None else 'default'}")


def _refuse_other_options(dest: Path, before: dict, now: dict) -> PrepareError:
    changed = [k for k in now if before.get(k) != now[k]]
    what = "; ".join(f"{k}: {before.get(k)!r} there, {now[k]!r} now" for k in changed)
    return PrepareError(f"{dest} already holds a prepared dataset (or one being prepared) made with other options "
                        f"({what}). Choose another DEST, or add --overwrite to replace it.")


def _options_of_info(info: dict) -> dict:
    return info.get("options") if isinstance(info.get("options"), dict) else {}


# --- prepare ----------------------------------------------------------------------------------


def _check(size, shards, quality, val_split, workers, seed) -> None:
    def whole(value) -> bool:
        return isinstance(value, (int, np.integer)) and not isinstance(value, bool)

    if not whole(size) or not 8 <= size <= 8192:
        raise PrepareError(f"--size must be a whole number of pixels from 8 to 8192, got {size!r}")
    if shards is not None and (not whole(shards) or not 1 <= shards <= MAX_SHARDS):
        raise PrepareError(f"--shards must be from 1 to {MAX_SHARDS} (per split at most {MAX_SHARDS}), got {shards!r}")
    if not whole(quality) or not 1 <= quality <= 100:
        raise PrepareError(f"--quality must be a JPEG quality from 1 to 100, got {quality!r}")
    if not isinstance(val_split, (int, float)) or not 0.0 <= val_split < 1.0:
        raise PrepareError(f"--val-split must be in [0, 1), got {val_split!r}")
    if workers is not None and (not whole(workers) or workers < 1):
        raise PrepareError(f"--workers must be at least 1, got {workers!r}")
    if not whole(seed) or seed < 0:
        raise PrepareError(f"--seed must be a whole number >= 0, got {seed!r}")


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


def _check_dest(source: str, dest: Path) -> None:
    if source == "cifar10":
        raise PrepareError("cifar10 is held in memory (Keras' arrays of 32x32 images), not in image files: prepare "
                           "reads image folders (PATH/<class>/<image> or PATH/{train,val,test}/<class>/<image>) and "
                           "the bundled sample. Train on cifar10 directly.")
    if is_prepared(_source_root(source)):
        raise PrepareError(f"{source} is already a prepared folder: use it as it is wherever SOURCE is accepted.")
    if _inside(dest, _source_root(source)):
        raise PrepareError(f"DEST {dest} is inside SOURCE {source}: choose a DEST outside it (its shards would "
                           "become part of the source).")
    if dest.exists() and not dest.is_dir():
        raise PrepareError(f"DEST {dest} is a file: give a new or empty folder.")
    if dest.is_dir():
        entries = sorted(e.name for e in dest.iterdir())
        foreign = [e for e in entries if not _ours(e)]
        ours = (dest / INFO_FILE).exists() or (dest / WORK_DIR / PLAN_FILE).exists()
        if foreign and not ours:
            raise PrepareError(f"DEST {dest} is a folder that already holds other files ({foreign[0]!r}"
                               f"{f' and {len(foreign) - 1} more' if len(foreign) > 1 else ''}): give a new or empty "
                               "folder (prepare never deletes files it did not write).")


def _summary(dest: Path, info: dict, seconds: float, written: int, kept: int, images_done: int) -> dict:
    splits = {s: {"shards": len(p["shards"]), "count": p["count"], "skipped": p["skipped"], "bytes": p["bytes"],
                  "skipped_reasons": info.get("skipped_reasons", {}).get(s, {})} for s, p in info["splits"].items()}
    return {"dest": str(dest), "source": info.get("source"), "size": info["size"], "quality": info["quality"],
            "seed": info.get("seed"), "classes": len(info["class_names"]),
            "images": sum(p["count"] for p in splits.values()), "skipped": sum(p["skipped"] for p in splits.values()),
            "bytes": sum(p["bytes"] for p in splits.values()), "shards": sum(p["shards"] for p in splits.values()),
            "splits": splits, "shards_written": written, "shards_kept": kept, "seconds": round(seconds, 3),
            "images_per_s": round(images_done / seconds, 1) if seconds > 0 and images_done else 0.0}


def _disk_full(dest: Path, exc: OSError, done: int, remaining_images: int, bytes_per_image: float) -> DiskFullError:
    free = shutil.disk_usage(dest).free if dest.exists() else 0
    needed = max(remaining_images * bytes_per_image * 1.05 - free, 1e6)
    return DiskFullError(f"The disk holding {dest} is full ({free / 1e6:,.0f} MB free, about {needed / 1e6:,.0f} MB "
                         f"more needed): free space or choose another DEST, then run the same command again: the "
                         f"{done} shards already written are kept.")


def prepare(source: str, dest, size: int = 256, shards: int | None = None, quality: int = 90, val_split: float = 0.1,
            workers: int | None = None, seed: int = 0, progress=None, overwrite: bool = False) -> dict:
    """Write the prepared folder DEST from SOURCE (anything data.load_source accepts that is made
    of image files) and return its summary: per split the images, shards, bytes and skipped files
    (with their reasons), and this run's shards written and kept, seconds and images/s.

    Resumes a DEST prepared with the same options (only the shards not done are written); refuses
    one with other options unless `overwrite`, and a non-empty folder prepare did not write.
    `shards`: the shards of all splits together (default: about IMAGES_PER_SHARD images each);
    `workers`: processes (default: the usable cores, fewer when there are under MIN_IMAGES_PER_WORKER
    images a core left to write; 1 writes in this process); `progress(event)`
    gets {"done", "total", "rate", "eta", "shards_done", "shards_total", "final"} a few times a second
    (rate: images/s since the first image was done, None until it can be told; eta: seconds or None).
    PrepareError (a DataError) for bad options or a DEST it may not use; DiskFullError (exit 2
    from the command line) when the disk is full."""
    started = time.monotonic()
    _check(size, shards, quality, val_split, workers, seed)
    source = str(source)
    dest = Path(dest).expanduser()
    _check_dest(source, dest)
    options = {"source": str(_source_root(source).resolve()), "size": int(size),
               "quality": int(quality), "seed": int(seed), "val_split": float(val_split),
               "shards": None if shards is None else int(shards)}
    if (dest / INFO_FILE).exists() and not overwrite and not (dest / WORK_DIR / PLAN_FILE).exists():
        info = read_info(dest)  # a damaged one: DataError saying to run prepare with --overwrite
        if _options_of_info(info) != options:
            raise _refuse_other_options(dest, _options_of_info(info), options)
        return _summary(dest, info, time.monotonic() - started, 0, sum(len(p["shards"]) for p in info["splits"].values()),
                        0)
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        if exc.errno in FULL_DISK:
            raise _disk_full(dest, exc, 0, 1, 0) from exc
        raise PrepareError(f"Cannot create DEST {dest} ({exc.strerror or exc}).") from exc
    try:
        with _locked(dest):
            return _run(source, dest, options, shards, workers, progress, overwrite, started)
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise PrepareError(f"Cannot write in {dest} ({exc.strerror or exc}): make it writable or choose another "
                               "DEST, then run the same command again.") from exc
        raise


def _run(source, dest, options, shards, workers, progress, overwrite, started) -> dict:
    plan_path = dest / WORK_DIR / PLAN_FILE
    _remove_temporaries(dest)
    plan = None
    if overwrite:
        _clear(dest)
    else:
        plan = _read_plan(plan_path)
        if plan is not None and plan["options"] != options:
            raise _refuse_other_options(dest, plan["options"], options)
        if plan is None and (dest / INFO_FILE).exists():  # complete (checked by prepare) or being finished
            info = read_info(dest)
            if _options_of_info(info) != options:
                raise _refuse_other_options(dest, _options_of_info(info), options)
            return _summary(dest, info, time.monotonic() - started, 0,
                            sum(len(p["shards"]) for p in info["splits"].values()), 0)
    if plan is None:
        for entry in dest.iterdir():  # shards of an earlier plan whose plan is gone: not trusted
            if entry.name != WORK_DIR and _ours(entry.name):
                entry.unlink(missing_ok=True)
        plan = _make_plan(source, options, shards)
        try:
            _write_plan(plan_path, plan)
        except OSError as exc:
            if exc.errno in FULL_DISK:
                raise _disk_full(dest, exc, 0, sum(len(f) for s in plan["splits"].values() for f in s),
                                 options["size"] ** 2 * 0.6) from exc
            raise
    return _execute(dest, plan, workers, progress, started)


def _jobs(dest: Path, plan: dict) -> tuple[list[dict], dict[str, dict]]:
    """The shards still to write, and the .json of those done."""
    jobs, done = [], {}
    for split, shards in plan["splits"].items():
        for i, files in enumerate(shards):
            name = shard_name(split, i, len(shards))
            info = _shard_done(dest, name, files)
            if info is not None:
                done[name] = info
                continue
            jobs.append({"dest": str(dest), "root": plan["root"], "split": split, "name": name, "files": files,
                         "class_names": plan["class_names"], "size": plan["options"]["size"],
                         "quality": plan["options"]["quality"]})
    return jobs, done


class _Progress:
    """Images done of the total, images/s over this run and the time left, to `report` at most
    four times a second (and once at the end)."""

    def __init__(self, report, total: int, done: int, shards_total: int, shards_done: int):
        self.report, self.total, self.start_done = report, total, done
        self.shards_total, self.shards_done = shards_total, shards_done
        self.first, self.last = None, 0.0  # (when, how many) at the first image seen done: the rate counts from there
        self.ended, self.created = False, time.monotonic()

    def show(self, processed: int, final: bool = False) -> None:
        now = time.monotonic()
        if self.ended:
            return
        self.ended = final
        if self.first is None and processed:
            self.first = (now, processed)
        if self.report is None or (not final and now - self.last < 0.25):
            return
        self.last = now
        since, base = self.first or (now, 0)
        rate = (processed - base) / (now - since) if now - since > 0.5 and processed > base else None
        if final and rate is None and processed:  # a short run: over all of it
            rate = processed / max(now - self.created, 1e-9)
        done = self.start_done + processed
        eta = (self.total - done) / rate if rate else None
        self.report({"done": done, "total": self.total, "rate": rate, "eta": 0.0 if final else eta,
                     "shards_done": self.shards_done, "shards_total": self.shards_total, "final": final})


def _execute(dest: Path, plan: dict, workers: int | None, progress, started: float) -> dict:
    jobs, done = _jobs(dest, plan)
    kept = len(done)
    total = sum(len(files) for shards in plan["splits"].values() for files in shards)
    total_shards = sum(len(shards) for shards in plan["splits"].values())
    images_before = sum(info["count"] + len(info["skipped"]) for info in done.values())
    meter = _Progress(progress, total, images_before, total_shards, kept)
    left = sum(len(job["files"]) for job in jobs)
    if workers is None:  # each worker's start (TensorFlow's import) costs seconds: a small job takes fewer
        workers = min(usable_cores(), max(1, left // MIN_IMAGES_PER_WORKER))
    workers = min(workers, max(len(jobs), 1))
    processed = [0]

    def finished(info: dict) -> None:
        done[info["name"]] = info
        meter.shards_done += 1

    def bytes_per_image() -> float:
        counted = sum(i["count"] for i in done.values())
        return sum(i["bytes"] for i in done.values()) / counted if counted else plan["options"]["size"] ** 2 * 0.6

    try:
        if workers <= 1:
            def tick() -> None:
                processed[0] += 1
                meter.show(processed[0])

            for job in jobs:
                finished(_write_shard(job, tick))
        else:
            _in_pool(jobs, workers, meter, finished, processed)
    except BrokenProcessPool as exc:
        raise WorkerLostError("A worker process of this prepare died (out of memory, or killed?): run the "
                              f"same command again (with fewer --workers if memory is short): the {len(done)} shards "
                              "already written are kept.") from exc
    except OSError as exc:
        if exc.errno in FULL_DISK:
            left = total - sum(i["count"] + len(i["skipped"]) for i in done.values())
            raise _disk_full(dest, exc, len(done), left, bytes_per_image()) from exc
        raise
    meter.show(processed[0], final=True)
    try:
        info = _finish(dest, plan, done)
    except OSError as exc:
        if exc.errno in FULL_DISK:
            raise _disk_full(dest, exc, len(done), 0, 0) from exc
        raise
    return _summary(dest, info, time.monotonic() - started, len(jobs), kept, processed[0])


def _in_pool(jobs: list[dict], workers: int, meter: _Progress, finished, processed: list) -> None:
    """The shards written by `workers` processes (spawned: TensorFlow is not safe to fork), the
    biggest first; progress from a shared count of images. The first error cancels the shards
    not started, waits for those being written, and is raised."""
    context = multiprocessing.get_context("spawn")
    counter = context.Value("q", 0)
    with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_worker_start,
                             initargs=(counter, os.getpid())) as pool:
        pending = {pool.submit(_pool_shard, job) for job in sorted(jobs, key=lambda j: -len(j["files"]))}
        try:
            while pending:
                ready, pending = wait(pending, timeout=0.25, return_when=FIRST_EXCEPTION)
                for future in ready:
                    finished(future.result())
                processed[0] = counter.value
                meter.show(processed[0])
        except BaseException:
            for future in pending:
                future.cancel()
            pool.shutdown(wait=True, cancel_futures=True)
            for future in pending:  # shards that were being written and finished whole still count
                if future.done() and not future.cancelled() and future.exception() is None:
                    finished(future.result())
            raise
        processed[0] = counter.value
        meter.show(processed[0], final=True)  # now: the workers' exit is no part of the rate


def _finish(dest: Path, plan: dict, done: dict[str, dict]) -> dict:
    """labels.npz, then prepared.json (the mark that DEST is complete), then the work folder goes."""
    splits, labels, reasons = {}, {}, {}
    for split, shards in plan["splits"].items():
        names = [shard_name(split, i, len(shards)) for i in range(len(shards))]
        infos = [done[n] for n in names]
        labels[split] = np.array([lab for i in infos for lab in i["labels"]], dtype=np.int32)
        kinds: dict[str, int] = {}
        scan_skipped = int(plan.get("scan_skipped", {}).get(split, 0))
        if scan_skipped:
            kinds[SCAN_REASON] = scan_skipped
        for i in infos:
            for _, reason in i["skipped"]:
                kind = reason_kind(reason)
                kinds[kind] = kinds.get(kind, 0) + 1
        reasons[split] = kinds
        splits[split] = {"shards": names, "count": int(len(labels[split])),
                         "skipped": scan_skipped + sum(len(i["skipped"]) for i in infos),
                         "bytes": int(sum(i["bytes"] for i in infos))}
    options = plan["options"]
    info = {"format": FORMAT, "version": VERSION, "name": dest.resolve().name, "source": options["source"],
            "created": time.time(), "size": options["size"], "resize": RESIZE_RULE.format(size=options["size"]),
            "resample": RESAMPLE, "quality": options["quality"], "seed": options["seed"],
            "class_names": plan["class_names"], "class_words": plan["class_words"], "splits": splits,
            "skipped_reasons": reasons, "options": options}
    if plan.get("held_out"):
        info["val_split"] = options["val_split"]
    fileio.save_npz(dest / LABELS_FILE, **labels)
    fileio.write_json_atomic(dest / INFO_FILE, info)
    shutil.rmtree(dest / WORK_DIR, ignore_errors=True)
    return info


def progress_printer(stream=None):
    """A `progress` callback that writes one line on `stream` (stderr): images done/total, images/s
    and the time left; redrawn in place on a terminal (at most four times a second), else a new
    line every ten seconds."""
    stream = stream or sys.stderr
    tty = hasattr(stream, "isatty") and stream.isatty()
    last = [0.0]

    def show(event: dict) -> None:
        now = time.monotonic()
        final = bool(event.get("final"))
        if not tty and not final and now - last[0] < 10.0:
            return
        last[0] = now
        eta = event["eta"]
        left = "" if eta is None else f", {eta / 60:,.1f} min left" if eta >= 60 else f", {eta:,.0f} s left"
        rate = "starting" if event["rate"] is None else f"{event['rate']:,.0f} images/s"
        line = (f"prepare: {event['done']:,}/{event['total']:,} images "
                f"({100 * event['done'] / max(event['total'], 1):.1f}%), {rate}{left}, "
                f"shards {event['shards_done']}/{event['shards_total']}")
        if tty:
            stream.write(f"\r{line:<100}" + ("\n" if final else ""))
        else:
            stream.write(line + "\n")
        stream.flush()

    return show
