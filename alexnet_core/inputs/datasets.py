"""Datasets built in the app: named classes of images, saved as image folders under a data root.

    $ALEXNET_DATA_DIR (default ./data)/<dataset>/<class>/<sha1-16>.jpg

Every image is decoded through the same safe path as Classify (images.decode_image: size and
pixel limits, EXIF orientation, first frame only) and saved again as a fresh JPEG named by its
contents, so nothing of an uploaded file but its pixels reaches the disk and the same photo
added twice is kept once. `add_images` accounts for every photo of an upload: added, or
skipped with its reason (the per-upload limit, a full class, unreadable, already there, the class
gone from disk). Files put in a class folder by other means are checked with `image_problem`
(the same safe decoder) before anything shows them. Writes are atomic; names are checked before
they touch the disk. No Streamlit, no TensorFlow.
"""

from __future__ import annotations

# Imports inside functions are deliberate: Pillow loads on first use, so importing this module
# (the app's pages, the command line) stays light.
import hashlib
import io
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from alexnet_core.errors import AlexNetError
from alexnet_core.inputs.images import MAX_UPLOAD_FILES, ImageDecodeError, decode_image, read_image
from alexnet_core.locations import data_root
from alexnet_core.settings.config import ConfigError, TrainConfig
from alexnet_core.settings.recipes import get_recipe
from alexnet_core.store import fileio

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.-]{0,47}$")
MAX_SIDE = 512  # px: saved images are reduced to this (AlexNet sees at most 227)
MAX_CLASSES = 50
MAX_IMAGES_PER_CLASS = 2000
MIN_IMAGES_TO_TRAIN = 2  # per class: one for training, one for validation
QUALITY = 92


class DatasetError(AlexNetError, ValueError):
    """A name or an action the builder cannot take; the message says why and what to do."""


def check_name(name: str, what: str) -> str:
    """`name` stripped, if it is a safe folder name; DatasetError otherwise."""
    name = (name or "").strip()
    if not name:
        raise DatasetError(f"Give the {what} a name.")
    if not NAME.fullmatch(name) or name.endswith("."):
        raise DatasetError(f"{what.capitalize()} names use letters, digits, spaces, '-', '_' and '.', start with a "
                           f"letter or digit and have at most 48 characters: {name[:60]!r} does not.")
    return name


def _folders(path: Path) -> list[Path]:
    try:
        return sorted((p for p in path.iterdir() if p.is_dir() and not p.is_symlink() and NAME.fullmatch(p.name)),
                      key=lambda p: p.name.lower())
    except OSError:
        return []


def _prepared(folder: Path) -> bool:
    """A folder written by `prepare` (complete, or still being written): not one built here."""
    from alexnet_core.inputs.prepared_format import WORK_DIR, is_prepared

    return is_prepared(folder) or (folder / WORK_DIR).is_dir()


def list_datasets(root: Path | None = None) -> list[str]:
    """The datasets built on the Your classes page (prepared folders beside them are left out)."""
    return [p.name for p in _folders(root or data_root()) if not _prepared(p)]


def create_dataset(name: str, root: Path | None = None) -> Path:
    root = root or data_root()
    name = check_name(name, "dataset")
    if any(existing.name.lower() == name.lower() for existing in _folders(root)):
        raise DatasetError(f"There is already a dataset named {name!r}: pick it, or choose another name.")
    path = root / name
    path.mkdir(parents=True)
    return path


def classes(path: Path) -> dict[str, list[Path]]:
    """{class name: its image files, oldest first} of a dataset folder."""
    out = {}
    for folder in _folders(Path(path)):
        try:
            files = [f for f in folder.iterdir() if f.suffix.lower() in (".jpg", ".jpeg", ".png") and f.is_file()
                     and not f.name.startswith(".")]
        except OSError:
            files = []
        out[folder.name] = sorted(files, key=lambda f: (_mtime(f), f.name))
    return out


def _mtime(file: Path) -> float:
    """A file's modification time; 0 for one removed since it was listed."""
    try:
        return file.stat().st_mtime
    except OSError:
        return 0.0


def add_class(path: Path, name: str) -> Path:
    name = check_name(name, "class")
    existing = classes(path)
    if any(c.lower() == name.lower() for c in existing):
        raise DatasetError(f"The class {name!r} is already there.")
    if len(existing) >= MAX_CLASSES:
        raise DatasetError(f"A dataset built here holds at most {MAX_CLASSES} classes.")
    folder = Path(path) / name
    folder.mkdir()
    return folder


