"""Image decoding of hostile and odd files, class matching, one preprocessing path, Grad-CAM,
evaluation numbers on a model whose answers are known, and the evaluate/predict CLI."""

import io
import json

import keras
import numpy as np
import pytest
from PIL import Image

from alexnet_core.analysis.evaluation import evaluate, map_labels
from alexnet_core.analysis.explain import conv1_filters, gradcam, nearest, overlay
from alexnet_core.inputs.data import DataError
from alexnet_core.inputs.images import ImageDecodeError, decode_image
from alexnet_core.inputs.preprocess import preprocess
from alexnet_core.predict.inference import ModelLoadError, Predictor, load_model, predict_files, write_class_names
from tests import helpers
from tests.helpers import make_image_folder


def png_bytes(image, fmt="PNG", **kw):
    buf = io.BytesIO()
    image.save(buf, fmt, **kw)
    return buf.getvalue()


# --- decoding -----------------------------------------------------------------------------

@pytest.mark.parametrize("mode, value", [("L", 128), ("LA", (128, 255)), ("P", 3), ("RGBA", (10, 20, 30, 255)),
                                         ("CMYK", (0, 0, 0, 0)), ("I;16", 65535), ("F", 0.5), ("RGB", (1, 2, 3))])
def test_modes_convert_to_rgb(mode, value):
    image = Image.new(mode, (5, 4), value)
    fmt = "TIFF" if mode in ("CMYK", "I;16", "F") else "PNG"
    out = decode_image(png_bytes(image, fmt), f"x.{fmt.lower()}")
    assert out.shape == (4, 5, 3) and out.dtype == np.uint8
    if mode == "I;16":
        assert out.max() == 255
    if mode == "F":
        assert 120 <= out[0, 0, 0] <= 130


def test_transparency_is_composited_on_white():
    out = decode_image(png_bytes(Image.new("RGBA", (2, 2), (0, 0, 0, 0))))
    assert (out == 255).all()


def test_exif_orientation_is_applied():
    image = Image.new("RGB", (6, 2), (200, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    out = decode_image(png_bytes(image, "JPEG", exif=exif), "rotated.jpg")
    assert out.shape[:2] == (6, 2)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF"])
def test_accepted_formats(fmt):
    assert decode_image(png_bytes(Image.new("RGB", (3, 3), (9, 90, 200)), fmt), "x").shape == (3, 3, 3)


def test_gif_first_frame():
    frames = [Image.new("P", (4, 4), i) for i in (1, 2, 3)]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:])
    assert decode_image(buf.getvalue(), "anim.gif").shape == (4, 4, 3)


