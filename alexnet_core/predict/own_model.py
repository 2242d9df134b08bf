"""A model of the user's own, opened safely and kept as an installed model.

A `.keras` file (or a legacy Keras `.h5`) image classifier, by path or uploaded, is checked and
loaded as inference does every model (untrusted's checks, Keras' safe_mode, the size caps, an
image classifier this app can use), then written again as a `.keras` file into the models folder
(store.model_home: `model.keras`, then `model.json` with kind "own", its class names and
preprocessing), so every page and command finds it by name.

Class names and preprocessing come from a sidecar beside the file (`<file>.json`, as
inference.write_class_names writes it) or from the user: class names one per line, in output
order, their count checked against the model's output; preprocessing as one of the named
choices a Keras tutorial user recognises (PREPROCESSING), each a mean/std record in the shared
form (inputs/preprocess.py), so the app's one standardisation `(x / 255 - mean) / std` gives the
model what it was trained on.
"""

from __future__ import annotations

# Imports inside functions are deliberate: Keras and TensorFlow load on first use (opening a
# model), so importing this module (the pages, the command line) stays light.
import hashlib
import os
import re
import secrets
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from alexnet_core import locations
from alexnet_core.errors import AlexNetError
from alexnet_core.predict import untrusted
from alexnet_core.predict.inference import MAX_MODEL_BYTES, load_keras_file
from alexnet_core.store import fileio, model_home

RESIZE = "bilinear, antialiased"  # inputs/preprocess.py's resampling (imported there with TensorFlow)
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]

# How the pixels were scaled when the model was trained: name -> (label, mean, std) over 0..1 pixels.
PREPROCESSING = {
    "unit": ("Pixels 0..1 (x / 255), as after Rescaling(1./255) done outside the model", [0.0] * 3, [1.0] * 3),
    "imagenet": ("ImageNet mean and std ((x / 255 - mean) / std), as torchvision and most pretrained backbones",
                 IMAGENET_MEAN, IMAGENET_STD),
    "symmetric": ("Pixels -1..1 (x / 127.5 - 1), as MobileNet's and Inception's preprocess_input", [0.5] * 3,
                  [0.5] * 3),
    "raw": ("Raw pixels 0..255: the model rescales them itself (a Rescaling layer inside)", [0.0] * 3,
            [1.0 / 255.0] * 3),
}

MODEL_SUFFIXES = (".keras", *untrusted.H5_SUFFIXES)
MAX_CLASSES_FILE_BYTES = 4 * 2**20
MAX_CLASS_NAME = 200
UPLOAD_PREFIX = f"{model_home.TEMP_PREFIX}upload-"  # cleared by model_home.remove_leftovers once its process is gone


class OwnModelError(AlexNetError, ValueError):
    """A user's own model that cannot be opened or kept as given; the message says what to change."""


def preprocessing_record(choice: str, input_size: int) -> dict:
    """The preprocessing record (inputs/preprocess.py's form) of named `choice`."""
    if choice not in PREPROCESSING:
        raise OwnModelError(f"{str(choice)[:60]!r} is not a preprocessing choice: choose one of "
                            f"{', '.join(PREPROCESSING)}.")
    _, mean, std = PREPROCESSING[choice]
    return {"input_size": int(input_size), "mean": list(mean), "std": list(std), "scale": 255.0, "resize": RESIZE,
            "choice": choice}


def choice_of(record) -> str | None:
    """The named choice a preprocessing record matches (by its mean and std), or None."""
    try:
        mean, std = [float(v) for v in record["mean"]], [float(v) for v in record["std"]]
    except (KeyError, TypeError, ValueError):
        return None
    for name, (_, m, s) in PREPROCESSING.items():
        if all(abs(a - b) < 1e-6 for a, b in zip(mean + std, m + s)) and len(mean) == len(std) == 3:
            return name
    return None


