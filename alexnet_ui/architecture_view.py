"""The Architecture page's parts: the variant picker and its design switches, the network's
figures, and the five tabs (layer table, parameters and compute, measured time, diagram,
comparison with a second network); and the installed models (the ImageNet AlexNets, a user's
own): where their weights came from, their layer table and their real first-layer filters."""

from __future__ import annotations

# Imports inside functions are deliberate: TensorFlow and Keras, and the modules that reach them,
# load on first use, so importing this module (the app's pages, the command line) stays light.
import json

import pandas as pd
import streamlit as st

from alexnet_core.models.anatomy import compare_tables, totals
from alexnet_core.models.variants import ACTIVATIONS, NORMS, REMOVE_CONV, WIDTHS, get_arch, list_variants
from alexnet_core.settings.config import removed_conv_name
from alexnet_ui import glossary
from alexnet_ui.classify_view import filter_figure
from alexnet_ui.loaders import installed_label, installed_models, loaded_model, model_stamp, variant_table
from alexnet_ui.text import format_bytes, plain, shape_text

SWITCH_KEYS = ("norm", "activation", "groups", "pool", "remove_conv", "dropout", "width", "size", "classes")
SWITCH_WORDS = {"overlapping_pool": "overlapping pooling", "remove_conv": "removed", "input_size": "input size",
                "num_classes": "classes"}  # a switch in "changed: ..."
LABELS = {"name": "Layer", "type": "Type", "detail": "Configuration", "output_shape": "Output", "params": "Params",
          "non_trainable_params": "Fixed params", "macs": "MACs", "activation_kib": "Output KiB",
          "receptive_field": "Receptive field (px)", "cumulative_stride": "Stride (px)"}


def variant_picker(label: str, key: str, index: int = 0) -> str:
    return st.selectbox(label, list_variants(), index=index, key=key,
                        format_func=lambda n: f"{n}: {get_arch(n).title}")


def switch_form(variant: str, prefix: str) -> dict:
    """Widgets for the paper-fidelity switches; keys per variant keep each one's settings."""
    d = get_arch(variant)
    k = f"{prefix}_{variant}"
    c = st.columns(4)
    norm = c[0].selectbox("Normalisation", NORMS, index=NORMS.index(d.norm), key=f"{k}_norm",
                          help="LRN as in the paper, BatchNorm as in later versions, or none")
    activation = c[0].selectbox("Activation", ACTIVATIONS, index=ACTIVATIONS.index(d.activation),
                                key=f"{k}_activation",
                                help="ReLU as in the paper, or tanh, the saturating unit its Figure 1 compares it "
                                     "with: the same parameters and MACs, a different nonlinearity")
    groups = c[1].toggle("Grouped conv2/4/5", value=d.groups, key=f"{k}_groups",
                         help="The paper's two-GPU split: conv2, conv4, conv5 see half the maps")
    overlapping = c[1].toggle("Overlapping pooling", value=d.overlapping_pool, key=f"{k}_pool",
                              help="3x3 windows with stride 2 (paper) instead of 2x2")
    remove_conv = c[1].selectbox("Remove a convolution", REMOVE_CONV, index=REMOVE_CONV.index(d.remove_conv),
                                 key=f"{k}_remove_conv", format_func=removed_conv_name,
                                 help="The paper's section 6.1: removing any middle convolution costs about 2% "
                                      "top-1. The convolution goes with its normalisation and activation; its "
                                      "pooling stays, so every later map keeps its size and the next convolution "
                                      "reads the maps before the one removed.")
    dropout = c[2].slider("Dropout", 0.0, 0.9, float(d.dropout), 0.05, key=f"{k}_dropout")
    width = c[2].select_slider("Width multiplier", WIDTHS, value=d.width, key=f"{k}_width")
    input_size = c[3].number_input("Input size (px)", 1, 1024, d.input_size, key=f"{k}_size")
    num_classes = c[3].number_input("Classes", 0, 100_000, d.num_classes, key=f"{k}_classes")
    c[0].button("Reset to the published settings", key=f"{k}_reset", icon=":material/restart_alt:",
                on_click=lambda: [st.session_state.pop(f"{k}_{name}", None) for name in SWITCH_KEYS])
    return {"norm": norm, "activation": activation, "groups": groups, "overlapping_pool": overlapping,
            "dropout": dropout, "width": width, "remove_conv": int(remove_conv), "input_size": int(input_size),
            "num_classes": int(num_classes)}


