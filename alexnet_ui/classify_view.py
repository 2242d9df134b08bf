"""The Classify page's parts: what the model can say, how sure counts as sure, the images to
classify (uploads, a photo, the examples), one card per classified image, and "Explain further"
(conv1 filters, activation maps, nearest neighbours in fc7)."""

from __future__ import annotations

# Imports inside functions are deliberate: TensorFlow and Keras, and the modules that reach them,
# load on first use, so importing this module (the app's pages, the command line) stays light.
import hashlib
from pathlib import Path

import numpy as np
import streamlit as st

from alexnet_core import locations
from alexnet_core.analysis.charts import topk_bars
from alexnet_core.inputs import images as image_files
from alexnet_core.inputs.images import ImageDecodeError
from alexnet_core.predict.inference import DEFAULT_FRAMING, FRAMINGS, SURE_MARGIN, SURE_PROBABILITY, top_k
from alexnet_core.settings.choices import framing_name
from alexnet_ui import glossary
from alexnet_ui.feedback import user_errors
from alexnet_ui.images import enlarged, fit_for_display, thumbnail
from alexnet_ui.loaders import image_from_disk, image_problem, loaded_model
from alexnet_ui.text import plain
from alexnet_ui.widgets import damaged_note

EXPLAIN = {"filters": "conv1 filters", "maps": "Activation maps", "neighbours": "Nearest neighbours (fc7)"}
# The images fc7 neighbours are looked for among, each named on the page.
GALLERIES = {"sample": "The sample (1,000 images)", "examples": "The example photos", "batch": "The images above"}
GALLERY_TEXT = {"sample": "the bundled sample's validation images (CIFAR-10, 32×32)", "examples": "the example photos"}
LARGE_INPUT = 128  # from this input size on, the sample's 1,000 images are not the default gallery (slow on a CPU)


def examples() -> list[Path]:
    return sorted(locations.EXAMPLES_DIR.glob("*.jpg"))


def class_text(loaded, name: str) -> str:
    """A class as a user reads it: its words when the model has them ("tench, Tinca tinca"), else its name."""
    return loaded.class_words.get(name) or name


def recipe_text(record: dict) -> str:
    """How the model frames an image, in words."""
    size = int(record.get("input_size", 0))
    if "resize_to" in record:
        how = ("shorter side" if record.get("resize_mode") == "shorter" else "whole image, stretched to a square")
        return (f"{how} to {record['resize_to']} px, then the centre {size}×{size}; an image already that size is "
                "only cropped")
    return f"framed square and resized to {size}×{size}"


def what_the_model_can_say(loaded, facts: dict | None = None) -> None:
    classes, size = loaded.class_names, loaded.input_size
    names = [class_text(loaded, c) for c in classes]
    shown = "; ".join(names) if len(names) <= 12 else "; ".join(names[:10]) + f" and {len(names) - 10:,} more"
    facts = facts or {}
    origin = ""
    if facts.get("kind") == "pretrained":
        published = facts.get("published") or {}
        accuracy = (f" (published top-1 {published['top1']:.1%}, top-5 {published['top5']:.1%} on "
                    f"{plain(published.get('split', 'ImageNet'), 100)})"
                    if isinstance(published.get("top1"), float) and isinstance(published.get("top5"), float) else "")
        origin = f"{plain(facts.get('title') or 'ImageNet weights', 120)}{accuracy}. "
    elif facts.get("kind") == "own":
        origin = f"Your own model, {plain(facts.get('title') or loaded.source, 120)}. "
    st.info(f"**What this model can say.** {origin}It knows {len(classes):,} classes ({plain(shown, 400)}) and "
            f"sees every image as {size}×{size} pixels ({recipe_text(loaded.preprocessing)}). Anything else in a "
            "photo still gets one of these labels, so a low score, or two close ones, means the model is not sure.",
            icon=":material/lightbulb:")


