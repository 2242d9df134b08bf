"""The report to hand over: one self-contained HTML file about one or more runs, for someone who
does not run the app.

Per run: a model card (what it is, the data and split, intended use and limits), the headline
figures with what each was measured on, the training curves, an evaluation (confusion matrix,
per-class table, the most confident mistakes with their images, Grad-CAM examples) and the
settings; for several runs, a comparison (curves overlaid, the settings that differ).

Self-contained: plotly.js is inlined once, images are data: URIs, fonts are the system's, and
nothing else is referenced, so the file opens offline in any browser with no server and makes no
request. The print CSS puts each part on its own page and keeps figures whole, so the browser's
print to PDF lays out cleanly. No path of the machine a run trained on is written: data are
named by their description, else their name.
"""

from __future__ import annotations

# Imports inside functions are deliberate: TensorFlow (loading a model, Grad-CAM), pandas and
# plotly load on first use, so importing this module stays light.
import base64
import html
import io
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from alexnet_core import __version__, locations
from alexnet_core.errors import AlexNetError
from alexnet_core.store import catalog, fileio, layout

MISTAKES = 12  # the most confident mistakes shown, each with where the network looked
GRADCAM_EXAMPLES = 8  # correctly classified images with their Grad-CAM, one class each
MATRIX_CLASSES = 30  # more classes than this: the matrix shows those most involved in mistakes
TABLE_CLASSES = 100  # more classes than this: the per-class table shows the lowest F1 first
THUMB = 160  # px: larger images are shrunk to this side in the file
SETTINGS_HIDDEN = ("environment", "class_names", "class_words")
PATH_SETTINGS = ("data", "init_from")  # settings that may hold a path: written as the data's name

# What the figures mean, in one line each, for a reader who has not used the app.
DEFINITIONS = {
    "Accuracy": "the share of images whose most probable class is the true one.",
    "Top-5 accuracy": "the share of images whose true class is among the model's five most probable.",
    "Validation split": "images held out from training and used only to measure the model.",
    "Single view": "each image is shown to the network once, as it is (not averaged with its mirror image).",
    "float32": "the numbers are computed at full 32-bit precision (training may have used bf16, a faster "
               "16-bit format, which can move a figure by a few tenths of a point).",
    "Precision, recall, F1": "of the images the model called a class, the share that were (precision); of the "
                             "images of a class, the share it found (recall); F1 is their harmonic mean.",
    "Grad-CAM": "a heat map of the parts of the image that raised the score of the class the model chose "
                "(red: most, blue: least).",
    "Epoch": "one pass over every training image.",
    "Learning rate": "how large a step training takes each time it adjusts the weights.",
}


class ReportError(AlexNetError):
    """A report that cannot be made (a MODEL that names no run, a file that cannot be written)."""


def resolve(spec: str, runs_dir=None) -> Path:
    """MODEL -> its run folder: `demo`, a run folder, or a run id in the runs folder (or bundled)."""
    if spec == "demo":
        return locations.DEMO_RUN
    path = Path(spec).expanduser()
    if (path / layout.CONFIG).is_file():
        return path
    found = catalog.find_run(spec, runs_dir) if layout.RUN_ID.match(spec) else None
    if found is not None:
        return found
    if path.is_dir():
        raise ReportError(f"{spec} is a folder but not a run folder (it has no {layout.CONFIG}): give a run "
                          "folder, a run id of the runs folder, or demo")
    raise ReportError(f"{spec!r} is neither a run folder, a run id in {locations.runs_root(runs_dir)} nor demo: "
                      "give one of those (the Runs page and its folder list the run ids)")


def resolve_all(specs: list[str], runs_dir=None) -> list[Path]:
    """Every MODEL's run folder, each once, in order; a ReportError naming every one that is not a run."""
    found, problems = [], []
    for spec in specs:
        try:
            path = resolve(spec, runs_dir)
        except ReportError as exc:
            problems.append(str(exc))
            continue
        if all(path.resolve() != p.resolve() for p in found):
            found.append(path)
    if problems:
        raise ReportError("; ".join(problems))
    return found


