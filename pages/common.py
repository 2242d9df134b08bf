"""Streamlit helpers shared by the pages: cached loaders and the device banner."""

from __future__ import annotations

import gc
import json

import pandas as pd
import streamlit as st


def page_setup() -> None:
    """First call of every page.

    Streamlit treats an app with a `pages/` folder as a legacy multipage app until
    `st.navigation` has run once in the server process, so a deep link opened first
    after a restart would run the page without app.py's navigation. Leave that mode
    and rerun through app.py.
    """
    try:
        from streamlit.runtime.pages_manager import PagesManager
    except ImportError:  # pragma: no cover - a Streamlit without the legacy mode
        return
    if PagesManager.uses_pages_directory:
        PagesManager.uses_pages_directory = False
        st.rerun()


@st.cache_resource(show_spinner=False)
def device_info() -> dict:
    from alexnet_core.devices import describe

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
    from alexnet_core.anatomy import layer_table
    from alexnet_core.variants import build_model

    model = build_model(variant, **json.loads(switches_json))
    table = layer_table(model)
    del model
    gc.collect()
    return table


def shape_text(shape) -> str:
    return " × ".join(str(s) for s in shape)
