"""The Models page's parts: the ImageNet sources, each with what it is, its size, licence and
published accuracy, and its install (Download when its host answers, "I have the file" always:
a path on this machine or an upload); opening a model of your own (upload or path, its name,
class names and preprocessing); the installed models, each removable.

Installing runs in the page's own script run (the conversion takes under a minute); what an
action did is said after the rerun that shows its result (`MESSAGES`). Refusals go through
feedback.user_errors, and every form keeps what was typed when it is refused.
"""

from __future__ import annotations

# Imports inside functions are deliberate: Keras, TensorFlow, PyTorch and ONNX load only when a
# model is opened or converted, so importing this module (the app's pages) stays light.
import re
import time
from pathlib import Path

import streamlit as st

from alexnet_core import locations
from alexnet_core.predict import own_model
from alexnet_core.pretrained import install, sources
from alexnet_core.store import fileio, model_home
from alexnet_ui import glossary
from alexnet_ui.feedback import user_errors
from alexnet_ui.loaders import installed_models
from alexnet_ui.text import format_bytes, format_duration, plain

MESSAGES = "models_messages"  # {section: [(kind, text)]} to say on the next run, where the action was
OPENED = "models_own_opened"  # {"opened": own_model.Opened, "upload": Path | None}
SAY = {"success": st.success, "warning": st.warning, "error": st.error}
UPLOAD_MB = {"own": 500, "source": 300}  # the largest upload each uploader takes (larger: give a path)


def _say_next(section: str, kind: str, text: str) -> None:
    st.session_state.setdefault(MESSAGES, {}).setdefault(section, []).append((kind, text))


def messages(section: str) -> None:
    """Say what the last action in `section` (sources, own, installed) did, kept across its rerun."""
    for kind, text in st.session_state.get(MESSAGES, {}).pop(section, []):
        SAY.get(kind, st.info)(plain(text, 600))


@st.cache_resource(show_spinner=False)
def tidy_once() -> int:
    """Clear the leftovers of installs and uploads whose process is gone, once per server."""
    try:
        return model_home.remove_leftovers()
    except OSError:
        return 0


@st.cache_data(ttl=600, show_spinner=False)
def host_answers(url: str) -> bool:
    """Whether the host of `url` accepts a connection (checked once, quickly; kept ten minutes)."""
    return install.host_reachable(url, timeout=2)


def _published(row: dict) -> str:
    published = row.get("published") or {}
    top1, top5 = published.get("top1"), published.get("top5")
    if not isinstance(top1, (int, float)) or not isinstance(top5, (int, float)):
        return ""
    return f"published top-1 {top1:.1%}, top-5 {top5:.1%} ({plain(published.get('split') or 'ImageNet validation')})"


def _progress_reporter(bar, label: str):
    def report(event: dict) -> None:
        done, total = event.get("done") or 0, event.get("total") or 0
        phase = {"download": "Downloading", "checksum": "Checking", "convert": "Converting",
                 "write": "Writing"}.get(event.get("phase"), "Working on")
        text = f"{phase} {label}"
        if event.get("phase") == "download" and total:
            text += f": {format_bytes(done)} of {format_bytes(total)}"
            if event.get("eta") is not None:
                text += f", about {format_duration(event['eta'])} left"
        bar.progress(min(1.0, done / total) if total else 0.0, text=text)
    return report


def _install_source(row: dict, file=None, name: str | None = None, classes: str = "") -> None:
    """install.install for one source, with a progress bar; says what happened after the rerun."""
    bar = st.progress(0.0, text=f"Installing {row['file_name']}...")
    classes_file = None
    try:
        with user_errors() as outcome:
            if file is not None and not Path(file).expanduser().is_file():
                raise sources.PretrainedError(f"{file} is not a file on this machine: give the full path of the "
                                              f"{row['file_name']} file (or of a file of the same structure).")
            if classes.strip():
                folder = own_model.upload_folder()
                classes_file = folder / "classes.txt"
                fileio.write_text_atomic(classes_file, classes)
            result = install.install(row["source"], file=file, name=(name or "").strip() or None,
                                     classes_file=classes_file, progress=_progress_reporter(bar, row["file_name"]))
    finally:
        bar.empty()
        if classes_file is not None:
            own_model.discard_upload(classes_file)
    if outcome.failed:
        return
    if result["checksum_match"]:
        _say_next("sources", "success", f"Installed {result['name']}: the published {row['file_name']} (checksum "
                  f"verified), converted in {format_duration(result['seconds'])}. Every page can use it now.")
    else:
        _say_next("sources", "warning", f"Installed {result['name']} as your own model: the file has "
                  f"{row['title']}'s structure but is not the published file (its checksum differs), with "
                             f"{result['num_classes']} classes.")
    st.rerun()


def _safe_file_name(name: str, default: str) -> str:
    base = Path(str(name)).name
    return base if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._ -]{0,120}", base) else default


