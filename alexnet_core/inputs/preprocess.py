"""The one way an image becomes model input, shared by training, evaluation and classification.

Pixels (uint8 or float in 0..255, any size, RGB) -> resized to the model's input with
antialiased bilinear resampling -> scaled to 0..1 and standardised per channel.

A model converted from published ImageNet weights records the recipe it was trained with
(`resize_to`, `resize_mode`, `crop`): its centre framing is the shorter side ("shorter") or
both sides ("square") resized to `resize_to`, then the centre crop of its input size, and an
image already at that intermediate size is only cropped, never resampled (`fit`). A model
without those keys frames the image square (centre crop, or the whole image on a canvas of its
mean colour) and resizes it to its input.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from alexnet_core.settings.choices import DEFAULT_FRAMING, FRAMINGS

# ImageNet statistics: a fixed, dataset-independent standardisation.
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


RESIZE = "bilinear, antialiased"


def describe(size: int) -> dict:
    """What a model needs to turn pixels into its input; saved with every run and exported model."""
    return {"input_size": int(size), "mean": list(MEAN), "std": list(STD), "resize": RESIZE, "scale": 255.0}


def resize(images, size: int):
    """Resize an image (HWC) or a batch (NHWC) to size x size; float32 in 0..255."""
    images = tf.cast(images, tf.float32)
    height, width = images.shape[-3], images.shape[-2]
    if height == size and width == size:
        return images
    return tf.image.resize(images, (size, size), method="bilinear", antialias=True)


def normalize(images, mean=MEAN, std=STD):
    """0..255 float pixels -> standardised network input: (x / 255 - mean) / std, as one
    multiply and one add (each a pass over the images)."""
    scale = [1.0 / (255.0 * s) for s in std]
    offset = [-m / s for m, s in zip(mean, std)]
    return tf.cast(images, tf.float32) * tf.constant(scale, tf.float32) + tf.constant(offset, tf.float32)


def standardize(images, record: dict):
    """0..255 pixels -> the input of a model whose recorded preprocessing (`recorded`) is `record`."""
    return normalize(images, record["mean"], record["std"])


def as_input(images, mean=MEAN, std=STD):
    """A training batch as network input: uint8 pixels (the streamed crops of data.make_dataset)
    are standardised here (with the run's `mean` and `std`), inside the step and on its device;
    anything else already is."""
    return normalize(images, mean, std) if images.dtype == tf.uint8 else images


def preprocess(images, size: int, mean=MEAN, std=STD):
    return normalize(resize(images, size), mean, std)


RESIZE_MODES = ("shorter", "square")  # the recipe's intermediate size: the shorter side, or both sides
MAX_RESIZE_TO = 4096


def recorded(document: dict | None, size: int) -> dict:
    """The preprocessing a run or model file recorded, else this module's (the same values: every
    model before the record existed was trained with them). An ImageNet recipe (`resize_to`,
    `resize_mode`, `crop`) is kept only whole and consistent with the model's input `size`."""
    record = (document or {}).get("preprocessing") if isinstance(document, dict) else None
    default = describe(size)
    if not isinstance(record, dict):
        return default
    try:
        mean, std = [float(v) for v in record["mean"]], [float(v) for v in record["std"]]
    except (KeyError, TypeError, ValueError):
        return default
    if len(mean) != 3 or len(std) != 3 or min(std) <= 0 or not all(np.isfinite(mean + std)):
        return default
    return {**default, "mean": mean, "std": std, **_recipe(record, int(size))}


def _recipe(record: dict, size: int) -> dict:
    resize_to, mode, crop = record.get("resize_to"), record.get("resize_mode"), record.get("crop", size)
    if (isinstance(resize_to, bool) or not isinstance(resize_to, int) or mode not in RESIZE_MODES
            or isinstance(crop, bool) or not isinstance(crop, int)):
        return {}
    if not size <= resize_to <= MAX_RESIZE_TO or crop != size:
        return {}
    return {"resize_to": resize_to, "resize_mode": mode, "crop": crop}


