import streamlit as st

from alexnet_core.store import catalog, layout
from alexnet_ui.loaders import all_runs
from alexnet_ui.navigation import page_setup
from alexnet_ui.text import plain
from alexnet_ui.train_form import TrainForm
from alexnet_ui.train_view import SHOW_NEXT, live_view, queue_panel, start_panel
from alexnet_ui.widgets import device_banner, start_queued, state_text

page_setup()
st.title("Train")
st.caption("Training runs in a separate process: reload the page, close the tab or restart the app, "
           "and nothing is lost.")

start_queued()  # the next queued run, if its place is free (a killed trainer's included)
rows = all_runs()
by_id = {r["run_id"]: r for r in rows}
ids = list(by_id)
active = [r["run_id"] for r in rows if catalog.is_active(r)]
wanted = st.query_params.get("run")
if wanted and wanted not in ids:
    st.warning(f"There is no run named {plain(wanted, 80)}; showing the latest instead.")
    wanted = None
if ids:
    default = wanted or (active[0] if active else ids[0])
    if st.session_state.get(SHOW_NEXT) in ids:  # a run just started
        st.session_state["train_run"] = st.session_state.pop(SHOW_NEXT)
    if st.session_state.get("train_run") not in ids:
        st.session_state["train_run"] = default
    st.subheader("Run")
    run_id = st.selectbox("Run", ids, key="train_run", label_visibility="collapsed",
                          format_func=lambda r: f"{catalog.display_name(by_id[r])}: {by_id[r]['variant']}, "
                                                f"{state_text(by_id[r])}")
    if st.query_params.get("run") != run_id:
        st.query_params["run"] = run_id
    polling = catalog.is_active(by_id[run_id]) or by_id[run_id]["state"] == layout.QUEUED  # queued: until it starts
    st.session_state["train_was_active"] = polling
    st.fragment(live_view, run_every=2.0 if polling else None)(run_id)

queue_panel()

with st.expander("Start a new run", expanded=st.session_state.get(TrainForm.OPEN, not active),
                 icon=":material/add_circle:"):
    new_run = TrainForm().draw()
    if new_run is not None:
        start_panel(new_run)

device_banner()
