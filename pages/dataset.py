from pathlib import Path

import streamlit as st

from alexnet_core.analysis.charts import topk_bars
from alexnet_core.inputs import datasets
from alexnet_core.inputs.data import DataError
from alexnet_core.inputs.datasets import DatasetError
from alexnet_core.inputs.images import MAX_UPLOAD_FILES, UPLOAD_TYPES, ImageDecodeError, decode_image
from alexnet_core.predict.inference import top_k, verdict
from alexnet_core.settings.config import ConfigError
from alexnet_core.store import catalog, fileio, layout
from alexnet_ui.loaders import all_runs, image_from_disk, image_problem, runs_root
from alexnet_ui.navigation import loaded_model_or_stop, page_setup
from alexnet_ui.text import plain
from alexnet_ui.widgets import device_banner, state_badge

NEW = "+ New dataset"
THUMBS = 16  # thumbnails shown per class
DAMAGED_LISTED = 10  # damaged files named per class, each with its own Remove button

page_setup()
st.title("Your classes")
root = datasets.data_root()
st.caption(f"Teach the network classes of your own: name them, add photos by upload or with the camera, train, "
           f"then try it live. Each dataset is saved as an image folder in {plain(str(root), 200)} "
           "(set ALEXNET_DATA_DIR to keep them elsewhere).")

names = datasets.list_datasets(root)
if "dataset_pick_next" in st.session_state:  # a dataset just created: pick it
    st.session_state["dataset_pick"] = st.session_state.pop("dataset_pick_next")
choice = st.selectbox("Dataset", [*names, NEW], key="dataset_pick", index=0)
if choice == NEW:
    with st.form("dataset_new", border=True):
        name = st.text_input("Name of the new dataset", placeholder="e.g. my pets", max_chars=48)
        if st.form_submit_button("Create", type="primary", icon=":material/create_new_folder:"):
            try:
                made = datasets.create_dataset(name, root)
            except (DatasetError, OSError) as exc:
                st.error(plain(exc, 300))
            else:
                st.session_state["dataset_pick_next"] = made.name
                st.rerun()
    device_banner()
    st.stop()

path = root / choice
found = datasets.classes(path)

# --- 1. Classes and images ---------------------------------------------------------------------

st.subheader("1. Classes and images")
SAY = {"success": st.success, "warning": st.warning, "error": st.error}


def say(kind: str, text: str) -> None:
    SAY.get(kind, st.info)(plain(text, 600))


def uploaded(value) -> list[tuple[str, bytes]]:
    """(name, bytes) of a file uploader's or a camera's value (one file, a list, or nothing)."""
    files = value if isinstance(value, list) else [value] if value is not None else []
    return [(getattr(f, "name", None) or "camera photo", f.getvalue()) for f in files if hasattr(f, "getvalue")]


def keep_orphans(dataset: Path, class_name: str, items: list[tuple[str, bytes]]) -> None:
    """Photos meant for a class that is gone: kept (this session only) so one click adds the class
    again with them."""
    if items:
        st.session_state["dataset_orphans"] = {"dataset": str(dataset), "class": class_name,
                                               "items": items[:MAX_UPLOAD_FILES]}
    round_key = f"dataset_round_{dataset.name}/{class_name}"  # the class's widgets start afresh if it returns
    st.session_state[round_key] = st.session_state.get(round_key, 0) + 1


# Uploaders and cameras drawn on the last run: {widget key: (dataset folder, class)}. A class
# removed on disk since then takes its widget with it; what the user had just given it is still
# in the session state for this one run: report it, never drop it silently.
drawn = st.session_state.pop("dataset_widgets", {})
for widget, (dataset, class_name) in drawn.items():
    if (Path(dataset) / class_name).is_dir():
        continue
    lost = uploaded(st.session_state.get(widget))
    if lost:
        folder = Path(dataset) / class_name
        st.session_state.setdefault("dataset_messages", []).append(
            ("error", f"class {class_name} no longer exists on disk: there is no class folder {folder}. Not saved: "
                      f"{', '.join(name for name, _ in lost[:8])}{' and more' if len(lost) > 8 else ''}. "
                      "Add the class again to keep them."))
        keep_orphans(Path(dataset), class_name, lost)

