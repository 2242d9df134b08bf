"""What a data source is, whatever it is read from: `DataSource` (its classes and splits),
`Split` (file paths, prepared-record paths or in-memory images, with labels) and `DataError`.

The readers build these: inputs/data.py (CIFAR-10, image folders, the bundled sample) and
inputs/prepared.py (a prepared folder of TFRecord shards). Imports nothing else of the package
but the error base, so each reader can use it without importing the others.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from alexnet_core.errors import AlexNetError

SPLITS = ("train", "val", "test")


class DataError(AlexNetError, ValueError):
    """Data that cannot be trained or evaluated on; the message says what to fix."""


@dataclass
class Split:
    """Either file paths or in-memory uint8 images, with integer labels. With `records`, the
    paths are record paths of a prepared folder ("<shard>.tfrecord#<index>", inputs/prepared.py)."""

    labels: np.ndarray
    paths: list[str] | None = None
    images: np.ndarray | None = None
    records: bool = False

    def __len__(self) -> int:
        return len(self.labels)

    def first_per_class(self, count: int) -> Split:
        """The first `count` images of each class, in the split's order (its files' order by name)."""
        keep = np.sort(np.concatenate([np.flatnonzero(self.labels == label)[:count]
                                       for label in np.unique(self.labels)]))
        return Split(self.labels[keep], paths=None if self.paths is None else [self.paths[i] for i in keep],
                     images=None if self.images is None else self.images[keep], records=self.records)


@dataclass
class DataSource:
    name: str
    class_names: list[str]
    train: Split | None = None
    val: Split | None = None
    test: Split | None = None
    skipped: dict[str, int] = field(default_factory=dict)  # unreadable files per split
    description: str = ""
    empty_classes: list[str] = field(default_factory=list)  # class folders left out: no readable image
    class_words: dict[str, str] = field(default_factory=dict)  # folder name -> words (e.g. ImageNet's wnids)

    def empty_note(self) -> str:
        """A sentence about the class folders left out, or ''."""
        if not self.empty_classes:
            return ""
        names = ", ".join(f"'{n}'" for n in self.empty_classes[:8]) + (" ..." if len(self.empty_classes) > 8 else "")
        return (f"Left out {len(self.empty_classes)} class folder{'s' if len(self.empty_classes) > 1 else ''} "
                f"with no readable image ({names}): add JPEG, PNG, GIF, BMP or WebP images to include them.")

    def split(self, name: str) -> Split:
        if name == "all":
            parts = [s for s in (self.train, self.val, self.test) if s is not None]
            if all(p.paths is not None for p in parts):
                return Split(np.concatenate([p.labels for p in parts]), paths=sum((p.paths for p in parts), []),
                             records=all(p.records for p in parts))
            return Split(np.concatenate([p.labels for p in parts]), images=np.concatenate([p.images for p in parts]))
        part = getattr(self, name, None)
        if part is None or len(part) == 0:
            available = [s for s in SPLITS if getattr(self, s) is not None and len(getattr(self, s))]
            raise DataError(f"{self.name} has no {name!r} split. Available: {', '.join(available) or 'none'}")
        return part
