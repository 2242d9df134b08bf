import streamlit as st

from alexnet_core.analysis import claims
from alexnet_ui import claims_view as view
from alexnet_ui.loaders import runs_root
from alexnet_ui.navigation import page_setup
from alexnet_ui.widgets import device_banner

page_setup("Question the paper", "The 2012 paper's claims about its design choices, each an experiment: runs that "
           "differ in one switch, with the same data, schedule and seeds. The verdicts are measured, never "
           "rounded into agreement. Pick a claim, replay its curves, and run it again here.")

verdicts = view.verdicts()
left, right = st.columns([1, 2.4], gap="large")
with left:
    name = view.claim_picker(verdicts)
claim, result = claims.CLAIMS[name], verdicts[name]
found = claims.matching_runs(name, runs_root())
frame = claims.curves(name, runs_root())
used = [r for arm in found.values() for r in arm]
with right:
    view.quote(claim)
    view.figures(claim, result, used)
view.verdict(claim, result)
view.source(result, used)
view.curves(claim, result, frame)
view.runs(claim, found, frame)
view.run_it_here(claim)

device_banner()