for kind, text in st.session_state.pop("dataset_messages", []):
    say(kind, text)

orphans = st.session_state.get("dataset_orphans")
if orphans and Path(orphans["dataset"]) == path:
    names = [name for name, _ in orphans["items"]]
    st.warning(plain(f"{len(names)} photo{'s' if len(names) != 1 else ''} for {orphans['class']}, a class removed "
                     f"on disk, kept here until you leave: {', '.join(names[:8])}{' ...' if len(names) > 8 else ''}",
                     400), icon=":material/inventory_2:")
    b, c, _ = st.columns([1, 1, 2])
    if b.button("Add the class again", key="dataset_orphans_keep", width="stretch", icon=":material/undo:",
                help=f"Make the class {orphans['class']} again and save these photos in it"):
        st.session_state.pop("dataset_orphans")
        try:
            datasets.add_class(path, orphans["class"])
        except (DatasetError, OSError) as exc:
            st.session_state["dataset_messages"] = [("error", str(exc))]
        else:
            st.session_state["dataset_messages"] = datasets.add_images(
                path, orphans["class"], orphans["items"]).lines()
        st.rerun()
    if c.button("Discard them", key="dataset_orphans_drop", width="stretch", icon=":material/close:"):
        st.session_state.pop("dataset_orphans")
        st.rerun()

with st.form("dataset_add_class", clear_on_submit=True, border=False):
    a, b = st.columns([3, 1], vertical_alignment="bottom")
    new_class = a.text_input("New class", placeholder="e.g. cat, my mug, thumbs up", max_chars=48)
    if b.form_submit_button("Add class", icon=":material/add:", width="stretch"):
        try:
            datasets.add_class(path, new_class)
        except (DatasetError, OSError) as exc:
            st.error(plain(exc, 300))
        else:
            st.rerun()
if not found:
    st.info("No classes yet: add two or more above, then add a few photos of each.", icon=":material/category:")


def save(class_name: str, items: list[tuple[str, bytes]]) -> None:
    """Decode and save one upload (or a photo); what was added and what was skipped, and why, is
    said after the rerun. Photos for a class that is gone are kept to be added again."""
    result = datasets.add_images(path, class_name, items)
    st.session_state["dataset_messages"] = result.lines()
    if result.class_gone:
        keep_orphans(path, class_name, [(n, d) for n, d in items if n in {s for s, *_ in result.skipped}])


