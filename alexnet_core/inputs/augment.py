"""Augmentation presets as Keras preprocessing layers (applied in tf.data, training only)."""

from __future__ import annotations

import keras
import tensorflow as tf

from alexnet_core.settings.config import AUGMENTATIONS

PRESETS = tuple(AUGMENTATIONS)  # names and descriptions live in config.py

# ImageNet RGB eigenvalues/eigenvectors (Krizhevsky et al. 2012, as used by fb.resnet.torch)
_EIGVAL = (0.2175, 0.0188, 0.0045)
_EIGVEC = ((-0.5675, 0.7192, 0.4009), (-0.5808, -0.0045, -0.8140), (-0.5836, -0.6948, 0.4203))


def pca_shift(alpha):
    """The RGB shift (0..255 scale) of the paper's 'fancy PCA' lighting, sum_i alpha_i * lambda_i * p_i,
    for per-image weights alpha (N, 3), alpha_i ~ N(0, std)."""
    return 255.0 * tf.matmul(alpha * tf.constant(_EIGVAL), tf.constant(_EIGVEC), transpose_b=True)


def lighting(seed, std: float, count: int):
    """PCA lighting shifts (count, 3) for `count` images, from a stateless seed pair: drawn many at
    a time for the streamed crops, so each image pays for one add."""
    return pca_shift(tf.random.stateless_normal((count, 3), seed, stddev=std))


# Presets whose augmentation is done per image while decoding (data.make_dataset's `crop` and
# `lighting`): the crop from the image at its own resolution, a flip, and the PCA lighting std.
ERASE_FILL = 120.0  # about the mean pixel of natural images: near zero once standardised
CROPS = {"paper": ("paper", 0.1), "paper-no-lighting": ("paper", 0.0), "random-resized-crop": ("random-resized", 0.0)}


def dataset_options(preset: str, input_size: int, seed: int | None = None) -> dict:
    """make_dataset's augmentation arguments for `preset`: `augment` (on batches), `crop` and
    `lighting` (per image, while decoding)."""
    crop, lighting = CROPS.get(preset, (None, 0.0))
    return {"augment": build(preset, input_size, seed), "crop": crop, "lighting": lighting}


def build(preset: str, input_size: int, seed: int | None = None) -> keras.Sequential | None:
    """The augmentation for `preset` on 0..255 batches of input_size images, or None (also for the
    presets in CROPS, done per image while decoding: data.make_dataset's `crop` and `lighting`)."""
    L = keras.layers
    if preset not in PRESETS:
        raise ValueError(f"Unknown augmentation {preset!r}. Available: {', '.join(PRESETS)}")
    if preset == "none":
        return None
    if preset in CROPS:
        return None  # all of it per image, while decoding
    if preset == "keras-seed":
        layers = [L.RandomRotation(2 / 360, fill_mode="nearest", seed=seed),
                  L.RandomFlip("horizontal", seed=seed), L.RandomZoom(0.1, fill_mode="nearest", seed=seed)]
    else:  # cifar, cifar-erasing
        pad = max(1, round(input_size * 4 / 32))
        layers = [L.ZeroPadding2D(pad), L.RandomCrop(input_size, input_size, seed=seed),
                  L.RandomFlip("horizontal", seed=seed)]
        if preset == "cifar-erasing":  # factor 1.0: each image's chance is drawn from 0..1 (half on average)
            layers.append(L.RandomErasing(factor=1.0, scale=(0.02, 0.25), fill_value=ERASE_FILL, seed=seed))
    return keras.Sequential(layers, name=f"augment_{preset.replace('-', '_')}")
