"""The runs a user sees: reading a run's summary and label, listing, finding, creating and deleting
runs, the rules on which may resume. No TensorFlow."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from alexnet_core import locations
from alexnet_core.store import fileio, layout, liveness


def is_active(row: dict) -> bool:
    return row.get("state") in layout.ACTIVE_STATES


# Failures that the same settings on the same data would repeat: resuming cannot help.
UNFIXABLE_BY_RESUME = ("data", "settings")


def can_resume(row: dict) -> bool:
    """A run can be resumed when it has epochs left, is not bundled, no trainer holds it, and it
    did not fail on its data or settings (those need a new run: the same run would fail again).
    A queued run is not resumed: the queue starts it (train/queue.py)."""
    epochs = row.get("epochs")
    left = not isinstance(epochs, int) or row.get("epochs_done", 0) < epochs
    repeat = row.get("state") == "failed" and row.get("reason") in UNFIXABLE_BY_RESUME
    return not row.get("read_only") and row.get("state") in layout.RESUMABLE_STATES and left and not repeat


def read_run(run_dir: Path) -> dict:
    """Everything the pages show of a run, read defensively: {"config", "status", "metrics",
    "steps", "problems"}, where problems are "file: what" for every damaged file."""
    run_dir = Path(run_dir)
    config, problems = layout.read_checked(run_dir / layout.CONFIG, layout.CONFIG_SCHEMA)
    status, status_problems = layout.read_checked(run_dir / layout.STATUS, layout.STATUS_SCHEMA)
    problems += status_problems
    status = liveness.with_liveness(run_dir, status)
    metrics, bad_rows = layout.read_metrics_checked(run_dir)
    if bad_rows:
        problems.append(f"{layout.METRICS}: {bad_rows} damaged row{'s' if bad_rows > 1 else ''} skipped")
    steps, bad_steps = fileio.read_csv_checked(run_dir / layout.STEPS, "step")
    if bad_steps:
        problems.append(f"{layout.STEPS}: {bad_steps} damaged row{'s' if bad_steps > 1 else ''} skipped")
    bad_model = layout.model_problem(run_dir)
    if bad_model:
        problems.append(bad_model)
    return {"config": config, "status": status, "metrics": metrics, "steps": steps, "problems": problems,
            "model_ok": (run_dir / layout.MODEL).exists() and bad_model is None}


MAX_TAG = 24  # characters in one tag
MAX_TAGS = 12  # tags on one run


def clean_tags(tags) -> list[str]:
    """Tags as stored: each one's spaces collapsed, empty ones dropped, the first of any written
    twice (whatever its case) kept, in the order given."""
    out, seen = [], set()
    for tag in tags or []:
        tag = " ".join(str(tag).split())
        if tag and tag.casefold() not in seen:
            seen.add(tag.casefold())
            out.append(tag)
    return out


def read_label(run_dir: Path) -> dict:
    """{"name", "notes", "tags"} the user gave a run ('' and [] when none, or when label.json is
    damaged; a tags entry that is not a list of text is no tags)."""
    label, _ = layout.read_checked(Path(run_dir) / layout.LABEL, layout.LABEL_SCHEMA)
    tags = label.get("tags")
    tags = clean_tags(t[:MAX_TAG] for t in tags if isinstance(t, str)) if isinstance(tags, list) else []
    return {"name": " ".join(str(label.get("name") or "").split())[:layout.MAX_NAME],
            "notes": str(label.get("notes") or "")[:layout.MAX_NOTES], "tags": tags[:MAX_TAGS]}


def write_label(run_dir: Path, name: str, notes: str, tags: list[str] | None = None) -> dict:
    """Give a run a name, notes and tags (stored in its folder, atomically); returns what was stored.
    `tags` None keeps the run's tags. Bundled (read-only) runs cannot be labelled."""
    run_dir = Path(run_dir)
    if layout.is_read_only(run_dir):
        raise layout.RunError(f"{run_dir.name} is bundled with the app and read-only: its name cannot change.")
    if not (run_dir / layout.CONFIG).exists():
        raise layout.RunError(f"{run_dir.name} is not a run folder (no {layout.CONFIG})")
    name = " ".join(str(name or "").split())
    if len(name) > layout.MAX_NAME:
        raise layout.RunError(f"A run name is at most {layout.MAX_NAME} characters; this one has {len(name)}.")
    notes = str(notes or "").strip()
    if len(notes) > layout.MAX_NOTES:
        raise layout.RunError(f"Notes are at most {layout.MAX_NOTES} characters; these have {len(notes)}.")
    tags = read_label(run_dir)["tags"] if tags is None else clean_tags(tags)
    long = next((t for t in tags if len(t) > MAX_TAG), None)
    if long:
        raise layout.RunError(f"A tag is at most {MAX_TAG} characters; {long[:40]!r} has {len(long)}. "
                              "Shorten it, or put the words in the notes.")
    if len(tags) > MAX_TAGS:
        raise layout.RunError(f"A run has at most {MAX_TAGS} tags; these are {len(tags)}. Remove some.")
    label = {"name": name, "notes": notes, "tags": tags}
    fileio.write_json_atomic(run_dir / layout.LABEL, label)
    return label


