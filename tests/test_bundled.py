"""The bundled demo run and sample: present, loadable safely, as accurate as recorded, small."""

from pathlib import Path

import keras
import pytest

from alexnet_core.analysis.evaluation import evaluate
from alexnet_core.inputs.data import load_source
from alexnet_core.locations import DEMO_RUN, SAMPLE_DIR
from alexnet_core.predict.inference import load_model
from alexnet_core.store import catalog, fileio, layout, liveness
from alexnet_core.train.snapshots import read_timeline
from tests.helpers import with_keras_alone

MAX_MODEL_BYTES = 25 * 2**20
MAX_SAMPLE_BYTES = 5 * 2**20


def test_demo_run_is_a_complete_read_only_run():
    for name in (layout.CONFIG, layout.STATUS, layout.METRICS, layout.MODEL, layout.READ_ONLY):
        assert (DEMO_RUN / name).exists(), name
    assert liveness.read_status(DEMO_RUN)["state"] == "finished"
    metrics = layout.read_metrics(DEMO_RUN)
    assert len(metrics) == layout.read_config(DEMO_RUN)["epochs"]
    # 89.32% single view on the 5,000 held-out images (90.34% with flip averaging, docs/DEMO_MODEL.md):
    # the best epoch in training, and the saved model computing in float32 as `export` recorded it
    assert metrics["val_accuracy"].max() >= 0.886
    headline = catalog.headline_accuracy(DEMO_RUN)
    assert headline["n"] == 5000 and headline["accuracy"] >= 0.886 and "single view" in headline["description"]
    assert len(read_timeline(DEMO_RUN, len(metrics), 10).epochs) == len(metrics)  # a snapshot for every epoch
    assert (DEMO_RUN / layout.MODEL).stat().st_size <= MAX_MODEL_BYTES


def test_the_headline_figure_reads_the_same_claim_from_any_record():
    demo = catalog.headline_words(catalog.headline_accuracy(DEMO_RUN))
    assert demo["value"] == "89.3%" and demo["label"] == "Validation accuracy"
    assert demo["sentence"].startswith("89.3% validation accuracy on 5,000 held-out CIFAR-10 images")
    assert demo["sentence"].count("single view") == 1 and demo["sentence"].endswith("float32")
    bare = catalog.headline_words({"data": "sample", "split": "val", "n": 1000, "accuracy": 0.8851, "flip": True})
    assert bare["sentence"] == ("88.5% validation accuracy on 1,000 images of the validation split of sample, "
                                "averaged with mirror images, float32")
    assert catalog.headline_words({"data": "sample", "n": 3}) is None and catalog.headline_words(None) is None
    folder = catalog.headline_words({"data": "/home/someone/datasets/cifar10/train", "split": "val", "n": 10,
                                     "accuracy": 0.5})  # `export --evaluate` on a folder, with no description
    assert "someone" not in folder["sentence"] and "of the folder 'cifar10/train'" in folder["sentence"]


def test_demo_model_loads_safely_and_reproduces_its_recorded_sample_accuracy():
    keras.models.load_model(DEMO_RUN / layout.MODEL, safe_mode=True)
    recorded = fileio.read_json(DEMO_RUN / layout.STATUS)["evaluations"][0]
    assert recorded["data"] == "sample" and recorded["split"] == "val"
    result = evaluate(load_model("demo"), "sample", "val", use_cache=False)
    assert result.n == recorded["n"] == 1000
    assert result.accuracy() == pytest.approx(recorded["accuracy"], abs=1e-9)
    assert result.top_k_accuracy(5) == pytest.approx(recorded["top5_accuracy"], abs=1e-9)


def test_demo_model_loads_with_keras_alone():
    """`export` wrote Keras' own layers: other code needs no import of ours to use the bundled model."""
    assert with_keras_alone(DEMO_RUN / layout.MODEL, "m.output_shape") == [None, 10]


def test_sample_is_small_and_from_the_validation_files():
    data = load_source("sample")
    assert len(data.class_names) == 10 and len(data.val) == 1000 and len(data.train) == 2000
    assert all(4500 <= int(Path(p).stem) <= 4999 for p in data.val.paths)  # never the model's training files
    size = sum(p.stat().st_size for p in SAMPLE_DIR.rglob("*") if p.is_file())
    assert size <= MAX_SAMPLE_BYTES


def test_the_epoch_animation_says_its_figures_are_in_training_ones_and_names_the_headline(tmp_path):
    from alexnet_core.analysis.charts import epoch_timeline_figure
    from alexnet_ui.timeline import differs_from_headline

    config = layout.read_config(DEMO_RUN)
    timeline = read_timeline(DEMO_RUN, len(layout.read_metrics(DEMO_RUN)), 10)
    fig = epoch_timeline_figure(timeline, config["class_names"], config["epochs"])
    assert fig.data[0].text[0].startswith("Epoch 120 of 120: in-training validation accuracy 89.")
    assert fig.frames[0].data[0].text[0].startswith("Epoch 1 of 120: in-training validation accuracy ")
    said = differs_from_headline(DEMO_RUN, config)
    assert "under the run's bf16 precision" in said and "headline figure is 89\\.3% validation accuracy on 5,000" in said
    assert "no headline figure yet" in differs_from_headline(tmp_path, {"mixed_precision": "off"})
