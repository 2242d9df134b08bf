"""A model explained layer by layer: shapes, parameters, compute, memory, receptive field; and
conv1's kernels as arrays (what the trainer's snapshots keep and explain.py draws).

MACs count the multiply-accumulates of convolution and dense layers only (biases,
pooling and normalisation excluded), the convention behind published AlexNet totals.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

COLUMNS = [
    "name", "type", "detail", "inputs", "output_shape", "params", "trainable_params", "non_trainable_params",
    "macs", "activation_bytes", "receptive_field", "cumulative_stride",
]
BYTES_PER_FLOAT32 = 4


def _inbound_layers(layer) -> list:
    inputs = layer.input if isinstance(layer.input, (list, tuple)) else [layer.input]
    return [t._keras_history.operation for t in inputs]


def _weights_size(weights) -> int:
    return int(sum(np.prod(w.shape) for w in weights))


def _macs(layer, in_shape, out_shape) -> int:
    kind = type(layer).__name__
    if kind == "Conv2D":
        kh, kw = layer.kernel_size
        per_output = kh * kw * in_shape[-1] // layer.groups
        return int(np.prod(out_shape[1:]) * per_output)
    if kind == "Dense":
        return int(in_shape[-1] * layer.units)
    return 0


def _window(layer, in_shape):
    """(kernel, stride) of a layer that slides a window, else None."""
    kind = type(layer).__name__
    if kind == "Conv2D":
        return layer.kernel_size[0], layer.strides[0]
    if kind in ("MaxPooling2D", "AveragePooling2D"):
        return layer.pool_size[0], layer.strides[0]
    if kind == "AdaptiveAveragePooling2D":
        size = in_shape[1]
        return math.ceil(size / layer.output_size), max(1, size // layer.output_size)
    return None


def _detail(layer) -> str:
    """What a layer does, in the paper's words (kernels, window, units)."""
    kind = type(layer).__name__
    if kind == "Conv2D":
        text = f"{layer.filters} @ {layer.kernel_size[0]}x{layer.kernel_size[1]}"
        if layer.strides[0] > 1:
            text += f" /{layer.strides[0]}"
        if layer.padding == "same":
            text += ", same"
        if layer.groups > 1:
            text += f", groups {layer.groups}"
        return text
    formatter = _CONFIGURATION.get(kind)
    return formatter(layer) if formatter else ""


def _end_padding(layer) -> bool:
    """Whether `layer` pads only after the map (bottom and right): how the builder rounds a
    pooling's output up, as Caffe does (variants.ceil_padding)."""
    if type(layer).__name__ != "ZeroPadding2D":
        return False
    (top, bottom), (left, right) = layer.padding
    return top == left == 0 and (bottom or right)


def _pool_text(layer) -> str:
    text = f"{layer.pool_size[0]}x{layer.pool_size[1]} /{layer.strides[0]}"
    if layer.padding == "same":
        text += ", same"
    elif any(_end_padding(parent) for parent in _inbound_layers(layer)):
        text += ", rounded up"
    return text


def _pad_text(layer) -> str:
    (top, bottom), (left, right) = layer.padding
    if top == bottom == left == right:
        return f"pad {top}"
    if (top, bottom) == (left, right):
        return f"pad {top} before, {bottom} after"
    return f"pad {top}/{bottom} rows, {left}/{right} columns"


# How each other kind of layer describes its configuration in the layer table.
_CONFIGURATION = {
    "MaxPooling2D": _pool_text,
    "AveragePooling2D": _pool_text,
    "Dense": lambda layer: f"{layer.units} units",
    "LocalResponseNormalization": lambda layer: (f"n={2 * layer.depth_radius + 1}, k={layer.bias:g}, "
                                                 f"alpha={layer.alpha:g}, beta={layer.beta:g}"),
    "Dropout": lambda layer: f"rate {layer.rate:g}",
    "ZeroPadding2D": _pad_text,
    "AdaptiveAveragePooling2D": lambda layer: f"to {layer.output_size}x{layer.output_size}",
    "Activation": lambda layer: getattr(layer.activation, "__name__", ""),
}