def data_name(data) -> str:
    """A data source in words that name no folder of this machine: the bundled sample, CIFAR-10,
    else the folder's last two parts ('cifar10/train')."""
    if not data:
        return "not recorded"
    text = str(data)
    if text == "sample":
        return "the bundled sample (CIFAR-10 images, 200 a class for training and 100 for validation)"
    if text == "cifar10":
        return "CIFAR-10"
    parts = [p for p in Path(text).parts if p not in ("/", ".", "..")]
    return "/".join(parts[-2:]) or text


def _offline(data) -> bool:
    """Whether a data source can be read here without a network."""
    from alexnet_core.inputs.data import cifar10_available

    if data == "sample":
        return True
    if data == "cifar10":
        return cifar10_available()
    return isinstance(data, str) and bool(data) and Path(data).expanduser().is_dir()


# --- Reading a run ----------------------------------------------------------------------------


def _config(run_dir: Path) -> dict:
    return layout.read_checked(run_dir / layout.CONFIG, layout.CONFIG_SCHEMA)[0]


def _safe_record(record: dict | None) -> dict | None:
    """An evaluation record whose data is named, not located (headline_words may quote it)."""
    return None if record is None else {**record, "data": data_name(record.get("data"))}


def _evaluations(run_dir: Path) -> list[dict]:
    status = layout.read_checked(run_dir / layout.STATUS, layout.STATUS_SCHEMA)[0]
    return [e for e in status.get("evaluations") or [] if isinstance(e, dict)
            and isinstance(e.get("accuracy"), (int, float))]


def _choices(run_dir: Path, config: dict) -> list[dict]:
    """Where the report evaluates a run, best first: the headline's data when it is on this machine,
    the run's own validation split, then the bundled sample's validation split."""
    record = catalog.headline_accuracy(run_dir)
    val_split = config.get("val_split") if isinstance(config.get("val_split"), (int, float)) else 0.1
    choices = []
    if record and _offline(record.get("data")):
        choices.append({"data": record["data"], "split": record.get("split"), "val_split": val_split,
                        "why": "the headline figure's own images", "headline": True})
    if config.get("data") and (not choices or config["data"] != choices[0]["data"]) and val_split > 0:
        choices.append({"data": config["data"], "split": "val", "val_split": val_split,
                        "why": "the validation split the run held out while training", "headline": False})
    if all(c["data"] != "sample" for c in choices):
        choices.append({"data": "sample", "split": "val", "val_split": 0.1, "headline": False,
                        "why": "the bundled sample's validation split (the run's own data is not on this machine)"})
    return [c for c in choices if _offline(c["data"])]


def _evaluate(loaded, config: dict, run_dir: Path, data, split, progress):
    """(Evaluation, the choice it came from, notes on the choices that could not be used)."""
    from alexnet_core.analysis.evaluation import evaluate
    from alexnet_core.inputs.data import DataError

    if data is not None:  # asked for: its problems are the user's to fix
        val_split = config.get("val_split") if isinstance(config.get("val_split"), (int, float)) else 0.1
        choice = {"data": data, "split": split, "val_split": val_split, "why": "the data asked for", "headline": False}
        return evaluate(loaded, data, split, val_split=val_split, progress=progress), choice, []
    notes = []
    for choice in _choices(run_dir, config):
        try:
            result = evaluate(loaded, choice["data"], choice["split"], val_split=choice["val_split"], progress=progress)
        except DataError as exc:
            notes.append(f"{data_name(choice['data'])}: {exc}")
            continue
        if result.n:
            return result, choice, notes
    return None, None, notes


# --- HTML pieces ------------------------------------------------------------------------------


def _e(text) -> str:
    return html.escape(str(text), quote=True)


def _image_uri(image: np.ndarray) -> str:
    """An RGB uint8 image as a data: URI: PNG when small, JPEG when a photo (shrunk to THUMB px)."""
    from PIL import Image

    picture = Image.fromarray(np.asarray(image, dtype=np.uint8))
    if max(picture.size) > THUMB:
        picture.thumbnail((THUMB, THUMB), Image.LANCZOS)
    buffer = io.BytesIO()
    small = max(picture.size) <= 64
    picture.convert("RGB").save(buffer, format="PNG" if small else "JPEG", quality=85)
    return f"data:image/{'png' if small else 'jpeg'};base64,{base64.b64encode(buffer.getvalue()).decode()}"


def _img(image: np.ndarray, alt: str) -> str:
    small = " pixelated" if max(image.shape[:2]) <= 64 else ""
    return f'<img class="thumb{small}" src="{_image_uri(image)}" alt="{_e(alt)}">'


