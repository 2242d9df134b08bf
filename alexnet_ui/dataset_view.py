"""The Your classes page's parts: the dataset picker and the new-dataset form; the classes, each
a card with thumbnails, damaged files and ways to add photos (photos meant for a class removed
on disk meanwhile are kept, never dropped silently); training on the dataset and its latest run;
and trying a trained model live.

Messages about what an action did are kept in the session state and said after the rerun that
shows its result (`MESSAGES`)."""

from __future__ import annotations

# Imports inside functions are deliberate: TensorFlow and Keras, and the modules that reach them,
# load on first use, so importing this module (the app's pages, the command line) stays light.
from pathlib import Path

import streamlit as st

from alexnet_core.inputs import datasets
from alexnet_core.inputs import images as image_files
from alexnet_core.store import catalog, fileio, layout
from alexnet_ui import glossary
from alexnet_ui.feedback import user_errors, user_message
from alexnet_ui.loaders import all_runs, image_from_disk, image_problem, runs_root
from alexnet_ui.text import plain
from alexnet_ui.widgets import state_badge

NEW = "+ New dataset"
THUMBS = 16  # thumbnails shown per class
DAMAGED_LISTED = 10  # damaged files named per class, each with its own Remove button
MESSAGES = "dataset_messages"  # [(kind, text)] to say on the next run
ORPHANS = "dataset_orphans"  # photos for a class removed on disk, kept for this session
WIDGETS = "dataset_widgets"  # uploaders and cameras drawn on the last run: {key: (dataset, class)}
PICK_NEXT = "dataset_pick_next"  # a dataset just created: picked on the next run
SAY = {"success": st.success, "warning": st.warning, "error": st.error}


def say(kind: str, text: str) -> None:
    SAY.get(kind, st.info)(plain(text, 600))


def dataset_picker(root: Path) -> str:
    if PICK_NEXT in st.session_state:
        st.session_state["dataset_pick"] = st.session_state.pop(PICK_NEXT)
    return st.selectbox("Dataset", [*datasets.list_datasets(root), NEW], key="dataset_pick", index=0)


def new_dataset_form(root: Path) -> None:
    with st.form("dataset_new", border=True):
        name = st.text_input("Name of the new dataset", placeholder="e.g. my pets", max_chars=48)
        if st.form_submit_button("Create", type="primary", icon=":material/create_new_folder:"):
            with user_errors(limit=300, icon=None):
                st.session_state[PICK_NEXT] = datasets.create_dataset(name, root).name
                st.rerun()


def uploaded(value) -> list[tuple[str, bytes]]:
    """(name, bytes) of a file uploader's or a camera's value (one file, a list, or nothing)."""
    files = value if isinstance(value, list) else [value] if value is not None else []
    return [(getattr(f, "name", None) or "camera photo", f.getvalue()) for f in files if hasattr(f, "getvalue")]


def _round_key(dataset_name: str, class_name: str) -> str:
    """The key of a class's widget round: a new round empties its uploader and camera."""
    return f"dataset_round_{dataset_name}/{class_name}"


def keep_orphans(dataset: Path, class_name: str, items: list[tuple[str, bytes]]) -> None:
    """Photos meant for a class that is gone: kept (this session only) so one click adds the class
    again with them."""
    if items:
        st.session_state[ORPHANS] = {"dataset": str(dataset), "class": class_name,
                                     "items": items[:image_files.MAX_UPLOAD_FILES]}
    key = _round_key(dataset.name, class_name)  # the class's widgets start afresh if it returns
    st.session_state[key] = st.session_state.get(key, 0) + 1


def messages() -> None:
    """What the last actions did, and photos given to a class removed on disk since the last run.

    A class removed on disk takes its widget with it; what the user had just given it is still in
    the session state for this one run: report it, never drop it silently."""
    for widget, (dataset, class_name) in st.session_state.pop(WIDGETS, {}).items():
        if (Path(dataset) / class_name).is_dir():
            continue
        lost = uploaded(st.session_state.get(widget))
        if lost:
            folder = Path(dataset) / class_name
            st.session_state.setdefault(MESSAGES, []).append(
                ("error", f"class {class_name} no longer exists on disk: there is no class folder {folder}. Not "
                          f"saved: {', '.join(name for name, _ in lost[:8])}{' and more' if len(lost) > 8 else ''}. "
                          "Add the class again to keep them."))
            keep_orphans(Path(dataset), class_name, lost)
    for kind, text in st.session_state.pop(MESSAGES, []):
        say(kind, text)


