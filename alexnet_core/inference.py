"""Safe image decoding, model loading and top-k prediction.

Every image the app or the CLI classifies goes through `decode_image` (Pillow, with the
decompression-bomb guard on) and `preprocess` (shared with training and evaluation).
"""

from __future__ import annotations

import io
import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from . import runs
from .data import ASSETS

ACCEPTED_FORMATS = {"JPEG", "MPO", "PNG", "WEBP", "BMP", "GIF", "TIFF"}
UPLOAD_TYPES = ["jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff"]
DEMO_RUN = ASSETS / "runs" / "demo"


# Keras warns when a model restored from disk is called with a bare tensor instead of a one-element
# list; the call is correct either way.
warnings.filterwarnings("ignore", message="The structure of `inputs` doesn't match the expected structure")


class ImageDecodeError(ValueError):
    """An image that cannot be classified; the message says what is wrong with it."""


class ModelLoadError(ValueError):
    """A model that cannot be loaded; the message says what to give instead."""


def _to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode -> 8-bit RGB; transparency is composited onto white."""
    mode = image.mode
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        a = np.asarray(image, dtype=np.float64)
        top = 65535.0 if mode.startswith("I;16") or a.max() > 255 else 255.0
        return Image.fromarray(np.clip(a / top * 255.0, 0, 255).astype(np.uint8), "L").convert("RGB")
    if mode == "F":
        a = np.asarray(image, dtype=np.float64)
        a = a * 255.0 if a.size and np.nanmax(a) <= 1.0 else a
        return Image.fromarray(np.clip(np.nan_to_num(a), 0, 255).astype(np.uint8), "L").convert("RGB")
    return image.convert("RGB")


def decode_image(data: bytes, name: str = "image") -> np.ndarray:
    """Bytes of an uploaded or read file -> HxWx3 uint8 RGB (EXIF orientation applied)."""
    if not data:
        raise ImageDecodeError(f"{name}: the file is empty (0 bytes)")
    head = data[:256].lstrip().lower()
    if head.startswith(b"<svg") or (head.startswith(b"<?xml") and b"<svg" in data[:2048].lower()):
        raise ImageDecodeError(f"{name}: SVG drawings are not supported; export it as PNG or JPEG")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            if image.format not in ACCEPTED_FORMATS:
                raise ImageDecodeError(f"{name}: {image.format} images are not supported; use JPEG, PNG, "
                                       "WebP, BMP, GIF or TIFF")
            if image.width == 0 or image.height == 0:
                raise ImageDecodeError(f"{name}: the image has no pixels ({image.width}x{image.height})")
            image.seek(0)  # GIF/TIFF: the first frame
            image.load()
            image = ImageOps.exif_transpose(image)
            return np.asarray(_to_rgb(image), dtype=np.uint8)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageDecodeError(f"{name}: refused as a possible decompression bomb (more pixels than the "
                               f"{Image.MAX_IMAGE_PIXELS:,}-pixel safety limit): {exc}") from exc
    except UnidentifiedImageError as exc:
        raise ImageDecodeError(f"{name}: not an image (the contents are not JPEG, PNG, WebP, BMP, GIF or "
                               "TIFF, whatever the file name says)") from exc
    except ImageDecodeError:
        raise
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise ImageDecodeError(f"{name}: the image is damaged or truncated ({exc})") from exc


def read_image(path: str | os.PathLike) -> np.ndarray:
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImageDecodeError(f"{path}: cannot read the file ({exc.strerror or exc})") from exc
    return decode_image(data, str(path))


@dataclass
class LoadedModel:
    model: object
    class_names: list[str]
    source: str  # what the user named
    path: Path  # the .keras file
    run_dir: Path | None
    preprocessing: dict = field(default_factory=dict)  # recorded with the model (preprocess.describe)

    @property
    def input_size(self) -> int:
        return int(self.model.input_shape[1])

    def preprocess(self, image: np.ndarray) -> np.ndarray:
        """One image (0..255 RGB, any size) -> this model's input, with its own preprocessing."""
        from .preprocess import preprocess

        p = self.preprocessing
        return preprocess(image, self.input_size, p.get("mean"), p.get("std")).numpy()


def make_forward(loaded: LoadedModel, flip: bool = False):
    """The one compiled forward pass of classification and evaluation alike: a batch of 0..255
    pixels at the model's input size -> probabilities, averaged with the mirror image if `flip`."""
    import tensorflow as tf

    from .preprocess import normalize

    model, mean, std = loaded.model, loaded.preprocessing["mean"], loaded.preprocessing["std"]

    @tf.function(reduce_retracing=True)
    def forward(batch):
        x = normalize(batch, mean, std)
        probs = model(x, training=False)
        if flip:
            probs = (probs + model(tf.reverse(x, axis=[2]), training=False)) / 2
        return probs

    return forward


