"""The Runs page's parts: the table of runs (its selection follows runs, not row numbers), the
compared curves and settings, and each selected run's card: its summary, downloads (with
deployable files), name and notes, and removal."""

from __future__ import annotations

# Imports inside functions are deliberate: TensorFlow and Keras, and the modules that reach them,
# load on first use, so importing this module (the app's pages, the command line) stays light.
import json
import shutil
import tempfile
from datetime import datetime
from pathlib import Path

import pandas as pd
import streamlit as st

from alexnet_core.store import catalog, layout
from alexnet_core.store.cache import model_fingerprint
from alexnet_ui import compare_view, glossary
from alexnet_ui.feedback import user_errors
from alexnet_ui.loaders import run_dir_of, runs_root
from alexnet_ui.report_view import report_button
from alexnet_ui.text import format_duration, plain
from alexnet_ui.timeline import epoch_timeline
from alexnet_ui.widgets import headline_metric, state_text

SELECT_NEXT = "runs_select_next"  # run ids to select on the next run of the page
TABLE_IDS = "runs_table_ids"  # the run ids of the table's rows as last drawn (its selection is by row)
HIDDEN_SELECTED = "runs_hidden_selected"  # selected runs the filters hide now, selected again once shown
DEPLOY = {"tflite": "TensorFlow Lite", "int8": "TensorFlow Lite, int8 (4x smaller)", "savedmodel": "SavedModel (zip)"}
HIDDEN_SETTINGS = ("environment", "class_names", "class_words")


# The settings tables' first column names the setting in full ("switches.activation"), never cut short.
SETTING_NAMES = {"_index": st.column_config.TextColumn("Setting", width="medium")}

def claims_runs_shown() -> bool:
    """The toggle that adds the paper's claims' bundled runs to the table (on by itself when the URL
    names one of them: a link from the Question the paper page)."""
    bundled = catalog.claims_runs()
    if not bundled:
        return False
    if st.query_params.get("run") in {p.name for p in bundled}:
        st.session_state["runs_claims"] = True
    return st.toggle(f"Show the {len(bundled)} bundled runs of the paper's claims", key="runs_claims",
                     help="The runs the Question the paper page measured its bundled verdicts from (read-only)")


def run_filters(rows: list[dict]) -> list[dict]:
    """Search, tag, state and variant filters over the runs; returns the runs that pass."""
    tags = sorted({t for r in rows for t in r["tags"]}, key=str.casefold)
    c = st.columns([2.2, 1.4, 1.2, 1.2])
    text = c[0].text_input("Search", key="runs_search", placeholder="Name, notes, tag, data, run id...",
                           help="Every word must appear somewhere in a run's id, name, notes, tags, variant or data")
    picked_tags = c[1].multiselect("Tags", tags, key="runs_tags", placeholder="Any tag" if tags else "No tags yet",
                                   disabled=not tags, help="Runs with any of these tags. Tag a run on its card "
                                   "below (Name, notes and tags)")
    states = c[2].multiselect("State", sorted({r["state"] for r in rows}), key="runs_states", placeholder="Any state")
    variants = c[3].multiselect("Variant", sorted({str(r["variant"]) for r in rows if r["variant"]}),
                                key="runs_variants", placeholder="Any variant", help=glossary.help("variant"))
    shown = catalog.filter_runs(rows, text, picked_tags, states, variants)
    if len(shown) < len(rows):
        st.caption(f"{len(shown)} of {len(rows)} runs match the filters.")
    return shown


def accuracy_cells(r: dict) -> tuple[float | None, str]:
    """The table's accuracy of a run, in percent, and what it is: the model's headline figure where the
    run has one (catalog.headline_words), else the best epoch's validation accuracy during training."""
    record = catalog.headline_accuracy(r["path"]) if r.get("headline") else None
    if record:
        return 100 * record["accuracy"], "headline"
    if r["best_val_accuracy"] is not None:
        return 100 * r["best_val_accuracy"], "best epoch"
    return None, ""