def load(variant: str, switches: dict):
    """The layer table, or None after showing why these settings cannot be built."""
    try:
        get_arch(variant, **switches)
    except ValueError as exc:  # get_arch's own check of a switch, said with what to do about it
        st.error(f"{plain(exc, 400)}. Change the setting above to build this network.", icon=":material/error:")
        return None
    return variant_table(variant, json.dumps(switches, sort_keys=True))


def figures(table, sums: dict) -> None:
    m = st.columns(5)
    m[0].metric("Parameters", f"{sums['total_params']:,}", help=glossary.help("parameters"))
    m[1].metric("Trainable", f"{sums['trainable_params']:,}",
                help="The parameters training changes (the rest are batch normalisation's running averages)")
    m[2].metric("MACs per image", f"{sums['total_macs'] / 1e6:,.1f} M", help=glossary.help("MACs"))
    m[3].metric("Activations per image", format_bytes(sums["activation_bytes"]),
                help="Memory all the layers' outputs take for one image, in float32")
    m[4].metric("Input", "×".join(map(str, table["output_shape"].iloc[0])),
                help="The image size the network takes: height × width × colour channels")


def published_check(variant: str, switches: dict, sums: dict) -> None:
    """At the published settings, whether the figures match the publication's; away from them,
    what the switches changed against the variant's own network (a removed convolution's
    parameters and MACs, exactly)."""
    arch = get_arch(variant)
    published = arch.published
    defaults = arch.switches()
    if switches == defaults:
        if published:
            checks = [f"{label} {published[key]:,} {'✓' if sums[key] == published[key] else '✗'}"
                      for key, label in (("total_params", "parameters"), ("total_macs", "MACs")) if key in published]
            st.success("Published figures reproduced: " + ", ".join(checks), icon=":material/verified:")
        return
    own = totals(variant_table(variant, json.dumps(defaults, sort_keys=True)))
    changed = [f"{SWITCH_WORDS.get(name, name)} {removed_conv_name(value) if name == 'remove_conv' else value}"
               for name, value in switches.items() if value != defaults.get(name)]
    deltas = [f"{label} {sums[key] - own[key]:+,}" for key, label in (("total_params", "parameters"),
                                                                       ("total_macs", "MACs per image"))]
    st.caption(f":material/difference: Against the variant's own network ({own['total_params']:,} parameters, "
               f"{own['total_macs']:,} MACs): {', '.join(deltas)}; changed: {plain('; '.join(changed), 300)}.")


def _spatial(value) -> str:
    """A receptive field or stride, or a dash where a layer has none (dense layers have no stride)."""
    return "—" if pd.isna(value) else f"{int(value)}"


def layer_table(table, variant: str) -> None:
    """Every layer with every column visible at 1440 px: short labels, the configuration wrapped to
    a medium column, and the non-trainable parameters only where the network has any."""
    shown = table.drop(columns=["inputs", "trainable_params"]).assign(
        output_shape=table["output_shape"].map(shape_text),
        activation_kib=table["activation_bytes"] / 1024,
        receptive_field=table["receptive_field"].map(_spatial),
        cumulative_stride=table["cumulative_stride"].map(_spatial),
    ).drop(columns=["activation_bytes"])
    if not shown["non_trainable_params"].any():
        shown = shown.drop(columns=["non_trainable_params"])
    number = st.column_config.NumberColumn
    text = st.column_config.TextColumn
    st.dataframe(
        shown, hide_index=True, width="stretch", height=min(36 * len(shown) + 40, 720),
        column_config={
            "name": text(LABELS["name"], width="small"),
            "type": text(LABELS["type"], width="small"),
            "detail": text(LABELS["detail"], width="medium",
                           help="The layer's settings: filters, window size, stride, units, rate"),
            "output_shape": text(LABELS["output_shape"], width="small", help=glossary.help("output shape")),
            "params": number(LABELS["params"], format="localized", width="small", help=glossary.help("parameters")),
            "non_trainable_params": number(LABELS["non_trainable_params"], format="localized", width="small",
                                           help="Numbers kept by the layer but not learned by gradient "
                                                "descent (batch normalisation's running averages)"),
            "macs": number(LABELS["macs"], format="localized", width="small", help=glossary.help("MACs")),
            "activation_kib": number(LABELS["activation_kib"], format="%.1f", width="small",
                                     help="Memory the layer's output takes for one image, in float32"),
            "receptive_field": text(LABELS["receptive_field"], width="small", help=glossary.help("receptive field")),
            "cumulative_stride": text(LABELS["cumulative_stride"], width="small",
                                      help="How many input pixels apart two neighbouring units of the layer are"),
        },
    )
    st.caption("Receptive field: how many input pixels one unit of the layer sees. It can exceed the input "
               f"({int(pd.to_numeric(table['receptive_field'], errors='coerce').max())} px on a "
               f"{int(table['output_shape'].iloc[0][0])} px image here) "
               "because it counts the zero padding around the image. Dense layers see the whole image and "
               "have no stride (a dash).")
    st.download_button("Download the table (CSV)", shown.rename(columns=LABELS).to_csv(index=False),
                       f"{variant}-layers.csv", mime="text/csv", icon=":material/download:")


