"""Streamlit helpers shared by the pages: cached loaders and the device banner."""

from __future__ import annotations

import gc
import json
import re

import pandas as pd
import streamlit as st

_MARKDOWN = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$:=])")


def _short_paths(text: str) -> str:
    """Server folders in a message named the way the app names them, not as absolute paths."""
    from pathlib import Path

    from alexnet_core.locations import ASSETS

    try:
        places = {str(runs_root().resolve()): "runs", str(ASSETS.parent): ".", str(Path.home()): "~"}
    except Exception:  # a broken runs folder setting must not break every message
        places = {str(ASSETS.parent): ".", str(Path.home()): "~"}
    for place in sorted(places, key=len, reverse=True):
        if len(place) > 1:
            text = text.replace(place, places[place])
    return text


def plain(text, limit: int = 200) -> str:
    """Text from a user, a file or a folder name, safe inside Markdown: server folders shortened,
    special characters escaped (no links, images, icons or colours), one line, cut to `limit`."""
    text = _short_paths(" ".join(str(text).split()))
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return _MARKDOWN.sub(r"\\\1", text)


def cpu_friendly_variants() -> str:
    """The variants sized for a CPU, as Markdown prose: "`compact` and `compact-hires`"."""
    from alexnet_core.models.variants import CPU_FRIENDLY

    names = [f"`{name}`" for name in CPU_FRIENDLY]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def page_setup() -> None:
    """First call of every page."""
    leave_legacy_pages_mode()


def leave_legacy_pages_mode() -> None:
    """The one workaround for Streamlit's legacy multipage mode (streamlit/streamlit#10276).

    Streamlit treats an app with a `pages/` folder as a legacy multipage app until
    `st.navigation` has run once in the server process (it then sets the private class flag
    `PagesManager.uses_pages_directory` to False). A deep link opened first after a restart
    would run the page without app.py's navigation, so the page clears the flag itself and
    reruns through app.py. tests/test_pages.py::test_streamlit_still_has_the_legacy_pages_flag
    fails if an upgrade removes or renames the flag.
    """
    try:
        from streamlit.runtime.pages_manager import PagesManager
    except ImportError:  # pragma: no cover - a Streamlit without the legacy mode
        return
    if PagesManager.uses_pages_directory:
        PagesManager.uses_pages_directory = False
        if not st.session_state.get("_navigation_restored"):
            # Once per session: a second rerun would swallow the widget event that caused it.
            st.session_state["_navigation_restored"] = True
            st.rerun()


@st.cache_resource(show_spinner=False)
def device_info() -> dict:
    from alexnet_core.train.devices import describe

    return describe()


def format_bytes(n: int | None) -> str:
    if n is None:
        return "unknown"
    for unit in ("GiB", "MiB", "KiB"):
        size = {"GiB": 2**30, "MiB": 2**20, "KiB": 2**10}[unit]
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def device_banner() -> None:
    """The device this app trains and predicts on, in the sidebar."""
    info = device_info()
    icon = ":material/memory:" if info["kind"] == "GPU" else ":material/developer_board:"
    count = f"{info['count']} x " if info["count"] > 1 else ""
    with st.sidebar:
        st.caption(f"{icon} **{info['kind']}**: {count}{info['name']}  \n"
                   f"memory {format_bytes(info['memory_bytes'])}, {info['cores']} CPU cores")


@st.cache_data(show_spinner="Building the network...", max_entries=64)
def variant_table(variant: str, switches_json: str) -> pd.DataFrame:
    """Layer table of `variant` with switches (a JSON object, so the cache key is stable)."""
    from alexnet_core.models.anatomy import layer_table
    from alexnet_core.models.variants import build_model

    model = build_model(variant, **json.loads(switches_json))
    table = layer_table(model)
    del model
    gc.collect()
    return table


def shape_text(shape) -> str:
    return " × ".join(str(s) for s in shape)


def runs_root():
    from alexnet_core.store.layout import runs_root as root

    return root()


def all_runs() -> list[dict]:
    """The user's runs, then the bundled ones (a user run with the same id wins)."""
    from alexnet_core.store.catalog import all_runs as rows

    return rows(runs_root())


def run_dir_of(run_id: str):
    """The folder of a run id from the user (URL or widget), validated; None if unknown."""
    from alexnet_core.store.catalog import find_run

    return find_run(run_id, runs_root())


STATE_BADGES = {
    "created": ("gray", ":material/schedule:"), "running": ("blue", ":material/sprint:"), "starting": ("blue", ":material/hourglass_top:"),
    "finished": ("green", ":material/check_circle:"), "stopped": ("orange", ":material/pause_circle:"),
    "interrupted": ("orange", ":material/warning:"), "failed": ("red", ":material/error:"),
    "diverged": ("red", ":material/trending_up:"), "damaged": ("red", ":material/report:"),
}


