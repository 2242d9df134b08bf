"""An earned "sure": a calibrated model flags images of none of its classes, keeps its own
classes sure, and a missing, damaged or stale calibration falls back to the softmax rule and says
how to calibrate."""

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from alexnet_core import cli
from alexnet_core.inputs.data import load_source
from alexnet_core.predict import novelty
from alexnet_core.predict.inference import Predictor, load_model, predict_files, write_class_names

SIZE = 16
CLASSES = ["warm", "cool"]


def in_class(rng, label: int, n: int) -> np.ndarray:
    """Smooth images: warm (red-orange) or cool (blue-cyan) colour fields with a soft gradient."""
    t = np.linspace(0, 1, SIZE)[None, :, None, None] * rng.uniform(0.2, 0.6, (n, 1, 1, 1))
    base = (np.array([200, 90, 40]) if label == 0 else np.array([40, 110, 200])) * rng.uniform(0.8, 1.1, (n, 1, 1, 3))
    noise = rng.normal(0, 6, (n, SIZE, SIZE, 3))
    return np.clip(base * (1 - t) + 128 * t + noise, 0, 255).astype(np.uint8)


def out_of_class(rng, n: int) -> np.ndarray:
    """Black-and-white checkerboards and stripes: neither colour field."""
    yy, xx = np.mgrid[:SIZE, :SIZE]
    images = []
    for i in range(n):
        step = int(rng.integers(1, 4))
        pattern = ((yy // step + xx // step) % 2) if i % 2 == 0 else ((xx // step) % 2)
        images.append(np.repeat((pattern * 255)[..., None], 3, axis=-1).astype(np.uint8))
    return np.stack(images)


def write_folder(root: Path, rng, per_split: dict) -> Path:
    for split, count in per_split.items():
        for label, name in enumerate(CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i, image in enumerate(in_class(rng, label, count)):
                Image.fromarray(image).save(folder / f"{i:03d}.png")
    return root


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A small two-class network trained here on generated colour fields, with a data folder of its
    classes, calibrated once."""
    import keras

    root = tmp_path_factory.mktemp("novelty")
    rng = np.random.default_rng(0)
    keras.utils.set_random_seed(0)
    inputs = keras.Input((SIZE, SIZE, 3), name="image")
    x = keras.layers.Conv2D(8, 3, padding="same", name="conv1")(inputs)
    x = keras.layers.ReLU(name="relu1")(x)
    x = keras.layers.MaxPooling2D(2, name="pool1")(x)
    x = keras.layers.Conv2D(16, 3, padding="same", name="conv2")(x)
    x = keras.layers.ReLU(name="relu2")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(16, activation="relu", name="fc7")(x)
    x = keras.layers.Dense(2, name="fc8")(x)
    model = keras.Model(inputs, keras.layers.Activation("softmax", name="predictions")(x))
    images = np.concatenate([in_class(rng, 0, 150), in_class(rng, 1, 150)])
    labels = np.repeat([0, 1], 150)
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy")
    model.fit((images / 255.0 - mean) / std, labels, epochs=15, batch_size=32, verbose=0)
    path = root / "tiny.keras"
    model.save(path)
    write_class_names(path, CLASSES)
    data = write_folder(root / "data", rng, {"train": 60, "val": 40})
    loaded = load_model(str(path))
    calibration, report = novelty.calibrate(Predictor(loaded), load_source(str(data)), bank=100)
    novelty.write(calibration, novelty.location(loaded))
    return {"path": path, "data": data, "report": report, "rng": rng}


def test_the_verdict_flags_images_far_from_the_training_features_and_keeps_its_classes_sure(tiny):
    predictor = Predictor(load_model(str(tiny["path"])))
    assert novelty.location(predictor.loaded) == tiny["path"].with_name("tiny.novelty.npz")
    calibration, why = predictor.calibration()
    assert calibration is not None and why == ""
    assert calibration.taps == ["relu1", "relu2", "fc8:input"]
    rng = np.random.default_rng(7)
    fresh = np.concatenate([in_class(rng, 0, 20), in_class(rng, 1, 20)])
    probs, verdicts = predictor.judge(fresh)
    assert (probs.argmax(axis=1) == np.repeat([0, 1], 20)).mean() >= 0.95  # the model learned its classes
    assert np.mean([v["sure"] for v in verdicts]) >= 0.85
    assert all(v["calibrated"] and v["note"] == "" for v in verdicts)
    strange = out_of_class(rng, 20)
    probs, verdicts = predictor.judge(strange)
    flagged = [v for v in verdicts if v["unknown"]]
    assert len(flagged) >= 18, [v["novelty"] for v in verdicts]
    assert all(not v["sure"] and v["reason"].startswith("this does not look like any of my 2 classes: ")
               for v in flagged)
    assert min(v["novelty"] for v in flagged) > calibration.threshold
    # held-out images of its classes (not used to set the threshold) mostly pass the novelty test
    assert tiny["report"]["held_out_kept"] >= 0.85 and tiny["report"]["images"]["held_out"] == 40


def test_a_page_drawn_again_judges_a_known_image_without_another_pass(tiny, monkeypatch):
    predictor = Predictor(load_model(str(tiny["path"])))
    image = out_of_class(np.random.default_rng(3), 1)
    probs, (first,) = predictor.judge(image)
    monkeypatch.setattr(predictor, "assess", lambda *a: pytest.fail("judged again"))
    _, (again,) = predictor.judge(image, probs)
    assert again == first and again["unknown"]


def damaged_copies(path: Path, tmp: Path) -> dict:
    """Calibration files that must each read as 'not calibrated'."""
    good = path.read_bytes()
    copies = {"garbage": b"not a zip at all" * 10, "truncated": good[: len(good) // 2], "empty": b""}
    with zipfile.ZipFile(path) as archive:
        meta = json.loads(str(np.load(path)["meta"][0]))
        members = {name: archive.read(name) for name in archive.namelist()}
    # a bank that declares a million rows: refused from its header, before anything is unpacked
    huge = tmp / "huge.npz"
    arrays = dict(np.load(path))
    arrays["bank0"] = np.zeros((MILLION, novelty.DIMS), np.float16)
    np.savez_compressed(huge, **arrays)
    copies["huge"] = huge.read_bytes()
    for name, change in {"threshold": {"threshold": float("nan")}, "version": {"version": 99},
                         "taps": {"taps": ["no-such-layer"]}, "head": {"head": "0" * 16},
                         "nested": {"taps": [[[[]]]]}}.items():
        altered = tmp / f"{name}.npz"
        doc = {**meta, **change}
        with zipfile.ZipFile(altered, "w") as archive:
            for member, data in members.items():
                if member == "meta.npy":
                    buffer = tmp / "meta.npy"
                    np.save(buffer, np.array([json.dumps(doc)]))
                    data = buffer.read_bytes()
                archive.writestr(member, data)
        copies[name] = altered.read_bytes()
    return copies


MILLION = 1_000_000


def test_a_damaged_or_stale_calibration_falls_back_to_the_softmax_rule_and_says_how_to_calibrate(tiny, tmp_path):
    import shutil

    model = tmp_path / "copy.keras"
    shutil.copy(tiny["path"], model)
    shutil.copy(tiny["path"].with_suffix(".json"), model.with_suffix(".json"))
    calibration = model.with_name("copy.novelty.npz")
    predictor = Predictor(load_model(str(model)))
    image = out_of_class(np.random.default_rng(5), 1)
    _, (plain,) = predictor.judge(image)
    assert not plain["calibrated"] and plain["unknown"] is None
    assert "it has no calibration" in plain["note"]
    assert "python -m alexnet_core calibrate MODEL --data DIR" in plain["note"]
    for name, data in damaged_copies(tiny["path"].with_name("tiny.novelty.npz"), tmp_path).items():
        calibration.write_bytes(data)
        _, (judged,) = predictor.judge(image)
        assert not judged["calibrated"], name
        expected = "another model or another version" if name in ("taps", "head") else "is damaged"
        assert expected in judged["note"] and "calibrate MODEL" in judged["note"], (name, judged["note"])
        assert judged["reason"] == "" or "does not look like" not in judged["reason"]
    calibration.unlink()
    calibration.mkdir()  # not a regular file
    _, (judged,) = predictor.judge(image)
    assert not judged["calibrated"] and "not a regular file" in judged["note"]


def test_predict_json_carries_sure_and_unsure_because(tiny, tmp_path, capsys):
    rng = np.random.default_rng(11)
    strange, familiar = tmp_path / "checks.png", tmp_path / "warm.png"
    Image.fromarray(out_of_class(rng, 1)[0]).save(strange)
    Image.fromarray(in_class(rng, 0, 1)[0]).save(familiar)
    assert cli.main(["predict", str(tiny["path"]), str(strange), str(familiar), "--json"]) == 0
    out_strange, out_familiar = json.loads(capsys.readouterr().out)
    assert out_strange["sure"] is False and out_strange["calibrated"] is True and out_strange["out_of_classes"]
    assert out_strange["unsure_because"].startswith("this does not look like any of my 2 classes")
    assert out_familiar["sure"] is True and out_familiar["unsure_because"] is None
    assert out_familiar["out_of_classes"] is False and "note" not in out_familiar


def test_the_calibrate_command_writes_beside_the_model_and_refuses_other_classes(tiny, tmp_path, capsys):
    import shutil

    model = tmp_path / "other.keras"
    shutil.copy(tiny["path"], model)
    shutil.copy(tiny["path"].with_suffix(".json"), model.with_suffix(".json"))
    assert cli.main(["calibrate", str(model), "--data", str(tiny["data"]), "--bank", "50", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["file"] == str(model.with_name("other.novelty.npz")) and Path(doc["file"]).is_file()
    assert doc["images"] == {"bank": 50, "calibration": 40, "held_out": 40} and 0 <= doc["held_out_sure"] <= 1
    wrong = tmp_path / "wrong"
    for name in ("warm", "dog"):
        (wrong / name).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(in_class(np.random.default_rng(i), 0, 1)[0]).save(wrong / name / f"{i}.png")
    assert cli.main(["calibrate", str(model), "--data", str(wrong)]) == 2
    assert "classes the model does not know ('dog')" in capsys.readouterr().err
    assert cli.main(["calibrate", str(model), "--data", str(tiny["data"]), "--keep", "1.5"]) == 2
    assert "--keep must be" in capsys.readouterr().err


def test_the_installed_models_calibration_lives_in_its_folder(tiny):
    from alexnet_core.store import model_home

    with model_home.installing("tiny") as folder:
        (folder / model_home.MODEL).write_bytes(tiny["path"].read_bytes())
        (folder / model_home.RECORD).write_text(json.dumps({"class_names": CLASSES}))
    loaded = load_model("tiny")
    assert novelty.location(loaded) == model_home.model_dir("tiny") / novelty.CALIBRATION


def demo_probes() -> np.ndarray:
    """Two generated images of no CIFAR-10 class: a flat red-to-blue gradient and colour noise."""
    ramp = np.linspace(0, 255, 32)[None, :].repeat(32, axis=0)
    gradient = np.stack([255 - ramp, np.zeros_like(ramp), ramp], axis=-1)
    noise = np.random.default_rng(0).integers(0, 256, (32, 32, 3))
    return np.stack([gradient, noise]).astype(np.uint8)


def test_the_demo_models_shipped_calibration_flags_a_generated_image_softmax_calls_sure():
    from alexnet_core.locations import DEMO_RUN
    from alexnet_core.predict.inference import verdict

    assert (DEMO_RUN / novelty.CALIBRATION).is_file()
    predictor = Predictor(load_model("demo"))
    calibration, why = predictor.calibration()
    assert calibration is not None, why
    assert calibration.meta["held_out"]["held_out_sure"] >= 0.9  # in-class images stay sure, measured on held-out
    probs, verdicts = predictor.judge(demo_probes())
    for p, judged in zip(probs, verdicts):
        assert verdict(p)["sure"], p  # the softmax rule alone calls it sure (airplane, bird) ...
        assert judged["unknown"] and not judged["sure"]  # ... the calibrated verdict does not
        assert judged["reason"].startswith("this does not look like any of my 10 classes")
    cat = Path(__file__).resolve().parent.parent / "assets" / "examples" / "cat.jpg"
    (result,) = predict_files(load_model("demo"), [str(cat)])
    assert result["calibrated"] and result["out_of_classes"] is False


def test_the_classify_page_says_an_image_is_none_of_the_demo_models_classes():
    import io

    from streamlit.testing.v1 import AppTest

    root = Path(__file__).resolve().parent.parent
    at = AppTest.from_file(str(root / "app.py"), default_timeout=180)
    at.switch_page("pages/classify.py")
    at.run()
    buffer = io.BytesIO()
    Image.fromarray(demo_probes()[0]).save(buffer, "PNG")
    at.get("file_uploader")[0].set_value([("gradient.png", buffer.getvalue(), "image/png")])
    at.run()
    assert not at.exception, at.exception
    assert any("none of its classes" in m.value for m in at.markdown)
    reasons = [c.value for c in at.caption if c.value.startswith("Unsure because")]
    assert len(reasons) == 1 and "this does not look like any of my 10 classes" in reasons[0]
    assert not any("Not calibrated" in c.value for c in at.caption)  # the demo model is calibrated


def test_the_tapped_pass_is_dropped_with_its_model():
    import gc
    import weakref

    from alexnet_core.inputs.preprocess import describe
    from alexnet_core.models.variants import build_model

    before = len(novelty._TAPPED)
    model = build_model("compact", num_classes=3, input_size=32, width=0.25)
    taps = novelty.tap_layers(model)
    assert taps[-1] == "fc8:input" and len(taps) <= novelty.MAX_TAPS
    probs, feats = novelty.tapped_function(model, describe(32), taps)(np.zeros((2, 32, 32, 3), np.float32))
    assert probs.shape == (2, 3) and [f.shape[1] for f in feats] == novelty.tap_widths(model, taps)
    assert len(novelty._TAPPED) == before + 1
    alive = weakref.ref(model)
    del model, probs, feats
    gc.collect()
    assert alive() is None and len(novelty._TAPPED) == before