def orphans_offer(path: Path) -> None:
    """Photos kept for a class removed on disk: add the class again with them, or discard them."""
    orphans = st.session_state.get(ORPHANS)
    if not orphans or Path(orphans["dataset"]) != path:
        return
    names = [name for name, _ in orphans["items"]]
    st.warning(plain(f"{len(names)} photo{'s' if len(names) != 1 else ''} for {orphans['class']}, a class removed "
                     f"on disk, kept here until you leave: {', '.join(names[:8])}{' ...' if len(names) > 8 else ''}",
                     400), icon=":material/inventory_2:")
    b, c, _ = st.columns([1, 1, 2])
    if b.button("Add the class again", key="dataset_orphans_keep", width="stretch", icon=":material/undo:",
                help=f"Make the class {orphans['class']} again and save these photos in it"):
        st.session_state.pop(ORPHANS)
        try:
            datasets.add_class(path, orphans["class"])
        except (datasets.DatasetError, OSError) as exc:  # said after the rerun, with the photos' fate
            st.session_state[MESSAGES] = [("error", user_message(exc))]
        else:
            st.session_state[MESSAGES] = datasets.add_images(path, orphans["class"], orphans["items"]).lines()
        st.rerun()
    if c.button("Discard them", key="dataset_orphans_drop", width="stretch", icon=":material/close:"):
        st.session_state.pop(ORPHANS)
        st.rerun()


def add_class_form(path: Path) -> None:
    with st.form("dataset_add_class", clear_on_submit=True, border=False):
        a, b = st.columns([3, 1], vertical_alignment="bottom")
        new_class = a.text_input("New class", placeholder="e.g. cat, my mug, thumbs up", max_chars=48)
        if b.form_submit_button("Add class", icon=":material/add:", width="stretch"):
            with user_errors(limit=300, icon=None):
                datasets.add_class(path, new_class)
                st.rerun()


def _save(path: Path, class_name: str, items: list[tuple[str, bytes]]) -> None:
    """Decode and save uploads (or a photo); what was added and what was skipped, and why, is
    said after the rerun. Photos for a class that is gone are kept to be added again."""
    result = datasets.add_images(path, class_name, items)
    st.session_state[MESSAGES] = result.lines()
    if result.class_gone:
        keep_orphans(path, class_name, [(n, d) for n, d in items if n in {s for s, *_ in result.skipped}])


def _damaged_list(path: Path, class_name: str, key: str, damaged: list[Path], problems: dict) -> None:
    """The damaged files of a class, each named with a Remove button; past DAMAGED_LISTED, the
    rest in one line with one button for all."""
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
            except (datasets.DatasetError, OSError) as exc:  # said after the rerun
                st.session_state[MESSAGES] = [("error", f"{f.name}: {user_message(exc)}")]
            else:
                st.session_state[MESSAGES] = [("success", f"{class_name}: removed {f.name}.")]
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
                except (datasets.DatasetError, OSError):  # gone already, or the count below says it
                    pass
            st.session_state[MESSAGES] = [("success", f"{class_name}: removed {len(damaged)} damaged files.")]
            st.rerun()


def _add_photos(path: Path, class_name: str, key: str, widgets: dict) -> None:
    """An uploader and a camera for the class; what they give is saved at once."""
    add, camera = st.columns(2)
    round_ = st.session_state.setdefault(_round_key(path.name, class_name), 0)  # a new key empties the uploader
    up_key, cam_key = f"dataset_up_{key}_{round_}", f"dataset_cam_{key}_{round_}"
    widgets[up_key] = widgets[cam_key] = (str(path), class_name)
    uploads = add.file_uploader(f"Add images of {class_name}", type=image_files.UPLOAD_TYPES,
                                accept_multiple_files=True, key=up_key,
                                help=f"Up to {image_files.MAX_UPLOAD_FILES} at a time")
    if uploads:
        _save(path, class_name, uploaded(uploads))
        st.session_state[_round_key(path.name, class_name)] = round_ + 1
        st.rerun()
    if camera.toggle("Use the camera", key=f"dataset_cam_on_{key}"):
        photo = camera.camera_input(f"A photo of {class_name}", key=cam_key)
        if photo is not None:
            _save(path, class_name, [("camera photo", photo.getvalue())])
            st.session_state[_round_key(path.name, class_name)] = round_ + 1
            st.rerun()