MEASURE = {"repeats": 10, "min_repeats": 3, "budget_s": 12.0}  # rounds at most, at least, and seconds of rounds


def measure(variant: str, switches_json: str, batch: int, progress) -> dict:
    """profile() with the page's rounds, telling `progress(done, total, what)` each step."""
    from alexnet_core.analysis.profile import profile

    return profile(variant, batch_size=batch, progress=progress, **MEASURE, **json.loads(switches_json))


def _rate(value) -> str:
    """A layer's GFLOP/s, or a dash where it has no arithmetic or no measurable time."""
    return "—" if value is None or pd.isna(value) else f"{value:,.1f}"


def measured_time(variant: str, switches: dict) -> None:
    """The Measured time tab: a button that times every layer on this machine (a progress bar
    with its steps), and the result, or why the layers' times are not shown."""

    st.markdown("How long each layer takes on **this machine**, next to how much arithmetic it does: "
                "the same network, run on a batch of random images, one layer at a time.")
    c1, c2 = st.columns([1, 2], vertical_alignment="bottom")
    batch = c1.selectbox("Images per batch", [1, 8, 32, 128], index=1, key="arch_profile_batch",
                         help=f"{glossary.help('batch')} Bigger batches use the hardware better.")
    key = (variant, json.dumps(switches, sort_keys=True), batch)
    if c2.button("Measure on this machine", icon=":material/timer:", key="arch_profile"):
        bar = st.progress(0.0, text="Building the network...")

        def progress(done: int, total: int, what: str) -> None:
            bar.progress(min(done / total, 1.0), text=f"{what}... ({done} of {total} steps done)")

        try:
            st.session_state["arch_profile_result"] = (key, measure(*key, progress))
        finally:
            bar.empty()
    result = st.session_state.get("arch_profile_result")
    if not result or result[0] != key:
        st.caption(f"Nothing measured yet for these settings: press the button. It compiles every layer, then "
                   f"times them all in {MEASURE['min_repeats']} to {MEASURE['repeats']} rounds (about "
                   f"{MEASURE['budget_s']:.0f} s at most for the rounds).")
        return
    show_profile(result[1])


