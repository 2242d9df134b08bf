"""Whether an image looks like any of a model's classes at all: the novelty score behind an
earned "sure".

The softmax alone cannot say "none of my classes": it shares the image out among the classes it
knows, so a photo of a person or a texture can still give one of them 90%. What can: how far
what the network sees in the image is from what it saw in its training images. For every image
the score takes the activations of the network's activation layers (its ReLUs, or its tanh units
in a network built to test the paper's ReLU claim; each feature map's mean and spread over the
image, so colours and textures count as well as parts and objects) and the
features its last layer reads (fc7 in AlexNet), and measures, layer by layer, the cosine
distance to the k nearest of a sample of training images (Sun et al. 2022, "Out-of-distribution
detection with deep nearest neighbors", over several layers). Each layer's distance is put on
the scale of in-class held-out images (minus their mean, over their spread) and the score is the
mean over the layers.

A calibration holds, per layer, a projection to at most 64 dimensions (scikit-learn's PCA of the
sample), the projected sample (the bank), the layer's mean and spread on calibration images,
and the threshold: the score that `keep` (96%) of in-class calibration images stay under. It is
measured again on other held-out images of the same classes (`meta["held_out"]`). It lives with
the model (`location`): `novelty.npz` in a run folder (the bundled demo run ships its own), in an
installed model's folder, or `NAME.novelty.npz` beside a bare .keras file; `python -m
alexnet_core calibrate MODEL --data DIR` writes it. A file that is missing, damaged, oversized
or made for another version of the model means "not calibrated": the verdict falls back to the
softmax rule and says so; nothing here raises on a bad file.
"""

from __future__ import annotations

# Imports inside functions are deliberate: TensorFlow, Keras and scikit-learn load on first use,
# so importing this module (the app's pages, the command line) stays light.
import hashlib
import json
import math
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from alexnet_core import locations
from alexnet_core.errors import AlexNetError
from alexnet_core.inputs.images import ImageDecodeError, read_image
from alexnet_core.store import fileio, model_home

CALIBRATION = "novelty.npz"  # in a run folder or an installed model's folder
SIDECAR_SUFFIX = ".novelty.npz"  # beside a bare .keras file: NAME.novelty.npz
METHOD = "knn-layers-1"
VERSION = 1
KEEP = 0.96  # the share of in-class calibration images the threshold keeps
K = 10  # nearest training images per layer
BANK = 1000  # training images in the bank
DIMS = 64  # projected dimensions per layer
LIMIT = 2500  # at most this many images to calibrate on, and as many to check on
MIN_SPREAD = 1e-3  # a layer's distances spread at least this much (its bank is stored at float16's precision)
MIN_CALIBRATION = 20  # in-class images, at least, to set a threshold on
MAX_TAPS = 8  # layers measured: up to 7 activation layers (evenly spread) and the last layer's input
MAX_BANK = 4096
MAX_FEATURES = 16384  # a layer's pooled features (2 x channels, or a dense layer's width)
MAX_META_CHARS = 64 * 2**10
MAX_FILE_BYTES = 64 * 2**20
# The activations whose layers are measured: the ReLU family, and tanh (variants.ACTIVATIONS: a
# tanh network's maps are its features as much as a ReLU network's are; a mean and spread over the
# image describe both). Not softmax or sigmoid: they are outputs or gates, not feature maps.
MEASURED_ACTIVATIONS = ("relu", "relu6", "leaky_relu", "elu", "gelu", "silu", "swish", "selu", "tanh")
INPUT_OF = ":input"  # a tap named "fc8:input" is what the layer fc8 reads

HOW_TO = ("to calibrate it, run `python -m alexnet_core calibrate MODEL --data DIR` with images of its own "
          "classes (for a 1,000-class ImageNet model, an ImageNet-layout folder)")


class NoveltyError(AlexNetError, ValueError):
    """A calibration that cannot be made or written; the message says what to give instead."""


