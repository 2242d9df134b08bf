"""A map of what the network learned: an evaluation's images placed by their fc7 features.

fc7 (the paper's figure 4 feature) of each image, reduced with PCA to 50 dimensions, then laid
out in 2-D by scikit-learn's t-SNE: images the network sees as alike sit together. Large
evaluations are sampled (every class kept in proportion, the same sample every time). Maps are
cached on disk beside the evaluation cache (store.cache), keyed by the model file's fingerprint
and the evaluated images, which are read through evaluation's pixel pipeline (data.model_pixels).
"""

from __future__ import annotations

# Imports inside functions are deliberate: TensorFlow and Keras, the modules that reach them
# and Pillow, scikit-learn load on first use, so importing this module
# (the app's pages, the command line) stays light.
import base64
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from alexnet_core.inputs.data import DataError
from alexnet_core.store import cache

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
    """Batches of (positions, pixels) of the evaluated images at `indices`, as the model sees them
    before standardisation: the evaluation's own pipeline (data.model_pixels), so decoded exactly
    as it decoded them; a file that no longer decodes raises instead of being left out."""
    from alexnet_core.inputs.data import Split, load_source, model_pixels

    if evaluation.paths is not None:
        evaluated = Split(evaluation.labels, paths=evaluation.paths)
    else:  # in memory (CIFAR-10 from Keras): nothing was skipped, positions are the split's
        evaluated = load_source(evaluation.source).split(evaluation.split)
    return model_pixels(evaluated, loaded.input_size, indices, batch, skip_unreadable=False,
                        record=loaded.preprocessing)


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


def features(loaded, evaluation, indices: np.ndarray, batch: int | None = None,
             progress=None) -> tuple[np.ndarray, list[str]]:
    """(fc7 features, hover thumbnails) of the evaluated images at `indices` (`batch` images at a
    time: by default fewer for a 224-px model, as evaluation reads them)."""
    import tensorflow as tf

    from alexnet_core.analysis.evaluation import BATCH, LARGE_BATCH, LARGE_INPUT
    from alexnet_core.analysis.explain import _tap, embedding_layer
    from alexnet_core.inputs.preprocess import standardize

    batch = batch or (LARGE_BATCH if loaded.input_size >= LARGE_INPUT else BATCH)
    tap = _tap(loaded.model, embedding_layer(loaded.model))
    feats, thumbs = [], []
    try:
        for _, pixels in _pixels(loaded, evaluation, indices, batch):
            feats.append(np.asarray(tap(standardize(pixels, loaded.preprocessing), training=False), dtype=np.float32))
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
    name = cache.key(cache.model_fingerprint(loaded.path), evaluation.source, evaluation.split, evaluation.n,
                     np.ascontiguousarray(indices, dtype=np.int64).tobytes(),
                     None if evaluation.paths is None else [evaluation.paths[i] for i in indices],
                     loaded.preprocessing)
    return cache.folder(loaded.run_dir) / f"map-{name}.npz"


def is_cached(loaded, evaluation, limit: int = MAP_POINTS) -> bool:
    return _cache_path(loaded, evaluation, sample(evaluation.labels, limit)).exists()


def build_map(loaded, evaluation, limit: int = MAP_POINTS, progress=None, use_cache: bool = True) -> EmbeddingMap:
    """The map of an evaluation (sampled to `limit` images), from the disk cache when it has it."""
    indices = sample(evaluation.labels, limit)

    def compute() -> dict:
        feats, thumbs = features(loaded, evaluation, indices, progress=progress)
        return {"xy": project(feats), "thumbnails": np.array(thumbs, dtype=str)}

    saved, _ = cache.load_or_compute(_cache_path(loaded, evaluation, indices),  # a damaged cache is made again
                                     lambda p: read_cache(p, len(indices)), compute, use_cache)
    return EmbeddingMap(indices, saved["xy"], [str(t) for t in saved["thumbnails"]], evaluation.n)


def read_cache(path: Path, points: int) -> dict | None:
    """{"xy", "thumbnails"} of a cached map of `points` images, or None when the file is missing,
    damaged or not such a map: no more is unpacked than such a map holds."""

    def check(arrays: dict) -> dict | None:
        xy, thumbnails = arrays["xy"], arrays["thumbnails"]
        if xy.shape != (points, 2) or thumbnails.shape != (points,) or not np.all(np.isfinite(xy)):
            return None
        if not all(str(t).startswith(THUMB_PREFIX) for t in thumbnails):
            return None
        return {"xy": xy.astype(np.float32), "thumbnails": thumbnails}

    return cache.read(path, {"xy": ((points, 2), "f"), "thumbnails": ((points,), "U", 4 * MAX_THUMB_CHARS)}, check)
