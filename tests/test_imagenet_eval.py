"""Evaluate at 1,000 classes: an installed ImageNet model (generated weights) on an
ImageNet-layout folder holding a few of its classes (val/<wnid>/*.JPEG and a synset file beside
it). The classes are matched by wnid, the images reach the model as Classify gives them (shorter
side 256, centre crop 224), and the Evaluate page stays usable: the most confused pairs, a
searchable per-class table and the matrix restricted to chosen classes."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from alexnet_core.analysis.evaluation import Evaluation, evaluate
from alexnet_core.inputs.data import DataError, load_source
from tests.imagenet_models import imagenet_torchvision, install_generated_imagenet, wnid, words  # noqa: F401

ROOT = Path(__file__).resolve().parent.parent
# Out of the model's order on purpose: folder order (sorted) is 3, 7, 500, never 0, 1, 2.
CLASSES = (500, 7, 3)
SIZES = ((300, 200), (256, 256), (180, 320))  # landscape, already at the intermediate size, portrait


def make_imagenet_val(root: Path, classes=CLASSES, per_class=2) -> Path:
    """root/val/<wnid>/*.JPEG and root/LOC_synset_mapping.txt (every class of the model, as
    ILSVRC ships it); images of a few sizes, so the recipe's resize and crop both matter."""
    rng = np.random.default_rng(0)
    for c in classes:
        folder = root / "val" / wnid(c)
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            width, height = SIZES[(c + i) % len(SIZES)]
            pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"ILSVRC2012_val_{c:05d}{i}.JPEG", format="JPEG", quality=90)
    (root / "LOC_synset_mapping.txt").write_text("".join(f"{wnid(i)} {words(i)}\n" for i in range(1000)))
    return root


@pytest.fixture
def val_folder(tmp_path):
    return make_imagenet_val(tmp_path / "ilsvrc")


@pytest.fixture
def loaded(imagenet_torchvision):  # noqa: F811
    from alexnet_core.predict.inference import load_model

    return load_model(imagenet_torchvision)


def test_a_val_folder_alone_reads_with_its_synset_file(val_folder):
    data = load_source(str(val_folder))  # val/ and no train/: nothing to train on, all of val/ to evaluate
    assert data.train is None and len(data.val) == 2 * len(CLASSES) and data.test is None
    assert data.split("all").paths == data.val.paths
    for given in (val_folder, val_folder / "val"):  # the ILSVRC folder, or its val/ alone (class folders)
        data = load_source(str(given))
        assert data.class_names == sorted(wnid(c) for c in CLASSES)
        assert data.class_words == {wnid(c): words(c) for c in CLASSES}  # the synset file beside val/
    with pytest.raises(DataError, match="has no 'train' split. Available: val"):
        load_source(str(val_folder)).split("train")


def test_classes_are_mapped_by_wnid_and_pixels_are_classifys(val_folder, loaded):
    import tensorflow as tf

    from alexnet_core.inputs.images import read_image
    from alexnet_core.inputs.preprocess import fit, has_recipe
    from alexnet_core.predict.inference import make_forward

    result = evaluate(loaded, str(val_folder), use_cache=False)
    assert result.split == "val" and result.n == 6 and len(result.classes) == 1000
    folders = [Path(p).parent.name for p in result.paths]
    assert [result.classes[i] for i in result.labels] == folders  # each image under its own wnid
    assert sorted(set(result.labels.tolist())) == sorted(CLASSES)
    assert result.words[wnid(7)] == words(7) and result.label(7) == f"{wnid(7)} thing 7"
    # The model's recipe, as Classify frames a photo: shorter side to 256, centre crop 224.
    assert has_recipe(loaded.preprocessing)
    forward = make_forward(loaded)
    pixels = np.stack([fit(read_image(p), loaded.preprocessing, "crop") for p in result.paths]).astype(np.float32)
    expected = forward(tf.constant(pixels)).numpy()
    np.testing.assert_allclose(result.probs, expected, rtol=1e-4, atol=1e-6)
    summary = result.summary()
    assert np.asarray(summary["confusion_matrix"]).shape == (1000, 1000) and summary["n"] == 6


def test_the_map_places_the_images_by_fc7_of_the_pixels_classify_gives(val_folder, loaded):
    import tensorflow as tf

    from alexnet_core.analysis.embedding_map import build_map, features
    from alexnet_core.analysis.explain import _tap, embedding_layer
    from alexnet_core.inputs.images import read_image
    from alexnet_core.inputs.preprocess import fit, standardize

    result = evaluate(loaded, str(val_folder), use_cache=False)
    made = build_map(loaded, result, use_cache=False)
    assert made.xy.shape == (6, 2) and np.all(np.isfinite(made.xy)) and len(made.thumbnails) == 6
    feats, _ = features(loaded, result, np.arange(result.n))
    pixels = np.stack([fit(read_image(p), loaded.preprocessing, "crop") for p in result.paths]).astype(np.float32)
    tap = _tap(loaded.model, embedding_layer(loaded.model))
    expected = np.asarray(tap(standardize(tf.constant(pixels), loaded.preprocessing), training=False))
    assert feats.shape == (6, 4096)
    np.testing.assert_allclose(feats, expected.reshape(6, -1), rtol=1e-4, atol=1e-5)


def test_a_folder_of_classes_the_model_does_not_know_is_refused_clearly(val_folder, loaded):
    (val_folder / "val" / "tench").mkdir()
    Image.new("RGB", (300, 260), (10, 80, 200)).save(val_folder / "val" / "tench" / "a.JPEG")
    with pytest.raises(DataError) as refused:
        evaluate(loaded, str(val_folder), use_cache=False)
    message = str(refused.value)
    assert "does not know the class 'tench' (1 of the data's 4 class folders)" in message
    assert "It knows 1,000 classes: 'n00000000' (thing 0)" in message and "wnid" in message


def fake(labels, predicted, classes=1000, seed=0, words_for=()):
    """An Evaluation of given labels and top-1 predictions (random probabilities otherwise)."""
    rng = np.random.default_rng(seed)
    probs = rng.random((len(labels), classes)).astype(np.float32) * 0.5
    probs[np.arange(len(labels)), predicted] = 1.0
    probs /= probs.sum(axis=1, keepdims=True)
    return Evaluation([wnid(i) for i in range(classes)], probs, np.asarray(labels), None, "x", "val",
                      words={wnid(i): words(i) for i in words_for})


def test_most_confused_pairs_top5_and_report_at_1000_classes():
    labels = [3] * 5 + [7] * 4 + [500] * 3
    predicted = [3, 9, 9, 9, 600, 7, 3, 3, 7, 500, 9, 9]
    result = fake(labels, predicted, words_for=(3, 7, 9, 500))
    pairs = result.confused_pairs(3)
    rows = list(zip(pairs["true"], pairs["predicted"], pairs["count"]))
    assert rows == [(wnid(3), wnid(9), 3), (wnid(7), wnid(3), 2), (wnid(500), wnid(9), 2)]
    assert pairs["true words"][0] == words(3) and pairs["share"][0] == pytest.approx(3 / 5)
    assert result.confusion_matrix().sum() == 12 and result.confusion_matrix()[3, 9] == 3
    # top-5 by rank equals the sort it replaces
    top = np.argsort(-result.probs, axis=1)[:, :5]
    assert result.top_k_accuracy(5) == pytest.approx((top == result.labels[:, None]).any(axis=1).mean())
    report = result.report()
    assert list(report["class"]) == [wnid(3), wnid(7), wnid(500)] and report["words"][1] == words(7)


def test_confusion_matrix_of_a_large_evaluation_is_quick_and_computed_once():
    import time

    rng = np.random.default_rng(1)
    labels = rng.integers(0, 1000, 10_000)
    result = fake(labels, rng.integers(0, 1000, 10_000))
    start = time.perf_counter()
    first = result.confusion_matrix()
    result.confused_pairs(20), result.top_k_accuracy(5), result.report()
    assert time.perf_counter() - start < 10
    first[0, 0] = 10**6  # a copy: the evaluation's own stays as it was
    assert result.confusion_matrix()[0, 0] != 10**6 and result.confusion_matrix().sum() == 10_000


# --- The Evaluate page ----------------------------------------------------------------------


def evaluate_page(val_folder):
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=240)
    at.switch_page("pages/evaluate.py")
    at.run()
    assert not at.exception, at.exception
    at.selectbox(key="eval_model").select("imagenet-torchvision").run()
    at.selectbox(key="eval_data").select("folder").run()
    at.text_input(key="eval_folder").set_value(str(val_folder)).run()
    assert not at.exception, at.exception
    return at


def test_evaluate_page_at_1000_classes(val_folder, imagenet_torchvision):  # noqa: F811
    at = evaluate_page(val_folder)
    assert not at.error, [e.value for e in at.error]
    assert next(m.value for m in at.metric if m.label == "Images") == "6"
    # The matrix: of the picked classes, starting with those in the data.
    picked = at.multiselect(key="eval_matrix_classes")
    assert set(CLASSES) <= set(picked.value) and len(picked.value) <= 20
    chart = json.loads(at.get("plotly_chart")[0].proto.spec)
    axis = chart["layout"]["xaxis"]["categoryarray"]
    assert len(axis) == len(picked.value) and f"{wnid(7)} thing 7" in axis
    picked.set_value([3, 7]).run()
    chart = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert chart["layout"]["xaxis"]["categoryarray"] == [f"{wnid(3)} thing 3", f"{wnid(7)} thing 7"]
    assert any("2 of the model's 1,000 classes" in c.value for c in at.caption)
    # The most confused pairs, with words, and their images one pick away.
    tables = [t.value for t in at.dataframe]
    pairs = next(t for t in tables if "predicted words" in t.columns)
    assert set(pairs["true"]) <= {wnid(c) for c in CLASSES} and pairs["count"].sum() >= 1
    at.selectbox(key="eval_pair").select(0).run()
    assert not at.exception
    first = pairs.iloc[0]
    assert any(s.value.startswith(f"True {first['true']}") and f"predicted {first['predicted']}" in s.value
               for s in at.subheader)
    # The per-class table, searchable by words.
    at.text_input(key="eval_class_search").set_value("thing 500").run()
    report = next(t.value for t in at.dataframe if "recall" in t.value.columns)
    assert list(report["class"]) == [wnid(500)] and list(report["words"]) == [words(500)]
    at.text_input(key="eval_class_search").set_value("no such class").run()
    assert any("No class in the data matches" in c.value for c in at.caption)
    # The map: drawn on request, coloured by the classes on it.
    at.button(key="eval_map_go").click().run()
    assert not at.exception, at.exception
    spec = json.loads(at.get("vega_lite_chart")[0].proto.spec)
    domain = spec["encoding"]["color"]["scale"]["domain"]  # the true classes first, then those only predicted
    assert domain[:3] == [f"{wnid(c)} thing {c}" for c in sorted(CLASSES)] and len(domain) <= 3 + 6


def test_evaluate_page_names_unknown_wnids(tmp_path, imagenet_torchvision):  # noqa: F811
    folder = tmp_path / "other"
    for name in ("n12345678", "n87654321"):
        (folder / "val" / name).mkdir(parents=True)
        Image.new("RGB", (300, 260), (10, 80, 200)).save(folder / "val" / name / "a.JPEG")
    at = evaluate_page(folder)
    assert "does not know the classes 'n12345678', 'n87654321'" in at.error[0].value
