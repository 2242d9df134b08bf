"""Training throughput, measured side by side in one process.

  (a) plain model.fit on cached in-memory tensors (no callbacks): the baseline
  (b) the same model and data with our trainer's callbacks (status, steps.csv, CSVLogger,
      checkpoints, TensorBoard, stop checks)
  (c) our full pipeline from disk: image folder -> decode -> cache -> cifar augmentation ->
      normalise, with the callbacks
  (d) as (c) but streaming from disk every epoch (no in-memory cache)

Prints images/s, user/system CPU seconds and the ratios (b)/(a), (c)/(a), (d)/(a).

    python bench/train_throughput.py [--data FOLDER] [--steps 60] [--batch-size 128] [--width 0.5]
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from alexnet_core.training import configure_threads  # noqa: E402

configure_threads()

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from alexnet_core import runs  # noqa: E402
from alexnet_core.augment import build as build_augment  # noqa: E402
from alexnet_core.data import SAMPLE_DIR, Split, load_folder, make_dataset  # noqa: E402
from alexnet_core.training import TrainConfig, compile_model, make_callbacks  # noqa: E402
from alexnet_core.variants import build_model  # noqa: E402

SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "datasets" / "cifar10" / "train"


def cpu_times():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime


def measure(name, model_fn, dataset, steps, warmup, batch, callbacks_fn=None):
    model = model_fn()
    callbacks = callbacks_fn() if callbacks_fn else []
    model.fit(dataset, epochs=1, steps_per_epoch=warmup, verbose=0, callbacks=callbacks)  # compile + cache fill
    u0, s0 = cpu_times()
    start = time.perf_counter()
    model.fit(dataset, epochs=2, initial_epoch=1, steps_per_epoch=steps, verbose=0, callbacks=callbacks)
    wall = time.perf_counter() - start
    u1, s1 = cpu_times()
    rate = steps * batch / wall
    print(f"{name:<52} {rate:8.1f} img/s   user {u1 - u0:6.1f}s  sys {s1 - s0:5.1f}s  ({(s1 - s0) / max(wall, 1e-9):.0%} of wall in sys)",
          flush=True)
    return rate


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(SHARED if SHARED.is_dir() else SAMPLE_DIR / "train"))
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--width", type=float, default=0.5)
    parser.add_argument("--images", type=int, default=10_000, help="images taken from the folder")
    args = parser.parse_args()

    source = load_folder(args.data, val_split=0.0)
    n = min(args.images, len(source.train))
    pick = np.random.default_rng(0).permutation(len(source.train))[:n]
    split = Split(source.train.labels[pick], paths=[source.train.paths[i] for i in pick])
    classes = len(source.class_names)
    size, batch = 32, args.batch_size
    # The steps of one pass over the images, so every timed epoch reads the cache.
    warmup = int(np.ceil(n / batch))
    print(f"data: {n} images from {args.data}, {classes} classes; compact width {args.width}, batch {batch}, "
          f"{args.steps} timed steps after a {warmup}-step warm-up; TF threads intra "
          f"{tf.config.threading.get_intra_op_parallelism_threads()} inter "
          f"{tf.config.threading.get_inter_op_parallelism_threads()}", flush=True)

    # In-memory tensors: exactly the images (c) decodes, preprocessed the same way.
    plain = make_dataset(split, classes, size, batch, training=False)
    x = np.concatenate([xb.numpy() for xb, _ in plain])
    y = np.concatenate([yb.numpy() for _, yb in plain])
    cached = (tf.data.Dataset.from_tensor_slices((x, y)).cache().shuffle(n, seed=0).repeat()
              .batch(batch).prefetch(tf.data.AUTOTUNE))

    config = TrainConfig(variant="compact", data=args.data, switches={"width": args.width}, batch_size=batch,
                         epochs=2, log_every=10)

    def model_fn():
        tf.keras.utils.set_random_seed(0)
        model = build_model("compact", num_classes=classes, width=args.width)
        compile_model(model, config, warmup, classes)
        return model

    tmp = Path(tempfile.mkdtemp(prefix="bench-runs-"))

    def callbacks_fn():
        run_dir = runs.create_run(tmp, f"run{len(list(tmp.iterdir()))}", {})
        return make_callbacks(run_dir, config, args.steps, batch, has_val=False)[0]

    augment = build_augment("cifar", size, seed=0)
    from_disk = make_dataset(split, classes, size, batch, training=True, augment=augment, seed=0)
    streaming = make_dataset(split, classes, size, batch, training=True, augment=augment, seed=0, cache_budget=0)

    a = measure("(a) model.fit, cached tensors, no callbacks", model_fn, cached, args.steps, warmup, batch)
    b = measure("(b) + our callbacks", model_fn, cached, args.steps, warmup, batch, callbacks_fn)
    c = measure("(c) + folder pipeline (cached) + cifar augmentation", model_fn, from_disk, args.steps, warmup, batch,
                callbacks_fn)
    d = measure("(d) + folder pipeline streaming from disk + cifar aug.", model_fn, streaming, args.steps, warmup,
                batch, callbacks_fn)
    print(f"ratios: (b)/(a) = {b / a:.3f}   (c)/(a) = {c / a:.3f}   (d)/(a) = {d / a:.3f}   (goal >= 0.95)")


if __name__ == "__main__":
    main()
