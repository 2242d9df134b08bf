"""A map of what the network learned: an evaluation's images placed by their fc7 features.

fc7 (the paper's figure 4 feature) of each image, reduced with PCA to 50 dimensions, then laid
out in 2-D by scikit-learn's t-SNE: images the network sees as alike sit together. Large
evaluations are sampled (every class kept in proportion, the same sample every time). Maps are
cached on disk beside the evaluation cache, keyed by the model file and the evaluated images.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from alexnet_core.inputs.data import DataError
from alexnet_core.store import fileio

MAP_POINTS = 1500  # at most this many images on a map
PCA_DIMS = 50
THUMB = 64  # px, the longer side of a hover thumbnail
THUMB_PREFIX = "data:image/jpeg;base64,"
MAX_THUMB_CHARS = 16_000  # a 64-px JPEG's data: URI (one of pure noise is about 4,500)


@dataclass
class EmbeddingMap:
    indices: np.ndarray  # positions in the Evaluation
    xy: np.ndarray  # (n, 2) t-SNE coordinates
    thumbnails: list[str]  # data: URIs of small JPEGs, for hover
    total: int  # images in the evaluation


def sample(labels: np.ndarray, limit: int = MAP_POINTS, seed: int = 0) -> np.ndarray:
    """Up to `limit` positions, each class in proportion (at least one image of each), sorted."""
    labels = np.asarray(labels)
    if len(labels) <= limit:
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    chosen = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        take = max(1, limit * len(members) // len(labels))
        chosen.append(rng.choice(members, size=min(take, len(members)), replace=False))
    chosen = np.concatenate(chosen)
    if len(chosen) > limit:  # more classes than points: one image each, then some left out
        chosen = rng.choice(chosen, size=limit, replace=False)
    return np.sort(chosen)


def _pixels(loaded, evaluation, indices: np.ndarray, batch: int):
    """Batches of the images at `indices` as the model sees them (0..255 at its input size),
    decoded exactly as the evaluation decoded them."""
    import tensorflow as tf

    from alexnet_core.inputs.data import decode_file, load_source
    from alexnet_core.inputs.preprocess import resize

    size = loaded.input_size
    if evaluation.paths is not None:
        paths = np.array([evaluation.paths[i] for i in indices], dtype=str)
        ds = tf.data.Dataset.from_tensor_slices(paths).map(lambda p: decode_file(p, size),
                                                           num_parallel_calls=tf.data.AUTOTUNE)
    else:  # in memory (CIFAR-10 from Keras): nothing was skipped, positions are the split's
        images = load_source(evaluation.source).split(evaluation.split).images[indices]
        ds = tf.data.Dataset.from_tensor_slices(images).map(lambda x: resize(x, size),
                                                            num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(batch).prefetch(tf.data.AUTOTUNE)


def _thumbnail(pixels: np.ndarray) -> str:
    from PIL import Image

    image = Image.fromarray(np.clip(pixels + 0.5, 0, 255).astype(np.uint8))
    image.thumbnail((THUMB, THUMB), Image.LANCZOS)
    if max(image.size) < THUMB:  # small inputs (CIFAR's 32 px) enlarged, blocky, so they can be seen
        scale = THUMB // max(image.size)
        image = image.resize((image.width * scale, image.height * scale), Image.NEAREST)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=80)
    return THUMB_PREFIX + base64.b64encode(buffer.getvalue()).decode("ascii")


def features(loaded, evaluation, indices: np.ndarray, batch: int = 256, progress=None) -> tuple[np.ndarray, list[str]]:
    """(fc7 features, hover thumbnails) of the evaluated images at `indices`."""
    import tensorflow as tf

    from alexnet_core.analysis.explain import _tap, embedding_layer
    from alexnet_core.inputs.preprocess import normalize

    tap = _tap(loaded.model, embedding_layer(loaded.model))
    mean, std = loaded.preprocessing.get("mean"), loaded.preprocessing.get("std")
    feats, thumbs = [], []
    try:
        for pixels in _pixels(loaded, evaluation, indices, batch):
            feats.append(np.asarray(tap(normalize(pixels, mean, std), training=False), dtype=np.float32))
            thumbs.extend(_thumbnail(p) for p in pixels.numpy())
            if progress:
                progress(len(thumbs), len(indices))
    except tf.errors.OpError as exc:
        raise DataError("An evaluated image can no longer be read (the folder changed since it was "
                        "evaluated): evaluate again.") from exc
    if not feats:
        return np.zeros((0, 0), np.float32), []
    return np.concatenate(feats).reshape(len(thumbs), -1), thumbs


def project(feats: np.ndarray, seed: int = 0) -> np.ndarray:
    """PCA to at most PCA_DIMS dimensions, then 2-D t-SNE (scikit-learn): (n, 2) float32."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    n = len(feats)
    if n < 3:
        return np.zeros((n, 2), np.float32) + np.arange(n)[:, None]
    dims = max(2, min(PCA_DIMS, n - 1, feats.shape[1]))
    reduced = PCA(n_components=dims, random_state=seed).fit_transform(feats)
    perplexity = float(min(30.0, (n - 1) / 3))
    xy = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(reduced)
    return xy.astype(np.float32)


