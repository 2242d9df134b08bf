"""A map of what the network learned: an evaluation's images placed by their fc7 features.

fc7 (the paper's figure 4 feature) of each image, reduced with PCA to 50 dimensions, then laid
out in 2-D by scikit-learn's t-SNE: images the network sees as alike sit together. Large
evaluations are sampled (every class kept in proportion, the same sample every time). Maps are
cached on disk beside the evaluation cache (store.cache), keyed by the model file's fingerprint
and the evaluated images, which are read through evaluation's pixel pipeline (data.model_pixels).

A bundled run may ship its map of the bundled sample (`PRECOMPUTED`, keyed by the model file's
contents, not its path or time, which change on install): then only the hover thumbnails are made,
in about a second, instead of fc7 features and t-SNE. Building a map reports its steps as it goes:
the features image by image, then t-SNE iteration by iteration (from scikit-learn's own log).
"""

from __future__ import annotations

# Imports inside functions are deliberate: TensorFlow and Keras, the modules that reach them
# and Pillow, scikit-learn load on first use, so importing this module
# (the app's pages, the command line) stays light.
import base64
import contextlib
import functools
import hashlib
import io
import re
import sys
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
TSNE_ITERATIONS = 1000  # scikit-learn's default, said here so the progress bar knows the end
PRECOMPUTED = "map.npz"  # in a bundled run's folder: its map of the bundled sample's evaluation
# Shares of the progress bar: reading fc7 features, then PCA, then t-SNE (the longest on 2 cores).
FEATURES_SHARE, PCA_SHARE = 0.3, 0.05


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
        evaluated = load_source(evaluation.source, evaluation.val_split).split(evaluation.split)
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


def thumbnails(loaded, evaluation, indices: np.ndarray) -> list[str]:
    """The hover thumbnails of the evaluated images at `indices`, without the network."""
    from alexnet_core.analysis.evaluation import BATCH

    return [_thumbnail(p) for _, pixels in _pixels(loaded, evaluation, indices, BATCH) for p in pixels.numpy()]


class _IterationLog(io.TextIOBase):
    """Standard output while t-SNE runs: scikit-learn's "[t-SNE] Iteration 50: ..." lines become
    progress reports and its other lines are dropped; anything else (another thread's print)
    goes on to where it was going."""

    def __init__(self, report, passed_on):
        self.report, self.passed_on, self.in_log_line = report, passed_on, False

    def write(self, text: str) -> int:
        if text.startswith("[t-SNE]"):
            found = re.search(r"Iteration (\d+)", text)
            if found:
                self.report(int(found.group(1)))
            self.in_log_line = not text.endswith("\n")
        elif self.in_log_line and text == "\n":  # print() ends its line with a write of its own
            self.in_log_line = False
        else:
            self.passed_on.write(text)
        return len(text)


def project(feats: np.ndarray, seed: int = 0, progress=None) -> np.ndarray:
    """PCA to at most PCA_DIMS dimensions, then 2-D t-SNE (scikit-learn): (n, 2) float32.
    `progress(iterations done, TSNE_ITERATIONS)` every 50 t-SNE iterations, read from
    scikit-learn's verbose log."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    n = len(feats)
    if n < 3:
        return np.zeros((n, 2), np.float32) + np.arange(n)[:, None]
    dims = max(2, min(PCA_DIMS, n - 1, feats.shape[1]))
    reduced = PCA(n_components=dims, random_state=seed).fit_transform(feats)
    perplexity = float(min(30.0, (n - 1) / 3))
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed, max_iter=TSNE_ITERATIONS,
                verbose=2 if progress else 0)
    if progress is None:
        return tsne.fit_transform(reduced).astype(np.float32)
    with contextlib.redirect_stdout(_IterationLog(lambda done: progress(done, TSNE_ITERATIONS), sys.stdout)):
        xy = tsne.fit_transform(reduced)
    return xy.astype(np.float32)


def _cache_path(loaded, evaluation, indices: np.ndarray) -> Path:
    name = cache.key(cache.model_fingerprint(loaded.path), evaluation.source, evaluation.split, evaluation.n,
                     np.ascontiguousarray(indices, dtype=np.int64).tobytes(),
                     None if evaluation.paths is None else [evaluation.paths[i] for i in indices],
                     loaded.preprocessing)
    return cache.folder(loaded.run_dir) / f"map-{name}.npz"


@functools.lru_cache(maxsize=16)
def _contents(path: str, fingerprint: str) -> str:
    """16 hex digits of a file's bytes (remembered per file version: `fingerprint`)."""
    digest = hashlib.sha1()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def precomputed_key(loaded, evaluation, indices: np.ndarray) -> str:
    """What a shipped map must have been made from: the model file's contents, its preprocessing,
    the data, split and sampled images (by class folder and file name, wherever it is installed)."""
    names = None if evaluation.paths is None else ["/".join(Path(evaluation.paths[i]).parts[-2:]) for i in indices]
    model = _contents(str(loaded.path), cache.model_fingerprint(loaded.path))
    return cache.key(model, evaluation.source, evaluation.split, evaluation.n,
                     np.ascontiguousarray(indices, dtype=np.int64).tobytes(), names, loaded.preprocessing)


