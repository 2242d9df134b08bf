import streamlit as st

from alexnet_core.predict.inference import resolve_model_path
from alexnet_core.settings.choices import AUTO_SPLIT
from alexnet_ui import evaluate_view as view
from alexnet_ui.feedback import user_errors
from alexnet_ui.loaders import model_stamp
from alexnet_ui.navigation import loaded_model_or_stop, page_setup, stop_page
from alexnet_ui.timeline import epoch_timeline
from alexnet_ui.widgets import device_banner, pick_model

page_setup("Evaluate", "Which classes does the network confuse, on which images? Click a cell of the matrix to see them.")

c1, c2, c3 = st.columns([2, 2, 1])
with c1:
    spec = pick_model("eval_model")
if spec is None:
    stop_page()
run_dir = resolve_model_path(spec)[1]
data, split, flip = view.data_pickers(c2, c3, run_dir, spec)
if not data:
    st.info("Enter the path of an image folder laid out as PATH/<class>/<image>.")
    stop_page()

loaded, _ = loaded_model_or_stop(spec)
with user_errors(ValueError) as evaluation:
    result = view.run_evaluation(spec, data, None if split == AUTO_SPLIT else split, flip,
                                 view.held_out_share(run_dir, data))
if evaluation.failed:
    stop_page()
view.headline(result, spec, data, flip, run_dir)

view.matrix_and_images(result, loaded)

st.subheader("Per-class metrics")
view.per_class(result)

st.subheader("Most confident mistakes")
view.mistakes(result, loaded)

view.learned_map(result, loaded, spec, key=(spec, model_stamp(spec), data, split, flip))

if run_dir is not None:
    st.subheader("How it came to be, epoch by epoch")
    epoch_timeline(run_dir, "eval_timeline", elsewhere=", not the data picked above")

device_banner()
