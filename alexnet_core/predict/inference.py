"""Model loading, the one forward pass and top-k prediction.

Every image the app or the CLI classifies is decoded by inputs.images (`read_image`,
`decode_image`: Pillow, with the decompression-bomb guard on) and becomes model input through
inputs.preprocess (shared with training and evaluation).
"""

from __future__ import annotations

# Imports inside functions are deliberate: TensorFlow and Keras, the modules that reach them
# and NumPy load on first use, so importing this module
# (the app's pages, the command line) stays light.
import hashlib
import json
import os
import stat
import threading
import warnings
import zipfile
import zlib
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from alexnet_core.inputs.images import ImageDecodeError, env_limit, read_image
from alexnet_core.locations import DEMO_RUN
from alexnet_core.predict import novelty, untrusted
from alexnet_core.predict.untrusted import ModelLoadError  # noqa: F401  (raised by every loader; imported from here)
from alexnet_core.settings.choices import DEFAULT_FRAMING, FRAMINGS  # how a photo becomes square
from alexnet_core.store import fileio, layout, model_home

# Keras warns when a model restored from disk is called with a bare tensor instead of a one-element
# list; the call is correct either way.
warnings.filterwarnings("ignore", message="The structure of `inputs` doesn't match the expected structure")


@dataclass
class LoadedModel:
    model: object
    class_names: list[str]
    source: str  # what the user named
    path: Path  # the .keras file
    run_dir: Path | None
    preprocessing: dict = field(default_factory=dict)  # recorded with the model (preprocess.describe)
    class_words: dict = field(default_factory=dict)  # class name -> words, when the data named them

    @property
    def input_size(self) -> int:
        return int(self.model.input_shape[1])

    def preprocess(self, image: np.ndarray) -> np.ndarray:
        """One image (0..255 RGB, any size) -> this model's input, with its own preprocessing."""
        from alexnet_core.inputs.preprocess import preprocess

        p = self.preprocessing
        return preprocess(image, self.input_size, p.get("mean"), p.get("std")).numpy()


def make_forward(loaded: LoadedModel, flip: bool = False):
    """The one compiled forward pass of classification and evaluation alike: a batch of 0..255
    pixels at the model's input size -> probabilities, averaged with the mirror image if `flip`."""
    import tensorflow as tf

    from alexnet_core.inputs.preprocess import standardize
    from alexnet_core.predict.one_image import fast_for_one_image

    model, record = loaded.model, loaded.preprocessing

    def body(batch):
        x = standardize(batch, record)
        probs = model(x, training=False)
        if flip:
            probs = (probs + model(tf.reverse(x, axis=[2]), training=False)) / 2
        return probs

    # One image of a 224-px network goes through XLA (one_image.py says why).
    return fast_for_one_image(tf.function(body, reduce_retracing=True), body, loaded.input_size)


def resolve_model_path(spec: str) -> tuple[Path, Path | None]:
    """MODEL spec (demo | an installed model's name | run folder | .keras or legacy .h5 file) -> (model file,
    run folder or None)."""
    if spec == "demo":
        if not (DEMO_RUN / layout.MODEL).exists():
            raise ModelLoadError(f"The bundled demo model is missing ({DEMO_RUN}); reinstall the app")
        return DEMO_RUN / layout.MODEL, DEMO_RUN
    installed = model_home.find(spec)
    if installed is not None:  # an installed model by name: imagenet-torchvision, a user's opened model
        return installed, None
    path = Path(spec).expanduser()
    if path.is_dir():
        # A finished run's model, else the best checkpoint so far of a run still training.
        for candidate in (path / layout.MODEL, path / layout.CHECKPOINTS / layout.BEST, path / layout.CHECKPOINTS / layout.LAST):
            if candidate.exists():
                return candidate, path
        raise ModelLoadError(f"{path} has no model yet: the run has not finished an epoch")
    if path.suffix != ".keras" and not untrusted.is_h5(path):
        raise ModelLoadError(f"{spec}: give a run folder, a .keras (or legacy Keras .h5) file, 'demo' or an "
                             "installed model's name (`python -m alexnet_core pretrained` lists them)")
    if not path.is_file():
        raise ModelLoadError(f"{path} does not exist")
    return path, path.parent if (path.parent / layout.CONFIG).exists() else None


