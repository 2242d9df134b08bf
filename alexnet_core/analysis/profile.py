"""Measured forward time of every layer on this machine, next to its multiply-accumulates.

Each layer is compiled on its own (`tf.function`) and timed on what the layer before it produced
for one batch of random images; the whole network is compiled and timed the same way, and so is
an empty call (`overhead_ms`: what any call costs), which comes off every layer's time. So the
layers add up to the whole network less one call's overhead, up to what TensorFlow saves in the
whole network by merging a layer into the one before it (a ReLU after a convolution: a few
percent). Every layer is built and timed once per round, so the work grows with the depth of the
network, not with its square.

All the calls are timed round-robin, one call of each per round, and each keeps its fastest
round: other work on the machine only ever adds time, so the fastest round is the one it
disturbed least, and a machine that slows down meanwhile slows every layer alike. How busy the
machine was is reported as the `spread`: how much slower the whole network's median round was
than its fastest. The layers' sum is checked against the whole (`adds_up`, within `TOLERANCE`);
a measurement that fails the check says so in `note`, and a page shows it instead of the layers.
Only the forward pass: a backward pass cannot be split by layer this way without changing what
is measured.
"""

from __future__ import annotations

# Imports inside functions are deliberate: TensorFlow and Keras, and the modules that reach them,
# load on first use, so importing this module (the app's pages, the command line) stays light.
import statistics
import time
from collections.abc import Callable

GROUPS = {"Conv2D": "conv", "Dense": "dense", "LocalResponseNormalization": "lrn"}
TOLERANCE = 0.25  # the layers' sum may differ from the whole network by this share of it
BUSY_SPREAD = 0.5  # a median round this much slower than the fastest: the machine was busy

Progress = Callable[[int, int, str], None]  # (steps done, steps in all, what is being done)


def _time_rounds(calls: list, repeats: int, warmup: int, budget_s: float | None, min_repeats: int,
                 progress: Progress | None) -> list[list[float]]:
    """Seconds of every call of each (name, function, argument) in `calls`, timed round-robin: one
    call of each per round, so a machine that slows down or speeds up meanwhile affects all alike.
    Stops after `repeats` rounds, or earlier after `min_repeats` once `budget_s` is spent."""
    import tensorflow as tf

    gpu = bool(tf.config.list_logical_devices("GPU"))

    def timed(function, argument) -> float:
        start = time.perf_counter()
        function(argument)
        if gpu:
            tf.experimental.sync_devices()  # GPU work is queued: wait for it before reading the clock
        return time.perf_counter() - start

    steps = len(calls) + repeats
    for k, (name, function, argument) in enumerate(calls):
        if progress:
            progress(k, steps, f"Compiling {name}")
        for _ in range(warmup):
            timed(function, argument)
    times = [[] for _ in calls]
    started = time.perf_counter()
    for r in range(repeats):
        if progress:
            progress(len(calls) + r, steps, f"Timing round {r + 1} of at most {repeats}")
        for k, (_, function, argument) in enumerate(calls):
            times[k].append(timed(function, argument))
        if budget_s is not None and r + 1 >= min_repeats and time.perf_counter() - started > budget_s:
            break
    if progress:
        progress(steps, steps, "Done")
    return times


