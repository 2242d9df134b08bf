"""What the network looked at: Grad-CAM, conv1 filters, activation maps, fc7 neighbours."""

from __future__ import annotations

# Imports inside functions are deliberate: TensorFlow and Keras, the modules that reach them
# and Pillow load on first use, so importing this module
# (the app's pages, the command line) stays light.
import weakref

import numpy as np

from alexnet_core.errors import AlexNetError
from alexnet_core.models.anatomy import conv1_kernels


class NotApplicable(AlexNetError, ValueError):
    """An explanation that a model's structure rules out (Grad-CAM or filters without any
    convolution); the message says why, in the user's words."""


def _conv_layers(model) -> list:
    import keras

    return [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]


def has_convolution(model) -> bool:
    """Whether the model has a convolutional layer (Grad-CAM, filters and activation maps need one)."""
    return bool(_conv_layers(model))


NO_CONVOLUTION = ("This model has no convolutional layer, so there is no feature map for Grad-CAM, no first-layer "
                  "filters and no activation maps to show; its top-k predictions still are.")

_TAPS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _tap(model, layers: tuple[str, ...] | str, with_predictions: bool = False):
    """A model that outputs the activations of `layers` (and the predictions), built once per
    model and dropped with it: the cache holds the model weakly, so a model the app's cache has
    let go of is freed together with its taps."""
    import keras

    names = (layers,) if isinstance(layers, str) else tuple(layers)
    taps = _TAPS.setdefault(model, {})
    key = (names, with_predictions)
    if key not in taps and isinstance(model, keras.Sequential):
        taps[key] = _SequentialTap(model, names, with_predictions)
    if key not in taps:
        outputs = [model.get_layer(n).output for n in names]
        if with_predictions:
            outputs.append(_output(model))
        taps[key] = keras.Model(model.inputs, outputs if len(outputs) > 1 else outputs[0])
    return taps[key]


class _SequentialTap:
    """A tap on a Sequential model (a user's own, read from a file): its layers called in order,
    keeping the named layers' outputs (its saved graph need not connect them to its output)."""

    def __init__(self, model, names: tuple[str, ...], with_predictions: bool):
        self.model, self.names, self.with_predictions = model, names, with_predictions

    def __call__(self, x, training: bool = False):
        kept = {}
        for layer in self.model.layers:
            x = layer(x, training=training)
            if layer.name in self.names:
                kept[layer.name] = x
        outputs = [kept[n] for n in self.names] + ([x] if self.with_predictions else [])
        return outputs if len(outputs) > 1 else outputs[0]


def _output(model):
    """The model's output tensor (a Sequential model read from a file has it only on its last layer)."""
    try:
        return model.output
    except AttributeError:
        return model.layers[-1].output


def functional(model):
    """`model` as a functional model (its layers with their input layer), so every layer table and
    tap reads it alike: a Sequential model becomes one over the same layers and weights."""
    import keras

    if not isinstance(model, keras.Sequential):
        return model
    return keras.Model(model.inputs, _output(model), name=model.name)


def gradcam_layers(model) -> list[str]:
    """The activations of the last convolution (of each tower): Grad-CAM's usual target, at the
    finest resolution that still sees the whole network's features (before pool5)."""
    import keras

    convs = [i for i, layer in enumerate(model.layers) if isinstance(layer, keras.layers.Conv2D)]
    if not convs:
        raise NotApplicable(NO_CONVOLUTION)
    names = []
    for layer in model.layers[convs[-1] + 1:]:
        if len(layer.output.shape) != 4:
            break
        if isinstance(layer, keras.layers.Conv2D):
            continue
        if isinstance(layer, (keras.layers.ReLU, keras.layers.Activation)):
            names.append(layer.name)
        elif isinstance(layer, keras.layers.MaxPooling2D) or "pool" in layer.name:
            break
    if not names:  # convolutions with a built-in activation
        names = [model.layers[i].name for i in convs if i >= convs[-1] - 1
                 and model.layers[i].output.shape[1:3] == model.layers[convs[-1]].output.shape[1:3]]
    return names