def _table(header: list[str], rows: list[list], numeric: set[int] = frozenset()) -> str:
    head = "".join(f'<th class="num">{_e(h)}</th>' if i in numeric else f"<th>{_e(h)}</th>"
                   for i, h in enumerate(header))
    body = "".join("<tr>" + "".join(f'<td class="num">{_e(v)}</td>' if i in numeric else f"<td>{_e(v)}</td>"
                                    for i, v in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _facts(rows: list[tuple[str, str]]) -> str:
    return "<dl class=\"facts\">" + "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in rows) + "</dl>"


class _Figures:
    """Plotly figures as HTML: plotly.js inlined with the first, referenced by the rest."""

    def __init__(self):
        self.count = 0

    def __call__(self, fig, caption: str = "") -> str:
        inline = self.count == 0
        self.count += 1
        height = fig.layout.height or 380
        fig.update_layout(autosize=True, width=None)
        div = fig.to_html(full_html=False, include_plotlyjs=inline, include_mathjax=False, default_width="100%",
                          default_height=f"{height}px", div_id=f"figure-{self.count}",
                          config={"displaylogo": False, "responsive": True})
        note = f"<figcaption>{_e(caption)}</figcaption>" if caption else ""
        return f'<figure class="figure">{div}{note}</figure>'


def _when(seconds) -> str:
    if not isinstance(seconds, (int, float)) or seconds <= 0:
        return "not recorded"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} minutes"
    return f"{seconds / 3600:.1f} hours"


def _percent(value) -> str:
    return f"{value:.1%}" if isinstance(value, (int, float)) and np.isfinite(value) else "not measured"


# --- One run ----------------------------------------------------------------------------------


def _arch_title(variant) -> str:
    from alexnet_core.models.variants import get_arch

    try:
        return get_arch(variant).title
    except (KeyError, ValueError, TypeError):
        return str(variant or "a network of its own")


def _input_size(config: dict, loaded) -> int | None:
    if loaded is not None:
        return loaded.input_size
    recorded = config.get("preprocessing") if isinstance(config.get("preprocessing"), dict) else {}
    for size in (recorded.get("input_size"), config.get("input_size")):
        if isinstance(size, int) and not isinstance(size, bool):
            return size
    return None


def _classes_in_words(names: list[str], limit: int = 12) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit:,} more" if len(names) > limit else "")


def _validated_on(config: dict) -> str:
    data, fraction = config.get("data"), config.get("val_split")
    if data == "sample":
        return "the sample's own validation folder (100 images a class), never trained on"
    if isinstance(fraction, (int, float)) and fraction > 0:
        return (f"the last {fraction:.0%} of each class's images, held out and never trained on (a folder with "
                "its own val/ split uses that instead)")
    return "no validation split: every image was trained on"


def model_card(run_dir: Path, row: dict, config: dict, loaded) -> str:
    names = loaded.class_names if loaded is not None else [str(n) for n in config.get("class_names") or []]
    size = _input_size(config, loaded)
    at = f"{size}x{size} pixels" if size else "its input size"
    words = catalog.headline_words(_safe_record(catalog.headline_accuracy(run_dir)))
    env = config.get("environment") if isinstance(config.get("environment"), dict) else {}
    device = env.get("device") if isinstance(env.get("device"), dict) else {}
    facts = [
        ("Network", f"{_arch_title(config.get('variant'))} ({config.get('variant') or 'variant not recorded'})"
                    + (f", {loaded.model.count_params():,} parameters" if loaded is not None else "")),
        ("Input", f"colour images of {at}" if size else "not recorded"),
        ("Classes", f"{len(names):,}: {_classes_in_words(names)}" if names else "not recorded"),
        ("Trained on", config.get("data_description") or data_name(config.get("data"))),
        ("Validated on", _validated_on(config)),
        ("Training", f"{row['epochs_done']} of {row['epochs'] or '?'} epochs, {_when(row['duration_s'])}"
                     + (f" on {device.get('name') or device.get('kind')}" if device else "")
                     + (f", recipe '{config['recipe']}'" if config.get("recipe") else "")
                     + f"; {row['state']}"),
    ]
    if row["notes"]:
        facts.append(("Notes", row["notes"]))
    forced = ("Anything else is forced into one of them: a face, a flower or a blank wall still gets one of "
              "these labels")
    if (run_dir / "novelty.npz").is_file():
        forced += (", though the model carries a calibration that marks images unlike any of its classes as "
                   "unsure (Classify, and `predict`)")
    uses = [
        f"Knows {len(names):,} classes at {at}: it sorts an image into the one it finds most likely. "
        f"{forced}.",
        f"Its figures hold for images like those it was measured on "
        f"({words['measured_on'] if words else 'see below'}); photos from other cameras, framings or subjects "
        "may score lower.",
        f"Larger images are shrunk to {at} first, so fine detail is lost." if size and size < 128 else
        "Images are resized and centre-cropped to the network's input first.",
        "Made to explore and teach how AlexNet works; not for decisions about people, health or safety.",
    ]
    if loaded is None:
        uses.append("This run has no model file here (not finished an epoch, or shipped without it): the report "
                    "shows its training, not an evaluation.")
    return ("<h3>Model card</h3>" + _facts(facts) + "<h4>Intended use and limits</h4><ul>"
            + "".join(f"<li>{_e(u)}</li>" for u in uses) + "</ul>")