def remove_class(path: Path, name: str) -> None:
    folder = Path(path) / check_name(name, "class")
    if folder.is_dir() and not folder.is_symlink():
        shutil.rmtree(folder)


class ClassGone(DatasetError):
    """The class folder is no longer on disk (removed elsewhere while the page was open)."""


class ClassFull(DatasetError):
    """The class holds MAX_IMAGES_PER_CLASS images already."""


def _gone(class_name: str, folder: Path) -> str:
    return f"class {class_name} no longer exists on disk: there is no class folder {folder}"


def add_image(path: Path, class_name: str, data: bytes, file_name: str = "image") -> tuple[Path, bool]:
    """Decode `data` safely and save it as a new JPEG in the class folder: (file, whether it is
    new). ImageDecodeError (the message names the file) for anything that is not a usable image,
    ClassGone if the class folder is not there, ClassFull if the class is full."""
    from PIL import Image

    folder = Path(path) / check_name(class_name, "class")
    if not folder.is_dir():
        raise ClassGone(_gone(class_name, folder))
    pixels = decode_image(data, file_name)
    image = Image.fromarray(pixels)
    if max(image.size) > MAX_SIDE:
        image.thumbnail((MAX_SIDE, MAX_SIDE), Image.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=QUALITY)
    target = folder / f"{hashlib.sha1(np.asarray(image).tobytes()).hexdigest()[:16]}.jpg"
    if target.exists():
        return target, False
    if sum(1 for _ in folder.glob("*.jpg")) >= MAX_IMAGES_PER_CLASS:
        raise ClassFull(f"{class_name} already has {MAX_IMAGES_PER_CLASS} images, the most a class holds here.")
    fileio.write_bytes_atomic(target, buffer.getvalue())
    return target, True


# Why an upload was not saved (AddResult.skipped), in the order the page reports them.
SKIP_LIMIT = "over the limit"
SKIP_FULL = "class full"
SKIP_UNREADABLE = "unreadable"
SKIP_DUPLICATE = "already there"
SKIP_GONE = "class gone"


@dataclass
class AddResult:
    """What add_images did with each upload: the names saved, and (name, reason, detail) of each
    one not saved, reason one of the SKIP_* constants."""

    class_name: str
    added: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str, str]] = field(default_factory=list)

    @property
    def class_gone(self) -> bool:
        return any(reason == SKIP_GONE for _, reason, _ in self.skipped)

    def skipped_for(self, reason: str) -> list[tuple[str, str]]:
        return [(name, detail) for name, why, detail in self.skipped if why == reason]

    def lines(self) -> list[tuple[str, str]]:
        """The result in words: (kind, text) with kind "success", "warning" or "error"; every
        upload is either counted as added or named with the reason it was skipped."""
        n, k = len(self.added), len(self.skipped)
        added = f"{self.class_name}: added {n} image{'s' if n != 1 else ''}."
        if not k:
            out = [("success", added)]
        else:
            out = [("warning", f"{added} Skipped {k} of {n + k}, for the reason{'s' if k != 1 else ''} below.")]
        gone = self.skipped_for(SKIP_GONE)
        if gone:
            out.append(("error", f"{gone[0][1]}. Not saved: {_names(gone)}. Add the class again to keep them."))
        limit = self.skipped_for(SKIP_LIMIT)
        if limit:
            out.append(("warning", f"{len(limit)} over the limit of {MAX_UPLOAD_FILES} images per upload, not "
                                   f"saved: {_names(limit)}. Add them again in another batch."))
        full = self.skipped_for(SKIP_FULL)
        if full:
            out.append(("warning", f"{len(full)} not saved because {self.class_name} is full "
                                   f"({MAX_IMAGES_PER_CLASS} images, the most a class holds here): {_names(full)}."))
        duplicate = self.skipped_for(SKIP_DUPLICATE)
        if duplicate:
            out.append(("warning", f"{len(duplicate)} already there (the same picture is kept once): "
                                   + "; ".join(f"{name} ({detail})" for name, detail in duplicate[:8])
                                   + (f" and {len(duplicate) - 8} more" if len(duplicate) > 8 else "") + "."))
        for _, detail in self.skipped_for(SKIP_UNREADABLE)[:8]:
            out.append(("error", f"Unreadable, not saved: {detail}"))
        unreadable = self.skipped_for(SKIP_UNREADABLE)
        if len(unreadable) > 8:
            out.append(("error", f"{len(unreadable) - 8} more unreadable, not saved: {_names(unreadable[8:])}."))
        return out