def judging_settings() -> tuple[str, float, float]:
    """(framing, sure probability, sure margin) picked above the uploads."""
    settings = st.columns([1, 1, 1])
    framing = settings[0].segmented_control(
        "Images that are not square", list(FRAMINGS), default=DEFAULT_FRAMING, key="classify_framing",
        format_func=framing_name, help="\n\n".join(FRAMINGS.values()),
    ) or DEFAULT_FRAMING
    sure_probability = settings[1].slider(
        "Sure when the top class has at least", 20, 95, round(SURE_PROBABILITY * 100), 5, format="%d%%",
        key="classify_sure_p", help="Below this probability for the top class, the answer is shown as unsure.") / 100
    sure_margin = settings[2].slider(
        "...and leads the next class by at least", 0, 80, round(SURE_MARGIN * 100), 5, format="%d points",
        key="classify_sure_margin",
        help="If the top class leads the second by fewer percentage points, the answer is shown as unsure.") / 100
    return framing, sure_probability, sure_margin


def images_to_classify(uploads, photo, use_examples: bool) -> list[tuple[str, bytes]]:
    """(name shown, bytes) of the uploads (capped, with a note when some are left out), the photo,
    or, with neither, the examples (each checked by the safe decoder first; a damaged one is
    named and left out). Names are made unique, since two uploads may share one."""
    items, kept_bytes, dropped = [], 0, 0
    for upload in uploads or []:
        if len(items) >= image_files.MAX_UPLOAD_FILES or kept_bytes + upload.size > image_files.MAX_UPLOAD_BYTES:
            dropped += 1
            continue
        kept_bytes += upload.size
        items.append((upload.name, upload.getvalue()))
    if dropped:
        st.warning(f"Classified the first {len(items)} of {len(items) + dropped} images: one batch takes at most "
                   f"{image_files.MAX_UPLOAD_FILES} images and {image_files.MAX_UPLOAD_BYTES // 2**20} MB. Remove "
                   "some to see the rest.", icon=":material/filter_list:")
    if photo is not None:
        items.append(("camera photo", photo.getvalue()))
    damaged = []
    if use_examples and not items:
        for example in examples():  # read only once the safe decoder has passed the file (never a FIFO or a folder)
            problem = image_problem(example)
            if problem:
                damaged.append(problem)
            else:
                items.append((example.name, example.read_bytes()))
    for problem in damaged:
        st.warning(f"Damaged example image, left out: {plain(problem, 300)}", icon=":material/broken_image:")
    seen = {}
    for i, (name, data) in enumerate(items):
        seen[name] = seen.get(name, 0) + 1
        items[i] = (f"{name} ({seen[name]})" if seen[name] > 1 else name, data)
    return items


@st.cache_data(max_entries=64, ttl=3600, show_spinner=False)
def analyse(spec: str, stamp: str, data: bytes, name: str, framing: str):
    """Decode one image and predict it (cached: the examples, or an image sent twice, cost nothing):
    (a digest of the bytes (the key of this image's widgets), thumbnail of the original, of the
    framed square, the photo's own (width, height) (not the reduced size a large one is decoded
    at), the exact pixels the network gets, its standardised input, probabilities), or the error."""
    from alexnet_core.inputs.images import decode_image
    from alexnet_core.inputs.preprocess import seen
    from alexnet_core.predict.inference import network_view

    try:
        image = decode_image(data, name)
    except ImageDecodeError as exc:
        return str(exc)
    model, predictor = loaded_model(spec)
    record = {**model.preprocessing, "input_size": model.input_size}
    region = seen(image, record, framing)  # the part of the image the network's input shows
    view = network_view(image, model.input_size, framing, record)  # the ImageNet recipe, when the model has one
    probs = predictor.probabilities(view[None])[0]  # already the network's pixels: taken as they are
    return (hashlib.sha1(data).hexdigest()[:12], thumbnail(image), thumbnail(region),
            image_files.photo_size(data, (image.shape[1], image.shape[0])), view, model.preprocess(view), probs)


