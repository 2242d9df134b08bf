import numpy as np
import pytest
from PIL import Image

from alexnet_core.inputs.augment import PRESETS
from alexnet_core.inputs.augment import build as build_augment
from alexnet_core.inputs.data import DataError, Split, load_source, make_dataset, model_pixels
from alexnet_core.inputs.preprocess import MEAN, STD, preprocess, recorded, resize, standardize
from tests.helpers import WNIDS, make_ilsvrc_folder, make_image_folder


def test_folder_with_deterministic_tail_split(tmp_path):
    make_image_folder(tmp_path, classes=3, per_class=10)
    data = load_source(str(tmp_path), val_split=0.2)
    assert data.class_names == ["class0", "class1", "class2"]
    assert len(data.train) == 24 and len(data.val) == 6
    assert [p.split("/")[-1] for p in data.val.paths[:2]] == ["008.png", "009.png"]  # last files by name
    assert load_source(str(tmp_path), val_split=0.2).val.paths == data.val.paths


def test_train_val_test_layout(tmp_path):
    for split, n in (("train", 6), ("val", 2), ("test", 3)):
        make_image_folder(tmp_path / split, classes=2, per_class=n)
    data = load_source(str(tmp_path))
    assert (len(data.train), len(data.val), len(data.test)) == (12, 4, 6)


def test_val_folder_with_unknown_class(tmp_path):
    make_image_folder(tmp_path / "train", classes=2, per_class=3)
    make_image_folder(tmp_path / "val", classes=3, per_class=1)
    with pytest.raises(DataError, match="class folders not in train/: class2"):
        load_source(str(tmp_path))


@pytest.mark.parametrize("setup, message", [
    (lambda p: None, "does not exist"),
    (lambda p: p.mkdir(), "has no class folders"),
    (lambda p: make_image_folder(p, classes=1, per_class=3), "only one class with images ('class0')"),
])
def test_bad_folders(tmp_path, setup, message):
    path = tmp_path / "data"
    setup(path)
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_source(str(path))


def test_class_folders_without_images_are_left_out_with_a_note(tmp_path):
    make_image_folder(tmp_path, classes=2, per_class=3)
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("not an image")
    data = load_source(str(tmp_path))
    assert data.class_names == ["class0", "class1"]
    assert data.empty_classes == ["empty", "notes"]
    assert "Left out 2 class folders with no readable image ('empty', 'notes')" in data.empty_note()
    assert data.skipped["train"] == 1  # readme.txt


def test_fewer_than_two_classes_with_images_is_refused(tmp_path):
    make_image_folder(tmp_path, classes=1, per_class=3)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"only one class with images \('class0'\) in .*; 1 class folder"):
        load_source(str(tmp_path))


def test_unreadable_files_are_skipped_and_counted(tmp_path):
    make_image_folder(tmp_path, classes=2, per_class=4)
    (tmp_path / "class0" / "fake.jpg").write_text("this is text, not a JPEG")
    (tmp_path / "class1" / "empty.png").write_bytes(b"")
    data = load_source(str(tmp_path), val_split=0.0)
    assert data.skipped["train"] == 2 and len(data.train) == 8


def test_mixed_sizes_and_modes_are_resized_and_converted(tmp_path):
    make_image_folder(tmp_path, classes=2, per_class=2)
    Image.new("L", (50, 10), 128).save(tmp_path / "class0" / "gray.png")
    Image.new("RGBA", (7, 33), (1, 2, 3, 4)).save(tmp_path / "class1" / "rgba.png")
    Image.new("P", (12, 12)).save(tmp_path / "class1" / "palette.gif")
    Image.new("RGB", (9, 9), (9, 9, 9)).save(tmp_path / "class1" / "small.bmp")
    Image.new("RGB", (16, 16), (255, 0, 0)).save(tmp_path / "class0" / "photo.jpg")
    data = load_source(str(tmp_path), val_split=0.0)
    ds = make_dataset(data.train, 2, 16, batch_size=64)
    images, labels = next(iter(ds))
    assert images.shape == (len(data.train), 16, 16, 3) and labels.shape == (len(data.train), 2)
    assert np.isfinite(images.numpy()).all()


def test_corrupt_image_body_is_dropped_not_fatal(tmp_path):
    make_image_folder(tmp_path, classes=2, per_class=3, fmt="jpg")
    good = (tmp_path / "class0" / "000.jpg").read_bytes()
    (tmp_path / "class0" / "truncated.jpg").write_bytes(good[:40])
    data = load_source(str(tmp_path), val_split=0.0)
    count = sum(int(x.shape[0]) for x, _ in make_dataset(data.train, 2, 8, batch_size=4))
    assert count == 6  # the truncated file is dropped by the pipeline


