from pathlib import Path

import streamlit as st

from alexnet_ui import compare_view
from alexnet_ui import runs_view as view
from alexnet_ui.loaders import all_runs, runs_root
from alexnet_ui.navigation import page_setup, stop_page
from alexnet_ui.text import plain
from alexnet_ui.train_form import TrainForm
from alexnet_ui.widgets import device_banner, start_queued

page_setup("Runs", f"Every training run in the runs folder ({plain(runs_root().name)}), plus the bundled demo run. "
           "Find runs by name, tag, state or variant; select rows to compare them.")

start_queued()  # the next queued run, if its place is free (a killed trainer's included)
claims_runs = view.claims_runs_shown()
rows = all_runs(claims=claims_runs)
if not rows:
    st.info("No runs yet. Start one on the Train page.", icon=":material/info:")
    st.page_link("pages/train.py", label="Go to Train", icon=":material/model_training:")
    stop_page()

shown = view.run_filters(rows)
if not shown:
    st.info("No run matches these filters.", icon=":material/filter_alt_off:")
    stop_page()
selected = view.runs_table(shown)
if not selected:
    st.caption("Select one or more runs above to compare their curves and settings, and to see their cards: "
               "downloads, report, name, notes and tags.")
    stop_page()

view.report(selected)
st.subheader("Compare", divider="gray")
compare_view.curves(selected, compare_view.controls())
configs = view.settings(selected)
if len(selected) > 1:
    compare_view.settings_plot(selected, view.flat_settings(selected, configs))

known_tags = sorted({t for r in rows for t in r["tags"]}, key=str.casefold)
for r in selected:
    run_dir = Path(r["path"])
    run_key = r["run_id"]  # unique in the table (a user run shadows a bundled one of the same id)
    with st.container(border=True):
        view.summary(r, run_dir)
        b = st.columns(4)
        view.downloads(r, run_dir, configs[r["run_id"]], b[0])
        if configs[r["run_id"]]:
            if b[1].button("Clone settings", icon=":material/content_copy:", key=f"clone_{run_key}", width="stretch",
                           help="A new run on the Train page, with this run's settings filled in"):
                TrainForm().clone(configs[r["run_id"]], r["run_id"])
                st.switch_page("pages/train.py")
        if not r["read_only"]:
            view.label_editor(r, run_dir, b[2], known_tags)
        view.removal(r, selected, b[3])

device_banner()