# Column widths in pixels: the table's columns all fit the page at 1440 px with the sidebar open
# (about 940 px for the columns); the optional ones (Name, Trained on, Tags) take their room
# from the widest text columns, none narrower than MIN_WIDTH.
TABLE_ROOM = 935
MIN_WIDTH = 64
WIDTHS = {"run_id": 160, "label": 110, "state": 80, "variant": 104, "data": 130, "tags": 100,
          "progress": 62, "accuracy": 74, "measured": 92, "trained_on": 82, "duration": 78, "started": 132}
FLEXIBLE = ("run_id", "label", "data", "tags")


def column_widths(columns: list[str]) -> dict[str, int]:
    """WIDTHS of `columns`, the flexible ones narrowed in proportion (to MIN_WIDTH at least) so that
    together they fit TABLE_ROOM, and Started shown as a date alone when even that is not enough."""
    widths = {c: WIDTHS[c] for c in columns}
    flexible = [c for c in columns if c in FLEXIBLE]
    over = sum(widths.values()) - TABLE_ROOM
    room = sum(widths[c] - MIN_WIDTH for c in flexible)
    if over > room and "started" in widths:
        widths["started"] = 96  # the date alone
        over -= WIDTHS["started"] - 96
    if over > 0 and room > 0:
        share = min(1.0, over / room)
        for c in flexible:
            widths[c] -= int(round(share * (widths[c] - MIN_WIDTH)))
    return widths