def display_name(row: dict) -> str:
    """How a run is named on screen: its label and id, or its id alone."""
    name = row.get("name") or ""
    return f"{name} ({row['run_id']})" if name else row["run_id"]


def data_words(config: dict, read_only: bool = False) -> str:
    """A run's data as a page names it: its description when the trainer recorded one, else the
    SOURCE it was given; for a bundled run (trained on another machine) a folder is named by its
    last parts only, never by that machine's path."""
    description = config.get("data_description")
    if isinstance(description, str) and description.strip():
        return description
    data = config.get("data")
    if not isinstance(data, str) or not data:
        return "not recorded"
    if read_only and _is_path(data):
        tail = _path_tail(data)
        return f"a folder {tail!r} on the machine it was trained on" if tail else "a folder"
    return data


def _is_path(data: str) -> bool:
    return "/" in data or "\\" in data


def _path_tail(data: str) -> str:
    """A folder's last two parts ('cifar10/train'): what names it without the machine's path."""
    parts = [p for p in data.replace("\\", "/").split("/") if p not in ("", ".", "..")]
    return "/".join(parts[-2:])


def shareable_config(config: dict, read_only: bool) -> dict:
    """A run's settings as the app hands them out (the Settings download): a bundled run's data
    folder, a path on the machine it was trained on, is named by its last parts and said to be so."""
    data = config.get("data")
    if not read_only or not isinstance(data, str) or not _is_path(data):
        return config
    return {**config, "data": _path_tail(data),
            "data_note": "the last parts of the folder this run was trained from, on the machine it was trained "
                         "on; give train your own copy of that data"}