def headline_section(run_dir: Path, metrics, config: dict, result, choice) -> str:
    parts = ["<h3>Headline figures</h3>"]
    record = catalog.headline_accuracy(run_dir)
    words = catalog.headline_words(_safe_record(record))
    if words:
        parts.append(f'<div class="figure"><p class="headline"><span class="value">{_e(words["value"])}</span> '
                     f'<span class="label">{_e(words["label"])}</span></p>'
                     f'<p class="sentence">The model\'s headline figure: {_e(words["sentence"])}.</p></div>')
    else:
        parts.append("<p>This run has no recorded evaluation, so it has no headline figure"
                     + ("; the report's own evaluation below is the one to quote, with what it was measured on."
                        if result is not None else ".") + "</p>")
    rows = []
    for other in _evaluations(run_dir):
        said = catalog.headline_words(_safe_record(other))
        rows.append([said["label"], said["value"], _percent(other.get("top5_accuracy")), said["sentence"],
                     "yes" if other == record else ""])
    if rows:
        parts.append("<p>Every recorded evaluation of this model (the headline one marked):</p>"
                     + _table(["figure", "accuracy", "top-5", "measured on", "headline"], rows, {1, 2}))
    if "val_accuracy" in metrics and metrics["val_accuracy"].notna().any():
        best = metrics["val_accuracy"].idxmax()
        precision = config.get("mixed_precision") or "float32"
        precision = "float32" if precision in ("none", "off", "float32") else precision
        parts.append(f"<p>Best validation accuracy during training: {_percent(metrics['val_accuracy'][best])} "
                     f"after epoch {int(metrics['epoch'][best])}. Measured at each epoch's end in the training's "
                     f"precision ({_e(precision)}) to pick the epoch kept, so it may differ from the headline by "
                     "a few tenths of a point.</p>")
    if result is not None:
        same = choice.get("headline") and record and result.n == record.get("n")
        differs = ("The same images as the headline figure, measured again here: the two agree up to the cache "
                   "and the machine's arithmetic." if same else
                   "Not the headline figure: different images, so a different number; quote the headline.")
        if not words:
            differs = "The run has no headline figure: quote this one, with what it was measured on."
        parts.append(f"<p>This report's evaluation: {_percent(result.accuracy())} accuracy (top-5 "
                     f"{_percent(result.top_k_accuracy(5))}) on {result.n:,} images of the {_e(result.split)} split of "
                     f"{_e(data_name(result.source))}, single view, float32: {_e(choice['why'])}. {_e(differs)}</p>")
    return "".join(parts)


def _matrix_classes(result) -> tuple[list[int], str]:
    present = result.present()
    if len(present) <= MATRIX_CLASSES:
        return present, ""
    pairs = result.confused_pairs(limit=10 * MATRIX_CLASSES)
    keep = []
    for index in list(pairs["true_index"]) + list(pairs["predicted_index"]) + present:
        if index not in keep:
            keep.append(int(index))
        if len(keep) == MATRIX_CLASSES:
            break
    keep.sort()
    return keep, (f"The {MATRIX_CLASSES} classes most involved in mistakes, of the {len(present):,} in the data. ")