def runs_table(rows: list[dict]) -> list[dict]:
    """The table of runs, multi-row select; returns the selected runs, else the one the URL names.
    The selection follows runs, not row numbers: after a filter or a delete the same runs are selected,
    and a selected run that a filter hides is selected again when the filter lets it through."""
    ids = [r["run_id"] for r in rows]
    shown_before = st.session_state.get(TABLE_IDS)
    hidden = [i for i in st.session_state.get(HIDDEN_SELECTED, []) if i not in (shown_before or [])]
    if SELECT_NEXT in st.session_state:  # after a delete, the runs still selected stay selected
        keep = st.session_state.pop(SELECT_NEXT) + hidden
    elif shown_before is not None and shown_before != ids and "runs_table" in st.session_state:
        picked = st.session_state["runs_table"]["selection"]["rows"]  # rows of the table as it was
        keep = [shown_before[i] for i in picked if i < len(shown_before)] + hidden
    else:
        keep = None
    if keep is not None:
        st.session_state["runs_table"] = {"selection": {"rows": [ids.index(i) for i in keep if i in ids],
                                                        "columns": []}}
        hidden = [i for i in keep if i not in ids]  # selected, and hidden by the filters: selected again when shown
    st.session_state[TABLE_IDS] = ids
    st.session_state[HIDDEN_SELECTED] = hidden
    table = pd.DataFrame(rows)
    table["progress"] = [f"{r['epochs_done']}/{r['epochs'] or '?'}" for r in rows]
    table["duration"] = [format_duration(r["duration_s"]) if r["duration_s"] else "" for r in rows]
    table["started"] = [datetime.fromtimestamp(r["started"]) if r["started"] else None for r in rows]
    wanted = st.query_params.get("run")
    if wanted is not None and run_dir_of(wanted) is None:
        st.warning(f"There is no run named {plain(wanted, 80)}.")
    table["label"] = [r["name"] for r in rows]
    table["notes"] = [r["damaged"] or (f"link to {r['link']}" if r["link"] else "") for r in rows]  # said below
    cells = [accuracy_cells(r) for r in rows]
    table["accuracy"] = [c[0] for c in cells]
    table["measured"] = [c[1] for c in cells]
    table["tags"] = [list(r["tags"]) for r in rows]
    table["trained_on"] = [catalog.trained_on(r, short=True) for r in rows]
    table["state"] = [state_text(r) for r in rows]  # a queued run with its place: "queued #2"
    columns = ["run_id", *(["label"] if table["label"].any() else []), "state", "variant", "data", "progress", "accuracy", "measured",
               *(["trained_on"] if (~table["trained_on"].isin(["1 device", ""])).any() else []), "duration", "started",
               *(["tags"] if any(r["tags"] for r in rows) else [])]
    widths = column_widths(columns)
    event = st.dataframe(
        table[[*columns, "notes"]], column_order=columns,
        hide_index=True, width="stretch", on_select="rerun", selection_mode="multi-row", key="runs_table",
        placeholder="",
        column_config={
            "run_id": st.column_config.TextColumn("Run", width=widths["run_id"]),
            "label": st.column_config.TextColumn("Name", width=widths.get("label")),
            "variant": st.column_config.TextColumn("Variant", width=widths["variant"], help=glossary.help("variant")),
            "state": st.column_config.TextColumn("State", width=widths["state"],
                                                 help="A queued run shows its place: queued #1 starts next"),
            "progress": st.column_config.TextColumn("Epochs", width=widths["progress"], help=glossary.help("epoch")),
            "data": st.column_config.TextColumn("Data", width=widths["data"]),
            "accuracy": st.column_config.NumberColumn(
                "Accuracy", format="%.1f%%", width=widths["accuracy"],
                help="The model's headline figure where it has one (see 'Measured as'), else the best epoch's "
                     "validation accuracy during training. Differences between runs are percentage points."),
            "measured": st.column_config.TextColumn(
                "Measured as", width=widths["measured"],
                help="headline: " + glossary.help("headline accuracy") + " The run's card says what it was "
                     "measured on. best epoch: the best validation accuracy of an epoch, measured during training. "
                     + glossary.help("in-training validation")),
            "tags": st.column_config.ListColumn("Tags", width=widths.get("tags"),
                                                help="Short words you gave the run; filter on them above"),
            "duration": st.column_config.TextColumn("Duration", width=widths["duration"],
                                                    help="Training time, across resumes"),
            "trained_on": st.column_config.TextColumn(
                "Trained on", width=widths.get("trained_on"), help="What trained the run together: one device, "
                "several devices (GPUs) of one machine, or several workers (machines). Select the run for its "
                "strategy and replicas"),
            "started": st.column_config.DatetimeColumn(
                "Started", format="YYYY-MM-DD HH:mm" if widths["started"] == WIDTHS["started"] else "YYYY-MM-DD",
                width=widths["started"]),
        },
    )
    damaged = [r["run_id"] for r in rows if r["damaged"]]
    links = [r for r in rows if r["link"]]
    if damaged:
        st.caption(f":material/report: Damaged files in {', '.join(plain(i, 80) for i in damaged[:8])}"
                   f"{' and more' if len(damaged) > 8 else ''}: select a run to see what is wrong. Damaged files are "
                   "skipped, and the run stays deletable.")
    if links:
        st.caption(":material/link: Links to runs elsewhere: " + ", ".join(
            f"{plain(r['run_id'], 80)} (to {plain(r['link'], 160)})" for r in links[:8]))
    selected = [rows[i] for i in event.selection.rows if i < len(rows)] if event and event.selection.rows else []
    if hidden and selected:
        st.caption(f"{len(hidden)} more selected run{'s are' if len(hidden) > 1 else ' is'} hidden by the filters, "
                   "left out below.")
    if not selected and wanted and run_dir_of(wanted) is not None:
        selected = [r for r in rows if r["run_id"] == wanted]
    return selected


def settings(selected: list[dict]) -> dict[str, dict]:
    """The selected runs' settings side by side (only those that differ, by default), the data in
    words; returns {run id: config.json as checked}."""
    configs = {r["run_id"]: layout.read_checked(Path(r["path"]) / layout.CONFIG, layout.CONFIG_SCHEMA)[0]
               for r in selected}
    flat = {r["run_id"]: {"trained on": catalog.trained_on(r) or "not recorded",
                          **compare_view.flat_settings(configs[r["run_id"]], r, HIDDEN_SETTINGS)} for r in selected}
    table = pd.DataFrame(flat).map(compare_view.setting_text)  # a setting one run lacks reads '—', not nan
    table.columns = [catalog.display_name(r) for r in selected]
    if len(selected) > 1:
        differs = table.nunique(axis=1) > 1
        st.markdown("**Settings**")
        only = st.toggle("Only settings that differ", value=True, key="runs_only_diff")
        st.dataframe(table[differs] if only else table, width="stretch", column_config=SETTING_NAMES)
    else:
        with st.expander("Settings", icon=":material/settings:"):
            st.dataframe(table, width="stretch", column_config=SETTING_NAMES)
    return configs


