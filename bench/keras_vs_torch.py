"""Keras against PyTorch on this CPU: training throughput of the same network, side by side.

    pip install -r bench/requirements-optional.txt      # PyTorch (CPU), for this bench only
    python bench/keras_vs_torch.py [--width 0.5] [--batch 128] [--steps 40] [--rounds 3]

The network is `compact` (AlexNet's five convolutions with BatchNorm, overlapping max-pooling,
three dense layers) at WIDTH, 32x32 inputs, 10 classes, written once in Keras (ours) and once in
PyTorch; the trainable parameter counts are checked equal before anything is timed. Both train with SGD
(momentum 0.9) and cross-entropy on the same in-memory random batch, so only the framework is
measured: each measurement is a fresh process (a warm-up of 10 steps, then STEPS timed steps),
frameworks alternating, ROUNDS rounds, in float32 and in bfloat16 (Keras' mixed_bfloat16 policy;
PyTorch's CPU autocast). PyTorch runs in its best layout for this CPU, picked per round from
NCHW and channels_last (both printed). Keras uses its only CPU layout, channels_last (NHWC).
Prints images/s and the ratio Keras / PyTorch (target >= 1.0).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

KERAS = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
width, batch, steps, precision = float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
from alexnet_core.training import configure_threads
configure_threads()
import keras, numpy as np, tensorflow as tf
if precision == "bf16":
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
from alexnet_core.variants import build_model
model = build_model("compact", num_classes=10, width=width)
model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9), loss="categorical_crossentropy")
rng = np.random.default_rng(0)
x = tf.constant(rng.standard_normal((batch, 32, 32, 3), dtype=np.float32))
y = tf.one_hot(rng.integers(0, 10, batch), 10)
ds = tf.data.Dataset.from_tensors((x, y)).repeat()
model.fit(ds, steps_per_epoch=10, epochs=1, verbose=0)
start = time.perf_counter()
model.fit(ds, steps_per_epoch=steps, epochs=1, verbose=0)
seconds = time.perf_counter() - start
trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
print("RESULT " + json.dumps({"params": trainable, "images_per_s": steps * batch / seconds}))
"""

TORCH = r"""
import json, sys, time
import torch
from torch import nn
width, batch, steps, precision, layout = float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], sys.argv[6]
torch.set_num_threads(2)
def scaled(f):
    return f if width == 1.0 else max(8, int(round(f * width / 8)) * 8)
c = [scaled(f) for f in (64, 192, 384, 256, 256)]
fc = scaled(1024)
def block(i, o, k, pool=False):  # compact's convolutions are not grouped (its `groups` switch is off)
    layers = [nn.Conv2d(i, o, k, padding=k // 2), nn.BatchNorm2d(o, eps=1e-3), nn.ReLU(inplace=True)]
    return layers + ([nn.MaxPool2d(3, 2, padding=1)] if pool else [])
model = nn.Sequential(*block(3, c[0], 5, True), *block(c[0], c[1], 5, True), *block(c[1], c[2], 3),
                      *block(c[2], c[3], 3), *block(c[3], c[4], 3, True), nn.Flatten(),
                      nn.Linear(c[4] * 16, fc), nn.ReLU(inplace=True), nn.Dropout(0.3),
                      nn.Linear(fc, fc), nn.ReLU(inplace=True), nn.Dropout(0.3), nn.Linear(fc, 10))
fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
model = model.to(memory_format=fmt)
opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
loss_fn = nn.CrossEntropyLoss()
g = torch.Generator().manual_seed(0)
x = torch.randn(batch, 3, 32, 32, generator=g).to(memory_format=fmt)
y = torch.randint(0, 10, (batch,), generator=g)
def step():
    opt.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
        loss = loss_fn(model(x), y)
    loss.backward()
    opt.step()
    return loss.item()  # read back every step, as Keras' fit does with its logs
model.train()
for _ in range(10):
    step()
start = time.perf_counter()
for _ in range(steps):
    step()
seconds = time.perf_counter() - start
print("RESULT " + json.dumps({"params": sum(p.numel() for p in model.parameters()), "images_per_s": steps * batch / seconds,
                              "torch": torch.__version__}))
"""


def measure(code: str, *args) -> dict:
    done = subprocess.run([sys.executable, "-c", code, str(ROOT), *map(str, args)], capture_output=True, text=True)
    line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT ")), None)
    if line is None:
        raise SystemExit(done.stderr[-3000:])
    return json.loads(line[len("RESULT "):])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=float, default=0.5)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    args = parser.parse_args()
    common = (args.width, args.batch, args.steps)
    summary = []
    for precision in args.precisions:
        ratios = []
        for round_ in range(1, args.rounds + 1):
            keras_run = measure(KERAS, *common, precision)
            layouts = {layout: measure(TORCH, *common, precision, layout) for layout in ("nchw", "channels_last")}
            if len({keras_run["params"], *(r["params"] for r in layouts.values())}) != 1:
                raise SystemExit(f"not the same network: {keras_run['params']} against "
                                 f"{[r['params'] for r in layouts.values()]} parameters")
            best = max(layouts, key=lambda k: layouts[k]["images_per_s"])
            ratio = keras_run["images_per_s"] / layouts[best]["images_per_s"]
            ratios.append(ratio)
            print(f"{precision} round {round_}: Keras {keras_run['images_per_s']:.0f} img/s; PyTorch "
                  f"{layouts['nchw']['images_per_s']:.0f} (NCHW), {layouts['channels_last']['images_per_s']:.0f} "
                  f"(channels_last); Keras / best PyTorch = {ratio:.3f}", flush=True)
        summary.append((precision, statistics.median(ratios), min(ratios), max(ratios)))
    print(f"\ncompact width {args.width:g} ({keras_run['params']:,} trainable parameters), batch {args.batch}, "
          f"{args.steps} timed steps, PyTorch {layouts[best].get('torch')}")
    for precision, median, low, high in summary:
        print(f"{precision}: Keras / PyTorch (best layout) median {median:.3f} (rounds {low:.3f}-{high:.3f}); "
              "target >= 1.0")
    return 0


if __name__ == "__main__":
    sys.exit(main())
