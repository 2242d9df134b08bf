"""What the pages read, cached across sessions where it is worth it: the device, a variant's
layer table, the runs, the models a user can question (loaded once per file version) and images
from disk (always through the safe decoder, memoised per file version).

Models and layer tables are shared read-only by every session (st.cache_resource and
st.cache_data); the runs are read afresh on every page run, so a page never shows a stale run.
"""

from __future__ import annotations

# Imports inside functions are deliberate: TensorFlow and Keras, and the modules that reach them,
# load on first use, so importing this module (the app's pages, the command line) stays light.
import gc
import json
import os
from pathlib import Path

import streamlit as st

from alexnet_core.inputs.images import env_limit
from alexnet_core.locations import runs_root as root
from alexnet_core.store import catalog, model_home
from alexnet_core.store.cache import model_fingerprint
from alexnet_core.store.catalog import all_runs as rows
from alexnet_core.store.catalog import find_run
from alexnet_core.store.layout import MODEL
from alexnet_ui.images import thumbnail

# --- The machine and the networks -----------------------------------------------------------


@st.cache_resource(show_spinner=False)
def device_info() -> dict:
    from alexnet_core.train.devices import describe

    return describe()


@st.cache_data(show_spinner="Building the network...", max_entries=64)
def variant_table(variant: str, switches_json: str):
    """Layer table (a DataFrame) of `variant` with switches (a JSON object, so the cache key is stable)."""
    from alexnet_core.models.anatomy import layer_table
    from alexnet_core.models.variants import build_model

    model = build_model(variant, **json.loads(switches_json))
    table = layer_table(model)
    del model
    gc.collect()
    return table


# --- Runs -------------------------------------------------------------------------------------


def runs_root():

    return root()


def all_runs(claims: bool = False) -> list[dict]:
    """The user's runs, then the bundled ones (a user run with the same id wins); with `claims`, the
    bundled runs of the paper's claims too."""

    return rows(runs_root(), claims=claims)


def run_dir_of(run_id: str):
    """The folder of a run id from the user (URL or widget), validated; None if unknown."""

    return find_run(run_id, runs_root())


def installed_models() -> list[dict]:
    """The installed models (store.model_home), the pretrained ones first, each with its record:
    {"name", "path", "record", "bytes"}. A damaged folder is simply not listed."""
    try:
        rows = model_home.installed()
    except OSError:  # the models folder unreadable: as if none were installed
        return []
    return sorted(rows, key=lambda row: (row["record"].get("kind") != "pretrained", row["name"]))


def installed_label(row: dict) -> str:
    """How the model picker names an installed model: its title, with the published accuracy and
    its split for the pretrained ones."""
    record = row["record"]
    title = record.get("title") if isinstance(record.get("title"), str) else row["name"]
    title = title[:80]
    if record.get("kind") == "pretrained":
        published = record.get("published") if isinstance(record.get("published"), dict) else {}
        top1, top5 = published.get("top1"), published.get("top5")
        if isinstance(top1, float) and isinstance(top5, float):
            split = str(published.get("split") or "ImageNet validation")[:60]
            return f"{row['name']}: {title} (published top-1 {top1:.1%}, top-5 {top5:.1%}, {split})"
        return f"{row['name']}: {title} (ImageNet)"
    return f"{row['name']}: {title} (your own model)"


def model_facts(spec: str) -> dict:
    """The record of installed model `spec` (its kind, title, published figures...), {} for a run
    or a file."""
    if model_home.find(spec) is None:
        return {}
    try:
        return model_home.read_record(spec)
    except (OSError, ValueError):
        return {}


def model_choices() -> dict[str, str]:
    """{spec: label} of the models a user can question: the installed models (the pretrained
    ImageNet ones first, with their published accuracy, then the user's own), the bundled demo,
    then finished runs."""
    from alexnet_core.locations import DEMO_RUN

    rows = all_runs()
    choices = {row["name"]: installed_label(row) for row in installed_models()}
    if (DEMO_RUN / MODEL).exists():
        variant = next((row["variant"] for row in rows if row["path"] == str(DEMO_RUN)), None)
        choices["demo"] = f"Bundled demo model ({variant}, CIFAR-10)" if isinstance(variant, str) else \
            "Bundled demo model (CIFAR-10)"
    for row in rows:
        if row["has_model"] and row["path"] != str(DEMO_RUN) and not catalog.is_active(row):
            choices[row["path"]] = f"{catalog.display_name(row)} ({row['variant']}, {row['state']})"
    return choices


def data_choices(with_download: bool = False) -> dict[str, str]:
    """{source: label} of the data sources; CIFAR-10 only when it is downloaded, unless
    `with_download` (training may download it)."""
    from alexnet_core.inputs import prepared
    from alexnet_core.inputs.data import cifar10_available
    from alexnet_core.inputs.datasets import data_root, list_datasets

    choices = {"sample": "Bundled CIFAR-10 sample (2,000 training, 1,000 validation images)"}
    if with_download or cifar10_available():
        choices["cifar10"] = "CIFAR-10" if with_download else "CIFAR-10 (downloaded)"
    root = data_root()
    ready = {folder.name: prepared_summary(str(folder)) for folder in prepared.find(root)}
    for name in list_datasets(root):  # built on the Your classes page
        if name not in ready:
            choices[str(root / name)] = f"Your classes: {name}"
    for name, summary in ready.items():  # written by `prepare` into the data folder
        if summary:
            choices[str(root / name)] = prepared_label(summary)
    choices["folder"] = "An image folder..."
    return choices


