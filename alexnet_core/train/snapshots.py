"""Epoch snapshots: what a run's model looked like after every epoch, small enough to keep all.

After each epoch the trainer writes `RUN/snapshots/epoch-NNNN.npz` (before it commits the epoch,
so a committed epoch always has its snapshot):

- `labels`, `predicted`: every validation image's true and predicted class (int16), enough to
  rebuild that epoch's confusion matrix and per-class accuracy;
- `conv1`: conv1's kernels (float16, height x width x channels x filters; explain.kernel_grid
  draws them);
- `probe_top`, `probe_prob`: the top-5 classes and probabilities of the probe images.

`RUN/snapshots/probe.npz` holds the probe itself, written once: up to 32 validation images
(`images`, uint8 thumbnails), spread over the classes, with their `labels`. The run folder stays
self-contained: the app shows the probe without the training data.

Every file is written atomically and read defensively: a damaged or foreign file is left out
with a note, never an exception, and no file is unpacked beyond what a snapshot can hold (the
limits below), however large its arrays claim to be. No TensorFlow.
"""

from __future__ import annotations

# Imports inside functions are deliberate: TensorFlow and Keras, the modules that reach them
# and scikit-learn load on first use, so importing this module
# (the app's pages, the command line) stays light.
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from alexnet_core.store import fileio, layout

FOLDER = layout.SNAPSHOTS
PROBE = "probe.npz"
PROBE_SIZE = 32  # images in the probe set
EPOCH_FILE = re.compile(r"^epoch-(\d{4,6})\.npz$")
KEYS = ("labels", "predicted", "conv1", "probe_top", "probe_prob")
TOP = 5  # classes recorded per probe image
# What a snapshot can hold, checked before a file is unpacked: a file over them is damaged.
MAX_IMAGES = 2**21  # validation images (ImageNet's 50,000 fit forty times over)
MAX_KERNEL = 15  # conv1's kernel side (the paper's is 11)
MAX_FILTERS = 1024  # conv1's kernels (the paper's 96 at twice the width is 192)
MAX_TIMELINE_BYTES = 512 * 2**20  # every epoch's arrays together, as read into memory


def limits(input_size: int | None = None) -> dict:
    """fileio.load_npz limits of probe.npz and an epoch's file: each array's most per axis and its kinds."""
    from alexnet_core.models.variants import MAX_INPUT_SIZE  # a probe image's side when the run's config does not say

    side = input_size if isinstance(input_size, int) and 0 < input_size <= MAX_INPUT_SIZE else MAX_INPUT_SIZE
    return {"labels": ((MAX_IMAGES,), "iu", 2), "predicted": ((MAX_IMAGES,), "iu", 2),
            "conv1": ((MAX_KERNEL, MAX_KERNEL, 3, MAX_FILTERS), "f", 2),
            "probe_top": ((PROBE_SIZE, TOP), "iu", 2), "probe_prob": ((PROBE_SIZE, TOP), "f", 2),
            "images": ((PROBE_SIZE, side, side, 3), "u", 1)}


def epoch_path(run_dir: Path, epoch: int) -> Path:
    return Path(run_dir) / FOLDER / f"epoch-{epoch:04d}.npz"


def choose_probe(labels: np.ndarray, count: int = PROBE_SIZE) -> np.ndarray:
    """Indices of up to `count` images spread evenly over the classes (round-robin, each class's
    images in order): the same every time for the same labels."""
    labels = np.asarray(labels)
    queues = [list(np.flatnonzero(labels == c)) for c in np.unique(labels)]
    chosen: list[int] = []
    while len(chosen) < count and any(queues):
        for queue in queues:
            if queue and len(chosen) < count:
                chosen.append(int(queue.pop(0)))
    return np.array(sorted(chosen), dtype=np.int64)


def write_probe(run_dir: Path, images: np.ndarray, labels: np.ndarray) -> None:
    fileio.save_npz(Path(run_dir) / FOLDER / PROBE, "probe", images=np.asarray(images, dtype=np.uint8),
                  labels=np.asarray(labels, dtype=np.int16))


def write_epoch(run_dir: Path, epoch: int, labels, predicted, conv1, probe_top, probe_prob) -> Path:
    path = epoch_path(run_dir, epoch)
    fileio.save_npz(path, "snapshot", labels=np.asarray(labels, dtype=np.int16),
                  predicted=np.asarray(predicted, dtype=np.int16), conv1=np.asarray(conv1, dtype=np.float16),
                  probe_top=np.asarray(probe_top, dtype=np.int16), probe_prob=np.asarray(probe_prob, dtype=np.float16))
    return path