def flat_settings(selected: list[dict], configs: dict[str, dict]) -> dict[str, dict]:
    """{run id: its settings, one level, as the settings table lists them} of the selected runs."""
    return {r["run_id"]: compare_view.flat_settings(configs[r["run_id"]], r, HIDDEN_SETTINGS) for r in selected}


def report(selected: list[dict]) -> None:
    """The report to hand over about the selected runs (one HTML file; report_view builds it)."""
    c = st.columns([3, 1.3])
    n = len(selected)
    c[0].caption(f"{n} run{'s' if n > 1 else ''} selected: "
                 + ", ".join(plain(catalog.display_name(r), 80) for r in selected[:6])
                 + (f" and {n - 6} more" if n > 6 else "") + ". The report puts "
                 + ("them" if n > 1 else "it") + " in one file to hand over.")
    with c[1]:
        report_button([r["path"] for r in selected], key="runs")


def summary(r: dict, run_dir: Path) -> None:
    """A run's name, state and message, its notes and problems, and its epochs (time-travel)."""
    st.markdown(f"**{plain(catalog.display_name(r), 160)}**: {plain(state_text(r))}. {plain(r['message'], 600)}")
    st.caption(f"{plain(r['variant'] or 'variant not recorded')} on {plain(r['data'], 200)}"
               + (f". Tags: {plain(', '.join(r['tags']), 300)}" if r["tags"] else ""))
    if r["notes"]:
        st.caption(plain(r["notes"], 600))
    if r["headline"]:
        headline_metric(run_dir)
    for problem in r["problems"]:
        st.warning(f"Damaged: {plain(problem, 300)}", icon=":material/report:")
    with st.expander("Epoch by epoch: how the model came to be", icon=":material/history:"):
        epoch_timeline(run_dir, f"timeline_{r['run_id']}")


@st.cache_data(show_spinner=False, max_entries=6)
def deployable(model_path: str, stamp: str, kind: str) -> tuple[bytes, str, dict]:
    """(file bytes, file name, export record) of a run's model; made in a temporary folder."""

    from alexnet_core.export.export_model import export_model

    run_dir = Path(model_path).parent
    with tempfile.TemporaryDirectory() as tmp:
        fmt = "savedmodel" if kind == "savedmodel" else "tflite"
        dest = Path(tmp) / (f"{run_dir.name}-savedmodel" if fmt == "savedmodel" else
                            f"{run_dir.name}{'-int8' if kind == 'int8' else ''}.tflite")
        record = export_model(str(run_dir), fmt, dest, int8=kind == "int8")
        if fmt == "savedmodel":
            archive = shutil.make_archive(str(dest), "zip", root_dir=dest)
            return Path(archive).read_bytes(), Path(archive).name, record
        return dest.read_bytes(), dest.name, record


def deploy_download(model_path: Path, run_key: str) -> None:
    """Pick a deployable format, prepare it (a few seconds, checked against the model), download it."""

    kind = st.selectbox("Deployable file", list(DEPLOY), format_func=DEPLOY.get, key=f"deploy_kind_{run_key}")
    made = st.session_state.get(f"deploy_{run_key}")
    if made and made[0] == kind:
        data, name, record = made[1:]
        st.download_button(f"{DEPLOY[kind]} ({len(data) / 2**20:.1f} MiB)", data, name,
                           icon=":material/deployed_code:", key=f"dl_deploy_{run_key}")
        parity = record["parity"]
        names = record["class_names"]
        shown = ", ".join(names[:12]) + (f" and {len(names) - 12} more" if len(names) > 12 else "")
        st.caption(f"Checked: the same top class as the model on {parity['top1_agreement']:.1%} of "
                   f"{parity['images']} sample images. The file holds the network only: its outputs are, in "
                   f"order, {plain(shown, 400)}; it takes {record['preprocessing']['input_size']} px images "
                   "standardised as the app does.")
    elif st.button("Prepare", icon=":material/build:", key=f"deploy_go_{run_key}"):
        with st.spinner("Exporting and checking it against the model..."), user_errors(limit=400, icon=None) as outcome:
            made = (kind, *deployable(str(model_path), model_fingerprint(model_path), kind))
        if outcome.failed:
            return
        st.session_state[f"deploy_{run_key}"] = made
        st.rerun()


