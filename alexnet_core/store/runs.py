"""Run folders: the one home of their files, their lifecycle and the rules about them.

Contracts in docs/ARCHITECTURE.md. Every file a reader polls is written so that a reader never
sees half of it: whole files by temp file + fsync + rename (`atomic_write`), steps.csv appended
a line at a time (readers drop a half-written last line). Which runs are active, which can be
resumed, where the bundled runs live and how a run is created, resumed, exported or deleted is
decided here and nowhere else: the command line, the launcher and the pages only call it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import shutil
import signal
import threading
import time
from datetime import datetime
from pathlib import Path

CONFIG = "config.json"
STATUS = "status.json"
METRICS = "metrics.csv"
STEPS = "steps.csv"
CHECKPOINTS = "checkpoints"
LAST = "last.keras"  # checkpoints/: the latest completed epoch, model + optimizer
BEST = "best.keras"  # checkpoints/: the best epoch so far
STATE = "state.json"  # checkpoints/: the commit record, written last at every epoch end
MODEL = "model.keras"
EVAL = "eval"
TENSORBOARD = "tensorboard"
LOG = "train.log"
STOP_REQUEST = "stop.request"
LOCK = "trainer.lock"  # held (flock) by the one trainer of a run for its whole life
RESERVE = ".reserve"  # a little disk space the trainer frees to record a disk-full failure
READ_ONLY = ".read-only"  # marks a bundled run the app must not delete or resume
LABEL = "label.json"  # the user's name and notes for a run: {"name", "notes"}
SNAPSHOTS = "snapshots"  # per-epoch snapshots (snapshots.py)
MAX_NAME = 80
MAX_NOTES = 4000
BUNDLED_DIR = Path(__file__).resolve().parents[2] / "assets" / "runs"

RUN_ID = re.compile(r"^[A-Za-z0-9._-]+$")
STALE_AFTER_S = 60  # a trainer on another host writes a heartbeat every 2 s
STARTING_GRACE_S = 60  # a launched trainer takes its lock within a second or two of starting
ACTIVE_STATES = ("starting", "running")
RESUMABLE_STATES = ("created", "stopped", "interrupted", "failed", "diverged")
STATES = ("created", "starting", "running", "finished", "stopped", "failed", "diverged")
DISK_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)


class RunError(ValueError):
    """A run id or folder that cannot be used; the message says why."""


class ActiveRunError(RunError):
    """Another trainer is busy (on this run, or on this machine)."""


def runs_root(path: str | os.PathLike | None = None) -> Path:
    """The runs folder: `path`, else $ALEXNET_RUNS_DIR, else ./runs (it may not exist yet)."""
    return Path(path or os.environ.get("ALEXNET_RUNS_DIR") or "runs").expanduser()


def check_runs_root(root: Path) -> None:
    if root.exists() and not root.is_dir():
        raise RunError(f"The runs folder {root} is a file: point ALEXNET_RUNS_DIR or --runs-dir at a folder")


def new_run_id(variant: str, data: str, now: datetime | None = None) -> str:
    stamp = (now or datetime.now()).strftime("%Y%m%d-%H%M%S")
    data_name = Path(data.rstrip("/")).name or "data"
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", f"{variant}-{data_name}").strip("-.")
    return f"{stamp}-{slug}"[:120]


def valid_run_id(run_id) -> bool:
    """Any name a folder can have is a run id; nothing that could name another folder."""
    return (isinstance(run_id, str) and run_id not in ("", ".", "..") and "/" not in run_id and "\0" not in run_id
            and len(run_id.encode("utf-8", "surrogateescape")) <= 255)


def resolve_run(root: str | os.PathLike, run_id: str) -> Path:
    """The folder of `run_id` directly under `root` (a link is not followed here); refuses ids
    that could leave the runs folder. New runs get ids matching RUN_ID; any folder name works."""
    if not valid_run_id(run_id):
        shown = run_id[:80] + "..." if isinstance(run_id, str) and len(run_id) > 80 else run_id
        raise RunError(f"Invalid run id {shown!r}: give the name of a folder in the runs folder")
    return Path(root).resolve() / run_id


# --- Writing: atomic files, the fault hook, the disk reserve --------------------------------------

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
    import io

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
    import math
    import struct
    import zipfile
    import zlib

    import numpy as np
    from numpy.lib import format as npy

    limits = limits or {}
    try:
        if not _regular_file(path):
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


def remove_run_leftovers(run_dir: Path) -> list[str]:
    """Clear what interrupted writes left in every folder a run's trainer writes: the run folder,
    its checkpoints and its snapshots. Call it only while holding the run's lock."""
    run_dir = Path(run_dir)
    return [name for folder in (run_dir, run_dir / CHECKPOINTS, run_dir / SNAPSHOTS)
            for name in remove_leftovers(folder)]


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