def precomputed(loaded, evaluation, indices: np.ndarray) -> np.ndarray | None:
    """The shipped t-SNE layout of these images by this model (`PRECOMPUTED` in its run folder),
    or None when there is none or it was made from anything else."""
    if loaded.run_dir is None or not (Path(loaded.run_dir) / PRECOMPUTED).is_file():
        return None
    try:
        wanted = precomputed_key(loaded, evaluation, indices)
    except OSError:
        return None

    def check(arrays: dict) -> dict | None:
        xy = arrays["xy"]
        ok = xy.shape == (len(indices), 2) and np.all(np.isfinite(xy)) and arrays["key"].tolist() == [wanted]
        return {"xy": xy.astype(np.float32)} if ok else None

    saved = cache.read(Path(loaded.run_dir) / PRECOMPUTED, {"xy": ((len(indices), 2), "f"), "key": ((1,), "U", 64)},
                       check)
    return None if saved is None else saved["xy"]


def write_precomputed(loaded, evaluation, made: EmbeddingMap, folder: Path) -> Path:
    """Ship `made` (a map of `evaluation` by `loaded`) as the run folder's PRECOMPUTED map."""
    from alexnet_core.store import fileio

    path = Path(folder) / PRECOMPUTED
    fileio.save_npz(path, xy=made.xy.astype(np.float32),
                    key=np.array([precomputed_key(loaded, evaluation, made.indices)]))
    return path


def is_cached(loaded, evaluation, limit: int = MAP_POINTS) -> bool:
    """Whether the map is ready without t-SNE (cached on disk, or shipped with the run)."""
    indices = sample(evaluation.labels, limit)
    return _cache_path(loaded, evaluation, indices).exists() or precomputed(loaded, evaluation, indices) is not None


def build_map(loaded, evaluation, limit: int = MAP_POINTS, progress=None, use_cache: bool = True) -> EmbeddingMap:
    """The map of an evaluation (sampled to `limit` images), from the disk cache when it has it,
    else the layout shipped with the run (thumbnails made here), else computed. `progress(share
    done, what is being done)` as it goes: fc7 features image by image, PCA, t-SNE iterations."""
    indices = sample(evaluation.labels, limit)

    def report(share: float, text: str) -> None:
        if progress:
            progress(min(1.0, share), text)

    def compute() -> dict:
        shipped = precomputed(loaded, evaluation, indices) if use_cache else None
        if shipped is not None:
            report(0.5, f"The layout ships with the model: thumbnails of {len(indices):,} images")
            return {"xy": shipped, "thumbnails": np.array(thumbnails(loaded, evaluation, indices), dtype=str)}
        feats, thumbs = features(loaded, evaluation, indices, progress=lambda done, total: report(
            FEATURES_SHARE * done / max(total, 1), f"Step 1 of 3: fc7 features of {done:,}/{total:,} images"))
        report(FEATURES_SHARE, f"Step 2 of 3: PCA of {len(indices):,} images to {PCA_DIMS} dimensions")
        xy = project(feats, progress=lambda done, total: report(
            FEATURES_SHARE + PCA_SHARE + (1 - FEATURES_SHARE - PCA_SHARE) * done / total,
            f"Step 3 of 3: t-SNE layout, iteration {done:,} of {total:,} (at most)"))
        return {"xy": xy, "thumbnails": np.array(thumbs, dtype=str)}

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