def classified(spec: str, stamp: str, items, framing: str) -> list[tuple]:
    """(name, *analyse's result) of every image that decodes; each one that does not is said. A
    bar counts the images while a batch is classified (large photos take a moment each)."""
    results = []
    bar = st.progress(0.0, text=f"Classifying {len(items)} images...") if len(items) > 1 else None
    for n, (name, data) in enumerate(items, start=1):
        outcome = analyse(spec, stamp, data, name, framing)
        if bar is not None:
            bar.progress(n / len(items), text=f"Classified {n} of {len(items)} images")
        if isinstance(outcome, str):
            st.error(plain(outcome, 400), icon=":material/broken_image:")
        else:
            results.append((name, *outcome))
    if bar is not None:
        bar.empty()
    return results


@st.cache_data(max_entries=256, ttl=3600, show_spinner=False)
def heat_map(spec: str, stamp: str, model_input: np.ndarray, class_index: int) -> np.ndarray:
    from alexnet_core.analysis.explain import gradcam

    model, _ = loaded_model(spec)
    return gradcam(model.model, model_input, class_index)[0]


def has_heat_maps(loaded) -> bool:
    """Whether the cards show Grad-CAM (a model without a convolution has none)."""
    from alexnet_core.analysis.explain import has_convolution

    return has_convolution(loaded.model)


def result_card(index: int, result: tuple, loaded, spec: str, stamp: str, k: int, sure: tuple[float, float],
                framing: str = DEFAULT_FRAMING) -> None:
    """One classified image: the original, what the network sees, its top k with a verdict, and
    where it looked (Grad-CAM) for a class of the user's choice. The class picker belongs to this
    image, framing and verdict (its key names them): another framing that changes the verdict
    starts it again on the new top class, never on a class picked for the old verdict."""
    from alexnet_core.analysis.explain import overlay

    name, digest, small, square, dims, view, model_input, p = result
    classes, size = loaded.class_names, loaded.input_size
    with st.container(border=True):
        cols = st.columns([1, 1, 2, 1])
        cols[0].image(fit_for_display(small), caption=f"{plain(name, 80)} ({dims[0]}×{dims[1]})", width="stretch")
        cols[1].image(enlarged(view), width="stretch", caption=f"What the network sees: {size}×{size} pixels"
                      + (", enlarged" if size < 224 else ""))
        predictions = top_k(p, classes, k, loaded.class_words)
        _, (judged,) = loaded_model(spec)[1].judge(view[None], p[None], *sure)  # also: any of its classes at all?
        best = f"{plain(predictions[0].get('words') or predictions[0]['label'])} ({predictions[0]['probability']:.1%})"
        if judged["sure"]:
            cols[2].markdown(f":material/check_circle: **{best}**")
        elif judged["unknown"]:
            cols[2].markdown(f":red-badge[:material/block: Unsure: none of its classes?] best guess **{best}**")
        else:
            cols[2].markdown(f":orange-badge[:material/help: Unsure] best guess **{best}**")
        if not judged["sure"]:
            cols[2].caption(f"Unsure because {plain(judged['reason'], 600)}.")
        if judged["note"]:
            cols[2].caption(plain(judged["note"], 600))
        cols[2].plotly_chart(topk_bars(predictions, height=40 + 28 * len(predictions)), width="stretch",
                             key=f"classify_bars_{index}_{digest}", config={"displayModeBar": False})
        if not has_heat_maps(loaded):
            cols[3].caption(":material/block: **No Grad-CAM for this model**: it has no convolutional layer, so "
                            "there is no feature map to say where it looked.")
            return
        order = np.argsort(-p)
        target = cols[3].selectbox("Grad-CAM for", [classes[i] for i in order], format_func=lambda c: class_text(loaded, c),
                                   key=f"classify_cam_{index}_{digest}_{framing}_{int(order[0])}",
                                   help=glossary.help("Grad-CAM"))
        heat = heat_map(spec, stamp, model_input, classes.index(target))
        cols[3].image(fit_for_display(overlay(square, heat)), width="stretch",
                      caption=f"Where it looked for '{plain(class_text(loaded, target), 60)}' (Grad-CAM at "
                              f"{heat.shape[1]}×{heat.shape[0]})")


