"""Starting from ImageNet features: `train --init-from imagenet-torchvision` (and `imagenet-bvlc`)
and the Your classes page's base choice, with an installed model made from generated weights
(nothing downloaded). The run takes the base's network at its input size, keeps its
convolutional layers, fc6 and fc7 (frozen on request) under a new last layer for the data's
classes, and records the base's preprocessing, which it also trains with, so its model
classifies with the same recipe. The BVLC base is installed by the real installer from a small
BVLC-structured ONNX graph (tests/test_pretrained_onnx.zoo_graph at 95 px, where Caffe's
rounded-up pooling gives another fc6 than rounding down), so its record is the installer's."""

import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from alexnet_core.inputs import datasets
from alexnet_core.settings.config import ConfigError, TrainConfig
from alexnet_core.store import layout
from tests import imagenet_models as generated
from tests.helpers import cli, make_image_folder
from tests.imagenet_models import imagenet_bvlc, imagenet_torchvision  # noqa: F401  (fixtures)

ROOT = Path(__file__).resolve().parent.parent


def test_train_init_from_an_installed_imagenet_model(tmp_path, imagenet_torchvision):  # noqa: F811
    import keras

    from alexnet_core.predict.inference import load_model

    folder = make_image_folder(tmp_path / "data", classes=2, per_class=3, size=(300, 200), fmt="jpg")
    runs = tmp_path / "runs"
    result = cli("train", "--init-from", imagenet_torchvision, "--freeze-features", "--data", str(folder),
                 "--epochs", "1", "--batch-size", "4", "--steps-per-epoch", "1", "--val-split", "0.34",
                 "--optimizer", "adam", "--no-snapshots", "--runs-dir", str(runs), "--run-id", "imagenet", timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert ("Fine-tuning from imagenet-torchvision: kept 7 layers (conv1, conv2, conv3, conv4, conv5, fc6, fc7), "
            "frozen") in result.stderr
    run_dir = runs / "imagenet"
    config = layout.read_config(run_dir)
    assert (config["init_from"], config["variant"], config["input_size"]) == ("imagenet-torchvision", "torchvision", 224)
    recipe = config["preprocessing"]
    assert (recipe["input_size"], recipe["resize_to"], recipe["resize_mode"], recipe["crop"]) == (224, 256, "shorter",
                                                                                                  224)
    tuned = keras.models.load_model(run_dir / layout.MODEL, safe_mode=True)
    base = keras.models.load_model(generated.generated_model_file("torchvision"), safe_mode=True)
    assert tuned.input_shape == (None, 224, 224, 3) and tuned.output_shape == (None, 2)
    for name in ("conv1", "conv5", "fc6", "fc7"):  # frozen: exactly the ImageNet model's
        for a, b in zip(tuned.get_layer(name).get_weights(), base.get_layer(name).get_weights()):
            np.testing.assert_array_equal(a, b)
    assert not np.array_equal(tuned.get_layer("fc8").get_weights()[1], np.zeros(2))  # the new head trained
    loaded = load_model(str(run_dir))  # classifies with the base's recipe, as the ImageNet model does
    assert loaded.preprocessing["resize_to"] == 256 and loaded.class_names == ["class0", "class1"]


def test_a_network_flag_or_an_unusable_base_is_refused_before_a_run_exists(tmp_path, imagenet_torchvision,  # noqa: F811
                                                                          imagenet_bvlc):  # noqa: F811
    from alexnet_core.train.training import check_fine_tune

    folder = make_image_folder(tmp_path / "data", classes=2, per_class=3)
    tuned = check_fine_tune(TrainConfig(data=str(folder), init_from=imagenet_torchvision))
    assert (tuned.variant, tuned.input_size, tuned.switches) == ("torchvision", 224, {})
    # A BVLC model installed before its record carried the network's details (Caffe's pooling, LRN).
    with pytest.raises(ConfigError, match="details .*were recorded.*Install it again.*pretrained install bvlc"):
        check_fine_tune(TrainConfig(data=str(folder), init_from=imagenet_bvlc))
    generated.install_own_keras("my-own")
    with pytest.raises(ConfigError, match="not one of the app's AlexNet variants"):
        check_fine_tune(TrainConfig(data=str(folder), init_from="my-own"))
    refused = cli("train", "--init-from", imagenet_torchvision, "--input-size", "128", "--data", str(folder),
                  "--runs-dir", str(tmp_path / "runs"), "--run-id", "bad")
    assert refused.returncode == 2 and "--input-size 128 cannot apply with --init-from imagenet-torchvision" \
        in refused.stderr
    assert not (tmp_path / "runs" / "bad").exists()


def dataset_with_photos(root: Path) -> Path:
    from PIL import Image

    path = datasets.create_dataset("mugs", root)
    for name, colour in (("red", (220, 20, 20)), ("blue", (20, 20, 220))):
        datasets.add_class(path, name)
        for shade in range(2):
            image = Image.new("RGB", (60, 40), tuple(max(0, c - 40 * shade) for c in colour))
            datasets.add_image(path, name, _png(image))
    return path


def _png(image) -> bytes:
    import io

    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def your_classes_page():
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180)
    at.switch_page("pages/dataset.py")
    at.run()
    assert not at.exception, at.exception
    return at