def _cam_function(model, layers: tuple[str, ...]):
    """Grad-CAM's forward and backward pass as one compiled function per model and layers (a
    224-px ImageNet AlexNet: about 10x faster than running it eagerly), over a batch: (images,
    class index per image, -1 for its top class) -> (each image's summed map at the features'
    size, the classes used). Each image's score depends on its own input only (inference mode),
    so the gradient of their sum gives every image its own gradients in one backward pass."""
    import tensorflow as tf

    taps = _TAPS.setdefault(model, {})
    key = ("gradcam", layers)
    if key not in taps:
        grad_model = _tap(model, layers, with_predictions=True)
        # Any number of images of the model's input size: traced once per model, whatever the batch.
        size = _input_size(model)
        signature = None if size is None else [tf.TensorSpec([None, *size, 3], tf.float32),
                                                tf.TensorSpec([None], tf.int32)]

        @tf.function(reduce_retracing=True, input_signature=signature)
        def cam_of(x, class_index):
            with tf.GradientTape() as tape:
                *features, probs = grad_model(x, training=False)
                chosen = tf.where(class_index < 0, tf.cast(tf.argmax(probs, axis=-1), tf.int32), class_index)
                score = tf.reduce_sum(tf.math.log(tf.gather(probs, chosen, axis=1, batch_dims=1) + 1e-12))
            cam = 0.0
            for feature, grads in zip(features, tape.gradient(score, features)):
                weights = tf.reduce_mean(tf.cast(grads, tf.float32), axis=(1, 2), keepdims=True)
                cam += tf.nn.relu(tf.reduce_sum(tf.cast(feature, tf.float32) * weights, axis=-1))
            return cam, chosen

        taps[key] = cam_of
    return taps[key]


def _input_size(model) -> tuple[int, int] | None:
    """(height, width) of the model's input, or None where it is not fixed."""
    try:
        shape = tuple(model.inputs[0].shape)
    except (AttributeError, IndexError, TypeError, ValueError):
        return None
    return (int(shape[1]), int(shape[2])) if len(shape) == 4 and shape[1] and shape[2] and shape[3] == 3 else None


def warm_gradcam(model) -> None:
    """Trace the model's Grad-CAM pass now (on a blank image), so that the first map a user asks
    for costs only its own computation: a page calls it in the background while it shows images."""
    size = _input_size(model)
    if size is not None and has_convolution(model):
        gradcams(model, np.zeros((1, *size, 3), np.float32))


CAM_BATCH = 32  # images a Grad-CAM pass takes at once


