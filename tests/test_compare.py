"""Compare on the Runs page: TensorBoard's smoothing, curves against epoch, step and wall-clock
time, the settings-against-result plot, tags and filters, and the runs table as a browser shows it."""

import json
import math
import os
import sys

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from alexnet_core import locations
from alexnet_core.analysis import charts
from alexnet_core.store import catalog, layout, liveness

TIMEOUT = 120
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(root, run_id, lr=0.1, epochs=3, seconds=(10.0, 20.0, 30.0), state="finished", augment="paper", started=1.7e9):
    """A finished run written by hand: metrics with each epoch's time, steps every 5 of 10 per epoch."""
    run_dir = catalog.create_run(root, run_id, {"variant": "compact", "data": "sample", "epochs": epochs,
                                                "batch_size": 32, "learning_rate": lr, "augment": augment,
                                                "steps_per_epoch": 10, "input_size": None})
    rows = "".join(f"{e},{1.5 - 0.3 * e},{0.4 + 0.1 * e + lr},{1.6 - 0.3 * e},{0.35 + 0.1 * e + lr},{seconds[e]}\n"
                   for e in range(epochs))
    (run_dir / layout.METRICS).write_text("epoch,loss,accuracy,val_loss,val_accuracy,epoch_seconds\n" + rows)
    (run_dir / layout.STEPS).write_text("step,epoch,loss,accuracy,learning_rate\n" + "".join(
        f"{s},{(s - 1) // 10 + 1},{2 - s / 40},{s / 60},{lr}\n" for s in range(5, 10 * epochs + 1, 5)))
    liveness.write_status(run_dir, state=state, started=started, steps_per_epoch=10, elapsed_s=60.0)
    return run_dir


# --- Pure functions -----------------------------------------------------------------------------


def test_smoothing_is_tensorboards_debiased_ema():
    # By hand, weight 0.5: 0.5*1 / (1-0.5) = 1; (0.25 + 0.5*2) / 0.75 = 1.6667; (0.625 + 1.5) / 0.875 = 2.428571
    assert np.allclose(charts.ema_smooth([1, 2, 3], 0.5), [1.0, 1.25 / 0.75, 2.125 / 0.875])
    assert np.allclose(charts.ema_smooth([1, 2, 3], 0.0), [1, 2, 3])  # no smoothing
    assert np.allclose(charts.ema_smooth([4, 4, 4], 0.9), [4, 4, 4])  # a constant stays
    out = charts.ema_smooth([1, float("nan"), 3], 0.5)  # a gap passes through, skipped by the average
    assert out[0] == 1 and math.isnan(out[1]) and np.isclose(out[2], (0.25 + 1.5) / 0.75)
    with pytest.raises(ValueError):
        charts.ema_smooth([1, 2], 1.0)


def test_curves_against_epoch_step_and_wall_clock_time():
    metrics = pd.DataFrame({"epoch": [1, 2], "loss": [1.0, 0.5], "val_accuracy": [0.3, 0.5],
                            "epoch_seconds": [10.0, 20.0]})
    steps = pd.DataFrame({"step": [5, 10, 15, 20], "epoch": [1, 1, 2, 2], "loss": [2.0, 1.5, 1.0, 0.8],
                          "learning_rate": [0.1] * 4})

    def xy(metric, axis, **kw):
        s = charts.metric_series(metrics, steps, metric, axis, steps_per_epoch=10, **kw)
        return list(s["x"]), list(s["y"])

    assert xy("val_accuracy", "epoch") == ([1, 2], [0.3, 0.5])
    assert xy("val_accuracy", "step") == ([10, 20], [0.3, 0.5])  # the end of each epoch
    assert xy("val_accuracy", "time") == ([10, 30], [0.3, 0.5])  # the epochs' recorded times, added up
    assert xy("loss", "epoch") == ([0.5, 1, 1.5, 2], [2.0, 1.5, 1.0, 0.8])  # per step where logged
    assert xy("loss", "epoch", per_step=False) == ([1, 2], [1.0, 0.5])
    # A step's time: placed in its epoch in proportion (step 15 is half way through the 20-s epoch 2).
    assert xy("loss", "time")[0] == [5, 10, 20, 30]
    timed = steps.assign(elapsed_s=[4.0, 9.0, 21.0, 28.0])  # a trainer that records its steps' time
    assert list(charts.metric_series(metrics, timed, "loss", "time", 10)["x"]) == [4, 9, 21, 28]
    assert xy("images_per_s", "epoch", images_per_epoch=320) == ([1, 2], [32.0, 16.0])
    assert charts.metric_series(metrics, steps, "images_per_s", "epoch").empty  # not knowing the images: nothing
    assert charts.metric_series(metrics.drop(columns="epoch_seconds"), steps, "val_accuracy", "time").empty