def source_card(row: dict) -> None:
    """One ImageNet source: what it is, its size, licence and accuracy; installed, or how to install it."""
    key = row["source"]
    with st.container(border=True):
        head = st.columns([4, 1])
        head[0].markdown(f"**{plain(row['title'])}**")
        if row["installed"]:
            head[1].badge("installed", color="green", icon=":material/check_circle:")
        else:
            head[1].badge("not installed", color="gray", icon=":material/cloud_off:")
        st.write(plain(row["what"], 400))
        facts = [f"`{row['file_name']}`, {format_bytes(row['bytes'])}", _published(row),
                 f"licence: {plain(row['licence'], 300)}"]
        st.caption("  \n".join(f for f in facts if f) + (f"  \n[{plain(row['home'], 200)}]({row['home']})"
                                                         if row.get("home", "").startswith("https://") else ""))
        if row["installed"]:
            verified = {True: "checksum verified", False: "not the published checksum", None: ""}[
                row.get("checksum_match")]
            st.caption(f"On disk: {format_bytes(row.get('installed_bytes'))}" + (f", {verified}" if verified else "")
                       + f". Use it as `{row['model_name']}` on every page and in every command.")
            return
        if not row["reader_available"]:
            st.warning(f"Reading this file needs {plain(row['needs'])}, which is not installed here. Install it "
                       f"with: {plain(row['install_hint'] or sources.INSTALL_EXTRA, 300)}. Everything else in the "
                       "app works without it.", icon=":material/extension:")
            return
        if host_answers(row["url"]):
            if st.button(f"Download ({format_bytes(row['bytes'])})", key=f"models_download_{key}", type="primary",
                         icon=":material/download:"):
                _install_source(row)
        else:
            st.caption(f":material/wifi_off: {plain(row['url'].split('/')[2])} does not answer from this machine, "
                       "so there is no download here; fetch the file on a connected machine and give it below.")
        _have_the_file(row)


def _have_the_file(row: dict) -> None:
    key = row["source"]
    with st.expander(f"I have the file ({row['file_name']})", icon=":material/folder_open:"):
        how = st.radio("Where is it?", ["A path on this machine", "Upload"], horizontal=True,
                       key=f"models_{key}_how")
        if how == "Upload":
            upload = st.file_uploader(f"The {row['file_name'].rsplit('.', 1)[-1]} file",
                                      type=[row["file_name"].rsplit(".", 1)[-1]], key=f"models_{key}_upload",
                                      max_upload_size=UPLOAD_MB["source"])
            path = None
        else:
            upload = None
            path = st.text_input("Path of the file", key=f"models_{key}_path",
                                 placeholder=f"e.g. ~/Downloads/{row['file_name']}")
        with st.popover("If it is not the published file (your own fine-tuned copy)", icon=":material/tune:"):
            name = st.text_input("Install it as", key=f"models_{key}_name", placeholder=install.own_name(key))
            classes = st.text_area("Its class names, one per line in output order (else numbered)",
                                   key=f"models_{key}_classes", height=100)
        # Never disabled: a path typed and not yet entered counts when the button is clicked.
        if st.button("Install from this file", key=f"models_{key}_install", icon=":material/install_desktop:"):
            if not (upload or (path or "").strip()):
                st.warning("Give the file's path on this machine, or upload it, first.", icon=":material/info:")
            elif upload is not None:
                folder = own_model.upload_folder()
                file = folder / _safe_file_name(upload.name, row["file_name"])
                try:
                    with user_errors():
                        fileio.write_bytes_atomic(file, upload.getvalue())
                        _install_source(row, file=file, name=name, classes=classes)
                finally:
                    own_model.discard_upload(file)
            else:
                _install_source(row, file=path.strip(), name=name, classes=classes)


# --- your own models ---------------------------------------------------------------------------


def _forget_opened() -> None:
    held = st.session_state.pop(OPENED, None)
    if held and held.get("upload"):
        own_model.discard_upload(held["upload"])


