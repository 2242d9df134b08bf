"""Plotly figures, Altair charts and Graphviz diagrams, as pure functions of data (no Streamlit)."""

from __future__ import annotations

# Imports inside functions are deliberate: TensorFlow and Keras, the modules that reach them
# and Pillow, Altair load on first use, so importing this module
# (the app's pages, the command line) stays light.
import base64
import functools
import io

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

CONV_COLOR = "#2a7ab0"
DENSE_COLOR = "#e4572e"
OTHER_COLOR = "#8c8c8c"
TYPE_COLORS = {"Conv2D": CONV_COLOR, "Dense": DENSE_COLOR}


def _human(n: float) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.3g}{unit}"
    return f"{n:.0f}"


def params_and_macs(table: pd.DataFrame, title: str = "") -> go.Figure:
    """Parameters and MACs per layer, side by side, for layers that have either.

    AlexNet's lesson shows at a glance: parameters sit in fc6/fc7, compute in the convolutions.
    """
    rows = table[(table["params"] > 0) | (table["macs"] > 0)]
    rows = rows[rows["type"].isin(["Conv2D", "Dense"])]
    colors = [TYPE_COLORS.get(t, OTHER_COLOR) for t in rows["type"]]
    fig = make_subplots(rows=1, cols=2, shared_yaxes=True, horizontal_spacing=0.04,
                        subplot_titles=("Parameters", "Multiply-accumulates per image"))
    for col, column in ((1, "params"), (2, "macs")):
        values = rows[column]
        total = max(int(values.sum()), 1)
        fig.add_trace(
            go.Bar(
                y=rows["name"], x=values, orientation="h", marker_color=colors,
                text=[f"{_human(v)} ({100 * v / total:.0f}%)" for v in values],
                textposition="auto", cliponaxis=False,
                customdata=[100 * v / total for v in values],
                hovertemplate="%{y}: %{x:,} (%{customdata:.1f}% of total)<extra></extra>",
                showlegend=False,
            ),
            row=1, col=col,
        )
    fig.update_yaxes(autorange="reversed", row=1, col=1)
    fig.update_layout(title=title or None, height=max(320, 34 * len(rows) + 120),
                      margin=dict(l=10, r=10, t=60 if title else 40, b=10), bargap=0.25)
    return fig


GROUP_NAMES = {"conv": "Convolutions", "dense": "Dense layers", "lrn": "Local response norm.",
               "other": "Everything else (ReLU, pooling, batch norm, ...)"}


def time_against_arithmetic(groups: dict) -> go.Figure:
    """Share of the multiply-accumulates against share of the measured time, per kind of layer
    (the `groups` of profile.profile): where the arithmetic is and where the time goes."""
    names = [GROUP_NAMES[g] for g in groups]
    fig = go.Figure()
    for key, label, color in (("macs_share", "Share of the arithmetic (MACs)", PALETTE[6]),
                              ("time_share", "Share of the measured time", PALETTE[0])):
        values = [groups[g][key] for g in groups]
        fig.add_trace(go.Bar(y=names, x=values, orientation="h", name=label, marker_color=color,
                             text=[f"{v:.0%}" for v in values], textposition="auto",
                             hovertemplate="%{y}: %{x:.1%}<extra>" + label + "</extra>"))
    fig.update_yaxes(autorange="reversed")
    fig.update_xaxes(range=[0, 1], tickformat=".0%")
    fig.update_layout(barmode="group", height=110 + 70 * len(names), margin=dict(l=10, r=10, t=10, b=10),
                      legend=dict(orientation="h", y=-0.15))
    return fig


def activation_memory(table: pd.DataFrame) -> go.Figure:
    """Activation memory per layer (float32, one image): where memory goes in a forward pass."""
    rows = table[table["type"].isin(["InputLayer", "Conv2D", "Dense"]) | table["name"].str.startswith("pool")]
    fig = go.Figure(go.Bar(
        x=rows["name"], y=rows["activation_bytes"] / 1024,
        marker_color=[TYPE_COLORS.get(t, OTHER_COLOR) for t in rows["type"]],
        hovertemplate="%{x}: %{y:,.1f} KiB<extra></extra>",
    ))
    fig.update_layout(yaxis_title="KiB per image", height=320, margin=dict(l=10, r=10, t=30, b=10))
    return fig


# --- Network diagram --------------------------------------------------------------------

_BLOCK_TYPES = {"InputLayer", "Conv2D", "Dense", "Concatenate", "Flatten", "AdaptiveAveragePooling2D"}
_NODE_STYLE = {
    "InputLayer": ("#f2f2f2", "#555555"),
    "Conv2D": ("#d6e9f5", CONV_COLOR),
    "Dense": ("#fbe0d7", DENSE_COLOR),
    "Activation": ("#e8f3e1", "#4b8f29"),
}


