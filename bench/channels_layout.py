"""Channels-last (NHWC) against channels-first (NCHW) for Keras training on this CPU.

The quick recipe's network (compact-hires at width 0.5: 3x3 convolutions, batch normalisation,
overlapping max-pooling, two dense layers) built from Keras' own layers twice, once per layout,
and trained side by side in one process: blocks of steps alternate between the two, so a busy
machine slows both alike. Keras' BatchNormalization in both (the project's fused one is
channels-last only), random data, SGD, float32 and bfloat16. Prints images/s per layout and
the ratio NHWC / NCHW (median of the blocks).

    python bench/channels_layout.py [--batch-size 256] [--steps 8] [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from alexnet_core.train.training import configure_threads  # noqa: E402

configure_threads()

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from alexnet_core.models.variants import get_arch  # noqa: E402


def network(data_format: str) -> keras.Model:
    """compact-hires' layers (widths, kernels, pools) in one layout, from Keras' layers only."""
    arch = get_arch("compact-hires")
    axis = 1 if data_format == "channels_first" else -1
    shape = (3, 32, 32) if axis == 1 else (32, 32, 3)
    x = inputs = keras.Input(shape)
    for conv in arch.convs:
        x = keras.layers.Conv2D(max(1, round(conv.filters * arch.width)), conv.kernel, padding="same",
                                use_bias=False, data_format=data_format)(x)
        x = keras.layers.BatchNormalization(axis=axis)(x)
        x = keras.layers.ReLU()(x)
        if conv.pool:
            x = keras.layers.MaxPooling2D(3, 2, padding="same", data_format=data_format)(x)
    x = keras.layers.Flatten()(x)
    for units in arch.fcs:
        x = keras.layers.Dense(round(units * arch.width), activation="relu")(x)
    outputs = keras.layers.Dense(10, activation="softmax", dtype="float32")(x)
    return keras.Model(inputs, outputs)


def trainer(data_format: str, batch: int):
    model = network(data_format)
    optimizer = keras.optimizers.SGD(0.01, momentum=0.9)
    loss_fn = keras.losses.CategoricalCrossentropy()
    rng = np.random.default_rng(0)
    shape = (batch, 3, 32, 32) if data_format == "channels_first" else (batch, 32, 32, 3)
    x = tf.constant(rng.normal(size=shape).astype(np.float32))
    y = tf.one_hot(rng.integers(0, 10, batch), 10)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    return step


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=8, help="steps per timed block")
    parser.add_argument("--rounds", type=int, default=5, help="timed blocks per layout, alternating")
    args = parser.parse_args()
    for policy in ("float32", "mixed_bfloat16"):
        keras.mixed_precision.set_global_policy(policy)
        steps = {fmt: trainer(fmt, args.batch_size) for fmt in ("channels_last", "channels_first")}
        for step in steps.values():  # compile and warm up
            for _ in range(3):
                float(step())
        rates = {fmt: [] for fmt in steps}
        for _ in range(args.rounds):
            for fmt, step in steps.items():
                start = time.perf_counter()
                for _ in range(args.steps):
                    loss = step()
                float(loss)
                rates[fmt].append(args.steps * args.batch_size / (time.perf_counter() - start))
        last, first = statistics.median(rates["channels_last"]), statistics.median(rates["channels_first"])
        print(f"{policy:>15}: NHWC {last:7.0f} img/s   NCHW {first:7.0f} img/s   NHWC / NCHW = {last / first:.2f} "
              f"(blocks: {', '.join(f'{a / b:.2f}' for a, b in zip(rates['channels_last'], rates['channels_first']))})",
              flush=True)


if __name__ == "__main__":
    main()
