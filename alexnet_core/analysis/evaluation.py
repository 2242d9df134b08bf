"""Evaluation: predictions, confusion matrix, per-class report, top-k, mistakes, the most
confused pairs.

The data's classes are mapped to the model's by name (ImageNet's wnids: a folder holding a few
of the 1,000 classes), never by folder order. Images reach the model as Classify gives them
(the model's recorded preprocessing, its ImageNet recipe included: data.model_pixels).
Results are cached (store.cache: in the run's eval/ folder, or under the runs root for a
read-only bundled run or an installed model) keyed by the model file's fingerprint, its
preprocessing and the data, so reopening a page is instant.

At 1,000 classes an evaluation holds n x 1,000 float32 probabilities (4 KB an image: 40 MB for
10,000 images, on disk and in memory alike); the confusion matrix is 1,000 x 1,000 counts (8 MB),
computed once per evaluation.
"""

from __future__ import annotations

# Imports inside functions are deliberate: TensorFlow and Keras, the modules that reach them
# and pandas, scikit-learn load on first use, so importing this module
# (the app's pages, the command line) stays light.
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from alexnet_core.inputs.data import DataError, DataSource, Split, load_source
from alexnet_core.predict.inference import LoadedModel
from alexnet_core.store import cache

BATCH = 256
LARGE_BATCH = 32  # images a batch for a model of LARGE_INPUT px or more (224 px: 19 MB of pixels, not 154)
LARGE_INPUT = 128


@dataclass
class Evaluation:
    classes: list[str]  # the model's classes: axes of the confusion matrix
    probs: np.ndarray  # (n, classes)
    labels: np.ndarray  # (n,) index into classes
    paths: list[str] | None  # image files, when the data came from a folder
    source: str
    split: str
    note: str = ""  # what the data loader left out (empty class folders)
    words: dict = field(default_factory=dict)  # class name -> words (ImageNet: "tench, Tinca tinca")
    val_split: float = 0.1  # the share of a folder held out as its validation split (a run's own, for its data)
    _matrix: np.ndarray | None = field(default=None, repr=False, compare=False)

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
        """The share of images whose true class is among the k most probable: fewer than k
        classes score above it (one pass, no sort of the n x classes probabilities)."""
        if not self.n:
            return float("nan")
        truth = self.probs[np.arange(self.n), self.labels][:, None]
        return float(((self.probs > truth).sum(axis=1) < k).mean())

    def confusion_matrix(self) -> np.ndarray:
        """Counts, rows true classes and columns predicted, over all the model's classes
        (scikit-learn); computed once per evaluation (a copy is returned)."""
        if self._matrix is None:
            from sklearn.metrics import confusion_matrix

            self._matrix = confusion_matrix(self.labels, self.predicted, labels=list(range(len(self.classes))))
        return self._matrix.copy()

    def label(self, index: int) -> str:
        """A class as people read it: its name, with its first words when it has some
        ("n01440764 tench")."""
        name = self.classes[index]
        words = self.words.get(name)
        return f"{name} {words.split(',')[0].strip()}" if words and words.split(",")[0].strip() != name else name

    def present(self) -> list[int]:
        """The classes that have images in the data (model class indices, in order)."""
        return sorted(set(self.labels.tolist()))

    def report(self):
        """Per-class precision, recall, F1 and support (scikit-learn), for classes in the data,
        with each class's words."""
        import pandas as pd
        from sklearn.metrics import precision_recall_fscore_support

        present = self.present()
        p, r, f, s = precision_recall_fscore_support(self.labels, self.predicted, labels=present, zero_division=0)
        return pd.DataFrame({"class": [self.classes[i] for i in present],
                             "words": [self.words.get(self.classes[i], "") for i in present],
                             "precision": p, "recall": r, "f1": f, "support": s})

    def confused_pairs(self, limit: int = 20):
        """The most confused pairs: the largest off-diagonal cells of the confusion matrix, as a
        table (true class and its words, predicted class and its words, count, share of the true
        class's images, and the model class indices `true_index`, `predicted_index`)."""
        import pandas as pd

        cm = self.confusion_matrix()
        np.fill_diagonal(cm, 0)
        true, predicted = np.nonzero(cm)
        counts = cm[true, predicted]
        order = np.lexsort((predicted, true, -counts))[:max(0, limit)]
        true, predicted, counts = true[order], predicted[order], counts[order]
        support = np.bincount(self.labels, minlength=len(self.classes))
        return pd.DataFrame({
            "true": [self.classes[i] for i in true], "true words": [self.words.get(self.classes[i], "") for i in true],
            "predicted": [self.classes[j] for j in predicted],
            "predicted words": [self.words.get(self.classes[j], "") for j in predicted],
            "count": counts.astype(int), "share": counts / np.maximum(support[true], 1),
            "true_index": true.astype(int), "predicted_index": predicted.astype(int)})

    def cell(self, true: int, predicted: int) -> np.ndarray:
        """Indices of the images of one confusion-matrix cell, most confident first."""
        idx = np.flatnonzero((self.labels == true) & (self.predicted == predicted))
        return idx[np.argsort(-self.confidence[idx])]

    def mistakes(self, limit: int = 24) -> np.ndarray:
        idx = np.flatnonzero(self.labels != self.predicted)
        return idx[np.argsort(-self.confidence[idx])][:limit]

    def images(self, indices, val_split: float | None = None) -> list[np.ndarray]:
        """The original pixels of some evaluated images (for display); in-memory data split as it
        was evaluated (`val_split`, by default the evaluation's own).

        Indices are positions in this evaluation, which skips files the pipeline could not
        decode, so images come from `paths`, never from the split's file list.
        """
        from alexnet_core.inputs.images import read_image

        if self.paths is not None:
            return [read_image(self.paths[i]) for i in indices]
        held_out = self.val_split if val_split is None else val_split
        images = load_source(self.source, held_out).split(self.split).images  # in memory: nothing skipped
        return [images[i] for i in indices]

    def summary(self) -> dict:
        """The `evaluate --json` document (contract in docs/ARCHITECTURE.md)."""
        return {"n": self.n, "accuracy": self.accuracy(), "top5_accuracy": self.top_k_accuracy(5),
                "classes": list(self.classes), "confusion_matrix": self.confusion_matrix().tolist()}