def _images(result, indices, val_split: float) -> dict[int, np.ndarray]:
    """The original pixels of evaluated images, by index; those that no longer decode left out."""
    from alexnet_core.inputs.images import read_image

    if result.paths is None:
        try:
            return dict(zip(indices, result.images(list(indices), val_split)))
        except (AlexNetError, OSError):
            return {}
    shown = {}
    for i in indices:
        try:
            shown[int(i)] = read_image(result.paths[i])
        except (AlexNetError, OSError):
            continue
    return shown


def evaluation_section(result, loaded, choice: dict, figure, progress=None) -> str:
    from alexnet_core.analysis import charts, explain

    parts = [f"<h3>Evaluation</h3><p>{result.n:,} images of the {_e(result.split)} split of "
             f"{_e(data_name(result.source))}: {_e(choice['why'])}. Accuracy {_percent(result.accuracy())}, top-5 "
             f"{_percent(result.top_k_accuracy(5))}.{(' ' + _e(result.note)) if result.note else ''}</p>"]
    keep, why = _matrix_classes(result)
    cm = result.confusion_matrix()[np.ix_(keep, keep)]
    parts.append("<h4>Confusion matrix</h4>" + figure(
        charts.confusion_figure(cm, [result.label(i) for i in keep]),
        f"{why}Rows: the true class; columns: the class the model chose. The diagonal holds the right answers."))
    report = result.report()
    shown = report
    caption = "Precision, recall and F1 of each class in the data; support is its number of images."
    if len(report) > TABLE_CLASSES:
        shown = report.sort_values("f1").head(TABLE_CLASSES)
        caption = f"The {TABLE_CLASSES} classes with the lowest F1, of {len(report):,}. " + caption
    has_words = shown["words"].astype(bool).any()
    rows = [[r["class"], *([r["words"].split(",")[0]] if has_words else []), f"{r['precision']:.1%}",
             f"{r['recall']:.1%}", f"{r['f1']:.1%}", int(r["support"])] for _, r in shown.iterrows()]
    header = ["class", *(["words"] if has_words else []), "precision", "recall", "F1", "support"]
    first = 2 if has_words else 1
    parts.append("<h4>Per class</h4>")
    if len(report) <= 40:
        parts.append(figure(charts.per_class_bars(report)))
    parts.append(f'<div class="figure">{_table(header, rows, set(range(first, first + 4)))}'
                 f"<p class=\"caption\">{_e(caption)}</p></div>")
    val_split = choice.get("val_split", 0.1)
    has_cam = explain.has_convolution(loaded.model)
    mistakes = [int(i) for i in result.mistakes(MISTAKES)]
    examples = []
    for cls in result.present():
        right = result.cell(cls, cls)
        if len(right):
            examples.append(int(right[0]))
        if len(examples) == GRADCAM_EXAMPLES:
            break
    pixels = _images(result, mistakes + (examples if has_cam else []), val_split)
    done, total = 0, len(pixels)

    def tile(i: int, caption: str) -> str:
        nonlocal done
        image = pixels[i]
        cells = [_img(image, caption)]
        if has_cam:
            heat, _ = explain.gradcam(loaded.model, loaded.preprocess(image), int(result.predicted[i]))
            cells.append(_img(explain.overlay(image, heat), f"Grad-CAM for {result.label(int(result.predicted[i]))}"))
        done += 1
        if progress:
            progress(done, total)
        return f'<div class="tile"><div class="pair">{"".join(cells)}</div><p>{_e(caption)}</p></div>'

    legend = (f'<p class="legend">{_img(explain.heat_legend(160, 10), "Grad-CAM colour scale")} '
              "least attention (blue) to most (red)</p>") if has_cam else ""
    parts.append("<h4>The most confident mistakes</h4>")
    if mistakes:
        parts.append(f"<p>The images the model got wrong while most sure of itself"
                     f"{', each beside where it looked (Grad-CAM) for the class it chose' if has_cam else ''}.</p>"
                     + legend + '<div class="gallery">' + "".join(
                         tile(i, f"true {result.label(int(result.labels[i]))}, predicted "
                                 f"{result.label(int(result.predicted[i]))} ({result.confidence[i]:.0%})")
                         for i in mistakes if i in pixels) + "</div>")
    else:
        parts.append("<p>None: every image was classified right.</p>")
    parts.append("<h4>Where the network looked (Grad-CAM)</h4>")
    if has_cam and examples:
        parts.append("<p>One correctly classified image per class (the one the model was surest of), beside the "
                     "parts of it that raised the score of its class.</p>" + legend + '<div class="gallery">'
                     + "".join(tile(i, f"{result.label(int(result.labels[i]))} ({result.confidence[i]:.0%})")
                               for i in examples if i in pixels) + "</div>")
    elif not has_cam:
        parts.append(f"<p>{_e(explain.NO_CONVOLUTION)}</p>")
    else:
        parts.append("<p>No image was classified right, so there is no example to explain.</p>")
    return "".join(parts)