def network_inputs(loaded, images: list) -> np.ndarray:
    """Images (any sizes) as this model's standardised inputs, framed as Classify frames them."""
    from alexnet_core.predict.inference import network_view

    record = {**loaded.preprocessing, "input_size": loaded.input_size}
    return np.stack([loaded.preprocess(network_view(image, loaded.input_size, DEFAULT_FRAMING, record))
                     for image in images])


@st.cache_data(show_spinner="Computing the gallery's fc7 features (once per model)...", max_entries=8)
def gallery_bank(spec: str, stamp: str, paths: tuple):
    """(fc7 features, their files, what is wrong with each file left out) of the gallery's image
    files; a file the safe decoder refuses is left out and named, not fatal."""
    from alexnet_core.analysis.explain import embeddings
    from alexnet_core.inputs.images import read_image

    images, kept, damaged = [], [], []
    for path in paths:
        try:
            images.append(read_image(path))
        except ImageDecodeError as exc:
            damaged.append(str(exc).replace(str(path), f"{Path(path).parent.name}/{Path(path).name}", 1))
            continue
        kept.append(path)
    if not images:
        return None, [], damaged
    model, _ = loaded_model(spec)
    feats = np.concatenate([embeddings(model.model, network_inputs(model, images[i:i + 64]))
                            for i in range(0, len(images), 64)])
    return feats, kept, damaged


@st.cache_data(show_spinner=False, max_entries=64)
def layer_maps(spec: str, stamp: str, model_input: np.ndarray, layer: str) -> np.ndarray:
    """The first 32 channels of `layer` for one image (cached: a 224-px model's maps once per image)."""
    from alexnet_core.analysis.explain import activations

    model, _ = loaded_model(spec)
    return activations(model.model, model_input, layer, limit=32)


def activation_maps(loaded, inputs: dict, spec: str, stamp: str) -> None:
    from alexnet_core.analysis.explain import feature_layers

    layers = feature_layers(loaded.model)
    if not layers:
        st.info("**No activation maps for this model**: it has no convolutional layer, so no layer keeps the "
                "image's layout to draw as a map.", icon=":material/block:")
        return
    a, b = st.columns(2)
    which = a.selectbox("Image", list(inputs), key="classify_map_image")
    layer = b.selectbox("Layer", layers, key="classify_map_layer")
    maps = layer_maps(spec, stamp, inputs[which], layer)
    cols = st.columns(8)
    for i, fmap in enumerate(maps):
        cols[i % 8].image((fmap * 255).astype(np.uint8), caption=f"{layer}:{i}", width="stretch")
    st.caption(f"The first {len(maps)} channels of {plain(layer)} ({maps.shape[2]}×{maps.shape[1]} each), each "
               "scaled to its own brightest point (a layer with negative values, such as tanh: zero at mid-grey, "
               "each channel to its largest magnitude).")


def gallery_picker(loaded) -> str:
    default = "examples" if loaded.input_size >= LARGE_INPUT else "sample"
    return st.segmented_control("Look among", list(GALLERIES), default=default, key="classify_nn_gallery",
                                format_func=GALLERIES.get) or default


