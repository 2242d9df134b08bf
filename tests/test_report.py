"""The report to hand over: `report MODEL... --out FILE.html`, one self-contained HTML file that
opens offline (no request leaves, in Chromium with the network blocked), and its button in the app."""

import json
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from alexnet_core import locations
from alexnet_core.analysis import report
from alexnet_core.store import catalog, layout, liveness
from tests.helpers import cli, make_image_folder
from tests.test_browser import CHROMIUM, CHROMIUM_ARGS, _require_browser

TIMEOUT = 120


class Links(HTMLParser):
    """Every src and href of a document, and the images' sources."""

    def __init__(self):
        super().__init__()
        self.links, self.images = [], []

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name in ("src", "href") and value is not None:
                self.links.append(value)
                if tag == "img":
                    self.images.append(value)


def links_of(document: str) -> Links:
    parser = Links()
    parser.feed(document)
    return parser


def small_val_folder(root: Path, per_class: int = 2) -> Path:
    """root/val/<class>/: the first images of each class of the bundled sample's validation split."""
    for folder in sorted((locations.SAMPLE_DIR / "val").iterdir()):
        dest = root / "val" / folder.name
        dest.mkdir(parents=True)
        for image in sorted(folder.iterdir())[:per_class]:
            shutil.copy(image, dest / image.name)
    return root


def fake_run(root, run_id, learning_rate=0.1, epochs=3):
    """A finished run without a model: settings, metrics, steps and status."""
    run_dir = catalog.create_run(root, run_id, {"variant": "compact", "data": "/home/someone/photos/train",
                                                "epochs": epochs, "optimizer": "sgd", "val_split": 0.1,
                                                "learning_rate": learning_rate, "class_names": ["a", "b"]})
    (run_dir / layout.METRICS).write_text("epoch,loss,accuracy,val_loss,val_accuracy,learning_rate\n" + "".join(
        f"{e},{1.5 - 0.3 * e},{0.4 + 0.1 * e},{1.6 - 0.3 * e},{0.35 + 0.1 * e},{learning_rate}\n" for e in range(epochs)))
    (run_dir / layout.STEPS).write_text("step,epoch,loss,accuracy,learning_rate\n" + "".join(
        f"{s},{s // 10 + 1},{2 - s / 40},{s / 60},{learning_rate}\n" for s in range(1, 30)))
    liveness.write_status(run_dir, state="finished", pid=None, started=1.0, steps_per_epoch=10, message="done")
    return run_dir


@pytest.fixture(scope="module")
def demo_report(tmp_path_factory):
    """The demo's report, evaluated on 2 sample images a class: (its path, the command's JSON)."""
    folder = tmp_path_factory.mktemp("report")
    data = small_val_folder(folder / "data")
    out = folder / "demo.html"
    done = cli("report", "demo", "--out", str(out), "--data", str(data), "--split", "val", "--json",
               env={"ALEXNET_RUNS_DIR": str(folder / "runs")}, timeout=240)
    assert done.returncode == 0, done.stderr
    return out, json.loads(done.stdout)


def test_the_demo_report_holds_the_model_card_figures_and_images(demo_report):
    out, summary = demo_report
    document = out.read_text(encoding="utf-8")
    assert summary["out"] == str(out) and summary["bytes"] == out.stat().st_size
    measured = summary["runs"][0]
    assert measured["n"] == 20 and measured["split"] == "val" and 0.5 <= measured["accuracy"] <= 1
    # The model card: what it is, its data, intended use and limits; never the trainer's paths.
    for words in ("Model card", "Compact AlexNet, high resolution", "colour images of 32x32 pixels",
                  "10: airplane, automobile, bird", "CIFAR-10 training images, files 0000-4499",
                  "Intended use and limits", "Knows 10 classes at 32x32 pixels", "forced into one of them"):
        assert words in document, words
    assert "../shared" not in document and "shared/datasets" not in document and str(out.parent) not in document
    # The headline figure in the words every page uses, and every recorded evaluation's.
    for record in report._evaluations(locations.DEMO_RUN):
        assert catalog.headline_words(report._safe_record(record))["sentence"] in document
    assert "The model's headline figure: 89.3% validation accuracy on 5,000 held-out CIFAR-10 images" in document
    assert "Not the headline figure" in document  # the report's own evaluation says how it differs
    # Curves, matrix, per-class bars: plotly.js inlined once, each figure a div of its own.
    assert document.count('class="plotly-graph-div"') == 3
    assert document.count("plotly.js v") == 1
    for heading in ("Training curves", "Confusion matrix", "Per class", "The most confident mistakes",
                    "Where the network looked (Grad-CAM)", "Settings", "Learning rate"):
        assert heading in document, heading
    assert "Comparison" not in document
    # Images embedded, and nothing to fetch: every src and href is a data: URI or a place in the file.
    found = links_of(document)
    assert len(found.images) >= 10
    assert all(link.startswith("data:image/") for link in found.images)
    assert all(link.startswith(("data:", "#")) for link in found.links), [link[:60] for link in found.links
                                                                           if not link.startswith(("data:", "#"))]
    assert "@media print" in document and "break-before: page" in document