def show_profile(doc: dict) -> None:
    """A measurement (profile.profile's document): the whole network's figures, and the layers'
    only when they add up to the whole; a busy machine said in words, with the spread."""
    from alexnet_core.analysis.charts import time_against_arithmetic

    rounds = doc["rounds"]
    t = st.columns(3)
    t[0].metric("Forward pass", f"{doc['total_ms']:.1f} ms",
                help=f"{glossary.help('forward pass')} A batch of {doc['batch_size']} on {doc['device']}: the "
                     f"fastest of {rounds} rounds (the median round: {doc['total_median_ms']:.1f} ms).")
    t[1].metric("Images per second", f"{doc['batch_size'] / doc['total_ms'] * 1000:,.0f}",
                help="Inference only; training also runs the backward pass (about twice the work)")
    achieved = 2 * sum(r["macs"] for r in doc["layers"]) * doc["batch_size"] / (doc["total_ms"] / 1000) / 1e9
    t[2].metric("Achieved", f"{achieved:,.1f} GFLOP/s", help=glossary.help("GFLOP/s"))
    spread = (f"The median round took {doc['spread']:.0%} longer than the fastest "
              f"({doc['total_median_ms']:.1f} ms against {doc['total_ms']:.1f} ms).")
    if not doc["adds_up"]:
        st.warning(f"**The per-layer times are not shown.** {plain(doc['note'], 600)}", icon=":material/speed:")
        st.caption(f"Measured on {plain(doc['device'])}, {doc['batch_size']} images of {doc['input_size']} px, "
                   f"{rounds} rounds. {spread} The figures above are the whole network's fastest round.")
        return
    if doc["note"]:
        st.warning(plain(doc["note"], 600), icon=":material/speed:")
    st.plotly_chart(time_against_arithmetic(doc["groups"]), width="stretch", key="arch_time_split")
    lrn = doc["groups"].get("lrn")
    if lrn:
        st.caption(f"Local response normalisation does no multiply-accumulates worth counting, yet takes "
                   f"{lrn['time_share']:.0%} of the time here: it reads and writes every activation of "
                   "conv1 and conv2 several times. Later networks dropped it (batch norm, or nothing).")
    st.caption(f"Measured on {plain(doc['device'])}, {doc['batch_size']} images of {doc['input_size']} px: each "
               f"layer compiled on its own and timed on the output of the layer before it, the fastest of "
               f"{rounds} rounds (other work on the machine only adds time). {spread} The layers add up to "
               f"{doc['sum_ms']:.1f} ms of the whole {doc['total_ms']:.1f} ms, after the fixed cost of a call "
               f"({doc['overhead_ms']:.2f} ms here) comes off each; in the whole network TensorFlow also merges a "
               "ReLU into the convolution before it. Forward pass only, in float32. "
               "Also on the command line: `python -m alexnet_core profile VARIANT --json`.")
    rows = pd.DataFrame(doc["layers"])[["name", "type", "macs", "ms", "gflops"]]
    rows["gflops"] = rows["gflops"].map(_rate)
    st.dataframe(rows, hide_index=True, width="stretch", height=min(36 * len(rows) + 40, 560),
                 column_config={
                     "name": "Layer", "type": "Type",
                     "macs": st.column_config.NumberColumn("MACs per image", format="localized",
                                                           help=glossary.help("MACs")),
                     "ms": st.column_config.NumberColumn("Time (ms per batch)", format="%.3f",
                                                         help="The layer's fastest round, less the fixed cost of a call"),
                     "gflops": st.column_config.TextColumn("GFLOP/s", help=f"{glossary.help('GFLOP/s')} A dash: no "
                                                           "arithmetic, or too quick to measure."),
                 })


def comparison(table, sums: dict, variant: str) -> None:
    """The Compare tab: a second network (B) beside the one above (A), layer by layer."""
    st.markdown("Compare the network above (**A**) with another variant or other switches (**B**).")
    variant_b = variant_picker("Variant B", "arch_variant_b", index=list_variants().index(
        "paper-ungrouped" if variant == "paper" else "paper"))
    with st.expander("Switches of B", icon=":material/tune:"):
        switches_b = switch_form(variant_b, "arch_b")
    table_b = load(variant_b, switches_b)
    if table_b is None:
        return
    sums_b = totals(table_b)
    c = st.columns(3)
    for col, key, label, scale in ((c[0], "total_params", "Parameters (B)", 1),
                                   (c[1], "total_macs", "MACs per image (B)", 1e6),
                                   (c[2], "activation_bytes", "Activations (B)", 2**20)):
        delta = sums_b[key] - sums[key]
        unit = {1: "", 1e6: " M", 2**20: " MiB"}[scale]
        col.metric(label, f"{sums_b[key] / scale:,.1f}{unit}" if scale != 1 else f"{sums_b[key]:,}",
                   delta=f"{delta / scale:+,.1f}{unit}" if scale != 1 else f"{delta:+,}",
                   delta_color="inverse")
    diff = compare_tables(table, table_b)
    if st.toggle("Only layers that differ", value=True, key="arch_only_changes"):
        diff = diff[diff["status"] != "same"]
    for col in ("output_shape_a", "output_shape_b"):
        diff[col] = diff[col].map(lambda s: shape_text(s) if isinstance(s, tuple) else "")
    st.dataframe(
        diff[["name", "status", "detail_a", "detail_b", "output_shape_a", "output_shape_b",
              "params_a", "params_b", "params_change", "macs_change"]],
        hide_index=True, width="stretch",
        column_config={
            "name": "Layer", "status": "Status", "detail_a": "A", "detail_b": "B",
            "output_shape_a": "Output A", "output_shape_b": "Output B",
            "params_a": st.column_config.NumberColumn("Params A", format="localized"),
            "params_b": st.column_config.NumberColumn("Params B", format="localized"),
            "params_change": st.column_config.NumberColumn("Δ params", format="localized"),
            "macs_change": st.column_config.NumberColumn("Δ MACs", format="localized"),
        },
    )
    if diff.empty:
        st.caption("The two networks are identical layer by layer.")


