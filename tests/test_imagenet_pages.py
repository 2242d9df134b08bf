"""Classify and Architecture on installed ImageNet models (generated weights, 224 px, 1,000
classes) and on a user's own models; the ImageNet preprocessing recipes; one shared copy of a
large model per server process."""

import io

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from alexnet_core.inputs import preprocess
from tests.imagenet_models import (
    BVLC_PREPROCESSING,
    TORCHVISION_PREPROCESSING,
    install_generated_imagenet,
    install_own_keras,
    words,
)
from tests.test_pages import ROOT, TIMEOUT

RNG = np.random.default_rng(0)


def picture(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


# --- The ImageNet preprocessing -----------------------------------------------------------------


def test_recorded_keeps_a_whole_recipe_and_drops_an_inconsistent_one():
    tv = preprocess.recorded({"preprocessing": TORCHVISION_PREPROCESSING}, 224)
    assert (tv["resize_to"], tv["resize_mode"], tv["crop"]) == (256, "shorter", 224)
    assert preprocess.has_recipe(tv)
    for broken in ({"resize_to": 100}, {"resize_mode": "stretch"}, {"crop": 227}, {"resize_to": "256"},
                   {"resize_to": True}):
        record = preprocess.recorded({"preprocessing": {**TORCHVISION_PREPROCESSING, **broken}}, 224)
        assert not preprocess.has_recipe(record), broken
        assert record["mean"] == TORCHVISION_PREPROCESSING["mean"]  # the rest still applies
    plain = preprocess.recorded({"preprocessing": {"mean": [0, 0, 0], "std": [1, 1, 1]}}, 32)
    assert not preprocess.has_recipe(plain)


@pytest.mark.parametrize("recipe, shape", [(TORCHVISION_PREPROCESSING, (256, 341)), (TORCHVISION_PREPROCESSING, (300, 256)),
                                           (BVLC_PREPROCESSING, (256, 256))])
def test_an_image_at_the_intermediate_size_is_only_cropped(recipe, shape):
    record = preprocess.recorded({"preprocessing": recipe}, 224)
    image = picture(*shape)
    top, left = int(round((shape[0] - 224) / 2)), int(round((shape[1] - 224) / 2))
    out = preprocess.fit(image, record)
    assert out.dtype == np.uint8 and out.shape == (224, 224, 3)
    assert np.array_equal(out, image[top:top + 224, left:left + 224])  # no resampling at all


def test_the_recipes_resize_the_shorter_side_or_both_then_crop_the_centre():
    import tensorflow as tf

    image = picture(480, 640, seed=1)
    tv = preprocess.recorded({"preprocessing": TORCHVISION_PREPROCESSING}, 224)
    assert preprocess.intermediate_shape(480, 640, tv) == (256, 341)
    resized = tf.image.resize(image.astype(np.float32), (256, 341), method="bilinear", antialias=True).numpy()
    expected = np.clip(np.rint(resized[16:240, 58:282]), 0, 255).astype(np.uint8)
    assert np.array_equal(preprocess.fit(image, tv), expected)
    bvlc = preprocess.recorded({"preprocessing": BVLC_PREPROCESSING}, 224)
    assert preprocess.intermediate_shape(480, 640, bvlc) == (256, 256)
    resized = tf.image.resize(image.astype(np.float32), (256, 256), method="bilinear", antialias=True).numpy()
    expected = np.clip(np.rint(resized[16:240, 16:240]), 0, 255).astype(np.uint8)
    assert np.array_equal(preprocess.fit(image, bvlc), expected)
    # The whole-image framing pads to a square and resizes to the input; no intermediate size.
    whole = preprocess.fit(image, tv, "fit")
    assert np.array_equal(whole, preprocess.fit(preprocess.frame(image, "fit"), {"input_size": 224}))
    # What a heat map is drawn over: the region of the original that the crop covers.
    assert preprocess.seen(image, tv).shape == (420, 420, 3)
    assert preprocess.seen(image, bvlc).shape == (420, 560, 3)


def test_a_model_without_a_recipe_frames_as_before():
    from alexnet_core.predict.inference import network_view

    image = picture(20, 60, seed=2)
    expected = np.clip(np.rint(preprocess.resize(preprocess.frame(image, "crop"), 32).numpy()), 0, 255).astype(np.uint8)
    assert np.array_equal(network_view(image, 32, "crop"), expected)
    assert np.array_equal(network_view(image, 32, "crop", {"mean": [0.5] * 3, "std": [0.5] * 3}), expected)


@pytest.fixture(scope="module")
def shared_models(tmp_path_factory):
    """One models folder for this module: both generated ImageNet models and two own models,
    so the app's model cache (per file version) loads each once."""
    import os

    folder = tmp_path_factory.mktemp("models")
    before = os.environ.get("ALEXNET_MODELS_DIR")
    os.environ["ALEXNET_MODELS_DIR"] = str(folder)
    try:
        install_generated_imagenet("imagenet-torchvision", "torchvision")
        install_generated_imagenet("imagenet-bvlc", "paper")
        install_own_keras("own-keras")
        install_own_keras("own-dense", conv=False)
    finally:
        os.environ.pop("ALEXNET_MODELS_DIR") if before is None else os.environ.update(ALEXNET_MODELS_DIR=before)
    return folder


@pytest.fixture(autouse=True)
def _models(shared_models, monkeypatch):
    monkeypatch.setenv("ALEXNET_MODELS_DIR", str(shared_models))


def test_predictor_frames_by_the_recipe():
    from alexnet_core.predict.inference import Predictor, load_model, network_view

    loaded = load_model("imagenet-torchvision")
    assert loaded.input_size == 224 and preprocess.has_recipe(loaded.preprocessing)
    image = picture(300, 400, seed=3)
    predictor = Predictor(loaded)
    view = network_view(image, 224, "crop", loaded.preprocessing)
    direct = predictor.probabilities([image])[0]
    assert np.allclose(direct, predictor.probabilities(view[None])[0], atol=1e-6)
    squeezed = predictor.probabilities([np.asarray(Image.fromarray(image).resize((224, 224)))])[0]
    assert not np.allclose(direct, squeezed, atol=1e-6)  # not the whole photo squeezed to 224


# --- The pages -----------------------------------------------------------------------------------


def classify(model: str, image: np.ndarray | None = None, explain: str | None = None) -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT)
    at.switch_page("pages/classify.py")
    at.run()
    assert not at.exception, at.exception
    at.selectbox(key="classify_model").select(model).run()
    assert not at.exception, at.exception
    if image is not None:
        at.get("file_uploader")[0].set_value([("photo.png", png(image), "image/png")])
        at.run()
        assert not at.exception, at.exception
    if explain:
        at.segmented_control(key="classify_explain").set_value(explain).run()
        assert not at.exception, at.exception
    return at


