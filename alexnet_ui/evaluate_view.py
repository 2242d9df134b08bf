"""The Evaluate page's parts: the data pickers, the evaluation (remembered per session), its
headline figures, the clickable confusion matrix (at many classes, such as ImageNet's 1,000,
restricted to the classes the user picks), the most confused pairs, grids of images with their
top 5 and Grad-CAM beside each photo, the searchable per-class report and the map of what the
network learned.

The parts a click changes (the matrix and its images, the Grad-CAM toggles, the class search, the
map) are fragments: a click reruns its own part, not the whole page, so the other charts are
neither recomputed nor sent to the browser again. Grad-CAM maps are computed in one batch per grid
and remembered per session."""

from __future__ import annotations

# Imports inside functions are deliberate: TensorFlow and Keras, and the modules that reach them,
# load on first use, so importing this module (the app's pages, the command line) stays light.
import threading
import weakref
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from alexnet_core.analysis.charts import confusion_figure, per_class_bars, topk_bars
from alexnet_core.errors import AlexNetError
from alexnet_core.predict.inference import top_k
from alexnet_core.settings.choices import AUTO_SPLIT, EVAL_SPLITS
from alexnet_ui import glossary
from alexnet_ui.feedback import user_errors
from alexnet_ui.images import side_by_side
from alexnet_ui.loaders import (
    data_choices,
    image_from_disk,
    loaded_model,
    model_choices,
    model_stamp,
    prepared_description,
)
from alexnet_ui.text import plain
from alexnet_ui.widgets import damaged_note, headline_metric, heat_legend

SOURCE_WORDS = {"sample": "the bundled sample", "cifar10": "CIFAR-10"}


def run_data(run_dir) -> tuple[str | None, float]:
    """(the data a run trained on, the share of it the run held out for validation): what
    Evaluate measures a run's model on by default, split as its training split it. (None, 0.1)
    for a model outside a run or a run whose settings cannot be read."""
    from alexnet_core.store.layout import read_config

    if run_dir is None:
        return None, DEFAULT_HELD_OUT
    try:
        config = read_config(run_dir)
    except (AlexNetError, OSError, ValueError):
        return None, DEFAULT_HELD_OUT
    share = config.get("val_split")
    share = float(share) if isinstance(share, (int, float)) and 0 <= share < 1 else DEFAULT_HELD_OUT
    return (config.get("data") if isinstance(config.get("data"), str) else None), share


DEFAULT_HELD_OUT = 0.1  # the validation share of a folder with no val/ when the run's own is not known


def same_data(a: str | None, b: str | None) -> bool:
    """Whether two data sources name the same data (a name such as 'sample', or the same folder)."""
    if not a or not b:
        return False
    if a == b:
        return True
    if a in ("sample", "cifar10") or b in ("sample", "cifar10"):
        return False
    try:
        return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()
    except (OSError, RuntimeError, ValueError):
        return False


def held_out_share(run_dir, data: str) -> float:
    """The validation share to split `data` with: the run's own when it is the run's data (a
    Your classes dataset trains holding out 20%: Evaluate holds out the same images), else 10%."""
    trained_on, share = run_data(run_dir)
    return share if same_data(trained_on, data) else DEFAULT_HELD_OUT


def data_pickers(data_column, split_column, run_dir=None, spec: str | None = None) -> tuple[str, str, bool]:
    """(data source or folder, split, flip averaging) picked in the two columns. A model picked
    anew starts on the data its run trained on, when that is one of the choices."""
    choices = data_choices()
    trained_on = run_data(run_dir)[0]
    if st.session_state.get("eval_data_for") != spec:
        st.session_state["eval_data_for"] = spec
        mine = next((c for c in choices if same_data(c, trained_on)), None)
        if mine is not None:
            st.session_state["eval_data"] = mine
    data = data_column.selectbox("Data", list(choices), format_func=choices.get, key="eval_data")
    if data == "folder":
        data = data_column.text_input("Folder", placeholder="/path/to/images (class folders inside, or a prepared "
                                      "dataset)", key="eval_folder").strip()
    described = prepared_description(data) if data not in ("sample", "cifar10") else None
    if described:  # a prepared dataset: how it was made
        data_column.caption(f":material/inventory_2: {plain(described, 600)}")
    split = split_column.selectbox("Split", [AUTO_SPLIT, *EVAL_SPLITS], key="eval_split",
                                   help="auto: test if the data has one, else validation")
    flip = split_column.toggle("Flip averaging", key="eval_flip", help=glossary.help("flip averaging"))
    return data, split, flip


