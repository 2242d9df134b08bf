"""Files on disk, written so a crash never leaves half of one and read so a damaged or hostile one is
refused, never trusted: atomic writes (with the fault-injection hook), bounded JSON, npz and CSV
readers, disk-full handling. No TensorFlow."""

from __future__ import annotations

# Imports inside functions are deliberate: NumPy and pandas load on first use, so importing this module
# (the app's pages, the command line) stays light.
import contextlib
import errno
import io
import json
import math
import os
import shutil
import signal
import stat
import struct
import threading
import zipfile
import zlib
from pathlib import Path

DISK_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)


_FAULT_COUNTS: dict[str, int] = {}


def _fault_point(label: str, tmp: Path) -> None:
    """Test hook: ALEXNET_FAULT="kill@LABEL#N" or "enospc@LABEL#N" fails the N-th atomic write
    of LABEL (a file name) just before its rename: `kill` cuts the temp file in half and SIGKILLs
    this process (a kill mid-write), `enospc` raises the disk-full error. Unset in normal use."""
    spec = os.environ.get("ALEXNET_FAULT")
    if not spec:
        return
    action, _, target = spec.partition("@")
    name, _, nth = target.partition("#")
    if name != label:
        return
    _FAULT_COUNTS[label] = _FAULT_COUNTS.get(label, 0) + 1
    if _FAULT_COUNTS[label] != int(nth or 1):
        return
    if action == "enospc":
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp))
    if action == "kill":
        if tmp.stat().st_nlink == 1:  # a hard link is made whole or not at all: nothing to cut
            with open(tmp, "r+b") as fh:
                fh.truncate(tmp.stat().st_size // 2)
        os.kill(os.getpid(), signal.SIGKILL)


def fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, label: str | None = None, suffix: str = ""):
    """Yield a temp path beside `path` (ending in `suffix`: Keras saves only to `.keras` names);
    once the block has written it, fsync it and rename it over `path`. Readers see the old file
    or the new one, never half of one; on any error the temp file is removed and `path` is
    untouched."""
    path = Path(path)
    # Unique per writer: the app's server is one process whose sessions (threads) may write the
    # same file at once, so the pid alone would let one writer rename or delete another's temp file.
    tmp = path.parent / f".{path.name}.{os.getpid()}-{threading.get_ident()}-{os.urandom(4).hex()}.tmp{suffix}"
    try:
        yield tmp
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        _fault_point(label or path.name, tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def save_npz(path: str | os.PathLike, label: str | None = None, **arrays) -> None:
    """Write `arrays` as a compressed .npz at `path` through `atomic_write`. Arrays of Python
    objects are refused (ValueError): `load_npz` never unpickles."""

    import numpy as np

    buffer = io.BytesIO()
    np.savez_compressed(buffer, allow_pickle=False, **arrays)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, label=label) as tmp:
        tmp.write_bytes(buffer.getvalue())


NPZ_MAX_BYTES = 64 * 2**20  # what one array of an .npz read without limits may hold


_NPY_HEADER_BYTES = 2**16  # an .npy member's magic and header, at most


def _npz_limit(limit) -> tuple[tuple | None, str, int]:
    """(shape, kinds, itemsize) of a `load_npz` limit; without one: any shape of numbers or text
    up to NPZ_MAX_BYTES."""
    if limit is None:
        return None, "biufcSU", NPZ_MAX_BYTES
    shape, kinds, *itemsize = limit
    return tuple(shape), kinds, itemsize[0] if itemsize else 8