def captions(at) -> str:
    return "\n".join(c.value.replace("\\", "") for c in at.caption)


def image_captions(at) -> list[str]:
    return [i.caption for e in at.get("image") for i in e.proto.imgs]


def test_the_picker_lists_installed_models_first_with_their_published_accuracy():
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT)
    at.switch_page("pages/classify.py")
    at.run()
    picker = at.selectbox(key="classify_model")
    assert [o.split(":")[0] for o in picker.options[:4]] == ["imagenet-bvlc", "imagenet-torchvision", "own-dense",
                                                              "own-keras"]
    assert any(o.startswith("Bundled demo model") for o in picker.options[4:])
    from alexnet_ui.loaders import model_choices

    labels = model_choices()
    assert "top-1 56.5%, top-5 79.1%, ILSVRC-2012 validation, centre crop" in labels["imagenet-torchvision"]
    assert "top-1 57.1%" in labels["imagenet-bvlc"] and "your own model" in labels["own-keras"]


def test_classify_torchvision_top5_words_gradcam_at_224_and_its_64_filters():
    at = classify("imagenet-torchvision", picture(256, 341, seed=4))
    from alexnet_core.predict.inference import Predictor, load_model

    loaded = load_model("imagenet-torchvision")
    top = Predictor(loaded).top_k(picture(256, 341, seed=4), 5)
    bars = at.get("plotly_chart")
    assert len(bars) == 1
    shown = bars[0].proto.spec
    for entry in top:  # the top 5 by their words, as the model ranks them
        assert entry["words"] == words(int(entry["label"][1:])) and entry["words"] in shown
    info = at.info[0].value
    assert "1,000 classes" in info and "224×224" in info and "shorter side to 256 px" in info
    assert "published top-1 56.5%" in info
    assert any("What the network sees: 224×224 pixels" == c for c in image_captions(at))
    assert any("(Grad-CAM at 224×224)" in c for c in image_captions(at))
    target = next(box for box in at.selectbox if box.label == "Grad-CAM for")
    assert target.value == top[0]["label"] and len(target.options) == 1000
    assert target.options[0] == top[0]["words"]  # offered by their words
    at.segmented_control(key="classify_explain").set_value("filters").run()
    assert not at.exception
    assert any(c.startswith("The first layer's 64 kernels") for c in image_captions(at))


def test_classify_bvlc_shows_the_96_filters_in_two_groups_of_48():
    at = classify("imagenet-bvlc", picture(300, 300, seed=5), explain="filters")
    assert "96 kernels in 2 groups of 48" in "\n".join(m.value for m in at.markdown)
    grids = [i for e in at.get("image") for i in e.proto.imgs if i.caption.startswith("GPU ")]
    assert [g.caption for g in grids] == ["GPU 1: kernels 1-48", "GPU 2: kernels 49-96"]
    assert "whole image, stretched to a square to 256 px" in at.info[0].value