def class_cards(path: Path, found: dict[str, list[Path]]) -> list[Path]:
    """One card per class: its count, thumbnails, damaged files, Remove, and ways to add photos.
    Returns the damaged files of every class."""
    damaged_files, widgets = [], {}
    for class_name, files in found.items():
        key = f"{path.name}/{class_name}"
        with st.spinner(f"Checking the {len(files):,} files of {plain(class_name)}..."):  # shown only if it takes a while
            problems = {f: image_problem(f) for f in files}  # every file through the safe decoder, once per version
        thumbs = []
        for f in [f for f in files if not problems[f]][-THUMBS:]:
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
                    with user_errors(limit=300, icon=None):
                        datasets.remove_class(path, class_name)
                        st.rerun()
            if thumbs:
                st.image(thumbs, width=64)
            if damaged:
                _damaged_list(path, class_name, key, damaged, problems)
            _add_photos(path, class_name, key, widgets)
    st.session_state[WIDGETS] = widgets
    return damaged_files


def train_section(path: Path, found: dict[str, list[Path]], damaged_files: list[Path]) -> None:
    """Why the dataset cannot be trained on yet, or how to train on it and a Start button."""
    problem = datasets.readiness(path, damaged_files)
    if problem:
        st.info(problem, icon=":material/info:")
        return
    counts = {name: sum(f not in damaged_files for f in files) for name, files in found.items()}
    from alexnet_core.train.finetune import imagenet_bases

    bases, unusable = imagenet_bases()
    modes = {"fine-tune": "Fine-tune the bundled model (best for a few photos)",
             **{FROM + name: f"Start from ImageNet features ({name}, 224 px)" for name in bases},
             "scratch": "From scratch"}
    if st.session_state.get("dataset_mode") not in modes:  # a base removed since it was picked
        st.session_state.pop("dataset_mode", None)
    mode = st.radio("How", list(modes), horizontal=True, key="dataset_mode", format_func=modes.get,
                    help="Fine-tuning keeps what the bundled model learned to see on CIFAR-10 (its convolutional "
                         "layers, as they are) and trains only a new head for your classes. Starting from ImageNet "
                         "features keeps what AlexNet learned from 1.2 million photos of 1,000 classes (its "
                         "convolutional layers, fc6 and fc7, as they are) and trains only a new last layer, at "
                         "224 px: slower, and far better on real photos. From scratch learns everything from your "
                         "photos alone, which needs hundreds per class.")
    imagenet_note(bases, unusable)
    base = mode[len(FROM):] if mode.startswith(FROM) else "demo"
    kind = "imagenet" if mode.startswith(FROM) else mode
    epochs = st.number_input("Epochs", 1, 200, {"fine-tune": 10, "imagenet": 3}.get(kind, 30),
                             key=f"dataset_epochs_{kind}")
    st.caption(f"{sum(counts.values())} images in {len(counts)} classes; a fifth of each class is kept aside to "
               "measure the model (its validation accuracy).")
    if st.button("Start training", type="primary", icon=":material/play_arrow:", key="dataset_train"):
        from alexnet_core.train.launcher import start

        with user_errors(limit=400, icon=None):
            start(datasets.train_config(path, fine_tune=mode != "scratch", epochs=int(epochs), base=base),
                  runs_root())
            st.rerun()


FROM = "from:"  # a training mode that starts from an installed ImageNet model: "from:imagenet-torchvision"


def imagenet_note(bases: list[str], unusable: dict[str, str]) -> None:
    """Why starting from ImageNet features is not offered, or which installed model is not."""
    for why in unusable.values():
        st.caption(f":material/info: Not offered as a base: {plain(why, 300)}.")
    if not bases:
        st.caption(":material/info: To start from ImageNet features (AlexNet trained on 1,000 classes of real "
                   "photos), install torchvision's ImageNet weights first: `python -m alexnet_core pretrained "
                   "install torchvision` (233 MB, or `--file PATH` with alexnet-owt-7be5be79.pth you already "
                   "have). They are not installed on this machine.")