def test_model_pixels_give_positions_and_pixels_at_the_model_size(tmp_path):
    """The one pixel pipeline of evaluation and the map: positions of what decoded, 0..255
    pixels at the input size; an unreadable file is left out, or raises when asked."""
    import tensorflow as tf

    make_image_folder(tmp_path, classes=2, per_class=3, size=(20, 30), fmt="jpg")
    (tmp_path / "class0" / "001.jpg").write_bytes(b"\xff\xd8\xff not a JPEG body")
    data = load_source(str(tmp_path), val_split=0.0)
    batches = list(model_pixels(data.train, 16, batch=4))
    positions = np.concatenate([i.numpy() for i, _ in batches])
    pixels = np.concatenate([x.numpy() for _, x in batches])
    assert positions.tolist() == [0, 2, 3, 4, 5] and pixels.shape == (5, 16, 16, 3) and pixels.dtype == np.float32
    raw = np.asarray(Image.open(data.train.paths[2]).convert("RGB"))
    np.testing.assert_allclose(pixels[1], resize(raw, 16).numpy(), atol=1.0)  # libjpeg and Pillow decode alike
    chosen = list(model_pixels(data.train, 16, positions=[5, 2]))
    assert chosen[0][0].numpy().tolist() == [5, 2]
    np.testing.assert_array_equal(chosen[0][1].numpy(), pixels[[4, 1]])
    with pytest.raises(tf.errors.OpError):
        list(model_pixels(data.train, 16, positions=[0, 1], skip_unreadable=False))

    in_memory = Split(np.array([0, 1, 0]), images=np.arange(3 * 8 * 8 * 3, dtype=np.uint8).reshape(3, 8, 8, 3))
    ((where, got),) = list(model_pixels(in_memory, 8, positions=[2, 0]))
    assert where.numpy().tolist() == [2, 0]
    np.testing.assert_array_equal(got.numpy(), in_memory.images[[2, 0]].astype(np.float32))
    record = recorded({"preprocessing": {"mean": [0, 0, 0], "std": [1, 1, 1]}}, 8)
    np.testing.assert_allclose(standardize(got, record).numpy(), in_memory.images[[2, 0]] / 255.0, atol=1e-6)


def test_pipeline_uses_the_shared_preprocessing(tmp_path):
    make_image_folder(tmp_path, classes=2, per_class=1, size=(32, 32))
    data = load_source(str(tmp_path), val_split=0.0)
    images, _ = next(iter(make_dataset(data.train, 2, 32, batch_size=2)))
    raw = np.asarray(Image.open(data.train.paths[0]).convert("RGB"), dtype=np.float32)
    np.testing.assert_allclose(images[0].numpy(), preprocess(raw, 32).numpy(), atol=1e-5)
    manual = (raw / 255.0 - np.array(MEAN)) / np.array(STD)
    np.testing.assert_allclose(images[0].numpy(), manual, atol=1e-5)


def test_paper_without_lighting_is_the_papers_crop_and_flip_alone():
    from alexnet_core.inputs.augment import dataset_options

    assert dataset_options("paper-no-lighting", 32) == {"augment": None, "crop": "paper", "lighting": 0.0}
    assert dataset_options("paper", 32) == {"augment": None, "crop": "paper", "lighting": 0.1}


def test_first_per_class_keeps_the_first_images_of_each_class_in_order():
    from alexnet_core.inputs.splits import Split

    split = Split(np.array([0, 1, 0, 2, 1, 0, 2]), paths=[f"f{i}" for i in range(7)])
    part = split.first_per_class(2)
    assert part.paths == ["f0", "f1", "f2", "f3", "f4", "f6"] and list(part.labels) == [0, 1, 0, 2, 1, 2]
    images = Split(np.array([1, 1, 0]), images=np.arange(3).reshape(3, 1, 1, 1))
    assert images.first_per_class(1).images.ravel().tolist() == [0, 2]


@pytest.mark.parametrize("preset", PRESETS)
def test_augmentation_presets_keep_shape(preset):
    layer = build_augment(preset, 24, seed=1)
    x = np.random.default_rng(0).uniform(0, 255, (4, 24, 24, 3)).astype(np.float32)
    if layer is None:  # nothing to do on batches: no augmentation, or all of it per image (data.crop_image)
        assert preset in ("none", "paper", "paper-no-lighting", "random-resized-crop")
        return
    y = np.asarray(layer(x, training=True))
    assert y.shape == x.shape
    assert not np.allclose(y, x)  # it changes the images
    with pytest.raises(ValueError, match="Unknown augmentation"):
        build_augment("mixup", 24)


def test_cifar10_offline_message(monkeypatch):
    import keras

    def offline():
        raise OSError("network is unreachable")

    monkeypatch.setattr(keras.datasets.cifar10, "load_data", offline)
    with pytest.raises(DataError, match="not cached on this machine.*image folder"):
        load_source("cifar10")


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
@pytest.mark.parametrize("preset", ["keras-seed", "cifar"])
def test_augmentation_presets_run_under_mixed_precision(preset, policy):
    """The trainer builds the augmentation after setting the precision policy."""
    import keras

    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(policy)
    try:
        layer = build_augment(preset, 24, seed=1)
        x = np.random.default_rng(0).uniform(0, 255, (4, 24, 24, 3)).astype(np.float32)
        y = np.asarray(layer(x, training=True), dtype=np.float32)
    finally:
        keras.mixed_precision.set_global_policy(previous)
    assert y.shape == x.shape and np.isfinite(y).all()