damaged_files = []
widgets = {}
for class_name, files in found.items():
    key = f"{choice}/{class_name}"
    with st.spinner(f"Checking the {len(files):,} files of {plain(class_name)}..."):  # shown only if it takes a while
        problems = {f: image_problem(f) for f in files}  # every file through the safe decoder, once per version
    good = [f for f in files if not problems[f]]
    thumbs = []
    for f in good[-THUMBS:]:
        shown = image_from_disk(f, 128)
        if isinstance(shown, str):  # changed since it was checked
            problems[f] = shown
        else:
            thumbs.append(shown)
    damaged = [f for f in files if problems[f]]
    damaged_files += damaged
    count = len(files) - len(damaged)
    with st.container(border=True):
        head, remove = st.columns([5, 1], vertical_alignment="center")
        head.markdown(f"**{plain(class_name)}**: {count} image{'s' if count != 1 else ''}"
                      + (f", {len(damaged)} damaged file{'s' if len(damaged) != 1 else ''}" if damaged else ""))
        with remove.popover("Remove", icon=":material/delete:", width="stretch"):
            st.markdown(f"Remove the class **{plain(class_name)}** and its {len(files)} files?")
            if st.button("Remove for good", type="primary", key=f"dataset_rm_{key}"):
                datasets.remove_class(path, class_name)
                st.rerun()
        if thumbs:
            st.image(thumbs, width=64)
        if damaged:
            st.warning(f"{len(damaged)} file{'s' if len(damaged) != 1 else ''} of {plain(class_name)} cannot be read "
                       "as an image, so training skips them. Remove them, or replace them with good copies.",
                       icon=":material/broken_image:")
            for f in damaged[:DAMAGED_LISTED]:
                what, rm = st.columns([5, 1], vertical_alignment="center")
                what.caption(f":material/broken_image: {plain(problems[f], 300)}")
                if rm.button("Remove", key=f"dataset_rm_file_{key}/{f.name}", icon=":material/delete:",
                             width="stretch", help=f"Delete {f.name} from {class_name}"):
                    try:
                        datasets.remove_image(path, f)
                    except (DatasetError, OSError) as exc:
                        st.session_state["dataset_messages"] = [("error", f"{f.name}: {exc}")]
                    else:
                        st.session_state["dataset_messages"] = [("success", f"{class_name}: removed {f.name}.")]
                    st.rerun()
            if len(damaged) > DAMAGED_LISTED:
                more = damaged[DAMAGED_LISTED:]
                what, rm = st.columns([5, 1], vertical_alignment="center")
                what.caption(plain(f"and {len(more)} more: {', '.join(f.name for f in more[:20])}"
                                   f"{' ...' if len(more) > 20 else ''}", 600))
                if rm.button("Remove all", key=f"dataset_rm_damaged_{key}", icon=":material/delete_sweep:",
                             width="stretch", help=f"Delete all {len(damaged)} damaged files of {class_name}"):
                    for f in damaged:
                        try:
                            datasets.remove_image(path, f)
                        except (DatasetError, OSError):
                            pass
                    st.session_state["dataset_messages"] = [
                        ("success", f"{class_name}: removed {len(damaged)} damaged files.")]
                    st.rerun()
        add, camera = st.columns(2)
        round_ = st.session_state.setdefault(f"dataset_round_{key}", 0)  # a new key empties the uploader
        up_key, cam_key = f"dataset_up_{key}_{round_}", f"dataset_cam_{key}_{round_}"
        widgets[up_key] = widgets[cam_key] = (str(path), class_name)
        uploads = add.file_uploader(f"Add images of {class_name}", type=UPLOAD_TYPES, accept_multiple_files=True,
                                    key=up_key, help=f"Up to {MAX_UPLOAD_FILES} at a time")
        if uploads:
            save(class_name, uploaded(uploads))
            st.session_state[f"dataset_round_{key}"] = round_ + 1
            st.rerun()
        if camera.toggle("Use the camera", key=f"dataset_cam_on_{key}"):
            photo = camera.camera_input(f"A photo of {class_name}", key=cam_key)
            if photo is not None:
                save(class_name, [("camera photo", photo.getvalue())])
                st.session_state[f"dataset_round_{key}"] = round_ + 1
                st.rerun()
st.session_state["dataset_widgets"] = widgets

# --- 2. Train ------------------------------------------------------------------------------------

st.subheader("2. Train")


def runs_of_dataset() -> list[dict]:
    """Runs trained on this dataset, newest first."""
    mine = [r for r in all_runs() if fileio.read_object(Path(r["path"]) / layout.CONFIG).get("data") == str(path)]
    return sorted(mine, key=lambda r: r.get("started") or 0, reverse=True)


problem = datasets.readiness(path, damaged_files)
if problem:
    st.info(problem, icon=":material/info:")
