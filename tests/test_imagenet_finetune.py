"""Starting from ImageNet features: `train --init-from imagenet-torchvision` and the Your classes
page's base choice, with an installed model made from generated weights (nothing downloaded).
The run takes the base's network at 224 px, keeps its convolutional layers, fc6 and fc7 (frozen
on request) under a new last layer for the data's classes, and records the base's preprocessing
so its model classifies with the same recipe."""

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
    with pytest.raises(ConfigError, match="standardised another way.*Start from imagenet-torchvision"):
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
