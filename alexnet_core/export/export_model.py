"""Deployable exports of a trained model: a TensorFlow SavedModel, or a TensorFlow Lite file
(float32, or int8 quantised), each checked against the Keras model before it is kept.

The parity check runs the Keras model and the export on the same images (the bundled sample's
1,000 validation images unless told otherwise; no labels are needed) and requires the same top-1
class for at least 99% of them. An export that fails it is deleted and the command fails, so an
export on disk always predicts like its model. A sidecar JSON beside it keeps the class names,
the preprocessing and the parity figures.
"""

from __future__ import annotations

# Imports inside functions are deliberate: TensorFlow and Keras, the modules that reach them
# and NumPy load on first use, so importing this module
# (the app's pages, the command line) stays light.
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from alexnet_core.errors import AlexNetError
from alexnet_core.store import fileio

FORMATS = ("savedmodel", "tflite")
MIN_AGREEMENT = 0.99
SIDECAR = "alexnet_explorer.json"  # inside a SavedModel folder; a .tflite gets NAME.json beside it


class ExportError(AlexNetError, ValueError):
    """An export that cannot be made or does not predict like its model; the message says why."""


def _batches(source: str, size: int, limit: int, preprocessing: dict | None = None):
    """Up to `limit` images of `source` (its validation split, else all of it), standardised with
    the model's recorded `preprocessing` (e.g. Caffe's mean subtraction), else ImageNet's."""
    import numpy as np

    from alexnet_core.inputs.data import load_source, make_dataset

    data = load_source(source, val_split=0.1)
    split = data.val if data.val is not None and len(data.val) else data.split("all")
    standardisation = (preprocessing["mean"], preprocessing["std"]) if preprocessing else None
    batches = make_dataset(split, len(data.class_names), size, 100, standardisation=standardisation)
    return np.concatenate([x.numpy() for x, _ in batches])[:limit]


class _Lite:
    """A TensorFlow Lite model run on a batch at a time."""

    def __init__(self, content: bytes):
        import tensorflow as tf

        self.interpreter = tf.lite.Interpreter(model_content=content)
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]
        self.batch = None

    def __call__(self, x):
        if self.batch != len(x):
            self.interpreter.resize_tensor_input(self.input["index"], list(x.shape))
            self.interpreter.allocate_tensors()
            self.batch = len(x)
        self.interpreter.set_tensor(self.input["index"], x)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self.output["index"])


def _latency_ms(function, x, repeats: int = 30) -> float:
    function(x)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function(x)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000.0


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size


def default_destination(spec: str, fmt: str, int8: bool) -> Path:
    name = Path(spec).name.removesuffix(".keras")
    if fmt == "savedmodel":
        return Path("exports") / f"{name}-savedmodel"
    return Path("exports") / (f"{name}-int8.tflite" if int8 else f"{name}.tflite")


def export_model(spec: str, fmt: str, dest: str | Path | None = None, int8: bool = False,
                 parity_data: str = "sample", parity_images: int = 1000) -> dict:
    """Export MODEL (a run folder, a .keras file or `demo`) and check it; returns the record that
    is also written to the sidecar."""
    import numpy as np
    import tensorflow as tf

    from alexnet_core.predict.inference import load_model

    if fmt not in FORMATS:
        raise ExportError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if int8 and fmt != "tflite":
        raise ExportError("--int8 quantises TensorFlow Lite exports only: add --format tflite")
    loaded = load_model(spec)
    model, size = loaded.model, loaded.input_size
    dest = Path(dest) if dest else default_destination(spec, fmt, int8)
    if dest.exists():
        raise ExportError(f"{dest} already exists: remove it or give another --out")
    dest.parent.mkdir(parents=True, exist_ok=True)
    images = _batches(parity_data, size, parity_images, loaded.preprocessing).astype(np.float32)
    expected = np.concatenate([model(images[i:i + 100], training=False).numpy() for i in range(0, len(images), 100)])

    keras_forward = tf.function(lambda x: model(x, training=False))  # compiled, as the app predicts
    work = Path(tempfile.mkdtemp(prefix=".export-", dir=dest.parent))
    try:
        saved = work / "savedmodel"
        model.export(str(saved), format="tf_saved_model", verbose=False)
        if fmt == "savedmodel":
            restored = tf.saved_model.load(str(saved))  # kept alive: its functions reference its variables
            run = lambda x: restored.serve(tf.constant(x)).numpy()  # noqa: E731
            made = saved
        else:
            converter = tf.lite.TFLiteConverter.from_saved_model(str(saved))
            if int8:  # full integer weights and activations, calibrated on training-like images
                calibration = _batches("sample", size, 200, loaded.preprocessing).astype(np.float32)
                converter.optimizations = [tf.lite.Optimize.DEFAULT]
                converter.representative_dataset = lambda: ([calibration[i:i + 1]] for i in range(len(calibration)))
                converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            content = converter.convert()
            made = work / "model.tflite"
            made.write_bytes(content)
            run = _Lite(content)
        got = np.concatenate([run(images[i:i + 100]) for i in range(0, len(images), 100)])
        agreement = float(np.mean(got.argmax(axis=1) == expected.argmax(axis=1)))
        record = {
            "format": fmt, "int8": int8, "path": str(dest), "bytes": _size(made),
            "source": spec, "class_names": loaded.class_names, "preprocessing": loaded.preprocessing,
            "parity": {"data": parity_data, "images": int(len(images)), "top1_agreement": agreement,
                       "max_probability_difference": float(np.abs(got - expected).max())},
            "keras_bytes": loaded.path.stat().st_size,
            "latency_ms_per_image": {"keras": _latency_ms(lambda x: keras_forward(x).numpy(), images[:1]),
                                     "export": _latency_ms(run, images[:1])},
        }
        if agreement < MIN_AGREEMENT:
            raise ExportError(f"The {fmt}{' int8' if int8 else ''} export agrees with the model on the top class for "
                              f"only {agreement:.1%} of {len(images)} images (at least {MIN_AGREEMENT:.0%} is "
                              "required), so it was not kept.")
        if fmt == "savedmodel":
            (made / SIDECAR).write_text(json.dumps(record, indent=1), encoding="utf-8")
            made.rename(dest)
        else:
            fileio.write_json_atomic(dest.with_suffix(".json"), record)
            with fileio.atomic_write(dest, label="export") as tmp:
                shutil.copyfile(made, tmp)
        return record
    finally:
        shutil.rmtree(work, ignore_errors=True)
