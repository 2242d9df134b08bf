"""The one way an image becomes model input, shared by training, evaluation and classification.

Pixels (uint8 or float in 0..255, any size, RGB) -> resized to the model's input with
antialiased bilinear resampling -> scaled to 0..1 and standardised per channel.
"""

from __future__ import annotations

import tensorflow as tf

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


def as_input(images):
    """A training batch as network input: uint8 pixels (the streamed crops of data.make_dataset)
    are standardised here, inside the step and on its device; anything else already is."""
    return normalize(images) if images.dtype == tf.uint8 else images


def preprocess(images, size: int, mean=MEAN, std=STD):
    return normalize(resize(images, size), mean, std)


def recorded(document: dict | None, size: int) -> dict:
    """The preprocessing a run or model file recorded, else this module's (the same values: every
    model before the record existed was trained with them)."""
    record = (document or {}).get("preprocessing") if isinstance(document, dict) else None
    default = describe(size)
    if not isinstance(record, dict):
        return default
    try:
        mean, std = [float(v) for v in record["mean"]], [float(v) for v in record["std"]]
    except (KeyError, TypeError, ValueError):
        return default
    if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        return default
    return {**default, "mean": mean, "std": std}
