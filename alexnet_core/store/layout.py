"""A run folder's layout: its file names, run ids, states and the schemas of its JSON files, with the
readers that check a run's files against them. No TensorFlow."""

from __future__ import annotations

import json
import os
import re
import zipfile
from datetime import datetime
from pathlib import Path

from alexnet_core.errors import AlexNetError
from alexnet_core.settings.config import record_kinds
from alexnet_core.store import fileio

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




READ_ONLY = ".read-only"  # marks a bundled run the app must not delete or resume


LABEL = "label.json"  # the user's name, notes and tags for a run: {"name", "notes", "tags"}


SNAPSHOTS = "snapshots"  # per-epoch snapshots (snapshots.py)


QUEUE = "queue.json"  # in the runs folder: the queued runs in order (train/queue.py)


MAX_NAME = 80


MAX_NOTES = 4000


RUN_ID = re.compile(r"^[A-Za-z0-9._-]+$")


ACTIVE_STATES = ("starting", "running")


RESUMABLE_STATES = ("created", "stopped", "interrupted", "failed", "diverged")


STATES = ("created", "queued", "starting", "running", "finished", "stopped", "failed", "diverged")


QUEUED = "queued"  # waiting in the runs folder's queue: not active, started by the queue, not by Resume


class RunError(AlexNetError, ValueError):
    """A run id or folder that cannot be used; the message says why."""


class ActiveRunError(RunError):
    """Another trainer is busy (on this run, or on this machine)."""


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


def remove_run_leftovers(run_dir: Path) -> list[str]:
    """Clear what interrupted writes left in every folder a run's trainer writes: the run folder,
    its checkpoints and its snapshots. Call it only while holding the run's lock."""
    run_dir = Path(run_dir)
    return [name for folder in (run_dir, run_dir / CHECKPOINTS, run_dir / SNAPSHOTS)
            for name in fileio.remove_leftovers(folder)]


# The fields the app and the CLI read, with the types they need. A field of the wrong type is
# dropped and reported; unknown fields are kept.
_NUMBER, _TEXT, _INT, _LIST, _OBJECT = "a number", "text", "a whole number", "a list", "an object"


CONFIG_SCHEMA = {  # every TrainConfig field, as its type says; then what the trainer adds
    **{name: {str: _TEXT, int: _INT, float: _NUMBER, bool: bool, dict: _OBJECT}[kind]
       for name, kind in record_kinds().items()},
    "data_description": _TEXT, "class_names": _LIST, "environment": _OBJECT, "preprocessing": _OBJECT,
    "monitor": _OBJECT,
}


STATUS_SCHEMA = {
    "state": _TEXT, "message": _TEXT, "pid": _INT, "host": _TEXT, "heartbeat": _NUMBER, "started": _NUMBER,
    "finished": _NUMBER, "epoch": _INT, "step": _INT, "steps_per_epoch": _INT, "completed_epochs": _INT,
    "images_per_sec": _NUMBER, "eta_seconds": _NUMBER, "elapsed_s": _NUMBER, "phase": _TEXT,
    "evaluations": _LIST, "has_model": bool, "reason": _TEXT, "gpu": _INT, "queued_at": _NUMBER,
}


LABEL_SCHEMA = {"name": _TEXT, "notes": _TEXT, "tags": _LIST}


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
        if not fileio.regular_file(path):
            return {}, [f"{path.name}: not a regular file (a folder, pipe or device), not read"]
        with open(path, "rb") as fh:
            raw = fh.read(fileio.MAX_JSON_BYTES + 1)
    except FileNotFoundError:
        return {}, []
    except OSError as exc:
        return {}, [f"{path.name}: cannot be read ({exc.strerror or exc})"]
    if len(raw) > fileio.MAX_JSON_BYTES:
        return {}, [f"{path.name}: larger than {fileio.MAX_JSON_BYTES // 2**20} MiB, not read"]
    try:
        data = fileio.parse_json(raw)
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


QUEUE_ENTRY_SCHEMA = {"run_id": _TEXT, "gpu": _INT, "queued_at": _NUMBER}


def read_queue(root: Path) -> tuple[list[dict] | None, list[str]]:
    """The runs folder's queue.json: ([{"run_id", "gpu", "queued_at"}] in order, what was wrong).
    A missing file is an empty queue ([], []); a file that cannot be read as a queue gives None
    (the caller rebuilds it from the queued run folders); a damaged entry is dropped and named."""
    queue, problems = read_checked(Path(root) / QUEUE, {"entries": _LIST, "note": _TEXT})
    if problems or (queue and "entries" not in queue):
        return None, problems or [f"{QUEUE}: has no entries list"]
    entries, seen = [], set()
    for number, entry in enumerate(queue.get("entries") or [], 1):
        if not isinstance(entry, dict):
            problems.append(f"{QUEUE}: entry {number} is {_short(entry)}, not an object; dropped")
            continue
        bad = [key for key, kind in QUEUE_ENTRY_SCHEMA.items() if not _fits(entry.get(key), kind)]
        if bad or not valid_run_id(entry.get("run_id")) or entry["run_id"] in seen:
            why = f"{', '.join(bad)} of the wrong type" if bad else "no usable run id, or one listed twice"
            problems.append(f"{QUEUE}: entry {number} ({_short(entry)}) has {why}; dropped")
            continue
        seen.add(entry["run_id"])
        entries.append({"run_id": entry["run_id"], "gpu": entry.get("gpu"), "queued_at": entry.get("queued_at")})
    if queue.get("note"):
        problems.append(queue["note"])
    return entries, problems


def read_config(run_dir: Path) -> dict:
    """config.json, for code that needs a usable one: RunError naming the file and the problem."""
    path = Path(run_dir) / CONFIG
    if not path.exists():
        raise RunError(f"{path} is missing: this is not a run folder")
    config, problems = read_checked(path, CONFIG_SCHEMA)
    if problems:
        raise RunError(f"{path} is damaged: {'; '.join(p.split(': ', 1)[1] for p in problems)}")
    return config


def read_metrics_checked(run_dir: Path):
    frame, skipped = fileio.read_csv_checked(Path(run_dir) / METRICS, "epoch")
    if "epoch" in frame:
        frame["epoch"] = frame["epoch"] + 1  # stored from 0, as Keras' CSVLogger
    return frame, skipped


def read_metrics(run_dir: Path):
    """metrics.csv as a DataFrame (one row per completed epoch; `epoch` counts from 1)."""
    return read_metrics_checked(run_dir)[0]


def read_steps(run_dir: Path):
    return fileio.read_csv_checked(Path(run_dir) / STEPS, "step")[0]


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
        fileio.write_text_atomic(path, "".join(kept))


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

    path = Path(run_dir) / MODEL
    if not path.exists():
        return None
    try:
        if not fileio.regular_file(path):  # a FIFO would block the run list until something writes to it
            return f"{MODEL}: not a regular file"
        return None if zipfile.is_zipfile(path) else f"{MODEL}: not a Keras model file"
    except OSError as exc:
        return f"{MODEL}: cannot be read ({exc.strerror or exc})"
