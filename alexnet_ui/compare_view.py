"""The Runs page's Compare: any metric of the selected runs overlaid against epoch, step or
wall-clock time, smoothed as TensorBoard smooths (the raw curve faint behind), and a plot of
their settings against their result (parallel coordinates, or one setting as a scatter). Every
chart's toolbar downloads it as PNG or SVG, in the browser (no server-side image export)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import streamlit as st

from alexnet_core.analysis import charts
from alexnet_core.store import catalog, layout
from alexnet_ui import glossary
from alexnet_ui.text import plain

DEFAULT_METRICS = ("val_accuracy", "loss")
FORMATS = ("PNG", "SVG")
METRIC_HELP = {
    "val_accuracy": "in-training validation", "val_loss": "loss", "accuracy": "accuracy", "loss": "loss",
    "learning_rate": "learning rate", "images_per_s": "images/s", "val_top5_accuracy": "top-5",
}
# Settings that say nothing about how a run was trained: left out of the settings-against-result plot.
NOT_SETTINGS = ("trained on", "data_description", "recipe", "monitor.best_checkpoint", "monitor.schedule",
                "monitor.schedule_note", "log_every", "snapshots", "cache_budget_mb")
RESULTS = {  # key: (label, what it is, how to read it from a run)
    "best_val": ("Best validation accuracy", "the best epoch's validation accuracy, measured during training"),
    "last_val": ("Last validation accuracy", "the last epoch's validation accuracy, measured during training"),
    "last_val_loss": ("Last validation loss", "the last epoch's validation loss"),
    "last_loss": ("Last training loss", "the last epoch's training loss"),
}


def chart_config(filename: str) -> dict:
    """Plotly's toolbar settings for a chart of this page: its camera button downloads the chart in
    the format picked on the page (PNG at twice the screen's resolution, or SVG), named `filename`.
    Plotly draws the file in the browser, so this works offline and without an image server."""
    fmt = (st.session_state.get("compare_format") or "PNG").lower()
    return {"displaylogo": False, "toImageButtonOptions": {"format": fmt, "filename": filename,
                                                           "scale": 2 if fmt == "png" else 1}}


def run_label(r: dict) -> str:
    return catalog.display_name(r)


def controls() -> dict:
    """The Compare controls: metrics, x axis, smoothing, per-step training curves, download format."""
    c = st.columns([2.6, 2.1, 1.5, 1.2])
    metrics = c[0].multiselect(
        "Metrics", list(charts.COMPARE_METRICS), default=list(DEFAULT_METRICS), key="compare_metrics",
        format_func=lambda m: charts.COMPARE_METRICS[m][0], placeholder="Pick what to plot",
        help="Each metric in a chart of its own, the runs overlaid. Validation figures are measured at the "
             "end of each epoch during training; " + glossary.help("in-training validation"))
    axis = c[1].segmented_control(
        "X axis", list(charts.COMPARE_AXES), default="epoch", key="compare_axis", format_func=charts.COMPARE_AXES.get,
        help="Epoch: " + glossary.help("epoch") + " Step: " + glossary.help("step") + " Wall-clock: the training "
             "time, from each epoch's recorded duration (validation included; the time between a stop and a "
             "resume left out).") or "epoch"
    smoothing = c[2].slider(
        "Smoothing", 0.0, 0.99, 0.6, 0.01, key="compare_smoothing",
        help="As TensorBoard smooths: an exponential moving average of the points (the weight given to the "
             "past), corrected so the first points are not pulled towards zero. 0 is no smoothing. The raw "
             "values stay drawn, faint, behind the smoothed line.")
    c[3].segmented_control(
        "Download as", FORMATS, default="PNG", key="compare_format",
        help="What the camera button in each chart's toolbar (top right, on hover) saves: PNG, a picture, "
             "or SVG, a drawing that stays sharp at any size. Made in your browser, offline.")
    per_step = st.toggle("Training curves per step", value=True, key="compare_per_step",
                         help="Training loss, accuracy and learning rate from every logged step (steps.csv) "
                              "instead of once per epoch. Validation is measured once per epoch either way.")
    return {"metrics": metrics, "axis": axis, "smoothing": float(smoothing), "per_step": per_step}


@st.cache_data(show_spinner=False, max_entries=256)
def _read_curves(path: str, stamp: tuple) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(metrics.csv, steps.csv) of a run, read once per version of the files."""
    return layout.read_metrics(Path(path)), layout.read_steps(Path(path))


def _stamp(run_dir: Path) -> tuple:
    out = []
    for name in (layout.METRICS, layout.STEPS):
        try:
            s = (run_dir / name).stat()
            out.append((s.st_mtime_ns, s.st_size))
        except OSError:
            out.append(None)
    return tuple(out)


def curves(selected: list[dict], picked: dict) -> None:
    """One chart per picked metric (two to a row), the selected runs overlaid; names the runs that
    recorded nothing to draw."""
    if not picked["metrics"]:
        st.caption("Pick one or more metrics above to plot them.")
        return
    data = {}
    for r in selected:
        run_dir = Path(r["path"])
        data[run_label(r)] = (r, *_read_curves(str(run_dir), _stamp(run_dir)))
    axis, smoothing = picked["axis"], picked["smoothing"]
    columns = st.columns(2)
    for i, metric in enumerate(picked["metrics"]):
        series, missing = {}, []
        for label, (r, metrics, steps) in data.items():
            spe = r.get("steps_per_epoch")
            images = spe * r["batch_size"] if spe and r.get("batch_size") else None
            s = charts.metric_series(metrics, steps, metric, axis, spe, images, per_step=picked["per_step"])
            series[label] = s
            if s.empty:
                missing.append(label)
        where = columns[i % 2]
        name = charts.COMPARE_METRICS[metric][0]
        fig = charts.compare_figure(series, metric, axis, smoothing)
        where.plotly_chart(fig, width="stretch", key=f"compare_{metric}",
                           config=chart_config(f"compare-{metric}-by-{axis}"))
        notes = []
        if metric == "images_per_s":
            notes.append("Training images per second over each whole epoch, its validation included.")
        if missing:
            why = {"time": "no recorded epoch times", "step": "no recorded steps per epoch"}.get(
                axis, "nothing recorded")
            shown = ", ".join(plain(m, 80) for m in missing[:4]) + (f" and {len(missing) - 4} more"
                                                                     if len(missing) > 4 else "")
            notes.append(f"Not drawn ({why} for {plain(name.lower())}): {shown}.")
        if notes:
            where.caption(" ".join(notes), help=glossary.help(METRIC_HELP[metric]))


def setting_text(value) -> str:
    """A setting as a table cell: never None or nan (a setting left unset reads '—')."""
    if value is None or (isinstance(value, float) and value != value):
        return "—"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def flat_settings(config: dict, r: dict, hidden=()) -> dict:
    """A run's config.json as one level of settings ('switches.width'), its data in words (no path
    of the machine a bundled run was trained on)."""
    out = {"data": r["data"]}
    for key, value in config.items():
        if key in hidden or key in ("data", "data_description"):
            continue
        if isinstance(value, dict):
            out.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            out[key] = value
    return out


def _result(r: dict, key: str) -> float | None:
    if key == "best_val":
        return r.get("best_val_accuracy")
    metrics = _read_curves(r["path"], _stamp(Path(r["path"])))[0]
    column = {"last_val": "val_accuracy", "last_val_loss": "val_loss", "last_loss": "loss"}[key]
    if column not in metrics or not metrics[column].notna().any():
        return None
    return float(metrics[column].dropna().iloc[-1])


def settings_plot(selected: list[dict], settings: dict[str, dict]) -> None:
    """The selected runs' settings against their result: parallel coordinates of the settings that
    differ among them (each run a line, coloured by its result), or one setting as a scatter.
    `settings`: {run id: flat_settings}."""
    st.markdown("**Settings against result**")
    c = st.columns([1.6, 1.6, 2])
    result = c[0].selectbox("Result", list(RESULTS), format_func=lambda k: RESULTS[k][0], key="compare_result",
                            help="Measured during training for every run alike (the in-training validation of "
                                 "each epoch), so runs compare on one footing. "
                                 + glossary.help("in-training validation"))
    label, meaning = RESULTS[result]
    rows, left_out = [], []
    for r in selected:
        value = _result(r, result)
        if value is None:
            left_out.append(run_label(r))
            continue
        rows.append({"run": run_label(r), **{k: setting_text(v) for k, v in settings[r["run_id"]].items()
                                             if k not in NOT_SETTINGS}, label: value})
    if len(rows) < 2:
        st.caption(f"Two or more of the selected runs need a {label.lower()} to plot their settings against it.")
        return
    frame = pd.DataFrame(rows).fillna("—")
    differ = [col for col in frame.columns if col not in ("run", label) and frame[col].nunique() > 1]
    kind = c[1].segmented_control("Plot", ["Parallel coordinates", "Scatter"], default="Parallel coordinates",
                                  key="compare_plot_kind",
                                  help="Parallel coordinates: each run a line through its settings to its "
                                       "result. Scatter: one setting against the result.") or "Parallel coordinates"
    if not differ:
        st.caption("The selected runs have the same settings: only their seed of randomness could tell them apart.")
        return
    for col in differ:  # numbers as numbers, so the axis is to scale
        numbers = pd.to_numeric(frame[col], errors="coerce")
        if numbers.notna().all():
            frame[col] = numbers
    if kind == "Scatter":
        setting = c[2].selectbox("Setting", differ, key="compare_scatter_setting")
        fig = charts.settings_scatter(frame[["run", setting, label]], setting, label, label)
    else:
        fig = charts.settings_parallel(frame[["run", *differ, label]], label, label)
    st.plotly_chart(fig, width="stretch", key="compare_settings_plot", config=chart_config(f"settings-{result}"))
    note = f"{label}: {meaning}."
    if any(r.get("headline") for r in selected):
        note += (" A run's headline figure (in the table) is measured once on the saved model, on its own "
                 "images and precision, so it can differ from these by a few points.")
    if left_out:
        note += f" Left out (no {label.lower()} yet): {', '.join(plain(n, 80) for n in left_out)}."
    st.caption(note + f" Settings shown: those that differ among these runs ({len(differ)}).")