@dataclass
class Calibration:
    taps: list[str]  # layer names ("relu3") or a layer's input ("fc8:input")
    projections: list[np.ndarray]  # per tap: (features, dims) float32
    banks: list[np.ndarray]  # per tap: (bank images, dims) float32, unit rows
    stats: np.ndarray  # (taps, 2): mean and spread of each tap's distance on calibration images
    threshold: float
    k: int
    meta: dict = field(default_factory=dict)  # keep, classes, head, data, held_out, created, ...
    path: Path | None = None

    @property
    def keep(self) -> float:
        return float(self.meta.get("keep", KEEP))

    def distances(self, feats: list[np.ndarray]) -> np.ndarray:
        """(n, taps) cosine distances to the k nearest bank images, layer by layer."""
        columns = []
        for f, proj, bank in zip(feats, self.projections, self.banks):
            x = _unit(np.asarray(f, np.float32).reshape(len(f), -1) @ proj)
            sims = x @ bank.T
            k = min(self.k, bank.shape[0])
            nearest = np.partition(sims, sims.shape[1] - k, axis=1)[:, -k:]
            columns.append(1.0 - nearest.mean(axis=1))
        return np.stack(columns, axis=1)

    def scores(self, feats: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """(score per image, per-tap standardised distances (n, taps))."""
        z = (self.distances(feats) - self.stats[:, 0]) / self.stats[:, 1]
        return z.mean(axis=1), z

    def judge(self, score: float, z: np.ndarray, classes: int) -> dict:
        """The novelty part of a verdict for one image."""
        unknown = bool(score > self.threshold)
        judged = {"calibrated": True, "unknown": unknown, "score": float(score), "threshold": self.threshold,
                  "keep": self.keep, "reason": ""}
        if unknown:
            where = describe_tap(int(np.argmax(z)), len(self.taps))
            judged["reason"] = (f"this does not look like any of my {classes} classes: what the network sees is "
                                f"further from its training images than {self.keep:.0%} of held-out images of "
                                f"those classes are (novelty {score:.1f}, limit {self.threshold:.1f}), most of all "
                                f"in {where}")
        return judged


def not_calibrated(note: str) -> dict:
    """The novelty part of a verdict for a model with no usable calibration."""
    return {"calibrated": False, "unknown": None, "score": None, "threshold": None, "reason": "", "note": note}


def describe_tap(index: int, count: int) -> str:
    """Which part of the network a tap is, in words (taps run from the first layers to the last)."""
    if index == count - 1:
        return "the features its last layer reads (the objects and parts it knows)"
    if index < max(1, count // 3):
        return "its first layers (colours, edges and textures)"
    return "its middle layers (patterns and parts)"


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-8)


def _stored(bank: np.ndarray) -> np.ndarray:
    """A bank as it comes back from its file: float16, made unit length again."""
    return _unit(bank.astype(np.float16).astype(np.float32))


# --- Which layers are measured -------------------------------------------------------------------


def _measured(layer) -> bool:
    import keras

    if isinstance(layer, (keras.layers.ReLU, keras.layers.LeakyReLU, keras.layers.ELU)):
        return True
    if isinstance(layer, (keras.layers.Activation, keras.layers.Conv2D)):  # a convolution's built-in activation too
        return getattr(getattr(layer, "activation", None), "__name__", "") in MEASURED_ACTIVATIONS
    return False


def _rank(tensor) -> int:
    try:
        return len(tensor.shape)
    except (AttributeError, TypeError, ValueError):
        return 0


def tap_layers(model) -> list[str]:
    """The layers the score measures: the activations (ReLU, tanh) of the convolutional part (at most
    MAX_TAPS - 1, evenly spread, the last always kept) and the input of the last dense layer
    (fc7's features for AlexNet). Empty when the model has neither."""
    import keras

    maps = [layer.name for layer in model.layers if _measured(layer) and _rank(layer.output) == 4]
    if len(maps) > MAX_TAPS - 1:
        picks = np.unique(np.round(np.linspace(0, len(maps) - 1, MAX_TAPS - 1)).astype(int))
        maps = [maps[i] for i in picks]
    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    taps = list(maps)
    if dense and _rank(dense[-1].input) == 2:
        taps.append(dense[-1].name + INPUT_OF)
    return taps


def _tap_tensor(model, tap: str):
    if tap.endswith(INPUT_OF):
        return model.get_layer(tap[: -len(INPUT_OF)]).input
    return model.get_layer(tap).output


def tap_widths(model, taps: list[str]) -> list[int] | None:
    """The pooled feature width of each tap (2 x channels of a feature map: its mean and spread
    over the image; a vector's own width), or None when a tap is not in the model."""
    widths = []
    for tap in taps:
        try:
            tensor = _tap_tensor(model, tap)
        except (ValueError, KeyError, AttributeError, TypeError, IndexError):
            return None
        shape = tuple(tensor.shape)
        if len(shape) not in (2, 4) or not isinstance(shape[-1], int):
            return None
        widths.append(2 * shape[-1] if len(shape) == 4 else shape[-1])
    return widths


_TAPPED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def tapped_function(model, preprocessing: dict, taps: list[str]):
    """A compiled function: a batch of 0..255 pixels at the model's input size -> (probabilities,
    [pooled features per tap]), in one pass. Built once per model and tap list, dropped with the
    model."""
    import keras
    import tensorflow as tf

    from alexnet_core.inputs.preprocess import standardize

    key = (tuple(taps), json.dumps(preprocessing, sort_keys=True, default=str))
    cached = _TAPPED.setdefault(model, {})
    if key not in cached:
        from alexnet_core.predict.one_image import fast_for_one_image

        tapped = keras.Model(model.inputs, [model.output, *[_tap_tensor(model, t) for t in taps]])

        def run(batch):
            probs, *outputs = tapped(standardize(batch, preprocessing), training=False)
            pooled = []
            for out in outputs:
                out = tf.cast(out, tf.float32)
                if len(out.shape) == 4:
                    mean, variance = tf.nn.moments(out, axes=[1, 2])
                    out = tf.concat([mean, tf.sqrt(tf.maximum(variance, 0.0))], axis=1)
                pooled.append(out)
            return probs, pooled

        # One image of a 224-px network goes through XLA (one_image.py says why).
        cached[key] = fast_for_one_image(tf.function(run, reduce_retracing=True), run, int(model.input_shape[1]))
    return cached[key]


def head_digest(model) -> str:
    """16 hex digits of the weights of the model's last layer that has any: a calibration made
    for one version of a model is not used with another (a resumed run, a replaced file)."""
    digest = hashlib.sha256()
    for layer in reversed(model.layers):
        weights = layer.get_weights()
        if weights:
            for w in weights:
                digest.update(np.ascontiguousarray(w, dtype=np.float32).tobytes())
            break
    return digest.hexdigest()[:16]


# --- Where a calibration lives, and reading it ---------------------------------------------------


def location(loaded) -> Path:
    """Where the calibration of a loaded model lives: its run folder's novelty.npz (the bundled
    demo's ships with the app), an installed model's folder, else NAME.novelty.npz beside the
    .keras file."""
    if loaded.run_dir is not None:
        return Path(loaded.run_dir) / CALIBRATION
    path = Path(loaded.path)
    try:
        installed = path.name == model_home.MODEL and path.parent.parent.resolve() == locations.models_root().resolve()
    except (OSError, RuntimeError):
        installed = False
    return path.parent / CALIBRATION if installed else path.with_name(path.stem + SIDECAR_SUFFIX)


def stamp(path: Path) -> tuple | None:
    """What changes when the calibration file does (size, modification time, inode); None when absent."""
    try:
        info = path.stat()
    except OSError:
        return None
    return info.st_size, info.st_mtime_ns, info.st_ino


def _meta_limits() -> dict:
    return {"meta": ((1,), "U", 4 * MAX_META_CHARS)}


def _check_meta(meta) -> str | None:
    """What is wrong with a calibration's description, or None."""
    if not isinstance(meta, dict) or meta.get("version") != VERSION or meta.get("method") != METHOD:
        return "it is not a calibration this version of the app reads"
    taps, k, threshold = meta.get("taps"), meta.get("k"), meta.get("threshold")
    if (not isinstance(taps, list) or not 1 <= len(taps) <= MAX_TAPS or not all(isinstance(t, str) and 0 < len(t) <= 200
                                                                               for t in taps)):
        return "its list of layers is damaged"
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= MAX_BANK:
        return "its neighbour count is damaged"
    if not isinstance(threshold, (int, float)) or isinstance(threshold, bool) or not math.isfinite(threshold):
        return "its threshold is damaged"
    keep = meta.get("keep")
    if not isinstance(keep, (int, float)) or not 0.5 <= keep < 1:
        return "its kept share is damaged"
    if not isinstance(meta.get("classes"), int) or not isinstance(meta.get("head"), str):
        return "it does not say which model it was made for"
    return None


def read(path: Path, model) -> tuple[Calibration | None, str]:
    """(the calibration at `path` for `model`, '') or (None, why it cannot be used): missing,
    damaged, oversized, or made for another model or another version of this one. Nothing is
    unpacked beyond what a calibration may hold."""
    name = Path(path).name
    try:
        if not fileio.regular_file(path):
            return None, f"its calibration file ({name}) is not a regular file"
        size = Path(path).stat().st_size
    except FileNotFoundError:
        return None, "it has no calibration"
    except OSError as exc:
        return None, f"its calibration file ({name}) cannot be read ({exc.strerror or exc})"
    if size > MAX_FILE_BYTES:
        return None, f"its calibration file ({name}) is {size / 2**20:.0f} MiB, more than a calibration holds"
    damaged = f"its calibration file ({name}) is damaged"
    arrays = fileio.load_npz(path, ("meta",), _meta_limits())
    if arrays is None:
        return None, damaged
    try:
        meta = fileio.parse_json(str(arrays["meta"].reshape(-1)[0]))
    except (ValueError, IndexError, UnicodeError):
        return None, damaged
    problem = _check_meta(meta)
    if problem:
        return None, f"{damaged}: {problem}"
    taps = meta["taps"]
    widths = tap_widths(model, taps)
    classes = int(model.output_shape[-1])
    if widths is None or meta["classes"] != classes or meta["head"] != head_digest(model):
        return None, (f"its calibration file ({name}) was made for another model or another version of this one "
                      "(the model changed since it was calibrated)")
    limits = {"stats": ((len(taps), 2), "f")}
    for i, width in enumerate(widths):
        limits[f"proj{i}"] = ((width, DIMS), "f", 4)
        limits[f"bank{i}"] = ((MAX_BANK, DIMS), "f", 4)
    arrays = fileio.load_npz(path, tuple(limits), limits)
    if arrays is None:
        return None, damaged
    projections = [arrays[f"proj{i}"].astype(np.float32) for i in range(len(taps))]
    banks = [arrays[f"bank{i}"].astype(np.float32) for i in range(len(taps))]
    stats = arrays["stats"].astype(np.float64)
    shapes_ok = (stats.shape == (len(taps), 2) and all(
        p.shape[0] == w and p.shape[1] == b.shape[1] and b.shape[0] >= 1 for p, b, w in zip(projections, banks, widths)))
    values_ok = shapes_ok and all(np.all(np.isfinite(a)) for a in (*projections, *banks, stats)) and np.all(stats[:, 1] > 0)
    if not values_ok:
        return None, damaged
    banks = [_stored(b) for b in banks]
    return Calibration(taps, projections, banks, stats, float(meta["threshold"]), int(meta["k"]), meta, Path(path)), ""


def write(calibration: Calibration, path: Path) -> None:
    """Save a calibration at `path` atomically (a killed write leaves the old file or none)."""
    meta = {**calibration.meta, "version": VERSION, "method": METHOD, "taps": calibration.taps, "k": calibration.k,
            "threshold": calibration.threshold}
    arrays = {"meta": np.array([json.dumps(meta)]), "stats": calibration.stats.astype(np.float64)}
    for i, (proj, bank) in enumerate(zip(calibration.projections, calibration.banks)):
        arrays[f"proj{i}"] = proj.astype(np.float32)
        arrays[f"bank{i}"] = bank.astype(np.float16)
    try:
        fileio.save_npz(path, **arrays)
    except OSError as exc:
        raise NoveltyError(f"Could not write the calibration to {path}: {exc.strerror or exc}. Free space or make "
                           "the folder writable, then calibrate again.") from exc


# --- Calibrating ---------------------------------------------------------------------------------


def fit(taps: list[str], bank: list[np.ndarray], calibration: list[np.ndarray], *, keep: float = KEEP, k: int = K,
        dims: int = DIMS, meta: dict | None = None) -> tuple[Calibration, np.ndarray]:
    """A calibration from pooled features per tap: `bank` of training images, `calibration` of
    in-class held-out images. Returns it and the calibration images' scores."""
    from sklearn.decomposition import PCA

    if not 0.5 <= keep < 1:
        raise NoveltyError(f"--keep must be at least 0.5 and below 1 (the share of in-class images kept sure), "
                           f"got {keep}")
    n_bank, n_cal = len(bank[0]), len(calibration[0])
    if n_bank < 2 or n_cal < MIN_CALIBRATION:
        raise NoveltyError(f"Calibrating needs at least 2 training images and {MIN_CALIBRATION} held-out images of the "
                           f"model's classes; found {n_bank} and {n_cal}. Give a data folder with more images.")
    projections, banks = [], []
    for f in bank:
        f = np.asarray(f, np.float64).reshape(n_bank, -1)
        width = min(dims, f.shape[1], n_bank)
        components = PCA(n_components=width, random_state=0).fit(f).components_.T
        proj = np.zeros((f.shape[1], dims), np.float32)
        proj[:, :width] = components  # padded to `dims` columns: every tap's bank has one shape
        projections.append(proj)
        banks.append(_stored(_unit(f.astype(np.float32) @ proj)))  # as `read` will see it
    k = max(1, min(k, n_bank))
    draft = Calibration(taps, projections, banks, np.tile([0.0, 1.0], (len(taps), 1)), 0.0, k)
    raw = draft.distances(calibration)
    stats = np.stack([raw.mean(axis=0), np.maximum(raw.std(axis=0), MIN_SPREAD)], axis=1)
    scores = ((raw - stats[:, 0]) / stats[:, 1]).mean(axis=1)
    threshold = float(np.quantile(scores, keep, method="higher"))
    result = Calibration(taps, projections, banks, stats, threshold, k,
                         {"keep": float(keep), **(meta or {})})
    return result, scores


def _spread(indices: np.ndarray, count: int) -> np.ndarray:
    """`count` of `indices` evenly spread through them (all when fewer)."""
    if len(indices) <= count:
        return indices
    return indices[np.round(np.linspace(0, len(indices) - 1, count)).astype(int)]


def _per_class(labels: np.ndarray, total: int, part: slice | None = None) -> np.ndarray:
    """Positions of about `total` images spread over each class in proportion; `part` takes a
    slice of each class's positions (in order) first."""
    labels = np.asarray(labels)
    chosen = []
    classes = np.unique(labels)
    per = max(1, math.ceil(total / max(len(classes), 1)))
    for c in classes:
        members = np.flatnonzero(labels == c)
        if part is not None:
            members = members[part]
        chosen.append(_spread(members, per))
    chosen = np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, int)
    return _spread(chosen, total)


