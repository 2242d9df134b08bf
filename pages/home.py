import streamlit as st

from alexnet_core.locations import DEMO_RUN
from alexnet_ui import glossary
from alexnet_ui.loaders import device_info
from alexnet_ui.navigation import page_setup
from alexnet_ui.text import cpu_friendly_variants, format_bytes, plain
from alexnet_ui.widgets import device_banner, headline_metric

page_setup("AlexNet Explorer")
st.markdown(
    "See, train and question AlexNet, the network that won ImageNet 2012, in every published "
    "variant. Everything runs on this machine, offline: a trained model and sample images come with the app."
)

headline = st.columns([1, 2], vertical_alignment="center")
words = headline_metric(DEMO_RUN, headline[0], caption=False)
if words:
    headline[1].markdown(f"**The bundled model** (a compact AlexNet trained on CIFAR-10's ten classes of 32x32 "
                         f"photos) scores {plain(words['sentence'])}. Every page quotes "
                         "it by this one figure.")

info = device_info()
cols = st.columns(3)
cols[0].metric("Device", info["kind"], help=glossary.help(info["kind"]) if info["kind"] in ("CPU", "GPU") else None)
cols[1].metric("Name", info["name"])
cols[2].metric("Memory", format_bytes(info["memory_bytes"]))
if info["kind"] == "CPU":
    st.caption(f"No GPU found: everything works on the CPU; the {cpu_friendly_variants()} "
               "variants (the bundled model's) are sized for it.")

st.subheader("A short tour")
TOUR = [
    ("pages/architecture.py", "Architecture", ":material/account_tree:",
     "Every AlexNet variant layer by layer: parameters, compute, receptive fields, a diagram, and "
     "the paper's design choices switched on and off side by side."),
    ("pages/train.py", "Train", ":material/model_training:",
     "Train on CIFAR-10, your own image folders or the bundled sample, and watch the curves live. Runs "
     "survive reloads and restarts; stop and resume them at will."),
    ("pages/evaluate.py", "Evaluate", ":material/grid_on:",
     "Which classes does the model confuse? Click a cell of the confusion matrix to see the images "
     "behind it, and the most confident mistakes."),
    ("pages/classify.py", "Classify", ":material/image_search:",
     "Upload a photo (or try the examples): top-5 predictions, where the network looked (Grad-CAM), "
     "its first-layer filters and the most similar images."),
    ("pages/dataset.py", "Your classes", ":material/add_photo_alternate:",
     "Teach it your own classes: add photos in the browser, fine-tune the bundled model (or an ImageNet "
     "one), then try it live."),
    ("pages/models.py", "Models", ":material/deployed_code:",
     "The real AlexNet trained on ImageNet (1,000 classes) from its published weights, or a Keras model of "
     "your own, opened safely."),
    ("pages/runs.py", "Runs", ":material/folder_open:",
     "Every training run: compare curves and settings, download models and metrics; runs waiting in the queue."),
    ("pages/claims.py", "Question the paper", ":material/science:",
     "Does ReLU really train six times faster? The paper's seven claims as experiments with measured "
     "verdicts; run them again here."),
    ("pages/glossary.py", "Glossary", ":material/menu_book:",
     "MACs, fc7, t-SNE, bf16, top-5: every term the pages use, in one plain-English line, to look up or search."),
]
for i in range(0, len(TOUR), 3):
    row = st.columns(3)
    for col, (page, label, icon, text) in zip(row, TOUR[i:i + 3]):
        with col.container(border=True, height="stretch"):
            st.page_link(page, label=f"**{label}**", icon=icon)
            st.caption(text)

device_banner()