def _shape(shape) -> str:
    return "x".join(str(s) for s in shape)


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def network_dot(table: pd.DataFrame, rankdir: str = "TB") -> str:
    """Graphviz DOT source of the network, one box per block (conv/dense + its norm, pool...).

    Normalisation, activation, pooling and dropout fold into the box of the layer they follow,
    so towers, concatenations and the classifier read like the paper's figure 2.
    """
    owner: dict[str, str] = {}
    lines: dict[str, list[str]] = {}
    kinds: dict[str, str] = {}
    shapes: dict[str, tuple] = {}
    edges: list[tuple[str, str]] = []
    padding = dict(zip(table["name"], table["detail"].where(table["type"] == "ZeroPadding2D")))
    for row in table.itertuples():
        if row.type in _BLOCK_TYPES or row.name == "predictions":
            owner[row.name] = row.name
            kinds[row.name] = row.type
            head = row.name if row.type == "InputLayer" else f"{row.name}: {row.detail}".rstrip(": ")
            pads = [padding[p] for p in row.inputs if isinstance(padding.get(p), str)]
            head += "".join(f", {p}" for p in pads)
            lines[row.name] = [head]
            for parent in row.inputs:
                edges.append((owner[parent], row.name))
        else:
            block = owner[row.inputs[0]]
            owner[row.name] = block
            if row.type == "ZeroPadding2D":
                continue
            label = {"BatchNormalization": "BatchNorm", "LocalResponseNormalization": "LRN",
                     "MaxPooling2D": "max-pool", "ReLU": "ReLU", "Activation": "", "Dropout": "dropout"}.get(row.type, row.type)
            detail = "" if row.type == "LocalResponseNormalization" else row.detail
            lines[block].append(f"{label} {detail}".strip())
        shapes[owner[row.name]] = row.output_shape
    out = [
        "digraph alexnet {",
        f'  rankdir={rankdir}; nodesep=0.3; ranksep=0.25; bgcolor="transparent";',
        '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=10, margin="0.12,0.06"];',
        '  edge [color="#888888", arrowsize=0.6];',
    ]
    for name, text in lines.items():
        fill, border = _NODE_STYLE.get(kinds[name], ("#ffffff", "#999999"))
        label = "\\n".join(_escape(t) for t in [*text, f"→ {_shape(shapes[name])}"])
        out.append(f'  "{name}" [label="{label}", fillcolor="{fill}", color="{border}"];')
    for a, b in edges:
        out.append(f'  "{a}" -> "{b}";')
    out.append("}")
    return "\n".join(out)


# --- Training curves ----------------------------------------------------------------------

MAX_STEP_POINTS = 1500
PALETTE = ("#2a7ab0", "#e4572e", "#4b8f29", "#8e44ad", "#f0a202", "#17becf", "#7f7f7f", "#bcbd22")