def _names(items: list[tuple[str, str]], limit: int = 8) -> str:
    names = [name for name, _ in items]
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def add_images(path: Path, class_name: str, items, limit: int = MAX_UPLOAD_FILES) -> AddResult:
    """add_image for each (file name, bytes) of one upload, at most `limit` of them: an AddResult
    that accounts for every item (added, or skipped with its reason). Never raises for an item."""
    result = AddResult(class_name)
    folder = Path(path) / class_name
    saved = {}  # file saved by this upload -> the upload's name, to tell a repeat within the batch
    for index, (file_name, data) in enumerate(items):
        if index >= limit:
            result.skipped.append((file_name, SKIP_LIMIT, ""))
            continue
        try:
            target, new = add_image(path, class_name, data, file_name)
        except ClassGone as exc:
            result.skipped.append((file_name, SKIP_GONE, str(exc)))
        except ImageDecodeError as exc:
            result.skipped.append((file_name, SKIP_UNREADABLE, str(exc)))
        except ClassFull:
            result.skipped.append((file_name, SKIP_FULL, ""))
        except (DatasetError, OSError) as exc:
            gone = not folder.is_dir()
            why = getattr(exc, "strerror", None) or exc
            result.skipped.append((file_name, SKIP_GONE if gone else SKIP_UNREADABLE,
                                   _gone(class_name, folder) if gone else f"{file_name}: could not be saved ({why})"))
        else:
            if new:
                saved[target] = file_name
                result.added.append(file_name)
            else:
                where = f"the same picture as {saved[target]} in this upload" if target in saved else \
                    f"already in {class_name} as {target.name}"
                result.skipped.append((file_name, SKIP_DUPLICATE, where))
    return result


def image_problem(file: Path, label: str | None = None) -> str | None:
    """None if the file decodes through the safe decoder (images.read_image: regular files
    only, size and pixel limits), else what is wrong with it, in words, naming the file as `label`
    (default: its name, never its folder)."""
    try:
        read_image(file)
    except ImageDecodeError as exc:
        return str(exc).replace(str(file), label or Path(file).name, 1)
    return None


def remove_image(path: Path, file: Path) -> None:
    file = Path(file)
    if file.resolve().parent.parent != Path(path).resolve():
        raise DatasetError("That file is not an image of this dataset.")
    file.unlink(missing_ok=True)


def readiness(path: Path, damaged=()) -> str:
    """'' if the dataset can be trained on, else what is missing, in words. Files in `damaged`
    (found unreadable) are not counted."""
    damaged = {Path(f) for f in damaged}
    counts = {name: sum(f not in damaged for f in files) for name, files in classes(path).items()}
    if len(counts) < 2:
        return "Add at least two classes."
    short = [name for name, n in counts.items() if n < MIN_IMAGES_TO_TRAIN]
    if short:
        return (f"Every class needs at least {MIN_IMAGES_TO_TRAIN} images (one to learn from, one to check it): "
                f"add some to {', '.join(short[:5])}{' ...' if len(short) > 5 else ''}.")
    return ""


IMAGENET_BATCH = 16  # images a step when fine-tuning a 224-px ImageNet model on a CPU


def train_config(path: Path, fine_tune: bool, epochs: int, base: str = "demo") -> TrainConfig:
    """A run on a built dataset: the `fine-tune` recipe (the layers of `base` kept, a new head
    trained on them; `base` is the bundled model, or an installed ImageNet model such as
    imagenet-torchvision, whose network, 224 px, and preprocessing the run then takes), or the
    `quick` recipe from scratch; a fifth of each class kept aside to measure it."""

    problem = readiness(path)
    if problem:
        raise ConfigError(problem)
    recipe = get_recipe("fine-tune" if fine_tune else "quick")
    if not fine_tune:
        extra = {"batch_size": 32, "learning_rate": 1e-3}
    elif base == "demo":
        extra = {}
    else:
        extra = {"init_from": base, "batch_size": IMAGENET_BATCH}
    return recipe.config(data=str(path), epochs=epochs, val_split=0.2, **extra)