def state_badge(state: str) -> None:
    color, icon = STATE_BADGES.get(state, ("gray", ":material/help:"))
    st.badge(state, color=color, icon=icon)


def format_duration(seconds) -> str:
    if seconds is None or seconds != seconds:
        return "-"
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h {m:02d}m" if h else f"{m}m {s:02d}s"


# --- Models -------------------------------------------------------------------------------


def model_choices() -> dict[str, str]:
    """{spec: label} of the models a user can question: the bundled demo, then finished runs."""
    from alexnet_core.locations import DEMO_RUN
    from alexnet_core.store import catalog
    from alexnet_core.store.catalog import is_active
    from alexnet_core.store.layout import MODEL

    rows = all_runs()
    choices = {}
    if (DEMO_RUN / MODEL).exists():
        variant = next((row["variant"] for row in rows if row["path"] == str(DEMO_RUN)), None)
        choices["demo"] = f"Bundled demo model ({variant}, CIFAR-10)" if isinstance(variant, str) else \
            "Bundled demo model (CIFAR-10)"
    for row in rows:
        if row["has_model"] and row["path"] != str(DEMO_RUN) and not is_active(row):
            choices[row["path"]] = f"{catalog.display_name(row)} ({row['variant']}, {row['state']})"
    return choices


def model_stamp(spec: str) -> float:
    from alexnet_core.predict.inference import resolve_model_path

    try:
        return resolve_model_path(spec)[0].stat().st_mtime
    except Exception:
        return 0.0


@st.cache_resource(show_spinner="Loading the model...", max_entries=4)
def _loaded_model(spec: str, stamp: float):
    from alexnet_core.predict.inference import Predictor, load_model

    loaded = load_model(spec)
    return loaded, Predictor(loaded)


def loaded_model(spec: str):
    """(LoadedModel, Predictor), cached per model file version; shared read-only by all sessions."""
    return _loaded_model(spec, model_stamp(spec))


def loaded_model_or_stop(spec: str):
    """loaded_model(spec), or a message saying why the model cannot be used and the page stops."""
    from alexnet_core.predict.inference import ModelLoadError

    try:
        return loaded_model(spec)
    except ModelLoadError as exc:
        st.error(f"This model cannot be used: {plain(exc, 600)}", icon=":material/error:")
        device_banner()
        st.stop()


# --- Images from disk: always through the safe decoder ------------------------------------


def _file_stamp(path) -> tuple | None:
    """(size, mtime) of a file, so a memo is per file version; None if it cannot be stat'ed."""
    import os

    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_size, info.st_mtime_ns


def _named(message: str, path, label: str) -> str:
    """A read_image message about `path` that names it as `label` (not by its server folder)."""
    return message.replace(str(path), label, 1)


@st.cache_data(show_spinner=False, max_entries=100_000)
def _image_problem(path: str, stamp, label: str | None) -> str | None:
    from alexnet_core.inputs.datasets import image_problem as problem

    return problem(path, label)


def image_problem(path, label: str | None = None) -> str | None:
    """None if the file decodes through the safe decoder (inference.read_image: regular files
    only, size and pixel limits), else what is wrong with it, naming it as `label` (default: its
    file name). Memoised per file version, so a page checks each file once."""
    return _image_problem(str(path), _file_stamp(path), label)


@st.cache_data(show_spinner=False, max_entries=512)
def _image_from_disk(path: str, stamp, max_side: int):
    from alexnet_core.inputs.images import ImageDecodeError, read_image

    try:
        return thumbnail(read_image(path), max_side)
    except ImageDecodeError as exc:
        return str(exc)


def image_from_disk(path, max_side: int | None = 768, label: str | None = None):
    """An image file to show: its pixels through the safe decoder, at most `max_side` pixels a
    side (memoised per file version), or as decoded with None (not memoised); or (a str) what is
    wrong with it, naming it as `label` (default: its file name). Never raises for a bad file."""
    from pathlib import Path

    from alexnet_core.inputs.images import ImageDecodeError, read_image

    if max_side is None:
        try:
            image = read_image(path)
        except ImageDecodeError as exc:
            image = str(exc)
    else:
        image = _image_from_disk(str(path), _file_stamp(path), max_side)
    return _named(image, path, label or Path(path).name) if isinstance(image, str) else image


def damaged_note(problem: str, container=None) -> None:
    """One damaged file, named with what is wrong with it, where its picture would be."""
    (container or st).caption(f":material/broken_image: Damaged file, not shown: {plain(problem, 300)}")


def thumbnail(image, max_side: int = 768):
    """`image` shrunk to at most `max_side` pixels a side (what the page shows and overlays on)."""
    import numpy as np
    from PIL import Image

    picture = Image.fromarray(image)
    picture.thumbnail((max_side, max_side))
    return np.asarray(picture)