def test_your_classes_offers_imagenet_features_only_when_installed(tmp_path):
    dataset_with_photos(tmp_path / "data")
    at = your_classes_page()
    assert at.radio(key="dataset_mode").options == ["Fine-tune the bundled model (best for a few photos)",
                                                    "From scratch"]
    assert any("install torchvision's ImageNet weights first" in c.value and "not installed" in c.value
               for c in at.caption)
    generated.install_generated_imagenet("imagenet-torchvision", "torchvision")
    generated.install_generated_imagenet("imagenet-bvlc", "paper")
    at = your_classes_page()
    mode = at.radio(key="dataset_mode")
    assert "Start from ImageNet features (imagenet-torchvision, 224 px)" in mode.options
    assert not any("imagenet-bvlc" in option for option in mode.options)  # not offered, with the reason
    assert any("Not offered as a base: 'imagenet-bvlc'" in c.value.replace("\\", "") for c in at.caption)
    mode.set_value("from:imagenet-torchvision").run()
    assert not at.exception and at.number_input(key="dataset_epochs_imagenet").value == 3
    config = datasets.train_config(tmp_path / "data" / "mugs", fine_tune=True, epochs=3, base="imagenet-torchvision")
    assert (config.init_from, config.freeze_features, config.batch_size) == ("imagenet-torchvision", True, 16)


def test_train_form_offers_an_installed_imagenet_model_as_a_start(imagenet_torchvision):  # noqa: F811
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180)
    at.switch_page("pages/train.py")
    at.run()
    assert not at.exception
    start = at.selectbox(key="train_init_from")
    assert imagenet_torchvision in start.options or any("imagenet-torchvision" in o for o in start.options)


# --- imagenet-bvlc as a base: Caffe's network and Caffe's recipe -------------------------------------------------

BVLC_SIZE = 95  # conv1 gives 22x22: Caffe's pooling makes it 11 (fc6 reads 2x2x256), rounding down 10 (1x1x256)


