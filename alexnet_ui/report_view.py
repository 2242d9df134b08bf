"""The report to hand over, from the app: a button that builds analysis/report.py's HTML file for
some runs (a progress bar with its steps while it builds), then offers it to download. A built
report is kept in the session for the runs' file versions, so drawing the page again offers it at
once, and a run that changes (a new epoch, a new name) is built again on request."""

from __future__ import annotations

# Imports inside functions are deliberate: building a report loads TensorFlow (the model,
# Grad-CAM) on first use, so importing this module (the app's pages) stays light.
import os
import re
from pathlib import Path

import streamlit as st

from alexnet_core.store import layout
from alexnet_ui.feedback import user_errors

READ = (layout.CONFIG, layout.STATUS, layout.METRICS, layout.STEPS, layout.MODEL, layout.LABEL)  # what a report reads


def versions(run_dirs: list) -> tuple:
    """The version of everything a report of `run_dirs` reads: per run, its folder and each file's
    (size, modification time), None for a file that is not there."""
    stamp = []
    for run_dir in run_dirs:
        files = []
        for name in READ:
            try:
                info = os.stat(Path(run_dir) / name)
                files.append((info.st_size, info.st_mtime_ns))
            except OSError:
                files.append(None)
        stamp.append((str(Path(run_dir).resolve()), tuple(files)))
    return tuple(stamp)


def file_name(run_dirs: list) -> str:
    """report-RUN.html, report-RUN-and-2-more.html: a name safe on every system."""
    first = re.sub(r"[^A-Za-z0-9._-]", "_", Path(run_dirs[0]).name) or "run"
    more = f"-and-{len(run_dirs) - 1}-more" if len(run_dirs) > 1 else ""
    return f"report-{first}{more}.html"


def _load(run_dir: str):
    """A run's model from the app's cache (loaded once per file version, shared by the sessions)."""
    from alexnet_ui.loaders import loaded_model

    return loaded_model(run_dir)[0]


def report_button(run_dirs: list, key: str) -> None:
    """Build the report of `run_dirs` on a click, with a progress bar, then offer it to download;
    once built for these runs' versions, the download is offered at once."""
    from alexnet_core.analysis import report

    run_dirs = [Path(d) for d in run_dirs]
    if not run_dirs:
        return
    stamp = versions(run_dirs)
    slot = st.empty()
    built = st.session_state.get(f"report_{key}")
    if not built or built["stamp"] != stamp:
        which = "these runs" if len(run_dirs) > 1 else "this run"
        if not slot.button("Build the report", icon=":material/description:", key=f"report_go_{key}",
                           help=f"One HTML file about {which} to hand over: model card, headline figures, curves, "
                                "evaluation with Grad-CAM, settings"
                                + (", and a comparison" if len(run_dirs) > 1 else "")
                                + ". It opens offline in any browser; print it from there for a PDF."):
            return
        bar = slot.progress(0.0, text="Building the report...")
        with user_errors(limit=400) as outcome:
            document, _ = report.build(run_dirs, load=_load, progress=lambda share, text: bar.progress(
                share, text=f"Building the report: {text}"))
        if outcome.failed:
            slot.empty()
            return
        built = {"stamp": stamp, "data": document.encode("utf-8")}
        st.session_state[f"report_{key}"] = built
    slot.download_button(f"Report (HTML, {len(built['data']) / 2**20:.1f} MiB)", built["data"], file_name(run_dirs),
                         mime="text/html", icon=":material/download:", key=f"report_dl_{key}", on_click="ignore",
                         help="One file that opens offline in any browser, with no server; print it from the "
                              "browser for a PDF.")
