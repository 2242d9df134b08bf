"""Evaluate: one accuracy per model (the headline where it measures the headline's data, else how
and why it differs, next to the number), the run's own validation split for its data, Grad-CAM
beside each photo (computed in one batch), and the bundled model's map shipped with it."""

import json
from pathlib import Path

import numpy as np
from streamlit.testing.v1 import AppTest

from alexnet_core.analysis.evaluation import Evaluation
from alexnet_ui import evaluate_view as view
from alexnet_ui.images import side_by_side

ROOT = Path(__file__).resolve().parent.parent


def evaluation(correct: int, n: int, split="val", source="sample") -> Evaluation:
    probs = np.zeros((n, 2), np.float32)
    probs[:correct, 0] = 1.0
    probs[correct:, 1] = 1.0
    return Evaluation(["a", "b"], probs, np.zeros(n, np.int64), None, source, split)


def test_the_headline_is_shown_only_where_its_own_data_was_measured():
    record = {"data": "sample", "split": "val", "n": 1000, "accuracy": 0.893, "headline": True,
              "description": "5,000 held-out CIFAR-10 images"}
    assert view.measures_headline(record, evaluation(893, 1000), "sample", False)
    assert not view.measures_headline(record, evaluation(893, 1000), "sample", True)  # mirror views too
    assert not view.measures_headline(record, evaluation(90, 100), "sample", False)  # other images
    assert not view.measures_headline(record, evaluation(893, 1000, split="train"), "sample", False)
    assert not view.measures_headline(None, evaluation(893, 1000), "sample", False)
    words = view.difference_words(evaluation(885, 1000), record, False).replace("\\", "")  # shown as Markdown
    assert words.startswith("-0.8 points against the model's headline figure, 89.3% validation accuracy on "
                            "5,000 held-out CIFAR-10 images")
    assert "1,000 other images" in words and "about ±2.0 points" in words and "within that noise" in words
    assert "%" not in words.split("figure, ")[0]  # a difference of accuracies is in points


def run_folder(root: Path, data: str, val_split: float) -> Path:
    folder = root / "run"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"variant": "compact", "data": data, "val_split": val_split}))
    return folder


def test_a_runs_own_data_is_split_as_its_training_split_it(tmp_path):
    from alexnet_core.analysis.evaluation import evaluate
    from alexnet_core.inputs.data import load_source
    from tests.helpers import make_image_folder

    data = make_image_folder(tmp_path / "pets", classes=2, per_class=10)
    run = run_folder(tmp_path, str(data), 0.2)
    assert view.run_data(run) == (str(data), 0.2)
    assert view.held_out_share(run, str(tmp_path / "pets" / ".." / "pets")) == 0.2  # the same folder, spelt otherwise
    assert view.held_out_share(run, "sample") == view.DEFAULT_HELD_OUT  # other data: the usual share
    assert view.held_out_share(None, str(data)) == view.DEFAULT_HELD_OUT
    assert len(load_source(str(data), view.held_out_share(run, str(data))).val) == 4  # 2 of each class's 10

    class Loaded:  # what evaluate reads of a model, with an untrained stand-in for its answers
        class_names, class_words, input_size, preprocessing, run_dir = ["class0", "class1"], {}, 16, {}, None
        path = tmp_path / "none.keras"

    import alexnet_core.analysis.evaluation as evaluation_module

    def answers(loaded, split, flip, progress=None):
        return np.full((len(split), 2), 0.5, np.float32), np.arange(len(split))

    original = evaluation_module._predict
    evaluation_module._predict = answers
    try:
        result = evaluate(Loaded(), str(data), "val", val_split=view.held_out_share(run, str(data)), use_cache=False)
    finally:
        evaluation_module._predict = original
    assert result.n == 4 and result.val_split == 0.2


def test_side_by_side_keeps_both_pictures_whole():
    photo = np.zeros((32, 32, 3), np.uint8)
    both = side_by_side(photo, photo + 200)
    assert both.shape == (160, 2 * 160 + 6, 3)
    assert (both[:, :160] == 0).all() and (both[:, 160:166] == 255).all() and (both[:, 166:] == 200).all()