# --- Reading -------------------------------------------------------------------------------------


MAX_JSON_DEPTH = 100  # nesting of any JSON file read from disk (Python recurses over nested values)


def _regular_file(path) -> bool:
    """Whether `path` is a regular file (opening a FIFO named like one would block the reader);
    FileNotFoundError when there is nothing there."""
    import stat

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
        if not _regular_file(path):
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


# The fields the app and the CLI read, with the types they need. A field of the wrong type is
# dropped and reported; unknown fields are kept.
_NUMBER, _TEXT, _INT, _LIST, _OBJECT = "a number", "text", "a whole number", "a list", "an object"
CONFIG_SCHEMA = {
    "variant": _TEXT, "data": _TEXT, "data_description": _TEXT, "epochs": _INT, "batch_size": _INT, "class_names": _LIST,
    "switches": _OBJECT, "environment": _OBJECT, "preprocessing": _OBJECT, "steps_per_epoch": _INT,
    "monitor": _OBJECT, "optimizer": _TEXT, "schedule": _TEXT, "augment": _TEXT, "seed": _INT,
}
STATUS_SCHEMA = {
    "state": _TEXT, "message": _TEXT, "pid": _INT, "host": _TEXT, "heartbeat": _NUMBER, "started": _NUMBER,
    "finished": _NUMBER, "epoch": _INT, "step": _INT, "steps_per_epoch": _INT, "completed_epochs": _INT,
    "images_per_sec": _NUMBER, "eta_seconds": _NUMBER, "elapsed_s": _NUMBER, "phase": _TEXT,
    "evaluations": _LIST, "has_model": bool, "reason": _TEXT,
}
LABEL_SCHEMA = {"name": _TEXT, "notes": _TEXT}


def _fits(value, kind) -> bool:
    if value is None:
        return True  # "not known (yet)" is always allowed
    if kind is bool:
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    return {_NUMBER: lambda v: isinstance(v, (int, float)) and v == v and abs(v) != float("inf"),
            _INT: lambda v: isinstance(v, int),
            _TEXT: lambda v: isinstance(v, str),
            _LIST: lambda v: isinstance(v, list),
            _OBJECT: lambda v: isinstance(v, dict)}[kind](value)


def _short(value) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 40 else text[:37] + "..."


def read_checked(path: Path, schema: dict) -> tuple[dict, list[str]]:
    """A JSON object checked against `schema`: (the usable fields, what was wrong, as
    "file: what"). A missing file gives ({}, [])."""
    path = Path(path)
    try:
        if not _regular_file(path):
            return {}, [f"{path.name}: not a regular file (a folder, pipe or device), not read"]
        with open(path, "rb") as fh:
            raw = fh.read(MAX_JSON_BYTES + 1)
    except FileNotFoundError:
        return {}, []
    except OSError as exc:
        return {}, [f"{path.name}: cannot be read ({exc.strerror or exc})"]
    if len(raw) > MAX_JSON_BYTES:
        return {}, [f"{path.name}: larger than {MAX_JSON_BYTES // 2**20} MiB, not read"]
    try:
        data = parse_json(raw)
    except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors too
        return {}, [f"{path.name}: not valid JSON" + (f" ({exc})" if type(exc) is ValueError else "")]
    if not isinstance(data, dict):
        return {}, [f"{path.name}: holds {type(data).__name__}, expected a JSON object"]
    problems = []
    for key, kind in schema.items():
        if key in data and not _fits(data[key], kind):
            problems.append(f"{path.name}: {key} is {_short(data.pop(key))}, expected "
                            f"{'true/false' if kind is bool else kind}")
    if "state" in data and schema is STATUS_SCHEMA and data["state"] not in STATES:
        problems.append(f"{path.name}: state is {_short(data.pop('state'))}, expected one of {', '.join(STATES)}")
    if isinstance(data.get("class_names"), list) and not all(isinstance(c, str) for c in data["class_names"]):
        problems.append(f"{path.name}: class_names holds something other than names")
        data.pop("class_names")
    return data, problems


