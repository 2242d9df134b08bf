"""Epoch time-travel: a run's per-epoch snapshots as one animated figure (confusion matrix,
per-class accuracy, conv1, probe predictions), drawn on the Evaluate and Runs pages."""

from __future__ import annotations

# Imports inside functions are deliberate: TensorFlow and Keras, and the modules that reach them,
# load on first use, so importing this module (the app's pages, the command line) stays light.
from pathlib import Path

import streamlit as st

from alexnet_core.store import fileio, layout
from alexnet_ui.text import plain


@st.cache_data(show_spinner="Drawing every epoch...", max_entries=4)
def _timeline(run_dir: str, stamp: float, completed: int, classes: tuple, total: int | None):
    """(figure or None, notes, images per epoch, probe size) of a run's snapshots, per folder version."""

    from alexnet_core.analysis.charts import epoch_timeline_figure
    from alexnet_core.train.snapshots import read_timeline

    timeline = read_timeline(Path(run_dir), completed, len(classes))
    if not timeline:
        return None, timeline.notes, 0, 0
    probe = 0 if timeline.probe_images is None else len(timeline.probe_images)
    return (epoch_timeline_figure(timeline, list(classes), total), timeline.notes,
            len(timeline.epochs[-1].labels), probe)


def epoch_timeline(run_dir, key: str, elsewhere: str = "") -> bool:
    """A run's epochs as one animated figure with a slider and Play, or a note saying why there
    is none. True if drawn. `elsewhere`: what else the page measures, which these figures are not."""

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
    st.caption(differs_from_headline(run_dir, config))
    return True


def differs_from_headline(run_dir: Path, config: dict) -> str:
    """Why the frames' in-training figures are not the model's headline figure, naming the headline."""
    from alexnet_core.store import catalog

    precision = config.get("mixed_precision")
    under = f"under the run's {precision} precision" if precision and precision != "off" else "in float32"
    words = catalog.headline_words(catalog.headline_accuracy(run_dir))
    if words is None:
        return (f"These are in-training figures: each epoch's weights, measured as it ended {under}. The model has "
                "no headline figure yet (Evaluate measures it).")
    return (f"These are in-training figures: each epoch's weights, measured as it ended {under}. The model's "
            f"headline figure is {plain(words['sentence'])}: the saved model, measured after training, which is "
            "why the last frame can differ from it by a few tenths of a point.")