def model_label(spec: str) -> str:
    return model_choices().get(spec, spec)


def run_evaluation(spec: str, data: str, split: str | None, flip: bool, val_split: float = DEFAULT_HELD_OUT):
    """Evaluate with a progress bar; remembered per session (and cached on disk across sessions).
    `val_split`: the share of a folder without val/ held out as its validation split."""
    from alexnet_core.analysis.evaluation import evaluate

    key = (spec, model_stamp(spec), data, split, flip, val_split)
    memo = st.session_state.setdefault("eval_results", {})
    if key not in memo:
        loaded, _ = loaded_model(spec)
        bar = st.progress(0.0, text="Evaluating...")
        result = evaluate(loaded, data, split, flip=flip, val_split=val_split, progress=lambda done, total: bar.progress(
            min(1.0, done / max(total, 1)), text=f"Evaluating {done:,}/{total:,} images"))
        bar.empty()
        memo.clear()
        st.session_state.pop(CAMS, None)  # Grad-CAM maps of the previous evaluation's images
        memo[key] = result
    return memo[key]


def headline_record(run_dir) -> dict | None:
    from alexnet_core.store import catalog

    return catalog.headline_accuracy(run_dir) if run_dir is not None else None


def measures_headline(record: dict | None, result, data: str, flip: bool) -> bool:
    """Whether this evaluation measured what the model's headline figure measured: the same data
    and split, as many images, the same views."""
    return bool(record) and same_data(record.get("data"), data) and record.get("split") == result.split \
        and record.get("n") == result.n and bool(record.get("flip")) == flip


def difference_words(result, record: dict, flip: bool) -> str:
    """Why this page's accuracy is not the headline's, in points and in words: other images (how
    many, and the noise a figure over that many has), other views."""
    from alexnet_core.store import catalog

    words = catalog.headline_words(record)
    diff = 100 * (result.accuracy() - float(record["accuracy"]))
    noise = 200 * np.sqrt(max(result.accuracy() * (1 - result.accuracy()), 1e-6) / max(result.n, 1))
    views = (", averaged with mirror images" if flip and not record.get("flip") else
             ", each judged once where the headline averages mirror images" if record.get("flip") and not flip else "")
    return (f"{diff:+.1f} points against the model's headline figure, {plain(words['sentence'])}. Not the same "
            f"measurement: these are {result.n:,} other images{views}, and a figure over {result.n:,} images is "
            f"only good to about ±{noise:.1f} points (two standard errors), so a gap of this size is "
            f"{'within' if abs(diff) <= noise else 'beyond'} that noise.")


def held_out_here(result, data: str) -> bool:
    """Whether the evaluated validation split is a share held out of a folder's own images (not
    a val/ folder, a prepared dataset's own split, or the sample's and CIFAR-10's)."""
    if result.split != "val" or data in ("sample", "cifar10"):
        return False
    folder = Path(data).expanduser()
    return not (folder / "val").is_dir() and not prepared_description(data)