def read_config(run_dir: Path) -> dict:
    """config.json, for code that needs a usable one: RunError naming the file and the problem."""
    path = Path(run_dir) / CONFIG
    if not path.exists():
        raise RunError(f"{path} is missing: this is not a run folder")
    config, problems = read_checked(path, CONFIG_SCHEMA)
    if problems:
        raise RunError(f"{path} is damaged: {'; '.join(p.split(': ', 1)[1] for p in problems)}")
    return config


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


def _read_metrics_checked(run_dir: Path):
    frame, skipped = read_csv_checked(Path(run_dir) / METRICS, "epoch")
    if "epoch" in frame:
        frame["epoch"] = frame["epoch"] + 1  # stored from 0, as Keras' CSVLogger
    return frame, skipped


def read_metrics(run_dir: Path):
    """metrics.csv as a DataFrame (one row per completed epoch; `epoch` counts from 1)."""
    return _read_metrics_checked(run_dir)[0]


def read_steps(run_dir: Path):
    return read_csv_checked(Path(run_dir) / STEPS, "step")[0]


def metrics_csv(rows: list[dict]) -> str:
    """metrics.csv text for committed epoch rows: `epoch` first (from 0), then sorted columns."""
    columns = sorted({k for row in rows for k in row} - {"epoch"})
    lines = [",".join(["epoch", *columns])]
    for row in rows:
        lines.append(",".join([str(row["epoch"]), *(_csv_value(row.get(c)) for c in columns)]))
    return "\n".join(lines) + "\n"


def _csv_value(value) -> str:
    if value is None:
        return ""
    return f"{value:.10g}" if isinstance(value, float) else str(value)


def truncate_steps(run_dir: Path, last_step: int) -> None:
    """Keep the rows of steps.csv up to `last_step` (a resumed run redoes the steps after it)."""
    path = Path(run_dir) / STEPS
    try:
        lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    except (OSError, UnicodeDecodeError):
        return
    if not lines:
        return
    kept = [lines[0]]
    for line in lines[1:]:
        head = line.split(",", 1)[0]
        if line.endswith("\n") and head.isdigit() and int(head) <= last_step:
            kept.append(line)
    if len(kept) != len(lines):
        write_text_atomic(path, "".join(kept))


# --- Liveness: one trainer per run --------------------------------------------------------------


class TrainerLock:
    """An exclusive flock on <run>/trainer.lock held for the trainer's whole life.

    The kernel drops it when the process dies however it dies, so a held lock means a live
    trainer and a free one means none, with no stale state to clean up.
    """

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK
        self.fd = None

    def acquire(self, wait_s: float = 3.0) -> TrainerLock:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:  # held: by a trainer, or for an instant by a reader's check
                if time.monotonic() > deadline:
                    os.close(fd)
                    status = read_object(self.path.parent / STATUS)
                    raise ActiveRunError(f"Run {self.path.parent.name} is already being trained by another "
                                         f"process (pid {status.get('pid', '?')}); one trainer per run.") from None
                time.sleep(0.05)
            except OSError as exc:
                if exc.errno != errno.ENOLCK:  # a filesystem without locks: heartbeats only
                    os.close(fd)
                    raise
                break
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def lock_held(run_dir: Path) -> bool | None:
    """True if a trainer holds the run's lock, False if none does, None if it cannot be told."""
    try:
        fd = os.open(Path(run_dir) / LOCK, os.O_RDONLY)
    except FileNotFoundError:
        return False
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    except BlockingIOError:
        return True
    except OSError:
        return None
    finally:
        os.close(fd)


