"""The user's own model: a .keras or legacy .h5 image classifier opened safely, its class names
and preprocessing from a sidecar or the user, kept as an installed model every page and command
finds by name; `predict MODEL.h5 --classes FILE` on the command line."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import cli
from imagenet_models import build_own_keras, install_generated_imagenet, own_class_names, save_own_keras
from PIL import Image

from alexnet_core import locations
from alexnet_core.predict import own_model
from alexnet_core.predict.inference import ModelLoadError, load_model
from alexnet_core.store import model_home


@pytest.fixture(scope="module")
def own_files(tmp_path_factory):
    """A .keras with its sidecar, the same network as a bare legacy .h5, and a model that is no classifier."""
    import keras

    folder = tmp_path_factory.mktemp("own")
    keras_file = save_own_keras(folder / "My Flowers.keras")
    h5_file = folder / "flowers.h5"
    build_own_keras().save(h5_file)
    inputs = keras.Input((64, 64, 3))
    keras.Model(inputs, keras.layers.Dense(4)(keras.layers.GlobalAveragePooling2D()(inputs))).save(
        folder / "regressor.keras")  # scores, not probabilities
    return {"keras": keras_file, "h5": h5_file, "regressor": folder / "regressor.keras"}


def leftovers() -> list[str]:
    root = locations.models_root()
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


@pytest.mark.parametrize("choice, expected", [
    ("unit", lambda x: x / 255), ("imagenet", lambda x: (x / 255 - np.array(own_model.IMAGENET_MEAN))
                                  / np.array(own_model.IMAGENET_STD)),
    ("symmetric", lambda x: x / 127.5 - 1), ("raw", lambda x: x)])
def test_each_preprocessing_choice_gives_what_its_name_says(choice, expected):
    from alexnet_core.inputs.preprocess import standardize

    pixels = np.random.default_rng(0).uniform(0, 255, (2, 4, 4, 3)).astype(np.float32)
    record = own_model.preprocessing_record(choice, 64)
    assert own_model.choice_of(record) == choice
    np.testing.assert_allclose(standardize(pixels, record).numpy(), expected(pixels.astype(np.float64)),
                               rtol=1e-5, atol=1e-4)


def test_class_names_are_checked():
    assert own_model.parse_class_names(" rose \n\n tulip\r\ndaisy\n", 3) == ["rose", "tulip", "daisy"]
    with pytest.raises(own_model.OwnModelError, match="has 5 outputs, but 3 class names were given"):
        own_model.parse_class_names("a\nb\nc", 5)
    with pytest.raises(own_model.OwnModelError, match="'rose' appears twice"):
        own_model.parse_class_names("rose\ntulip\nrose", 3)
    with pytest.raises(own_model.OwnModelError, match="No class names"):
        own_model.parse_class_names(" \n ", 3)
    assert own_model.suggested_name("My Flowers v2.keras") == "my-flowers-v2"
    assert own_model.suggested_name("../..h5") == "my-model"


def test_a_keras_file_with_its_sidecar_is_installed_and_found_by_name(own_files):
    opened = own_model.open_file(own_files["keras"])
    assert (opened.num_classes, opened.input_size, opened.class_names) == (5, 64, own_class_names())
    assert opened.preprocessing is None and opened.has_convolution  # the sidecar names classes only
    with pytest.raises(own_model.OwnModelError, match="How were My Flowers.keras's training images scaled"):
        own_model.install(opened, "my-flowers")
    assert model_home.find("my-flowers") is None and leftovers() == []
    result = own_model.install(opened, "my-flowers", preprocessing="symmetric")
    record = model_home.read_record("my-flowers")
    assert record["kind"] == "own" and record["class_names"] == own_class_names()
    assert record["preprocessing"]["mean"] == [0.5] * 3 and record["file_name"] == "My Flowers.keras"
    assert result["path"] == model_home.find("my-flowers")
    loaded = load_model("my-flowers")
    assert loaded.class_names == own_class_names() and loaded.preprocessing["std"] == [0.5] * 3
    image = np.random.default_rng(1).uniform(0, 255, (64, 64, 3)).astype(np.float32)
    expected = opened.model(image[None] / 127.5 - 1, training=False).numpy()[0]
    np.testing.assert_allclose(loaded.model(loaded.preprocess(image)[None], training=False).numpy()[0], expected,
                               rtol=1e-4, atol=1e-5)
    with pytest.raises(own_model.OwnModelError, match="already installed"):
        own_model.install(opened, "my-flowers", preprocessing="unit")


def test_a_legacy_h5_without_a_sidecar_asks_for_class_names(own_files):
    opened = own_model.open_file(own_files["h5"])
    assert opened.class_names is None and opened.num_classes == 5
    with pytest.raises(own_model.OwnModelError, match="came without class names: give its 5 class names"):
        own_model.install(opened, "flowers-h5", preprocessing="unit")
    with pytest.raises(own_model.OwnModelError, match="has 5 outputs, but 2 class names"):
        own_model.install(opened, "flowers-h5", class_names="rose\ntulip", preprocessing="unit")
    assert leftovers() == []
    own_model.install(opened, "flowers-h5", class_names="a\nb\nc\nd\ne", preprocessing="unit")
    loaded = load_model("flowers-h5")
    assert loaded.class_names == list("abcde") and model_home.read_record("flowers-h5")["source"] == "keras-h5"
    assert loaded.path.suffix == ".keras"  # written again in Keras' own format


def test_a_model_that_is_no_classifier_gets_the_plain_reason(own_files):
    with pytest.raises(ModelLoadError, match="not probabilities"):
        own_model.open_file(own_files["regressor"])
    with pytest.raises(own_model.OwnModelError, match="give a Keras model file"):
        own_model.open_file(own_files["keras"].with_suffix(".json"))


def test_an_imagenet_model_is_never_replaced_by_an_own_one(own_files):
    install_generated_imagenet("imagenet-torchvision", "torchvision", num_classes=10)
    opened = own_model.open_file(own_files["keras"])
    with pytest.raises(own_model.OwnModelError, match="installed ImageNet model"):
        own_model.install(opened, "imagenet-torchvision", preprocessing="unit", replace=True)
    assert model_home.read_record("imagenet-torchvision")["kind"] == "pretrained"


def test_an_install_that_fails_halfway_leaves_nothing(own_files, monkeypatch):
    opened = own_model.open_file(own_files["keras"])

    def full_disk(path, data):
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(own_model.fileio, "write_json_atomic", full_disk)
    with pytest.raises(OSError):
        own_model.install(opened, "half", preprocessing="unit")
    assert model_home.find("half") is None and leftovers() == []


def test_uploads_are_kept_apart_and_removed(own_files):
    with pytest.raises(own_model.OwnModelError, match="upload a Keras model file"):
        own_model.save_upload(b"x", "evil.py")
    with pytest.raises(own_model.OwnModelError, match="over the"):
        own_model.save_upload(b"x" * 20, "big.keras", max_bytes=10)
    path = own_model.save_upload(own_files["h5"].read_bytes(), "../../../etc/flowers.h5")
    assert path.parent.parent == locations.models_root() and path.suffix == ".h5"
    assert model_home.installed() == []  # an upload in progress is no installed model
    opened = own_model.open_file(path, "flowers.h5")
    assert opened.file_name == "flowers.h5"
    own_model.discard_upload(path)
    assert leftovers() == []


def test_cli_predicts_with_a_legacy_h5_and_a_classes_file(own_files, tmp_path):
    image = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(2).integers(0, 255, (80, 100, 3), dtype=np.uint8)).save(image)
    classes = tmp_path / "classes.txt"
    classes.write_text("rose\ntulip\ndaisy\niris\nlily\n")
    result = cli("predict", str(own_files["h5"]), str(image), "--classes", str(classes), "--top-k", "5", "--json")
    assert result.returncode == 0, result.stderr[-2000:]
    labels = {p["label"] for p in json.loads(result.stdout)[0]["predictions"]}
    assert labels == {"rose", "tulip", "daisy", "iris", "lily"}
    classes.write_text("rose\ntulip\n")
    result = cli("predict", str(own_files["h5"]), str(image), "--classes", str(classes))
    assert result.returncode == 2 and "has 5 outputs, but 2 class names" in result.stderr
    assert "Traceback" not in result.stderr