def headline(result, spec: str, data: str, flip: bool, run_dir=None) -> None:
    """The evaluation's figures. Where it measured the model's headline data, the accuracy is the
    headline itself (widgets.headline_metric, as every page shows it); where it measured other
    images, the accuracy says next to it how and why it differs from the headline."""
    record = headline_record(run_dir)
    m = st.columns(4)
    own = f"{result.accuracy():.1%}" if result.n else "no images"
    if measures_headline(record, result, data, flip):
        headline_metric(run_dir, m[0], caption=False)
    else:
        m[0].metric("Accuracy here", own, help=glossary.help("accuracy"))
    m[1].metric("Top-5 accuracy", f"{result.top_k_accuracy(5):.1%}" if result.n else "no images",
                help=glossary.help("top-5"))
    m[2].metric("Images", f"{result.n:,}")
    m[3].metric("Split", result.split, help=glossary.help({"val": "validation split", "test": "test split",
                                                            "train": "training split"}.get(result.split, "held-out")))
    source_words = SOURCE_WORDS.get(data, "the folder " + plain(data, 80))
    held = f", {result.val_split:.0%} of each class held out as its run trained" if held_out_here(result, data) else ""
    measured = (f"Every figure on this page: {plain(model_label(spec))} on the {result.split} split of {source_words} "
                f"({result.n:,} images{held}){', averaged with mirror images' if flip else ''}.")
    if measures_headline(record, result, data, flip):
        st.caption(f"{measured} This is the data of the model's headline figure, so the accuracy is that figure.")
    elif record and result.n:
        st.caption(f"{measured} **{own} here: {difference_words(result, record, flip)}**")
    else:
        st.caption(f"{measured} This model has no recorded headline figure to compare with.")
    if result.note:
        st.info(plain(result.note, 600), icon=":material/folder_off:")


MATRIX_ALL = 30  # up to this many classes the matrix shows every one; beyond, the ones picked
MATRIX_DEFAULT = 20  # classes the picked matrix starts with
PAIRS = 20  # rows of the most-confused-pairs table
CELL = "eval_cell"  # the cell whose images are shown: (true, predicted) model class indices
SHOWN = "eval_cm_shown"  # the model classes along the drawn matrix's axes, in order
PICKED = "eval_matrix_classes"  # the classes picked for the matrix (many classes)
PICKED_FOR = "eval_matrix_for"  # the evaluation they were picked for


def _identity(result) -> tuple:
    return result.source, result.split, result.n, len(result.classes)


def default_matrix_classes(result, limit: int = MATRIX_DEFAULT) -> list[int]:
    """The classes a matrix over many starts with: those in the data (when they fit), then those
    of the most confused pairs, at most `limit`."""
    chosen = result.present()[:limit] if len(result.present()) <= limit else []
    for _, row in result.confused_pairs(4 * limit).iterrows():
        for c in (int(row["true_index"]), int(row["predicted_index"])):
            if c not in chosen and len(chosen) < limit:
                chosen.append(c)
    return sorted(chosen or result.present()[:limit])


def matrix_classes(result) -> list[int]:
    """The model classes the matrix shows: all of them up to MATRIX_ALL, else those the user picks."""
    total = len(result.classes)
    if total <= MATRIX_ALL:
        return list(range(total))
    if st.session_state.get(PICKED_FOR) != _identity(result) or not all(
            isinstance(c, int) and 0 <= c < total for c in st.session_state.get(PICKED) or []):
        st.session_state[PICKED] = default_matrix_classes(result)
        st.session_state[PICKED_FOR] = _identity(result)
    picked = st.multiselect(
        f"Classes in the matrix (of the model's {total:,})", range(total), key=PICKED, format_func=result.label,
        placeholder="Type a class name or its words", max_selections=60,
        help="The matrix of all the classes would be too large to read: pick the classes to compare. It starts "
             "with the classes in the data (when they are few) and those of the most confused pairs.")
    return sorted(int(c) for c in picked)


def _clicked() -> None:
    """The matrix was clicked: the cell under the click, mapped to the model's classes."""
    points = ((st.session_state.get("eval_cm") or {}).get("selection") or {}).get("points") or []
    shown = st.session_state.get(SHOWN) or []
    if points and shown:
        # Points are laid out row by row: index = true * classes + predicted.
        row, column = divmod(int(points[0]["point_index"]), len(shown))
        if row < len(shown) and column < len(shown):
            st.session_state[CELL] = (shown[row], shown[column])