def _flat(config: dict) -> dict:
    out = {}
    for key, value in config.items():
        if key in SETTINGS_HIDDEN:
            continue
        if key in PATH_SETTINGS and isinstance(value, str) and value:
            value = data_name(value)
        if isinstance(value, dict):
            out.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            out[key] = value
    return out


def _shown(value) -> str:
    if value is None:
        return "not set"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_shown(v) for v in value)
    return str(value)


def settings_section(config: dict) -> str:
    flat = _flat(config)
    env = config.get("environment") if isinstance(config.get("environment"), dict) else {}
    versions = ", ".join(f"{k} {v}" for k, v in env.items() if isinstance(v, str) and k != "strategy")
    pairs = [[k, _shown(v)] for k, v in flat.items()]
    half = (len(pairs) + 1) // 2  # two columns of settings: half the pages
    rows = [pairs[i] + (pairs[i + half] if i + half < len(pairs) else ["", ""]) for i in range(half)]
    return ("<h3>Settings</h3>" + _table(["setting", "value", "setting", "value"], rows)
            + (f"<p class=\"caption\">Trained with {_e(versions)}.</p>" if versions else ""))


def _step(progress, share: float, text: str):
    if progress:
        progress(min(share, 1.0), text)


def run_section(run_dir: Path, number: int, figure, data=None, split=None, load=None, progress=None,
                span=(0.0, 1.0)) -> tuple[str, dict]:
    """One run's part of the report, and what it measured ({"run_id", "name", "data", "split", "n",
    "accuracy"} or with a "note" when it was not evaluated)."""
    from alexnet_core.analysis import charts
    from alexnet_core.predict.inference import ModelLoadError, load_model

    start, width = span
    run = catalog.read_run(run_dir)
    row = catalog.run_summary(run_dir, run)
    config = run["config"]
    title = catalog.display_name(row)
    _step(progress, start, f"{title}: loading the model")
    loaded, problem = None, ""
    so_far = not (run_dir / layout.MODEL).exists() and (run_dir / layout.CHECKPOINTS / layout.BEST).is_file()
    if run["model_ok"] or so_far:
        try:
            loaded = (load or load_model)(str(run_dir))
        except ModelLoadError as exc:
            problem = str(exc)
    elif run["problems"]:
        problem = "; ".join(run["problems"])
    result, choice, notes = None, None, []
    if loaded is not None:
        _step(progress, start + 0.1 * width, f"{title}: evaluating")
        result, choice, notes = _evaluate(
            loaded, config, run_dir, data, split,
            lambda done, total: _step(progress, start + (0.1 + 0.5 * done / max(total, 1)) * width,
                                      f"{title}: evaluating, {done:,} of {total:,} images"))
    metrics, steps = run["metrics"], run["steps"]
    parts = [f'<section class="run" id="run-{number}"><h2>{number}. {_e(title)}</h2>',
             model_card(run_dir, row, config, loaded)]
    if problem:
        parts.append(f'<p class="note">The model could not be used: {_e(problem)}</p>')
    elif so_far and loaded is not None:
        parts.append('<p class="note">The run has not finished: the model here is its best epoch so far.</p>')
    parts.append(headline_section(run_dir, metrics, config, result, choice))
    parts.append("<h3>Training curves</h3>")
    if metrics.empty and steps.empty:
        parts.append("<p>No epoch or step recorded yet.</p>")
    else:
        parts.append(figure(charts.training_curves(metrics, steps, config.get("steps_per_epoch")),
                            "Loss and accuracy on the training images (per step, smoothed, and per epoch) and on "
                            "the validation split (per epoch); the learning rate at every logged step."))
    if result is not None:
        _step(progress, start + 0.6 * width, f"{title}: Grad-CAM")
        parts.append(evaluation_section(result, loaded, choice, figure, lambda done, total: _step(
            progress, start + (0.6 + 0.4 * done / max(total, 1)) * width, f"{title}: Grad-CAM, {done} of {total}")))
    elif loaded is not None:
        parts.append("<h3>Evaluation</h3><p>Not evaluated: no data for it is on this machine"
                     + (f" ({_e('; '.join(notes))})" if notes else "") + ".</p>")
    parts.append(settings_section(config) + "</section>")
    measured = {"run_id": row["run_id"], "name": title}
    if result is not None:
        measured.update(data=data_name(result.source), split=result.split, n=result.n, accuracy=result.accuracy())
    else:
        measured["note"] = problem or ("no model file" if loaded is None else "no data to evaluate on")
    return "".join(parts), measured


