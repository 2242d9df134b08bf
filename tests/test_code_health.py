"""Rules with one home: explanation caches live as long as their model, Grad-CAM looks at the
last convolution, and a model carries its own preprocessing."""

import gc
import json
import weakref

import numpy as np
import pytest

from alexnet_core.analysis import explain
from alexnet_core.analysis.explain import gradcam, gradcam_layers
from alexnet_core.models.variants import build_model
from alexnet_core.predict.inference import Predictor, load_model, write_class_names


def test_the_tap_cache_lets_a_dropped_model_go():
    before = len(explain._TAPS)  # models other tests still hold keep their entries
    model = build_model("compact", num_classes=3, input_size=32, width=0.25)
    gradcam(model, np.zeros((32, 32, 3), np.float32))
    assert model in explain._TAPS and len(explain._TAPS) == before + 1
    alive = weakref.ref(model)
    del model
    gc.collect()
    assert alive() is None and len(explain._TAPS) == before


@pytest.mark.parametrize("variant,layers", [("compact", ["relu5"]), ("paper", ["relu5"]),
                                            ("two-tower", ["relu5_a", "relu5_b"]), ("torchvision", ["relu5"])])
def test_gradcam_targets_the_last_convolutions_activation(variant, layers):
    model = build_model(variant, width=0.25)
    assert gradcam_layers(model) == layers
    size = model.input_shape[1]
    heat, _ = gradcam(model, np.random.default_rng(0).normal(size=(size, size, 3)).astype(np.float32))
    assert heat.shape == (size, size) and 0.0 <= heat.min() and heat.max() <= 1.0


def test_a_model_uses_its_recorded_preprocessing(tmp_path):
    model = build_model("compact", num_classes=3, input_size=16, width=0.25)
    path = tmp_path / "m.keras"
    model.save(path)
    image = np.random.default_rng(1).integers(0, 255, (16, 16, 3)).astype(np.uint8)
    write_class_names(path, ["a", "b", "c"])
    default = Predictor(load_model(str(path))).probabilities([image])[0]
    write_class_names(path, ["a", "b", "c"], {"input_size": 16, "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]})
    loaded = load_model(str(path))
    assert loaded.preprocessing["mean"] == [0.0, 0.0, 0.0]
    assert np.allclose(loaded.preprocess(image), image / 255.0, atol=1e-6)
    assert not np.allclose(Predictor(loaded).probabilities([image])[0], default)
    assert json.loads(path.with_suffix(".json").read_text())["preprocessing"]["std"] == [1.0, 1.0, 1.0]
