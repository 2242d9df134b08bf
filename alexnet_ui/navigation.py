"""How a page begins, and how it ends early when it cannot go on.

app.py declares the pages (st.navigation) and the page config; every page script runs inside
that navigation, so a page needs no set-up of its own beyond its header. Why Streamlit could run
a page without app.py's navigation, and how the app prevents it, is in
alexnet_ui/streamlit_internals.py.
"""

from __future__ import annotations

# Imports inside functions are deliberate: TensorFlow and Keras, and the modules that reach them,
# load on first use, so importing this module (the app's pages, the command line) stays light.
import streamlit as st

from alexnet_ui.loaders import loaded_model
from alexnet_ui.text import plain
from alexnet_ui.widgets import device_banner


def page_setup(title: str | None = None, caption: str | None = None) -> None:
    """First call of every page: its title and the line under it, when given."""
    if title is not None:
        st.title(title)
    if caption is not None:
        st.caption(caption)


def stop_page() -> None:
    """The page has nothing more to show: the sidebar's device banner (every page ends with it),
    then the script stops here."""
    device_banner()
    st.stop()


def loaded_model_or_stop(spec: str):
    """loaded_model(spec), or a message saying why the model cannot be used and the page stops."""
    from alexnet_core.predict.inference import ModelLoadError

    try:
        return loaded_model(spec)
    except ModelLoadError as exc:
        st.error(f"This model cannot be used: {plain(exc, 600)}", icon=":material/error:")
        stop_page()