def plan(source, bank: int = BANK, limit: int = LIMIT) -> dict:
    """Which images of a data source build the bank, set the threshold and check it:
    {"bank", "calibration", "held_out": (Split, positions)}. The bank comes from the training
    split; the calibration and the check from the first and second half of each class's
    validation images, in file order. A source with no training split gives each a third of
    its validation images."""
    from alexnet_core.inputs.data import DataError

    train = source.train if source.train is not None and len(source.train) else None
    val = source.val if source.val is not None and len(source.val) else None
    if val is None:
        val = source.test if source.test is not None and len(source.test) else None
    if val is None:
        raise DataError(f"{source.name} has no validation images to calibrate on: give a folder with val/<class>/ "
                        "or with enough images per class that a tenth of them is kept aside.")
    labels = np.asarray(val.labels)
    order = {c: np.flatnonzero(labels == c) for c in np.unique(labels)}

    def portion(start: float, stop: float) -> np.ndarray:
        picked = [m[int(round(start * len(m))): int(round(stop * len(m)))] for m in order.values()]
        return np.sort(np.concatenate(picked)) if picked else np.zeros(0, int)

    if train is not None:
        cal, held = portion(0.0, 0.5), portion(0.5, 1.0)
        bank_split, bank_pos = train, _per_class(train.labels, bank)
    else:
        bank_pos_all, cal, held = portion(0.0, 1 / 3), portion(1 / 3, 2 / 3), portion(2 / 3, 1.0)
        bank_split, bank_pos = val, bank_pos_all[_per_class(labels[bank_pos_all], bank)]
    cal = cal[_per_class(labels[cal], limit)] if len(cal) else cal
    held = held[_per_class(labels[held], limit)] if len(held) else held
    return {"bank": (bank_split, bank_pos), "calibration": (val, cal), "held_out": (val, held)}