# --- Several runs -----------------------------------------------------------------------------

COMPARED = (("val_accuracy", "Validation accuracy"), ("accuracy", "Training accuracy"),
            ("val_loss", "Validation loss"), ("loss", "Training loss"), ("learning_rate", "Learning rate"))


def comparison_section(run_dirs: list[Path], figure) -> str:
    import pandas as pd

    from alexnet_core.analysis import charts

    rows, curves, configs = [], {}, {}
    for run_dir in run_dirs:
        run = catalog.read_run(run_dir)
        row = catalog.run_summary(run_dir, run)
        label = catalog.display_name(row)
        words = catalog.headline_words(_safe_record(catalog.headline_accuracy(run_dir)))
        rows.append([label, row["variant"] or "not recorded", words["value"] if words else "none recorded",
                     words["measured_on"] if words else "", _percent(row["best_val_accuracy"]),
                     f"{row['epochs_done']} of {row['epochs'] or '?'}", _when(row["duration_s"])])
        curves[label] = run["metrics"]
        configs[label] = {k: _shown(v) for k, v in _flat(run["config"]).items()}
    parts = ['<section class="chapter" id="comparison"><h2>Comparison</h2>',
             _table(["run", "variant", "headline", "measured on", "best validation accuracy", "epochs",
                     "training time"], rows),
             "<p class=\"caption\">A headline is comparable only between runs measured on the same images; the best "
             "validation accuracy is each run's own validation split during training.</p>"]
    for metric, title in COMPARED:
        if any(metric in m and m[metric].notna().any() for m in curves.values()):
            parts.append(f"<h3>{_e(title)}</h3>" + figure(charts.compare_curves(curves, metric),
                                                          f"{title} at the end of each epoch, one line per run."))
    table = pd.DataFrame(configs).fillna("not set")
    differs = table[table.nunique(axis=1) > 1]
    parts.append("<h3>Settings that differ</h3>")
    if differs.empty:
        parts.append("<p>None: the runs share every setting (they differ by chance alone: the order of the "
                     "images, the initial weights).</p>")
    else:
        parts.append(_table(["setting", *table.columns], [[k, *v] for k, v in differs.iterrows()]))
    return "".join(parts) + "</section>"


# --- The document -----------------------------------------------------------------------------