def fit_for_display(image, max_side: int = 768, max_ratio: float = 2.0):
    """An image to show: at most `max_side` pixels a side, and padded (white) to at most
    `max_ratio` tall, so a 20x900 strip cannot stretch the page."""
    import numpy as np
    from PIL import Image

    picture = Image.fromarray(thumbnail(image, max_side))
    w, h = picture.size
    if h > max_ratio * w:
        canvas = Image.new("RGB", (int(np.ceil(h / max_ratio)), h), (255, 255, 255))
        canvas.paste(picture, ((canvas.width - w) // 2, 0))
        picture = canvas
    return np.asarray(picture)


def heat_legend(container=None) -> None:
    """The Grad-CAM colour scale, with what its ends mean."""
    from alexnet_core.analysis.explain import heat_legend as strip

    where = container or st
    where.image(strip(), width="stretch")
    where.caption("Grad-CAM colours: :blue[**blue**] where the network looked least, through cyan and yellow, "
                  "to :red[**red**] where it looked most for the chosen class.")


def data_choices(with_download: bool = False) -> dict[str, str]:
    """{source: label} of the data sources; CIFAR-10 only when it is downloaded, unless
    `with_download` (training may download it)."""
    from alexnet_core.inputs.data import cifar10_available
    from alexnet_core.inputs.datasets import data_root, list_datasets

    choices = {"sample": "Bundled sample (CIFAR-10 validation images)"}
    if with_download or cifar10_available():
        choices["cifar10"] = "CIFAR-10" if with_download else "CIFAR-10 (downloaded)"
    root = data_root()
    for name in list_datasets(root):  # built on the Your classes page
        choices[str(root / name)] = f"Your classes: {name}"
    choices["folder"] = "An image folder..."
    return choices


def pick_model(key: str) -> str | None:
    choices = model_choices()
    if not choices:
        st.info("No trained model yet: train one on the Train page.", icon=":material/info:")
        return None
    return st.selectbox("Model", list(choices), format_func=choices.get, key=key)


# --- Epoch time-travel (a run's snapshots) ---------------------------------------------------


@st.cache_data(show_spinner="Drawing every epoch...", max_entries=4)
def _timeline(run_dir: str, stamp: float, completed: int, classes: tuple, total: int | None):
    """(figure or None, notes, images per epoch, probe size) of a run's snapshots, per folder version."""
    from pathlib import Path

    from alexnet_core.analysis.charts import epoch_timeline_figure
    from alexnet_core.train.snapshots import read_timeline

    timeline = read_timeline(Path(run_dir), completed, len(classes))
    if not timeline:
        return None, timeline.notes, 0, 0
    probe = 0 if timeline.probe_images is None else len(timeline.probe_images)
    return (epoch_timeline_figure(timeline, list(classes), total), timeline.notes,
            len(timeline.epochs[-1].labels), probe)


def epoch_timeline(run_dir, key: str, elsewhere: str = "") -> bool:
    """A run's epochs as one animated figure (confusion matrix, per-class accuracy, conv1, probe
    predictions) with a slider and Play, or a note saying why there is none. True if drawn.
    `elsewhere`: what else the page measures, which these figures are not."""
    from pathlib import Path

    from alexnet_core.store import fileio, layout
    from alexnet_core.train.snapshots import FOLDER

    run_dir = Path(run_dir)
    config = fileio.read_object(run_dir / layout.CONFIG)
    classes = config.get("class_names")
    folder = run_dir / FOLDER
    if not isinstance(classes, list) or not classes or not folder.is_dir():
        st.info("This run kept no epoch snapshots. Runs trained with this version of the app keep one after "
                "every epoch, unless they have no validation images.", icon=":material/history:")
        return False
    completed = len(layout.read_metrics(run_dir))
    total = config.get("epochs") if isinstance(config.get("epochs"), int) else None
    fig, notes, images, probe = _timeline(str(run_dir), folder.stat().st_mtime, completed,
                                          tuple(str(c) for c in classes), total)
    for note in notes:
        st.caption(f":material/report: {plain(note, 300)}")
    if fig is None:
        st.info("No epoch of this run has a readable snapshot yet.", icon=":material/history:")
        return False
    st.plotly_chart(fig, key=key, width="stretch", config={"displayModeBar": False})
    st.caption(f"Drag the slider or press Play to watch the model form. Each frame is the model at the end of "
               f"one epoch, measured on this run's own validation split ({images:,} images, recorded during "
               f"training{elsewhere})"
               + (f"; the {probe} probe images are fixed validation images, spread over the classes "
                  "(green: right, red: wrong)." if probe else "."))
    return True
