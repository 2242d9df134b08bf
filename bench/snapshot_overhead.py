"""What the per-epoch snapshots (epoch time-travel) cost, against the epoch they belong to.

    python bench/snapshot_overhead.py [--data ../shared/datasets/cifar10/train] [--per-class 500]
                                      [--repeats 7]

Takes the first PER-CLASS files of each class of DATA (CIFAR-10's 9:1 train/validation split by
name, as the recipes use) and trains the `quick` recipe on them for 3 epochs (the epoch time is
the median of epochs 2-3: epoch 1 also fills the cache and traces the graph). Then, in one
process on that run's model, side by side and interleaved REPEATS times:
- the validation pass with and without every image's label and prediction (what snapshots add
  to it);
- writing one snapshot (the probe's forward pass, conv1's kernels, the compressed file).
Prints the added seconds, their share of the epoch, and the bytes per epoch. Targets: at most
1.03x the epoch and 1 MB per epoch. Whole runs with and without snapshots differ by less than
their epoch-to-epoch noise on this machine (+-20%), hence the parts are timed instead.
A smaller subset exaggerates the cost: the snapshot's fixed part is paid per epoch, however
short the epoch; the validation part grows with the validation split, as the epoch does.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def subset(data: Path, per_class: int, dest: Path) -> Path:
    """A folder of links to the first `per_class` files of each class of `data`."""
    for class_dir in sorted(p for p in data.iterdir() if p.is_dir()):
        (dest / class_dir.name).mkdir(parents=True)
        for f in sorted(class_dir.iterdir())[:per_class]:
            (dest / class_dir.name / f.name).symlink_to(f.resolve())
    return dest


def epoch_seconds(run_dir: Path) -> float:
    record = json.loads((run_dir / "checkpoints" / "state.json").read_text())
    return statistics.median(row["epoch_seconds"] for row in record["metrics"][1:])


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "datasets" / "cifar10" / "train"))
    parser.add_argument("--per-class", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="snapshot-bench-"))
    data = subset(Path(args.data), args.per_class, tmp / "data")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run_dir = tmp / "runs" / "quick"
    done = subprocess.run([sys.executable, "-m", "alexnet_core", "train", "--recipe", "quick", "--data", str(data),
                           "--epochs", "3", "--runs-dir", str(tmp / "runs"), "--run-id", "quick", "--allow-parallel"],
                          env=env, cwd=ROOT, capture_output=True, text=True)
    if done.returncode:
        print(done.stderr[-3000:])
        return 1
    epoch = epoch_seconds(run_dir)
    files = sorted((run_dir / "snapshots").glob("epoch-*.npz"))
    per_epoch = statistics.mean(f.stat().st_size for f in files)

    import keras
    import numpy as np
    import tensorflow as tf

    from alexnet_core.inputs.data import load_folder, make_dataset
    from alexnet_core.models import layers  # noqa: F401  (registers the custom layers)
    from alexnet_core.settings.config import TrainConfig
    from alexnet_core.settings.recipes import get_recipe
    from alexnet_core.train.devices import use_mixed_precision
    from alexnet_core.train.loop import distributed_eval_dataset, evaluate_distributed, loss_function, make_steps
    from alexnet_core.train.observers import SnapshotObserver
    from alexnet_core.train.snapshots import choose_probe
    from alexnet_core.train.training import configure_threads

    configure_threads()
    config = get_recipe("quick").config(data=str(data))
    use_mixed_precision(config.mixed_precision)
    source = load_folder(data, config.val_split)
    strategy = tf.distribute.get_strategy()
    model = keras.models.load_model(run_dir / "checkpoints" / "last.keras", safe_mode=True)
    steps = {flag: make_steps(model, None, strategy, loss_function(TrainConfig()), config.batch_size, 5,
                              per_image=flag)[1] for flag in (False, True)}
    val = distributed_eval_dataset(strategy, source.val, 10, 32, config.batch_size)
    chosen = choose_probe(source.val.labels)
    part = type(source.val)(source.val.labels[chosen], paths=[source.val.paths[i] for i in chosen])
    probe = np.concatenate([b[0].numpy() for b in make_dataset(part, 10, 32, len(chosen))])
    writer = SnapshotObserver(tmp / "bench-run", model, probe)
    validation = evaluate_distributed(steps[True], val)
    for flag in (False, True):  # traced once each before timing
        evaluate_distributed(steps[flag], val)
    writer.write(1, validation)
    plain, full, write = [], [], []
    for _ in range(args.repeats):
        plain.append(median_time(lambda: evaluate_distributed(steps[False], val), 1))
        full.append(median_time(lambda: evaluate_distributed(steps[True], val), 1))
        write.append(median_time(lambda: writer.write(1, validation), 1))
    plain, full, write = (statistics.median(x) for x in (plain, full, write))
    added = max(full - plain, 0.0) + write
    print(f"{len(source.train)} training and {len(source.val)} validation images; epoch (quick recipe, median of "
          f"epochs 2-3) {epoch:.2f} s")
    print(f"validation pass: {plain * 1000:.0f} ms without per-image outputs, {full * 1000:.0f} ms with them "
          f"({(full - plain) * 1000:+.0f} ms)")
    print(f"writing one snapshot (probe forward, conv1, file): {write * 1000:.0f} ms")
    print(f"snapshot per epoch {per_epoch / 1024:.1f} KiB (+ the probe once, "
          f"{(run_dir / 'snapshots' / 'probe.npz').stat().st_size / 1024:.1f} KiB)")
    print(f"epoch time with snapshots: {(epoch + added) / epoch:.3f}x the epoch without them (target <= 1.03x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
