"""Where a single 224-px image's time goes: torchvision AlexNet's weighted layers one at a time at
batch 1, TensorFlow against PyTorch eager, side by side in one process on this CPU.

For each convolution (with its ReLU) and each dense layer, the same random weights and input:

  tf          as the Keras model runs it: NHWC `conv2d`; a dense kernel stored [in, out] (Keras'
              layout), `matmul(x, kernel)`
  tf-out-in   dense layers only: the kernel stored [out, in] (PyTorch's layout),
              `matmul(x, kernel, transpose_b=True)`
  torch       PyTorch eager under inference_mode: `conv2d` (NCHW), `linear` (weight [out, in])

The runtimes take turns, a block of `--calls` calls each, `--rounds` times; each figure is the
median call. `--threads 1` runs both runtimes on one thread (the work per image, least sensitive
to a busy machine); `--threads 0` leaves each runtime its default.

    python bench/layer_latency.py [--threads 1] [--calls 30] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# (name, input side, in channels, out channels, kernel, stride, padding): torchvision's AlexNet
CONVS = [("conv1", 224, 3, 64, 11, 4, 2), ("conv2", 27, 64, 192, 5, 1, 2), ("conv3", 13, 192, 384, 3, 1, 1),
         ("conv4", 13, 384, 256, 3, 1, 1), ("conv5", 13, 256, 256, 3, 1, 1)]
DENSE = [("fc6", 9216, 4096), ("fc7", 4096, 4096), ("fc8", 4096, 1000)]


def calls(fn, count: int) -> list[float]:
    times = []
    for _ in range(count):
        began = time.perf_counter()
        fn()
        times.append(time.perf_counter() - began)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="threads for each runtime; 0: its default")
    parser.add_argument("--calls", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    import numpy as np
    import tensorflow as tf
    import torch

    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
        torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    rows = {}  # layer -> {runtime: callable}
    for name, side, cin, cout, k, stride, pad in CONVS:
        x = rng.standard_normal((1, side, side, cin), dtype=np.float32)
        w = rng.standard_normal((k, k, cin, cout), dtype=np.float32) * np.float32(1 / np.sqrt(k * k * cin))
        xt, wt, paddings = tf.constant(x), tf.Variable(w), [[0, 0], [pad, pad], [pad, pad], [0, 0]]
        conv = tf.function(lambda xt=xt, wt=wt, p=paddings, s=stride: tf.nn.relu(
            tf.nn.conv2d(tf.pad(xt, p), wt, s, "VALID")))
        tx = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
        tw = torch.from_numpy(np.ascontiguousarray(w.transpose(3, 2, 0, 1)))
        rows[name] = {"tf": lambda conv=conv: conv().numpy(),
                      "torch": lambda tx=tx, tw=tw, s=stride, p=pad: torch.relu(
                          torch.nn.functional.conv2d(tx, tw, stride=s, padding=p))}
    for name, inputs, units in DENSE:
        x = rng.standard_normal((1, inputs), dtype=np.float32)
        w = rng.standard_normal((inputs, units), dtype=np.float32) * np.float32(1 / np.sqrt(inputs))
        xt, kernel, out_in = tf.constant(x), tf.Variable(w), tf.Variable(np.ascontiguousarray(w.T))
        plain = tf.function(lambda xt=xt, kernel=kernel: tf.matmul(xt, kernel))
        flipped = tf.function(lambda xt=xt, out_in=out_in: tf.matmul(xt, out_in, transpose_b=True))
        gap = float(np.abs(plain().numpy() - flipped().numpy()).max() / np.abs(plain().numpy()).max())
        assert gap < 1e-5, gap  # the same layer either way
        tx, tw = torch.from_numpy(x), torch.from_numpy(np.ascontiguousarray(w.T))
        rows[name] = {"tf": lambda f=plain: f().numpy(), "tf-out-in": lambda f=flipped: f().numpy(),
                      "torch": lambda tx=tx, tw=tw: torch.nn.functional.linear(tx, tw)}
    times = {name: {runtime: [] for runtime in runs} for name, runs in rows.items()}
    with torch.inference_mode():
        for runs in rows.values():
            for fn in runs.values():
                calls(fn, 3)  # tracing and first-call costs
        for _ in range(args.rounds):
            for name, runs in rows.items():
                for runtime, fn in runs.items():
                    times[name][runtime] += calls(fn, args.calls)
    print(f"batch 1, threads: {args.threads or 'each runtime default'}; median ms per call "
          f"({args.rounds} rounds x {args.calls} calls)")
    print(f"{'layer':7} {'tf':>8} {'tf-out-in':>10} {'torch':>8} {'torch/tf':>9} {'torch/tf-out-in':>16}")
    totals = {"tf": 0.0, "best": 0.0, "torch": 0.0}
    for name, by_runtime in times.items():
        ms = {runtime: 1e3 * float(np.median(t)) for runtime, t in by_runtime.items()}
        best = ms.get("tf-out-in", ms["tf"])
        totals["tf"] += ms["tf"]
        totals["best"] += best
        totals["torch"] += ms["torch"]
        out_in = f"{ms['tf-out-in']:10.2f}" if "tf-out-in" in ms else f"{'':>10}"
        ratio = f"{ms['torch'] / ms['tf-out-in']:16.2f}" if "tf-out-in" in ms else f"{'':>16}"
        print(f"{name:7} {ms['tf']:8.2f} {out_in} {ms['torch']:8.2f} {ms['torch'] / ms['tf']:9.2f} {ratio}")
    print(f"{'all':7} {totals['tf']:8.2f} {totals['best']:10.2f} {totals['torch']:8.2f} "
          f"{totals['torch'] / totals['tf']:9.2f} {totals['torch'] / totals['best']:16.2f}")
    print("(speed against PyTorch: above 1 means TensorFlow is faster; 'all' adds the weighted layers, "
          "tf-out-in with the dense kernels stored [out, in])")


if __name__ == "__main__":
    main()