def _cache_path(loaded, evaluation, indices: np.ndarray) -> Path:
    from alexnet_core.analysis.evaluation import cache_dir_for

    stat = loaded.path.stat()
    h = hashlib.sha1()
    h.update(json.dumps([str(loaded.path.resolve()), stat.st_size, int(stat.st_mtime), evaluation.source,
                         evaluation.split, evaluation.n]).encode())
    h.update(np.ascontiguousarray(indices).tobytes())
    if evaluation.paths is not None:
        h.update("\n".join(evaluation.paths[i] for i in indices).encode())
    return cache_dir_for(loaded) / f"map-{h.hexdigest()[:16]}.npz"


def is_cached(loaded, evaluation, limit: int = MAP_POINTS) -> bool:
    return _cache_path(loaded, evaluation, sample(evaluation.labels, limit)).exists()


def build_map(loaded, evaluation, limit: int = MAP_POINTS, progress=None, use_cache: bool = True) -> EmbeddingMap:
    """The map of an evaluation (sampled to `limit` images), from the disk cache when it has it."""
    indices = sample(evaluation.labels, limit)
    cache = _cache_path(loaded, evaluation, indices)
    saved = read_cache(cache, len(indices)) if use_cache else None  # a damaged cache is made again
    if saved is not None:
        return EmbeddingMap(indices, *saved, evaluation.n)
    feats, thumbs = features(loaded, evaluation, indices, progress=progress)
    xy = project(feats)
    if use_cache:
        try:
            fileio.save_npz(cache, xy=xy, thumbnails=np.array(thumbs))
        except OSError:
            pass  # a read-only disk only loses the cache
    return EmbeddingMap(indices, xy, thumbs, evaluation.n)


def read_cache(path: Path, points: int) -> tuple[np.ndarray, list[str]] | None:
    """(xy, thumbnails) of a cached map of `points` images, or None when the file is missing,
    damaged or not such a map: no more is unpacked than such a map holds."""
    saved = fileio.load_npz(path, ("xy", "thumbnails"), {"xy": ((points, 2), "f"),
                                                      "thumbnails": ((points,), "U", 4 * MAX_THUMB_CHARS)})
    if saved is None or saved["xy"].shape != (points, 2) or saved["thumbnails"].shape != (points,):
        return None
    thumbnails = [str(t) for t in saved["thumbnails"]]
    if not np.all(np.isfinite(saved["xy"])) or not all(t.startswith(THUMB_PREFIX) for t in thumbnails):
        return None
    return saved["xy"].astype(np.float32), thumbnails