def checked_preprocessing(record, input_size: int) -> dict:
    """A preprocessing record given with a model (a sidecar's), checked: three means, three
    positive standard deviations."""
    try:
        mean, std = [float(v) for v in record["mean"]], [float(v) for v in record["std"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise OwnModelError("The preprocessing given has no usable mean and std (three numbers each); choose "
                            "one of the named choices instead.") from exc
    if len(mean) != 3 or len(std) != 3 or min(std) <= 0 or not all(abs(v) < 1e6 for v in mean + std):
        raise OwnModelError("The preprocessing given needs three means and three positive standard deviations "
                            "(one per RGB channel, on pixels scaled to 0..1).")
    kept = {k: v for k, v in record.items() if k in ("resize_to", "resize_mode", "crop", "choice")}
    return {**kept, "input_size": int(input_size), "mean": mean, "std": std, "scale": 255.0, "resize": RESIZE}


def parse_class_names(text: str, num_classes: int | None = None) -> list[str]:
    """Class names, one per line in the model's output order (blank lines and surrounding spaces
    ignored), checked: no duplicates, none too long, and `num_classes` of them when given."""
    if not isinstance(text, str):
        raise OwnModelError("Give the class names as text, one per line.")
    names = [line.strip() for line in text.splitlines() if line.strip()]
    if not names:
        raise OwnModelError("No class names given: write one per line, in the order of the model's outputs.")
    long = next((n for n in names if len(n) > MAX_CLASS_NAME), None)
    if long is not None:
        raise OwnModelError(f"The class name {long[:40]!r}... is over {MAX_CLASS_NAME} characters; shorten it.")
    seen: set[str] = set()
    twice = next((n for n in names if n in seen or seen.add(n)), None)
    if twice is not None:
        raise OwnModelError(f"The class name {twice[:80]!r} appears twice; each output needs its own name.")
    if num_classes is not None and len(names) != num_classes:
        raise OwnModelError(f"The model has {num_classes} outputs, but {len(names)} class names were given: write "
                            f"exactly {num_classes}, one per line, in the order of the model's outputs.")
    return names


def read_classes_file(path, num_classes: int | None = None) -> list[str]:
    """parse_class_names of a text file (UTF-8, at most 4 MiB, a regular file)."""
    path = Path(path).expanduser()
    try:
        if not fileio.regular_file(path):
            raise OwnModelError(f"{path} is not a regular file; give a text file with one class name per line.")
        with open(path, "rb") as fh:
            raw = fh.read(MAX_CLASSES_FILE_BYTES + 1)
    except OSError as exc:
        raise OwnModelError(f"{path} cannot be read ({exc.strerror or exc}); give a text file with one class "
                            "name per line.") from exc
    if len(raw) > MAX_CLASSES_FILE_BYTES:
        raise OwnModelError(f"{path.name} is over {MAX_CLASSES_FILE_BYTES // 2**20} MiB: not a list of class names.")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise OwnModelError(f"{path.name} is not UTF-8 text; save it as plain text, one class name per line.") from exc
    try:
        return parse_class_names(text, num_classes)
    except OwnModelError as exc:
        raise OwnModelError(f"{path.name}: {exc}") from exc


@dataclass
class Opened:
    """A model file checked and loaded safely, with what its sidecar said (None where it said nothing)."""

    model: object
    path: Path
    file_name: str  # what the user called it (an upload's name)
    num_classes: int
    input_size: int
    class_names: list[str] | None
    preprocessing: dict | None
    sha256: str
    has_convolution: bool


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _sidecar(path: Path, num_classes: int, input_size: int) -> tuple[list[str] | None, dict | None]:
    """Class names and preprocessing from `<file>.json`, where it has usable ones."""
    document = fileio.read_object(path.with_suffix(".json"))
    names = document.get("class_names")
    names = [str(n)[:MAX_CLASS_NAME] for n in names] if isinstance(names, list) and len(names) == num_classes else None
    record = document.get("preprocessing")
    try:
        record = checked_preprocessing(record, input_size) if isinstance(record, dict) else None
    except OwnModelError:
        record = None
    return names, record


def open_file(path, file_name: str | None = None) -> Opened:
    """Check and load a user's `.keras` or `.h5` model file safely (inference.load_keras_file);
    its sidecar read when there is one."""
    path = Path(path).expanduser()
    file_name = file_name or path.name
    if path.suffix.lower() not in MODEL_SUFFIXES:
        raise OwnModelError(f"{file_name[:120]}: give a Keras model file (.keras, or a legacy .h5); "
                            f"{path.suffix or 'a file without an extension'} is not one.")
    if not path.exists():
        raise OwnModelError(f"{path} does not exist; give the path of a .keras or .h5 file on this machine.")
    model = load_keras_file(path, file_name)
    num_classes, input_size = int(model.output_shape[-1]), int(model.input_shape[1])
    names, record = _sidecar(path, num_classes, input_size)
    conv = any("Conv" in type(layer).__name__ for layer in _all_layers(model))
    return Opened(model, path, file_name, num_classes, input_size, names, record, _sha256(path), conv)


def _all_layers(model):
    for layer in getattr(model, "layers", []):
        yield layer
        if hasattr(layer, "layers"):
            yield from _all_layers(layer)


def suggested_name(file_name: str) -> str:
    """A model name made from a file name: 'My Flowers v2.keras' -> 'my-flowers-v2'."""
    stem = Path(file_name).stem.lower()
    name = re.sub(r"[^a-z0-9._-]+", "-", stem).strip("-._")[:64]
    return name if name and model_home.NAME.match(name) else "my-model"


def install(opened: Opened, name: str, class_names: list[str] | str | None = None, preprocessing=None,
            title: str | None = None, replace: bool = False) -> dict:
    """Keep `opened` as installed model `name`: written again as model.keras, then its record
    (kind "own"). `class_names`: a list, or text one per line; else the sidecar's. `preprocessing`:
    a PREPROCESSING name or a record; else the sidecar's. Returns {"name", "path", "record"}."""
    model_home.check_name(name)
    existing = model_home.read_record(name) if model_home.find(name) is not None else None
    if existing is not None and not replace:
        raise OwnModelError(f"A model named {name!r} is already installed; choose another name, or remove that "
                            "one first.")
    if existing is not None and existing.get("kind") == "pretrained":
        raise OwnModelError(f"{name!r} is the name of an installed ImageNet model; choose another name.")
    if isinstance(class_names, str):
        class_names = parse_class_names(class_names, opened.num_classes)
    elif class_names is not None:
        class_names = parse_class_names("\n".join(str(n) for n in class_names), opened.num_classes)
    else:
        class_names = opened.class_names
    if class_names is None:
        raise OwnModelError(f"{opened.file_name[:120]} came without class names: give its {opened.num_classes} "
                            "class names, one per line, in the order of the model's outputs.")
    if isinstance(preprocessing, str):
        record = preprocessing_record(preprocessing, opened.input_size)
    elif isinstance(preprocessing, dict):
        record = checked_preprocessing(preprocessing, opened.input_size)
    else:
        record = opened.preprocessing
    if record is None:
        raise OwnModelError(f"How were {opened.file_name[:120]}'s training images scaled? Choose one: "
                            + "; ".join(f"{key}: {label}" for key, (label, _, _) in PREPROCESSING.items()) + ".")
    document = {
        "kind": "own", "source": "keras-h5" if untrusted.is_h5(opened.path) else "keras",
        "title": (title or f"Your own model ({Path(opened.file_name).name})")[:120], "variant": None,
        "class_names": class_names, "class_words": {}, "preprocessing": record,
        "file_sha256": opened.sha256, "file_name": Path(opened.file_name).name[:200], "installed": time.time(),
        "note": (f"Opened from {Path(opened.file_name).name[:200]}: checked for code, loaded with Keras' safe mode "
                 "and saved again as a .keras file."),
    }
    model_home.keep(name, opened.model.save, document, replace=replace)
    return {"name": name, "path": model_home.find(name), "record": document}


def open_and_install(path, name: str, class_names=None, preprocessing=None, title: str | None = None,
                     replace: bool = False) -> dict:
    """open_file then install: a path on this machine kept as installed model `name`."""
    return install(open_file(path), name, class_names, preprocessing, title, replace)


# --- uploads ---------------------------------------------------------------------------------------


def upload_folder() -> Path:
    """A fresh private folder in the models folder for one uploaded file (on the same disk as the
    install; removed by discard_upload, or by model_home.remove_leftovers after a crash)."""
    root = locations.models_root()
    root.mkdir(parents=True, exist_ok=True)
    folder = root / f"{UPLOAD_PREFIX}{os.getpid()}-{secrets.token_hex(4)}"
    folder.mkdir(mode=0o700)
    return folder


def save_upload(data: bytes, file_name: str, max_bytes: int = MAX_MODEL_BYTES) -> Path:
    """An uploaded model file written to disk under a safe name with its own extension (Keras
    tells the formats apart by it); refused when it is not a .keras or .h5 file or too large."""
    suffix = Path(str(file_name)).suffix.lower()
    if suffix not in MODEL_SUFFIXES:
        raise OwnModelError(f"{str(file_name)[:120]}: upload a Keras model file (.keras, or a legacy .h5).")
    if len(data) > max_bytes:
        raise OwnModelError(f"{str(file_name)[:120]} is {len(data) / 2**20:,.0f} MiB, over the "
                            f"{max_bytes / 2**20:,.0f} MiB limit (ALEXNET_MAX_MODEL_BYTES).")
    folder = upload_folder()
    path = folder / f"upload{suffix}"
    try:
        fileio.write_bytes_atomic(path, data)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return path


def discard_upload(path) -> None:
    """Remove an uploaded file's folder (only one save_upload made)."""
    folder = Path(path).parent
    if folder.name.startswith(UPLOAD_PREFIX) and folder.parent == locations.models_root():
        shutil.rmtree(folder, ignore_errors=True)