def _pid_alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError, TypeError, OverflowError, OSError):
        return True
    try:  # a zombie (exited, not yet reaped) answers signal 0 but is gone
        return Path(f"/proc/{int(pid)}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except (OSError, ValueError, IndexError):
        return True


def trainer_alive(run_dir: Path, status: dict) -> bool:
    """Is a trainer working on this run? On this host the lock decides (a live trainer holds it
    even through a long validation pass); a just-launched trainer gets a short grace period to
    take it; a run trained on another host counts as alive while its heartbeat is fresh."""
    beat = status.get("heartbeat")
    age = time.time() - beat if isinstance(beat, (int, float)) else float("inf")
    host = status.get("host")
    if host in (None, os.uname().nodename):
        held = lock_held(run_dir)
        if held is not None:
            if held:
                return True
            pid = status.get("pid")
            if status.get("state") != "starting" or age > STARTING_GRACE_S:
                return False
            return _pid_alive(pid) if pid else age < 10  # launched: the pid is recorded within milliseconds
    return age < STALE_AFTER_S


def with_liveness(run_dir: Path, status: dict) -> dict:
    """`status` with an active state turned into `interrupted` when its trainer has gone."""
    if status.get("state") in ACTIVE_STATES and not trainer_alive(run_dir, status):
        return {**status, "state": "interrupted", "message": "The trainer stopped without finishing (killed or "
                "crashed). Resume continues from the last completed epoch."}
    return status


def read_status(run_dir: Path) -> dict:
    """status.json (fields of the wrong type dropped), read through `with_liveness`."""
    return with_liveness(run_dir, read_checked(Path(run_dir) / STATUS, STATUS_SCHEMA)[0])


def write_status(run_dir: Path, **fields) -> dict:
    """Merge `fields` into status.json (atomically) with a fresh heartbeat. For writers other
    than the trainer (which owns status.json while it runs, see monitor.StatusWriter)."""
    status = read_object(Path(run_dir) / STATUS)
    status.update(fields)
    status["heartbeat"] = time.time()
    write_json_atomic(Path(run_dir) / STATUS, status)
    return status


def request_stop(run_dir: Path) -> None:
    (Path(run_dir) / STOP_REQUEST).write_text(str(time.time()), encoding="utf-8")


def stop_requested(run_dir: Path) -> bool:
    return (Path(run_dir) / STOP_REQUEST).exists()


def is_read_only(run_dir: Path) -> bool:
    """Bundled runs, and runs linked into the runs folder from elsewhere: shown, never written."""
    return Path(run_dir).is_symlink() or (Path(run_dir) / READ_ONLY).exists()


def safe_file(run_dir: Path, name: str) -> Path | None:
    """`name` in the run folder if it is a regular file there (not a link, not elsewhere), else None."""
    path = Path(run_dir) / name
    try:
        if path.is_symlink() or not path.is_file():
            return None
        return path if path.resolve().parent == Path(run_dir).resolve() / Path(name).parent else None
    except OSError:
        return None


def model_problem(run_dir: Path) -> str | None:
    """Why model.keras cannot be a Keras model (a .keras file is a zip archive), or None."""
    import zipfile

    path = Path(run_dir) / MODEL
    if not path.exists():
        return None
    try:
        if not _regular_file(path):  # a FIFO would block the run list until something writes to it
            return f"{MODEL}: not a regular file"
        return None if zipfile.is_zipfile(path) else f"{MODEL}: not a Keras model file"
    except OSError as exc:
        return f"{MODEL}: cannot be read ({exc.strerror or exc})"


# --- One run per race: the runs folder's lock ------------------------------------------------------

RUNS_LOCK_WAIT_S = 30.0  # a holder checks the rule and creates a folder or writes a status: milliseconds


class _HeldRunsLocks(threading.local):
    """The runs folders whose lock this thread holds (a holder may take it again)."""

    def __init__(self):
        self.roots: set[str] = set()


_runs_locks_held = _HeldRunsLocks()


@contextlib.contextmanager
def runs_lock(root: str | os.PathLike | None = None, wait_s: float = RUNS_LOCK_WAIT_S):
    """Hold an exclusive flock on the runs folder itself while checking the one-run rule and
    creating a run or marking it `starting`, so that two Starts or Resumes at the same instant
    (two processes, or two sessions of the app's server) are one after the other: the second
    sees the first's run as active. A flock belongs to an open file description, so two threads
    that each open the folder exclude each other as two processes do; a thread that already holds
    it may take it again. No lock file: the folder is its own lock, and the kernel drops the lock
    however its holder ends."""
    root = runs_root(root)
    key = os.path.realpath(root)
    held = _runs_locks_held.roots
    if key in held:
        yield
        return
    check_runs_root(root)
    root.mkdir(parents=True, exist_ok=True)
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)  # not inherited by a spawned trainer (PEP 446)
    try:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise ActiveRunError(f"Another run is being started or resumed in {root} and has not "
                                         f"finished after {wait_s:.0f} s: try again in a moment.") from None
                time.sleep(0.01)
            except OSError as exc:
                if exc.errno not in (errno.ENOLCK, errno.EBADF, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOSYS):
                    raise
                break  # a filesystem without locks: the rule is checked as before, without the lock
        held.add(key)
        try:
            yield
        finally:
            held.discard(key)
    finally:
        os.close(fd)


