"""Installed models: the ImageNet weights converted once (`imagenet-torchvision`,
`imagenet-bvlc`) and the user's own opened models, each a folder under the models folder
(`locations.models_root()`) holding `model.keras` and its record `model.json` (class names,
class words, preprocessing, where it came from). A MODEL name given to any command or page
finds its folder here. No TensorFlow.

A folder appears whole or not at all: `installing(name)` builds it under a temporary name in
the same folder and renames it into place only when everything in it is written, so a download
or conversion that fails or is killed leaves nothing half-made (`remove_leftovers` clears the
temporary folders of a killed process).
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
from pathlib import Path

from alexnet_core import locations
from alexnet_core.errors import AlexNetError
from alexnet_core.store import fileio, liveness

MODEL = "model.keras"
RECORD = "model.json"  # beside model.keras: what inference.model_record reads as its sidecar
TEMP_PREFIX = ".installing-"
NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
MAX_RECORD_BYTES = 4 * 2**20  # 1,000 class names and words fit in well under 1 MiB


class ModelHomeError(AlexNetError, ValueError):
    """A model name or folder that cannot be used; the message says why."""


def check_name(name: str) -> str:
    """A model name: 1-64 lower-case letters, digits, '.', '_' or '-', starting with a letter or
    digit (it becomes a folder name, so nothing that could leave the models folder)."""
    if not isinstance(name, str) or not NAME.match(name) or name in (".", ".."):
        raise ModelHomeError(f"{str(name)[:80]!r} is not a model name: use 1-64 lower-case letters, digits, "
                             "'.', '_' or '-', starting with a letter or digit (e.g. 'my-flowers').")
    return name


def model_dir(name: str) -> Path:
    return locations.models_root() / check_name(name)


def _regular(path: Path) -> bool:
    try:
        return fileio.regular_file(path)
    except OSError:
        return False


def find(name: str) -> Path | None:
    """The model file of installed model `name`, or None when no such model is installed (or
    `name` could not be one)."""
    if not isinstance(name, str) or not NAME.match(name):
        return None
    path = locations.models_root() / name / MODEL
    return path if _regular(path) else None


def read_record(name: str) -> dict:
    """The record of installed model `name` ({} when missing or damaged)."""
    path = model_dir(name) / RECORD
    if not _regular(path) or path.stat().st_size > MAX_RECORD_BYTES:
        return {}
    return fileio.read_object(path)


def installed() -> list[dict]:
    """Every installed model, by name: {"name", "path" (the model file), "record", "bytes"}."""
    root = locations.models_root()
    rows = []
    if not root.is_dir():
        return rows
    for folder in sorted(root.iterdir()):
        if folder.name.startswith(".") or not NAME.match(folder.name):
            continue
        path = find(folder.name)
        if path is None:
            continue
        rows.append({"name": folder.name, "path": path, "record": read_record(folder.name),
                     "bytes": path.stat().st_size})
    return rows


@contextlib.contextmanager
def installing(name: str, replace: bool = True):
    """Yield an empty temporary folder to write model `name` into (its model.keras and
    model.json); on a clean exit it becomes the model's folder in one rename (an existing model
    of that name is replaced only when `replace`), on an exception it is removed."""
    final = model_dir(name)
    root = final.parent
    root.mkdir(parents=True, exist_ok=True)
    if final.exists() and not replace:
        raise ModelHomeError(f"A model named {name!r} is already installed ({final}); choose another name or "
                             "remove it first.")
    temp = root / f"{TEMP_PREFIX}{name}-{os.getpid()}-{secrets.token_hex(4)}"
    temp.mkdir()
    try:
        yield temp
        if not _regular(temp / MODEL):
            raise ModelHomeError(f"Installing {name!r} wrote no {MODEL}; nothing was installed.")
        old = None
        if final.exists():
            old = root / f"{TEMP_PREFIX}{name}-old-{os.getpid()}-{secrets.token_hex(4)}"
            os.replace(final, old)
        os.replace(temp, final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if temp.exists():
            shutil.rmtree(temp, ignore_errors=True)



def keep(name: str, save, record: dict, replace: bool = True) -> Path:
    """Install model `name`: `save(path)` writes its model file (a Keras model's `save`), then its
    record, last, so the folder appears only whole (`installing`). Returns the model file."""
    with installing(name, replace=replace) as folder:
        with fileio.atomic_write(folder / MODEL, label=MODEL, suffix=".keras") as tmp:
            save(tmp)
        fileio.write_json_atomic(folder / RECORD, record)
    return model_dir(name) / MODEL

def remove(name: str) -> None:
    final = model_dir(name)
    if not final.exists():
        raise ModelHomeError(f"No model named {name!r} is installed in {final.parent}.")
    if final.is_symlink():
        final.unlink()
        return
    trash = final.parent / f"{TEMP_PREFIX}{name}-removed-{os.getpid()}-{secrets.token_hex(4)}"
    os.replace(final, trash)  # gone from every listing at once, then deleted
    shutil.rmtree(trash, ignore_errors=True)


def remove_leftovers() -> int:
    """Remove the temporary folders of installs whose process is gone; returns how many."""
    root = locations.models_root()
    removed = 0
    if not root.is_dir():
        return 0
    for folder in root.glob(f"{TEMP_PREFIX}*"):
        match = re.search(r"-(\d+)-[0-9a-f]{8}$", folder.name)
        pid = int(match.group(1)) if match else None
        alive = pid is not None and pid != os.getpid() and liveness.pid_alive(pid)
        if not alive and pid != os.getpid():
            shutil.rmtree(folder, ignore_errors=True)
            removed += 1
    return removed