def confusion_matrix(result) -> tuple[int, int] | None:
    """The matrix (of the picked classes when the model has many), clickable; returns the
    clicked cell (true class, predicted class) or None."""
    shown = matrix_classes(result)
    st.session_state[SHOWN] = shown
    cell = st.session_state.get(CELL)
    if cell and not (0 <= cell[0] < len(result.classes) and 0 <= cell[1] < len(result.classes)):
        cell = None  # left over from a model with more classes
    if not shown:
        st.info("Pick some classes above to draw their matrix.", icon=":material/grid_on:")
        return cell
    normalize = st.toggle("Row-normalised (share of each true class)", key="eval_normalize",
                          help=glossary.help("confusion matrix"))
    cm = result.confusion_matrix()
    many = len(result.classes) > MATRIX_ALL
    names = [result.label(i) for i in shown] if many else list(result.classes)
    part = cm[np.ix_(shown, shown)]
    at = (shown.index(cell[0]), shown.index(cell[1])) if cell and cell[0] in shown and cell[1] in shown else None
    st.plotly_chart(confusion_figure(part, names, normalize, selected=at), on_select=_clicked,
                    selection_mode="points", key="eval_cm", width="stretch", config={"displayModeBar": False})
    if many:
        rows = cm[shown].sum()
        outside = int(rows - part.sum())
        st.caption(f"{len(shown)} of the model's {len(result.classes):,} classes. Of the {int(rows):,} images of these "
                   f"true classes, {outside:,} were predicted as a class not drawn here"
                   f"{' (row shares still count them)' if normalize else ''}.")
        nonzero = np.argwhere(cm)
        table = pd.DataFrame({"true": [result.classes[i] for i in nonzero[:, 0]],
                              "predicted": [result.classes[j] for j in nonzero[:, 1]],
                              "count": cm[nonzero[:, 0], nonzero[:, 1]]})
        st.download_button("Download every non-empty cell (CSV)", table.to_csv(index=False),
                           "confusion_cells.csv", mime="text/csv", icon=":material/download:")
    else:
        st.download_button("Download the matrix (CSV)", pd.DataFrame(cm, index=result.classes, columns=result.classes)
                           .to_csv(index_label="true \\ predicted"), "confusion_matrix.csv", mime="text/csv",
                           icon=":material/download:")
    return cell


@st.fragment
def matrix_and_images(result, loaded) -> None:
    """The clickable matrix, the most confused pairs and the images of the cell or pair picked:
    one fragment, so a click reruns only this part of the page."""
    cell = confusion_matrix(result)
    st.subheader("Most confused pairs")
    confused_pairs(result)
    if cell:
        cell_images(result, loaded, cell)
    else:
        st.info("Click a cell of the matrix to see the images behind it, most confident first.",
                icon=":material/touch_app:")


def _pick_pair(pairs) -> None:
    """on_change of the pair picker: show that pair's images."""
    picked = st.session_state.get("eval_pair")
    if isinstance(picked, int) and 0 <= picked < len(pairs):
        st.session_state[CELL] = (int(pairs.iloc[picked]["true_index"]), int(pairs.iloc[picked]["predicted_index"]))