def gradcams(model, images: np.ndarray, class_indices=None, layers: list[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Grad-CAM of several preprocessed inputs (N, H, W, 3) at once: heat maps (N, H, W) in [0, 1]
    at the input's size, and the class used for each (`class_indices`, or each image's top class
    where it is None or -1). One compiled pass per CAM_BATCH images: a grid of images costs about
    one image's time, not one per image."""
    import tensorflow as tf

    images = np.asarray(images, dtype=np.float32)
    n = len(images)
    wanted = np.full(n, -1, np.int32) if class_indices is None else np.array(
        [-1 if c is None else int(c) for c in class_indices], np.int32)
    cam_of = _cam_function(model, tuple(layers or gradcam_layers(model)))
    heats, used = [], []
    for start in range(0, n, CAM_BATCH):
        cams, chosen = cam_of(tf.convert_to_tensor(images[start:start + CAM_BATCH]),
                              tf.convert_to_tensor(wanted[start:start + CAM_BATCH]))
        cams = np.asarray(cams)
        top = cams.max(axis=(1, 2), keepdims=True)
        cams = np.where(top > 0, cams / np.maximum(top, 1e-12), cams)
        resized = tf.image.resize(cams[..., None], images.shape[1:3], method="bilinear").numpy()[..., 0]
        heats.append(np.clip(resized, 0.0, 1.0))
        used.append(np.asarray(chosen, dtype=np.int64))
    if not heats:
        return np.zeros((0, *images.shape[1:3]), np.float32), np.zeros(0, np.int64)
    return np.concatenate(heats), np.concatenate(used)


def gradcam(model, image: np.ndarray, class_index: int | None = None, layers: list[str] | None = None) -> tuple[np.ndarray, int]:
    """Grad-CAM (Selvaraju et al. 2017) heat map in [0, 1] at the input's size, and the class used.

    `image` is one preprocessed input (H, W, 3). Towers (two-tower) add their maps.
    """
    heats, used = gradcams(model, image[None], None if class_index is None else [class_index], layers)
    return heats[0], int(used[0])


def overlay(image: np.ndarray, heat: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """Heat map (jet-like colours) blended over an RGB uint8 image of any size."""
    from PIL import Image

    h, w = image.shape[:2]
    heat = np.asarray(Image.fromarray((heat * 255).astype(np.uint8)).resize((w, h), Image.BILINEAR)) / 255.0
    return (image * (1 - alpha) + heat_colours(heat) * 255 * alpha).clip(0, 255).astype(np.uint8)


def heat_colours(heat: np.ndarray) -> np.ndarray:
    """Values in 0..1 -> RGB in 0..1: dark blue (0, looked at least), cyan, yellow, dark red (1, most)."""
    return np.stack([np.clip(1.5 - abs(4 * heat - 3), 0, 1), np.clip(1.5 - abs(4 * heat - 2), 0, 1),
                     np.clip(1.5 - abs(4 * heat - 1), 0, 1)], axis=-1)


def heat_legend(width: int = 256, height: int = 14) -> np.ndarray:
    """The overlay's colour scale as a uint8 strip, least attention on the left."""
    ramp = np.tile(np.linspace(0.0, 1.0, width), (height, 1))
    return (heat_colours(ramp) * 255).astype(np.uint8)


def kernel_grid(kernels: np.ndarray, scale: int = 1, cols: int | None = None) -> np.ndarray:
    """Kernels (kh x kw x 3 x filters) as one RGB uint8 image grid, as in the paper's figure 3:
    each filter stretched to 0..255 on its own, enlarged `scale` times, 1-px white gaps,
    `cols` kernels a row (default: about twice as many columns as rows)."""
    k = np.asarray(kernels, dtype=np.float32).transpose(3, 0, 1, 2)
    if k.shape[-1] != 3:  # a grey or multi-channel input: the mean over channels
        k = np.repeat(k.mean(axis=-1, keepdims=True), 3, axis=-1)
    lo, hi = k.min(axis=(1, 2, 3), keepdims=True), k.max(axis=(1, 2, 3), keepdims=True)
    k = (k - lo) / np.maximum(hi - lo, 1e-8)
    if scale > 1:
        k = k.repeat(scale, axis=1).repeat(scale, axis=2)
    n, kh, kw, _ = k.shape
    cols = int(cols or np.ceil(np.sqrt(n * 2)))
    rows = int(np.ceil(n / cols))
    pad = 1
    grid = np.ones((rows * (kh + pad) + pad, cols * (kw + pad) + pad, 3))
    for i in range(n):
        r, c = divmod(i, cols)
        grid[pad + r * (kh + pad): pad + r * (kh + pad) + kh, pad + c * (kw + pad): pad + c * (kw + pad) + kw] = k[i]
    return (grid * 255).astype(np.uint8)


def first_conv(model) -> str:
    """The name of the first convolution: `conv1` in our networks, the first Conv2D in a user's."""
    names = [layer.name for layer in model.layers]
    if "conv1" in names or "conv1_a" in names:
        return "conv1"
    convs = _conv_layers(model)
    if not convs:
        raise NotApplicable(NO_CONVOLUTION)
    return convs[0].name


def conv1_groups(model) -> int:
    """How many groups conv1's kernels form: 2 for the paper's network (its two GPUs: conv2 sees
    the first half of conv1's maps on one GPU and the second half on the other, as conv2's
    groups say, or two towers), else 1."""
    names = [layer.name for layer in model.layers]
    if "conv1_a" in names and "conv1_b" in names:
        return 2
    convs = _conv_layers(model)
    if len(convs) > 1 and convs[0].name == "conv1":
        groups, filters = int(getattr(convs[1], "groups", 1) or 1), int(convs[0].filters)
        if groups > 1 and filters % groups == 0:
            return groups
    return 1


def conv1_filters(model, layer: str | None = None, cols: int | None = None) -> np.ndarray:
    """conv1's kernels as one RGB image grid (the paper's figure 3), uint8."""
    return kernel_grid(conv1_kernels(model, layer or first_conv(model)), cols=cols)


def conv1_figure(model, scale: int = 3) -> tuple[list[np.ndarray], int]:
    """conv1's kernels as the paper's Figure 3 shows them: one grid per group, in order (the
    kernels of the first GPU, then of the second), 16 a row when they split in two as the
    paper's 96 do; and how many kernels in all. Raises NotApplicable without a convolution."""
    kernels = conv1_kernels(model, first_conv(model))
    count, groups = kernels.shape[-1], conv1_groups(model)
    per = count // groups
    cols = 16 if groups > 1 and per % 16 == 0 else None
    return [kernel_grid(kernels[..., g * per:(g + 1) * per], scale=scale, cols=cols) for g in range(groups)], count


def feature_layers(model) -> list[str]:
    """Layers whose activations are worth showing (conv blocks and pools: their ReLU or tanh; a
    user's convolution with its activation built in)."""
    def shown(layer) -> bool:
        kind = type(layer).__name__
        if kind in ("Conv2D", "Activation"):
            return getattr(getattr(layer, "activation", None), "__name__", "linear") not in ("linear", "softmax")
        return kind in ("ReLU", "MaxPooling2D", "LocalResponseNormalization", "Concatenate")

    return [l.name for l in model.layers if len(l.output.shape) == 4 and shown(l)]


def activations(model, image: np.ndarray, layer: str, limit: int = 32) -> np.ndarray:
    """The first `limit` channels of a layer's output for one preprocessed image: (C, H, W) in [0, 1],
    each channel scaled to its own brightest point. A layer with negative outputs (tanh) is scaled
    by each channel's largest magnitude with zero at mid-grey (0.5), so what it says below zero
    shows too."""
    out = np.asarray(_tap(model, layer)(image[None].astype(np.float32), training=False))[0]
    maps = out[..., :limit].transpose(2, 0, 1).astype(np.float32)
    if maps.min() < 0:
        top = np.abs(maps).max(axis=(1, 2), keepdims=True)
        return np.where(top > 0, 0.5 + 0.5 * maps / np.maximum(top, 1e-8), 0.5)
    top = maps.max(axis=(1, 2), keepdims=True)
    return np.where(top > 0, maps / np.maximum(top, 1e-8), 0.0)


def embedding_layer(model) -> str:
    """fc7's activation (the paper's figure 4 feature; relu7, or tanh7 in a tanh network), or the
    last hidden dense output."""
    names = [l.name for l in model.layers]
    for candidate in ("relu7", "tanh7", "fc7"):
        if candidate in names:
            return candidate
    dense = [l.name for l in model.layers if type(l).__name__ == "Dense"]
    return dense[-2] if len(dense) > 1 else dense[-1]


def embeddings(model, images: np.ndarray, batch: int = 256) -> np.ndarray:
    """fc7 features of preprocessed images, L2-normalised."""
    sub = _tap(model, embedding_layer(model))
    feats = np.concatenate([np.asarray(sub(images[i:i + batch], training=False))
                            for i in range(0, len(images), batch)])
    return feats / np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-8)


def nearest(query: np.ndarray, bank: np.ndarray, k: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Indices and cosine similarities of the k rows of `bank` nearest to `query`."""
    sims = bank @ query
    order = np.argsort(-sims)[:k]
    return order, sims[order]