def test_two_runs_are_compared(tmp_path):
    root = tmp_path / "runs"
    fake_run(root, "slow-a", learning_rate=0.05)
    second = fake_run(root, "fast-b", learning_rate=0.1)
    catalog.write_label(second, "<b>fast</b> & bold", "")
    out = tmp_path / "two.html"
    done = cli("report", "slow-a", str(second), "--out", str(out), "--runs-dir", str(root), timeout=120)
    assert done.returncode == 0, done.stderr
    assert "slow-a: not evaluated (no model file)" in done.stdout
    document = out.read_text(encoding="utf-8")
    assert '<h2>1. slow-a</h2>' in document and '<h2>2. &lt;b&gt;fast&lt;/b&gt; &amp; bold (fast-b)</h2>' in document
    assert "<b>fast</b>" not in document  # a name is text, never markup
    assert '<section class="chapter" id="comparison"><h2>Comparison</h2>' in document
    comparison = document.split('id="comparison"')[1]
    for title in ("Validation accuracy", "Training loss", "Learning rate", "Settings that differ"):
        assert f"<h3>{title}</h3>" in comparison, title
    differs = comparison.split("Settings that differ")[1]
    assert "<td>learning_rate</td><td>0.05</td><td>0.1</td>" in differs
    assert "<td>optimizer</td>" not in differs  # shared settings are left out
    assert document.count("plotly.js v") == 1 and document.count('class="plotly-graph-div"') == 2 + 5
    assert "/home/someone" not in document and "photos/train" in document  # the data's name, not its path


def test_a_bad_model_writes_nothing(tmp_path):
    (tmp_path / "not-a-run").mkdir()
    out = tmp_path / "out" / "report.html"
    out.parent.mkdir()
    for model, says in (("no-such-run", "'no-such-run' is neither a run folder, a run id"),
                        (str(tmp_path / "not-a-run"), "is a folder but not a run folder")):
        done = cli("report", "demo", model, "--out", str(out), timeout=60)
        assert done.returncode == 2
        assert done.stderr.startswith("error: ") and says in done.stderr and "Traceback" not in done.stderr
        assert list(out.parent.iterdir()) == []
    done = cli("report", "demo", "--out", str(tmp_path / "missing" / "report.html"), timeout=60)
    assert done.returncode == 2 and "the folder" in done.stderr and "does not exist" in done.stderr
    done = cli("report", "demo", "--split", "val", "--out", str(out), timeout=60)
    assert done.returncode == 2 and "--split applies to the data of --data" in done.stderr
    assert list(out.parent.iterdir()) == []


def test_the_report_evaluates_the_headline_data_when_it_is_here(tmp_path):
    """The headline's data when this machine has it, else the run's own validation split, else the sample's."""
    run_dir = fake_run(tmp_path / "runs", "somewhere")
    config = layout.read_checked(run_dir / layout.CONFIG, layout.CONFIG_SCHEMA)[0]
    assert [c["data"] for c in report._choices(run_dir, config)] == ["sample"]
    here = tmp_path / "cifar" / "train"
    here.mkdir(parents=True)
    liveness.write_status(run_dir, state="finished", evaluations=[
        {"data": str(here), "split": "val", "n": 50, "accuracy": 0.5, "headline": True}])
    first = report._choices(run_dir, config)[0]
    assert first["data"] == str(here) and first["split"] == "val" and first["headline"]
    assert report.data_name(str(here)) == "cifar/train" and report.data_name("../shared/datasets/x/y") == "x/y"


