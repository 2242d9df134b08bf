"""The `quick` recipe's levers, measured one after the other in one run on this machine.

Each lever is the recipe with one or two settings changed, trained by the command line as a
user would (`python -m alexnet_core train --recipe quick --data DATA [changes]`), timed from the
command to the saved model. The levers start from the recipe as it was until 2026-11-22
(`compact-13`: compact, 13 epochs); `hires-8` is the recipe since. Those two runs are also
evaluated single view and with flip averaging (test-time flip, float32 as the app runs it).

The exponential moving average (EMA) of the weights is measured inside one training run:
compact-13's network, data pipeline, optimizer and training step (loop.make_steps) with
Keras' optimizer EMA switched on (`use_ema`), validated after every epoch twice, with the
weights as trained and with their average, so the two columns come from the same trajectory.

Validation figures: files 4500-4999 of each class with `--val-split 0.1` on CIFAR-10's training
folder. Prints a table of final and best validation accuracy, minutes of epochs and wall minutes.

    python bench/quick_levers.py [--data ../shared/datasets/cifar10/train] [--levers hires-8,ema,...]
        [--epochs N]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SHARED = ROOT.parent / "shared" / "datasets" / "cifar10" / "train"

# name: (what changes, the command line's extra arguments). Levers change one thing of the
# recipe as it was until 2026-11-22 (compact, 13 epochs); `hires-8` is the recipe since.
BASE = ["--variant", "compact", "--epochs", "13"]
CLI_LEVERS = {
    "compact-13": ("compact, 13 epochs (AdamW 3e-3, batch 256, label smoothing 0.1, bf16)", BASE),
    "no-label-smoothing": ("as compact-13, label smoothing 0 instead of 0.1", [*BASE, "--label-smoothing", "0"]),
    "batch-512": ("as compact-13, batch 512 with the learning rate doubled (6e-3)",
                  [*BASE, "--batch-size", "512", "--learning-rate", "6e-3"]),
    "hires-9": ("compact-hires at width 0.5 (conv1-2 at 32x32, 3x3 kernels), 9 epochs",
                ["--variant", "compact-hires", "--epochs", "9"]),
    "hires-8": ("compact-hires at width 0.5, 8 epochs", ["--variant", "compact-hires", "--epochs", "8"]),
}
FLIPPED = ("compact-13", "hires-8")  # also evaluated single view and with flip averaging
EMA_MOMENTUM = 0.99  # Keras' default: an average over about the last 100 steps


def cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "alexnet_core", *args], capture_output=True, text=True, cwd=ROOT)


def run_lever(name: str, data: str, root: Path, epochs: int | None = None) -> dict:
    what, extra = CLI_LEVERS[name]
    if epochs:  # a shorter trial of every lever (the last --epochs wins)
        extra = [*extra, "--epochs", str(epochs)]
    start = time.perf_counter()
    done = cli("train", "--recipe", "quick", "--data", data, "--runs-dir", str(root), "--run-id", name, *extra)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{name} failed:\n{done.stderr[-3000:]}")
    import pandas as pd

    metrics = pd.read_csv(root / name / "metrics.csv")
    row = {"lever": name, "what": what, "epochs": len(metrics), "last": metrics["val_accuracy"].iloc[-1],
           "best": metrics["val_accuracy"].max(), "epoch_minutes": metrics["epoch_seconds"].sum() / 60,
           "wall_minutes": wall / 60}
    print(json.dumps(row), flush=True)
    return row


def flip_figures(run_dir: Path, data: str) -> dict:
    out = {}
    for flip in (False, True):
        done = cli("evaluate", str(run_dir), "--data", data, "--split", "val", "--json", *(["--flip"] if flip else []))
        if done.returncode != 0:
            raise SystemExit(done.stderr[-3000:])
        out["flip" if flip else "single"] = json.loads(done.stdout)["accuracy"]
    print(json.dumps(out), flush=True)
    return out


def run_ema(data: str, epochs: int | None = None) -> dict:
    """compact-13 trained once; each epoch validated with the trained and with the averaged weights."""
    from alexnet_core.train.training import configure_threads

    configure_threads()
    import keras
    import numpy as np
    import tensorflow as tf

    from alexnet_core.inputs.augment import dataset_options
    from alexnet_core.inputs.data import load_source, make_dataset, steps_for
    from alexnet_core.models.variants import build_model
    from alexnet_core.settings.config import TrainConfig
    from alexnet_core.settings.recipes import RECIPES
    from alexnet_core.train.devices import precision_policy
    from alexnet_core.train.loop import evaluate_distributed, loss_function, make_steps
    from alexnet_core.train.optimizer import build_optimizer

    config = TrainConfig(**{**RECIPES["quick"].settings, "data": data, "variant": "compact", "epochs": epochs or 13})
    source = load_source(data, config.val_split)
    train, val = source.split("train"), source.split("val")
    classes, batch = len(source.class_names), config.batch_size
    start = time.perf_counter()
    with precision_policy(config.mixed_precision) as loss_scaling:
        keras.utils.set_random_seed(config.seed)
        model = build_model(config.variant, num_classes=classes, input_size=config.input_size, **config.switches)
        size = model.input_shape[1]
        steps = steps_for(train, batch)
        optimizer = build_optimizer(config, steps, loss_scaling=loss_scaling)
        optimizer.use_ema, optimizer.ema_momentum = True, EMA_MOMENTUM  # read when it builds its variables
        model.compile(optimizer=optimizer)
        optimizer.build(model.trainable_variables)
        train_step, eval_step = make_steps(model, optimizer, tf.distribute.get_strategy(), loss_function(config),
                                           batch, 5, per_image=False)
        iterator = iter(make_dataset(train, classes, size, batch, training=True, seed=config.seed,
                                     drop_remainder=True, **dataset_options(config.augment, size, config.seed)))
        val_data = make_dataset(val, classes, size, batch)
        rows, epoch_seconds = [], 0.0
        for epoch in range(1, config.epochs + 1):
            begin = time.perf_counter()
            for _ in range(steps):
                train_step(iterator)
            trained = evaluate_distributed(eval_step, val_data)["accuracy"]
            epoch_seconds += time.perf_counter() - begin
            kept = [v.numpy() for v in model.trainable_variables]
            optimizer.finalize_variable_values(model.trainable_variables)  # the averages, in place
            averaged = evaluate_distributed(eval_step, val_data)["accuracy"]
            for variable, value in zip(model.trainable_variables, kept):
                variable.assign(value)
            rows.append((epoch, trained, averaged))
            print(f"  ema run, epoch {epoch}: trained weights {trained:.4f}, averaged {averaged:.4f}", flush=True)
    trained, averaged = np.array([r[1] for r in rows]), np.array([r[2] for r in rows])
    row = {"lever": "ema", "what": f"as compact-13, with an EMA of the weights (momentum {EMA_MOMENTUM})", "epochs": len(rows),
           "last": float(averaged[-1]), "best": float(averaged.max()), "last_trained": float(trained[-1]),
           "best_trained": float(trained.max()), "epoch_minutes": epoch_seconds / 60,
           "wall_minutes": (time.perf_counter() - start) / 60}
    print(json.dumps(row), flush=True)
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(SHARED))
    parser.add_argument("--levers", default=",".join([*CLI_LEVERS, "ema"]),
                        help=f"comma-separated, from: {', '.join([*CLI_LEVERS, 'ema'])}")
    parser.add_argument("--epochs", type=int, help="train every lever this many epochs (a short trial)")
    args = parser.parse_args()
    if not Path(args.data).is_dir():
        raise SystemExit(f"{args.data} is not a folder: pass --data (CIFAR-10 images in <class>/ folders)")
    chosen = [name.strip() for name in args.levers.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in CLI_LEVERS and name != "ema"]
    if unknown:
        raise SystemExit(f"unknown levers {unknown}; choose from {', '.join([*CLI_LEVERS, 'ema'])}")

    root = Path(tempfile.mkdtemp(prefix="quick-levers-"))
    rows, flips = [], {}
    try:
        for name in chosen:
            if name == "ema":
                rows.append(run_ema(args.data, args.epochs))
                continue
            rows.append(run_lever(name, args.data, root, args.epochs))
            if name in FLIPPED:
                flips[name] = flip_figures(root / name, args.data)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    print(f"\nquick recipe levers on {args.data} (validation split: the last 10% of each class's files)")
    print("| lever | epochs | last epoch | best epoch | minutes of epochs | wall minutes |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        extra = (f" (trained weights: {row['last_trained']:.2%} / {row['best_trained']:.2%})"
                 if "last_trained" in row else "")
        print(f"| {row['what']} | {row['epochs']} | {row['last']:.2%} | {row['best']:.2%}{extra} | "
              f"{row['epoch_minutes']:.1f} | {row['wall_minutes']:.1f} |")
    for name, figures in flips.items():
        print(f"{name}'s saved model in float32: {figures['single']:.2%} single view, "
              f"{figures['flip']:.2%} with flip averaging")


if __name__ == "__main__":
    main()