def model_record(model_path: Path, run_dir: Path | None) -> dict:
    """What travels with a model: its run's config.json, else the `.json` sidecar of a bare .keras file."""
    for candidate in ([run_dir / layout.CONFIG] if run_dir else []) + [model_path.with_suffix(".json")]:
        data = fileio.read_object(candidate)
        if data:
            return data
    return {}


def class_names_for(record: dict, num_classes: int) -> list[str]:
    if isinstance(record.get("class_names"), list):
        names = [str(n) for n in record["class_names"]]
        if len(names) == num_classes:
            return names
    return [f"class {i}" for i in range(num_classes)]


MAX_MODEL_BYTES = env_limit("ALEXNET_MAX_MODEL_BYTES", 2 * 2**30)  # declared weights, float32
MAX_MODEL_CONFIG_BYTES = 16 * 2**20  # config.json inside a .keras archive
MAX_MODEL_METADATA_BYTES = 64 * 2**10  # metadata.json inside a .keras archive
MAX_MODEL_OTHER_BYTES = 2**20  # any other member of a .keras archive (Keras' assets/), each
WEIGHTS_MEMBERS = ("model.weights.h5", "model.weights.npz")  # where Keras keeps a model's weights


def _kernel(c) -> int:
    size = c["kernel_size"]
    return int(np.prod(size)) if isinstance(size, list) else int(size)


def _bias(c, n) -> int:
    return n if c.get("use_bias", True) else 0