def load_npz(path: str | os.PathLike, keys, limits: dict | None = None) -> dict | None:
    """The arrays `keys` of an .npz file, or None when it is missing, damaged, incomplete, holds
    pickled objects or more than it should: a caller recomputes or skips it.

    `limits` says what each key may hold, {key: (shape, kinds[, itemsize])}: `shape` the most
    each axis may have (as many axes as the array must have), `kinds` the dtype kinds allowed
    (numpy's letters: "iu" integers, "f" floats, "U" text), `itemsize` the largest item in bytes
    (8 unless given). A key without limits may hold NPZ_MAX_BYTES of numbers or text. Each member's size
    in the zip directory and each array's header are checked against them before anything is
    decompressed, so a small file that unpacks to gigabytes costs nothing."""

    import numpy as np
    from numpy.lib import format as npy

    limits = limits or {}
    try:
        if not regular_file(path):
            return None
        with zipfile.ZipFile(path) as archive:
            arrays = {}
            for key in keys:
                info = archive.getinfo(f"{key}.npy")
                shape_limit, kinds, itemsize = _npz_limit(limits.get(key))
                most = NPZ_MAX_BYTES if shape_limit is None else math.prod(shape_limit) * itemsize
                if info.file_size > most + _NPY_HEADER_BYTES:
                    return None
                with archive.open(info) as fh:
                    version = npy.read_magic(fh)
                    if version == (1, 0):
                        shape, _, dtype = npy.read_array_header_1_0(fh)
                    elif version == (2, 0):
                        shape, _, dtype = npy.read_array_header_2_0(fh)
                    else:
                        return None
                    size = math.prod(shape) * dtype.itemsize
                    if (dtype.hasobject or dtype.names is not None or dtype.shape != () or dtype.kind not in kinds
                            or dtype.itemsize > itemsize or size > most
                            or (shape_limit is not None and (len(shape) != len(shape_limit) or any(
                                n > m for n, m in zip(shape, shape_limit))))
                            or not fh.tell() + size <= info.file_size <= fh.tell() + size + 4096):
                        return None
                with archive.open(info) as fh:
                    arrays[key] = np.asarray(npy.read_array(fh, allow_pickle=False))
            return arrays
    except (OSError, ValueError, EOFError, KeyError, TypeError, OverflowError, MemoryError, RuntimeError,
            NotImplementedError, zipfile.BadZipFile, zlib.error, struct.error):
        return None  # MemoryError: an array too large for this machine is damage too


def write_json_atomic(path: Path, data) -> None:
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, default=str), encoding="utf-8")


def write_text_atomic(path: Path, text: str) -> None:
    with atomic_write(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_bytes_atomic(path: Path, data: bytes) -> None:
    with atomic_write(path) as tmp:
        tmp.write_bytes(data)


def link_or_copy(src: Path, dest: Path) -> None:
    """Make `dest` the same bytes as `src`, atomically: a hard link where the filesystem has
    them (no extra space), else a copy."""
    with contextlib.suppress(OSError):
        if os.path.samefile(src, dest):  # renaming a link over its twin would leave the temp name behind
            return
    with atomic_write(dest) as tmp:
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)


def remove_leftovers(folder: Path) -> list[str]:
    """Delete temp files that interrupted writes left in `folder`; return their names."""
    removed = []
    for path in [*Path(folder).glob(".*.tmp"), *Path(folder).glob(".*.tmp.keras")]:
        with contextlib.suppress(OSError):
            path.unlink()
            removed.append(path.name)
    return removed


