"""Checkpoints committed atomically: one commit record per epoch.

At the end of epoch N the trainer
  1. saves the model and its optimizer to checkpoints/epoch-N.keras (temp file, fsync, rename);
  2. writes checkpoints/state.json, the commit record: completed epochs, the optimizer's step
     count, every epoch's metrics, and which epoch files are `last` and `best`. Renaming this one
     small file over the old one is the commit: before it, epoch N does not exist;
  3. publishes the commit: last.keras and best.keras (hard links, else copies, each renamed into
     place), metrics.csv rewritten from the record, epoch files no longer named removed.

A kill at any instant leaves either the old commit or the new one, and `recover()` (run by
every trainer before it starts) deletes temp files and redoes step 3, so last.keras, best.keras,
metrics.csv and model.keras always match the record.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from alexnet_core.store import fileio, layout

FORMAT = 2


def epoch_file(epoch: int) -> str:
    return f"epoch-{epoch:05d}.keras"


def _well_formed(record) -> bool:
    if not isinstance(record, dict):
        return False
    if not record:
        return True
    if record.get("format") != FORMAT:  # an older trainer's {"completed_epochs": N}
        return isinstance(record.get("completed_epochs"), int)
    return (isinstance(record.get("completed_epochs"), int) and isinstance(record.get("last"), str)
            and "/" not in record["last"] and isinstance(record.get("metrics"), list)
            and all(isinstance(row, dict) for row in record["metrics"])
            and isinstance(record.get("iterations"), int))


class CheckpointStore:
    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.dir = self.run_dir / layout.CHECKPOINTS
        self.record = {}

    # --- reading --------------------------------------------------------------------------------

    @property
    def completed_epochs(self) -> int:
        return int(self.record.get("completed_epochs", 0))

    @property
    def metrics(self) -> list[dict]:
        return list(self.record.get("metrics", []))

    @property
    def iterations(self) -> int:
        return int(self.record.get("iterations") or 0)

    def latest_path(self, record: dict | None = None) -> Path | None:
        """The checkpoint of the last commit (of `record`, else the store's), if it exists."""
        name = (self.record if record is None else record).get("last")
        return self.dir / name if name and (self.dir / name).exists() else None

    def recover(self) -> dict:
        """Read the last commit, clear what interrupted writes left, and make every published file
        match the commit again. Returns the record ({} for a run with no completed epoch)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        layout.remove_run_leftovers(self.run_dir)  # only this trainer writes there
        path = self.dir / layout.STATE
        record = fileio.read_json(path, None) if path.exists() else {}
        if not _well_formed(record):
            raise layout.RunError(f"{path} (the record of completed epochs) is damaged, so this run cannot be resumed "
                                f"safely. Start a new run; its {layout.MODEL} and checkpoints stay usable.")
        if record and record.get("format") != FORMAT:
            record = self._from_legacy(record)
        if record and not self.latest_path(record):
            raise layout.RunError(f"{self.dir / layout.STATE} names {record.get('last')!r}, which is missing: "
                                "the run's checkpoints are damaged. Start a new run.")
        self.record = record
        if record:
            self.publish()
        return record

    def _from_legacy(self, old: dict) -> dict:
        """A run written by the fit()-based trainer: last.keras + {"completed_epochs": N}."""
        done = int(old.get("completed_epochs", 0) or 0)
        if not done or not (self.dir / layout.LAST).exists():
            return {}
        frame = layout.read_metrics(self.run_dir)
        rows = []
        for row in frame.to_dict("records")[:done]:
            rows.append({**row, "epoch": int(row["epoch"]) - 1})
        return {"format": FORMAT, "completed_epochs": done, "iterations": None, "last": layout.LAST,
                "best": layout.BEST if (self.dir / layout.BEST).exists() else layout.LAST,
                "metrics": rows, "committed": time.time()}

    # --- writing --------------------------------------------------------------------------------

    def commit(self, model, epoch: int, row: dict, monitor: str, mode: str, iterations: int, extra=None) -> bool:
        """Commit completed epoch `epoch` (from 1) with its metrics `row`; True if it is the best."""
        name = epoch_file(epoch)
        with fileio.atomic_write(self.dir / name, label="checkpoint", suffix=".keras") as tmp:
            model.save(tmp)
        value = row.get(monitor)
        best_value = self.record.get("best_value")
        better = value is not None and (best_value is None or (value > best_value if mode == "max" else value < best_value))
        record = {
            "format": FORMAT,
            "completed_epochs": epoch,
            "iterations": int(iterations),
            "last": name,
            "best": name if better else self.record.get("best", name),
            "best_epoch": epoch if better else self.record.get("best_epoch", epoch),
            "best_value": value if better else best_value,
            "monitor": monitor,
            "metrics": [*self.metrics, row],
            "committed": time.time(),
            **(extra or {}),
        }
        with fileio.atomic_write(self.dir / layout.STATE, label="state") as tmp:
            tmp.write_text(json.dumps(record, indent=1, default=float), encoding="utf-8")
        self.record = record
        self.publish()
        return better

    def publish(self) -> None:
        """Make last.keras, best.keras and metrics.csv match the commit; drop unnamed epoch files."""
        record = self.record
        last, best = self.dir / record["last"], self.dir / record.get("best", record["last"])
        if not best.exists():
            best = last
        if record["last"] != layout.LAST:
            fileio.link_or_copy(last, self.dir / layout.LAST)
        if best.name != layout.BEST:
            fileio.link_or_copy(best, self.dir / layout.BEST)
        with fileio.atomic_write(self.run_dir / layout.METRICS, label="metrics") as tmp:
            tmp.write_text(layout.metrics_csv(record.get("metrics", [])), encoding="utf-8")
        keep = {last.name, best.name, layout.LAST, layout.BEST}
        for path in self.dir.glob("epoch-*.keras"):
            if path.name not in keep:
                path.unlink(missing_ok=True)

    def publish_model(self) -> Path | None:
        """model.keras := the best checkpoint (or the last), atomically. None before any commit."""
        if not self.record:
            return None
        best = self.dir / self.record.get("best", self.record["last"])
        source = best if best.exists() else self.dir / self.record["last"]
        fileio.link_or_copy(source, self.run_dir / layout.MODEL)
        return self.run_dir / layout.MODEL
