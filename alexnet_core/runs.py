"""Run folders (contract in DESIGN.md): create, list, read status and metrics, request stop.

Every file a reader polls is written so that a reader never sees half of it: JSON by temp
file + rename, CSVs appended a line at a time (readers drop a half-written last line).
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import tempfile
import time
from datetime import datetime
from pathlib import Path

CONFIG = "config.json"
STATUS = "status.json"
METRICS = "metrics.csv"
STEPS = "steps.csv"
CHECKPOINTS = "checkpoints"
MODEL = "model.keras"
EVAL = "eval"
TENSORBOARD = "tensorboard"
LOG = "train.log"
STOP_REQUEST = "stop.request"
READ_ONLY = ".read-only"  # marks a bundled run the app must not delete or resume

RUN_ID = re.compile(r"^[A-Za-z0-9._-]+$")
STALE_AFTER_S = 90  # a running trainer writes a heartbeat every few seconds
ACTIVE_STATES = ("starting", "running")
STATES = ("starting", "running", "finished", "stopped", "failed", "diverged")


class RunError(ValueError):
    """A run id or folder that cannot be used; the message says why."""


def runs_root(path: str | os.PathLike | None = None) -> Path:
    return Path(path or os.environ.get("ALEXNET_RUNS_DIR") or "runs").expanduser()


def new_run_id(variant: str, data: str, now: datetime | None = None) -> str:
    stamp = (now or datetime.now()).strftime("%Y%m%d-%H%M%S")
    data_name = Path(data.rstrip("/")).name or "data"
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", f"{variant}-{data_name}").strip("-.")
    return f"{stamp}-{slug}"[:120]


def resolve_run(root: str | os.PathLike, run_id: str) -> Path:
    """The folder of `run_id` under `root`; refuses ids that could leave the runs folder."""
    if not isinstance(run_id, str) or not RUN_ID.match(run_id) or run_id in (".", ".."):
        raise RunError(f"Invalid run id {run_id!r}: use letters, digits, '.', '_' and '-' only")
    root = Path(root).resolve()
    path = (root / run_id).resolve()
    if path.parent != root:
        raise RunError(f"Invalid run id {run_id!r}: it points outside {root}")
    return path


def write_json_atomic(path: Path, data) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide a shared run's files from other users
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2, default=str)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_json(path: Path, default=None):
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return default


def create_run(root: str | os.PathLike, run_id: str, config: dict) -> Path:
    path = resolve_run(root, run_id)
    if path.exists():
        raise RunError(f"Run {run_id!r} already exists in {path.parent}")
    (path / CHECKPOINTS).mkdir(parents=True)
    write_json_atomic(path / CONFIG, config)
    write_status(path, state="starting", message="Waiting for the trainer to start", epoch=0)
    return path


def write_status(run_dir: Path, **fields) -> dict:
    """Merge `fields` into status.json (atomically) with a fresh heartbeat."""
    status = read_json(Path(run_dir) / STATUS, {}) or {}
    status.update(fields)
    status["heartbeat"] = time.time()
    write_json_atomic(Path(run_dir) / STATUS, status)
    return status


def read_status(run_dir: Path) -> dict:
    """status.json with `state` turned into `interrupted` when its trainer has gone."""
    status = dict(read_json(Path(run_dir) / STATUS, {}) or {})
    state = status.get("state", "unknown")
    if state in ACTIVE_STATES and not _trainer_alive(status):
        status["state"] = "interrupted"
        status["message"] = ("The trainer stopped without finishing (killed or crashed). "
                             "Resume continues from the last completed epoch.")
    return status


def _trainer_alive(status: dict) -> bool:
    beat = status.get("heartbeat", 0)
    if time.time() - beat > STALE_AFTER_S:
        return False
    pid = status.get("pid")
    if pid and status.get("host", os.uname().nodename) == os.uname().nodename:
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return False
        except (PermissionError, ValueError, OSError):
            pass
        try:  # a zombie (exited, not yet reaped) answers signal 0 but is gone
            if Path(f"/proc/{int(pid)}/stat").read_text().split(")")[-1].split()[0] == "Z":
                return False
        except (PermissionError, ValueError, OSError):
            pass
    return True


def read_config(run_dir: Path) -> dict:
    config = read_json(Path(run_dir) / CONFIG)
    if not isinstance(config, dict):
        raise RunError(f"{Path(run_dir) / CONFIG} is missing or unreadable: this is not a run folder")
    return config


def _read_csv(path: Path):
    import pandas as pd

    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError:
        return pd.DataFrame()
    if not text.endswith("\n"):  # a writer is mid-line: drop the partial last line
        text = text[: text.rfind("\n") + 1]
    if not text.strip():
        return pd.DataFrame()
    try:
        return pd.read_csv(io.StringIO(text))
    except (ValueError, pd.errors.ParserError):
        return pd.DataFrame()


def read_metrics(run_dir: Path):
    """metrics.csv as a DataFrame (one row per epoch; `epoch` counts from 1)."""
    frame = _read_csv(Path(run_dir) / METRICS)
    if "epoch" in frame:
        frame["epoch"] = frame["epoch"].astype(int) + 1  # CSVLogger counts from 0
    return frame


def read_steps(run_dir: Path):
    return _read_csv(Path(run_dir) / STEPS)


def truncate_metrics(run_dir: Path, completed_epochs: int) -> None:
    """Keep rows of epochs < completed_epochs (0-based), so a resumed epoch is never logged twice."""
    path = Path(run_dir) / METRICS
    if not path.exists():
        return
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    if not lines:
        return
    header, kept = lines[0], []
    for line in lines[1:]:
        if not line.endswith("\n"):
            continue
        try:
            epoch = int(next(csv.reader([line]))[0])
        except (ValueError, IndexError, StopIteration):
            continue
        if epoch < completed_epochs:
            kept.append(line)
    tmp = path.with_suffix(".csv.tmp")
    tmp.write_text(header + "".join(kept), encoding="utf-8")
    os.replace(tmp, path)


def request_stop(run_dir: Path) -> None:
    (Path(run_dir) / STOP_REQUEST).write_text(str(time.time()), encoding="utf-8")


def stop_requested(run_dir: Path) -> bool:
    return (Path(run_dir) / STOP_REQUEST).exists()


def is_read_only(run_dir: Path) -> bool:
    return (Path(run_dir) / READ_ONLY).exists()


def run_summary(run_dir: Path) -> dict:
    """One line of the runs table."""
    run_dir = Path(run_dir)
    config = read_json(run_dir / CONFIG, {}) or {}
    status = read_status(run_dir)
    metrics = read_metrics(run_dir)
    best = float(metrics["val_accuracy"].max()) if "val_accuracy" in metrics and len(metrics) else None
    started, beat = status.get("started"), status.get("heartbeat")
    return {
        "run_id": run_dir.name,
        "path": str(run_dir),
        "state": status.get("state", "unknown"),
        "variant": config.get("variant"),
        "data": config.get("data"),
        "epochs_done": int(len(metrics)),
        "epochs": config.get("epochs"),
        "best_val_accuracy": best,
        "duration_s": (status.get("finished") or beat or 0) - started if started else None,
        "started": started,
        "read_only": is_read_only(run_dir),
        "has_model": (run_dir / MODEL).exists(),
        "message": status.get("message", ""),
    }


def list_runs(root: str | os.PathLike | None = None, extra: list[Path] | None = None) -> list[dict]:
    """Every run folder under `root` (newest first), then `extra` folders (the bundled runs)
    whose ids no run under `root` has taken."""
    root = runs_root(root)
    folders = [p for p in root.iterdir() if p.is_dir() and (p / CONFIG).exists()] if root.is_dir() else []
    rows = [run_summary(p) for p in folders]
    rows.sort(key=lambda r: r["started"] or 0, reverse=True)
    taken = {r["run_id"] for r in rows}
    return rows + [run_summary(p) for p in (extra or []) if (Path(p) / CONFIG).exists() and Path(p).name not in taken]


def active_runs(root: str | os.PathLike | None = None) -> list[dict]:
    return [r for r in list_runs(root) if r["state"] in ACTIVE_STATES]


def delete_run(root: str | os.PathLike, run_id: str) -> None:
    path = resolve_run(runs_root(root), run_id)
    if not (path / CONFIG).exists():
        raise RunError(f"No run {run_id!r} in {path.parent}")
    if is_read_only(path):
        raise RunError(f"Run {run_id!r} is bundled with the app and cannot be deleted")
    if read_status(path).get("state") in ACTIVE_STATES:
        raise RunError(f"Run {run_id!r} is still training: stop it first")
    shutil.rmtree(path)