@pytest.mark.parametrize("data, message", [
    (b"", "empty"),
    (b"hello, I am text", "not an image"),
    (b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"></svg>', "SVG"),
    (b"<svg></svg>", "SVG"),
    (b"%PDF-1.4 nothing", "not an image"),
])
def test_bad_files_get_a_clear_message(data, message):
    with pytest.raises(ImageDecodeError, match=message):
        decode_image(data, "upload.jpg")


def test_truncated_image():
    data = png_bytes(Image.effect_noise((64, 64), 50).convert("RGB"), "JPEG")
    with pytest.raises(ImageDecodeError, match="damaged or truncated"):
        decode_image(data[: len(data) // 2], "half.jpg")


def test_zero_pixel_image():
    data = png_bytes(Image.new("RGB", (1, 1)), "PNG")
    # Patch the IHDR width to 0 (bytes 16-19) so the header claims no pixels.
    broken = data[:16] + (0).to_bytes(4, "big") + data[20:]
    with pytest.raises(ImageDecodeError):
        decode_image(broken, "zero.png")


def test_decompression_bomb_is_refused(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(ImageDecodeError, match="decompression bomb"):
        decode_image(png_bytes(Image.new("RGB", (100, 100))), "bomb.png")


def test_predict_files_keeps_going_past_bad_files(tmp_path):
    model = colour_model(tmp_path)
    good = tmp_path / "red.png"
    Image.new("RGB", (10, 10), (250, 0, 0)).save(good)
    bad = tmp_path / "fake.jpg"
    bad.write_text("not an image")
    out = predict_files(load_model(str(model)), [str(bad), str(good), str(tmp_path / "missing.png")], k=2)
    assert out[0]["error"] and "not an image" in out[0]["error"] and out[0]["predictions"] == []
    assert out[1]["error"] is None and out[1]["predictions"][0]["label"] == "red"
    assert len(out[1]["predictions"]) == 2
    assert "cannot read" in out[2]["error"]


# --- a model whose answers are known --------------------------------------------------------

def colour_model(tmp_path, classes=("red", "green", "blue")):
    """Predicts the dominant colour channel: probabilities from the per-channel image means."""
    inputs = keras.Input((8, 8, 3), name="image")
    x = keras.layers.Conv2D(3, 1, name="conv1", use_bias=False)(inputs)
    x = keras.layers.ReLU(name="relu1")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(3, name="fc8", activation="softmax")(x)
    model = keras.Model(inputs, outputs)
    model.get_layer("conv1").set_weights([np.eye(3).reshape(1, 1, 3, 3) * 1.0])
    model.get_layer("fc8").set_weights([np.eye(3) * 20.0, np.zeros(3)])
    path = tmp_path / "colour.keras"
    model.save(path)
    write_class_names(path, list(classes))
    return path


def colour_folder(root, wrong=0):
    """3 classes x 4 images of their colour; `wrong` blue images filed under red."""
    colours = {"red": (250, 0, 0), "green": (0, 250, 0), "blue": (0, 0, 250)}
    for name, rgb in colours.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(4):
            Image.new("RGB", (8, 8), rgb).save(root / name / f"{i}.png")
    for i in range(wrong):
        Image.new("RGB", (8, 8), colours["blue"]).save(root / "red" / f"w{i}.png")
    return root


def test_evaluation_numbers_on_a_known_model(tmp_path):
    model = load_model(str(colour_model(tmp_path)))
    result = evaluate(model, str(colour_folder(tmp_path / "data", wrong=2)), "all")
    assert result.n == 14
    assert result.accuracy() == pytest.approx(12 / 14)
    assert result.top_k_accuracy(2) == 1.0 or result.top_k_accuracy(2) > result.accuracy()
    cm = result.confusion_matrix()
    assert cm.tolist() == [[4, 0, 2], [0, 4, 0], [0, 0, 4]]  # rows true red/green/blue
    assert list(result.cell(0, 2)) == sorted(result.cell(0, 2), key=lambda i: -result.confidence[i])
    assert len(result.cell(0, 2)) == 2 and len(result.mistakes()) == 2
    report = result.report().set_index("class")
    assert report.loc["red", "recall"] == pytest.approx(4 / 6)
    assert report.loc["blue", "precision"] == pytest.approx(4 / 6)
    doc = result.summary()
    assert set(doc) == {"n", "accuracy", "top5_accuracy", "classes", "confusion_matrix"}
    cached = evaluate(model, str(tmp_path / "data"), "all")  # from the eval cache
    np.testing.assert_array_equal(cached.probs, result.probs)


def test_classes_match_by_name_not_position(tmp_path):
    # The folder's classes sort as blue, green, red; the model's order is red, green, blue.
    model = load_model(str(colour_model(tmp_path, classes=("red", "green", "blue"))))
    data = colour_folder(tmp_path / "data")
    result = evaluate(model, str(data), "all")
    assert result.accuracy() == 1.0
    assert list(map_labels(["blue", "red"], ["red", "green", "blue"], np.array([0, 1]))) == [2, 0]


def test_unknown_class_is_an_error_that_names_it(tmp_path):
    model = load_model(str(colour_model(tmp_path)))
    data = colour_folder(tmp_path / "data")
    (data / "purple").mkdir()
    Image.new("RGB", (8, 8), (120, 0, 120)).save(data / "purple" / "0.png")
    with pytest.raises(DataError, match="does not know the class 'purple'"):
        evaluate(model, str(data), "all")


def test_one_preprocessing_path_page_cli_and_evaluate_agree(tmp_path):
    """The same file through evaluate (tf.data), the CLI (predict) and the page (upload bytes)."""
    model_path = colour_model(tmp_path)
    folder = tmp_path / "data"
    make_image_folder(folder, classes=3, per_class=2, size=(13, 21), fmt="jpg")
    for i, name in enumerate(["red", "green", "blue"]):
        (folder / f"class{i}").rename(folder / name)
    loaded = load_model(str(model_path))
    result = evaluate(loaded, str(folder), "all", use_cache=False)
    path = result.paths[3]
    cli = helpers.cli("predict", str(model_path), path, "--json", "--top-k", "3", timeout=300)
    cli_probs = {p["label"]: p["probability"] for p in json.loads(cli.stdout)[0]["predictions"]}
    page_probs = Predictor(loaded).probabilities([decode_image(open(path, "rb").read(), "upload.jpg")])[0]
    for i, name in enumerate(loaded.class_names):
        assert result.probs[3, i] == pytest.approx(page_probs[i], abs=1e-6)
        assert cli_probs[name] == pytest.approx(page_probs[i], abs=1e-6)


def test_model_loading_errors(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model(str(tmp_path / "nope.keras"))
    with pytest.raises(ModelLoadError, match="give a run folder, a .keras"):
        load_model(str(tmp_path / "model.pkl"))
    (tmp_path / "fake.keras").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(ModelLoadError, match="not a Keras model"):
        load_model(str(tmp_path / "fake.keras"))
    (tmp_path / "run").mkdir()
    with pytest.raises(ModelLoadError, match="no model yet"):
        load_model(str(tmp_path / "run"))


def test_unsafe_lambda_model_is_refused(tmp_path):
    inputs = keras.Input((4,))
    outputs = keras.layers.Lambda(lambda x: x * 2)(inputs)
    keras.Model(inputs, outputs).save(tmp_path / "lambda.keras")
    with pytest.raises(ModelLoadError, match="refused before anything in it was loaded.*Lambda layer"):
        load_model(str(tmp_path / "lambda.keras"))


# --- explanations -------------------------------------------------------------------------

def test_gradcam_shape_range_and_focus():
    from alexnet_core.models.variants import build_model

    model = build_model("compact", width=0.25)
    image = np.random.default_rng(0).uniform(0, 255, (32, 32, 3)).astype(np.float32)
    heat, cls = gradcam(model, preprocess(image, 32).numpy())
    assert heat.shape == (32, 32) and 0.0 <= heat.min() and heat.max() <= 1.0
    assert cls == int(np.argmax(model(preprocess(image[None], 32), training=False)))
    shown = overlay(image.astype(np.uint8), heat)
    assert shown.shape == (32, 32, 3) and shown.dtype == np.uint8
    grid = conv1_filters(model)
    assert grid.ndim == 3 and grid.shape[2] == 3


def test_nearest_neighbours():
    bank = np.eye(4)
    order, sims = nearest(np.array([0.0, 1.0, 0.0, 0.0]), bank, k=2)
    assert order[0] == 1 and sims[0] == pytest.approx(1.0)


# --- the CLI contract ---------------------------------------------------------------------

def test_evaluate_cli_json(tmp_path):
    model = colour_model(tmp_path)
    data = colour_folder(tmp_path / "data", wrong=1)
    result = helpers.cli("evaluate", str(model), "--data", str(data), "--split", "all", "--json", timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    doc = json.loads(result.stdout)
    assert doc["n"] == 13 and doc["classes"] == ["red", "green", "blue"]
    assert doc["confusion_matrix"][0] == [4, 0, 1]
    assert "evaluating [" in result.stderr  # the progress bar goes to stderr
    bad = helpers.cli("evaluate", str(model), "--data", str(tmp_path / "none"), timeout=300)
    assert bad.returncode == 2 and "does not exist" in bad.stderr and "Traceback" not in bad.stderr


def test_images_of_an_evaluation_skip_what_the_pipeline_dropped(tmp_path):
    model = load_model(str(colour_model(tmp_path)))
    data = colour_folder(tmp_path / "data")
    good = png_bytes(Image.effect_noise((64, 64), 50).convert("RGB"), "JPEG")
    (data / "red" / "00-broken.jpg").write_bytes(good[: len(good) // 2])  # sorts first, dropped by tf.data
    result = evaluate(model, str(data), "all")
    assert result.n == 12 and not any("broken" in p for p in result.paths)
    for i, image in zip(range(result.n), result.images(range(result.n))):
        assert int(image.reshape(-1, 3).mean(axis=0).argmax()) == result.labels[i]


def test_framing_crops_the_centre_or_fits_the_whole_image():
    from alexnet_core.predict.inference import frame, network_view

    image = np.zeros((20, 60, 3), np.uint8)
    image[:, :20] = (255, 0, 0)  # red left third, green middle, blue right third
    image[:, 20:40] = (0, 255, 0)
    image[:, 40:] = (0, 0, 255)
    crop = frame(image, "crop")
    assert crop.shape == (20, 20, 3) and (crop == (0, 255, 0)).all()  # only the middle third
    fit = frame(image, "fit")
    assert fit.shape == (60, 60, 3)
    assert (fit[20:40] == image).all()  # all of it, centred
    assert (fit[0, 0] == image.reshape(-1, 3).mean(axis=0).astype(np.uint8)).all()  # border: mean colour
    square = np.full((8, 8, 3), 7, np.uint8)
    assert frame(square, "crop") is square and frame(square, "fit") is square
    view = network_view(image, 32, "crop")
    assert view.shape == (32, 32, 3) and view.dtype == np.uint8 and (view == (0, 255, 0)).all()
    with pytest.raises(ValueError, match="framing"):
        frame(image, "stretch")


def test_verdict_is_unsure_below_either_threshold():
    from alexnet_core.predict.inference import verdict

    assert verdict(np.array([0.8, 0.1, 0.1]))["sure"]
    low = verdict(np.array([0.45, 0.1, 0.45]))
    assert not low["sure"] and "45%" in low["reason"] and "50%" in low["reason"]
    close = verdict(np.array([0.55, 0.4, 0.05]))
    assert not close["sure"] and "by 15 points, fewer than the 20 needed" in close["reason"]
    assert verdict(np.array([0.55, 0.4, 0.05]), sure_margin=0.1)["sure"]


def test_cli_predict_reports_framing_and_sureness(tmp_path):
    from alexnet_core.predict.inference import load_model, predict_files

    wide = tmp_path / "wide.png"
    Image.fromarray(np.tile(np.linspace(0, 255, 90, dtype=np.uint8)[None, :, None], (30, 1, 3))).save(wide)
    loaded = load_model("demo")
    crop, fit = predict_files(loaded, [str(wide)], 3, "crop")[0], predict_files(loaded, [str(wide)], 3, "fit")[0]
    for result in (crop, fit):
        assert isinstance(result["sure"], bool)
        assert (result["unsure_because"] is None) == result["sure"]
    assert crop["predictions"] != fit["predictions"]  # a different square reaches the network
