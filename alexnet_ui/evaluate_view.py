"""The Evaluate page's parts: the data pickers, the evaluation (remembered per session), its
headline figures, the clickable confusion matrix (at many classes, such as ImageNet's 1,000,
restricted to the classes the user picks), the most confused pairs, grids of images with their
top 5 and Grad-CAM, the searchable per-class report and the map of what the network learned."""

from __future__ import annotations

# Imports inside functions are deliberate: TensorFlow and Keras, and the modules that reach them,
# load on first use, so importing this module (the app's pages, the command line) stays light.
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from alexnet_core.analysis.charts import confusion_figure, per_class_bars, topk_bars
from alexnet_core.predict.inference import top_k
from alexnet_core.settings.choices import AUTO_SPLIT, EVAL_SPLITS
from alexnet_ui.feedback import user_errors
from alexnet_ui.loaders import (
    data_choices,
    image_from_disk,
    loaded_model,
    model_choices,
    model_stamp,
    prepared_description,
)
from alexnet_ui.text import plain
from alexnet_ui.widgets import damaged_note, heat_legend

SOURCE_WORDS = {"sample": "the bundled sample", "cifar10": "CIFAR-10"}


def data_pickers(data_column, split_column) -> tuple[str, str, bool]:
    """(data source or folder, split, flip averaging) picked in the two columns."""
    choices = data_choices()
    data = data_column.selectbox("Data", list(choices), format_func=choices.get, key="eval_data")
    if data == "folder":
        data = data_column.text_input("Folder", placeholder="/path/to/images (class folders inside, or a prepared "
                                      "dataset)", key="eval_folder").strip()
    described = prepared_description(data) if data not in ("sample", "cifar10") else None
    if described:  # a prepared dataset: how it was made
        data_column.caption(f":material/inventory_2: {plain(described, 600)}")
    split = split_column.selectbox("Split", [AUTO_SPLIT, *EVAL_SPLITS], key="eval_split",
                                   help="auto: test if the data has one, else validation")
    flip = split_column.toggle("Flip averaging", key="eval_flip", help="Average each prediction with its mirror image")
    return data, split, flip


def model_label(spec: str) -> str:
    return model_choices().get(spec, spec)


def run_evaluation(spec: str, data: str, split: str | None, flip: bool):
    """Evaluate with a progress bar; remembered per session (and cached on disk across sessions)."""
    from alexnet_core.analysis.evaluation import evaluate

    key = (spec, model_stamp(spec), data, split, flip)
    memo = st.session_state.setdefault("eval_results", {})
    if key not in memo:
        loaded, _ = loaded_model(spec)
        bar = st.progress(0.0, text="Evaluating...")
        result = evaluate(loaded, data, split, flip=flip, progress=lambda done, total: bar.progress(
            min(1.0, done / max(total, 1)), text=f"Evaluating {done:,}/{total:,} images"))
        bar.empty()
        memo.clear()
        memo[key] = result
    return memo[key]


def headline(result, spec: str, data: str, flip: bool) -> None:
    m = st.columns(4)
    m[0].metric("Accuracy", f"{result.accuracy():.1%}")
    m[1].metric("Top-5 accuracy", f"{result.top_k_accuracy(5):.1%}")
    m[2].metric("Images", f"{result.n:,}")
    m[3].metric("Split", result.split)
    source_words = SOURCE_WORDS.get(data, "the folder " + plain(data, 80))
    st.caption(f"Every figure on this page: {plain(model_label(spec))} on the {result.split} split of {source_words} "
               f"({result.n:,} images){', averaged with mirror images' if flip else ''}. A model's headline accuracy "
               "(Home, Runs) can differ: it is measured on its own, usually larger, validation set.")
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
    normalize = st.toggle("Row-normalised (share of each true class)", key="eval_normalize")
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


def image_grid(result, loaded, indices, caption_for, key: str) -> None:
    """Six images a row, each with its top 5; with the toggle on, where the network looked."""
    from alexnet_core.analysis.explain import gradcam, overlay

    show_cam = st.toggle("Show Grad-CAM (what the network looked at)", key=f"{key}_cam")
    if show_cam:
        heat_legend(st.columns([1, 2])[0])
    if not len(indices):
        st.caption("No images here.")
        return
    images = shown_images(result, indices)
    if images is None:
        return
    for n, (i, image) in enumerate(zip(indices, images)):
        if n % 6 == 0:  # a row of its own per six: pictures of mixed shapes stay in line
            cols = st.columns(6)
        with cols[n % 6]:
            if isinstance(image, str):  # changed or damaged on disk since it was evaluated
                damaged_note(image)
                continue
            shown = image
            if show_cam:
                heat, _ = gradcam(loaded.model, loaded.preprocess(image), int(result.predicted[i]))
                shown = overlay(image, heat)
            st.image(shown, caption=caption_for(i), width="stretch")
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
    image_grid(result, loaded, result.mistakes(12),
               lambda i: f"{result.label(int(result.labels[i]))} → {result.label(int(result.predicted[i]))} "
                         f"({result.confidence[i]:.0%})", "mistakes")


def learned_map(result, loaded, spec: str, key: tuple) -> None:
    """The embedding map (drawn on request unless cached on disk), and the point clicked on it."""
    from alexnet_core.analysis.charts import MAP_SELECTION, embedding_chart
    from alexnet_core.analysis.embedding_map import MAP_POINTS, build_map, is_cached

    memo = st.session_state.setdefault("eval_maps", {})
    if key not in memo:
        slot = st.empty()
        if not is_cached(loaded, result) and not slot.button(
                f"Draw the map ({min(result.n, MAP_POINTS):,} images, a few seconds)", icon=":material/scatter_plot:",
                key="eval_map_go"):
            return
        slot.empty()
        bar = st.progress(0.0, text="Reading fc7 features...")
        with user_errors(limit=400, icon=None) as outcome:
            made = build_map(loaded, result, progress=lambda done, total: bar.progress(
                min(1.0, done / max(total, 1)), text=f"fc7 features of {done:,}/{total:,} images"))
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
    from alexnet_core.analysis.explain import gradcam, overlay

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
    heat, _ = gradcam(loaded.model, loaded.preprocess(image), int(result.predicted[i]))
    b.image(overlay(image, heat), caption=f"Grad-CAM for {plain(guess)}", width="stretch")
    heat_legend(b)
    c.plotly_chart(topk_bars(top_k(result.probs[i], result.classes, 5, short_words(result)), height=230),
                   key="eval_map_topk",
                   config={"displayModeBar": False})