def test_ilsvrc_layout_with_class_words(tmp_path):
    root = make_ilsvrc_folder(tmp_path / "ilsvrc")
    data = load_source(str(root))
    assert data.class_names == sorted(WNIDS) and (len(data.train), len(data.val)) == (18, 6)
    assert data.class_words == WNIDS  # lines for other wnids and lines that do not parse are skipped
    (root / "LOC_synset_mapping.txt").write_bytes(b"\xff\xfe\x00garbage\n" * 10)
    assert load_source(str(root)).class_words == {}  # a damaged names file counts as none


def first_batch(split, **kwargs):
    images, labels = next(iter(make_dataset(split, 3, 16, len(split), **kwargs)))
    return images.numpy(), labels.numpy()


@pytest.mark.parametrize("crop, lighting", [("paper", 0.1), ("random-resized", 0.0)])
def test_training_crops_come_from_the_full_image(tmp_path, crop, lighting):
    """Each image of 30x120 with a black left and white right half: crops at 16 px see a part."""
    folder = tmp_path / "wide"
    for c in range(3):
        (folder / f"c{c}").mkdir(parents=True)
        pixels = np.zeros((30, 120, 3), np.uint8)
        pixels[:, 60:] = 255
        for i in range(4):
            Image.fromarray(pixels).save(folder / f"c{c}" / f"{i}.jpg", quality=95)
    split = load_source(str(folder), val_split=0.0).train
    images, _ = first_batch(split, training=True, crop=crop, lighting=lighting, seed=0, drop_remainder=True)
    assert images.shape == (12, 16, 16, 3) and images.dtype == np.uint8  # standardised in the training step
    means = images.mean(axis=(1, 2, 3))
    assert means.max() - means.min() > 50  # different crops of the same picture: some darker, some lighter
    again, _ = first_batch(split, training=True, crop=crop, lighting=lighting, seed=0, drop_remainder=True)
    np.testing.assert_allclose(again, images)  # the same seed gives the same crops
    in_memory = Split(split.labels, images=np.stack([np.asarray(Image.open(p)) for p in split.paths]))
    assert first_batch(in_memory, training=True, crop=crop, seed=0)[0].shape == (12, 16, 16, 3)


def test_shards_are_disjoint_and_cover_the_split(tmp_path):
    make_image_folder(tmp_path, classes=3, per_class=5)
    split = load_source(str(tmp_path), val_split=0.0).train
    whole = {tuple(np.round(x.ravel()[:12], 3)) for x in first_batch(split)[0]}
    parts = [{tuple(np.round(x.ravel()[:12], 3)) for x in first_batch(split, shard=(2, i))[0]} for i in range(2)]
    assert len(whole) == 15 and parts[0].isdisjoint(parts[1]) and parts[0] | parts[1] == whole
    assert (len(parts[0]), len(parts[1])) == (8, 7)


def test_pca_lighting_shifts_each_image_by_one_colour(tmp_path):
    folder = tmp_path / "grey"
    for c in range(2):
        (folder / f"c{c}").mkdir(parents=True)
        for i in range(4):
            Image.fromarray(np.full((40, 40, 3), 128, np.uint8)).save(folder / f"c{c}" / f"{i}.png")
    split = load_source(str(folder), val_split=0.0).train
    plain, _ = first_batch(split, training=True, crop="paper", lighting=0.0, seed=0)
    lit, _ = first_batch(split, training=True, crop="paper", lighting=0.1, seed=0)
    shift = lit.astype(int) - plain.astype(int)
    per_image = shift.reshape(len(shift), -1, 3)
    assert np.abs(per_image).max() > 0  # the colours moved
    assert (per_image.max(axis=1) - per_image.min(axis=1)).max() <= 1  # by one RGB shift per image (+-rounding)
    assert len({tuple(p[0]) for p in per_image}) > 1  # drawn per image


def test_cifar_erasing_fills_a_patch_in_some_images():
    from alexnet_core.inputs.augment import ERASE_FILL

    layer = build_augment("cifar-erasing", 32, seed=3)
    x = np.full((64, 32, 32, 3), 250.0, np.float32)  # no pixel equals the fill before
    y = np.asarray(layer(x, training=True))
    erased = (y == ERASE_FILL).all(axis=-1).mean(axis=(1, 2))  # fraction of each image erased
    hit = erased[erased > 0]
    assert 0.2 < len(hit) / len(x) < 0.8  # about half the images
    assert hit.max() <= 0.3  # a patch, never the whole image