def confused_pairs(result) -> None:
    """The most confused pairs (true, predicted, count, with words), and a picker that shows
    the images of one of them."""
    pairs = result.confused_pairs(PAIRS)
    if pairs.empty:
        st.caption("No mistakes: every image was given its own class.")
        return
    shown = pairs.drop(columns=["true_index", "predicted_index"])
    if not any(result.words):
        shown = shown.drop(columns=["true words", "predicted words"])
    st.dataframe(shown, hide_index=True, width="stretch", key="eval_pairs_table", column_config={
        "share": st.column_config.NumberColumn("share of the true class", format="percent"),
        "count": st.column_config.NumberColumn("images")})
    st.selectbox("See the images of a pair", range(len(pairs)), index=None, key="eval_pair",
                 placeholder="Pick a pair", on_change=_pick_pair, args=(pairs,),
                 format_func=lambda k: f"{result.label(int(pairs.iloc[k]['true_index']))} → "
                                       f"{result.label(int(pairs.iloc[k]['predicted_index']))} "
                                       f"({int(pairs.iloc[k]['count'])})")


def shown_images(result, indices):
    """The evaluated images at `indices` to show: from disk each through the safe decoder (a file
    that no longer decodes is, in its place, a str naming it and what is wrong), or from memory;
    None (with the error shown) if they cannot be had at all."""
    if result.paths is not None:
        return [image_from_disk(result.paths[i], None, label="/".join(Path(result.paths[i]).parts[-2:]))
                for i in indices]
    with user_errors(limit=400, icon=None):
        return result.images(indices)
    return None


def short_words(result) -> dict:
    """Each class's first words ("tench" of "tench, Tinca tinca"): what fits beside a small bar."""
    return {name: words.split(",")[0].strip() or name for name, words in result.words.items()}


CAMS = "eval_cams"  # Grad-CAM maps remembered this session: (evaluation, image position) -> map
CAMS_KEPT = 240  # at most this many maps remembered


def heat_maps(result, loaded, indices, images) -> dict:
    """{position: Grad-CAM map for its predicted class} of the evaluated images at `indices`: those
    not yet remembered this session computed in one batch (explain.gradcams), not one by one."""
    from alexnet_core.analysis.explain import gradcams

    memo = st.session_state.setdefault(CAMS, {})
    whose = (id(result), _identity(result))
    wanted = [(i, image) for i, image in zip(indices, images) if not isinstance(image, str)]
    missing = [(i, image) for i, image in wanted if (whose, int(i)) not in memo]
    by_shape = {}
    for i, image in missing:  # inputs of one shape go in one batch (a folder's images share the model's size)
        model_input = loaded.preprocess(image)
        by_shape.setdefault(model_input.shape, []).append((i, model_input))
    for group in by_shape.values():
        heats, _ = gradcams(loaded.model, np.stack([x for _, x in group]),
                            [int(result.predicted[i]) for i, _ in group])
        for (i, _), heat in zip(group, heats):
            memo[(whose, int(i))] = heat
    while len(memo) > CAMS_KEPT:
        memo.pop(next(iter(memo)))
    return {int(i): memo[(whose, int(i))] for i, _ in wanted}


_WARMED: weakref.WeakSet = weakref.WeakSet()  # models whose Grad-CAM pass is traced, or being traced


def warm_gradcam(loaded) -> None:
    """Trace the model's Grad-CAM pass in the background, once per model and server, while the
    user looks at images with the toggle off: the first toggle then costs the maps, not the trace."""
    from alexnet_core.analysis.explain import warm_gradcam as trace

    if loaded.model in _WARMED:
        return
    _WARMED.add(loaded.model)

    def warm() -> None:
        try:
            trace(loaded.model)
        except Exception:  # noqa: BLE001 - a warm-up only: the toggle computes (and reports) for itself
            pass

    threading.Thread(target=warm, name="gradcam-warm-up", daemon=True).start()