# --- Installed models --------------------------------------------------------------------------

SHOW = {"variants": "The variants, built fresh", "installed": "Installed models, with their weights"}


def what_to_show() -> str:
    """The variants (always), or the installed models when there are any."""
    if not installed_models():
        return "variants"
    return st.segmented_control("Show", list(SHOW), default="variants", format_func=SHOW.get,
                                key="arch_show") or "variants"


@st.cache_data(show_spinner="Reading the model's layers...", max_entries=16)
def installed_table(spec: str, stamp: str):
    from alexnet_core.analysis.explain import functional
    from alexnet_core.models.anatomy import layer_table

    loaded, _ = loaded_model(spec)
    return layer_table(functional(loaded.model))  # a user's Sequential model with its input layer


def _preprocessing_text(record: dict) -> str:
    p = record.get("preprocessing") if isinstance(record.get("preprocessing"), dict) else {}
    if "resize_to" in p:
        how = "shorter side" if p.get("resize_mode") == "shorter" else "whole image stretched to a square"
        return f"{how} to {p['resize_to']} px, centre crop {p.get('crop', p.get('input_size'))} px"
    return f"resized to {p.get('input_size', '?')} px" if p else "as recorded with the model"


def installed_model_view() -> None:
    """One installed model: where it came from, its figures, its layer table and its real filters."""
    from alexnet_core.models.anatomy import totals

    rows = {row["name"]: row for row in installed_models()}
    name = st.selectbox("Installed model", list(rows), key="arch_installed",
                        format_func=lambda n: installed_label(rows[n]))
    row = rows[name]
    record = row["record"]
    stamp = model_stamp(name)
    with st.spinner("Loading the model..."):
        table = installed_table(name, stamp)
    sums = totals(table)
    figures(table, sums)
    variant = record.get("variant") if record.get("variant") in list_variants() else None
    kind = "ImageNet weights" if record.get("kind") == "pretrained" else "your own model"
    lines = [f"**{plain(record.get('title') or name, 120)}** ({kind}, {format_bytes(row['bytes'])} on disk)."]
    if variant:
        lines.append(f"The network is the `{variant}` variant ({plain(get_arch(variant).title)}) at "
                     f"{int(table['output_shape'].iloc[0][0])} px with {len(record.get('class_names') or []):,} "
                     "classes: pick it under *The variants* for its design and its switches.")
    published = record.get("published") if isinstance(record.get("published"), dict) else {}
    if isinstance(published.get("top1"), float) and isinstance(published.get("top5"), float):
        lines.append(f"Published accuracy: top-1 {published['top1']:.1%}, top-5 {published['top5']:.1%} "
                     f"({plain(published.get('split') or 'ImageNet validation', 100)}).")
    lines.append(f"Preprocessing: {_preprocessing_text(record)}.")
    if isinstance(record.get("file_name"), str):
        lines.append(f"Converted from {plain(record['file_name'], 80)}.")
    st.info("  \n".join(lines), icon=":material/inventory_2:")
    tab_table, tab_filters = st.tabs(["Layer table", "First-layer filters"])
    with tab_table:
        layer_table(table, name)
    with tab_filters:
        figure = filter_figure(name, stamp)
        if isinstance(figure, str):
            st.info(f"**No filters to show.** {plain(figure, 400)}", icon=":material/block:")
            return
        grids, count = figure
        per = count // len(grids)
        if len(grids) > 1:
            st.markdown(f"The model's own **{count} first-layer kernels in {len(grids)} groups of {per}**, as the "
                        "paper's Figure 3 shows them: the kernels learned on the first GPU above those learned "
                        "on the second.")
        else:
            st.markdown(f"The model's own **{count} first-layer kernels**, each scaled to its own range.")
        for g, grid in enumerate(grids, start=1):
            caption = f"GPU {g}: kernels {(g - 1) * per + 1}-{g * per}" if len(grids) > 1 else f"conv1: {count} kernels"
            st.image(grid, caption=caption, width=min(720, grid.shape[1]))
