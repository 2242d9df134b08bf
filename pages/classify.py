from pathlib import Path

import numpy as np
import streamlit as st

from alexnet_core.charts import topk_bars
from alexnet_core.data import ASSETS, DataError, load_source
from alexnet_core.explain import activations, conv1_filters, embeddings, feature_layers, gradcam, nearest, overlay
from alexnet_core.inference import UPLOAD_TYPES, ImageDecodeError, decode_image, read_image, top_k
from pages.common import device_banner, loaded_model, model_stamp, page_setup, pick_model

page_setup()
st.title("Classify")
st.caption("Upload images and see what the network predicts, and where it looked.")

EXAMPLES = sorted((ASSETS / "examples").glob("*.jpg"))
top = st.columns([2, 1])
with top[0]:
    spec = pick_model("classify_model")
if spec is None:
    device_banner()
    st.stop()
k = top[1].slider("Top-k", 1, 10, 5, key="classify_k")
loaded, predictor = loaded_model(spec)

uploads = st.file_uploader("Images (JPEG, PNG, WebP, BMP, GIF, TIFF)", type=UPLOAD_TYPES,
                           accept_multiple_files=True, key="classify_uploads")
c1, c2 = st.columns(2)
use_examples = c1.toggle("Try the examples", value=True, key="classify_examples", disabled=bool(uploads),
                         help=f"{len(EXAMPLES)} images from the CIFAR-10 validation split; hidden while "
                              "you have uploads")
if c2.toggle("Take a photo", key="classify_camera_on"):
    photo = st.camera_input("Camera", key="classify_camera")
else:
    photo = None

items = [(f.name, f.getvalue()) for f in uploads or []]
if photo is not None:
    items.append(("camera photo", photo.getvalue()))
if use_examples and not items:
    items += [(p.name, p.read_bytes()) for p in EXAMPLES]
if not items:
    st.info("Upload images above, take a photo, or switch on the examples.", icon=":material/upload:")
    device_banner()
    st.stop()

decoded, problems = [], []
for name, data in items:
    try:
        decoded.append((name, decode_image(data, name)))
    except ImageDecodeError as exc:
        problems.append(str(exc))
for problem in problems:
    st.error(problem, icon=":material/broken_image:")
if not decoded:
    device_banner()
    st.stop()

probs = predictor.probabilities([image for _, image in decoded])
classes = loaded.class_names
for (name, image), p in zip(decoded, probs):
    with st.container(border=True):
        order = np.argsort(-p)
        cols = st.columns([1, 2, 1])
        cols[0].image(image, caption=f"{name} ({image.shape[1]}×{image.shape[0]})", width="stretch")
        predictions = top_k(p, classes, k)
        cols[1].markdown(f"**{predictions[0]['label']}** ({predictions[0]['probability']:.1%})")
        cols[1].plotly_chart(topk_bars(predictions, height=40 + 28 * len(predictions)), width="stretch",
                             key=f"classify_bars_{name}", config={"displayModeBar": False})
        target = cols[2].selectbox("Grad-CAM for", [classes[i] for i in order], key=f"classify_cam_{name}")
        heat, _ = gradcam(loaded.model, loaded.preprocess(image), classes.index(target))
        cols[2].image(overlay(image, heat), caption=f"where it looked for '{target}'", width="stretch")

st.subheader("Explain further")
tab_filters, tab_maps, tab_neighbours = st.tabs(["conv1 filters", "Activation maps", "Nearest neighbours (fc7)"])
with tab_filters:
    st.image(conv1_filters(loaded.model), caption="The first layer's kernels (the paper's figure 3)", width=420)
names = [n for n, _ in decoded]
with tab_maps:
    a, b = st.columns(2)
    which = a.selectbox("Image", names, key="classify_map_image")
    layers = feature_layers(loaded.model)
    layer = b.selectbox("Layer", layers, key="classify_map_layer")
    image = dict(decoded)[which]
    maps = activations(loaded.model, loaded.preprocess(image), layer, limit=32)
    cols = st.columns(8)
    for i, fmap in enumerate(maps):
        cols[i % 8].image((fmap * 255).astype(np.uint8), caption=f"{layer}:{i}", width="stretch")


@st.cache_data(show_spinner="Computing fc7 features of the sample...", max_entries=4)
def sample_bank(spec: str, stamp: float):
    data = load_source("sample")
    paths = data.val.paths
    images = np.stack([read_image(p) for p in paths])
    model, _ = loaded_model(spec)
    feats = embeddings(model.model, model.preprocess(images))
    return feats, paths


with tab_neighbours:
    which = st.selectbox("Image", names, key="classify_nn_image")
    try:
        bank, paths = sample_bank(spec, model_stamp(spec))
    except (DataError, ImageDecodeError) as exc:
        st.error(str(exc))
    else:
        image = dict(decoded)[which]
        query = embeddings(loaded.model, loaded.preprocess(image[None]))[0]
        order, sims = nearest(query, bank, k=8)
        st.caption("The sample's validation images whose fc7 features are closest to this one "
                   "(the paper's figure 4).")
        cols = st.columns(8)
        for col, i, s in zip(cols, order, sims):
            col.image(read_image(paths[i]), caption=f"{Path(paths[i]).parent.name} ({s:.2f})", width="stretch")

device_banner()
