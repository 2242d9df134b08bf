"""Training throughput, measured side by side in one process.

  (a) plain model.fit on cached in-memory tensors: the baseline
  (b) our training step (loop.make_steps: strategy.run, sums reduced over replicas, read
      back every step as the trainer does) on the same tensors
  (c) our whole trainer (loop.Trainer: run folder, heartbeat thread, steps.csv, stop checks)
      on the image folder: decode, in-memory cache, cifar augmentation, normalise; the second
      epoch is timed (the first fills the cache and compiles)
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

from alexnet_core.train.training import configure_threads  # noqa: E402

configure_threads()

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from alexnet_core.inputs.data import Split, load_folder, make_dataset  # noqa: E402
from alexnet_core.locations import SAMPLE_DIR  # noqa: E402
from alexnet_core.models.variants import build_model  # noqa: E402
from alexnet_core.settings.config import TrainConfig  # noqa: E402
from alexnet_core.store import fileio, layout  # noqa: E402
from alexnet_core.train import lifecycle  # noqa: E402
from alexnet_core.train.loop import Trainer, loss_function, make_steps  # noqa: E402
from alexnet_core.train.optimizer import build_optimizer  # noqa: E402

SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "datasets" / "cifar10" / "train"


def cpu_times():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime


def report(name, rate, cpu0, cpu1, wall):
    user, system = cpu1[0] - cpu0[0], cpu1[1] - cpu0[1]
    print(f"{name:<60} {rate:8.1f} img/s   user {user:6.1f}s  sys {system:5.1f}s  ({system / max(wall, 1e-9):.0%} "
          "of wall in sys)", flush=True)
    return rate


def measure_fit(name, model, dataset, steps, warmup, batch):
    model.fit(dataset, epochs=1, steps_per_epoch=warmup, verbose=0)  # compile
    cpu0, start = cpu_times(), time.perf_counter()
    model.fit(dataset, epochs=2, initial_epoch=1, steps_per_epoch=steps, verbose=0)
    wall = time.perf_counter() - start
    return report(name, steps * batch / wall, cpu0, cpu_times(), wall)


def measure_step(name, model, optimizer, config, dataset, steps, warmup, batch, classes):
    train_step, _ = make_steps(model, optimizer, tf.distribute.get_strategy(), loss_function(config), batch,
                               min(5, classes))
    iterator = iter(dataset)
    for _ in range(warmup):
        {k: float(v) for k, v in train_step(iterator).items()}
    cpu0, start = cpu_times(), time.perf_counter()
    for _ in range(steps):
        {k: float(v) for k, v in train_step(iterator).items()}  # read back every step, as the trainer
    wall = time.perf_counter() - start
    return report(name, steps * batch / wall, cpu0, cpu_times(), wall)


def measure_trainer(name, config, root, batch):
    run_dir = lifecycle.new_run(config, root)
    cpu0, start = cpu_times(), time.perf_counter()
    status = Trainer(config, run_dir, log=lambda m: None).run()
    assert status["state"] == "finished", status
    record = fileio.read_object(run_dir / layout.CHECKPOINTS / layout.STATE)
    epoch = record["metrics"][-1]
    wall = epoch["epoch_seconds"]
    cpu1 = cpu_times()  # the whole run's CPU; only the timed epoch's images/s is compared
    steps = record["steps_per_epoch"]
    print(f"    (timed epoch: {steps} steps in {wall:.1f} s; whole run {time.perf_counter() - start:.1f} s)")
    return report(name, steps * batch / wall, cpu0, cpu1, time.perf_counter() - start)


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
              .batch(batch, drop_remainder=True).prefetch(tf.data.AUTOTUNE))

    # The same images as a folder of links, for the trainer (one epoch = one pass over them).
    tmp = Path(tempfile.mkdtemp(prefix="bench-train-"))
    for path, label in zip(split.paths, split.labels):
        folder = tmp / "data" / source.class_names[label]
        folder.mkdir(parents=True, exist_ok=True)
        (folder / Path(path).name).symlink_to(Path(path).resolve())
    config = TrainConfig(variant="compact", data=str(tmp / "data"), switches={"width": args.width},
                         batch_size=batch, epochs=2, log_every=10, val_split=0.0, augment="cifar",
                         mixed_precision="off")

    def fresh():
        tf.keras.utils.set_random_seed(0)
        model = build_model("compact", num_classes=classes, width=args.width)
        optimizer = build_optimizer(config, warmup)
        model.compile(optimizer=optimizer, loss=loss_function(config))
        return model, optimizer

    a = measure_fit("(a) model.fit, cached tensors", fresh()[0], cached, args.steps, warmup, batch)
    b = measure_step("(b) our training step, cached tensors", *fresh(), config, cached, args.steps, warmup,
                     batch, classes)
    c = measure_trainer("(c) our trainer: folder, cached, cifar augmentation", config, tmp / "runs", batch)
    streaming = TrainConfig(**{**config.__dict__, "cache_budget_mb": 0})
    d = measure_trainer("(d) our trainer: folder streamed from disk, cifar aug.", streaming, tmp / "runs", batch)
    print(f"ratios: (b)/(a) = {b / a:.3f}   (c)/(a) = {c / a:.3f}   (d)/(a) = {d / a:.3f}   (goal >= 0.95)")


if __name__ == "__main__":
    main()
