"""Keras against PyTorch on this CPU: training throughput of the same network, side by side.

    pip install -r bench/requirements-optional.txt      # PyTorch (CPU), for this bench only
    python bench/keras_vs_torch.py [--width 0.5] [--batch 128] [--steps 10] [--blocks 12]

The network is `compact` (AlexNet's five convolutions with BatchNorm, overlapping max-pooling,
three dense layers) at WIDTH, 32x32 inputs, 10 classes, written once in Keras (ours) and once in
PyTorch; the trainable parameter counts are checked equal before anything is timed. Both train with SGD
(momentum 0.9) and cross-entropy on the same in-memory random batch, so only the framework is
measured. Keras runs the app's own training step (`loop.make_steps`, as fast as `fit`:
bench/train_throughput.py). One process per precision (float32; bfloat16: Keras'
mixed_bfloat16 policy, PyTorch's CPU autocast) holds all three; after a warm-up they run in
interleaved blocks of STEPS steps, BLOCKS times each, so this machine's swings (+-30% between
minutes) fall on all alike, and the ratio is taken block by block. PyTorch's best layout for this
CPU is picked from NCHW and channels_last (both printed); Keras' CPU layout is channels_last
(NHWC). Prints images/s and the ratio Keras / PyTorch (target >= 1.0).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
width, batch, steps, blocks, precision = float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
from alexnet_core.train.training import configure_threads
configure_threads()
import keras, numpy as np, tensorflow as tf
import torch
from torch import nn
torch.set_num_threads(2)
if precision == "bf16":
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
from alexnet_core.settings.config import TrainConfig
from alexnet_core.train.loop import loss_function, make_steps
from alexnet_core.models.variants import build_model

# Keras: our trainer's own step (training.make_steps: what the app runs), SGD with momentum.
model = build_model("compact", num_classes=10, width=width)
optimizer = keras.optimizers.SGD(0.01, momentum=0.9)
model.compile(optimizer=optimizer)
optimizer.build(model.trainable_variables)
rng = np.random.default_rng(0)
x = rng.standard_normal((batch, 32, 32, 3), dtype=np.float32)
y = np.eye(10, dtype=np.float32)[rng.integers(0, 10, batch)]
iterator = iter(tf.data.Dataset.from_tensors((x, y)).repeat())
keras_step, _ = make_steps(model, optimizer, tf.distribute.get_strategy(),
                           loss_function(TrainConfig(label_smoothing=0.0)), batch, 5)
keras_params = sum(int(np.prod(w.shape)) for w in model.trainable_weights)

def keras_run(n):
    for _ in range(n):
        float(keras_step(iterator)["loss"])  # read back every step, as the trainer does

# PyTorch: the same network, in each memory layout.
def scaled(f):
    return f if width == 1.0 else max(8, int(round(f * width / 8)) * 8)
c = [scaled(f) for f in (64, 192, 384, 256, 256)]
fc = scaled(1024)
def block(i, o, k, pool=False):  # compact's convolutions are not grouped (its `groups` switch is off)
    layers = [nn.Conv2d(i, o, k, padding=k // 2), nn.BatchNorm2d(o, eps=1e-3), nn.ReLU(inplace=True)]
    return layers + ([nn.MaxPool2d(3, 2, padding=1)] if pool else [])
def torch_runner(layout):
    torch.manual_seed(0)
    net = nn.Sequential(*block(3, c[0], 5, True), *block(c[0], c[1], 5, True), *block(c[1], c[2], 3),
                        *block(c[2], c[3], 3), *block(c[3], c[4], 3, True), nn.Flatten(),
                        nn.Linear(c[4] * 16, fc), nn.ReLU(inplace=True), nn.Dropout(0.3),
                        nn.Linear(fc, fc), nn.ReLU(inplace=True), nn.Dropout(0.3), nn.Linear(fc, 10))
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    net = net.to(memory_format=fmt).train()
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    tx = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous().to(memory_format=fmt)
    ty = torch.from_numpy(y.argmax(1))
    def run(n):
        for _ in range(n):
            opt.zero_grad(set_to_none=True)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                loss = loss_fn(net(tx), ty)
            loss.backward()
            opt.step()
            loss.item()  # read back every step
    return run, sum(p.numel() for p in net.parameters())

runners = {"keras": keras_run}
params = {"keras": keras_params}
for layout in ("nchw", "channels_last"):
    runners[f"torch_{layout}"], params[f"torch_{layout}"] = torch_runner(layout)
if len(set(params.values())) != 1:
    raise SystemExit(f"not the same network: {params}")
for run in runners.values():  # warm-up: tracing, allocator, caches
    run(10)
rates = {name: [] for name in runners}
for _ in range(blocks):  # interleaved, so the machine's ups and downs fall on all of them alike
    for name, run in runners.items():
        start = time.perf_counter()
        run(steps)
        rates[name].append(steps * batch / (time.perf_counter() - start))
print("RESULT " + json.dumps({"params": keras_params, "rates": rates, "torch": torch.__version__}))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=float, default=0.5)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10, help="steps per timed block")
    parser.add_argument("--blocks", type=int, default=12, help="timed blocks per framework, interleaved")
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    args = parser.parse_args()
    for precision in args.precisions:
        done = subprocess.run([sys.executable, "-c", CHILD, str(ROOT), str(args.width), str(args.batch),
                               str(args.steps), str(args.blocks), precision], capture_output=True, text=True)
        line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT ")), None)
        if line is None:
            print(done.stderr[-3000:])
            return 1
        result = json.loads(line[len("RESULT "):])
        rates = result["rates"]
        best = max(("torch_nchw", "torch_channels_last"), key=lambda k: statistics.median(rates[k]))
        ratios = [k / t for k, t in zip(rates["keras"], rates[best])]  # block by block, side by side
        print(f"{precision}: Keras {statistics.median(rates['keras']):.0f} img/s; PyTorch "
              f"{statistics.median(rates['torch_nchw']):.0f} (NCHW), "
              f"{statistics.median(rates['torch_channels_last']):.0f} (channels_last) [medians of {args.blocks} "
              f"blocks of {args.steps} steps]; Keras / PyTorch {best[6:]}: median {statistics.median(ratios):.3f} "
              f"(blocks {min(ratios):.3f}-{max(ratios):.3f}); target >= 1.0", flush=True)
    print(f"compact width {args.width:g} ({result['params']:,} trainable parameters), batch {args.batch}, "
          f"PyTorch {result['torch']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
