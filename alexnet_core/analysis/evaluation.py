"""Evaluation: predictions, confusion matrix, per-class report, top-k, mistakes.

Results are cached (store.cache: in the run's eval/ folder, or under the runs root for a
read-only bundled run) keyed by the model file's fingerprint and the data, so reopening a page
is instant.
"""

from __future__ import annotations

# Imports inside functions are deliberate: TensorFlow and Keras, the modules that reach them
# and pandas, scikit-learn load on first use, so importing this module
# (the app's pages, the command line) stays light.
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from alexnet_core.inputs.data import DataError, DataSource, Split, load_source
from alexnet_core.predict.inference import LoadedModel
from alexnet_core.store import cache

BATCH = 256


@dataclass
class Evaluation:
    classes: list[str]  # the model's classes: axes of the confusion matrix
    probs: np.ndarray  # (n, classes)
    labels: np.ndarray  # (n,) index into classes
    paths: list[str] | None  # image files, when the data came from a folder
    source: str
    split: str
    note: str = ""  # what the data loader left out (empty class folders)

    @property
    def n(self) -> int:
        return int(len(self.labels))

    @property
    def predicted(self) -> np.ndarray:
        return self.probs.argmax(axis=1)

    @property
    def confidence(self) -> np.ndarray:
        return self.probs.max(axis=1)

    def accuracy(self) -> float:
        return float((self.predicted == self.labels).mean()) if self.n else float("nan")

    def top_k_accuracy(self, k: int = 5) -> float:
        if not self.n:
            return float("nan")
        top = np.argsort(-self.probs, axis=1)[:, :k]
        return float((top == self.labels[:, None]).any(axis=1).mean())

    def confusion_matrix(self) -> np.ndarray:
        from sklearn.metrics import confusion_matrix

        return confusion_matrix(self.labels, self.predicted, labels=list(range(len(self.classes))))

    def report(self):
        """Per-class precision, recall, F1 and support (scikit-learn), for classes in the data."""
        import pandas as pd
        from sklearn.metrics import precision_recall_fscore_support

        present = sorted(set(self.labels.tolist()))
        p, r, f, s = precision_recall_fscore_support(self.labels, self.predicted, labels=present, zero_division=0)
        return pd.DataFrame({"class": [self.classes[i] for i in present], "precision": p, "recall": r,
                             "f1": f, "support": s})

    def cell(self, true: int, predicted: int) -> np.ndarray:
        """Indices of the images of one confusion-matrix cell, most confident first."""
        idx = np.flatnonzero((self.labels == true) & (self.predicted == predicted))
        return idx[np.argsort(-self.confidence[idx])]

    def mistakes(self, limit: int = 24) -> np.ndarray:
        idx = np.flatnonzero(self.labels != self.predicted)
        return idx[np.argsort(-self.confidence[idx])][:limit]

    def images(self, indices, val_split: float = 0.1) -> list[np.ndarray]:
        """The original pixels of some evaluated images (for display).

        Indices are positions in this evaluation, which skips files the pipeline could not
        decode, so images come from `paths`, never from the split's file list.
        """
        from alexnet_core.inputs.images import read_image

        if self.paths is not None:
            return [read_image(self.paths[i]) for i in indices]
        images = load_source(self.source, val_split).split(self.split).images  # in memory: nothing skipped
        return [images[i] for i in indices]

    def summary(self) -> dict:
        """The `evaluate --json` document (contract in docs/ARCHITECTURE.md)."""
        return {"n": self.n, "accuracy": self.accuracy(), "top5_accuracy": self.top_k_accuracy(5),
                "classes": list(self.classes), "confusion_matrix": self.confusion_matrix().tolist()}


def default_split(source: DataSource) -> str:
    if source.test is not None and len(source.test):
        return "test"
    return "val" if source.val is not None and len(source.val) else "train"


def map_labels(data_classes: list[str], model_classes: list[str], labels: np.ndarray) -> np.ndarray:
    """Folder class names -> the model's class indices, by name (never by position)."""
    unknown = [c for c in data_classes if c not in model_classes]
    if unknown:
        raise DataError(f"The model does not know the class{'es' if len(unknown) > 1 else ''} "
                        f"{', '.join(repr(c) for c in unknown)}. It knows: {', '.join(model_classes)}")
    lookup = np.array([model_classes.index(c) for c in data_classes], dtype=np.int64)
    return lookup[labels]


def _cache_path(loaded: LoadedModel, source: str, split: Split, split_name: str, flip: bool) -> Path:
    name = cache.key(cache.model_fingerprint(loaded.path), source, split_name, flip, len(split),
                     split.paths[:3] + split.paths[-3:] if split.paths else None)
    return cache.folder(loaded.run_dir) / f"{name}.npz"


def _predict(loaded: LoadedModel, split: Split, flip: bool, progress=None):
    """Probabilities for every readable image; returns (probs, kept indices)."""
    from alexnet_core.inputs.data import model_pixels
    from alexnet_core.predict.inference import make_forward

    n = len(split)
    forward = make_forward(loaded, flip)
    probs, kept, done = [], [], 0
    for idx, images in model_pixels(split, loaded.input_size, batch=BATCH):
        probs.append(forward(images).numpy())
        kept.append(idx.numpy())
        done += len(idx)
        if progress:
            progress(done, n)
    if not probs:
        return np.zeros((0, len(loaded.class_names)), np.float32), np.zeros(0, np.int64)
    return np.concatenate(probs), np.concatenate(kept)


def evaluate(loaded: LoadedModel, source: str, split: str | None = None, flip: bool = False,
             val_split: float = 0.1, progress=None, use_cache: bool = True) -> Evaluation:
    data = load_source(source, val_split)
    split_name = split or default_split(data)
    part = data.split(split_name)
    labels = map_labels(data.class_names, loaded.class_names, part.labels)
    path = _cache_path(loaded, source, part, split_name, flip)

    def compute() -> dict:
        probs, kept = _predict(loaded, part, flip, progress)
        return {"probs": probs, "kept": kept}

    saved, replaced = cache.load_or_compute(path, lambda p: read_cache(p, len(part), len(loaded.class_names)),
                                            compute, use_cache)
    probs, kept = saved["probs"], saved["kept"]
    note = data.empty_note()
    if replaced:
        note = " ".join(filter(None, [note, f"The saved evaluation ({path.name}) was damaged or did not match "
                                            "this data: evaluated again."]))
    return Evaluation(loaded.class_names, probs, labels[kept],
                      [part.paths[i] for i in kept] if part.paths else None, source, split_name, note)


def read_cache(path: Path, images: int, classes: int) -> dict | None:
    """{"probs", "kept"} of a cached evaluation of `images` images by a model of `classes` classes,
    or None when the file is missing, damaged or does not describe them (then it is evaluated
    again): no more is unpacked than such an evaluation holds."""

    def check(arrays: dict) -> dict | None:
        probs, kept = arrays["probs"], arrays["kept"]
        if probs.shape != (len(kept), classes) or not np.all(np.isfinite(probs)):
            return None
        if len(kept) and (kept[0] < 0 or kept[-1] >= images or np.any(np.diff(kept) <= 0)):
            return None  # positions in the split, in order, each once
        return {"probs": probs, "kept": kept.astype(np.int64)}

    return cache.read(path, {"probs": ((images, classes), "f", 4), "kept": ((images,), "iu")}, check)
