"""Measured forward time of every layer on this machine, next to its multiply-accumulates.

A layer's time is what it adds to the network: the network cut after it minus the network cut
before it, both compiled (`tf.function`) and run on the same batch of random images. So the
layers add up to the whole network (`total_ms`) less the fixed cost of one call (`overhead_ms`,
the empty network), and a layer that TensorFlow fuses into its neighbour (a ReLU after a
convolution) costs what it really costs there: next to nothing. All the cuts are timed
round-robin, one call of each per round, and each keeps its median over `repeats` rounds, so a
machine that slows down meanwhile slows all of them alike; a difference below the noise is
clamped at 0. Only the forward pass: a backward pass cannot be split by layer this way without
changing what is measured.
"""

from __future__ import annotations

# Imports inside functions are deliberate: TensorFlow and Keras, and the modules that reach them,
# load on first use, so importing this module (the app's pages, the command line) stays light.
import statistics
import time

GROUPS = {"Conv2D": "conv", "Dense": "dense", "LocalResponseNormalization": "lrn"}


def _median_ms(calls: list, repeats: int, warmup: int) -> list[float]:
    """Median milliseconds of each (function, argument) in `calls`, timed round-robin: one call of
    each per round, so a machine that slows down or speeds up meanwhile affects all alike."""
    import tensorflow as tf

    gpu = bool(tf.config.list_logical_devices("GPU"))

    def timed(function, argument) -> float:
        start = time.perf_counter()
        function(argument)
        if gpu:
            tf.experimental.sync_devices()  # GPU work is queued: wait for it before reading the clock
        return time.perf_counter() - start

    for function, argument in calls:
        for _ in range(warmup):
            timed(function, argument)
    times = [[] for _ in calls]
    for _ in range(repeats):
        for k, (function, argument) in enumerate(calls):
            times[k].append(timed(function, argument))
    return [statistics.median(t) * 1000.0 for t in times]


def profile(variant: str, batch_size: int = 32, repeats: int = 20, warmup: int = 3, **model_args) -> dict:
    """The `profile --json` document: {"variant", "device", "batch_size", "input_size", "total_ms",
    "overhead_ms", "sum_ms", "layers": [{"name", "type", "group", "macs", "params", "ms",
    "cumulative_ms", "gflops"}], "groups"}.
    `model_args` go to build_model (input_size, num_classes, the switches)."""
    import keras
    import tensorflow as tf

    from alexnet_core.models.anatomy import layer_table
    from alexnet_core.models.variants import build_model
    from alexnet_core.train.devices import describe

    model = build_model(variant, **{k: v for k, v in model_args.items() if v is not None})
    table = layer_table(model).set_index("name")
    layers = [layer for layer in model.layers if type(layer).__name__ != "InputLayer"]
    images = tf.random.stateless_uniform([batch_size, *model.input_shape[1:]], [0, 1], -2.0, 2.0)
    cuts = [keras.Model(model.input, layer.output) for layer in layers]
    calls = [(tf.function(tf.identity), images)]  # the empty network: what any call costs
    calls += [(tf.function(lambda x, cut=cut: cut(x, training=False)), images) for cut in cuts]
    overhead_ms, *cumulative = _median_ms(calls, repeats, warmup)
    total_ms = cumulative[-1]
    rows = []
    for layer, before, after in zip(layers, [overhead_ms, *cumulative], cumulative):
        ms = max(after - before, 0.0)
        macs = int(table.loc[layer.name, "macs"])
        kind = type(layer).__name__
        rows.append({"name": layer.name, "type": kind, "group": GROUPS.get(kind, "other"), "macs": macs,
                     "params": int(table.loc[layer.name, "params"]), "ms": ms, "cumulative_ms": after,
                     "gflops": 2.0 * macs * batch_size / (ms / 1000.0) / 1e9 if ms > 0 and macs else None})
    device = describe()
    return {"variant": variant, "device": f"{device['kind']}: {device['name']}", "batch_size": batch_size,
            "input_size": int(model.input_shape[1]), "total_ms": total_ms, "overhead_ms": overhead_ms,
            "sum_ms": sum(r["ms"] for r in rows),
            "layers": rows, "groups": split(rows)}


def split(rows: list[dict]) -> dict:
    """Share of the multiply-accumulates and of the measured time per group (conv, dense, lrn,
    other): where the arithmetic is against where the time goes."""
    macs = sum(r["macs"] for r in rows) or 1
    ms = sum(r["ms"] for r in rows) or 1.0
    out = {}
    for group in ("conv", "dense", "lrn", "other"):
        members = [r for r in rows if r["group"] == group]
        if members:
            out[group] = {"macs_share": sum(r["macs"] for r in members) / macs,
                          "time_share": sum(r["ms"] for r in members) / ms, "ms": sum(r["ms"] for r in members)}
    return out