def mark_starting(run_dir: Path, pid: int | None) -> None:
    """The run's trainer is on its way, started by process `pid` (the trainer itself, or the
    launcher until it has spawned one; None while the spawn is under way): the one-run rule
    counts the run as active from now, before that trainer takes the run's lock
    (runs.trainer_alive's grace period)."""
    write_status(run_dir, state="starting", pid=pid, host=os.uname().nodename, message="Starting the trainer")


# --- The runs table and the rules about a run ----------------------------------------------------


def is_active(row: dict) -> bool:
    return row.get("state") in ACTIVE_STATES


# Failures that the same settings on the same data would repeat: resuming cannot help.
UNFIXABLE_BY_RESUME = ("data", "settings")


def can_resume(row: dict) -> bool:
    """A run can be resumed when it has epochs left, is not bundled, no trainer holds it, and it
    did not fail on its data or settings (those need a new run: the same run would fail again)."""
    epochs = row.get("epochs")
    left = not isinstance(epochs, int) or row.get("epochs_done", 0) < epochs
    repeat = row.get("state") == "failed" and row.get("reason") in UNFIXABLE_BY_RESUME
    return not row.get("read_only") and row.get("state") in RESUMABLE_STATES and left and not repeat


def read_run(run_dir: Path) -> dict:
    """Everything the pages show of a run, read defensively: {"config", "status", "metrics",
    "steps", "problems"}, where problems are "file: what" for every damaged file."""
    run_dir = Path(run_dir)
    config, problems = read_checked(run_dir / CONFIG, CONFIG_SCHEMA)
    status, status_problems = read_checked(run_dir / STATUS, STATUS_SCHEMA)
    problems += status_problems
    status = with_liveness(run_dir, status)
    metrics, bad_rows = _read_metrics_checked(run_dir)
    if bad_rows:
        problems.append(f"{METRICS}: {bad_rows} damaged row{'s' if bad_rows > 1 else ''} skipped")
    steps, bad_steps = read_csv_checked(run_dir / STEPS, "step")
    if bad_steps:
        problems.append(f"{STEPS}: {bad_steps} damaged row{'s' if bad_steps > 1 else ''} skipped")
    bad_model = model_problem(run_dir)
    if bad_model:
        problems.append(bad_model)
    return {"config": config, "status": status, "metrics": metrics, "steps": steps, "problems": problems,
            "model_ok": (run_dir / MODEL).exists() and bad_model is None}


def read_label(run_dir: Path) -> dict:
    """{"name", "notes"} the user gave a run ('' when none, or when label.json is damaged)."""
    label, _ = read_checked(Path(run_dir) / LABEL, LABEL_SCHEMA)
    return {"name": " ".join(str(label.get("name") or "").split())[:MAX_NAME],
            "notes": str(label.get("notes") or "")[:MAX_NOTES]}


def write_label(run_dir: Path, name: str, notes: str) -> dict:
    """Give a run a name and notes (stored in its folder, atomically); returns what was stored.
    Bundled (read-only) runs cannot be labelled."""
    run_dir = Path(run_dir)
    if is_read_only(run_dir):
        raise RunError(f"{run_dir.name} is bundled with the app and read-only: its name cannot change.")
    if not (run_dir / CONFIG).exists():
        raise RunError(f"{run_dir.name} is not a run folder (no {CONFIG})")
    name = " ".join(str(name or "").split())
    if len(name) > MAX_NAME:
        raise RunError(f"A run name is at most {MAX_NAME} characters; this one has {len(name)}.")
    notes = str(notes or "").strip()
    if len(notes) > MAX_NOTES:
        raise RunError(f"Notes are at most {MAX_NOTES} characters; these have {len(notes)}.")
    label = {"name": name, "notes": notes}
    write_json_atomic(run_dir / LABEL, label)
    return label