_PARAMS = {  # parameters of a layer from its config and its input's channels (the last axis)
    "Dense": lambda c, n: n * c["units"] + _bias(c, c["units"]),
    **{kind: lambda c, n: _kernel(c) * (n // c.get("groups", 1)) * c["filters"] + _bias(c, c["filters"])
       for kind in ("Conv1D", "Conv2D", "Conv3D")},
    "Conv2DTranspose": lambda c, n: _kernel(c) * n * c["filters"] + _bias(c, c["filters"]),
    "DepthwiseConv2D": lambda c, n: (_kernel(c) * n * c.get("depth_multiplier", 1)
                                     + _bias(c, n * c.get("depth_multiplier", 1))),
    "SeparableConv2D": lambda c, n: (_kernel(c) * n * c.get("depth_multiplier", 1)
                                     + n * c.get("depth_multiplier", 1) * c["filters"] + _bias(c, c["filters"])),
    "BatchNormalization": lambda c, n: 4 * n,
    "LayerNormalization": lambda c, n: 2 * n,
    "GroupNormalization": lambda c, n: 2 * n,
    "Normalization": lambda c, n: 2 * n + 1,
}


def _weight_bytes(config: dict) -> int:
    """Bytes of one of a layer's weights under its dtype policy (mixed policies keep float32)."""
    dtype = config.get("dtype")
    if isinstance(dtype, dict):
        dtype = (dtype.get("config") or {}).get("name") if isinstance(dtype.get("config"), dict) else None
    return {"float64": 8, "float16": 2, "bfloat16": 2}.get(dtype, 4) if isinstance(dtype, str) else 4


def _declared_parameters(layers, weigh: bool = False) -> int:
    """The parameters the layers' configs declare (the layers that have weights: dense,
    convolutions, normalisations); in bytes of their dtypes with `weigh`."""
    total = 0
    for layer in layers if isinstance(layers, list) else []:
        if not isinstance(layer, dict):
            continue
        config = layer.get("config") if isinstance(layer.get("config"), dict) else {}
        if isinstance(config.get("layers"), list):  # a nested model
            total += _declared_parameters(config["layers"], weigh)
        shape = (layer.get("build_config") or {}).get("input_shape") if isinstance(layer.get("build_config"), dict) else None
        count = _PARAMS.get(layer.get("class_name"))
        if count and isinstance(shape, list) and shape and isinstance(shape[-1], int):
            try:
                total += int(count(config, shape[-1])) * (_weight_bytes(config) if weigh else 1)
            except (KeyError, TypeError, ValueError, ZeroDivisionError, IndexError, OverflowError):
                continue
    return total


# The optimizer's copies of the weights a checkpoint also holds (momentum, Adam's moments, ...).
_SLOTS = {"SGD": lambda c: int(bool(c.get("momentum"))), "RMSprop": lambda c: 1 + bool(c.get("momentum"))
          + bool(c.get("centered")), "Adagrad": lambda c: 1, "Lion": lambda c: 1, "Adadelta": lambda c: 2,
          "Ftrl": lambda c: 2, "Lamb": lambda c: 2,
          **{kind: lambda c: 2 + bool(c.get("amsgrad")) for kind in ("Adam", "AdamW", "Adamax", "Nadam")}}


def _optimizer_copies(document: dict) -> int:
    compile_config = document.get("compile_config")
    optimizer = compile_config.get("optimizer") if isinstance(compile_config, dict) else None
    if not optimizer:
        return 0
    config = optimizer.get("config") if isinstance(optimizer, dict) else None
    if isinstance(config, dict) and isinstance(config.get("inner_optimizer"), dict):  # LossScaleOptimizer
        optimizer, config = config["inner_optimizer"], config["inner_optimizer"].get("config")
    if not isinstance(config, dict):
        return 3
    slots = _SLOTS.get(optimizer.get("class_name"), lambda c: 3)(config)
    return int(slots) + bool(config.get("use_ema")) + bool(config.get("gradient_accumulation_steps"))


def check_model_file(path: Path) -> None:
    """Refuse, before Keras builds or unpacks anything, a .keras file that is not an archive, whose
    config is oversized, damaged or nested too deep, whose declared weights exceed
    MAX_MODEL_BYTES or what the file holds, or any of whose members would unpack to more than
    it should hold: the weights member more than its config declares (weights and optimizer
    state), config.json and metadata.json more than their limits, anything else over 1 MiB."""

    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # a FIFO would block the reader
            raise ModelLoadError(f"{path.name} is not a regular file (a folder, pipe or device); not loaded")
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise ModelLoadError(f"{path.name} is not a Keras model file (a .keras file is a zip archive): {exc}") from exc
    with archive:
        members = {info.filename: info for info in archive.infolist()}
        config = members.get("config.json")
        if config is None:
            raise ModelLoadError(f"{path.name} has no config.json inside: not a Keras model file")
        if config.file_size > MAX_MODEL_CONFIG_BYTES:
            raise ModelLoadError(f"{path.name}: its config.json is {config.file_size / 2**20:.0f} MiB, over the "
                                 f"{MAX_MODEL_CONFIG_BYTES // 2**20} MiB limit; not loaded")
        try:
            document = fileio.parse_json(archive.read("config.json"))
        except (ValueError, RuntimeError, NotImplementedError, zipfile.BadZipFile, zlib.error, OSError,
                EOFError) as exc:  # RuntimeError: an encrypted member; NotImplementedError: an unknown compression
            raise ModelLoadError(f"{path.name}: its config.json is damaged ({str(exc)[:200]})") from exc
    document = document if isinstance(document, dict) else {}
    untrusted.check_description(document, path.name)  # code named or carried: refused before Keras reads it
    layers = (document.get("config") or {}).get("layers") if isinstance(document.get("config"), dict) else None
    declared = _declared_parameters(layers, weigh=True)
    if declared > MAX_MODEL_BYTES:
        raise ModelLoadError(f"{path.name} declares {declared / 2**30:.1f} GiB of weights, over the "
                             f"{MAX_MODEL_BYTES / 2**30:.1f} GiB limit (ALEXNET_MAX_MODEL_BYTES); not loaded")
    stored = sum(members[name].file_size for name in WEIGHTS_MEMBERS if name in members)
    if declared > 1.1 * stored + 2**20:
        raise ModelLoadError(f"{path.name} declares {declared / 2**20:.0f} MiB of weights but holds "
                             f"{stored / 2**20:.0f} MiB: the file is damaged or not what it claims; not loaded")
    copies = 1 + _optimizer_copies(document)
    weights_budget = int(1.25 * copies * declared) + 4 * 2**20  # with HDF5's own records and a margin
    for name, info in members.items():
        if name in WEIGHTS_MEMBERS:
            budget = weights_budget
            why = (f"its config declares room for (weights{' and optimizer state' if copies > 1 else ''}, "
                   "with a margin): the file is damaged or not what it claims")
        else:
            budget = {"config.json": MAX_MODEL_CONFIG_BYTES, "metadata.json": MAX_MODEL_METADATA_BYTES}.get(
                name, MAX_MODEL_OTHER_BYTES)
            why = f"limit for {name if name in ('config.json', 'metadata.json') else 'any other member'}"
        if info.file_size > budget:
            raise ModelLoadError(f"{path.name}: its {name[:100]} unpacks to {info.file_size / 2**20:.1f} MiB, more "
                                 f"than the {budget / 2**20:.1f} MiB {why}; not loaded")
    if WEIGHTS_MEMBERS[0] in members:
        untrusted.check_weights_member(path, WEIGHTS_MEMBERS[0])  # weights that point outside the file


def check_classifier(model, name: str) -> None:
    """Refuse a model that does not map one square RGB image to class probabilities."""
    import numpy as np

    from alexnet_core.models.variants import MIN_INPUT_SIZE

    inputs, output = model.inputs, model.output_shape
    shape = tuple(inputs[0].shape) if len(inputs) == 1 else None
    expected = "one RGB image (height x width x 3, fixed and square) in and class probabilities out"
    if (shape is not None and len(shape) == 4 and shape[3] == 3 and isinstance(shape[1], int)
            and shape[1] == shape[2] and shape[1] < MIN_INPUT_SIZE):
        raise ModelLoadError(f"{name} takes {shape[1]}x{shape[2]}-pixel images; this app needs at least "
                             f"{MIN_INPUT_SIZE}x{MIN_INPUT_SIZE}.")
    if (shape is None or len(shape) != 4 or shape[3] != 3 or not isinstance(shape[1], int)
            or shape[1] != shape[2]):
        raise ModelLoadError(f"{name} takes input of shape {[tuple(i.shape) for i in inputs]}; this app needs "
                             f"{expected}.")
    if not (isinstance(output, tuple) and len(output) == 2 and isinstance(output[1], int) and output[1] >= 2):
        raise ModelLoadError(f"{name} gives output of shape {output}; this app needs {expected}.")
    probs = np.asarray(model(np.zeros((1, *shape[1:]), np.float32), training=False), dtype=np.float64)
    if not (np.all(probs >= -1e-6) and abs(probs.sum() - 1.0) < 1e-3):
        raise ModelLoadError(f"{name} gives scores that are not probabilities (they do not sum to 1; its last "
                             f"layer is not a softmax); this app needs {expected}.")


def float32_model(model, portable: bool = False):
    """`model` computing in float32: a model trained under a mixed-precision policy keeps it in
    its saved layers (bfloat16 compute is slow on CPUs without AVX512-BF16, and TensorFlow Lite
    cannot convert it). The same weights; the model itself when it is float32 already.

    `portable` also puts Keras' own BatchNormalization in place of the project's, which differs
    only in how it trains: a file saved from the copy loads with Keras alone unless the network
    has another layer of ours (the paper's LRN, torchvision's adaptive pooling)."""
    import keras

    from alexnet_core.models.layers import BatchNormalization

    def ours(layer):
        return portable and isinstance(layer, BatchNormalization)

    if all(getattr(layer.dtype_policy, "compute_dtype", "float32") == "float32" and not ours(layer)
           for layer in model.layers):
        return model

    def clone(layer):
        cls = keras.layers.BatchNormalization if ours(layer) else layer.__class__
        return cls.from_config({**layer.get_config(), "dtype": "float32"})

    copy = keras.models.clone_model(model, clone_function=clone)
    copy.set_weights(model.get_weights())
    return copy


def check_file(path: Path) -> None:
    """Every check a model file passes before Keras reads it: a .keras archive's (check_model_file,
    its config included), or a legacy .h5 file's (untrusted.check_h5_file) under the same caps."""
    if untrusted.is_h5(path):
        untrusted.check_h5_file(path, MAX_MODEL_CONFIG_BYTES, MAX_MODEL_BYTES)
    else:
        check_model_file(path)


def load_keras_file(path: Path, name: str | None = None):
    """A model file checked (check_file: no code, sizes within the caps), loaded with Keras'
    safe_mode=True, checked to be an image classifier this app can use, computing in float32."""
    import keras

    from alexnet_core.models import layers  # noqa: F401  (registers the custom layers)

    path = Path(path)
    check_file(path)
    try:
        model = keras.models.load_model(path, safe_mode=True, compile=False)
    except Exception as exc:
        raise ModelLoadError(f"{path.name} is not a Keras model this app can load safely ({type(exc).__name__}: "
                             f"{str(exc)[:300]})") from exc
    check_classifier(model, name or path.name)
    return float32_model(model)


def load_model(spec: str) -> LoadedModel:
    """Load with Keras safe_mode=True (no arbitrary code: lambdas, pickles), after checking the
    file's size, declared weights and description (untrusted), and only if it is an image
    classifier this app can use."""
    from alexnet_core.inputs.preprocess import recorded

    path, run_dir = resolve_model_path(spec)
    if run_dir is not None and run_dir != DEMO_RUN:
        problems = layout.read_checked(run_dir / layout.CONFIG, layout.CONFIG_SCHEMA)[1]
        if problems:
            raise ModelLoadError(f"{run_dir.name}: {'; '.join(problems)}. Its class names are unknown, so its "
                                 "predictions could not be named.")
    model = load_keras_file(path)
    record = model_record(path, run_dir)
    names = class_names_for(record, int(model.output_shape[-1]))
    words = record.get("class_words") if isinstance(record.get("class_words"), dict) else {}
    words = {n: str(words[n])[:200] for n in names if isinstance(words.get(n), str)}
    return LoadedModel(model, names, spec, path, run_dir, recorded(record, int(model.input_shape[1])), words)


# A prediction is "unsure" below these: top-1 probability, and its lead over the second class.
SURE_PROBABILITY = 0.5
SURE_MARGIN = 0.2
JUDGED_MEMORY = 256  # images whose novelty a Predictor remembers (a page drawn again judges them at once)


def check_framing(framing: str) -> str:
    if framing not in FRAMINGS:
        raise ValueError(f"framing must be one of {', '.join(FRAMINGS)}, got {framing!r}")
    return framing


def frame(image: np.ndarray, framing: str = DEFAULT_FRAMING) -> np.ndarray:
    """A square image from `image` (uint8 HxWx3): its centre square, or all of it on a square
    canvas of its mean colour. Already square images come back unchanged (preprocess.frame)."""
    from alexnet_core.inputs.preprocess import frame

    return frame(image, framing)


def network_view(image: np.ndarray, size: int, framing: str = DEFAULT_FRAMING, record: dict | None = None) -> np.ndarray:
    """Exactly the pixels the network gets (before standardisation): uint8, size x size. With the
    model's preprocessing `record` (LoadedModel.preprocessing) an ImageNet recipe frames it
    (resize to the intermediate size, centre crop: preprocess.fit); without, framed and resized."""
    from alexnet_core.inputs.preprocess import fit

    return fit(image, {**(record or {}), "input_size": int(size)}, framing)


def verdict(probs: np.ndarray, sure_probability: float = SURE_PROBABILITY, sure_margin: float = SURE_MARGIN,
            judged: dict | None = None) -> dict:
    """{'sure': bool, 'top1', 'margin', 'reason', 'calibrated', 'unknown', 'novelty', 'note'}:
    unsure when the image does not look like any of the model's classes (`judged`: the novelty
    part of the verdict, from a calibrated model's Predictor.judge), when the top class has less
    than `sure_probability`, or when it leads the second by less than `sure_margin`. Without a
    calibration only the last two rules apply, and `note` says so and how to calibrate."""
    ordered = np.sort(np.asarray(probs, dtype=float))[::-1]
    top1 = float(ordered[0])
    margin = float(ordered[0] - ordered[1]) if len(ordered) > 1 else top1
    judged = judged or novelty.not_calibrated("")
    reasons = [judged["reason"]] if judged.get("unknown") else []
    if top1 < sure_probability:
        reasons.append(f"the top class has {top1:.0%}, below the {sure_probability:.0%} needed")
    if margin < sure_margin:
        reasons.append(f"it leads the next class by {margin * 100:.0f} points, fewer than the "
                       f"{sure_margin * 100:.0f} needed")
    note = ""
    if not judged.get("calibrated"):
        why = judged.get("note") or "it has no calibration"
        note = (f"Not calibrated for images outside its {len(ordered)} classes ({why}): sure only means the top "
                f"class clearly leads; {novelty.HOW_TO}.")
    return {"sure": not reasons, "top1": top1, "margin": margin, "reason": "; ".join(reasons),
            "calibrated": bool(judged.get("calibrated")), "unknown": judged.get("unknown"),
            "novelty": judged.get("score"), "note": note}


class Predictor:
    """Top-k for images through one compiled function (no per-call model.predict overhead)."""

    def __init__(self, loaded: LoadedModel, flip: bool = False, framing: str = DEFAULT_FRAMING):
        self.loaded = loaded
        self.framing = check_framing(framing)
        self._forward = make_forward(loaded, flip)
        self._flip = flip
        self._lock = threading.Lock()  # one Predictor serves every session of the app
        self._calibration: tuple = (object(), None, "")  # (file stamp, Calibration or None, why not)
        self._judged: OrderedDict = OrderedDict()  # recent images' novelty, for pages drawn again

    def probabilities(self, images: list[np.ndarray] | np.ndarray, taps: list | None = None) -> np.ndarray:
        """uint8/float 0..255 RGB images (any sizes) -> (n, classes) probabilities; images that are
        not square are framed first (`framing`). With `taps` (a list of layer names, see
        novelty.tap_layers) it returns (probabilities, [pooled features per tap]) of the same
        batch in one pass."""
        from alexnet_core.inputs.preprocess import fit, has_recipe, resize

        size, record = self.loaded.input_size, self.loaded.preprocessing
        if isinstance(images, np.ndarray) and images.ndim == 4 and images.shape[1:3] == (size, size):
            batch = images.astype(np.float32)
        elif has_recipe(record):  # the ImageNet recipe: exactly the pixels network_view shows
            batch = np.stack([fit(img, {**record, "input_size": size}, self.framing) for img in images]).astype(np.float32)
        else:
            batch = np.stack([resize(frame(img, self.framing), size).numpy() for img in images]).astype(np.float32)
        return self._answer(batch, taps)

    def _answer(self, batch: np.ndarray, taps: list | None):
        if taps is None:
            return self._forward(batch).numpy()
        probs, feats = novelty.tapped_function(self.loaded.model, self.loaded.preprocessing, taps)(batch)
        probs = self._forward(batch) if self._flip else probs
        return np.asarray(probs), [np.asarray(f) for f in feats]

    def assess(self, images, taps: list[str]) -> tuple[np.ndarray, list[np.ndarray]]:
        """(probabilities, pooled features of each tap) of images, in one pass."""
        return self.probabilities(images, taps=taps)

    def calibration(self) -> tuple[novelty.Calibration | None, str]:
        """(the model's calibration for images outside its classes, '') or (None, why there is
        none); read again whenever its file changes."""
        path = novelty.location(self.loaded)
        now = novelty.stamp(path)
        with self._lock:
            if self._calibration[0] != now:
                calibration, why = novelty.read(path, self.loaded.model) if now else (None, "it has no calibration")
                self._calibration = (now, calibration, why)
                self._judged.clear()
            return self._calibration[1], self._calibration[2]

    def judge(self, images, probs: np.ndarray | None = None, sure_probability: float = SURE_PROBABILITY,
              sure_margin: float = SURE_MARGIN) -> tuple[np.ndarray, list[dict]]:
        """(probabilities, a verdict per image): the softmax rule and, for a calibrated model,
        whether each image looks like any of its classes. Give `probs` when the images'
        probabilities are at hand (a page drawn again): an image judged recently is not run again."""
        calibration, why = self.calibration()
        if calibration is None:
            probs = self.probabilities(images) if probs is None else np.asarray(probs)
            parts = [novelty.not_calibrated(why)] * len(probs)
        else:
            keys = [self._image_key(image) for image in images]
            with self._lock:
                known = [self._judged.get(key) for key in keys]
            if probs is None or any(k is None for k in known):
                computed, feats = self.assess(images, calibration.taps)
                probs = computed if probs is None else np.asarray(probs)
                scores, z = calibration.scores(feats)
                classes = len(self.loaded.class_names)
                known = [calibration.judge(float(s), row, classes) for s, row in zip(scores, z)]
                with self._lock:
                    for key, part in zip(keys, known):
                        self._judged[key] = part
                        self._judged.move_to_end(key)
                    while len(self._judged) > JUDGED_MEMORY:
                        self._judged.popitem(last=False)
            parts = known
        return probs, [verdict(p, sure_probability, sure_margin, part) for p, part in zip(probs, parts)]

    def _image_key(self, image) -> str:
        image = np.ascontiguousarray(image)
        return hashlib.sha1(image.tobytes() + str((image.shape, image.dtype.str, self.framing)).encode()).hexdigest()

    def top_k(self, image: np.ndarray, k: int = 5) -> list[dict]:
        return top_k(self.probabilities([image])[0], self.loaded.class_names, k, self.loaded.class_words)


def top_k(probs: np.ndarray, class_names: list[str], k: int = 5, words: dict | None = None) -> list[dict]:
    order = np.argsort(-probs)[: max(1, min(k, len(probs)))]
    words = words or {}
    return [{"label": class_names[i], "probability": float(probs[i]),
             **({"words": words[class_names[i]]} if class_names[i] in words else {})} for i in order]


def predict_files(loaded: LoadedModel, paths: list[str], k: int = 5, framing: str = DEFAULT_FRAMING) -> list[dict]:
    """The `predict --json` document: one entry per file; unreadable files get an error, not a crash."""
    predictor = Predictor(loaded, framing=framing)
    results = []
    for path in paths:
        try:
            image = read_image(path)
        except ImageDecodeError as exc:
            results.append({"image": str(path), "predictions": [], "error": str(exc)})
            continue
        probs, (judged,) = predictor.judge([image])
        probs = probs[0]
        results.append({"image": str(path), "predictions": top_k(probs, loaded.class_names, k, loaded.class_words), "error": None,
                        "sure": judged["sure"], "unsure_because": judged["reason"] or None,
                        "calibrated": judged["calibrated"], "out_of_classes": judged["unknown"],
                        "novelty": judged["novelty"], **({"note": judged["note"]} if judged["note"] else {})})
    return results


def write_class_names(model_path: Path, class_names: list[str], preprocessing: dict | None = None) -> None:
    """Sidecar for a bare .keras file, so it keeps its class names and preprocessing outside a run folder."""
    document = {"class_names": class_names, **({"preprocessing": preprocessing} if preprocessing else {})}
    model_path.with_suffix(".json").write_text(json.dumps(document))
