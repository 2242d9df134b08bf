"""The run queue: runs waiting in the runs folder for the machine, or one of its GPUs, to be free.

The queue is `queue.json` in the runs folder (the order) and the run folders themselves, created in
state `queued` (what each run is). Whoever notices a free place starts the next run: the trainer
whose run ends, however it ends (train.training.run_training), the `queue` command, a view of the
Train or Runs page. A killed trainer leaves its run `interrupted` (liveness), which frees its place
for the next look. Every change is made holding the runs folder's lock, the same one that makes a
Start one step, so two tabs or processes never lose, duplicate or double-start an entry.

Places: without GPUs, the machine (one run at a time, the usual rule). With GPUs, one run per GPU:
a queued run that asked for GPU N waits for it, one that did not takes any free one; a run started
without the queue uses every GPU and so holds them all. The GPUs are `devices=`, else $ALEXNET_GPUS
("0,1"), else what nvidia-smi lists. No TensorFlow (except to check a fine-tuning base at enqueue).
"""

from __future__ import annotations

import functools
import os
import shutil
import time
from pathlib import Path

from alexnet_core import locations
from alexnet_core.settings.config import TrainConfig
from alexnet_core.store import catalog, fileio, layout, liveness
from alexnet_core.train import launcher, lifecycle

GPUS_ENV = launcher.GPUS_ENV


class QueueError(layout.RunError):
    """A queue change that cannot be made (an unknown run, a bad position, a GPU not here): the text says why."""


@functools.lru_cache(maxsize=1)
def _nvidia_indices() -> tuple[int, ...]:
    from alexnet_core.train.devices import nvidia_gpus

    return tuple(g["index"] for g in nvidia_gpus())


def gpus(given: list[int] | None = None) -> list[int]:
    """The GPUs the queue shares out: `given`, else $ALEXNET_GPUS ("0,1"; empty: none), else nvidia-smi's."""
    if given is not None:
        return sorted({int(g) for g in given})
    setting = os.environ.get(GPUS_ENV)
    if setting is None:
        return list(_nvidia_indices())
    try:
        return sorted({int(part) for part in setting.split(",") if part.strip()})
    except ValueError:
        raise QueueError(f"{GPUS_ENV}={setting[:40]!r} is not a list of GPU numbers such as 0,1: "
                         f"fix it or unset it") from None


def _where(gpu: int | None) -> str:
    return f"GPU {gpu}" if gpu is not None else "the machine"


def entries(root=None) -> list[dict]:
    """The queue in order: [{"position" (from 1), "run_id", "run_dir", "gpu", "queued_at", "state"}].
    A damaged queue.json is read as the queued run folders, oldest first (`problems` says so)."""
    return catalog.queue_order(root)[0]


def problems(root=None) -> list[str]:
    """What was wrong with queue.json (damaged entries dropped, the file rebuilt), in words."""
    return catalog.queue_order(root)[1]


def _write(root: Path, order: list[dict], note: str | None = None) -> None:
    document = {"entries": [{"run_id": e["run_id"], "gpu": e["gpu"], "queued_at": e["queued_at"]} for e in order]}
    if note:
        document["note"] = note
    fileio.write_json_atomic(root / layout.QUEUE, document)


def _note(found: list[str]) -> str | None:
    return "; ".join(found)[:1000] if found else None


def enqueue(config: TrainConfig, root=None, *, run_id: str | None = None, gpu: int | None = None,
            label: dict | None = None) -> Path:
    """Add a new run to the queue and return its folder. Its settings and data are checked as for a
    Start (nothing is created on a refusal); the folder is created in state `queued` and appended
    in one step; then the next runs start if their places are free (this one, when nothing trains).
    `gpu`: the GPU it must run on; `label`: {"name", "notes", ...} stored as the run's label.json."""
    root = locations.runs_root(root)
    if gpu is not None:
        if isinstance(gpu, bool) or not isinstance(gpu, int):
            raise QueueError(f"A GPU is a number such as 0, not {gpu!r}")
        here = gpus()
        if gpu not in here:
            raise QueueError(f"There is no GPU {gpu} on this machine (GPUs: "
                             f"{', '.join(map(str, here)) or 'none'}): leave the GPU out to queue the run for "
                             f"{'any GPU' if here else 'the machine'}.")
    if config.init_from:
        config = lifecycle.check_fine_tune(config)  # TensorFlow: only when a queued run fine-tunes

    def add(run_dir: Path) -> None:  # holding the runs folder's lock, right after the folder is made
        try:
            liveness.write_status(run_dir, state=layout.QUEUED, gpu=gpu, queued_at=time.time(), message=(
                f"Waiting in the queue: it starts when {_where(gpu)} is free."))
            if label:
                stored = catalog.write_label(run_dir, label.get("name", ""), label.get("notes", ""))
                extra = {k: v for k, v in label.items() if k not in stored}
                if extra:
                    fileio.write_json_atomic(run_dir / layout.LABEL, {**extra, **stored})
            order, found = catalog.queue_order(root)
            status = layout.read_checked(run_dir / layout.STATUS, layout.STATUS_SCHEMA)[0]
            _write(root, [*order, {"run_id": run_dir.name, "gpu": gpu, "queued_at": status.get("queued_at")}],
                   _note(found))
        except BaseException:
            shutil.rmtree(run_dir, ignore_errors=True)  # not in the queue: not a run either
            raise

    run_dir = lifecycle.new_run(config, root, run_id, allow_parallel=True, then=add)
    advance(root)
    return run_dir