def display_name(row: dict) -> str:
    """How a run is named on screen: its label and id, or its id alone."""
    name = row.get("name") or ""
    return f"{name} ({row['run_id']})" if name else row["run_id"]


def run_summary(run_dir: Path, run: dict | None = None) -> dict:
    """One line of the runs table."""
    run_dir = Path(run_dir)
    run = run or read_run(run_dir)
    config, status, metrics = run["config"], run["status"], run["metrics"]
    best = None
    if "val_accuracy" in metrics and metrics["val_accuracy"].notna().any():
        best = float(metrics["val_accuracy"].max())
    started = status.get("started")
    elapsed = status.get("elapsed_s")
    if elapsed is None:
        end = status.get("finished") or status.get("heartbeat")
        elapsed = end - started if started and end else None
    link = os.readlink(run_dir) if run_dir.is_symlink() else None
    label = read_label(run_dir)
    env = config.get("environment") if isinstance(config.get("environment"), dict) else {}
    replicas = env.get("replicas")
    workers = env.get("workers")
    return {
        "run_id": run_dir.name,
        "name": label["name"],
        "notes": label["notes"],
        "path": str(run_dir),
        "state": status.get("state") or ("damaged" if run["problems"] else "unknown"),
        "variant": config.get("variant"),
        "data": config.get("data_description") or config.get("data"),
        "epochs_done": int(len(metrics)),
        "epochs": config.get("epochs"),
        "best_val_accuracy": best,
        "duration_s": elapsed,
        "started": started,
        "read_only": is_read_only(run_dir),
        "link": link,
        "has_model": run["model_ok"],
        "message": status.get("message", ""),
        "reason": status.get("reason"),
        "strategy": env.get("strategy") if isinstance(env.get("strategy"), str) else None,
        "replicas": replicas if isinstance(replicas, int) and not isinstance(replicas, bool) else None,
        "workers": len(workers) if isinstance(workers, list) else 1,
        "problems": run["problems"],
        "damaged": "; ".join(f"damaged: {p}" for p in run["problems"]),
    }


def trained_on(row: dict, short: bool = False) -> str:
    """Where a run trained, in words, from its summary row: '1 device', '2 replicas
    (MirroredStrategy)', '2 workers, 2 replicas (MultiWorkerMirroredStrategy)'; '' if unrecorded.
    `short` for a table: '1 device', '2 devices', '2 workers'."""
    replicas, strategy, workers = row.get("replicas"), row.get("strategy"), row.get("workers") or 1
    if not replicas:
        return ""
    if replicas == 1 and workers == 1:
        return "1 device"
    if short:
        return f"{workers} workers" if workers > 1 else f"{replicas} devices"
    where = f"{workers} workers, " if workers > 1 else ""
    return f"{where}{replicas} replicas" + (f" ({strategy})" if strategy else "")


def headline_accuracy(run_dir: Path) -> dict | None:
    """The one accuracy a run is quoted by (its `headline` evaluation, with what it was measured
    on), else its first recorded evaluation, else None."""
    evaluations = [e for e in read_status(run_dir).get("evaluations") or [] if isinstance(e, dict)
                   and isinstance(e.get("accuracy"), (int, float))]
    return next((e for e in evaluations if e.get("headline")), evaluations[0] if evaluations else None)


def bundled_runs() -> list[Path]:
    """Run folders shipped with the app (read-only)."""
    return [p for p in sorted(BUNDLED_DIR.glob("*")) if (p / CONFIG).exists()] if BUNDLED_DIR.is_dir() else []


def list_runs(root: str | os.PathLike | None = None, extra: list[Path] | None = None) -> list[dict]:
    """Every run folder under `root` (newest first), then `extra` folders (the bundled runs)
    whose ids no run under `root` has taken."""
    root = runs_root(root)
    folders = []
    if root.is_dir():
        for path in root.iterdir():
            try:
                if path.is_dir() and (path / CONFIG).exists():
                    folders.append(path)
            except OSError:  # a name the filesystem cannot stat (too long, a broken link loop)
                continue
    rows = [run_summary(p) for p in folders]
    rows.sort(key=lambda r: r["started"] or 0, reverse=True)
    taken = {r["run_id"] for r in rows}
    return rows + [run_summary(p) for p in (extra or []) if (Path(p) / CONFIG).exists() and Path(p).name not in taken]