def downloads(r: dict, run_dir: Path, config: dict, where) -> None:
    """The Download popover: metrics, the model (and files made from it to deploy), settings."""
    run_key = r["run_id"]
    with where.popover("Download", icon=":material/download:", width="stretch"):
        metrics_path = layout.safe_file(run_dir, layout.METRICS)
        if metrics_path:
            st.download_button("Metrics (CSV)", metrics_path.read_bytes(), f"{r['run_id']}-metrics.csv",
                               mime="text/csv", icon=":material/table:", key=f"dl_metrics_{run_key}")
        model_path = layout.safe_file(run_dir, layout.MODEL)
        if model_path and r["has_model"]:
            st.download_button("Model (.keras)", model_path.read_bytes(), f"{r['run_id']}.keras",
                               icon=":material/model_training:", key=f"dl_model_{run_key}")
            deploy_download(model_path, run_key)
        shared = catalog.shareable_config(config, bool(r["read_only"]))
        st.download_button("Settings (JSON)", json.dumps(shared, indent=2), f"{r['run_id']}-config.json",
                           mime="application/json", icon=":material/settings:", key=f"dl_config_{run_key}")


def label_editor(r: dict, run_dir: Path, where, known_tags: list[str]) -> None:
    """The run's name, notes and tags, saved together into its label.json (atomically)."""
    run_key = r["run_id"]
    with where.popover("Name, notes and tags", icon=":material/edit:", width="stretch"):
        name = st.text_input("Name", r["name"], max_chars=layout.MAX_NAME, key=f"label_name_{run_key}",
                             placeholder="e.g. baseline, lr 0.05")
        notes = st.text_area("Notes", r["notes"], max_chars=layout.MAX_NOTES, key=f"label_notes_{run_key}",
                             placeholder="What you tried and what you saw")
        options = sorted({*known_tags, *r["tags"]}, key=str.casefold)
        tags = st.multiselect("Tags", options, default=r["tags"], key=f"label_tags_{run_key}",
                              accept_new_options=True, max_selections=catalog.MAX_TAGS,
                              placeholder="Pick or type a new tag", help=f"Short words to find and filter runs by "
                              f"(e.g. baseline, lr-sweep); up to {catalog.MAX_TAGS}, {catalog.MAX_TAG} characters each")
        if st.button("Save", type="primary", key=f"label_save_{run_key}"):
            with user_errors(limit=400, icon=None):
                catalog.write_label(run_dir, name, notes, tags)
                st.rerun()


def _remove(r: dict, selected: list[dict]) -> None:
    """Delete the run (or the link), keep the other selected runs selected, and forget it in the URL."""
    with user_errors(limit=400, icon=None):
        catalog.delete_run(runs_root(), r["run_id"])
        st.session_state[SELECT_NEXT] = [s["run_id"] for s in selected if s["run_id"] != r["run_id"]]
        if st.query_params.get("run") == r["run_id"]:
            st.query_params.pop("run", None)
        st.rerun()


def removal(r: dict, selected: list[dict], where) -> None:
    """Remove a link, delete a run, or say why this run cannot be deleted."""
    if r["link"]:
        with where.popover("Remove link", icon=":material/link_off:", width="stretch"):
            st.markdown(f"**{plain(r['run_id'], 120)}** is a link to a run elsewhere. Remove the link? "
                        "The run it points to is kept.")
            if st.button("Remove the link", type="primary", key=f"delete_{r['run_id']}"):
                _remove(r, selected)
    elif r["read_only"]:
        where.caption("Bundled with the app: read-only")
    elif catalog.is_active(r):
        where.caption("Training: stop it before deleting")
    elif r["state"] == layout.QUEUED:
        where.caption("In the queue: cancel it on the Train page before deleting")
    else:
        with where.popover("Delete", icon=":material/delete:", width="stretch"):
            st.markdown(f"Delete **{plain(r['run_id'], 120)}** and everything in its folder? This cannot be undone.")
            if st.button("Delete for good", type="primary", key=f"delete_{r['run_id']}"):
                _remove(r, selected)