def _free_places(statuses: dict[str, dict], devices: list[int], finishing: Path | None) -> list:
    """The places no active run holds: GPU numbers, or [None] for the machine when it has none."""
    finishing_id = Path(finishing).name if finishing is not None else None
    active = [s for run_id, s in statuses.items()
              if s.get("state") in layout.ACTIVE_STATES and run_id != finishing_id]
    if not devices:
        return [] if active else [None]
    busy = set()
    for status in active:
        if status.get("gpu") is None:
            return []  # started without the queue: it trains on every GPU
        busy.add(status["gpu"])
    return [d for d in devices if d not in busy]


def advance(root=None, devices: list[int] | None = None, finishing: Path | None = None) -> list[Path]:
    """Start the queued runs whose places are free, in queue order; return their folders.

    Cheap when the queue is empty (one small read). `finishing`: the run whose trainer calls this
    as it ends, counted as gone. A run that asked for a GPU this machine no longer has is taken out
    (state created, saying why) rather than left to wait forever."""
    root = locations.runs_root(root)
    listed, _ = layout.read_queue(root)
    if listed == []:
        return []
    started = []
    with liveness.runs_lock(root):
        order, found = catalog.queue_order(root)
        listed, _ = layout.read_queue(root)
        changed = listed is None or [e["run_id"] for e in listed] != [e["run_id"] for e in order]
        if not order:
            if changed:
                _write(root, [], _note(found))
            return []
        devices = gpus(devices)
        free = _free_places(catalog.statuses(root), devices, finishing)
        waiting = []
        for entry in order:
            run_dir = root / entry["run_id"]
            gpu = entry["gpu"]
            if gpu is not None and gpu not in devices:
                liveness.write_status(run_dir, state="created", gpu=None, message=(
                    f"Taken out of the queue: it asked for GPU {gpu}, which this machine does not have (GPUs: "
                    f"{', '.join(map(str, devices)) or 'none'}). Resume starts it on this machine's devices."))
                changed = True
                continue
            place = (gpu if gpu in free else "wait") if gpu is not None else (free[0] if free else "wait")
            if place == "wait":
                waiting.append(entry)
                continue
            free.remove(place)
            changed = True
            try:
                launcher.spawn(run_dir, gpu=place, devices=devices or None, allow_parallel=bool(devices))
            except OSError as exc:
                liveness.write_status(run_dir, state="failed", reason="internal", finished=time.time(), message=(
                    f"The queue could not start its trainer: {exc}. Resume tries again."))
                continue
            started.append(run_dir)
        if changed:
            _write(root, waiting, _note(found))
    return started


def _find(run_id: str, root: Path) -> Path:
    run_dir = layout.resolve_run(root, run_id)
    if not (run_dir / layout.CONFIG).exists():
        raise QueueError(f"There is no run {run_id!r} in {root}: `python -m alexnet_core queue` lists the queue.")
    return run_dir


def cancel(run_id: str, root=None) -> None:
    """Take a run out of the queue before it starts. Its folder stays, in state `created`: Resume
    starts it by hand, or it can be deleted."""
    root = locations.runs_root(root)
    with liveness.runs_lock(root):
        run_dir = _find(run_id, root)
        order, found = catalog.queue_order(root)
        state = liveness.read_status(run_dir).get("state")
        if state != layout.QUEUED:
            raise QueueError(f"Run {run_id} is not in the queue (it is {state or 'unknown'}): only a waiting run "
                             f"can be cancelled; stop a training run instead.")
        liveness.write_status(run_dir, state="created", gpu=None, message=(
            "Taken out of the queue before it started: Resume starts it, or delete it."))
        _write(root, [e for e in order if e["run_id"] != run_id], _note(found))


def move(run_id: str, position: int, root=None) -> list[dict]:
    """Put a queued run at `position` (1 is next); returns the queue as it is now."""
    root = locations.runs_root(root)
    with liveness.runs_lock(root):
        _find(run_id, root)
        order, found = catalog.queue_order(root)
        ids = [e["run_id"] for e in order]
        if run_id not in ids:
            raise QueueError(f"Run {run_id} is not in the queue: `python -m alexnet_core queue` lists it.")
        if isinstance(position, bool) or not isinstance(position, int) or not 1 <= position <= len(ids):
            raise QueueError(f"Position {position} is outside the queue: give 1 to {len(ids)}.")
        entry = order.pop(ids.index(run_id))
        order.insert(position - 1, entry)
        _write(root, order, _note(found))
    return entries(root)