@dataclass
class Epoch:
    epoch: int
    labels: np.ndarray
    predicted: np.ndarray
    conv1: np.ndarray
    probe_top: np.ndarray
    probe_prob: np.ndarray

    def confusion(self, num_classes: int) -> np.ndarray:
        """Rows: true class, columns: predicted class (scikit-learn's layout)."""
        from sklearn.metrics import confusion_matrix

        return confusion_matrix(self.labels, self.predicted, labels=list(range(num_classes)))

    def accuracy(self) -> float:
        return float(np.mean(self.labels == self.predicted)) if len(self.labels) else float("nan")

    def per_class(self, num_classes: int) -> np.ndarray:
        """Each class's recall (NaN for a class without validation images)."""
        matrix = self.confusion(num_classes)
        totals = matrix.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(totals > 0, np.diag(matrix) / np.maximum(totals, 1), np.nan)


@dataclass
class Timeline:
    """A run's snapshots: the epochs in order, the probe, and what was left out and why."""

    epochs: list[Epoch] = field(default_factory=list)
    probe_images: np.ndarray | None = None
    probe_labels: np.ndarray | None = None
    notes: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.epochs)

    def numbers(self) -> list[int]:
        return [e.epoch for e in self.epochs]


def read_timeline(run_dir: Path, completed_epochs: int | None = None, num_classes: int | None = None) -> Timeline:
    """The snapshots of `run_dir`'s committed epochs (1..completed_epochs; None: all found).

    Files of an epoch that never committed (the trainer was stopped mid-epoch) are ignored; a
    damaged or inconsistent file is left out with a note naming it.
    """
    folder = Path(run_dir) / FOLDER
    timeline = Timeline()
    try:
        names = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
    except OSError as exc:
        timeline.notes.append(f"Could not read {folder}: {exc.strerror or exc}")
        return timeline
    preprocessing = fileio.read_object(Path(run_dir) / layout.CONFIG).get("preprocessing")
    bounds = limits(preprocessing.get("input_size") if isinstance(preprocessing, dict) else None)
    probe_bounds = {"images": bounds["images"], "labels": ((PROBE_SIZE,), "iu", 2)}
    probe = fileio.load_npz(folder / PROBE, ("images", "labels"), probe_bounds) if PROBE in names else None
    if probe is not None and probe["images"].shape[1] == probe["images"].shape[2] \
            and len(probe["images"]) == len(probe["labels"]):
        timeline.probe_images, timeline.probe_labels = probe["images"], probe["labels"].astype(int)
    elif PROBE in names:
        timeline.notes.append(f"Left out the probe images: {PROBE} is damaged.")
    held, over = 0, []
    for name in names:
        match = EPOCH_FILE.match(name)
        if not match:
            continue
        number = int(match.group(1))
        if completed_epochs is not None and not 1 <= number <= completed_epochs:
            continue
        if over:
            over.append(number)
            continue
        arrays = fileio.load_npz(folder / name, KEYS, bounds)
        if arrays is None or not _consistent(arrays, num_classes, timeline.probe_labels):
            timeline.notes.append(f"Left out epoch {number}: its snapshot ({name}) is damaged.")
            continue
        epoch = Epoch(number, *(arrays[k].astype(np.float32) if k in ("conv1", "probe_prob")
                                else arrays[k].astype(np.int64) for k in KEYS))
        held += sum(getattr(epoch, k).nbytes for k in KEYS)
        if held > MAX_TIMELINE_BYTES:
            over.append(number)
            continue
        timeline.epochs.append(epoch)
    if over:
        timeline.notes.append(f"Left out epoch{'s' if len(over) > 1 else ''} {over[0]}"
                              + (f"-{over[-1]}" if len(over) > 1 else "") + ": the snapshots hold more than "
                              f"{MAX_TIMELINE_BYTES // 2**20} MiB in all.")
    return timeline


def _consistent(arrays: dict, num_classes: int | None, probe_labels) -> bool:
    labels, predicted, conv1 = arrays["labels"], arrays["predicted"], arrays["conv1"]
    top, prob = arrays["probe_top"], arrays["probe_prob"]
    if labels.shape != predicted.shape or labels.ndim != 1 or conv1.ndim != 4 or top.shape != prob.shape:
        return False
    if probe_labels is not None and top.ndim == 2 and len(top) != len(probe_labels):
        return False
    if num_classes is not None:
        for values in (labels, predicted, top):
            if values.size and (values.min() < 0 or values.max() >= num_classes):
                return False
    return bool(np.all(np.isfinite(conv1)) and np.all(np.isfinite(prob)))


def folder_bytes(run_dir: Path) -> int:
    folder = Path(run_dir) / FOLDER
    return sum(p.stat().st_size for p in folder.glob("*.npz")) if folder.is_dir() else 0