def nearest_neighbours(loaded, inputs: dict, spec: str, stamp: str) -> None:
    """The gallery's images (named on the page) whose fc7 features are closest to the picked image's."""
    from alexnet_core.analysis.explain import embedding_layer, embeddings, nearest
    from alexnet_core.inputs.data import load_source

    left, right = st.columns([1, 2])
    with left:
        which = st.selectbox("Image", list(inputs), key="classify_nn_image")
    with right:
        gallery = gallery_picker(loaded)
    query = embeddings(loaded.model, inputs[which][None])[0]
    layer = plain(embedding_layer(loaded.model))
    if gallery == "batch":
        names = [name for name in inputs if name != which]
        if not names:
            st.caption("Only one image is classified above: add more to compare it with.")
            return
        bank = embeddings(loaded.model, np.stack([inputs[name] for name in names]))
        order, sims = nearest(query, bank, k=8)
        st.caption(f"Gallery: the {len(names)} other images classified above; the closest by their {layer} "
                   "features (the paper's figure 4).")
        for col, i, sim in zip(st.columns(8), order, sims):
            col.caption(f"{plain(names[i], 60)} ({sim:.2f})")
        return
    bank, paths, damaged = None, [], []
    with user_errors(limit=400, icon=None):
        files = tuple(load_source("sample").val.paths) if gallery == "sample" else tuple(str(p) for p in examples())
        bank, paths, damaged = gallery_bank(spec, stamp, files)
    kind = "sample" if gallery == "sample" else "example"
    for problem in damaged[:10]:
        st.caption(f":material/broken_image: Damaged {kind} image, left out: {plain(problem, 300)}")
    if len(damaged) > 10:
        st.caption(f"... and {len(damaged) - 10} more damaged {kind} images left out.")
    if bank is None:
        st.caption("The gallery has no image to compare with.")
        return
    order, sims = nearest(query, bank, k=8)
    st.caption(f"Gallery: {GALLERY_TEXT[gallery]} ({len(paths):,} images); the closest by their {layer} "
               "features (the paper's figure 4).")
    for col, i, sim in zip(st.columns(8), order, sims):
        where = f"{Path(paths[i]).parent.name}/{Path(paths[i]).name}"
        shown = image_from_disk(paths[i], 256, label=where)
        if isinstance(shown, str):  # changed on disk since its features were read
            damaged_note(shown, col)
        else:
            label = Path(paths[i]).parent.name if gallery == "sample" else Path(paths[i]).stem
            col.image(shown, caption=f"{plain(label, 40)} ({sim:.2f})", width="stretch")


@st.cache_data(show_spinner=False, max_entries=8)
def filter_figure(spec: str, stamp: str):
    """(one image per group of conv1's kernels, how many kernels) of the model, or the reason none."""
    from alexnet_core.analysis.explain import NotApplicable, conv1_figure

    model, _ = loaded_model(spec)
    try:
        return conv1_figure(model.model)
    except NotApplicable as exc:
        return str(exc)


def first_layer_filters(spec: str, stamp: str) -> None:
    """conv1's kernels as the paper's Figure 3 shows them: for the paper's network, the kernels
    of the first GPU above those of the second."""
    figure = filter_figure(spec, stamp)
    if isinstance(figure, str):
        st.info(f"**No filters to show.** {plain(figure, 400)}", icon=":material/block:")
        return
    grids, count = figure
    if len(grids) == 1:
        st.image(grids[0], caption=f"The first layer's {count} kernels, each scaled to its own range (the paper's "
                                   "figure 3)", width=min(720, grids[0].shape[1]))
        return
    per = count // len(grids)
    st.markdown(f"The first layer's **{count} kernels in {len(grids)} groups of {per}**, as the paper's Figure 3 "
                "shows them: the paper trained the network on two GPUs, and each GPU's kernels are shown together.")
    for g, grid in enumerate(grids, start=1):
        st.image(grid, caption=f"GPU {g}: kernels {(g - 1) * per + 1}-{g * per}", width=min(720, grid.shape[1]))


def explain_further(loaded, results: list[tuple], spec: str, stamp: str) -> None:
    st.subheader("Explain further", help=glossary.helps("filter", "activation", "fc7", "nearest neighbours"))
    explain = st.segmented_control("Explain further", list(EXPLAIN), format_func=EXPLAIN.get,
                                   key="classify_explain", label_visibility="collapsed")
    inputs = {result[0]: result[6] for result in results}  # name: the network's standardised input
    if explain is None:
        st.caption("Pick one: the first layer's filters, what each layer responds to, or the most similar images.")
    elif explain == "filters":
        first_layer_filters(spec, stamp)
    elif explain == "maps":
        activation_maps(loaded, inputs, spec, stamp)
    else:
        nearest_neighbours(loaded, inputs, spec, stamp)