def resolve_model_path(spec: str) -> tuple[Path, Path | None]:
    """MODEL spec (demo | run folder | .keras file) -> (model file, run folder or None)."""
    if spec == "demo":
        if not (DEMO_RUN / runs.MODEL).exists():
            raise ModelLoadError(f"The bundled demo model is missing ({DEMO_RUN}); reinstall the app")
        return DEMO_RUN / runs.MODEL, DEMO_RUN
    path = Path(spec).expanduser()
    if path.is_dir():
        # A finished run's model, else the best checkpoint so far of a run still training.
        for candidate in (path / runs.MODEL, path / runs.CHECKPOINTS / runs.BEST, path / runs.CHECKPOINTS / runs.LAST):
            if candidate.exists():
                return candidate, path
        raise ModelLoadError(f"{path} has no model yet: the run has not finished an epoch")
    if path.suffix != ".keras":
        raise ModelLoadError(f"{spec}: give a run folder, a .keras file or 'demo'")
    if not path.is_file():
        raise ModelLoadError(f"{path} does not exist")
    return path, path.parent if (path.parent / runs.CONFIG).exists() else None


def model_record(model_path: Path, run_dir: Path | None) -> dict:
    """What travels with a model: its run's config.json, else the `.json` sidecar of a bare .keras file."""
    for candidate in ([run_dir / runs.CONFIG] if run_dir else []) + [model_path.with_suffix(".json")]:
        data = runs.read_object(candidate)
        if data:
            return data
    return {}


def class_names_for(record: dict, num_classes: int) -> list[str]:
    if isinstance(record.get("class_names"), list):
        names = [str(n) for n in record["class_names"]]
        if len(names) == num_classes:
            return names
    return [f"class {i}" for i in range(num_classes)]


def load_model(spec: str) -> LoadedModel:
    """Load with Keras safe_mode=True: no arbitrary code (lambdas, pickles) is ever run."""
    import keras

    from . import layers  # noqa: F401  (registers the custom layers)

    path, run_dir = resolve_model_path(spec)
    try:
        model = keras.models.load_model(path, safe_mode=True, compile=False)
    except Exception as exc:
        raise ModelLoadError(f"{path} is not a Keras model this app can load safely ({type(exc).__name__}: "
                             f"{str(exc)[:300]})") from exc
    from .preprocess import recorded

    record = model_record(path, run_dir)
    names = class_names_for(record, int(model.output_shape[-1]))
    return LoadedModel(model, names, spec, path, run_dir, recorded(record, int(model.input_shape[1])))


class Predictor:
    """Top-k for images through one compiled function (no per-call model.predict overhead)."""

    def __init__(self, loaded: LoadedModel, flip: bool = False):
        self.loaded = loaded
        self._forward = make_forward(loaded, flip)

    def probabilities(self, images: list[np.ndarray] | np.ndarray) -> np.ndarray:
        """uint8/float 0..255 RGB images (any sizes) -> (n, classes) probabilities."""
        from .preprocess import resize

        size = self.loaded.input_size
        if isinstance(images, np.ndarray) and images.ndim == 4 and images.shape[1:3] == (size, size):
            batch = images.astype(np.float32)
        else:
            batch = np.stack([resize(img, size).numpy() for img in images]).astype(np.float32)
        return self._forward(batch).numpy()

    def top_k(self, image: np.ndarray, k: int = 5) -> list[dict]:
        return top_k(self.probabilities([image])[0], self.loaded.class_names, k)


def top_k(probs: np.ndarray, class_names: list[str], k: int = 5) -> list[dict]:
    order = np.argsort(-probs)[: max(1, min(k, len(probs)))]
    return [{"label": class_names[i], "probability": float(probs[i])} for i in order]


def predict_files(loaded: LoadedModel, paths: list[str], k: int = 5) -> list[dict]:
    """The `predict --json` document: one entry per file; unreadable files get an error, not a crash."""
    predictor = Predictor(loaded)
    results = []
    for path in paths:
        try:
            image = read_image(path)
        except ImageDecodeError as exc:
            results.append({"image": str(path), "predictions": [], "error": str(exc)})
            continue
        results.append({"image": str(path), "predictions": predictor.top_k(image, k), "error": None})
    return results


def write_class_names(model_path: Path, class_names: list[str], preprocessing: dict | None = None) -> None:
    """Sidecar for a bare .keras file, so it keeps its class names and preprocessing outside a run folder."""
    document = {"class_names": class_names, **({"preprocessing": preprocessing} if preprocessing else {})}
    model_path.with_suffix(".json").write_text(json.dumps(document))
