import json
from datetime import datetime
from pathlib import Path

import pandas as pd
import streamlit as st

from alexnet_core.analysis.charts import compare_curves
from alexnet_core.store import catalog, layout
from alexnet_ui.loaders import all_runs, run_dir_of, runs_root
from alexnet_ui.navigation import page_setup
from alexnet_ui.text import format_duration, plain
from alexnet_ui.timeline import epoch_timeline
from alexnet_ui.train_form import TrainForm
from alexnet_ui.widgets import device_banner

page_setup()
st.title("Runs")
st.caption(f"Every training run in the runs folder ({plain(runs_root().name)}), plus the bundled demo run. "
           "Select rows to compare them.")

rows = all_runs()
if not rows:
    st.info("No runs yet. Start one on the Train page.", icon=":material/info:")
    st.page_link("pages/train.py", label="Go to Train", icon=":material/model_training:")
    device_banner()
    st.stop()

ids = [r["run_id"] for r in rows]
# The selection follows runs, not row numbers: after a delete, the runs still selected stay selected.
if "runs_select_next" in st.session_state:
    keep = st.session_state.pop("runs_select_next")
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
columns = ["run_id", *(["label"] if table["label"].any() else []), "state",
           *(["notes"] if table["notes"].any() else []), "variant", "data", "progress", "best_val_accuracy",
           *(["trained_on"] if (table["trained_on"] != "1 device").any() else []), "duration", "started", *(["about"] if table["about"].any() else [])]
