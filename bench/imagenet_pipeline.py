"""ImageNet-scale input pipeline: decode plus the paper's augmentation against bare JPEG decode.

Writes (once) a synthetic ImageNet-like folder: `--images` photo-like JPEGs of 500x375 in
`--classes` class folders, the size of a typical ILSVRC photo. Then, side by side in one run and
on the same files (read from the page cache after a first pass):

  (a) bare decode: read + tf.io.decode_jpeg, parallel, nothing else
  (b) our training pipeline, `paper` crop: decode, shorter side to 256/224 of the input, random
      227 crop, then in batches flip, PCA lighting, standardise (data.make_dataset, training=True)
  (c) our training pipeline, `random-resized-crop`: only the crop's blocks are decoded
      (decode_and_crop_jpeg), resized to 227, flip, standardise

Prints images/s and images/s per CPU core for each, and (b)/(a), (c)/(a) (goal >= 0.8).

    python bench/imagenet_pipeline.py [--images 20000] [--classes 100] [--folder /tmp/alexnet-imagenet-like]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import tensorflow as tf  # noqa: E402

from alexnet_core.inputs.augment import dataset_options  # noqa: E402
from alexnet_core.inputs.data import load_folder, make_dataset  # noqa: E402
from bench.synthetic import jpeg_folder  # noqa: E402


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def timed(name: str, dataset, images: int, batch: int) -> float:
    """Images/s over `images` images of `dataset` (batches of `batch`), after one warm-up batch."""
    iterator = iter(dataset)
    next(iterator)
    start = time.perf_counter()
    seen = 0
    while seen < images:
        seen += batch if batch else 1
        next(iterator)
    rate = seen / (time.perf_counter() - start)
    print(f"{name:<58} {rate:8.0f} img/s   {rate / cores():7.0f} img/s per core", flush=True)
    return rate


def bare_decode(paths, batch: int):
    ds = tf.data.Dataset.from_tensor_slices(paths).repeat()
    ds = ds.map(lambda p: tf.io.decode_jpeg(tf.io.read_file(p), channels=3), num_parallel_calls=tf.data.AUTOTUNE)
    # Batched as ragged only to count in the same units as the pipeline; decode is the work.
    return ds.map(lambda x: tf.shape(x)[0], num_parallel_calls=tf.data.AUTOTUNE).batch(batch).prefetch(2)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=20_000)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--folder", default=str(Path(os.environ.get("TMPDIR", "/tmp")) / "alexnet-imagenet-like"))
    parser.add_argument("--size", type=int, default=227)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--timed", type=int, default=0, help="images timed per measurement (default: all)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds; the best of each is kept")
    args = parser.parse_args()

    start = time.perf_counter()
    root = jpeg_folder(Path(args.folder), args.images, args.classes)
    print(f"folder: {root} ({args.images} JPEGs of 500x375, {args.classes} classes; ready in "
          f"{time.perf_counter() - start:.0f} s); {cores()} CPU core(s); TensorFlow {tf.__version__}", flush=True)
    source = load_folder(root, val_split=0.0)
    split = source.train
    n = args.timed or len(split)
    for path in split.paths:  # first pass: every file in the page cache, as for every later epoch
        Path(path).read_bytes()

    def pipeline(preset):
        return make_dataset(split, len(source.class_names), args.size, args.batch_size, training=True,
                            cache_budget=0, drop_remainder=True, **dataset_options(preset, args.size, 0))

    best = {"bare": 0.0, "paper": 0.0, "random-resized-crop": 0.0}
    for round_ in range(args.rounds):
        print(f"round {round_ + 1}", flush=True)
        best["bare"] = max(best["bare"], timed("(a) bare JPEG decode", bare_decode(split.paths, args.batch_size),
                                               n, args.batch_size))
        best["paper"] = max(best["paper"], timed("(b) pipeline, paper crop + flip + PCA lighting",
                                                 pipeline("paper"), n, args.batch_size))
        best["random-resized-crop"] = max(best["random-resized-crop"], timed(
            "(c) pipeline, random-resized crop (decodes the crop) + flip", pipeline("random-resized-crop"), n,
            args.batch_size))
    print(f"best of {args.rounds}: bare {best['bare']:.0f}, paper {best['paper']:.0f}, random-resized-crop "
          f"{best['random-resized-crop']:.0f} img/s")
    print(f"ratios: (b)/(a) = {best['paper'] / best['bare']:.2f}   (c)/(a) = "
          f"{best['random-resized-crop'] / best['bare']:.2f}   (goal >= 0.8)")


if __name__ == "__main__":
    main()