def images_of(split, positions: np.ndarray, tally: dict, batch: int = 128):
    """Batches of decoded images (uint8 RGB, through the safe decoder) of a split at `positions`;
    a file that does not decode is left out and counted in tally["left_out"]."""
    images = []
    for i in positions:
        if split.images is not None:
            images.append(np.asarray(split.images[i]))
        else:
            try:
                images.append(read_image(split.paths[i]))
            except ImageDecodeError:
                tally["left_out"] = tally.get("left_out", 0) + 1
                continue
        if len(images) == batch:
            yield images
            images = []
    if images:
        yield images


def calibrate(predictor, source, *, keep: float = KEEP, bank: int = BANK, limit: int = LIMIT, sure=None,
              progress=None) -> tuple[Calibration, dict]:
    """Calibrate a model (through its Predictor: the same pixels and the same pass as a verdict)
    on a data source of its own classes. Returns the calibration and its report: how many images
    each part used, and the share of held-out in-class images the score keeps sure (with `sure`,
    a probabilities -> bool rule, also the share the whole verdict keeps sure)."""
    from alexnet_core.inputs.data import DataError

    if not 0.5 <= keep < 1:
        raise NoveltyError(f"--keep must be at least 0.5 and below 1 (the share of in-class images kept sure), "
                           f"got {keep}")
    loaded = predictor.loaded
    model = loaded.model
    names = list(loaded.class_names)
    foreign = [c for c in source.class_names if c not in names]
    if foreign:
        shown = ", ".join(repr(c) for c in foreign[:5]) + (" ..." if len(foreign) > 5 else "")
        raise DataError(f"{source.name} has classes the model does not know ({shown}): calibrate with images of "
                        f"the model's own {len(names)} classes only, in folders named as its classes.")
    if not 1 <= bank <= MAX_BANK:
        raise NoveltyError(f"--bank must be between 1 and {MAX_BANK}, got {bank}")
    if limit < MIN_CALIBRATION:
        raise NoveltyError(f"--limit must be at least {MIN_CALIBRATION}, got {limit}")
    taps = tap_layers(model)
    if not taps or tap_widths(model, taps) is None:
        raise NoveltyError(f"{loaded.path.name} has no activation layer (ReLU, tanh) or last dense layer whose "
                           "features could be measured, so it cannot be calibrated for images outside its classes.")
    parts = plan(source, bank, limit)
    total = sum(len(pos) for _, pos in parts.values())
    done = 0
    features, probabilities, left_out = {}, {}, {}
    for part, (split, positions) in parts.items():
        collected, probs, tally = [[] for _ in taps], [], {"left_out": 0}
        for images in images_of(split, positions, tally):
            p, feats = predictor.assess(images, taps)
            for store, f in zip(collected, feats):
                store.append(f)
            probs.append(p)
            done += len(images)
            if progress:
                progress(done, total)
        features[part] = [np.concatenate(c) if c else np.zeros((0, 1), np.float32) for c in collected]
        probabilities[part] = np.concatenate(probs) if probs else np.zeros((0, len(names)))
        left_out[part] = tally["left_out"]
    counts = {part: len(probabilities[part]) for part in parts}
    if counts["bank"] < 2:
        raise DataError(f"{source.name}: fewer than 2 readable images to compare with; give a folder with more.")
    meta = {"classes": len(names), "head": head_digest(model), "data": str(source.name)[:500],
            "images": counts, "left_out": left_out, "created": time.time()}
    calibration, _ = fit(taps, features["bank"], features["calibration"], keep=keep, meta=meta)
    report = {"images": counts, "left_out": left_out, "threshold": calibration.threshold, "keep": keep,
              "taps": taps}
    if counts["held_out"]:
        held_scores, _ = calibration.scores(features["held_out"])
        kept = held_scores <= calibration.threshold
        report["held_out_kept"] = float(kept.mean())
        if sure is not None:
            softmax = np.array([bool(sure(p)) for p in probabilities["held_out"]])
            report["held_out_sure_softmax"] = float(softmax.mean())
            report["held_out_sure"] = float((softmax & kept).mean())
    calibration.meta["held_out"] = {k: v for k, v in report.items() if k.startswith("held_out")}
    return calibration, report
