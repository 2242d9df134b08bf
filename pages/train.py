import streamlit as st

from alexnet_core.store import catalog
from alexnet_ui.loaders import all_runs
from alexnet_ui.navigation import page_setup
from alexnet_ui.text import plain
from alexnet_ui.train_form import TrainForm
from alexnet_ui.train_view import POLLING, polls, queue_panel, run_view, start_panel
from alexnet_ui.widgets import device_banner, start_queued

page_setup()
st.title("Train")
st.caption("Training runs in a separate process: reload the page, close the tab or restart the app, "
           "and nothing is lost.")

start_queued()  # the next queued run, if its place is free (a killed trainer's included)
rows = all_runs()
ids = [r["run_id"] for r in rows]
active = [r["run_id"] for r in rows if catalog.is_active(r)]
wanted = st.query_params.get("run")
if wanted and wanted not in ids:
    st.warning(f"There is no run named {plain(wanted, 80)}; showing the latest instead.")
    wanted = None
if ids:
    polling = polls(rows)  # while any run trains or waits: its state changes in the picker too
    st.session_state[POLLING] = polling
    st.fragment(run_view, run_every=2.0 if polling else None)(wanted)

queue_panel()

with st.expander("Start a new run", expanded=st.session_state.get(TrainForm.OPEN, not active),
                 icon=":material/add_circle:"):
    new_run = TrainForm().draw()
    if new_run is not None:
        start_panel(new_run)

device_banner()
