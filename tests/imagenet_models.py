"""Installed ImageNet models made from generated weights, for tests (nothing is downloaded).

`install_generated_imagenet(name, variant, ...)` installs a model into the models folder of the
test (`ALEXNET_MODELS_DIR`, set per test by conftest.py) exactly as the converters do: the Keras
variant at 224 px with seeded random weights, written inside `model_home.installing(name)` with
a full record (kind "pretrained", wnid-style class names, class words, the source's
preprocessing recipe, the published figures). A 61M-parameter model takes seconds to build and
a few more to save, so each (variant, classes, seed) is built and saved once per test process
and every later install links (or copies) that one file.

`save_own_keras(path, ...)` writes a small image classifier of a user's own (64 px, 5 classes),
with convolutions or without any; `install_own_keras(name, ...)` installs one as kind "own".

Fixtures: `imagenet_torchvision` and `imagenet_bvlc` install the generated model for the test
and give its name; `own_keras_file` and `own_dense_file` give paths of own `.keras` files.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

import pytest

NUM_CLASSES = 1000
INPUT_SIZE = 224

# The preprocessing records of the shared design (inputs/preprocess.py reads these keys).
TORCHVISION_PREPROCESSING = {
    "input_size": 224, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "scale": 255.0,
    "resize": "bilinear, antialiased", "resize_to": 256, "resize_mode": "shorter", "crop": 224,
}
BVLC_MEAN_BGR = (104.00698793, 116.66876762, 122.67891434)
BVLC_PREPROCESSING = {
    "input_size": 224, "mean": [BVLC_MEAN_BGR[2] / 255, BVLC_MEAN_BGR[1] / 255, BVLC_MEAN_BGR[0] / 255],
    "std": [1 / 255] * 3, "scale": 255.0, "resize": "bilinear, antialiased", "resize_to": 256,
    "resize_mode": "square", "crop": 224,
}

SOURCES = {
    "torchvision": {
        "source": "torchvision", "title": "AlexNet, torchvision's ImageNet weights (IMAGENET1K_V1)",
        "file_name": "alexnet-owt-7be5be79.pth", "preprocessing": TORCHVISION_PREPROCESSING,
        "published": {"top1": 0.5652, "top5": 0.7907, "split": "ILSVRC-2012 validation, centre crop"},
    },
    "paper": {
        "source": "bvlc", "title": "AlexNet, the BVLC Caffe weights (ONNX model zoo)",
        "file_name": "bvlcalexnet-12.onnx", "preprocessing": BVLC_PREPROCESSING,
        "published": {"top1": 0.571, "top5": 0.802, "split": "ILSVRC-2012 validation, centre crop"},
    },
}


def wnid(i: int) -> str:
    """The generated class names: WordNet-id style, n00000000, n00000001, ..."""
    return f"n{i:08d}"


def words(i: int) -> str:
    """The generated class words (as ImageNet's 'tench, Tinca tinca')."""
    return f"thing {i}, generated class {i}"


_lock = threading.Lock()
_built: dict[tuple, Path] = {}
_cache_dir: Path | None = None


def _cache() -> Path:
    global _cache_dir
    if _cache_dir is None:
        _cache_dir = Path(tempfile.mkdtemp(prefix="alexnet-test-imagenet-"))
        atexit.register(shutil.rmtree, _cache_dir, True)
    return _cache_dir


def generated_model_file(variant: str = "torchvision", num_classes: int = NUM_CLASSES, seed: int = 0) -> Path:
    """The saved `.keras` file of `variant` at 224 px with seeded random weights (built once per
    process and shared: treat it as read-only)."""
    key = (variant, int(num_classes), int(seed))
    with _lock:
        if key in _built:
            return _built[key]
        import keras

        from alexnet_core.models import variants

        extra = {}
        if variant == "paper" and "ceil" in getattr(variants, "POOL_PADDINGS", ()):
            # The BVLC model as its converter builds it: Caffe's pooling (rounded up, so 224 px
            # gives conv5 its 6x6) and Caffe's LRN constants.
            extra = {"pool_padding": "ceil", "lrn": variants.LRN.caffe(5, 1e-4, 0.75, 1.0)}
        keras.utils.set_random_seed(seed)
        model = variants.build_model(variant, num_classes=num_classes, input_size=INPUT_SIZE, **extra)
        path = _cache() / f"{variant}-{num_classes}-{seed}.keras"
        model.save(path)
        _built[key] = path
        return path


def _place(source: Path, dest: Path) -> None:
    try:
        os.link(source, dest)  # the cached file is never written again, so sharing it is safe
    except OSError:
        shutil.copyfile(source, dest)


def imagenet_record(variant: str, num_classes: int = NUM_CLASSES) -> dict:
    spec = SOURCES[variant]
    names = [wnid(i) for i in range(num_classes)]
    return {
        "kind": "pretrained", "source": spec["source"], "title": spec["title"], "variant": variant,
        "class_names": names, "class_words": {n: words(i) for i, n in enumerate(names)},
        "preprocessing": dict(spec["preprocessing"]), "published": dict(spec["published"]),
        "file_sha256": "0" * 64, "file_name": spec["file_name"], "installed": time.time(),
        "note": "generated weights for tests (seeded random), not the published ones",
    }


def install_generated_imagenet(name: str = "imagenet-torchvision", variant: str = "torchvision",
                               num_classes: int = NUM_CLASSES, seed: int = 0, record: dict | None = None) -> str:
    """Install `variant` (torchvision, or paper for the BVLC model) with generated weights as
    installed model `name` in the current models folder; returns the name."""
    from alexnet_core.store import model_home

    source = generated_model_file(variant, num_classes, seed)
    document = {**imagenet_record(variant, num_classes), **(record or {})}
    with model_home.installing(name) as folder:
        _place(source, folder / model_home.MODEL)
        (folder / model_home.RECORD).write_text(json.dumps(document))
    return name


def build_own_keras(num_classes: int = 5, size: int = 64, conv: bool = True, seed: int = 0):
    """A user's own small image classifier: two convolutions and a dense head, or (conv=False)
    only dense layers."""
    import keras

    keras.utils.set_random_seed(seed)
    L = keras.layers
    if conv:
        body = [L.Conv2D(8, 3, activation="relu", name="my_conv_a"), L.MaxPooling2D(2),
                L.Conv2D(16, 3, activation="relu", name="my_conv_b"), L.GlobalAveragePooling2D()]
    else:
        body = [L.Rescaling(1.0 / 4), L.Flatten(), L.Dense(16, activation="relu", name="my_hidden")]
    return keras.Sequential([keras.Input((size, size, 3)), *body,
                             L.Dense(num_classes, activation="softmax", name="my_output")],
                            name="own_conv" if conv else "own_dense")


def own_class_names(num_classes: int = 5) -> list[str]:
    return [f"kind-{chr(ord('a') + i)}" for i in range(num_classes)]


def save_own_keras(path, num_classes: int = 5, size: int = 64, conv: bool = True, seed: int = 0,
                   sidecar: bool = True) -> Path:
    """Write a user's own `.keras` classifier to `path` (with a `.json` sidecar naming its classes
    when `sidecar`); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    build_own_keras(num_classes, size, conv, seed).save(path)
    if sidecar:
        path.with_suffix(".json").write_text(json.dumps({"class_names": own_class_names(num_classes)}))
    return path


def install_own_keras(name: str = "own-keras", num_classes: int = 5, size: int = 64, conv: bool = True,
                      seed: int = 0) -> str:
    """Install a user's own classifier as installed model `name` (kind "own"); returns the name."""
    from alexnet_core.store import model_home

    with model_home.installing(name) as folder:
        save_own_keras(folder / model_home.MODEL, num_classes, size, conv, seed, sidecar=False)
        (folder / model_home.RECORD).write_text(json.dumps({
            "kind": "own", "source": "keras", "title": f"My classifier ({name})", "variant": None,
            "class_names": own_class_names(num_classes),
            "preprocessing": {"input_size": size, "mean": [0.5] * 3, "std": [0.5] * 3, "scale": 255.0,
                              "resize": "bilinear, antialiased"},
            "file_name": f"{name}.keras", "installed": time.time(),
        }))
    return name


@pytest.fixture
def imagenet_torchvision() -> str:
    return install_generated_imagenet("imagenet-torchvision", "torchvision")


@pytest.fixture
def imagenet_bvlc() -> str:
    return install_generated_imagenet("imagenet-bvlc", "paper")


@pytest.fixture
def own_keras_file(tmp_path) -> Path:
    return save_own_keras(tmp_path / "own" / "my-model.keras")


@pytest.fixture
def own_dense_file(tmp_path) -> Path:
    return save_own_keras(tmp_path / "own" / "my-dense.keras", conv=False)
