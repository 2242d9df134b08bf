"""The Train page's "Estimate time per epoch" against the epochs a real run then takes.

    python bench/epoch_estimate.py [--data sample] [--recipes quick demo]

For each recipe (on DATA, 3 epochs, in a temporary runs folder): the estimate the page shows
(`estimate.estimate_epoch_seconds`), then a real run with the same settings; the estimate is
compared with the median time of epochs 2-3 (epoch 1 also fills the decoded-image cache and
traces the graph). Target: within 25%.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="sample")
    parser.add_argument("--recipes", nargs="+", default=["quick", "demo"])
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()

    from alexnet_core.inputs.data import load_source
    from alexnet_core.settings.recipes import get_recipe
    from alexnet_core.store import layout
    from alexnet_core.train import lifecycle
    from alexnet_core.train.estimate import estimate_epoch_seconds
    from alexnet_core.train.training import configure_threads, run_training

    configure_threads()
    source = load_source(args.data)
    n_train, n_val = len(source.train), len(source.val) if source.val else 0
    print(f"data: {args.data}, {n_train} training and {n_val} validation images")
    rows = []
    for name in args.recipes:
        config = get_recipe(name).config(data=args.data, epochs=args.epochs)
        start = time.perf_counter()
        estimate = estimate_epoch_seconds(config, len(source.class_names), n_train, num_val=n_val)
        estimate_cost = time.perf_counter() - start
        root = Path(tempfile.mkdtemp(prefix="estimate-"))
        run_dir = lifecycle.new_run(config, root, f"estimate-{name}", allow_parallel=True)
        wall = time.perf_counter()
        run_training(config, run_dir, log=lambda m: None)
        wall = time.perf_counter() - wall
        record = json.loads((run_dir / layout.CHECKPOINTS / layout.STATE).read_text())
        last = record["metrics"][-1]
        print(f"{name}: {len(record['metrics'])} epochs in {wall / 60:.1f} min (start to saved model), final "
              f"validation accuracy {last.get('val_accuracy', float('nan')):.2%}", flush=True)
        seconds = [row["epoch_seconds"] for row in record["metrics"]]
        real = statistics.median(seconds[1:]) if len(seconds) > 1 else seconds[0]
        rows.append((name, estimate, real, estimate / real - 1, estimate_cost, seconds))
    print(f"\n{'recipe':8s} {'estimate':>9s} {'real epoch':>11s} {'error':>7s} {'took':>6s}  epochs")
    for name, estimate, real, error, cost, seconds in rows:
        print(f"{name:8s} {estimate:8.1f}s {real:10.1f}s {error:+7.0%} {cost:5.1f}s  "
              + ", ".join(f"{s:.1f}" for s in seconds))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
