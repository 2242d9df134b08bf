"""Datasets built in the app: safe names, safely decoded images, and fine-tuning on them."""

import io

import numpy as np
import pytest
from PIL import Image

from alexnet_core import locations
from alexnet_core.inputs import datasets
from alexnet_core.inputs.datasets import DatasetError
from alexnet_core.inputs.images import ImageDecodeError
from alexnet_core.settings.config import ConfigError
from alexnet_core.store import layout
from tests.test_training import cli


def png(colour, size=(40, 30)):
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("name", ["", " ", "..", ".hidden", "a/b", "..\\x", "x" * 49, "bad\0name", "ends.", "-dash",
                                  "tab\tname", "new\nline"])
def test_hostile_names_are_refused_before_they_touch_the_disk(tmp_path, name):
    with pytest.raises(DatasetError, match="name"):
        datasets.create_dataset(name, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_build_a_dataset_of_safely_decoded_images(tmp_path, monkeypatch):
    monkeypatch.setenv(locations.DATA_DIR_ENV, str(tmp_path / "mine"))
    assert locations.data_root() == tmp_path / "mine"
    path = datasets.create_dataset("My pets")
    assert path == tmp_path / "mine" / "My pets"
    with pytest.raises(DatasetError, match="already"):
        datasets.create_dataset("my PETS")
    datasets.add_class(path, "cats")
    datasets.add_class(path, "dogs")
    with pytest.raises(DatasetError, match="already there"):
        datasets.add_class(path, "Cats")
    assert datasets.readiness(path).startswith("Every class needs at least 2 images")
    saved, new = datasets.add_image(path, "cats", png((200, 30, 30)), "red.png")
    assert new and saved.suffix == ".jpg" and saved.parent == path / "cats"
    assert Image.open(saved).format == "JPEG"  # re-encoded: only the pixels of an upload reach the disk
    assert datasets.add_image(path, "cats", png((200, 30, 30)), "again.png") == (saved, False)  # kept once
    datasets.add_image(path, "cats", png((190, 40, 30)), "red2.png")
    big, _ = datasets.add_image(path, "dogs", png((20, 30, 200), size=(2000, 1000)), "big.png")
    assert max(Image.open(big).size) == datasets.MAX_SIDE
    with pytest.raises(ImageDecodeError, match="fake.jpg: not an image"):
        datasets.add_image(path, "dogs", b"<html>not an image</html>", "fake.jpg")
    with pytest.raises(DatasetError, match="no class"):
        datasets.add_image(path, "birds", png((0, 0, 0)), "x.png")
    datasets.add_image(path, "dogs", png((30, 30, 190)), "blue.png")
    assert {k: len(v) for k, v in datasets.classes(path).items()} == {"cats": 2, "dogs": 2}
    assert datasets.readiness(path) == ""
    with pytest.raises(DatasetError, match="not an image of this dataset"):
        datasets.remove_image(path, tmp_path / "elsewhere.jpg")
    datasets.remove_image(path, big)
    datasets.remove_class(path, "dogs")
    assert list(datasets.classes(path)) == ["cats"] and datasets.list_datasets() == ["My pets"]
    assert datasets.readiness(path) == "Add at least two classes."


def test_train_config_of_a_dataset(tmp_path):
    path = datasets.create_dataset("shapes", tmp_path)
    with pytest.raises(ConfigError, match="two classes"):
        datasets.train_config(path, fine_tune=True, epochs=5)
    for name, colour in (("red", (220, 20, 20)), ("blue", (20, 20, 220))):
        datasets.add_class(path, name)
        for shade in range(2):
            datasets.add_image(path, name, png(tuple(max(0, c - 30 * shade) for c in colour)))
    tuned = datasets.train_config(path, fine_tune=True, epochs=5)
    assert (tuned.init_from, tuned.freeze_features, tuned.recipe, tuned.val_split) == ("demo", True, "fine-tune", 0.2)
    scratch = datasets.train_config(path, fine_tune=False, epochs=5)
    assert scratch.init_from is None and scratch.recipe == "quick" and scratch.data == str(path)


def test_fine_tuning_keeps_the_base_models_convolutions_and_trains_a_new_head(tmp_path):
    import keras

    from tests.helpers import make_image_folder

    folder = make_image_folder(tmp_path / "data", classes=2, per_class=8, size=(40, 30))
    result = cli("train", "--recipe", "fine-tune", "--data", str(folder), "--epochs", "2", "--runs-dir",
                 str(tmp_path / "runs"), "--run-id", "tuned")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Fine-tuning from demo: kept 10 layers" in result.stderr
    run_dir = tmp_path / "runs" / "tuned"
    tuned = keras.models.load_model(run_dir / layout.MODEL, safe_mode=True)
    base = keras.models.load_model(locations.DEMO_RUN / layout.MODEL, safe_mode=True)
    assert tuned.output_shape == (None, 2)
    for name in ("conv1", "bn1", "conv5", "bn5"):  # frozen: exactly the base model's, BatchNorm statistics too
        for a, b in zip(tuned.get_layer(name).get_weights(), base.get_layer(name).get_weights()):
            np.testing.assert_array_equal(a, b)
    config = layout.read_config(run_dir)
    assert config["init_from"] == "demo" and config["freeze_features"] is True
    missing = cli("train", "--recipe", "fine-tune", "--data", str(folder), "--init-from", str(tmp_path / "nowhere"),
                  "--runs-dir", str(tmp_path / "runs"), "--run-id", "bad")
    assert missing.returncode == 2 and "Cannot fine-tune from" in missing.stderr
    assert not (tmp_path / "runs" / "bad").exists()
    unfrozen = cli("train", "--variant", "compact", "--data", str(folder), "--freeze-features", "--runs-dir",
                   str(tmp_path / "runs"))
    assert unfrozen.returncode == 2 and "freeze_features needs init_from" in unfrozen.stderr


def test_prepared_folders_in_the_data_folder_are_not_listed_as_datasets_built_here(tmp_path):
    datasets.create_dataset("pets", tmp_path)
    done = tmp_path / "imagenet256"
    done.mkdir()
    (done / "prepared.json").write_text("{}")
    (tmp_path / "halfway" / ".prepare").mkdir(parents=True)
    assert datasets.list_datasets(tmp_path) == ["pets"]
    with pytest.raises(DatasetError, match="already"):  # its name is still taken
        datasets.create_dataset("ImageNet256", tmp_path)