def all_runs(root: str | os.PathLike | None = None) -> list[dict]:
    """The user's runs, then the bundled ones (a user run with the same id wins)."""
    return list_runs(root, extra=bundled_runs())


def find_run(run_id: str, root: str | os.PathLike | None = None) -> Path | None:
    """The folder of a run id from the user (URL, widget): a run under the root, else a bundled run."""
    try:
        path = resolve_run(runs_root(root), run_id)
        if (path / CONFIG).exists():
            return path
    except (RunError, OSError):
        return None
    return next((p for p in bundled_runs() if p.name == run_id), None)


def active_runs(root: str | os.PathLike | None = None) -> list[dict]:
    return [r for r in list_runs(root) if is_active(r)]


def check_no_active_run(root, except_run: Path | None = None) -> None:
    """One run trains at a time on a machine: the same rule for `train`, `train --resume` and the app.
    Hold `runs_lock` from this check until the new run is created or marked starting."""
    for run in active_runs(root):
        if except_run is not None and Path(run["path"]).resolve() == Path(except_run).resolve():
            continue
        what = (f"Another run just started: {run['run_id']} ({run['message'] or 'starting'})"
                if run["state"] == "starting" else
                f"Run {run['run_id']} is already training ({run['message'] or run['state']})")
        raise ActiveRunError(
            f"{what}. One run trains at a time: stop it on the Train page or with `python -m alexnet_core stop "
            f"{run['path']}`, or wait for it to finish.")


def create_run(root: str | os.PathLike, run_id: str, config: dict) -> Path:
    root = runs_root(root)
    check_runs_root(root)
    path = resolve_run(root, run_id)
    root.mkdir(parents=True, exist_ok=True)
    try:
        path.mkdir()  # atomic: of two creators of one id, one gets the folder
    except FileExistsError:
        raise RunError(f"Run {run_id!r} already exists in {path.parent}") from None
    (path / CHECKPOINTS).mkdir()
    write_json_atomic(path / CONFIG, config)
    write_status(path, state="created", message="Created; training has not started yet.", epoch=0,
                 started=time.time())
    return path


def new_run(config, root=None, run_id: str | None = None, allow_parallel: bool = False,
            starter_pid: int | None = None) -> Path:
    """Create the folder of a new run for a validated TrainConfig once its data has been read
    and the one-run rule checked; on any refusal nothing is created. The rule's check and the
    creation are one step (`runs_lock`). `starter_pid`: the process that starts the run's trainer
    at once (the command line, which trains it itself, or the launcher, which spawns it): the run
    is then created `starting`, so the rule counts it before that trainer takes its lock."""
    from dataclasses import asdict

    from alexnet_core.inputs.data import load_source

    load_source(config.data, config.val_split)  # DataError names what is wrong with the data
    if config.init_from:
        from alexnet_core.predict.inference import ModelLoadError, resolve_model_path
        from alexnet_core.settings.config import ConfigError

        try:
            resolve_model_path(config.init_from)
        except ModelLoadError as exc:
            raise ConfigError(f"Cannot fine-tune from {config.init_from!r}: {exc}") from exc
    root = runs_root(root)
    check_runs_root(root)
    with runs_lock(root):
        if not allow_parallel:
            check_no_active_run(root)
        run_dir = create_run(root, run_id or new_run_id(config.variant, config.data), asdict(config))
        if starter_pid is not None:
            mark_starting(run_dir, starter_pid)
    return run_dir