CSS = """
:root { color-scheme: light; }
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
       color: #1f2a36; background: #fff; margin: 0; line-height: 1.45; }
main { max-width: 1000px; margin: 0 auto; padding: 24px 28px 48px; }
h1 { font-size: 1.9em; margin: 0.2em 0; } h2 { font-size: 1.5em; border-bottom: 2px solid #2a7ab0;
     padding-bottom: 4px; margin-top: 1.6em; } h3 { font-size: 1.2em; margin-top: 1.4em; } h4 { margin: 1.1em 0 0.4em; }
.lead { color: #4a5866; } .caption, figcaption, .note { color: #4a5866; font-size: 0.9em; }
.note { border-left: 3px solid #e4572e; padding-left: 8px; }
table { border-collapse: collapse; width: 100%; font-size: 0.9em; margin: 8px 0; }
th, td { border-bottom: 1px solid #d0d7de; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f3f6f9; }
th.num, td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
dl.facts { display: grid; grid-template-columns: 10em 1fr; gap: 4px 16px; margin: 8px 0; }
dl.facts dt { font-weight: 600; } dl.facts dd { margin: 0; }
.headline { margin: 8px 0 0; } .headline .value { font-size: 2.4em; font-weight: 700; color: #2a7ab0; }
.headline .label { font-size: 1.1em; margin-left: 6px; } .sentence { margin-top: 0; }
figure { margin: 12px 0; } .figure { break-inside: avoid; page-break-inside: avoid; }
.gallery { display: flex; flex-wrap: wrap; gap: 14px; }
.tile { width: 232px; break-inside: avoid; page-break-inside: avoid; font-size: 0.85em; }
.tile p { margin: 4px 0 0; } .pair { display: flex; gap: 4px; }
img.thumb { width: 112px; height: auto; border-radius: 3px; } img.pixelated { image-rendering: pixelated; }
.legend img.thumb { width: 160px; height: 10px; vertical-align: middle; }
nav ol { columns: 2; } dl.defs { display: grid; grid-template-columns: 1fr 1fr; gap: 6px 24px; }
dl.defs div { break-inside: avoid; } dl.defs dt { font-weight: 600; } dl.defs dd { margin: 0; }
@page { size: A4 landscape; margin: 12mm; }
@media print {
  main { max-width: none; padding: 0; }
  section.run, section.chapter { break-before: page; page-break-before: always; }
  h2, h3, h4 { break-after: avoid; page-break-after: avoid; }
  .modebar-container { display: none !important; }
  tr { break-inside: avoid; page-break-inside: avoid; }
}
"""


def build(run_dirs: list, data: str | None = None, split: str | None = None, load=None,
          progress=None) -> tuple[str, list[dict]]:
    """(the report's HTML, what each run was measured on). `load`: how a run's model is loaded
    (default inference.load_model; the app passes its cached loader); `progress(share, text)`."""
    run_dirs = [Path(d) for d in run_dirs]
    figure = _Figures()
    sections, measured = [], []
    for number, run_dir in enumerate(run_dirs, 1):
        share = 0.9 / len(run_dirs)
        text, done = run_section(run_dir, number, figure, data, split, load, progress,
                                 span=((number - 1) * share, share))
        sections.append(text)
        measured.append(done)
    if len(run_dirs) > 1:
        _step(progress, 0.95, "comparing the runs")
        sections.append(comparison_section(run_dirs, figure))
    _step(progress, 1.0, "done")
    names = [m["name"] for m in measured]
    title = f"Report: {', '.join(names[:3])}{' and more' if len(names) > 3 else ''}"
    made = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    contents = "".join(f'<li><a href="#run-{i}">{_e(n)}</a></li>' for i, n in enumerate(names, 1))
    if len(run_dirs) > 1:
        contents += '<li><a href="#comparison">Comparison</a></li>'
    definitions = "".join(f"<div><dt>{_e(k)}</dt><dd>{_e(v)}</dd></div>" for k, v in DEFINITIONS.items())
    document = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="AlexNet Explorer {_e(__version__)}"><title>{_e(title)}</title>
<style>{CSS}</style></head>
<body><main>
<header><h1>{_e(title)}</h1><p class="lead">Made by AlexNet Explorer {_e(__version__)} on {made}. This file is
self-contained: it opens offline in any browser, and prints to PDF one part a page.</p>
<nav><ol>{contents}</ol></nav>
<h3>What the figures mean</h3><dl class="defs">{definitions}</dl></header>
{''.join(sections)}
</main></body></html>
"""
    return document, measured


def write(run_dirs: list, out, data: str | None = None, split: str | None = None, load=None,
          progress=None) -> dict:
    """Build the report and write it to `out` atomically (a crash leaves no half file):
    {"out", "bytes", "seconds", "runs": what each run was measured on}."""
    started = time.time()
    out = Path(out).expanduser()
    if not out.parent.is_dir():
        raise ReportError(f"Cannot write {out}: the folder {out.parent} does not exist")
    if out.is_dir():
        raise ReportError(f"{out} is a folder: give the report's file name, e.g. {out / 'report.html'}")
    document, measured = build(run_dirs, data, split, load, progress)
    try:
        fileio.write_text_atomic(out, document)
    except OSError as exc:
        raise ReportError(f"Cannot write {out}: {exc.strerror or exc}") from exc
    return {"out": str(out), "bytes": out.stat().st_size, "seconds": time.time() - started, "runs": measured}
