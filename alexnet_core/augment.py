"""Augmentation presets as Keras preprocessing layers (applied in tf.data, training only)."""

from __future__ import annotations

import keras
import tensorflow as tf

from .config import AUGMENTATIONS

PRESETS = tuple(AUGMENTATIONS)  # names and descriptions live in config.py

# ImageNet RGB eigenvalues/eigenvectors (Krizhevsky et al. 2012, as used by fb.resnet.torch)
_EIGVAL = (0.2175, 0.0188, 0.0045)
_EIGVEC = ((-0.5675, 0.7192, 0.4009), (-0.5808, -0.0045, -0.8140), (-0.5836, -0.6948, 0.4203))


@keras.saving.register_keras_serializable(package="alexnet_core")
class PCALighting(keras.layers.Layer):
    """The paper's 'fancy PCA' colour noise: add sum_i alpha_i * lambda_i * p_i to every pixel.

    Works on 0..255 pixels; alpha_i ~ N(0, std) drawn per image.
    """

    def __init__(self, std=0.1, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.std = float(std)
        self.seed = seed
        self._rng = keras.random.SeedGenerator(seed)

    def call(self, images, training=True):
        if not training or self.std == 0:
            return images
        batch = tf.shape(images)[0]
        alpha = keras.random.normal((batch, 3), stddev=self.std, seed=self._rng)
        rgb = tf.matmul(alpha * tf.constant(_EIGVAL), tf.constant(_EIGVEC), transpose_b=True)
        return images + tf.cast(255.0 * rgb[:, None, None, :], images.dtype)  # bf16/fp16 under mixed precision

    def get_config(self):
        return {**super().get_config(), "std": self.std, "seed": self.seed}


def build(preset: str, input_size: int, seed: int | None = None) -> keras.Sequential | None:
    """The augmentation for `preset` on 0..255 batches of input_size images, or None."""
    L = keras.layers
    if preset not in PRESETS:
        raise ValueError(f"Unknown augmentation {preset!r}. Available: {', '.join(PRESETS)}")
    if preset == "none":
        return None
    if preset == "keras-seed":
        layers = [L.RandomRotation(2 / 360, fill_mode="nearest", seed=seed),
                  L.RandomFlip("horizontal", seed=seed), L.RandomZoom(0.1, fill_mode="nearest", seed=seed)]
    elif preset == "paper":
        larger = int(round(input_size * 256 / 224))
        layers = [L.Resizing(larger, larger), L.RandomCrop(input_size, input_size, seed=seed),
                  L.RandomFlip("horizontal", seed=seed), PCALighting(0.1, seed=seed)]
    else:  # cifar
        pad = max(1, round(input_size * 4 / 32))
        layers = [L.ZeroPadding2D(pad), L.RandomCrop(input_size, input_size, seed=seed),
                  L.RandomFlip("horizontal", seed=seed)]
    return keras.Sequential(layers, name=f"augment_{preset.replace('-', '_')}")