def default_split(source: DataSource) -> str:
    if source.test is not None and len(source.test):
        return "test"
    return "val" if source.val is not None and len(source.val) else "train"


def _listed(names, limit: int = 8) -> str:
    names = list(names)
    return ", ".join(repr(n) for n in names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def map_labels(data_classes: list[str], model_classes: list[str], labels: np.ndarray,
               words: dict | None = None) -> np.ndarray:
    """Folder class names -> the model's class indices, by name (never by position): a folder
    of ImageNet wnids holding a few of a 1,000-class model's classes maps each to its own."""
    index = {name: i for i, name in enumerate(model_classes)}
    unknown = [c for c in data_classes if c not in index]
    if unknown:
        words = words or {}
        known = ", ".join(f"{n!r} ({words[n].split(',')[0]})" if words.get(n) else repr(n) for n in model_classes[:5])
        more = f" and {len(model_classes) - 5:,} more" if len(model_classes) > 5 else ""
        some = f" ({len(unknown)} of the data's {len(data_classes)} class folders)" \
            if len(unknown) < len(data_classes) else ""
        raise DataError(f"The model does not know the class{'es' if len(unknown) > 1 else ''} {_listed(unknown)}"
                        f"{some}. "
                        f"It knows {len(model_classes):,} classes: {known}{more}. Class folders are matched to "
                        "the model's classes by name: name each folder as the model names its class (an ImageNet "
                        "model: the wnid, e.g. val/n01440764/), or evaluate a model trained on these classes.")
    lookup = np.array([index[c] for c in data_classes], dtype=np.int64)
    return lookup[labels]


def _cache_path(loaded: LoadedModel, source: str, split: Split, split_name: str, flip: bool) -> Path:
    name = cache.key(cache.model_fingerprint(loaded.path), source, split_name, flip, len(split),
                     split.paths[:3] + split.paths[-3:] if split.paths else None, loaded.preprocessing)
    return cache.folder(loaded.run_dir) / f"{name}.npz"


def _predict(loaded: LoadedModel, split: Split, flip: bool, progress=None):
    """Probabilities for every readable image; returns (probs, kept indices)."""
    from alexnet_core.inputs.data import model_pixels
    from alexnet_core.predict.inference import make_forward

    n = len(split)
    forward = make_forward(loaded, flip)
    probs, kept, done = [], [], 0
    batch = LARGE_BATCH if loaded.input_size >= LARGE_INPUT else BATCH
    for idx, images in model_pixels(split, loaded.input_size, batch=batch, record=loaded.preprocessing):
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
    labels = map_labels(data.class_names, loaded.class_names, part.labels, loaded.class_words)
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
    words = {**{c: w for c, w in data.class_words.items() if c in set(loaded.class_names)}, **loaded.class_words}
    return Evaluation(loaded.class_names, probs, labels[kept],
                      [part.paths[i] for i in kept] if part.paths else None, source, split_name, note, words, val_split)


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