def profile(variant: str, batch_size: int = 32, repeats: int = 20, warmup: int = 2, *,
            budget_s: float | None = None, min_repeats: int = 3, progress: Progress | None = None,
            **model_args) -> dict:
    """The `profile --json` document: {"variant", "device", "batch_size", "input_size", "total_ms",
    "total_median_ms", "overhead_ms", "sum_ms", "rounds", "spread", "busy", "adds_up", "tolerance",
    "note", "layers": [{"name", "type", "group", "macs", "params", "ms", "cumulative_ms", "gflops"}],
    "groups"}. Times are milliseconds per batch, each the fastest of `rounds` rounds.
    `budget_s` ends the timing early (after `min_repeats` rounds) once spent; `progress(done,
    total, what)` is told each step. `model_args` go to build_model (input_size, num_classes, the
    switches)."""
    import keras
    import tensorflow as tf

    from alexnet_core.models.anatomy import layer_table
    from alexnet_core.models.variants import build_model
    from alexnet_core.train.devices import describe

    model = build_model(variant, **{k: v for k, v in model_args.items() if v is not None})
    table = layer_table(model).set_index("name")
    layers = [layer for layer in model.layers if type(layer).__name__ != "InputLayer"]
    images = tf.random.stateless_uniform([batch_size, *model.input_shape[1:]], [0, 1], -2.0, 2.0)
    inputs = keras.Model(model.input, [layer.input for layer in layers])(images, training=False)
    calls = [("an empty call", tf.function(tf.identity), images),
             ("the whole network", tf.function(lambda x: model(x, training=False)), images)]
    calls += [(layer.name, tf.function(lambda x, layer=layer: layer(x, training=False)), x)
              for layer, x in zip(layers, inputs)]
    times = _time_rounds(calls, repeats, warmup, budget_s, min_repeats, progress)
    rows = []
    for layer, seconds in zip(layers, times[2:]):
        kind = type(layer).__name__
        rows.append({"name": layer.name, "type": kind, "group": GROUPS.get(kind, "other"),
                     "macs": int(table.loc[layer.name, "macs"]), "params": int(table.loc[layer.name, "params"]),
                     "seconds": seconds})
    device = describe()
    doc = summarise(rows, times[0], times[1], batch_size)
    return {"variant": variant, "device": f"{device['kind']}: {device['name']}", "batch_size": batch_size,
            "input_size": int(model.input_shape[1]), **doc}


def summarise(rows: list[dict], overhead_s: list[float], whole_s: list[float], batch_size: int) -> dict:
    """The figures of a measurement from its timed rounds (seconds): each layer's row (`seconds`:
    its rounds) becomes its fastest round less the empty call's, the whole network's fastest and
    median rounds, the spread, whether the layers add up to the whole, and a note in words when
    the machine was busy or they do not."""
    overhead_ms = min(overhead_s) * 1000.0
    total_ms = min(whole_s) * 1000.0
    median_ms = statistics.median(whole_s) * 1000.0
    layers, cumulative = [], overhead_ms
    for row in rows:
        ms = max(min(row["seconds"]) * 1000.0 - overhead_ms, 0.0)
        cumulative += ms
        macs = row["macs"]
        layers.append({**{k: v for k, v in row.items() if k != "seconds"}, "ms": ms, "cumulative_ms": cumulative,
                       "gflops": 2.0 * macs * batch_size / (ms / 1000.0) / 1e9 if ms > 0 and macs else None})
    sum_ms = sum(r["ms"] for r in layers)
    spread = median_ms / total_ms - 1.0 if total_ms > 0 else 0.0
    off = sum_ms / (total_ms - overhead_ms) - 1.0 if total_ms > overhead_ms else float("inf")
    adds_up = abs(off) <= TOLERANCE
    busy = spread > BUSY_SPREAD
    rounds = len(whole_s)
    note = ""
    if not adds_up:
        how = f"{off:+.0%}" if off != float("inf") else "no measurable time"
        note = (f"The layers timed one by one add up to {sum_ms:.1f} ms against {total_ms:.1f} ms for the whole "
                f"network ({how} of it, more than the {TOLERANCE:.0%} accepted), so the per-layer times are not "
                "trustworthy" + (f": the machine was busy (its median round took {spread:.0%} longer than the "
                                 "fastest)" if busy else "") + ". Measure again when the machine is quieter.")
    elif busy:
        note = (f"The machine was busy: the whole network's median round took {spread:.0%} longer than its fastest. "
                f"The times are the fastest of {rounds} rounds, and the layers still add up to the whole "
                f"({off:+.0%}), but a quieter machine gives steadier ones.")
    return {"total_ms": total_ms, "total_median_ms": median_ms, "overhead_ms": overhead_ms, "sum_ms": sum_ms,
            "rounds": rounds, "spread": spread, "busy": busy, "adds_up": adds_up, "tolerance": TOLERANCE,
            "note": note, "layers": layers, "groups": split(layers)}


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