def test_compare_figure_draws_raw_faint_behind_smoothed():
    series = {"a": pd.DataFrame({"x": [1.0, 2, 3], "y": [0.2, 0.4, 0.3]}),
              "b": pd.DataFrame({"x": [1.0, 2], "y": [0.1, 0.5]}), "empty": pd.DataFrame({"x": [], "y": []})}
    plain = charts.compare_figure(series, "val_accuracy")
    assert [t.name for t in plain.data] == ["a", "b"] and list(plain.data[0].y) == [0.2, 0.4, 0.3]
    smooth = charts.compare_figure(series, "val_accuracy", smoothing=0.5)
    raw, line = smooth.data[0], smooth.data[1]
    assert raw.opacity < 0.5 and raw.showlegend is False and list(raw.y) == [0.2, 0.4, 0.3]
    assert np.allclose(line.y, charts.ema_smooth([0.2, 0.4, 0.3], 0.5)) and line.line.color == raw.line.color
    assert list(smooth.layout.yaxis.range) == [0, 1.02]
    hours = charts.compare_figure({"a": pd.DataFrame({"x": [3600.0, 7200, 18000], "y": [1, 2, 3]})}, "loss", "time")
    assert list(hours.data[0].x) == [1, 2, 5] and hours.layout.xaxis.title.text == "training time (hours)"


def test_settings_against_result_plots():
    frame = pd.DataFrame({"run": ["a", "b", "c"], "learning_rate": [0.01, 0.1, 0.05],
                          "augment": ["paper", "none", "paper"], "Best": [0.5, 0.3, 0.6]})
    fig = charts.settings_parallel(frame, "Best", "Best")
    dims = {d.label: d for d in fig.data[0].dimensions}
    assert list(dims) == ["run", "learning_rate", "augment", "Best"]
    assert list(dims["augment"].ticktext) == ["none", "paper"] and list(dims["augment"].values) == [1, 0, 1]
    assert list(dims["learning_rate"].values) == [0.01, 0.1, 0.05] and list(dims["Best"].values) == [0.5, 0.3, 0.6]
    scatter = charts.settings_scatter(frame, "augment", "Best", "Best")
    assert scatter.layout.xaxis.type == "category" and list(scatter.data[0].text) == ["a", "b", "c"]


def test_tags_are_kept_clean_and_filter_the_runs(tmp_path):
    a, b = run(tmp_path, "a-run"), run(tmp_path, "b-run", state="stopped", started=1.7e9 + 1)
    catalog.write_label(a, "Baseline", "first try", [" lr  sweep ", "LR sweep", "paper", ""])
    assert catalog.read_label(a) == {"name": "Baseline", "notes": "first try", "tags": ["lr sweep", "paper"]}
    catalog.write_label(a, "Baseline 2", "")  # tags None: the tags stay
    assert catalog.read_label(a)["tags"] == ["lr sweep", "paper"]
    with pytest.raises(layout.RunError, match="at most 24 characters"):
        catalog.write_label(a, "", "", ["x" * 25])
    with pytest.raises(layout.RunError, match="at most 12 tags"):
        catalog.write_label(a, "", "", [f"t{i}" for i in range(13)])
    (b / layout.LABEL).write_text(json.dumps({"name": "x", "tags": "not a list"}))
    assert catalog.read_label(b)["tags"] == []  # a damaged entry is no tags, not a crash
    rows = catalog.list_runs(tmp_path)

    def ids(**kw):
        return [r["run_id"] for r in catalog.filter_runs(rows, **kw)]

    assert ids() == ["b-run", "a-run"]
    assert ids(tags=["PAPER"]) == ["a-run"] and ids(states=["stopped"]) == ["b-run"]
    assert ids(text="baseline sample") == ["a-run"] and ids(text="baseline nothing") == []
    assert ids(variants=["paper"]) == []


def test_a_bundled_run_never_shows_the_path_it_was_trained_from():
    assert catalog.data_words({"data": "../shared/datasets/cifar10/train"}, read_only=True) == \
        "a folder 'cifar10/train' on the machine it was trained on"
    assert catalog.data_words({"data": "cifar10"}, read_only=True) == "cifar10"
    assert catalog.data_words({"data": "/x/y", "data_description": "My photos"}) == "My photos"
    demo = catalog.run_summary(locations.DEMO_RUN)
    assert "shared" not in demo["data"] and demo["headline"]["value"] == "89.3%"
    config = layout.read_config(locations.DEMO_RUN)  # the Settings download of a bundled run
    shared = catalog.shareable_config(config, read_only=True)
    assert shared["data"] == "cifar10/train" and "machine it was trained on" in shared["data_note"]
    assert {k: v for k, v in shared.items() if not k.startswith("data")} == \
        {k: v for k, v in config.items() if not k.startswith("data")}
    assert catalog.shareable_config(config, read_only=False) is config  # the user's own run: as it is


