import streamlit as st

from alexnet_core.inputs.images import UPLOAD_TYPES
from alexnet_ui import classify_view as view
from alexnet_ui import glossary
from alexnet_ui.loaders import model_facts, model_stamp
from alexnet_ui.navigation import loaded_model_or_stop, page_setup, stop_page
from alexnet_ui.widgets import device_banner, heat_legend, pick_model

page_setup("Classify", "Upload images and see what the network predicts, and where it looked.")

top = st.columns([2, 1])
with top[0]:
    spec = pick_model("classify_model")
if spec is None:
    stop_page()
k = top[1].slider("Top-k", 1, 10, 5, key="classify_k", help="How many of the model's best answers to show. "
                  + glossary.help("top-5"))
loaded, _ = loaded_model_or_stop(spec)
view.what_the_model_can_say(loaded, model_facts(spec))
framing, sure_probability, sure_margin = view.judging_settings()

uploads = st.file_uploader("Images (JPEG, PNG, WebP, BMP, GIF, TIFF)", type=UPLOAD_TYPES,
                           accept_multiple_files=True, key="classify_uploads")
c1, c2 = st.columns(2)
use_examples = c1.toggle("Try the examples", value=True, key="classify_examples", disabled=bool(uploads),
                         help=f"{len(view.examples())} images from the CIFAR-10 validation split; hidden while "
                              "you have uploads")
photo = None
if c2.toggle("Take a photo", key="classify_camera_on"):
    photo = st.camera_input("Camera", key="classify_camera")

items = view.images_to_classify(uploads, photo, use_examples)
if not items:
    st.info("Upload images above, take a photo, or switch on the examples.", icon=":material/upload:")
    stop_page()

stamp = model_stamp(spec)
results = view.classified(spec, stamp, items, framing)
items = None  # the uploaded bytes are not needed past this point
if not results:
    stop_page()
for index, result in enumerate(results):
    view.result_card(index, result, loaded, spec, stamp, k, (sure_probability, sure_margin), framing)
if view.has_heat_maps(loaded):  # no Grad-CAM without a convolution: no colour scale either
    heat_legend(st.columns([3, 1])[1])

view.explain_further(loaded, results, spec, stamp)

device_banner()