def layer_table(model) -> pd.DataFrame:
    """One row per layer of a functional model, in the model's order."""
    rows, geometry = [], {}
    for layer in model.layers:
        out_shape = tuple(layer.output.shape)
        parents = [] if type(layer).__name__ == "InputLayer" else _inbound_layers(layer)
        if not parents:
            rf, jump, in_shape = 1, 1, out_shape
        else:
            in_shape = tuple(layer.input.shape) if len(parents) == 1 else None
            rf = max(geometry[p.name][0] for p in parents)
            jump = geometry[parents[0].name][1]
            window = _window(layer, in_shape) if in_shape else None
            if window and jump is not None:
                rf, jump = rf + (window[0] - 1) * jump, jump * window[1]
            elif type(layer).__name__ == "Flatten" and jump is not None:
                # A flattened map feeds every position onward: the field spans all of them.
                rf, jump = rf + (in_shape[1] - 1) * jump, None
        geometry[layer.name] = (rf, jump)
        trainable = _weights_size(layer.trainable_weights)
        non_trainable = _weights_size(layer.non_trainable_weights)
        rows.append({
            "name": layer.name,
            "type": type(layer).__name__,
            "detail": _detail(layer),
            "inputs": [p.name for p in parents],
            "output_shape": out_shape[1:],
            "params": trainable + non_trainable,
            "trainable_params": trainable,
            "non_trainable_params": non_trainable,
            "macs": _macs(layer, in_shape, out_shape) if in_shape else 0,
            "activation_bytes": int(np.prod(out_shape[1:])) * BYTES_PER_FLOAT32,
            "receptive_field": rf,
            "cumulative_stride": jump,
        })
    table = pd.DataFrame(rows, columns=COLUMNS)
    table["cumulative_stride"] = table["cumulative_stride"].astype("Int64")
    return table


def totals(table: pd.DataFrame) -> dict:
    return {
        "total_params": int(table["params"].sum()),
        "trainable_params": int(table["trainable_params"].sum()),
        "non_trainable_params": int(table["non_trainable_params"].sum()),
        "total_macs": int(table["macs"].sum()),
        "activation_bytes": int(table["activation_bytes"].sum()),
    }


def summary(model, variant: str) -> dict:
    """The `summary --json` document (contract in docs/ARCHITECTURE.md)."""
    table = layer_table(model)
    sums = totals(table)
    return {
        "variant": variant,
        "input_shape": list(model.input_shape[1:]),
        "num_classes": int(model.output_shape[-1]),
        "total_params": sums["total_params"],
        "trainable_params": sums["trainable_params"],
        "total_macs": sums["total_macs"],
        "layers": [
            {
                "name": row.name,
                "type": row.type,
                "output_shape": list(row.output_shape),
                "params": int(row.params),
                "macs": int(row.macs),
            }
            for row in table.itertuples()
        ],
    }


def conv1_kernels(model, layer: str = "conv1") -> np.ndarray:
    """conv1's kernels, both towers' side by side: kh x kw x 3 x filters, float32."""
    names = [l.name for l in model.layers if l.name == layer or l.name.startswith(layer + "_")]
    return np.concatenate([np.asarray(model.get_layer(n).kernel, dtype=np.float32) for n in names], axis=-1)


def compare_tables(a: pd.DataFrame, b: pd.DataFrame) -> pd.DataFrame:
    """Layers of two tables side by side, matched by name, with what changed."""
    keep = ["name", "type", "detail", "output_shape", "params", "macs"]
    left = a[keep].assign(order=range(len(a)))
    right = b[keep].assign(order=range(len(b)))
    both = left.merge(right, on="name", how="outer", suffixes=("_a", "_b"))
    both["order"] = both["order_a"].fillna(both["order_b"] + 0.5)
    both = both.sort_values("order").drop(columns=["order", "order_a", "order_b"])
    for col in ("params", "macs"):
        both[f"{col}_a"] = both[f"{col}_a"].astype("Int64")
        both[f"{col}_b"] = both[f"{col}_b"].astype("Int64")
        both[f"{col}_change"] = both[f"{col}_b"].fillna(0) - both[f"{col}_a"].fillna(0)
    both["status"] = [
        "only in A" if pd.isna(tb) else "only in B" if pd.isna(ta)
        else "changed" if (da != db or sa != sb or pa != pb) else "same"
        for ta, tb, da, db, sa, sb, pa, pb in zip(
            both["type_a"], both["type_b"], both["detail_a"], both["detail_b"],
            both["output_shape_a"], both["output_shape_b"], both["params_a"], both["params_b"])
    ]
    return both.reset_index(drop=True)