else:
    counts = {name: sum(f not in damaged_files for f in files) for name, files in found.items()}
    mode = st.radio("How", ["fine-tune", "scratch"], horizontal=True, key="dataset_mode", format_func={
        "fine-tune": "Fine-tune the bundled model (best for a few photos)", "scratch": "From scratch"}.get,
        help="Fine-tuning keeps what the bundled model learned to see on CIFAR-10 (its convolutional layers, "
             "as they are) and trains only a new head for your classes. From scratch learns everything from "
             "your photos alone, which needs hundreds per class.")
    epochs = st.number_input("Epochs", 1, 200, 10 if mode == "fine-tune" else 30, key=f"dataset_epochs_{mode}")
    st.caption(f"{sum(counts.values())} images in {len(counts)} classes; a fifth of each class is kept aside to "
               "measure the model (its validation accuracy).")
    if st.button("Start training", type="primary", icon=":material/play_arrow:", key="dataset_train"):
        from alexnet_core.train.launcher import start

        try:
            config = datasets.train_config(path, fine_tune=mode == "fine-tune", epochs=int(epochs))
            start(config, runs_root())
        except (ConfigError, DataError, layout.RunError, OSError) as exc:
            st.error(plain(exc, 400))
        else:
            st.rerun()

mine = runs_of_dataset()
if mine:
    latest = mine[0]
    active = catalog.is_active(latest)

    @st.fragment(run_every=2.0 if active else None)
    def progress():
        row = next((r for r in all_runs() if r["path"] == latest["path"]), latest)
        with st.container(border=True):
            left, right = st.columns([1, 4], vertical_alignment="center")
            with left:
                state_badge(row["state"])
            best = row.get("best_val_accuracy")
            right.markdown(f"Latest run **{plain(catalog.display_name(row), 120)}**: epoch {row['epochs_done']} of "
                           f"{row['epochs'] or '?'}" + (f", best validation accuracy {best:.0%} (on the fifth of "
                                                        "your images kept aside)" if best is not None else "")
                           + f". {plain(row['message'], 300)}")
            st.page_link("pages/train.py", label="Watch it on the Train page", icon=":material/monitoring:",
                         query_params={"run": row["run_id"]})
        if active and not catalog.is_active(row):
            st.rerun()  # finished: the page offers to try it

    progress()

# --- 3. Try it -----------------------------------------------------------------------------------

st.subheader("3. Try it live")
ready = [r for r in mine if r["has_model"] and not catalog.is_active(r)]
if not ready:
    st.info("Train a model on this dataset first; then show it a photo here.", icon=":material/info:")
    device_banner()
    st.stop()
picked = st.selectbox("Model", [r["path"] for r in ready], key="dataset_try_model", format_func=lambda p: next(
    f"{catalog.display_name(r)} ({r['state']}, {r['epochs_done']} epochs)" for r in ready if r["path"] == p))
loaded, predictor = loaded_model_or_stop(picked)
source, shot = st.columns(2)
upload = source.file_uploader("An image to classify", type=UPLOAD_TYPES, key="dataset_try_upload")
photo = shot.camera_input("Or take a photo", key="dataset_try_camera") if shot.toggle(
    "Use the camera", key="dataset_try_cam_on") else None
given = photo or upload
if given is not None:
    try:
        image = decode_image(given.getvalue(), getattr(given, "name", "camera photo"))
    except ImageDecodeError as exc:
        st.error(plain(exc, 300))
    else:
        probs = predictor.probabilities([image])[0]
        judged = verdict(probs)
        shown, bars = st.columns([1, 2])
        shown.image(image, width="stretch")
        top = top_k(probs, loaded.class_names, 5, loaded.class_words)  # the probabilities above, not a second pass
        label = top[0]["label"]
        bars.markdown(f"**{plain(label)}** ({top[0]['probability']:.0%})"
                      + ("" if judged["sure"] else f", unsure: {plain(judged['reason'], 200)}"))
        bars.plotly_chart(topk_bars(top, height=60 + 36 * len(top)), key="dataset_try_bars",
                          config={"displayModeBar": False})
        st.caption(f"The model knows only your {len(loaded.class_names)} classes "
                   f"({plain(', '.join(loaded.class_names), 300)}): anything else still gets one of them.")

device_banner()