@st.fragment
def image_grid(result, loaded, indices, caption_for, key: str) -> None:
    """Six images a row, each with its top 5; with the toggle on, three a row, each photo with
    where the network looked (Grad-CAM) beside it. A fragment: the toggle reruns this grid only."""
    from alexnet_core.analysis.explain import has_convolution, overlay

    convolutional = has_convolution(loaded.model)  # Grad-CAM needs a convolution's feature maps
    show_cam = convolutional and st.toggle("Show Grad-CAM (what the network looked at)", key=f"{key}_cam",
                                           help=glossary.help("Grad-CAM"))
    if show_cam:
        heat_legend(st.columns([1, 2])[0])
    if not len(indices):
        st.caption("No images here.")
        return
    images = shown_images(result, indices)
    if images is None:
        return
    heats = heat_maps(result, loaded, indices, images) if show_cam else {}
    if convolutional and not show_cam:
        warm_gradcam(loaded)
    per_row = 3 if show_cam else 6
    for n, (i, image) in enumerate(zip(indices, images)):
        if n % per_row == 0:  # a row of its own each: pictures of mixed shapes stay in line
            cols = st.columns(per_row)
        with cols[n % per_row]:
            if isinstance(image, str):  # changed or damaged on disk since it was evaluated
                damaged_note(image)
                continue
            if show_cam:
                st.image(side_by_side(image, overlay(image, heats[int(i)])), width="stretch",
                         caption=f"{caption_for(i)} · left: the photo, right: where it looked")
            else:
                st.image(image, caption=caption_for(i), width="stretch")
            st.plotly_chart(topk_bars(top_k(result.probs[i], result.classes, 5, short_words(result)), height=150),
                            key=f"{key}_bars_{i}", config={"displayModeBar": False})


def cell_images(result, loaded, cell: tuple[int, int]) -> None:
    true_i, pred_i = cell
    indices = result.cell(true_i, pred_i)
    st.subheader(f"True {plain(result.label(true_i))}, predicted {plain(result.label(pred_i))}: "
                 f"{len(indices)} images")
    limit = st.slider("Images to show", 6, 60, 12, 6, key="eval_cell_limit") if len(indices) > 12 else 12
    image_grid(result, loaded, indices[:limit],
               lambda i: f"{result.confidence[i]:.0%} {result.label(int(result.predicted[i]))}", "cell")


BARS_MAX = 40  # classes in the per-class bars; more only in the table


@st.fragment
def per_class(result) -> None:
    """The per-class table, searchable by class name or words, and bars for the classes found."""
    report = result.report()
    query = st.text_input("Search the classes", key="eval_class_search", placeholder="a class name or its words",
                          help="Shows the classes whose name or words contain this text").strip().lower()
    if query:
        found = report["class"].str.lower().str.contains(query, regex=False) | \
            report["words"].str.lower().str.contains(query, regex=False)
        report = report[found]
    if not report["words"].astype(bool).any():
        report = report.drop(columns=["words"])
    if report.empty:
        st.caption(f"No class in the data matches {plain(query, 80)}.")
        return
    wide = "words" in report.columns  # the words need room: the table gets more of the width
    table, bars = st.columns([3, 2] if wide else [2, 3]) if len(report) <= BARS_MAX else (st.container(), None)
    table.dataframe(report, hide_index=True, width="stretch", key="eval_per_class_table", column_config={
        k: st.column_config.NumberColumn(k.capitalize() if k != "f1" else "F1", format="percent")
        for k in ("precision", "recall", "f1")})
    if bars is None:
        st.caption(f"{len(report):,} classes: search for some to see them as bars.")
    else:
        bars.plotly_chart(per_class_bars(report), width="stretch", key="eval_per_class")


def mistakes(result, loaded) -> None:
    """The most confident mistakes, twelve, with their top 5 (and Grad-CAM on request)."""
    image_grid(result, loaded, result.mistakes(12),
               lambda i: f"{result.label(int(result.labels[i]))} → {result.label(int(result.predicted[i]))} "
                         f"({result.confidence[i]:.0%})", "mistakes")


MAP_TEXT = ("Each point is one image, placed by the network's own view of it: its fc7 features (the paper's "
            "figure 4), reduced with PCA to 50 dimensions and laid out in 2-D with t-SNE. Images the network "
            "finds alike sit together; a class it has learned forms its own island. Colour: the true class; "
            "a cross: a mistake. Hover for the image, click a point for its top 5 and what the network looked at.")


