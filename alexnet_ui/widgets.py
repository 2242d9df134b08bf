"""Small pieces several pages draw the same way: a run's state badge and state text, the queue's
start on a page view, the device banner, the model picker, the Grad-CAM colour legend and the note
where a damaged picture would be."""

from __future__ import annotations

# Imports inside functions are deliberate: TensorFlow and Keras, and the modules that reach them,
# load on first use, so importing this module (the app's pages, the command line) stays light.
import streamlit as st

from alexnet_core.errors import AlexNetError
from alexnet_core.store import layout
from alexnet_core.train import queue
from alexnet_ui.loaders import device_info, model_choices, runs_root
from alexnet_ui.text import format_bytes, plain

STATE_BADGES = {
    "created": ("gray", ":material/schedule:"), "queued": ("violet", ":material/queue:"), "running": ("blue", ":material/sprint:"), "starting": ("blue", ":material/hourglass_top:"),
    "finished": ("green", ":material/check_circle:"), "stopped": ("orange", ":material/pause_circle:"),
    "interrupted": ("orange", ":material/warning:"), "failed": ("red", ":material/error:"),
    "diverged": ("red", ":material/trending_up:"), "damaged": ("red", ":material/report:"),
}


def state_badge(state: str, text: str | None = None) -> None:
    color, icon = STATE_BADGES.get(state, ("gray", ":material/help:"))
    st.badge(text or state, color=color, icon=icon)


def state_text(row: dict) -> str:
    """A run's state in words for a table or a picker: 'queued #2' for a run waiting in the queue."""
    position = row.get("queue_position")
    return f"{row['state']} #{position}" if row.get("state") == layout.QUEUED and position else row["state"]


def start_queued() -> None:
    """Start the queued runs whose place is free, on every view of the Train and Runs pages, so a
    trainer that was killed does not strand the queue (cheap when the queue is empty)."""
    try:
        started = queue.advance(runs_root())
    except (AlexNetError, OSError) as exc:
        st.warning(f"The queue could not start its next run: {plain(exc, 400)}", icon=":material/queue:")
        return
    for run_dir in started:
        st.toast(f"The queue started {plain(run_dir.name, 120)}.", icon=":material/queue_play_next:")


def device_banner() -> None:
    """The device this app trains and predicts on, in the sidebar."""
    info = device_info()
    icon = ":material/memory:" if info["kind"] == "GPU" else ":material/developer_board:"
    count = f"{info['count']} x " if info["count"] > 1 else ""
    with st.sidebar:
        st.caption(f"{icon} **{info['kind']}**: {count}{info['name']}  \n"
                   f"memory {format_bytes(info['memory_bytes'])}, {info['cores']} CPU cores")


def pick_model(key: str) -> str | None:
    """The model to question (a spec for loaders.loaded_model), or None, with a note, if there is none."""
    choices = model_choices()
    if not choices:
        st.info("No trained model yet: train one on the Train page.", icon=":material/info:")
        return None
    return st.selectbox("Model", list(choices), format_func=choices.get, key=key)


def heat_legend(container=None) -> None:
    """The Grad-CAM colour scale, with what its ends mean."""
    from alexnet_core.analysis.explain import heat_legend as strip

    where = container or st
    where.image(strip(), width="stretch")
    where.caption("Grad-CAM colours: :blue[**blue**] where the network looked least, through cyan and yellow, "
                  "to :red[**red**] where it looked most for the chosen class.")


def damaged_note(problem: str, container=None) -> None:
    """One damaged file, named with what is wrong with it, where its picture would be."""
    (container or st).caption(f":material/broken_image: Damaged file, not shown: {plain(problem, 300)}")


def headline_metric(run_dir, container=None, caption: bool = True) -> dict | None:
    """A model's one headline accuracy, drawn the same way on every page (Home, Train, Evaluate,
    Runs, the epoch animation): the figure with its split as the label, and what it was measured
    on (images, views, precision) as the tooltip and, with `caption`, beneath. None (nothing
    drawn) for a run that has no recorded evaluation."""
    from alexnet_core.store import catalog

    words = catalog.headline_words(catalog.headline_accuracy(run_dir))
    if words:
        where = container or st
        where.metric(words["label"], words["value"], help=f"The model's headline figure: {words['sentence']}.")
        if caption:
            where.caption(f"The model's headline figure: {plain(words['sentence'])}.")
    return words
