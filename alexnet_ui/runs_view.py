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

from alexnet_core.analysis.charts import compare_curves
from alexnet_core.store import catalog, layout
from alexnet_core.store.cache import model_fingerprint
from alexnet_ui.feedback import user_errors
from alexnet_ui.loaders import run_dir_of, runs_root
from alexnet_ui.text import format_duration, plain
from alexnet_ui.timeline import epoch_timeline
from alexnet_ui.widgets import state_text

SELECT_NEXT = "runs_select_next"  # run ids to select on the next run of the page
DEPLOY = {"tflite": "TensorFlow Lite", "int8": "TensorFlow Lite, int8 (4x smaller)", "savedmodel": "SavedModel (zip)"}
HIDDEN_SETTINGS = ("environment", "class_names", "class_words")


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


def runs_table(rows: list[dict]) -> list[dict]:
    """The table of runs, multi-row select; returns the selected runs, else the one the URL names."""
    ids = [r["run_id"] for r in rows]
    if SELECT_NEXT in st.session_state:  # after a delete, the runs still selected stay selected
        keep = st.session_state.pop(SELECT_NEXT)
        st.session_state["runs_table"] = {"selection": {"rows": [ids.index(i) for i in keep if i in ids],
                                                        "columns": []}}
    table = pd.DataFrame(rows)
    table["progress"] = [f"{r['epochs_done']}/{r['epochs'] or '?'}" for r in rows]
    table["duration"] = [format_duration(r["duration_s"]) for r in rows]
    table["started"] = [datetime.fromtimestamp(r["started"]) if r["started"] else None for r in rows]
    table["notes"] = [r["damaged"] or (f"link to {r['link']}" if r["link"] else "") for r in rows]
    wanted = st.query_params.get("run")
    if wanted is not None and run_dir_of(wanted) is None:
        st.warning(f"There is no run named {plain(wanted, 80)}.")
    table["label"] = [r["name"] for r in rows]
    table["about"] = [" ".join(r["notes"].split())[:120] for r in rows]
    table["trained_on"] = [catalog.trained_on(r, short=True) for r in rows]
    table["state"] = [state_text(r) for r in rows]  # a queued run with its place: "queued #2"
    columns = ["run_id", *(["label"] if table["label"].any() else []), "state",
               *(["notes"] if table["notes"].any() else []), "variant", "data", "progress", "best_val_accuracy",
               *(["trained_on"] if (table["trained_on"] != "1 device").any() else []), "duration", "started",
               *(["about"] if table["about"].any() else [])]
    event = st.dataframe(
        table[columns],
        hide_index=True, width="stretch", on_select="rerun", selection_mode="multi-row", key="runs_table",
        column_config={
            "run_id": "Run", "label": "Name", "about": "Notes", "variant": "Variant",
            "state": st.column_config.TextColumn("State", help="A queued run shows its place: queued #1 starts next"),
            "progress": "Epochs", "data": st.column_config.TextColumn("Data", width="medium"),
            "best_val_accuracy": st.column_config.ProgressColumn(
                "Best epoch (val.)", format="percent", min_value=0.0, max_value=1.0,
                help="The best validation accuracy of an epoch, logged during training"),
            "duration": "Duration",
            "trained_on": st.column_config.TextColumn(
                "Trained on", help="What trained the run together: one device, several devices (GPUs) of one "
                "machine, or several workers (machines). Select the run for its strategy and replicas"),
            "started": st.column_config.DatetimeColumn("Started", format="YYYY-MM-DD HH:mm"),
            "notes": st.column_config.TextColumn("Problems", help="Damaged files are skipped; the run stays deletable"),
        },
    )
    selected = [rows[i] for i in event.selection.rows] if event and event.selection.rows else []
    if not selected and wanted and run_dir_of(wanted) is not None:
        selected = [r for r in rows if r["run_id"] == wanted]
    return selected


def curves(selected: list[dict]) -> None:
    metrics = {r["run_id"]: layout.read_metrics(Path(r["path"])) for r in selected}
    c1, c2 = st.columns(2)
    c1.markdown("**Validation accuracy**")
    c1.plotly_chart(compare_curves(metrics, "val_accuracy"), width="stretch", key="runs_val_acc")
    c2.markdown("**Validation loss**")
    c2.plotly_chart(compare_curves(metrics, "val_loss"), width="stretch", key="runs_val_loss")


def _flat(config: dict) -> dict:
    out = {}
    for key, value in config.items():
        if key in HIDDEN_SETTINGS:
            continue
        if isinstance(value, dict):
            out.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            out[key] = value
    return out


def settings(selected: list[dict]) -> dict[str, dict]:
    """The selected runs' settings side by side (only those that differ, by default); returns
    {run id: config.json as checked}."""
    configs = {r["run_id"]: layout.read_checked(Path(r["path"]) / layout.CONFIG, layout.CONFIG_SCHEMA)[0]
               for r in selected}
    trained_on = {r["run_id"]: catalog.trained_on(r) or "not recorded" for r in selected}
    table = pd.DataFrame({run_id: {"trained on": trained_on[run_id], **_flat(c)}
                          for run_id, c in configs.items()}).astype(str)
    if len(selected) > 1:
        differs = table.nunique(axis=1) > 1
        only = st.toggle("Only settings that differ", value=True, key="runs_only_diff")
        st.markdown("**Settings**")
        st.dataframe(table[differs] if only else table, width="stretch")
    else:
        with st.expander("Settings", icon=":material/settings:"):
            st.dataframe(table, width="stretch")
    return configs


def summary(r: dict, run_dir: Path) -> None:
    """A run's name, state and message, its notes and problems, and its epochs (time-travel)."""
    st.markdown(f"**{plain(catalog.display_name(r), 160)}**: {plain(state_text(r))}. {plain(r['message'], 600)}")
    if r["notes"]:
        st.caption(plain(r["notes"], 600))
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
        st.download_button("Settings (JSON)", json.dumps(config, indent=2), f"{r['run_id']}-config.json",
                           mime="application/json", icon=":material/settings:", key=f"dl_config_{run_key}")


def label_editor(r: dict, run_dir: Path, where) -> None:
    run_key = r["run_id"]
    with where.popover("Name and notes", icon=":material/edit:", width="stretch"):
        name = st.text_input("Name", r["name"], max_chars=layout.MAX_NAME, key=f"label_name_{run_key}",
                             placeholder="e.g. baseline, lr 0.05")
        notes = st.text_area("Notes", r["notes"], max_chars=layout.MAX_NOTES, key=f"label_notes_{run_key}",
                             placeholder="What you tried and what you saw")
        if st.button("Save", type="primary", key=f"label_save_{run_key}"):
            with user_errors(limit=400, icon=None):
                catalog.write_label(run_dir, name, notes)
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