def open_own_model() -> None:
    """Open a .keras or .h5 classifier (upload or path); once open, the form that installs it."""
    if OPENED in st.session_state:
        _install_form(st.session_state[OPENED]["opened"])
        return
    st.caption("A Keras image classifier you trained (a `.keras` file, or a legacy `.h5`). It is checked before "
               "anything in it is loaded: files that carry code (Lambda layers, custom objects) are refused.")
    how = st.radio("From", ["Upload", "A path on this machine"], horizontal=True, key="models_own_how")
    if how == "Upload":
        upload = st.file_uploader("Model file (.keras or .h5)", type=["keras", "h5", "hdf5"], key="models_own_upload",
                                  max_upload_size=UPLOAD_MB["own"],
                                  help=f"Up to {UPLOAD_MB['own']} MB; give a larger file's path instead")
        path = None
    else:
        upload = None
        path = st.text_input("Path of the model file", key="models_own_path", placeholder="e.g. ~/models/flowers.keras")
    if not st.button("Open", key="models_own_open", icon=":material/file_open:", type="primary"):
        return
    if not (upload or (path or "").strip()):
        st.warning("Upload the model file, or give its path on this machine, first.", icon=":material/info:")
        return
    saved = None
    with st.spinner("Checking and loading the model safely..."), user_errors() as outcome:
        if upload is not None:
            saved = own_model.save_upload(upload.getvalue(), upload.name)
            opened = own_model.open_file(saved, upload.name)
        else:
            opened = own_model.open_file(path.strip())
    if outcome.failed:
        if saved is not None:
            own_model.discard_upload(saved)
        return
    st.session_state[OPENED] = {"opened": opened, "upload": saved}
    st.session_state["models_own_name"] = own_model.suggested_name(opened.file_name)
    st.session_state["models_own_classes"] = "\n".join(opened.class_names or [])
    st.session_state["models_own_preprocessing"] = own_model.choice_of(opened.preprocessing or {})
    st.rerun()


def _install_form(opened: own_model.Opened) -> None:
    with st.container(border=True):
        st.markdown(f"**{plain(opened.file_name)}**: checked and loaded safely. It takes {opened.input_size}x"
                    f"{opened.input_size}-pixel RGB images and gives {opened.num_classes} class probabilities.")
        if not opened.has_convolution:
            st.caption(":material/info: It has no convolution, so Grad-CAM, activation maps and conv1 filters "
                       "cannot be shown for it; its predictions can.")
        found = "its class names came with it (sidecar); check them" if opened.class_names else \
            "no class names came with it: give them"
        with st.form("models_own_form", border=False):
            name = st.text_input("Name it (lower-case letters, digits, '.', '_', '-')", key="models_own_name",
                                 max_chars=64)
            classes = st.text_area(f"Class names, one per line in output order ({opened.num_classes}; {found})",
                                   key="models_own_classes", height=150)
            choice = st.selectbox("How were its training images scaled?", list(own_model.PREPROCESSING),
                                  format_func=lambda c: own_model.PREPROCESSING[c][0], key="models_own_preprocessing",
                                  index=None, placeholder="Choose the preprocessing the model was trained with",
                                  help=glossary.help("preprocessing"))
            replace = st.checkbox("Replace an installed model of the same name", key="models_own_replace")
            submitted = st.form_submit_button("Install", type="primary", icon=":material/install_desktop:")
        if st.button("Cancel", key="models_own_cancel", icon=":material/close:"):
            _forget_opened()
            st.rerun()
    if not submitted:
        return
    if choice is None:
        st.error("Choose how its training images were scaled (\"How were its training images scaled?\"): the app gives "
                 "the model its pixels the way it saw them in training.", icon=":material/error:")
        return
    with user_errors():
        own_model.install(opened, name.strip(), classes, choice, replace=replace)
        _forget_opened()
        for key in ("models_own_name", "models_own_classes", "models_own_preprocessing", "models_own_replace"):
            st.session_state.pop(key, None)
        _say_next("own", "success", f"Installed {name.strip()}: pick it as the model on Classify, Evaluate or Your "
                  f"classes, or give it as MODEL on the command line.")
        st.rerun()


# --- installed ---------------------------------------------------------------------------------


def installed_list() -> None:
    """Every installed model with what it is, and a way to remove it."""
    rows = installed_models()
    if not rows:
        st.info(f"No models installed yet (they are kept in {plain(str(locations.models_root()), 200)}; set "
                "ALEXNET_MODELS_DIR to keep them elsewhere).", icon=":material/inventory_2:")
        return
    for row in rows:
        record = row["record"]
        kind = "ImageNet" if record.get("kind") == "pretrained" else "your own"
        names = record.get("class_names") if isinstance(record.get("class_names"), list) else []
        size = (record.get("preprocessing") or {}).get("input_size") if isinstance(record.get("preprocessing"),
                                                                                    dict) else None
        when = record.get("installed")
        with st.container(border=True):
            cols = st.columns([5, 1])
            cols[0].markdown(f"**{plain(row['name'])}** ({kind}): {plain(record.get('title') or '', 120)}")
            cols[0].caption(", ".join(part for part in (
                f"{len(names):,} classes" if names else "", f"{size}x{size} px" if isinstance(size, int) else "",
                format_bytes(row["bytes"]), time.strftime("installed %Y-%m-%d %H:%M", time.localtime(when))
                if isinstance(when, (int, float)) else "") if part))
            with cols[1].popover("Remove", icon=":material/delete:"):
                st.write(f"Remove {plain(row['name'])}? Its converted file is deleted; the file it came from is "
                         "not touched.")
                if st.button("Remove", key=f"models_remove_{row['name']}", type="primary"):
                    with user_errors():
                        model_home.remove(row["name"])
                        _say_next("installed", "success", f"Removed {row['name']}.")
                        st.rerun()
