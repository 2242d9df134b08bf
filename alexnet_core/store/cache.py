"""Results computed from a model, kept on disk so that reopening a page is instant: the one
fingerprint of a model file, where cached results live, and the one way to read and write them.

A cached result is a convenience, never trusted: it is read through `fileio.load_npz` (nothing
is unpacked beyond the limits the caller gives), then checked by the caller against what it
must describe (shapes, class count, index ranges, finite values). A file that is missing,
damaged, truncated, oversized or does not match is computed again and replaced; a disk that
cannot take the write only loses the cache. Writes are atomic. No TensorFlow.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

from alexnet_core import locations
from alexnet_core.store import fileio, layout


def model_fingerprint(path: str | os.PathLike) -> str:
    """16 hex digits that change whenever the model file at `path` changes: a hash of its
    resolved path, size, modification time (in nanoseconds) and inode (a file replaced by an
    atomic rename has a new one). The contents are not read, so this is cheap enough to call on
    every page run. A path with no file behind it gets a fingerprint of its own, which any file
    later written there changes."""
    try:
        where = Path(path).resolve()
    except (OSError, RuntimeError):  # RuntimeError: a symlink loop
        where = Path(path).absolute()
    try:
        info = os.stat(where)
        facts = [info.st_size, info.st_mtime_ns, info.st_ino]
    except (OSError, ValueError):
        facts = None
    return key(str(where), facts)


def key(*parts) -> str:
    """16 hex digits of `parts` (values JSON can write; bytes are hashed as they are): the name
    of a cached result, so a change to anything it was computed from names another file."""
    digest = hashlib.sha1()
    for part in parts:
        digest.update(part if isinstance(part, bytes) else json.dumps(part).encode())
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def folder(run_dir: Path | None) -> Path:
    """Where the cached results of a run's model live: the run's eval/ folder, or, for a model
    outside a run, a bundled (read-only) run or a folder this process cannot write, the runs
    root's .cache/eval/."""
    if run_dir is not None and not layout.is_read_only(run_dir) and os.access(run_dir, os.W_OK):
        return Path(run_dir) / layout.EVAL
    return locations.runs_root() / ".cache" / "eval"


def read(path: Path, limits: dict, check: Callable[[dict], dict | None]) -> dict | None:
    """The arrays of a cached result at `path`, or None when it is missing, damaged, holds more
    than `limits` allow (fileio.load_npz's {key: (shape, kinds[, itemsize])}, every key
    required) or fails `check`. `check` gets the arrays and returns them (converted as the caller
    needs) when they describe what they should, else None."""
    arrays = fileio.load_npz(path, tuple(limits), limits)
    return None if arrays is None else check(arrays)


def write(path: Path, arrays: dict) -> None:
    """Save a result atomically at `path`; a disk that cannot take it (read-only, full) only
    loses the cache."""
    try:
        fileio.save_npz(path, **arrays)
    except OSError:
        pass


def load_or_compute(path: Path, read: Callable[[Path], dict | None], compute: Callable[[], dict],
                    use_cache: bool = True) -> tuple[dict, bool]:
    """(arrays, replaced): the cached result at `path` when `read(path)` accepts it (a caller's
    reader built on this module's `read`), else `compute()`'s, saved there. Without `use_cache`
    nothing is read or written. `replaced` says a file was there but was not used (damaged, or
    not what it should describe): the result was computed again and has taken its place."""
    if not use_cache:
        return compute(), False
    arrays = read(path)
    if arrays is not None:
        return arrays, False
    replaced = os.path.lexists(path)
    arrays = compute()
    write(path, arrays)
    return arrays, replaced