def test_the_runs_tables_columns_fit_1440_px_whichever_are_shown():
    from alexnet_ui.runs_view import TABLE_ROOM, WIDTHS, column_widths

    every = list(WIDTHS)
    for columns in (every, [c for c in every if c not in ("label", "tags", "trained_on")], every[:4]):
        widths = column_widths(columns)
        assert set(widths) == set(columns) and sum(widths.values()) <= TABLE_ROOM, widths
        assert min(widths.values()) >= 60
    assert column_widths(["run_id", "state"]) == {"run_id": WIDTHS["run_id"], "state": WIDTHS["state"]}


# --- The Runs page (AppTest) ----------------------------------------------------------------------


def runs_page():
    at = AppTest.from_file(os.path.join(ROOT, "app.py"), default_timeout=TIMEOUT)
    at.switch_page("pages/runs.py")
    at.run()
    assert not at.exception, at.exception
    return at


def select(at, *run_ids):
    ids = list(at.dataframe[0].value["run_id"])
    at.session_state["runs_table"] = {"selection": {"rows": [ids.index(i) for i in run_ids], "columns": []}}
    at.run()
    assert not at.exception, at.exception


def values(array) -> list:
    """A figure's array as numbers: Plotly writes numeric arrays as base64 (bdata) in its JSON."""
    if isinstance(array, dict) and "bdata" in array:
        import base64

        return np.frombuffer(base64.b64decode(array["bdata"]), dtype=array["dtype"]).tolist()
    return list(array)


def figures(at) -> dict:
    """{title: (figure, toolbar config)} of the page's Plotly charts; the untitled one is 'settings'."""
    import plotly.io as pio

    out = {}
    for chart in at.get("plotly_chart"):
        fig = pio.from_json(chart.proto.spec, skip_invalid=True)
        out[fig.layout.title.text or "settings"] = (fig, json.loads(chart.proto.config))
    return out


def test_runs_page_compares_filters_and_tags():
    root = locations.runs_root()
    run(root, "slow-a", lr=0.01, augment="none", started=1.7e9)
    run(root, "fast-b", lr=0.1, started=1.7e9 + 1)
    run(root, "stopped-c", lr=0.05, state="stopped", epochs=1, seconds=(40.0,), started=1.7e9 + 2)
    at = runs_page()
    table = at.dataframe[0].value
    assert list(table["run_id"]) == ["stopped-c", "fast-b", "slow-a", "demo"]
    demo = table[table["run_id"] == "demo"].iloc[0]
    assert round(demo["accuracy"], 1) == 89.3 and demo["measured"] == "headline"  # the headline figure
    assert table[table["run_id"] == "fast-b"].iloc[0]["measured"] == "best epoch"
    assert "shared" not in demo["data"]

    select(at, "slow-a", "fast-b")
    shown = figures(at)
    assert set(shown) == {"Validation accuracy", "Training loss", "settings"}
    fig, config = shown["Validation accuracy"]
    assert config["toImageButtonOptions"]["format"] == "png"
    assert [t.name for t in fig.data if t.showlegend is not False] == ["slow-a", "fast-b"]
    assert [t.opacity for t in fig.data if t.opacity is not None] == [0.25, 0.25]  # raw, faint, smoothed at 0.6
    parallel = shown["settings"][0].data[0]
    assert parallel.type == "parcoords"
    assert [d.label for d in parallel.dimensions] == ["run", "learning_rate", "augment", "Best validation accuracy"]
    settings_table = next(d.value for d in at.dataframe if "slow-a" in d.value.columns)
    cells = settings_table.astype(str).to_numpy().ravel()
    assert not any(c in ("None", "nan", "NaN") for c in cells)  # input_size None reads '—'

    at.multiselect(key="compare_metrics").set_value(["learning_rate", "images_per_s"])
    at.segmented_control(key="compare_axis").set_value("time")
    at.slider(key="compare_smoothing").set_value(0.0)
    at.segmented_control(key="compare_format").set_value("SVG").run()
    assert not at.exception, at.exception
    shown = figures(at)
    fig, config = shown["Images per second"]
    assert config["toImageButtonOptions"]["format"] == "svg"
    assert values(fig.data[0].x) == [10.0, 30.0, 60.0]  # seconds of training at each epoch's end
    assert values(fig.data[0].y) == pytest.approx([32.0, 16.0, 320 / 30])  # 10 steps x 32 images / seconds
    assert all(t.opacity is None for t in fig.data)  # no smoothing: no faint copy
    assert shown["Learning rate"][0].layout.xaxis.title.text == "training time (seconds)"

    # Tags, saved on the card, then a filter: the selection keeps the runs still shown.
    at.multiselect(key="label_tags_fast-b").set_value(["sweep"])
    at.button(key="label_save_fast-b").click().run()
    assert not at.exception, at.exception
    assert catalog.read_label(root / "fast-b")["tags"] == ["sweep"]
    assert list(at.dataframe[0].value.loc[lambda t: t["run_id"] == "fast-b", "tags"].iloc[0]) == ["sweep"]
    at.multiselect(key="runs_tags").set_value(["sweep"]).run()
    assert list(at.dataframe[0].value["run_id"]) == ["fast-b"]
    assert any("1 of 4 runs match" in c.value for c in at.caption)
    cards = [m.value.replace("\\", "") for m in at.markdown if m.value.startswith("**")]
    assert any(c.startswith("**fast-b**") for c in cards) and not any("slow-a" in c for c in cards)
    assert any("1 more selected run is hidden by the filters" in c.value for c in at.caption)
    at.multiselect(key="runs_tags").set_value([]).run()  # shown again: selected again
    cards = [m.value.replace("\\", "") for m in at.markdown if m.value.startswith("**")]
    assert any(c.startswith("**slow-a**") for c in cards) and any(c.startswith("**fast-b**") for c in cards)
    at.multiselect(key="runs_states").set_value(["stopped"]).run()
    assert list(at.dataframe[0].value["run_id"]) == ["stopped-c"]
    at.multiselect(key="runs_states").set_value([])
    at.text_input(key="runs_search").set_value("no such run").run()
    assert any("No run matches" in i.value for i in at.info)