event = st.dataframe(
    table[columns],
    hide_index=True, width="stretch", on_select="rerun", selection_mode="multi-row", key="runs_table",
    column_config={
        "run_id": "Run", "label": "Name", "about": "Notes", "state": "State", "variant": "Variant", "progress": "Epochs",
        "data": st.column_config.TextColumn("Data", width="medium"),
        "best_val_accuracy": st.column_config.ProgressColumn(
            "Best epoch (val.)", format="percent", help="The best validation accuracy of an epoch, logged during "
            "training",
                                                             min_value=0.0, max_value=1.0),
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
if not selected:
    st.caption("Select one or more runs above to see their curves, settings, downloads and actions.")
    device_banner()
    st.stop()

curves = {r["run_id"]: layout.read_metrics(Path(r["path"])) for r in selected}
c1, c2 = st.columns(2)
c1.markdown("**Validation accuracy**")
c1.plotly_chart(compare_curves(curves, "val_accuracy"), width="stretch", key="runs_val_acc")
c2.markdown("**Validation loss**")
c2.plotly_chart(compare_curves(curves, "val_loss"), width="stretch", key="runs_val_loss")

configs = {r["run_id"]: layout.read_checked(Path(r["path"]) / layout.CONFIG, layout.CONFIG_SCHEMA)[0] for r in selected}


def flat(config: dict) -> dict:
    out = {}
    for key, value in config.items():
        if key in ("environment", "class_names", "class_words"):
            continue
        if isinstance(value, dict):
            out.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            out[key] = value
    return out


trained_on = {r["run_id"]: catalog.trained_on(r) or "not recorded" for r in selected}
settings = pd.DataFrame({run_id: {"trained on": trained_on[run_id], **flat(c)}
                         for run_id, c in configs.items()}).astype(str)
if len(selected) > 1:
    differs = settings.nunique(axis=1) > 1
    only = st.toggle("Only settings that differ", value=True, key="runs_only_diff")
    st.markdown("**Settings**")
    st.dataframe(settings[differs] if only else settings, width="stretch")
else:
    with st.expander("Settings", icon=":material/settings:"):
        st.dataframe(settings, width="stretch")

def forget(run_id: str) -> None:
    """After `run_id` is gone: the other selected runs stay selected, and the URL forgets it."""
    st.session_state["runs_select_next"] = [r["run_id"] for r in selected if r["run_id"] != run_id]
    if st.query_params.get("run") == run_id:
        st.query_params.pop("run", None)


DEPLOY = {"tflite": "TensorFlow Lite", "int8": "TensorFlow Lite, int8 (4x smaller)", "savedmodel": "SavedModel (zip)"}


@st.cache_data(show_spinner=False, max_entries=6)
def deployable(model_path: str, stamp: float, kind: str) -> tuple[bytes, str, dict]:
    """(file bytes, file name, export record) of a run's model; made in a temporary folder."""
    import shutil
    import tempfile

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
        from alexnet_core.export.export_model import ExportError

        with st.spinner("Exporting and checking it against the model..."):
            try:
                made = (kind, *deployable(str(model_path), model_path.stat().st_mtime, kind))
            except ExportError as exc:
                st.error(plain(exc, 400))
                return
        st.session_state[f"deploy_{run_key}"] = made
        st.rerun()


def label_editor(r: dict, run_dir: Path, run_key: str, where) -> None:
    with where.popover("Name and notes", icon=":material/edit:", width="stretch"):
        name = st.text_input("Name", r["name"], max_chars=layout.MAX_NAME, key=f"label_name_{run_key}",
                             placeholder="e.g. baseline, lr 0.05")
        notes = st.text_area("Notes", r["notes"], max_chars=layout.MAX_NOTES, key=f"label_notes_{run_key}",
                             placeholder="What you tried and what you saw")
        if st.button("Save", type="primary", key=f"label_save_{run_key}"):
            try:
                catalog.write_label(run_dir, name, notes)
            except (layout.RunError, OSError) as exc:
                st.error(plain(exc, 400))
            else:
                st.rerun()


for r in selected:
    run_dir = Path(r["path"])
    run_key = r["run_id"]  # unique in the table (a user run shadows a bundled one of the same id)
    with st.container(border=True):
        st.markdown(f"**{plain(catalog.display_name(r), 160)}**: {plain(r['state'])}. {plain(r['message'], 600)}")
        if r["notes"]:
            st.caption(plain(r["notes"], 600))
        for problem in r["problems"]:
            st.warning(f"Damaged: {plain(problem, 300)}", icon=":material/report:")
        with st.expander("Epoch by epoch: how the model came to be", icon=":material/history:"):
            epoch_timeline(run_dir, f"timeline_{run_key}")
        b = st.columns(4)
        with b[0].popover("Download", icon=":material/download:", width="stretch"):
            metrics_path = layout.safe_file(run_dir, layout.METRICS)
            if metrics_path:
                st.download_button("Metrics (CSV)", metrics_path.read_bytes(), f"{r['run_id']}-metrics.csv",
                                   mime="text/csv", icon=":material/table:", key=f"dl_metrics_{run_key}")
            model_path = layout.safe_file(run_dir, layout.MODEL)
            if model_path and r["has_model"]:
                st.download_button("Model (.keras)", model_path.read_bytes(), f"{r['run_id']}.keras",
                                   icon=":material/model_training:", key=f"dl_model_{run_key}")
                deploy_download(model_path, run_key)
            st.download_button("Settings (JSON)", json.dumps(configs[r["run_id"]], indent=2),
                               f"{r['run_id']}-config.json", mime="application/json",
                               icon=":material/settings:", key=f"dl_config_{run_key}")
        if configs[r["run_id"]]:
            if b[1].button("Clone settings", icon=":material/content_copy:", key=f"clone_{run_key}", width="stretch",
                           help="A new run on the Train page, with this run's settings filled in"):
                TrainForm().clone(configs[r["run_id"]], r["run_id"])
                st.switch_page("pages/train.py")
        if not r["read_only"]:
            label_editor(r, run_dir, run_key, b[2])
        if r["link"]:
            with b[3].popover("Remove link", icon=":material/link_off:", width="stretch"):
                st.markdown(f"**{plain(r['run_id'], 120)}** is a link to a run elsewhere. Remove the link? "
                            "The run it points to is kept.")
                if st.button("Remove the link", type="primary", key=f"delete_{run_key}"):
                    catalog.delete_run(runs_root(), r["run_id"])
                    forget(r["run_id"])
                    st.rerun()
        elif r["read_only"]:
            b[3].caption("Bundled with the app: read-only")
        elif catalog.is_active(r):
            b[3].caption("Training: stop it before deleting")
        else:
            with b[3].popover("Delete", icon=":material/delete:", width="stretch"):
                st.markdown(f"Delete **{plain(r['run_id'], 120)}** and everything in its folder? This cannot be undone.")
                if st.button("Delete for good", type="primary", key=f"delete_{run_key}"):
                    try:
                        catalog.delete_run(runs_root(), r["run_id"])
                    except layout.RunError as exc:
                        st.error(plain(exc, 400))
                    else:
                        forget(r["run_id"])
                        st.rerun()

device_banner()