def is_disk_error(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in DISK_ERRORS


def disk_message(exc: OSError, folder: Path, needed_bytes: int) -> str:
    """What a user reads when a run cannot write its folder: what, where, how much to free."""
    free = shutil.disk_usage(folder).free if Path(folder).exists() else 0
    what = Path(exc.filename).name if exc.filename else "a file"
    mib = 2**20
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return (f"The disk is full: could not write {what} in {folder} ({free / mib:.0f} MiB free). "
                f"Free at least {max(needed_bytes - free, needed_bytes // 2) / mib:.0f} MiB there and resume: "
                "the last completed epoch is saved and intact.")
    return (f"Cannot write {what} in {folder} ({os.strerror(exc.errno)}). Make the folder writable and "
            "resume: the last completed epoch is saved and intact.")


RESERVE = ".reserve"  # in a run folder: a little disk space the trainer frees to record a disk-full failure


class Reserve:
    """A small file the trainer deletes on a disk-full error, so that it can still record why."""

    SIZE = 256 * 1024

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / RESERVE

    def claim(self) -> None:
        with contextlib.suppress(OSError):
            with open(self.path, "wb") as fh:
                fh.write(b"\0" * self.SIZE)

    def release(self) -> None:
        with contextlib.suppress(OSError):
            self.path.unlink()


MAX_JSON_DEPTH = 100  # nesting of any JSON file read from disk (Python recurses over nested values)


def regular_file(path) -> bool:
    """Whether `path` is a regular file (opening a FIFO named like one would block the reader);
    FileNotFoundError when there is nothing there."""

    return stat.S_ISREG(os.stat(path).st_mode)


def _json_depth_over(value, limit: int) -> bool:
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            if depth > limit:
                return True
            stack.extend((v, depth + 1) for v in (item.values() if isinstance(item, dict) else item))
    return False


def parse_json(text: str | bytes, max_depth: int = MAX_JSON_DEPTH):
    """json.loads for files from disk or from an archive: ValueError for invalid JSON, and for
    values nested deeper than `max_depth` (which could exhaust Python's recursion here or in
    whatever reads the value next)."""
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    try:
        value = json.loads(text)
    except RecursionError as exc:
        raise ValueError(f"nested more than {max_depth} levels deep") from exc
    if text.count("[") + text.count("{") > max_depth and _json_depth_over(value, max_depth):
        raise ValueError(f"nested more than {max_depth} levels deep")
    return value


def read_json(path: Path, default=None):
    """The JSON value in `path`, or `default` when it is missing, unreadable, over MAX_JSON_BYTES,
    not JSON or nested over MAX_JSON_DEPTH."""
    try:
        if not regular_file(path):
            return default
        with open(path, "rb") as fh:
            raw = fh.read(MAX_JSON_BYTES + 1)
        if len(raw) > MAX_JSON_BYTES:
            return default
        return parse_json(raw)
    except (OSError, ValueError):
        return default


def read_object(path: Path) -> dict:
    """A JSON object from `path`, or {} when it is missing, unreadable or not an object."""
    value = read_json(path, {})
    return value if isinstance(value, dict) else {}


MAX_JSON_BYTES = 16 * 2**20


MAX_CSV_BYTES = 64 * 2**20


def read_csv_checked(path: Path, integer: str) -> tuple[object, int]:
    """A numeric CSV as a DataFrame, and how many damaged rows were skipped (wrong length, text
    where a number belongs, NUL bytes, a non-integer `integer` column). A half-written last line
    (no newline yet: a writer is mid-line) is dropped without counting."""
    import pandas as pd

    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_CSV_BYTES)
    except OSError:
        return pd.DataFrame(), 0
    text = raw.decode("utf-8", errors="replace")
    tail = text[text.rfind("\n") + 1:]
    text = text[: text.rfind("\n") + 1]
    damaged_tail = int("\0" in tail or "\ufffd" in tail)  # not a writer mid-line: garbage, e.g. after a power loss
    lines = text.splitlines()
    if not lines:
        return pd.DataFrame(), damaged_tail
    header = [h.strip() for h in lines[0].split(",")]
    if integer not in header or any(not h or "\0" in h or "\ufffd" in h for h in header):
        return pd.DataFrame(), len(lines)
    rows, skipped = [], 0
    for line in lines[1:]:
        cells = line.split(",")
        try:
            if len(cells) != len(header) or "\0" in line:
                raise ValueError
            row = [float(c) if c.strip() else float("nan") for c in cells]
            key = row[header.index(integer)]
            if key != int(key):
                raise ValueError
        except (ValueError, OverflowError):
            skipped += 1
            continue
        rows.append(row)
    frame = pd.DataFrame(rows, columns=header)
    if len(frame):
        frame[integer] = frame[integer].astype(int)
    return frame, skipped + damaged_tail