def test_a_run_still_training_is_reported_from_its_best_epoch_on_its_own_validation_split(tmp_path):
    """No headline and no --data: the validation split the run held out, and its best checkpoint so far."""
    from alexnet_core.models.variants import build_model

    data = make_image_folder(tmp_path / "photos" / "mine", classes=3, per_class=8)
    run_dir = catalog.create_run(tmp_path / "runs", "training-c", {
        "variant": "compact", "data": str(data), "epochs": 5, "val_split": 0.25, "input_size": 16,
        "switches": {"width": 0.25}, "class_names": ["class0", "class1", "class2"]})
    (run_dir / layout.METRICS).write_text("epoch,loss,accuracy,val_loss,val_accuracy\n0,1.1,0.3,1.0,0.4\n")
    liveness.write_status(run_dir, state="stopped", message="stopped")
    build_model("compact", num_classes=3, input_size=16, width=0.25).save(run_dir / layout.CHECKPOINTS / layout.BEST)
    document, measured = report.build([run_dir])
    assert measured[0]["n"] == 6 and measured[0]["data"] == "photos/mine" and measured[0]["split"] == "val"
    assert "the validation split the run held out while training" in document
    assert "The run has not finished: the model here is its best epoch so far." in document
    assert "This run has no recorded evaluation, so it has no headline figure; the report's own" in document
    assert "Knows 3 classes at 16x16 pixels" in document and str(tmp_path) not in document
    assert document.count('class="tile"') >= 3  # mistakes or examples, each with its Grad-CAM
    assert all(link.startswith(("data:", "#")) for link in links_of(document).links)


def test_the_button_builds_once_per_version_of_the_runs(tmp_path):
    run_dir = fake_run(tmp_path / "runs", "button-run")

    def script():
        import streamlit as st

        from alexnet_ui.report_view import report_button

        report_button([st.session_state["run_dir"]], "t")

    at = AppTest.from_function(script, default_timeout=TIMEOUT)
    at.session_state["run_dir"] = str(run_dir)
    at.run()
    assert not at.exception, at.exception
    assert [b.label for b in at.button] == ["Build the report"] and not at.get("download_button")
    at.button(key="report_go_t").click().run()
    assert not at.exception, at.exception
    built = at.session_state["report_t"]
    assert b"Model card" in built["data"] and b"button-run" in built["data"]
    downloads = at.get("download_button")
    assert len(downloads) == 1 and downloads[0].proto.label.startswith("Report (HTML, ")
    at.run()  # drawn again: offered at once, not built again
    assert not at.button and at.session_state["report_t"] is built
    with open(run_dir / layout.METRICS, "a") as fh:  # the run changed: built again on request
        fh.write("3,0.5,0.8,0.6,0.7,0.1\n")
    at.run()
    assert [b.label for b in at.button] == ["Build the report"]


@pytest.mark.browser
def test_the_report_opens_offline_in_chromium(demo_report):
    """Every request but the file's own is refused and recorded: none is made, the charts draw, no error."""
    _require_browser()
    from playwright.sync_api import sync_playwright

    out, _ = demo_report
    left, errors = [], []

    def route(request_route):
        url = request_route.request.url
        if url == out.as_uri():
            request_route.continue_()
        else:
            left.append(url)
            request_route.abort()

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 1000})
            page.route("**/*", route)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.goto(out.as_uri())
            page.wait_for_selector(".js-plotly-plot .main-svg", timeout=30_000)
            page.wait_for_timeout(500)
            assert page.locator(".js-plotly-plot").count() == 3
            assert page.locator(".js-plotly-plot .scatterlayer .trace").count() >= 4  # curves and matrix drawn
            broken = page.evaluate("[...document.images].filter(i => !i.complete || !i.naturalWidth).length")
            assert broken == 0
            assert page.evaluate("document.documentElement.scrollWidth") <= 1440  # nothing wider than the window
        finally:
            browser.close()
    assert left == [], f"requests left the file: {left}"
    assert errors == []