def runs_of_dataset(path: Path) -> list[dict]:
    """Runs trained on this dataset, newest first."""
    mine = [r for r in all_runs() if fileio.read_object(Path(r["path"]) / layout.CONFIG).get("data") == str(path)]
    return sorted(mine, key=lambda r: r.get("started") or 0, reverse=True)


def latest_run(latest: dict) -> None:
    """The dataset's latest run, its state and best accuracy, redrawn every 2 s while it trains."""
    active = catalog.is_active(latest)

    @st.fragment(run_every=2.0 if active else None)
    def progress():
        row = next((r for r in all_runs() if r["path"] == latest["path"]), latest)
        with st.container(border=True):
            left, right = st.columns([1, 4], vertical_alignment="center")
            with left:
                state_badge(row["state"])
            best, headline = row.get("best_val_accuracy"), row.get("headline")
            if headline:  # the model's one headline figure, as every page quotes it
                accuracy = f", {plain(headline['sentence'], 300)}"
            elif best is not None:
                accuracy = (f", best in-training validation accuracy {best:.1%} (on the fifth of your images kept "
                            "aside, the same images Evaluate measures this run's model on)")
            else:
                accuracy = ""
            right.markdown(f"Latest run **{plain(catalog.display_name(row), 120)}**: epoch {row['epochs_done']} of "
                           f"{row['epochs'] or '?'}{accuracy}. {plain(row['message'], 300)}",
                           help=glossary.help("in-training validation"))
            links = st.columns(2)
            links[0].page_link("pages/train.py", label="Watch it on the Train page", icon=":material/monitoring:",
                               query_params={"run": row["run_id"]})
            if row.get("has_model") and not catalog.is_active(row) and links[1].button(
                    "Its mistakes on the Evaluate page", icon=":material/grid_on:", key="dataset_evaluate",
                    type="tertiary", help="Evaluate opens on this run's model and on this dataset's kept-aside images"):
                st.session_state["eval_model"] = row["path"]  # Evaluate's model picker (a run's spec is its folder)
                st.switch_page("pages/evaluate.py")
        if active and not catalog.is_active(row):
            st.rerun()  # finished: the page offers to try it

    progress()


def try_it(loaded, predictor) -> None:
    """An upload or a photo, classified by the picked model."""
    from alexnet_core.analysis.charts import topk_bars
    from alexnet_core.inputs.images import decode_image
    from alexnet_core.predict.inference import top_k

    source, shot = st.columns(2)
    upload = source.file_uploader("An image to classify", type=image_files.UPLOAD_TYPES, key="dataset_try_upload")
    photo = shot.camera_input("Or take a photo", key="dataset_try_camera") if shot.toggle(
        "Use the camera", key="dataset_try_cam_on") else None
    given = photo or upload
    if given is None:
        return
    with user_errors(limit=300, icon=None) as decoding:
        image = decode_image(given.getvalue(), getattr(given, "name", "camera photo"))
    if decoding.failed:
        return
    probs, (judged,) = predictor.judge([image])  # the softmax rule and, when calibrated, any of its classes at all
    probs = probs[0]
    shown, bars = st.columns([1, 2])
    shown.image(image, width="stretch")
    top = top_k(probs, loaded.class_names, 5, loaded.class_words)  # the probabilities above, not a second pass
    bars.markdown(f"**{plain(top[0]['label'])}** ({top[0]['probability']:.0%})"
                  + ("" if judged["sure"] else f", unsure: {plain(judged['reason'], 400)}"))
    if judged["note"]:
        bars.caption(plain(judged["note"], 600))
    bars.plotly_chart(topk_bars(top, height=60 + 36 * len(top)), key="dataset_try_bars",
                      config={"displayModeBar": False})
    st.caption(f"The model knows only your {len(loaded.class_names)} classes "
               f"({plain(', '.join(loaded.class_names), 300)}): anything else still gets one of them.")