def check_resumable(run_dir: Path, allow_parallel: bool = False, launching: bool = False,
                    starter_pid: int | None = None):
    """The TrainConfig of a run that may be resumed now, or RunError saying why not.

    `launching`: the caller is the trainer that the app's launcher just started for this run.
    `starter_pid`: the process that starts its trainer now (as in `new_run`): the run is marked
    `starting` in the same step as the checks (`runs_lock`), so two resumes give one trainer.
    """
    from alexnet_core.settings.config import ConfigError, TrainConfig

    run_dir = Path(run_dir)
    if not (run_dir / CONFIG).exists():
        raise RunError(f"{run_dir} is not a run folder (no {CONFIG})")
    if run_dir.is_symlink():
        raise RunError(f"{run_dir.name} is a link to {os.readlink(run_dir)}: resume it where it lives")
    if is_read_only(run_dir):
        raise RunError(f"{run_dir.name} is bundled with the app and cannot be resumed")
    try:
        config = TrainConfig.from_dict(read_config(run_dir))
    except (ConfigError, TypeError) as exc:
        raise RunError(f"Cannot resume {run_dir}: its {CONFIG} is not usable ({exc})") from exc
    with runs_lock(run_dir.parent):
        status = read_status(run_dir)
        if status.get("state") == "starting" and not launching:
            trainer = f"pid {status['pid']}" if status.get("pid") else "its trainer is on its way"
            raise ActiveRunError(f"Run {run_dir.name} is already starting ({trainer}): it was just started or "
                                 "resumed elsewhere (another tab, or the command line).")
        if status.get("state") in ACTIVE_STATES and not launching:
            raise ActiveRunError(f"Run {run_dir.name} is still training (pid {status.get('pid', '?')})")
        if not allow_parallel:
            check_no_active_run(run_dir.parent, except_run=run_dir)
        if starter_pid is not None:
            mark_starting(run_dir, starter_pid)
    return config


def delete_run(root: str | os.PathLike, run_id: str) -> None:
    path = resolve_run(runs_root(root), run_id)
    if path.is_symlink():  # a run linked in from elsewhere: remove the link, never what it points to
        path.unlink()
        return
    if not (path / CONFIG).exists():
        raise RunError(f"No run {run_id!r} in {path.parent}")
    if is_read_only(path):
        raise RunError(f"Run {run_id!r} is bundled with the app and cannot be deleted")
    if read_status(path).get("state") in ACTIVE_STATES:
        raise RunError(f"Run {run_id!r} is still training: stop it first")
    shutil.rmtree(path)


def export_run(src: Path, dest: Path, evaluate_on: str | list[str] | None = None, split: str | None = None,
               read_only: bool = False, headline: str | None = None, data_description: str | None = None) -> Path:
    """A compact, read-only copy of a run: settings, curves, status and the model without its
    optimizer state; optionally with its accuracy on data sources recorded in status.json.

    `headline` describes the data of the last source in `evaluate_on` and makes its accuracy the
    one the app quotes the model by; `data_description` says in config.json what it trained on."""
    from alexnet_core.analysis.evaluation import evaluate
    from alexnet_core.predict.inference import float32_model, load_model

    src, dest = Path(src), Path(dest)
    if not (src / CONFIG).exists():
        raise RunError(f"{src} is not a run folder (no {CONFIG})")
    if read_status(src).get("state") in ACTIVE_STATES:
        raise RunError(f"{src.name} is still training: stop it or wait for it to finish")
    if dest.exists():
        raise RunError(f"{dest} already exists")
    sources = [evaluate_on] if isinstance(evaluate_on, str) else list(evaluate_on or [])
    if headline and not sources:
        raise RunError("A headline describes an evaluation: give the data to evaluate on as well")
    loaded = load_model(str(src))
    dest.mkdir(parents=True)
    try:  # a copy that cannot be finished (bad data to evaluate on, a full disk) is not left half-made
        for name in (CONFIG, METRICS, STEPS, LABEL):
            if (src / name).exists():
                shutil.copyfile(src / name, dest / name)
        if (src / SNAPSHOTS).is_dir():
            shutil.copytree(src / SNAPSHOTS, dest / SNAPSHOTS, ignore=shutil.ignore_patterns(".*"))
        model = float32_model(loaded.model, portable=True)  # loaded without its optimizer, in float32
        with atomic_write(dest / MODEL, suffix=".keras") as tmp:
            model.save(tmp)
        status = read_object(src / STATUS)
        status.update(pid=None, host=None, exported_from=str(src), exported=time.time())
        if sources:
            exported = load_model(str(dest / MODEL))
            status["evaluations"] = []
            for source in sources:
                result = evaluate(exported, source, split, use_cache=False)
                status["evaluations"].append({"data": source, "split": result.split, "n": result.n,
                                              "accuracy": result.accuracy(), "top5_accuracy": result.top_k_accuracy(5)})
            if headline:
                status["evaluations"][-1].update(headline=True, description=headline)
        if data_description:
            write_json_atomic(dest / CONFIG, {**read_object(dest / CONFIG), "data_description": data_description})
        write_json_atomic(dest / STATUS, status)
        if read_only:
            (dest / READ_ONLY).write_text("bundled run: the app shows it but never changes it\n")
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    return dest