def test_explain_figure_splits_the_kernels_as_the_paper_does():
    from alexnet_core.analysis.explain import conv1_figure, conv1_groups
    from alexnet_core.models.anatomy import conv1_kernels
    from alexnet_core.predict.inference import load_model

    model = load_model("imagenet-bvlc").model
    assert conv1_groups(model) == 2
    grids, count = conv1_figure(model, scale=1)
    kernels = conv1_kernels(model)
    assert count == 96 and len(grids) == 2
    assert grids[0].shape == ((11 + 1) * 3 + 1, (11 + 1) * 16 + 1, 3)  # 48 kernels: 3 rows of 16, as Figure 3
    first = kernels[..., 0]
    tile = grids[0][1:12, 1:12].astype(np.float32) / 255
    stretched = (first - first.min()) / (first.max() - first.min())
    assert np.allclose(tile, stretched, atol=1 / 255 + 1e-6)  # the first GPU's first kernel, top left
    second = kernels[..., 48]
    tile = grids[1][1:12, 1:12].astype(np.float32) / 255
    assert np.allclose(tile, (second - second.min()) / (second.max() - second.min()), atol=1 / 255 + 1e-6)
    assert conv1_groups(load_model("imagenet-torchvision").model) == 1


def test_classify_maps_and_neighbours_at_224_name_their_gallery():
    at = classify("imagenet-torchvision", picture(256, 256, seed=6), explain="maps")
    layers = at.selectbox(key="classify_map_layer").options
    assert "relu1" in layers and "pool5" in layers
    at.segmented_control(key="classify_explain").set_value("neighbours").run()
    assert not at.exception
    assert at.segmented_control(key="classify_nn_gallery").value == "examples"  # not 1,000 upscaled images
    assert "Gallery: the example photos (" in captions(at)
    assert len([c for c in image_captions(at) if c.endswith(")") and "(" in c]) >= 1


@pytest.mark.parametrize("model", ["own-dense", "own-keras"])
def test_classify_on_an_own_model_says_what_does_not_apply(model):
    at = classify(model, picture(64, 64, seed=7))
    assert len(at.get("plotly_chart")) == 1  # its top-k still
    assert "Your own model" in at.info[0].value
    no_conv = model == "own-dense"
    assert ("No Grad-CAM for this model" in captions(at)) == no_conv
    assert any(c.startswith("Grad-CAM colours") for c in captions(at).splitlines()) != no_conv  # no legend either
    at.segmented_control(key="classify_explain").set_value("filters").run()
    assert not at.exception
    assert any("No filters to show" in i.value for i in at.info) == no_conv
    at.segmented_control(key="classify_explain").set_value("maps").run()
    assert not at.exception
    assert any("No activation maps for this model" in i.value for i in at.info) == no_conv
    if not no_conv:
        assert at.selectbox(key="classify_map_layer").options == ["my_conv_a", "max_pooling2d", "my_conv_b"]
    at.segmented_control(key="classify_explain").set_value("neighbours").run()
    assert not at.exception


def architecture(model: str) -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT)
    at.switch_page("pages/architecture.py")
    at.run()
    assert not at.exception, at.exception
    at.segmented_control(key="arch_show").set_value("installed").run()
    assert not at.exception, at.exception
    at.selectbox(key="arch_installed").select(model).run()
    assert not at.exception, at.exception
    return at


def test_architecture_shows_the_installed_bvlc_model_and_its_real_filters():
    at = architecture("imagenet-bvlc")
    assert next(m.value for m in at.metric if m.label == "Parameters") == "60,965,224"
    assert next(m.value for m in at.metric if m.label == "Input") == "224×224×3"
    info = at.info[0].value.replace("\\", "")
    assert "`paper` variant" in info and "1,000 classes" in info and "top-1 57.1%" in info
    assert "bvlcalexnet-12.onnx" in info
    table = at.dataframe[0].value
    assert {"conv1", "lrn1", "conv2", "fc8"} <= set(table["name"])
    assert [c for c in image_captions(at) if c.startswith("GPU ")] == ["GPU 1: kernels 1-48", "GPU 2: kernels 49-96"]


def test_architecture_on_torchvision_and_an_own_model():
    at = architecture("imagenet-torchvision")
    assert next(m.value for m in at.metric if m.label == "Parameters") == "61,100,840"
    assert "conv1: 64 kernels" in image_captions(at)
    at.selectbox(key="arch_installed").select("own-dense").run()
    assert not at.exception
    assert "your own model" in at.info[0].value
    assert any("No filters to show" in i.value for i in at.info)


def test_two_sessions_share_one_copy_of_a_large_model(monkeypatch):
    from alexnet_core.predict import inference
    from alexnet_ui import loaders

    loaders._loaded_large_model.clear()
    calls = []
    real = inference.load_model

    def counted(spec):
        calls.append(spec)
        return real(spec)

    monkeypatch.setattr(inference, "load_model", counted)
    first = classify("imagenet-bvlc")
    second = classify("imagenet-bvlc")
    assert calls == ["imagenet-bvlc"]  # loaded once, by the first session
    assert not first.exception and not second.exception
    assert loaders.loaded_model("imagenet-bvlc")[0] is loaders.loaded_model("imagenet-bvlc")[0]
    assert loaders.MAX_LARGE_MODELS <= 2 and loaders._file_bytes("imagenet-bvlc") > loaders.LARGE_MODEL_BYTES