def _whole(value) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


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
    read_only = layout.is_read_only(run_dir)
    headline = headline_words(headline_accuracy(run_dir, status))
    env = config.get("environment") if isinstance(config.get("environment"), dict) else {}
    replicas = env.get("replicas")
    workers = env.get("workers")
    return {
        "run_id": run_dir.name,
        "name": label["name"],
        "notes": label["notes"],
        "tags": label["tags"],
        "path": str(run_dir),
        "state": status.get("state") or ("damaged" if run["problems"] else "unknown"),
        "variant": config.get("variant"),
        "data": data_words(config, read_only),
        "epochs_done": int(len(metrics)),
        "epochs": config.get("epochs"),
        "steps_per_epoch": _whole(status.get("steps_per_epoch")) or _whole(config.get("steps_per_epoch")),
        "batch_size": _whole(config.get("batch_size")),
        "best_val_accuracy": best,
        "headline": headline,  # headline_words of the run's headline evaluation, None without one
        "duration_s": elapsed,
        "started": started,
        "read_only": read_only,
        "link": link,
        "has_model": run["model_ok"],
        "message": status.get("message", ""),
        "reason": status.get("reason"),
        "gpu": status.get("gpu"),
        "queued_at": status.get("queued_at"),
        "queue_position": None,  # set by list_runs for a run waiting in the queue
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


def headline_accuracy(run_dir: Path, status: dict | None = None) -> dict | None:
    """The one accuracy a run is quoted by (its `headline` evaluation, with what it was measured
    on), else its first recorded evaluation, else None. `status`: the run's status.json when the
    caller has read it already."""
    status = liveness.read_status(run_dir) if status is None else status
    evaluations = [e for e in status.get("evaluations") or [] if isinstance(e, dict)
                   and isinstance(e.get("accuracy"), (int, float))]
    return next((e for e in evaluations if e.get("headline")), evaluations[0] if evaluations else None)


SPLIT_WORDS = {"val": "validation", "train": "training", "all": "whole-folder"}


def headline_words(record: dict | None) -> dict | None:
    """A model's one headline figure in the words every page shows it with, from an evaluation
    record (`headline_accuracy`): `value` ('89.3%'), `label` ('Validation accuracy'), `sentence`
    (value, split, images, views and precision: the claim in full) and `measured_on`.

    The record's `description` says what the images are (and the views, when it does); without
    one, the split, the image count and the data name do. An evaluation is one view in float32
    unless its record says otherwise (`flip`, `precision`)."""
    if not record or not isinstance(record.get("accuracy"), (int, float)):
        return None
    split = SPLIT_WORDS.get(record.get("split"), record.get("split") or "held-out")
    n = record.get("n")
    images = f"{n:,} images" if isinstance(n, int) else "images"
    description = record.get("description")
    data = record.get("data")
    named = (f"the folder {_path_tail(data)!r}" if _is_path(data) else data) if isinstance(data, str) and data else ""
    measured_on = description or f"{images} of the {split} split of {named or 'its data'}"
    views = "" if description and "view" in description else (
        ", averaged with mirror images" if record.get("flip") else ", single view")
    precision = record.get("precision") or "float32"
    value = f"{record['accuracy']:.1%}"
    return {"value": value, "label": f"{split.capitalize()} accuracy", "measured_on": measured_on,
            "sentence": f"{value} {split} accuracy on {measured_on}{views}, {precision}"}


def _run_folders(folder: Path) -> list[Path]:
    return [p for p in sorted(folder.glob("*")) if (p / layout.CONFIG).exists()] if folder.is_dir() else []


def bundled_runs() -> list[Path]:
    """Run folders shipped with the app (read-only)."""
    return _run_folders(locations.BUNDLED_DIR)


def claims_runs() -> list[Path]:
    """The runs the paper's claims' bundled verdicts were measured from (read-only; locations.CLAIMS_DIR
    read at call time, so a test may point it elsewhere)."""
    return _run_folders(Path(locations.CLAIMS_DIR) / "runs")


def list_runs(root: str | os.PathLike | None = None, extra: list[Path] | None = None) -> list[dict]:
    """Every run folder under `root` (newest first), then `extra` folders (the bundled runs)
    whose ids no run under `root` has taken."""
    root = locations.runs_root(root)
    folders = []
    if root.is_dir():
        for path in root.iterdir():
            try:
                if path.is_dir() and (path / layout.CONFIG).exists():
                    folders.append(path)
            except OSError:  # a name the filesystem cannot stat (too long, a broken link loop)
                continue
    rows = [run_summary(p) for p in folders]
    rows.sort(key=lambda r: r["started"] or 0, reverse=True)
    positions = {e["run_id"]: e["position"] for e in queue_order(root, rows)[0]}
    for row in rows:
        row["queue_position"] = positions.get(row["run_id"])
    taken = {r["run_id"] for r in rows}
    return rows + [run_summary(p) for p in (extra or []) if (Path(p) / layout.CONFIG).exists() and Path(p).name not in taken]


def statuses(root: str | os.PathLike | None = None) -> dict[str, dict]:
    """{run id: status.json as checked and read through liveness} of every run folder directly under
    `root` (links left out: their runs live elsewhere). Lighter than list_runs: no metrics are read."""
    root = locations.runs_root(root)
    found = {}
    try:
        folders = list(root.iterdir()) if root.is_dir() else []
    except OSError:
        return found
    for path in folders:
        try:
            if path.is_symlink() or not path.is_dir() or not (path / layout.CONFIG).exists():
                continue
        except OSError:
            continue
        found[path.name] = liveness.read_status(path)
    return found


def queue_order(root: str | os.PathLike | None = None, rows: list[dict] | None = None) -> tuple[list[dict], list[str]]:
    """The runs folder's queue as everyone sees it: ([{"position" (from 1), "run_id", "run_dir", "gpu",
    "queued_at", "state"}], what was wrong with queue.json). The order is queue.json's; an entry whose
    folder is gone or no longer queued is left out. A queue.json that cannot be read is rebuilt here
    from the run folders in state queued, oldest first, and said so. Returns at once for an empty
    queue. `rows`: the runs' summaries when the caller has them (list_runs), else the folders are read."""
    root = locations.runs_root(root)
    entries, problems = layout.read_queue(root)
    if entries == []:
        return [], problems
    if rows is not None:
        queued = {r["run_id"]: {"gpu": r.get("gpu"), "queued_at": r.get("queued_at")} for r in rows
                  if r.get("state") == layout.QUEUED and not r.get("read_only")}
    else:
        queued = {run_id: status for run_id, status in statuses(root).items()
                  if status.get("state") == layout.QUEUED}
    if entries is None:
        entries = sorted(({"run_id": run_id, "gpu": s.get("gpu"), "queued_at": s.get("queued_at")}
                          for run_id, s in queued.items()), key=lambda e: (e["queued_at"] or 0, e["run_id"]))
        problems.append(f"{layout.QUEUE} was rebuilt from the {len(entries)} run folder"
                        f"{'' if len(entries) == 1 else 's'} in state queued, oldest first")
    order = [{"run_id": e["run_id"], "run_dir": str(root / e["run_id"]), "gpu": e["gpu"], "queued_at": e["queued_at"],
              "state": layout.QUEUED} for e in entries if e["run_id"] in queued]
    for position, entry in enumerate(order, 1):
        entry["position"] = position
    return order, problems


def all_runs(root: str | os.PathLike | None = None, claims: bool = False) -> list[dict]:
    """The user's runs, then the bundled ones (a user run with the same id wins); with `claims`, the
    bundled runs of the paper's claims too."""
    return list_runs(root, extra=bundled_runs() + (claims_runs() if claims else []))


def filter_runs(rows: list[dict], text: str = "", tags=(), states=(), variants=()) -> list[dict]:
    """The runs (run_summary rows) that match every filter given: `text` in the id, name, notes,
    tags, variant or data (any case; every word of it somewhere), one of `tags` at least, a state of
    `states`, a variant of `variants`. An empty filter lets every run through."""
    words = text.casefold().split()
    wanted = {t.casefold() for t in tags}
    out = []
    for row in rows:
        if states and row.get("state") not in states:
            continue
        if variants and row.get("variant") not in variants:
            continue
        if wanted and not wanted & {t.casefold() for t in row.get("tags") or []}:
            continue
        if words:
            haystack = " ".join(str(row.get(k) or "") for k in ("run_id", "name", "notes", "variant", "data"))
            haystack = (haystack + " " + " ".join(row.get("tags") or [])).casefold()
            if not all(w in haystack for w in words):
                continue
        out.append(row)
    return out


def find_run(run_id: str, root: str | os.PathLike | None = None) -> Path | None:
    """The folder of a run id from the user (URL, widget): a run under the root, else a bundled run."""
    try:
        path = layout.resolve_run(locations.runs_root(root), run_id)
        if (path / layout.CONFIG).exists():
            return path
    except (layout.RunError, OSError):
        return None
    return next((p for p in bundled_runs() + claims_runs() if p.name == run_id), None)


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
        raise layout.ActiveRunError(
            f"{what}. One run trains at a time: stop it on the Train page or with `python -m alexnet_core stop "
            f"{run['path']}`, or wait for it to finish.")


def create_run(root: str | os.PathLike, run_id: str, config: dict) -> Path:
    root = locations.runs_root(root)
    layout.check_runs_root(root)
    path = layout.resolve_run(root, run_id)
    root.mkdir(parents=True, exist_ok=True)
    try:
        path.mkdir()  # atomic: of two creators of one id, one gets the folder
    except FileExistsError:
        raise layout.RunError(f"Run {run_id!r} already exists in {path.parent}") from None
    (path / layout.CHECKPOINTS).mkdir()
    fileio.write_json_atomic(path / layout.CONFIG, config)
    liveness.write_status(path, state="created", message="Created; training has not started yet.", epoch=0,
                 started=time.time())
    return path


def delete_run(root: str | os.PathLike, run_id: str) -> None:
    path = layout.resolve_run(locations.runs_root(root), run_id)
    if path.is_symlink():  # a run linked in from elsewhere: remove the link, never what it points to
        path.unlink()
        return
    if not (path / layout.CONFIG).exists():
        raise layout.RunError(f"No run {run_id!r} in {path.parent}")
    if layout.is_read_only(path):
        raise layout.RunError(f"Run {run_id!r} is bundled with the app and cannot be deleted")
    state = liveness.read_status(path).get("state")
    if state in layout.ACTIVE_STATES:
        raise layout.RunError(f"Run {run_id!r} is still training: stop it first")
    if state == layout.QUEUED:
        raise layout.RunError(f"Run {run_id!r} is waiting in the queue: cancel it first (Train page, or "
                              f"`python -m alexnet_core queue cancel {run_id}`)")
    shutil.rmtree(path)