def smooth_steps(steps: pd.DataFrame, steps_per_epoch: int | None, max_points: int = MAX_STEP_POINTS) -> pd.DataFrame:
    """Per-step rows -> (fractional epoch, EMA-smoothed loss/accuracy), at most `max_points` rows."""
    if steps.empty or "step" not in steps:
        return pd.DataFrame(columns=["epoch", "loss", "accuracy"])
    frame = steps.sort_values("step").drop_duplicates("step", keep="last")
    span = max(5, len(frame) // 50)
    out = pd.DataFrame({
        "epoch": frame["step"] / steps_per_epoch if steps_per_epoch else frame["epoch"],
        "loss": frame["loss"].ewm(span=span).mean(),
        "accuracy": frame["accuracy"].ewm(span=span).mean() if "accuracy" in frame else float("nan"),
    })
    if len(out) > max_points:
        out = out.iloc[:: int(np.ceil(len(out) / max_points))]
    return out


MARKED_EPOCHS = 40  # past this many epochs, dots on every epoch crowd a curve into a band
MARKED_STEPS = 30  # up to this many logged steps (a run's first ones), a dot on each
TOOLBAR_MARGIN = 64  # px above the panels: Plotly's toolbar (about 30 px) sits over this, never over a title


def epoch_mode(metrics: pd.DataFrame) -> str:
    """Plotly mode of a per-epoch curve: a dot per epoch for short runs, a plain line for long ones."""
    return "lines+markers" if len(metrics) <= MARKED_EPOCHS else "lines"


def training_curves(metrics: pd.DataFrame, steps: pd.DataFrame | None = None,
                    steps_per_epoch: int | None = None, epochs: int | None = None) -> go.Figure:
    """Loss, accuracy and learning rate of one run: per-epoch train/validation, the smoothed
    per-step training curves, and the learning rate of every logged step. Accuracy is drawn on
    0-100% and loss from 0, and with `epochs` (the run's) the epoch axis spans the whole run, so a
    curve's first points do not rescale the axes. A run's first logged steps show as dots (a line
    needs two points), and the top margin keeps the chart's toolbar above the panel titles."""
    fig = make_subplots(rows=1, cols=3, subplot_titles=("Loss", "Accuracy", "Learning rate"),
                        horizontal_spacing=0.07, column_widths=[0.37, 0.37, 0.26])
    train_c, val_c = PALETTE[0], PALETTE[1]
    if steps is not None and not steps.empty:
        s = smooth_steps(steps, steps_per_epoch)
        mode = "lines+markers" if len(s) <= MARKED_STEPS else "lines"
        fig.add_trace(go.Scatter(x=s["epoch"], y=s["loss"], name="train (per step, smoothed)", mode=mode,
                                 line=dict(color=train_c, width=1), marker=dict(size=6), opacity=0.45,
                                 legendgroup="steps"), 1, 1)
        fig.add_trace(go.Scatter(x=s["epoch"], y=s["accuracy"], name="train (per step, smoothed)", mode=mode,
                                 line=dict(color=train_c, width=1), marker=dict(size=6), opacity=0.45,
                                 legendgroup="steps", showlegend=False), 1, 2)
    if not metrics.empty:
        for key, label, color, dash in [("loss", "train", train_c, None), ("val_loss", "validation", val_c, None)]:
            if key in metrics:
                fig.add_trace(go.Scatter(x=metrics["epoch"], y=metrics[key], name=label, mode=epoch_mode(metrics),
                                         line=dict(color=color, dash=dash), legendgroup=label), 1, 1)
        for key, label, color in [("accuracy", "train", train_c), ("val_accuracy", "validation", val_c)]:
            if key in metrics:
                fig.add_trace(go.Scatter(x=metrics["epoch"], y=metrics[key], name=label, mode=epoch_mode(metrics),
                                         line=dict(color=color), legendgroup=label, showlegend=False), 1, 2)
        if "val_top5_accuracy" in metrics:
            fig.add_trace(go.Scatter(x=metrics["epoch"], y=metrics["val_top5_accuracy"], name="validation top-5",
                                     mode="lines", line=dict(color=val_c, dash="dot")), 1, 2)
    if steps is not None and not steps.empty and "learning_rate" in steps and "step" in steps:
        lr = steps.sort_values("step").drop_duplicates("step", keep="last")
        lr = lr.iloc[:: max(1, int(np.ceil(len(lr) / MAX_STEP_POINTS)))]
        x = lr["step"] / steps_per_epoch if steps_per_epoch else lr["epoch"]
        fig.add_trace(go.Scatter(x=x, y=lr["learning_rate"], name="learning rate",
                                 mode="lines+markers" if len(lr) <= MARKED_STEPS else "lines",
                                 line=dict(color=PALETTE[2], width=1.5), marker=dict(size=4), showlegend=False,
                                 hovertemplate="epoch %{x:.2f}: %{y:.3g}<extra></extra>"), 1, 3)
    elif not metrics.empty and "learning_rate" in metrics:  # runs too short for steps.csv: the epochs' ends
        fig.add_trace(go.Scatter(x=metrics["epoch"], y=metrics["learning_rate"], name="learning rate",
                                 mode=epoch_mode(metrics), line=dict(color=PALETTE[2], width=1.5), showlegend=False,
                                 hovertemplate="end of epoch %{x}: %{y:.3g}<extra></extra>"), 1, 3)
    fig.update_xaxes(title_text="epoch", rangemode="tozero", range=[0, epochs * 1.02] if epochs else None)
    fig.update_yaxes(rangemode="tozero", row=1, col=1)
    fig.update_yaxes(tickformat=".0%", range=[0, 1.02], row=1, col=2)
    fig.update_yaxes(rangemode="tozero", exponentformat="e", row=1, col=3)
    fig.update_layout(height=400, margin=dict(l=10, r=10, t=TOOLBAR_MARGIN, b=10),
                      legend=dict(orientation="h", y=-0.2), uirevision="curves")
    return fig


def compare_curves(curves: dict[str, pd.DataFrame], metric: str = "val_accuracy") -> go.Figure:
    """One line per run of an epoch metric (runs overlaid)."""
    fig = go.Figure()
    for i, (label, metrics) in enumerate(curves.items()):
        if metric in metrics:
            fig.add_trace(go.Scatter(x=metrics["epoch"], y=metrics[metric], name=label, mode=epoch_mode(metrics),
                                     line=dict(color=PALETTE[i % len(PALETTE)])))
    fig.update_layout(height=360, margin=dict(l=10, r=10, t=30, b=10), xaxis_title="epoch",
                      yaxis_title=metric.replace("_", " "), legend=dict(orientation="h", y=-0.25))
    fig.update_xaxes(rangemode="tozero")
    if "accuracy" in metric:
        fig.update_yaxes(tickformat=".0%", range=[0, 1.02])
    else:
        fig.update_yaxes(rangemode="tozero")
    return fig


# --- Comparing runs (the Runs page's Compare) ----------------------------------------------------

# What can be overlaid: {key: (label, metrics.csv column, steps.csv column)}. Images per second is
# worked out from metrics.csv (`metric_series`); a per-step column is used where the run logged one.
COMPARE_METRICS = {
    "val_accuracy": ("Validation accuracy", "val_accuracy", None),
    "val_loss": ("Validation loss", "val_loss", None),
    "accuracy": ("Training accuracy", "accuracy", "accuracy"),
    "loss": ("Training loss", "loss", "loss"),
    "learning_rate": ("Learning rate", "learning_rate", "learning_rate"),
    "images_per_s": ("Images per second", None, None),
    "val_top5_accuracy": ("Validation top-5 accuracy", "val_top5_accuracy", None),
}
COMPARE_AXES = {"epoch": "Epoch", "step": "Step", "time": "Wall-clock"}
STEP_TIME_COLUMN = "elapsed_s"  # steps.csv's training time of a step, when the trainer records it


def ema_smooth(values, weight: float) -> np.ndarray:
    """TensorBoard's smoothing: an exponential moving average, debiased so the first points are not
    pulled towards 0 (each value divided by 1 - weight^n after n points). `weight` 0 leaves the
    values as they are; non-finite values pass through and are skipped; a constant series stays."""
    values = np.asarray(values, dtype=float)
    if not 0 <= weight < 1:
        raise ValueError(f"smoothing weight must be in [0, 1), not {weight}")
    finite = np.isfinite(values)
    if weight == 0 or not finite.any() or np.ptp(values[finite]) == 0:
        return values.copy()
    out = values.copy()
    last, count = 0.0, 0
    for i, value in enumerate(values):
        if not finite[i]:
            continue
        last = last * weight + (1 - weight) * value
        count += 1
        out[i] = last / (1 - weight ** count)
    return out


def epoch_end_times(metrics: pd.DataFrame) -> pd.Series | None:
    """Seconds of training at the end of each epoch (the running sum of metrics.csv's epoch_seconds,
    validation included), or None when the run did not record its epochs' times."""
    if metrics.empty or "epoch_seconds" not in metrics or not metrics["epoch_seconds"].notna().all():
        return None
    return metrics["epoch_seconds"].astype(float).cumsum()


def _step_times(steps: pd.DataFrame, metrics: pd.DataFrame, steps_per_epoch: int | None) -> pd.Series | None:
    """Seconds of training at each logged step: recorded by the trainer when steps.csv has them, else
    placed in its epoch in proportion (from the epoch's recorded time; an epoch still running takes
    the median of the finished ones)."""
    if STEP_TIME_COLUMN in steps and steps[STEP_TIME_COLUMN].notna().all():
        return steps[STEP_TIME_COLUMN].astype(float)
    ends = epoch_end_times(metrics)
    if ends is None or not steps_per_epoch:
        return None
    seconds = metrics["epoch_seconds"].astype(float).to_numpy()
    epoch = np.ceil(steps["step"].to_numpy(dtype=float) / steps_per_epoch).astype(int)  # from 1
    start = np.concatenate([[0.0], ends.to_numpy()])
    typical = float(np.median(seconds))
    times = []
    for step, e in zip(steps["step"].to_numpy(dtype=float), epoch):
        e = max(e, 1)
        begin = start[e - 1] if e - 1 < len(start) else start[-1] + typical * (e - len(start))
        length = seconds[e - 1] if e - 1 < len(seconds) else typical
        times.append(begin + (step - (e - 1) * steps_per_epoch) / steps_per_epoch * length)
    return pd.Series(times, index=steps.index)


def metric_series(metrics: pd.DataFrame, steps: pd.DataFrame | None, metric: str, axis: str = "epoch",
                  steps_per_epoch: int | None = None, images_per_epoch: int | None = None,
                  per_step: bool = True) -> pd.DataFrame:
    """One run's curve of `metric` (a COMPARE_METRICS key) against `axis` (epoch, step or time in
    seconds): a DataFrame of x, y, sorted by x; empty when the run did not record what it needs.

    Per-epoch values sit at the end of their epoch (epoch N at x = N, or N x steps per epoch, or the
    training time when it ended); with `per_step`, a metric that steps.csv logs is taken from it."""
    empty = pd.DataFrame({"x": pd.Series(dtype=float), "y": pd.Series(dtype=float)})
    if metric not in COMPARE_METRICS or axis not in COMPARE_AXES:
        raise ValueError(f"unknown metric {metric!r} or axis {axis!r}")
    _, epoch_column, step_column = COMPARE_METRICS[metric]
    steps = steps if steps is not None else pd.DataFrame()
    if per_step and step_column and step_column in steps and "step" in steps and len(steps):
        frame = steps.dropna(subset=["step"]).sort_values("step").drop_duplicates("step", keep="last")
        if axis == "step":
            x = frame["step"].astype(float)
        elif axis == "epoch":
            if not steps_per_epoch:
                return empty
            x = frame["step"] / steps_per_epoch
        else:
            x = _step_times(frame, metrics, steps_per_epoch)
            if x is None:
                return empty
        out = pd.DataFrame({"x": x.to_numpy(dtype=float), "y": frame[step_column].to_numpy(dtype=float)})
    else:
        if metrics.empty or "epoch" not in metrics:
            return empty
        if metric == "images_per_s":
            if not images_per_epoch or "epoch_seconds" not in metrics:
                return empty
            y = images_per_epoch / metrics["epoch_seconds"].astype(float)
        elif epoch_column in metrics:
            y = metrics[epoch_column].astype(float)
        else:
            return empty
        if axis == "epoch":
            x = metrics["epoch"].astype(float)
        elif axis == "step":
            if not steps_per_epoch:
                return empty
            x = metrics["epoch"].astype(float) * steps_per_epoch
        else:
            x = epoch_end_times(metrics)
            if x is None:
                return empty
        out = pd.DataFrame({"x": x.to_numpy(dtype=float), "y": y.to_numpy(dtype=float)})
    out = out[np.isfinite(out["x"])].sort_values("x", kind="stable").reset_index(drop=True)
    if len(out) > MAX_STEP_POINTS:  # every k-th point: a browser draws 24 runs of 20,000 steps slowly
        out = out.iloc[:: int(np.ceil(len(out) / MAX_STEP_POINTS))].reset_index(drop=True)
    return out


def time_unit(seconds: float) -> tuple[float, str]:
    """(divisor, unit) for a wall-clock axis whose longest run took `seconds`."""
    if seconds >= 3 * 3600:
        return 3600.0, "hours"
    if seconds >= 3 * 60:
        return 60.0, "minutes"
    return 1.0, "seconds"


def compare_figure(series: dict[str, pd.DataFrame], metric: str, axis: str = "epoch", smoothing: float = 0.0,
                   title: str | None = None) -> go.Figure:
    """Runs overlaid: one colour per run (`series`: {label: metric_series frame}), the x axis in
    epochs, steps or wall-clock time (seconds, drawn in the unit that fits). With `smoothing`
    (TensorBoard's debiased EMA weight), the smoothed curve is drawn over its raw values, faint."""
    label = COMPARE_METRICS[metric][0]
    fig = go.Figure()
    divisor, unit = 1.0, ""
    if axis == "time":
        longest = max((float(s["x"].max()) for s in series.values() if len(s)), default=0.0)
        divisor, unit = time_unit(longest)
    percent = "accuracy" in metric
    value = "%{y:.1%}" if percent else "%{y:.4g}"
    for i, (name, s) in enumerate(series.items()):
        if not len(s):
            continue
        color = PALETTE[i % len(PALETTE)]
        x = s["x"] / divisor
        mode = "lines+markers" if len(s) <= MARKED_EPOCHS else "lines"
        if smoothing > 0:
            fig.add_trace(go.Scatter(x=x, y=s["y"], mode=mode, name=name, legendgroup=name, showlegend=False,
                                     line=dict(color=color, width=1), marker=dict(size=4), opacity=0.25,
                                     hoverinfo="skip"))
            smoothed = ema_smooth(s["y"], smoothing)
            fig.add_trace(go.Scatter(x=x, y=smoothed, mode="lines", name=name, legendgroup=name,
                                     line=dict(color=color, width=2), customdata=s["y"],
                                     hovertemplate=f"{value} (raw %{{customdata:{'.1%' if percent else '.4g'}}})"
                                                   "<extra>%{fullData.name}</extra>"))
        else:
            fig.add_trace(go.Scatter(x=x, y=s["y"], mode=mode, name=name, legendgroup=name,
                                     line=dict(color=color, width=2), marker=dict(size=5),
                                     hovertemplate=f"{value}<extra>%{{fullData.name}}</extra>"))
    x_title = {"epoch": "epoch", "step": "step", "time": f"training time ({unit})"}[axis]
    fig.update_layout(height=380, margin=dict(l=10, r=10, t=50, b=10), hovermode="x unified" if axis != "time" else "closest",
                      title=dict(text=title or label, x=0, xanchor="left", y=0.98, yanchor="top", font=dict(size=15)),
                      xaxis_title=x_title, legend=dict(orientation="h", y=-0.22), uirevision=f"{metric}-{axis}")
    fig.update_xaxes(rangemode="tozero")
    if percent:
        fig.update_yaxes(tickformat=".0%", range=[0, 1.02])
    elif metric == "learning_rate":
        fig.update_yaxes(rangemode="tozero", exponentformat="e")
    else:
        fig.update_yaxes(rangemode="tozero")
    return fig


def _axis_values(values: pd.Series) -> dict:
    """A parallel-coordinates dimension of one setting: numbers as they are, anything else (words,
    true/false) as evenly spaced categories named on the axis."""
    numeric = pd.to_numeric(values, errors="coerce")
    if numeric.notna().all() and not values.map(lambda v: isinstance(v, bool)).any():
        levels = sorted(set(numeric))
        whole = all(float(v).is_integer() for v in levels) and len(levels) <= 12  # seeds, epochs: no 0.2 ticks
        return {"values": numeric.astype(float).tolist(), "tickvals": levels if whole else None,
                "ticktext": [f"{v:g}" for v in levels] if whole else None}
    names = sorted({str(v) for v in values}, key=lambda t: (len(t) > 0, t))
    codes = {name: i for i, name in enumerate(names)}
    return {"values": [codes[str(v)] for v in values], "tickvals": list(range(len(names))), "ticktext": names,
            "range": [-0.5, len(names) - 0.5] if len(names) == 1 else None}


def settings_parallel(frame: pd.DataFrame, result: str, result_label: str) -> go.Figure:
    """Parallel coordinates of runs (`frame`: one row per run, its first column the run's name, then the
    settings to show, and `result`): each run a line through its settings to its result, coloured by
    the result, so the settings that go with a good result stand out."""
    dimensions = []
    for column in frame.columns:
        if column == result:
            continue
        axis = _axis_values(frame[column])
        dimensions.append(dict(label=str(column), **{k: v for k, v in axis.items() if v is not None}))
    scores = frame[result].astype(float)
    low, high = float(scores.min()), float(scores.max())
    percent = "accuracy" in result
    fmt = (".1%" if high - low < 0.1 else ".0%") if percent else None  # a narrow range needs the decimal
    dimensions.append(dict(label=result_label, values=scores.tolist(), tickformat=fmt))
    fig = go.Figure(go.Parcoords(
        dimensions=[{k: v for k, v in d.items() if v is not None} for d in dimensions],
        line=dict(color=scores.tolist(), colorscale="Viridis", showscale=True, cmin=low,
                  cmax=high if high > low else low + 1e-9,
                  colorbar=dict(title=dict(text=result_label, side="right"), tickformat=fmt)),
        labelangle=0, labelside="top"))
    longest = max((len(str(v)) for v in frame.iloc[:, 0]), default=0)  # the first axis names the runs, left of it
    fig.update_layout(height=420, margin=dict(l=min(260, 20 + 7 * longest), r=40, t=70, b=30))
    return fig


def settings_scatter(frame: pd.DataFrame, setting: str, result: str, result_label: str) -> go.Figure:
    """One setting (x) against the result (y), a labelled point per run (`frame`'s first column names
    the runs): numbers on a linear axis, anything else as categories."""
    names = frame.iloc[:, 0].astype(str)
    numeric = pd.to_numeric(frame[setting], errors="coerce")
    is_number = numeric.notna().all() and not frame[setting].map(lambda v: isinstance(v, bool)).any()
    x = numeric if is_number else frame[setting].astype(str)
    percent = "accuracy" in result
    fig = go.Figure(go.Scatter(x=x, y=frame[result].astype(float), mode="markers+text", text=names,
                               textposition="top center", marker=dict(size=11, color=PALETTE[0]),
                               hovertemplate="%{text}<br>" + setting + ": %{x}<br>" + result_label +
                                             (": %{y:.1%}" if percent else ": %{y:.4g}") + "<extra></extra>"))
    fig.update_layout(height=420, margin=dict(l=10, r=10, t=30, b=10), xaxis_title=setting,
                      yaxis_title=result_label)
    if not is_number:
        fig.update_xaxes(type="category")
    if percent:
        fig.update_yaxes(tickformat=".0%")
    return fig


# --- Evaluation -----------------------------------------------------------------------------


def confusion_figure(cm: np.ndarray, classes: list[str], normalize: bool = False,
                     selected: tuple[int, int] | None = None) -> go.Figure:
    """Confusion matrix drawn as square scatter markers (rows: true, columns: predicted).

    Markers rather than a heatmap, so a click selects a cell (Streamlit's plotly selection
    reports points of scatter traces); hover shows true, predicted, count and row percent.
    Every cell stays at full strength after a click; the `selected` (true, predicted) cell is
    outlined instead.
    """
    cm = np.asarray(cm)
    n = len(classes)
    row_sums = cm.sum(axis=1, keepdims=True)
    share = np.divide(cm, row_sums, out=np.zeros(cm.shape, dtype=float), where=row_sums > 0)
    values = share if normalize else cm
    true_idx, pred_idx = np.meshgrid(range(n), range(n), indexing="ij")
    true_idx, pred_idx = true_idx.ravel(), pred_idx.ravel()
    flat = values.ravel()
    size = max(6, min(44, int(560 / max(n, 1))))
    text = [f"{share.ravel()[i]:.0%}" if normalize else f"{cm.ravel()[i]}" for i in range(n * n)] if n <= 20 else None
    fig = go.Figure(go.Scatter(
        x=[classes[j] for j in pred_idx], y=[classes[i] for i in true_idx], mode="markers+text" if text else "markers",
        marker=dict(symbol="square", size=size, color=flat, colorscale="Blues", showscale=True,
                    cmin=0, cmax=float(values.max()) if values.size and values.max() > 0 else 1,
                    line=dict(width=0.5, color="#d0d7de"), colorbar=dict(title="share" if normalize else "count")),
        text=text, textfont=dict(size=max(7, min(12, size // 3)),
                                 color=["white" if v > 0.6 * (values.max() or 1) else "#1f2a36" for v in flat]),
        customdata=np.stack([true_idx, pred_idx, cm.ravel(), 100 * share.ravel()], axis=1),
        hovertemplate="true: %{y}<br>predicted: %{x}<br>count: %{customdata[2]:.0f} "
                      "(%{customdata[3]:.1f}% of the row)<extra></extra>",
        selected=dict(marker=dict(opacity=1)), unselected=dict(marker=dict(opacity=1)),
    ))
    if selected is not None and 0 <= selected[0] < n and 0 <= selected[1] < n:
        # Categories sit at 0..n-1 along each axis; the y axis lists the classes bottom-up.
        x, y = selected[1], n - 1 - selected[0]
        fig.add_shape(type="rect", x0=x - 0.5, x1=x + 0.5, y0=y - 0.5, y1=y + 0.5, xref="x", yref="y",
                      line=dict(color="#e8590c", width=3), fillcolor="rgba(0,0,0,0)", layer="above")
    side = max(360, min(900, size * n + 160))
    fig.update_layout(height=side, margin=dict(l=10, r=10, t=30, b=10), clickmode="event+select")
    fig.update_xaxes(title_text="predicted", categoryorder="array", categoryarray=classes, tickangle=-45,
                     showgrid=False, side="top")
    fig.update_yaxes(title_text="true", categoryorder="array", categoryarray=classes[::-1], showgrid=False)
    return fig


def per_class_bars(report: pd.DataFrame) -> go.Figure:
    fig = go.Figure()
    for key, color in (("precision", PALETTE[0]), ("recall", PALETTE[1]), ("f1", PALETTE[2])):
        fig.add_trace(go.Bar(x=report["class"], y=report[key], name=key, marker_color=color))
    fig.update_layout(barmode="group", height=340, margin=dict(l=10, r=10, t=30, b=10), yaxis_tickformat=".0%",
                      yaxis_range=[0, 1], legend=dict(orientation="h", y=1.12))
    return fig


def topk_bars(predictions: list[dict], height: int = 200) -> go.Figure:
    """Horizontal bars of a top-k list [{'label', 'probability'}], best on top."""
    labels = [p.get("words") or p["label"] for p in predictions]  # ImageNet: "tench, Tinca tinca", not n01440764
    probs = [p["probability"] for p in predictions]
    fig = go.Figure(go.Bar(x=probs, y=labels, orientation="h", text=[f"{p:.1%}" for p in probs],
                           textposition="auto", marker_color=[PALETTE[0]] + [PALETTE[6]] * (len(probs) - 1),
                           hovertemplate="%{y}: %{x:.2%}<extra></extra>"))
    fig.update_yaxes(autorange="reversed")
    fig.update_xaxes(range=[0, 1], tickformat=".0%")
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=10, b=10))
    return fig


# --- Epoch time-travel -----------------------------------------------------------------------

RIGHT, WRONG = "#2b8a3e", "#c92a2a"
MAX_FRAMES = 60  # longer runs show every k-th epoch (and the last): Play lasts 42 s at most
PROBE_TILE = 56  # px a probe thumbnail takes in the figure
PROBE_COLUMNS = 8


def _png_uri(image: np.ndarray) -> str:

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _probe_mosaic(images: np.ndarray) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """The probe thumbnails in rows of PROBE_COLUMNS, each with room below for two lines of text;
    returns the mosaic and, for each image, where its text goes (pixel x, y)."""
    from PIL import Image

    tile, gap, text = PROBE_TILE, 10, 30
    rows = int(np.ceil(len(images) / PROBE_COLUMNS))
    mosaic = np.full((rows * (tile + text), PROBE_COLUMNS * (tile + gap), 3), 255, dtype=np.uint8)
    spots = []
    for i, image in enumerate(images):
        r, c = divmod(i, PROBE_COLUMNS)
        y, x = r * (tile + text), c * (tile + gap)
        mosaic[y:y + tile, x:x + tile] = np.asarray(Image.fromarray(image).resize((tile, tile), Image.NEAREST))
        spots.append((x + tile / 2, y + tile + text / 2))
    return mosaic, spots


def epoch_frames(timeline, count: int = MAX_FRAMES) -> list:
    """The epochs the animation shows: all of them, or every k-th and always the last."""
    epochs = timeline.epochs
    if len(epochs) <= count:
        return list(epochs)
    step = int(np.ceil(len(epochs) / count))
    return epochs[::step][:-1] + [epochs[-1]] if epochs[::step][-1] is not epochs[-1] else epochs[::step]


@functools.cache
def _blues() -> np.ndarray:
    """Plotly's "Blues" colour scale as 256 RGB rows."""
    from plotly.colors import sample_colorscale

    return np.array([[int(float(v)) for v in c[c.index("(") + 1:-1].split(",")[:3]]
                     for c in sample_colorscale("Blues", list(np.linspace(0, 1, 256)))], dtype=np.uint8)


def _blues_png(share: np.ndarray) -> str:
    """A confusion matrix's shares (0..1) as a PNG in plotly's "Blues", each cell a flat square
    (enlarged here, so the browser's smoothing cannot blur the cells into each other)."""
    cell = int(np.clip(480 // max(len(share), 1), 2, 24))
    image = _blues()[np.clip(np.rint(share * 255), 0, 255).astype(int)]
    return _png_uri(image.repeat(cell, axis=0).repeat(cell, axis=1))


def epoch_timeline_figure(timeline, classes: list[str], total_epochs: int | None = None) -> go.Figure:
    """One animated figure of a run's snapshots (snapshots.Timeline): per epoch, the validation
    confusion matrix (share of each true class), each class's accuracy, conv1's filters and the
    probe images' top prediction. A slider picks the epoch; Play runs through them from the
    first. It opens on the last epoch, the model the run ended with.

    Nothing is redrawn between frames, so nothing blanks while Play runs: every epoch's matrix and
    filters are laid in as layout images, all decoded once, and a frame only switches which one is
    opaque; everything else a frame changes (the heading, the matrix's numbers, the bars, the probes'
    words) is a scatter or bar trace, which plotly.js updates in place (redraw=False)."""
    from alexnet_core.analysis.explain import kernel_grid

    n = len(classes)
    shown = epoch_frames(timeline)
    probe = timeline.probe_images
    mosaic, spots = _probe_mosaic(probe) if probe is not None and len(probe) else (None, [])
    fig = make_subplots(rows=3, cols=2, column_widths=[0.5, 0.5], row_heights=[0.04, 0.53, 0.43],
                        horizontal_spacing=0.12, vertical_spacing=0.1, specs=[[{"colspan": 2}, None], [{}, {}], [{}, {}]],
                        subplot_titles=("", "Confusion matrix: true class (rows) against predicted (columns)",
                                        "Accuracy per class", "conv1's filters (the paper's figure 3)",
                                        "Probe images: top prediction (hover: top 5)"))
    rows, cols = np.divmod(np.arange(n * n), n)

    def share(epoch) -> tuple[np.ndarray, np.ndarray]:
        matrix = epoch.confusion(n).astype(float)
        return matrix, matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)

    def heading(epoch) -> str:
        of = f" of {total_epochs}" if total_epochs else ""
        return (f"Epoch {epoch.epoch}{of}: in-training validation accuracy {epoch.accuracy():.1%} "
                f"({len(epoch.labels):,} images)")

    shares = {e.epoch: share(e) for e in shown}  # (counts, row shares): each matrix computed once

    def traces(epoch) -> list:
        matrix, part = shares[epoch.epoch]
        flat, counts = part.ravel(), matrix.ravel()
        head = go.Scatter(x=[0], y=[0], mode="text", text=[heading(epoch)], textposition="middle right",
                          textfont=dict(size=18), hoverinfo="skip")
        cells = go.Scatter(
            x=cols, y=rows, mode="text" if n <= 20 else "markers", marker=dict(size=6, opacity=0),
            text=[f"{v:.0%}" if n <= 20 else "" for v in flat],
            textfont=dict(size=11, color=["white" if v > 0.5 else "#1f2d3d" for v in flat]),
            hovertext=[f"true: {classes[r]}<br>predicted: {classes[c]}<br>{k:.0f} images ({v:.1%} of the row)"
                       for r, c, k, v in zip(rows, cols, counts, flat)], hoverinfo="text")
        per_class = np.nan_to_num(epoch.per_class(n))
        bars = go.Bar(x=per_class, y=classes, orientation="h", marker_color=PALETTE[0], text=[f"{v:.0%}" for v in per_class],
                      textposition="auto", hovertemplate="%{y}: %{x:.1%}<extra></extra>")
        out = [head, cells, bars]
        if mosaic is not None:
            labels = timeline.probe_labels
            top, prob = epoch.probe_top, epoch.probe_prob
            right = top[:, 0] == labels
            out.append(go.Scatter(
                x=[s[0] for s in spots], y=[s[1] for s in spots], mode="text",
                text=[f"{classes[t[0]][:9]}<br>{'✓' if ok else '✗'} {p[0]:.0%}" for t, p, ok in zip(top, prob, right)],
                textfont=dict(size=9, color=[RIGHT if ok else WRONG for ok in right]),
                hovertext=[f"true: {classes[label]}<br>" + "<br>".join(f"{classes[c]}: {q:.1%}" for c, q in zip(t, p))
                           for label, t, p in zip(labels, top, prob)], hoverinfo="text"))
        return out

    last = shown[-1]
    for trace, (row, col) in zip(traces(last), ((1, 1), (2, 1), (2, 2), (3, 2))):
        fig.add_trace(trace, row=row, col=col)
    # the filters' grid enlarged to about 500 px wide, gaps and all, so that the browser's smoothing
    # cannot blur their pixels into each other
    grid = kernel_grid(last.conv1, scale=4).shape[:2]
    enlarge = int(np.clip(np.ceil(500 / grid[1]), 1, 8))

    def filters(epoch) -> str:
        return _png_uri(kernel_grid(epoch.conv1, scale=4).repeat(enlarge, axis=0).repeat(enlarge, axis=1))

    grid_h, grid_w = (size * enlarge for size in grid)
    fig.add_trace(go.Scatter(x=[0, grid_w], y=[0, grid_h], mode="markers", marker_opacity=0, hoverinfo="skip"),
                  row=3, col=1)  # spans the filters' axes, so they keep their size when nothing else is there

    # Each epoch's pictures, one over another: plotly.js keys a layout image by its position, so
    # each sits a millionth of a pixel apart and keeps its own element; a frame sets which shows.
    images = []
    for k, epoch in enumerate(shown):
        shift, opacity = k * 1e-6, 1 if epoch is last else 0
        images.append(dict(source=_blues_png(shares[epoch.epoch][1]), xref="x2", yref="y2", x=-0.5 + shift, y=-0.5,
                           sizex=n, sizey=n, sizing="stretch", layer="below", opacity=opacity))
        images.append(dict(source=filters(epoch), xref="x4", yref="y4", x=shift, y=0,
                           sizex=grid_w, sizey=grid_h, sizing="stretch", layer="below", opacity=opacity))
    if mosaic is not None:
        images.append(dict(source=_png_uri(mosaic), xref="x5", yref="y5", x=0, y=0, sizex=mosaic.shape[1],
                           sizey=mosaic.shape[0], sizing="stretch", layer="below"))
        fig.update_xaxes(row=3, col=2, range=[0, mosaic.shape[1]])
        fig.update_yaxes(row=3, col=2, range=[mosaic.shape[0], 0], scaleanchor="x5")
    moving = [0, 1, 2] + ([3] if mosaic is not None else [])

    def showing(k: int) -> dict:
        return dict(images=[dict(opacity=1 if j // 2 == k else 0) for j in range(2 * len(shown))])

    fig.frames = [go.Frame(name=str(e.epoch), data=traces(e), traces=moving, layout=showing(k))
                  for k, e in enumerate(shown)]
    steps = [dict(method="animate", label=str(e.epoch),
                  args=[[str(e.epoch)], dict(mode="immediate", frame=dict(duration=0, redraw=False),
                                             transition=dict(duration=0))]) for e in shown]
    fig.update_layout(
        images=images, height=1000, margin=dict(l=10, r=10, t=30, b=110), showlegend=False,
        sliders=[dict(active=len(shown) - 1, steps=steps, x=0.2, len=0.8, y=-0.03, yanchor="top",
                      currentvalue=dict(prefix="Epoch ", font=dict(size=14)), pad=dict(t=10))],
        updatemenus=[dict(type="buttons", direction="left", x=0.0, y=-0.05, xanchor="left", yanchor="top",
                          pad=dict(t=10, r=10), showactive=False, buttons=[
                              dict(label="▶ Play", method="animate",
                                   args=[None, dict(frame=dict(duration=700, redraw=False), fromcurrent=False,
                                                    transition=dict(duration=0), mode="immediate")]),
                              dict(label="❚❚", method="animate",
                                   args=[[None], dict(frame=dict(duration=0, redraw=False), mode="immediate",
                                                      transition=dict(duration=0))])])])
    fig.update_xaxes(row=1, col=1, range=[0, 1], visible=False)
    fig.update_yaxes(row=1, col=1, range=[-1, 1], visible=False)
    fig.update_xaxes(row=2, col=1, range=[-0.5, n - 0.5], tickvals=list(range(n)), ticktext=classes, tickangle=-45,
                     showgrid=False, zeroline=False)
    fig.update_yaxes(row=2, col=1, range=[n - 0.5, -0.5], tickvals=list(range(n)), ticktext=classes,
                     showgrid=False, zeroline=False)
    fig.update_xaxes(row=2, col=2, range=[0, 1], tickformat=".0%")
    fig.update_yaxes(row=2, col=2, autorange="reversed")
    fig.update_xaxes(row=3, col=1, range=[0, grid_w])
    fig.update_yaxes(row=3, col=1, range=[grid_h, 0], scaleanchor="x4")
    for col in (1, 2):
        fig.update_xaxes(row=3, col=col, visible=False)
        fig.update_yaxes(row=3, col=col, visible=False)
    return fig


# --- The map of what the network learned (embedding_map.py) -----------------------------------

MAP_SELECTION = "pick"  # the selection's name: Streamlit reports clicks under it


def embedding_chart(xy: np.ndarray, classes: list[str], labels: np.ndarray, predicted: np.ndarray,
                    confidence: np.ndarray, thumbnails: list[str], height: int = 600):
    """An Altair scatter of a t-SNE map: colour the true class, a cross each mistake, the image
    and its prediction on hover (vega-tooltip shows a field named `image` as a picture), a click
    selects a point (field `i`: its row in these arrays)."""
    import altair as alt

    right = np.asarray(labels) == np.asarray(predicted)
    frame = pd.DataFrame({
        "x": xy[:, 0], "y": xy[:, 1], "i": np.arange(len(xy)),
        "true": [classes[k] for k in labels], "predicted": [classes[k] for k in predicted],
        "confidence": np.asarray(confidence, dtype=float), "result": np.where(right, "right", "mistake"),
        "image": thumbnails})
    pick = alt.selection_point(fields=["i"], name=MAP_SELECTION, on="click", clear="dblclick")
    many = len(classes) > 20
    colour = alt.Color("true:N", title="true class", scale=alt.Scale(domain=list(classes),
                       scheme="category20" if many else "tableau10"),
                       legend=None if len(classes) > 40 else alt.Legend(columns=1 if not many else 2))
    return alt.Chart(frame).mark_point(filled=True, opacity=0.75).encode(
        x=alt.X("x:Q", axis=None), y=alt.Y("y:Q", axis=None), color=colour,
        shape=alt.Shape("result:N", title="prediction", scale=alt.Scale(domain=["right", "mistake"],
                                                                       range=["circle", "cross"])),
        size=alt.condition(pick, alt.value(260), alt.value(28)),
        tooltip=[alt.Tooltip("image:N"), alt.Tooltip("true:N", title="true"),
                 alt.Tooltip("predicted:N", title="predicted"),
                 alt.Tooltip("confidence:Q", title="confidence", format=".0%")],
    ).add_params(pick).properties(height=height)