def _install_generated_bvlc(folder: Path, monkeypatch) -> dict:
    """`pretrained install bvlc --file` of a small BVLC-structured graph, taken as the published file (its
    checksum made the published one), so it installs as imagenet-bvlc with the installer's own record."""
    onnx = pytest.importorskip("onnx", reason="the pretrained extra (onnx) is not installed")
    pytest.importorskip("onnxruntime", reason="the pretrained extra (onnxruntime) is not installed")
    from alexnet_core.pretrained import install, sources
    from tests.test_pretrained_onnx import zoo_graph

    path = folder / "bvlcalexnet-12.onnx"
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save(zoo_graph("caffe2", "pads", size=BVLC_SIZE, seed=5), path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    monkeypatch.setitem(sources.SOURCES, "bvlc", dataclasses.replace(sources.SOURCES["bvlc"], sha256=digest))
    return install.install("bvlc", file=path)


def test_train_init_from_imagenet_bvlc_rebuilds_caffes_network_and_trains_with_its_recipe(tmp_path, monkeypatch):
    import keras

    from alexnet_core.inputs.data import decode_file, load_source
    from alexnet_core.inputs.preprocess import standardize
    from alexnet_core.models.variants import LRN, build_model
    from alexnet_core.predict.inference import load_model
    from alexnet_core.pretrained.onnx_import import CAFFE_MEAN_BGR
    from alexnet_core.store import model_home
    from alexnet_core.train.finetune import copy_features, fine_tune_source

    result = _install_generated_bvlc(tmp_path / "weights", monkeypatch)
    assert (result["name"], result["kind"]) == ("imagenet-bvlc", "pretrained")
    caffe_lrn = LRN.caffe(5, 1e-4, 0.75, 1.0).as_dict()
    arch = model_home.read_record("imagenet-bvlc")["arch"]
    assert (arch["variant"], arch["input_size"], arch["pool_padding"], arch["lrn"]) == ("paper", BVLC_SIZE, "ceil",
                                                                                       caffe_lrn)
    caffe_mean = [CAFFE_MEAN_BGR[2] / 255, CAFFE_MEAN_BGR[1] / 255, CAFFE_MEAN_BGR[0] / 255]

    # Before the first step: the rebuilt network is the base's (Caffe's pooling and LRN), its kept layers the base's.
    folder = make_image_folder(tmp_path / "data", classes=2, per_class=3, size=(120, 90), fmt="jpg")
    tuned, base = fine_tune_source(TrainConfig(data=str(folder), init_from="imagenet-bvlc"))
    assert (tuned.variant, tuned.input_size, tuned.switches) == ("paper", BVLC_SIZE,
                                                                 {"lrn": caffe_lrn, "pool_padding": "ceil"})
    target = build_model(tuned.variant, num_classes=2, input_size=tuned.input_size, **tuned.switches)
    kept = copy_features(base, target)
    assert kept == ["conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7"]
    for name in kept:
        for a, b in zip(target.get_layer(name).get_weights(), base.model.get_layer(name).get_weights()):
            np.testing.assert_array_equal(a, b)
    for name in ("lrn1", "lrn2"):
        assert target.get_layer(name).get_config() | {"name": name} == base.model.get_layer(name).get_config()
    rounded_down = build_model("paper", num_classes=2, input_size=BVLC_SIZE, lrn=caffe_lrn)  # without the details
    with pytest.raises(ConfigError, match="fc6 has another shape"):
        copy_features(base, rounded_down, dry_run=True)
    del target, rounded_down

    runs = tmp_path / "runs"
    trained = cli("train", "--init-from", "imagenet-bvlc", "--freeze-features", "--data", str(folder),
                  "--epochs", "1", "--batch-size", "4", "--steps-per-epoch", "1", "--val-split", "0.34",
                  "--optimizer", "adam", "--runs-dir", str(runs), "--run-id", "bvlc", timeout=600)
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert "Fine-tuning from imagenet-bvlc: kept 7 layers (conv1, conv2, conv3, conv4, conv5, fc6, fc7), frozen" \
        in trained.stderr
    run_dir = runs / "bvlc"
    config = layout.read_config(run_dir)
    assert (config["variant"], config["input_size"], config["switches"]) == ("paper", BVLC_SIZE, tuned.switches)
    recipe = config["preprocessing"]  # Caffe's: x - mean on 0..255 pixels, the 256x256 warp
    np.testing.assert_allclose(recipe["mean"], caffe_mean, rtol=1e-9)
    np.testing.assert_allclose(recipe["std"], [1 / 255] * 3, rtol=1e-9)
    assert (recipe["input_size"], recipe["resize_to"], recipe["resize_mode"], recipe["crop"]) == (BVLC_SIZE, 256,
                                                                                                  "square", BVLC_SIZE)
    tuned_model = keras.models.load_model(run_dir / layout.MODEL, safe_mode=True)
    for name in kept:  # frozen: still exactly the base's
        for a, b in zip(tuned_model.get_layer(name).get_weights(), base.model.get_layer(name).get_weights()):
            np.testing.assert_array_equal(a, b)

    # Training standardised with that record: its validation loss is the model's on Caffe-standardised pixels.
    val = load_source(str(folder), 0.34).val
    pixels = np.stack([decode_file(p, BVLC_SIZE).numpy() for p in val.paths])
    labels = keras.utils.to_categorical(val.labels, 2)

    def loss_with(record):
        probs = tuned_model(standardize(pixels, record), training=False)
        return float(np.mean(keras.losses.categorical_crossentropy(labels, probs)))

    recorded_loss = float(layout.read_metrics(run_dir)["val_loss"].iloc[-1])
    assert loss_with(recipe) == pytest.approx(recorded_loss, rel=1e-3, abs=1e-4)
    imagenet = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    assert loss_with(imagenet) != pytest.approx(recorded_loss, rel=1e-2)
    loaded = load_model(str(run_dir))  # Classify and Evaluate of the run read the same recipe
    assert loaded.preprocessing["mean"] == recipe["mean"] and loaded.preprocessing["resize_mode"] == "square"
