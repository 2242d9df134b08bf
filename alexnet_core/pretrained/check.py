"""Parity of a conversion with its reference runtime: the same preprocessed images through the
reference (PyTorch running torchvision's AlexNet for a `.pth`, ONNX Runtime running the graph for
an `.onnx`) and through our converted Keras model, their logits (fc8, before the softmax) compared.

A conversion counts only when it matches: logits within `TOLERANCE` relative (the largest
difference over the largest logit, per image), the same top-1 class on every image, and the same
top-5 order wherever the reference's logits are not tied.
"""

from __future__ import annotations

# Imports inside functions are deliberate: NumPy, TensorFlow, PyTorch and ONNX load when a check runs.
import time
from pathlib import Path

from alexnet_core.pretrained import install, sources
from alexnet_core.pretrained.sources import PretrainedError

TOLERANCE = 1e-4  # relative: max |ours - reference| / max |reference|, per image
DEFAULT_IMAGES = 8
MAX_IMAGES = 256
BATCH = 16


def generated_images(n: int = DEFAULT_IMAGES, seed: int = 0) -> list:
    """`n` smooth random RGB images (uint8) of assorted sizes, some already at the recipes'
    intermediate sizes (256x256, a shorter side of 256), some larger, smaller or not square."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    sizes = [(256, 256), (256, 341), (300, 400), (480, 360), (224, 224), (200, 260), (256, 256), (512, 384)]
    images = []
    for i in range(n):
        height, width = sizes[i % len(sizes)]
        coarse = rng.integers(0, 256, (int(rng.integers(3, 12)), int(rng.integers(3, 12)), 3), dtype=np.uint8)
        smooth = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BICUBIC), dtype=np.float32)
        noise = rng.normal(0.0, 12.0, (height, width, 3))
        images.append(np.clip(smooth + noise, 0, 255).astype(np.uint8))
    return images


def folder_images(folder, n: int) -> tuple[list, list[str], list[str]]:
    """Up to `n` images of `folder` in name order, decoded safely: (pixels, names, skipped names)."""
    from alexnet_core.inputs.images import ImageDecodeError, read_image

    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise PretrainedError(f"{folder} is not a folder; give a folder of images with --images.")
    images, names, skipped = [], [], []
    for path in sorted(p for p in folder.iterdir() if not p.name.startswith(".")):
        if len(images) >= n or len(skipped) > 10 * n:
            break
        if not path.is_file():
            continue
        try:
            images.append(read_image(path))
            names.append(path.name)
        except ImageDecodeError:
            skipped.append(path.name)
    if not images:
        raise PretrainedError(f"{folder} has no image this app can read (JPEG, PNG, WebP, BMP, GIF, TIFF).")
    return images, names, skipped


def logits_model(model):
    """The sub-model of a converted model that stops at its logits (the `fc8` layer)."""
    import keras

    return keras.Model(model.input, model.get_layer("fc8").output)


def inputs_for(images: list, record: dict):
    """The network input (N, H, W, 3 float32, RGB, standardised) of each image by `record`'s recipe."""
    import numpy as np

    from alexnet_core.inputs import preprocess

    pixels = np.stack([preprocess.fit(image, record, "crop") for image in images])
    return preprocess.standardize(pixels, record).numpy()


def _top5_agrees(ours, reference, tolerance) -> bool:
    """The same top-5 order, position by position, except where the reference's logits are tied
    (closer than `tolerance`) with a neighbour in the ranking."""
    import numpy as np

    order = np.argsort(-reference, kind="stable")[:6]
    mine = np.argsort(-ours, kind="stable")[:5]
    values = reference[order]
    for k in range(5):
        tied = (k > 0 and values[k - 1] - values[k] <= tolerance) or values[k] - values[k + 1] <= tolerance
        if not tied and mine[k] != order[k]:
            return False
    return True


def compare(ours, reference) -> dict:
    """The parity figures of two (N, classes) logit arrays."""
    import numpy as np

    ours, reference = np.asarray(ours, np.float64), np.asarray(reference, np.float64)
    abs_diff = np.abs(ours - reference).max(axis=1)
    scale = np.maximum(np.abs(reference).max(axis=1), 1e-12)
    rel = abs_diff / scale
    top1 = ours.argmax(axis=1) == reference.argmax(axis=1)
    top5 = [_top5_agrees(o, r, 2 * d + 1e-7 * s) for o, r, d, s in zip(ours, reference, abs_diff, scale)]
    return {"max_abs_diff": float(abs_diff.max()), "max_rel_diff": float(rel.max()),
            "top1_agreement": float(top1.mean()), "top5_agreement": float(np.mean(top5)), "n": int(len(ours)),
            "tolerance": TOLERANCE,
            "agrees": bool(rel.max() <= TOLERANCE and top1.all() and all(top5))}


def check(source: str, file, images_dir=None, n: int = DEFAULT_IMAGES, seed: int = 0) -> dict:
    """Run `file` (a `source` file: torchvision .pth or bvlc .onnx) through its reference runtime
    and through our conversion on the same preprocessed images (those of `images_dir`, else
    generated ones); returns {"max_abs_diff", "max_rel_diff", "top1_agreement", "top5_agreement",
    "n", "agrees", ...}."""
    import numpy as np

    from alexnet_core.inputs import preprocess

    started = time.monotonic()
    src = sources.get(source)
    if not isinstance(n, int) or not 1 <= n <= MAX_IMAGES:
        raise PretrainedError(f"The number of images must be 1 to {MAX_IMAGES}, got {n!r}.")
    path = Path(file).expanduser()
    converter = install.converter(src)
    model, info = converter.convert(path)
    size = int(model.input_shape[1])
    record = preprocess.recorded({"preprocessing": src.preprocessing(size)}, size)
    if images_dir is not None:
        images, names, skipped = folder_images(images_dir, n)
    else:
        images, names, skipped = generated_images(n, seed), [f"generated {i}" for i in range(n)], []
    x = inputs_for(images, record)
    head = logits_model(model)
    ours = np.concatenate([head(x[i:i + BATCH], training=False).numpy() for i in range(0, len(x), BATCH)])
    del head, model
    if src.file_format == "pth":
        reference = converter.reference_logits(path, x.transpose(0, 3, 1, 2))
    else:  # Caffe's network reads BGR: the same standardised pixels, channels reversed
        reference = converter.reference_logits(path, np.ascontiguousarray(x[..., ::-1].transpose(0, 3, 1, 2)))
    result = compare(ours, np.asarray(reference).reshape(ours.shape))
    result.update({"source": src.key, "file": str(path), "images": str(images_dir) if images_dir else "generated",
                   "image_names": names, "skipped": skipped, "num_classes": int(ours.shape[1]),
                   "input_size": size, "reference": "PyTorch" if src.file_format == "pth" else "ONNX Runtime",
                   "seconds": round(time.monotonic() - started, 2)})
    return result