@st.fragment
def learned_map(result, loaded, spec: str, key: tuple) -> None:
    """The embedding map (drawn on request unless cached on disk or shipped with the model), and
    the point clicked on it. A fragment: a click on the map reruns only the map."""
    from alexnet_core.analysis.charts import MAP_SELECTION, embedding_chart
    from alexnet_core.analysis.embedding_map import MAP_POINTS, build_map, is_cached

    st.subheader("A map of what the network learned", help=glossary.helps("fc7", "PCA", "t-SNE"))
    st.caption(MAP_TEXT)
    memo = st.session_state.setdefault("eval_maps", {})
    if key not in memo:
        slot = st.empty()
        points = min(result.n, MAP_POINTS)
        if not is_cached(loaded, result) and not slot.button(
                f"Draw the map ({points:,} images: fc7 features, then t-SNE; about "
                f"{max(5, round(points * 0.025)):,} s on 2 idle CPU cores, longer on a busy machine; a bar shows "
                "each step)", icon=":material/scatter_plot:",
                key="eval_map_go"):
            return
        slot.empty()
        bar = st.progress(0.0, text="Reading fc7 features...")
        with user_errors(limit=400, icon=None) as outcome:
            made = build_map(loaded, result, progress=lambda share, text: bar.progress(share, text=text))
        bar.empty()
        if outcome.failed:
            return
        memo.clear()
        memo[key] = made
    made = memo[key]
    idx = made.indices
    sampled = (f"{len(idx):,} of the {made.total:,} images, every class in proportion"
               if len(idx) < made.total else f"all {made.total:,} images")
    # Only the classes on the map name its colours (a 1,000-class model's others would crowd the legend).
    labels, predicted = result.labels[idx], result.predicted[idx]
    on_map = list(dict.fromkeys([*sorted(set(labels.tolist())), *sorted(set(predicted.tolist()))]))
    position = {c: k for k, c in enumerate(on_map)}
    chart = embedding_chart(made.xy, [result.label(c) for c in on_map], np.array([position[c] for c in labels]),
                            np.array([position[c] for c in predicted]), result.confidence[idx], made.thumbnails)
    event = st.altair_chart(chart, on_select="rerun", key="eval_map", width="stretch")
    st.caption(f"{plain(model_label(spec))} on the {result.split} split: {sampled}. Distances between islands "
               "mean little in t-SNE; who neighbours whom is what counts.")
    picked = ((event or {}).get("selection") or {}).get(MAP_SELECTION) or []
    if picked and 0 <= int(picked[0].get("i", -1)) < len(idx):
        picked_point(result, loaded, int(idx[int(picked[0]["i"])]))


def picked_point(result, loaded, i: int) -> None:
    """One image picked on the map: the image, where the network looked, its top 5."""
    from alexnet_core.analysis.explain import has_convolution, overlay

    image = (shown_images(result, [i]) or [None])[0]
    if image is None:
        return
    if isinstance(image, str):
        damaged_note(image)
        return
    truth, guess = result.label(int(result.labels[i])), result.label(int(result.predicted[i]))
    st.markdown(f"**The picked image:** true class {plain(truth)}, predicted {plain(guess)} "
                f"({result.confidence[i]:.0%}){'' if truth == guess else ', a mistake'}.")
    a, b, c = st.columns([1, 1, 2])
    a.image(image, caption="The image", width="stretch")
    if has_convolution(loaded.model):
        heat = heat_maps(result, loaded, [i], [image])[i]
        b.image(overlay(image, heat), caption=f"Grad-CAM for {plain(guess)}", width="stretch")
        heat_legend(b)
    else:
        b.caption(":material/block: No Grad-CAM: this model has no convolutional layer to say where it looked.")
    c.plotly_chart(topk_bars(top_k(result.probs[i], result.classes, 5, short_words(result)), height=230),
                   key="eval_map_topk",
                   config={"displayModeBar": False})