def prepared_description(path: str) -> str | None:
    """How the prepared dataset at `path` was made (prepared.describe), or None when `path` is
    not a whole prepared dataset: what the data pickers show under the field."""
    summary = prepared_summary(path)
    return summary["description"] if summary else None


def prepared_label(summary: dict) -> str:
    """A prepared dataset as a picker names it: "Prepared: NAME (N images, 256 px)"."""
    return f"Prepared: {summary['name']} ({summary['images']:,} images, {summary['size']} px)"


@st.cache_data(show_spinner=False, ttl=10, max_entries=256)
def prepared_summary(path: str) -> dict | None:
    """prepared.summary of a folder (from its prepared.json alone), or None when it is not a
    whole prepared dataset; read again after 10 s, so a dataset prepared meanwhile shows."""
    from alexnet_core.inputs import prepared

    return prepared.summary(path) if path else None


# --- Models -----------------------------------------------------------------------------------


def model_stamp(spec: str) -> str:
    """The version of the model file behind `spec` (store.cache.model_fingerprint), so what is
    cached from a model is per file version; "" if the spec names no model."""
    from alexnet_core.predict.inference import resolve_model_path

    try:
        return model_fingerprint(resolve_model_path(spec)[0])
    except Exception:
        return ""


# A model file over LARGE_MODEL_BYTES (the ImageNet AlexNets: 233 MB of weights, about twice
# that in memory while loading) is kept in a cache of its own that holds at most
# MAX_LARGE_MODELS of them (ALEXNET_MAX_LARGE_MODELS; 2 by default: both ImageNet models),
# so four of them are never held at once; small models (a 32-px run, a few MB) in another.
LARGE_MODEL_BYTES = 64 * 2**20
MAX_LARGE_MODELS = max(1, env_limit("ALEXNET_MAX_LARGE_MODELS", 2))
MAX_SMALL_MODELS = 4


def _load(spec: str):
    from alexnet_core.predict.inference import Predictor, load_model

    loaded = load_model(spec)
    return loaded, Predictor(loaded)


@st.cache_resource(show_spinner="Loading the model...", max_entries=MAX_SMALL_MODELS)
def _loaded_model(spec: str, stamp: str):
    return _load(spec)


@st.cache_resource(show_spinner="Loading the model (a large one: once per server, shared by every session)...",
                   max_entries=MAX_LARGE_MODELS)
def _loaded_large_model(spec: str, stamp: str):
    return _load(spec)


def _file_bytes(spec: str) -> int:
    from alexnet_core.predict.inference import resolve_model_path

    try:
        return resolve_model_path(spec)[0].stat().st_size
    except Exception:
        return 0


def loaded_model(spec: str):
    """(LoadedModel, Predictor), cached per model file version; one copy per server process,
    shared read-only by all sessions."""
    stamp = model_stamp(spec)
    if _file_bytes(spec) > LARGE_MODEL_BYTES:
        return _loaded_large_model(spec, stamp)
    return _loaded_model(spec, stamp)


# --- Images from disk: always through the safe decoder ------------------------------------------


def _file_stamp(path) -> tuple | None:
    """(size, mtime) of a file (of its shard, for a prepared dataset's record path), so a memo is
    per file version; None if it cannot be stat'ed."""
    from alexnet_core.inputs.prepared import parse_record_path

    record = parse_record_path(path)
    try:
        info = os.stat(record[0] if record and not os.path.lexists(path) else path)
    except OSError:
        return None
    return info.st_size, info.st_mtime_ns


def _named(message: str, path, label: str) -> str:
    """A read_image message about `path` that names it as `label` (not by its server folder)."""
    return message.replace(str(path), label, 1)


@st.cache_data(show_spinner=False, max_entries=100_000)
def _image_problem(path: str, stamp, label: str | None) -> str | None:
    from alexnet_core.inputs.datasets import image_problem as problem

    return problem(path, label)


def image_problem(path, label: str | None = None) -> str | None:
    """None if the file decodes through the safe decoder (inputs.images.read_image: regular files
    only, size and pixel limits), else what is wrong with it, naming it as `label` (default: its
    file name). Memoised per file version, so a page checks each file once."""
    return _image_problem(str(path), _file_stamp(path), label)


@st.cache_data(show_spinner=False, max_entries=512)
def _image_from_disk(path: str, stamp, max_side: int):
    from alexnet_core.inputs.images import ImageDecodeError, read_image

    try:
        return thumbnail(read_image(path), max_side)
    except ImageDecodeError as exc:
        return str(exc)


def image_from_disk(path, max_side: int | None = 768, label: str | None = None):
    """An image file to show: its pixels through the safe decoder, at most `max_side` pixels a
    side (memoised per file version), or as decoded with None (not memoised); or (a str) what is
    wrong with it, naming it as `label` (default: its file name). Never raises for a bad file."""

    from alexnet_core.inputs.images import ImageDecodeError, read_image

    if max_side is None:
        try:
            image = read_image(path)
        except ImageDecodeError as exc:
            image = str(exc)
    else:
        image = _image_from_disk(str(path), _file_stamp(path), max_side)
    return _named(image, path, label or Path(path).name) if isinstance(image, str) else image
