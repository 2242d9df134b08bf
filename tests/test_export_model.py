"""Deployable exports: SavedModel and TensorFlow Lite (float and int8), each checked against its model."""

import json

import numpy as np
import pytest

from alexnet_core.export import export_model as exporting
from alexnet_core.export.export_model import ExportError, export_model
from tests import helpers


@pytest.mark.parametrize("fmt, int8", [("tflite", False), ("tflite", True), ("savedmodel", False)])
def test_exports_predict_like_the_model(tmp_path, fmt, int8):
    dest = tmp_path / ("model.tflite" if fmt == "tflite" else "model-savedmodel")
    record = export_model("demo", fmt, dest, int8=int8, parity_images=400)
    assert record["parity"]["images"] == 400 and record["parity"]["top1_agreement"] >= 0.99
    assert record["class_names"][0] == "airplane" and record["preprocessing"]["input_size"] == 32
    if fmt == "tflite":
        assert dest.is_file() and json.loads(dest.with_suffix(".json").read_text())["parity"] == record["parity"]
        if int8:
            assert record["bytes"] < record["keras_bytes"] / 3  # int8 weights: a quarter of float32
        import tensorflow as tf

        lite = tf.lite.Interpreter(model_path=str(dest))
        lite.allocate_tensors()
        assert list(lite.get_output_details()[0]["shape"]) == [1, 10]
    else:
        import tensorflow as tf

        restored = tf.saved_model.load(str(dest))
        out = restored.serve(tf.zeros([2, 32, 32, 3])).numpy()
        assert out.shape == (2, 10) and np.allclose(out.sum(axis=1), 1.0, atol=1e-4)
        assert (dest / exporting.SIDECAR).exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".export-")]  # no work folder left


def test_an_export_that_does_not_agree_is_not_kept(tmp_path, monkeypatch):
    monkeypatch.setattr(exporting, "MIN_AGREEMENT", 1.01)  # no export can pass: the check must refuse it
    with pytest.raises(ExportError, match="not kept"):
        export_model("demo", "tflite", tmp_path / "m.tflite", parity_images=100)
    assert list(tmp_path.iterdir()) == []


def test_export_model_cli(tmp_path):
    def cli(*args):
        return helpers.cli("export-model", "demo", *args, timeout=300)

    result = cli("--format", "tflite", "--int8", "--out", str(tmp_path / "demo-int8.tflite"), "--json")
    assert result.returncode == 0, result.stderr[-2000:]
    record = json.loads(result.stdout)
    assert record["int8"] and record["parity"]["images"] == 1000 and record["parity"]["top1_agreement"] >= 0.99
    again = cli("--format", "tflite", "--int8", "--out", str(tmp_path / "demo-int8.tflite"))
    assert again.returncode == 2 and "already exists" in again.stderr
    wrong = cli("--format", "savedmodel", "--int8", "--out", str(tmp_path / "x"))
    assert wrong.returncode == 2 and "--int8 quantises TensorFlow Lite exports only" in wrong.stderr
    (tmp_path / "not-a-run").mkdir()
    nothing = helpers.cli("export-model", str(tmp_path / "not-a-run"), "--format", "tflite", timeout=120)
    assert nothing.returncode == 2 and "Traceback" not in nothing.stderr and "not-a-run" in nothing.stderr
