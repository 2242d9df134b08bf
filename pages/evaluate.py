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
data, split, flip = view.data_pickers(c2, c3)
if not data:
    st.info("Enter the path of an image folder laid out as PATH/<class>/<image>.")
    stop_page()

loaded, _ = loaded_model_or_stop(spec)
with user_errors(ValueError) as evaluation:
    result = view.run_evaluation(spec, data, None if split == AUTO_SPLIT else split, flip)
if evaluation.failed:
    stop_page()
view.headline(result, spec, data, flip)

cell = view.confusion_matrix(result)
st.subheader("Most confused pairs")
view.confused_pairs(result)
if cell:
    view.cell_images(result, loaded, cell)
else:
    st.info("Click a cell of the matrix to see the images behind it, most confident first.",
            icon=":material/touch_app:")

st.subheader("Per-class metrics")
view.per_class(result)

st.subheader("Most confident mistakes")
view.mistakes(result, loaded)

st.subheader("A map of what the network learned")
st.caption("Each point is one image, placed by the network's own view of it: its fc7 features (the paper's "
           "figure 4), reduced with PCA to 50 dimensions and laid out in 2-D with t-SNE. Images the network "
           "finds alike sit together; a class it has learned forms its own island. Colour: the true class; "
           "a cross: a mistake. Hover for the image, click a point for its top 5 and what the network looked at.")
view.learned_map(result, loaded, spec, key=(spec, model_stamp(spec), data, split, flip))

run_dir = resolve_model_path(spec)[1]
if run_dir is not None:
    st.subheader("How it came to be, epoch by epoch")
    epoch_timeline(run_dir, "eval_timeline", elsewhere=", not the data picked above")

device_banner()