# --- In the browser -------------------------------------------------------------------------------


@pytest.mark.browser
def test_runs_page_in_the_browser_fits_1440_px_without_page_errors(tmp_path):
    """Every column of the runs table inside the page at 1440 px wide, no page error while the claims'
    runs are shown, selected and compared, and a chart downloaded from its toolbar as SVG and as PNG."""
    sys.path.insert(0, ROOT)
    from tests import test_browser as tb

    tb._require_browser()
    from playwright.sync_api import sync_playwright

    root = tmp_path / "runs"
    run(root, "named-a")
    catalog.write_label(root / "named-a", "A long name for a run", "", ["baseline", "sweep"])
    env = {**os.environ, "ALEXNET_RUNS_DIR": str(root), "ALEXNET_DATA_DIR": str(tmp_path / "data"),
           "ALEXNET_MODELS_DIR": str(tmp_path / "models")}
    with tb.app_server(env, tmp_path / "streamlit.log") as url:
        errors = []
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=tb.CHROMIUM, args=tb.CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1440, "height": 1000})
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(url + "/runs")
            page.wait_for_selector("h1:has-text('Runs')", timeout=60_000)
            tb.settle(page)
            if page.get_by_text("bundled runs of the paper's claims").count():
                page.get_by_text("bundled runs of the paper's claims").click()
                tb.settle(page)
            grid = page.locator('[data-testid="stDataFrame"]').first
            box = grid.bounding_box()
            # The grid puts only the columns in view into the page (a column scrolled out of view has no
            # header element), so every header present is every column visible.
            headers = page.locator('[data-testid="stDataFrame"] [role="columnheader"]')
            names = [headers.nth(i).inner_text().strip() for i in range(headers.count())]
            assert names == ["Run", "Name", "State", "Variant", "Data", "Epochs", "Accuracy", "Measured as",
                             "Duration", "Started", "Tags"], names
            for row in (1, 2):  # two runs selected: curves, settings, the settings plot
                page.mouse.click(box["x"] + 15, box["y"] + 35 * row + 17)
                tb.settle(page)
            page.get_by_text("2 runs selected").wait_for(timeout=30_000)
            page.wait_for_function(  # curves, settings against result, ... (each drawn when it arrives)
                "() => document.querySelectorAll('[data-testid=stPlotlyChart] .main-svg').length >= 3",
                timeout=60_000)
            tb.assert_no_errors(page, "runs")
            page.get_by_text("Wall-clock").first.click()
            tb.settle(page)
            tb.assert_no_errors(page, "runs, wall-clock")
            for fmt, start in (("SVG", b"<svg"), ("PNG", b"\x89PNG")):  # the chart's own toolbar, in the browser
                page.get_by_text(fmt, exact=True).first.click()
                tb.settle(page)
                chart = page.locator('[data-testid="stPlotlyChart"]').first
                chart.hover()
                with page.expect_download(timeout=30_000) as download:
                    chart.locator('.modebar-btn[data-title^="Download plot"]').first.click()
                assert download.value.suggested_filename == f"compare-val_accuracy-by-time.{fmt.lower()}"
                with open(download.value.path(), "rb") as fh:
                    assert fh.read(8).startswith(start)
            browser.close()
        assert not errors, errors