def test_batched_grad_cam_is_each_images_own():
    from alexnet_core.analysis.explain import gradcam, gradcams
    from alexnet_core.models.variants import build_model

    model = build_model("compact", num_classes=3, input_size=16, width=0.25)
    images = np.random.default_rng(0).normal(size=(3, 16, 16, 3)).astype(np.float32)
    heats, used = gradcams(model, images, [2, None, 0])
    assert heats.shape == (3, 16, 16) and used[0] == 2 and used[2] == 0
    for image, heat, cls in zip(images, heats, used):
        alone, same = gradcam(model, image, int(cls))
        assert same == cls and np.allclose(heat, alone, atol=1e-5)


def test_evaluate_page_on_the_bundled_sample():
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180)
    at.switch_page("pages/evaluate.py")
    at.run()
    assert not at.exception, at.exception
    # The sample is not the headline's data: its own accuracy, and how and why it differs, beside it.
    assert [m.label for m in at.metric][:2] == ["Accuracy here", "Top-5 accuracy"]
    assert at.metric[1].help and "five best" in at.metric[1].help
    caption = next(c.value for c in at.caption if "headline figure" in c.value).replace("\\", "")
    assert "points against the model's headline figure" in caption and "89.3%" in caption
    # The bundled model's map ships with it: drawn at once, with no t-SNE to wait for.
    assert not [b for b in at.button if b.key == "eval_map_go"]
    assert at.get("arrow_vega_lite_chart") or at.get("vega_lite_chart")
    # A cell's images, then Grad-CAM: beside each photo, not instead of it.
    at.session_state["eval_cell"] = (3, 5)
    at.run()
    at.toggle(key="cell_cam").set_value(True).run()
    assert not at.exception
    images = [img for element in at.get("image") for img in element.proto.imgs]
    beside = [img for img in images if "left: the photo, right: where it looked" in img.caption]
    assert beside and len(beside) == len(at.session_state["eval_results"][next(iter(
        at.session_state["eval_results"]))].cell(3, 5)[:12])


def test_a_your_classes_run_is_evaluated_on_the_images_its_training_kept_aside(tmp_path):
    """A dataset built on the Your classes page trains holding out a fifth of each class: Evaluate,
    opened on that run's model, starts on that dataset and measures the same fifth."""
    import os

    from alexnet_core.models.variants import build_model
    from alexnet_core.predict.inference import write_class_names
    from alexnet_core.store import catalog, layout, liveness
    from tests.helpers import make_image_folder

    data = make_image_folder(Path(os.environ["ALEXNET_DATA_DIR"]) / "pets", classes=2, per_class=10, size=(16, 16))
    run = catalog.create_run(os.environ["ALEXNET_RUNS_DIR"], "pets-run", {
        "variant": "compact", "data": str(data), "val_split": 0.2, "epochs": 1, "input_size": 16,
        "class_names": ["class0", "class1"]})
    model = build_model("compact", num_classes=2, input_size=16, width=0.25)
    model.save(run / layout.MODEL)
    write_class_names(run / layout.MODEL, ["class0", "class1"], {"input_size": 16, "mean": [0.5] * 3, "std": [0.25] * 3})
    (run / layout.METRICS).write_text("epoch,loss,accuracy,val_loss,val_accuracy\n0,1.0,0.5,1.0,0.75\n")
    liveness.write_status(run, state="finished", started=1.0, message="finished")
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180)
    at.switch_page("pages/dataset.py")
    at.run()
    latest = next(m.value for m in at.markdown if "Latest run" in m.value).replace("\\", "")
    assert "best in-training validation accuracy 75.0% (on the fifth of your images kept aside" in latest
    at.button(key="dataset_evaluate").click().run()  # Evaluate, on this run's model
    assert not at.exception, at.exception
    assert at.title[0].value == "Evaluate" and at.selectbox(key="eval_model").value == str(run)
    assert at.selectbox(key="eval_data").value == str(data)  # the run's own data, picked for it
    assert next(m.value for m in at.metric if m.label == "Images") == "4"  # 2 of each class's 10, as training
    assert any("20% of each class held out as its run trained" in c.value for c in at.caption)