def has_recipe(record: dict | None) -> bool:
    """Whether `record` (as `recorded` returns it) frames images by an ImageNet recipe."""
    return isinstance(record, dict) and "resize_to" in record


def check_framing(framing: str) -> str:
    if framing not in FRAMINGS:
        raise ValueError(f"framing must be one of {', '.join(FRAMINGS)}, got {framing!r}")
    return framing


def frame(image: np.ndarray, framing: str = DEFAULT_FRAMING) -> np.ndarray:
    """A square image from `image` (uint8 HxWx3): its centre square, or all of it on a square
    canvas of its mean colour. Already square images come back unchanged."""
    check_framing(framing)
    height, width = image.shape[:2]
    if height == width:
        return image
    side = min(height, width) if framing == "crop" else max(height, width)
    if framing == "crop":
        top, left = (height - side) // 2, (width - side) // 2
        return image[top:top + side, left:left + side]
    canvas = np.empty((side, side, 3), dtype=image.dtype)
    canvas[:] = image.reshape(-1, 3).mean(axis=0).astype(image.dtype)
    top, left = (side - height) // 2, (side - width) // 2
    canvas[top:top + height, left:left + width] = image
    return canvas


def intermediate_shape(height: int, width: int, record: dict) -> tuple[int, int]:
    """(height, width) an image of that size is resized to before the recipe's centre crop: the
    shorter side to `resize_to` and the longer in proportion (truncated, as torchvision's Resize),
    or both sides to `resize_to` ("square")."""
    target = int(record["resize_to"])
    if record["resize_mode"] == "square":
        return target, target
    if height <= width:
        return target, max(target, int(target * width / height))
    return max(target, int(target * height / width)), target


def centre_crop(image: np.ndarray, size: int) -> np.ndarray:
    """The centre size x size of `image` (offsets rounded as torchvision's CenterCrop): a view, no
    resampling."""
    height, width = image.shape[:2]
    top, left = int(round((height - size) / 2.0)), int(round((width - size) / 2.0))
    return image[top:top + size, left:left + size]


def _pixels(image) -> np.ndarray:
    return np.clip(np.rint(np.asarray(image, dtype=np.float32)), 0, 255).astype(np.uint8)


def fit(image: np.ndarray, record: dict, framing: str = DEFAULT_FRAMING) -> np.ndarray:
    """Exactly the pixels a model with preprocessing `record` gets from `image` (HxWx3, 0..255)
    before standardisation: uint8 at its input size. With an ImageNet recipe and the centre
    framing: resized to the intermediate size (skipped when the image is already there), then
    the centre crop; otherwise (no recipe, or the whole image): framed square and resized."""
    check_framing(framing)
    size = int(record["input_size"])
    image = np.asarray(image)
    if has_recipe(record) and framing == "crop":
        shape = intermediate_shape(image.shape[0], image.shape[1], record)
        if image.shape[:2] != shape:
            image = tf.image.resize(tf.cast(image, tf.float32), shape, method="bilinear", antialias=True).numpy()
        return _pixels(centre_crop(image, size))
    return _pixels(resize(frame(image, framing), size))


def seen(image: np.ndarray, record: dict, framing: str = DEFAULT_FRAMING) -> np.ndarray:
    """The part of `image` (at its own resolution) that `fit` turns into the network's input, to
    draw a heat map over: with an ImageNet recipe and the centre framing, the region the centre
    crop covers (not square for "square" recipes, whose resize stretches); else the framed square."""
    check_framing(framing)
    if not (has_recipe(record) and framing == "crop"):
        return frame(image, framing)
    height, width = image.shape[:2]
    inner_h, inner_w = intermediate_shape(height, width, record)
    size = int(record["input_size"])
    top, left = int(round((inner_h - size) / 2.0)), int(round((inner_w - size) / 2.0))
    y0, y1 = round(top * height / inner_h), round((top + size) * height / inner_h)
    x0, x1 = round(left * width / inner_w), round((left + size) * width / inner_w)
    return image[y0:max(y1, y0 + 1), x0:max(x1, x0 + 1)]
