"""The Question the paper page: the claims with their verdicts, curves, runs and Run it here,
against run folders written by the test (a bundle in a temporary folder, the user's runs)."""

import json
import math
from dataclasses import asdict
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from alexnet_core import locations
from alexnet_core.analysis import claims
from alexnet_core.store import catalog, layout, liveness
from alexnet_ui.claims_view import curve_columns, curves_figure
from alexnet_ui.text import format_duration

TIMEOUT = 120
ROOT = Path(__file__).resolve().parent.parent
EPOCHS = claims.CPU_BASE["epochs"]  # each run of an experiment on this machine (six runs for claim 1: 2 arms, 3 seeds)
ENVIRONMENT = {"device": {"kind": "CPU", "name": "AMD EPYC", "count": 1, "cores": 2}, "replicas": 1}

# Per arm: (epochs for the training error to fall by e, its floor, the train-validation gap), so
# ReLU reaches 25% training error in a few epochs and tanh much later.
SHAPES = {"relu": (2.0, 0.05, 0.10), "tanh": (7.0, 0.10, 0.10), "lrn": (3.0, 0.20, 0.05),
          "none": (3.0, 0.22, 0.07)}


def write_claim_runs(folder, name, epochs=6, prefix="", read_only=False, shapes=SHAPES, seeds=(0, 1, 2)):
    """Finished run folders of claim `name`'s experiment in `folder`: config.json as the experiment
    sets it, metrics.csv with falling errors per arm (SHAPES), status.json finished. Returns their ids."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    ids = []
    for arm, seed, config in claims.experiment_configs(name, seeds=seeds):
        tau, floor, gap = shapes.get(arm.name, (3.0, 0.25, 0.08))
        run_id = f"{prefix}{name}-{arm.name}-s{seed}"
        run_dir = catalog.create_run(folder, run_id, {**asdict(config), "environment": ENVIRONMENT,
                                                      "class_names": [f"c{i}" for i in range(10)]})
        lines = ["epoch,accuracy,epoch_seconds,loss,val_accuracy,val_loss"]
        for e in range(epochs):
            train_error = floor + (0.9 - floor) * math.exp(-(e + 1) / tau) + 0.01 * seed
            lines.append(f"{e},{1 - train_error:.5f},20.0,{2 * train_error:.4f},{1 - train_error - gap:.5f},"
                         f"{2 * (train_error + gap):.4f}")
        (run_dir / layout.METRICS).write_text("\n".join(lines) + "\n")
        liveness.write_status(run_dir, state="finished", message="Finished", epoch=epochs, elapsed_s=20.0 * epochs,
                              finished=1.0)
        if read_only:
            (run_dir / layout.READ_ONLY).write_text("")
        ids.append(run_id)
    return ids


@pytest.fixture
def bundle(tmp_path, monkeypatch):
    """An empty bundle folder the page reads instead of assets/claims."""
    folder = tmp_path / "claims"
    (folder / "runs").mkdir(parents=True)
    monkeypatch.setattr(locations, "CLAIMS_DIR", folder)
    return folder


@pytest.fixture
def no_training(monkeypatch):
    """The queue keeps its runs waiting: nothing starts a trainer. Returns the runs it was asked to start."""
    from alexnet_core.train import queue

    asked = []
    monkeypatch.setattr(queue, "advance", lambda *a, **k: asked.append((a, k)) or [])
    return asked


def run_page(claim=None):
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT)
    at.switch_page("pages/claims.py")
    if claim:
        at.query_params["claim"] = claim
    at.run()
    assert not at.exception, at.exception
    return at


def text(at) -> str:
    """Every Markdown, caption and alert of the page as one text, escapes removed."""
    parts = [e.value for kind in ("markdown", "caption", "info", "success", "error", "warning") for e in at.get(kind)]
    return "\n".join(parts).replace("\\", "")


def chart_spec(at, index=0) -> dict:
    return json.loads(at.get("plotly_chart")[index].proto.spec)


# --- The figure, without a browser ---------------------------------------------------------


def synthetic_frame():
    rows = []
    for arm, (tau, floor, gap) in (("relu", SHAPES["relu"]), ("tanh", SHAPES["tanh"])):
        for seed in (0, 1):
            for e in range(1, 6):
                train = floor + (0.9 - floor) * math.exp(-e / tau)
                rows.append({"run_id": f"{arm}-{seed}", "arm": arm, "seed": seed, "epoch": e,
                             "train_error": train, "val_error": train + gap})
    return pd.DataFrame(rows)


def test_curves_figure_thin_runs_bold_means_threshold_and_frames():
    fig = curves_figure(synthetic_frame(), [("relu", "ReLU"), ("tanh", "tanh")], "train_error", 0.25, "25%")
    widths = [t.line.width for t in fig.data]
    assert widths == [1, 1, 1, 1, 3.5, 3.5]  # four runs, then the two arms' means
    assert fig.data[0].line.color == fig.data[1].line.color == fig.data[4].line.color  # coloured by arm
    assert fig.data[0].line.color != fig.data[2].line.color
    assert list(fig.data[4].y) == pytest.approx(synthetic_frame().query("arm == 'relu'")
                                                .groupby("epoch")["train_error"].mean().tolist())
    (line,) = fig.layout.shapes
    assert (line.y0, line.y1, line.line.dash) == (0.25, 0.25, "dash")
    # Play: one frame per epoch, each trace cut at that epoch; the figure opens on the last
    assert [f.name for f in fig.frames] == ["1", "2", "3", "4", "5"]
    assert [len(t.x) for t in fig.frames[1].data] == [2] * 6
    assert fig.frames[1].layout.title.text == "Epoch 2 of 5" and fig.layout.title.text == "Epoch 5 of 5"
    assert fig.layout.sliders[0].active == 4
    assert fig.layout.updatemenus[0].buttons[0].label == "▶ Play"


def test_curves_figure_gap_draws_the_training_error_dashed():
    fig = curves_figure(synthetic_frame(), [("relu", "ReLU"), ("tanh", "tanh")], "val_error", beside="train_error")
    dashed = [t for t in fig.data if t.line.dash == "dash"]
    assert [t.name for t in dashed] == ["ReLU: training error", "tanh: training error"]
    assert fig.data[4].name == "ReLU (mean of 2 runs)"
    assert not fig.layout.shapes  # no threshold


def test_curve_columns_follow_each_claims_measure():
    assert curve_columns(claims.CLAIMS["relu"])[:2] == ("train_error", 0.25)
    assert curve_columns(claims.CLAIMS["lrn"]) == ("val_error", None, "", None)
    assert curve_columns(claims.CLAIMS["dropout"])[3] == "train_error"  # the gap
    assert curve_columns(claims.CLAIMS["overlapping-pool"])[3] == "train_error"  # its second part


# --- The page -------------------------------------------------------------------------------


def test_without_any_run_every_claim_is_not_run_yet_and_offers_run_it_here(bundle):
    at = run_page()
    picker = at.radio(key="claims_pick")
    assert picker.options[0].startswith("1. ReLUs train six times faster than tanh")
    assert len(picker.options) == 7 and all(":gray-badge[not run yet]" in o for o in picker.options)
    assert "A four-layer convolutional neural network with ReLUs (solid line) reaches" in text(at)
    assert "Section 3.1, Figure 1" in text(at)
    assert "No curves yet" in text(at)
    assert not at.get("plotly_chart")
    assert any(b.label == "Run it here" for b in at.button)
    assert f"6 runs of {EPOCHS} epochs" in text(at)  # what Run it here would queue, before any click
    assert at.query_params["claim"] == "relu"


def test_bundled_runs_give_the_verdict_the_curves_and_links_to_runs(bundle):
    write_claim_runs(bundle / "runs", "relu", read_only=True)
    at = run_page()
    expected = claims.verdict("relu")
    assert expected["verdict"] == "agrees" and expected["source"] == "bundled"
    assert ":green-badge[agrees]" in at.radio(key="claims_pick").options[0]
    page = text(at)
    assert "Bundled result (measured on a 2-core AMD EPYC CPU" in page
    assert expected["ours"] in page
    assert "epochs to 25% training error" in page and "mean ± sd over 3 seeds" in page
    spec = chart_spec(at)
    threshold = [s for s in spec["layout"]["shapes"] if s.get("y0") == 0.25]
    assert threshold and threshold[0]["line"]["dash"] == "dash"
    assert len(spec["frames"]) == 6  # Play: one frame per epoch
    assert [link.proto.label for link in at.get("page_link")][:6] == [f"seed {s}" for s in (0, 1, 2)] * 2
    tanh = at.get("page_link")[5].proto
    assert (tanh.page, tanh.query_string) == ("runs", "run=relu-tanh-s2")
    table = at.dataframe[0].value.set_index("run")
    assert sorted(table.index) == sorted(expected["runs"])
    train_error = 0.05 + 0.85 * math.exp(-6 / 2.0)  # SHAPES["relu"], seed 0, after 6 epochs
    assert table.loc["relu-relu-s0", "val_error"] == pytest.approx(100 * (train_error + 0.10), abs=1e-3)  # points
    assert "data" not in table  # all on CIFAR-10, as the experiment
    assert "agrees" in page and "Within noise:" in page  # the one-line explanation


def test_run_it_here_queues_the_missing_runs(bundle, no_training):
    at = run_page()
    at.radio(key="claims_data").set_value("sample").run()
    assert not at.exception
    next(b for b in at.button if b.label == "Run it here").click().run()
    assert not at.exception, at.exception
    from alexnet_core.train import queue

    entries = queue.entries(locations.runs_root())
    assert len(entries) == 6 and all(e["state"] == "queued" for e in entries)
    configs = [json.loads((Path(e["run_dir"]) / layout.CONFIG).read_text()) for e in entries]
    assert [(c["switches"]["activation"], c["seed"]) for c in configs][:2] == [("relu", 0), ("tanh", 0)]
    assert all(c["data"] == "sample" and c["epochs"] == EPOCHS for c in configs)
    page = text(at)
    assert "Queued 6 runs; 6 wait in the queue (positions 1 to 6)" in page
    assert any(link.proto.label == "Watch the first one on Train" for link in at.get("page_link"))
    # Nothing is queued twice: the runs are there now
    at.run()
    assert not any(b.label == "Run it here" for b in at.button)
    assert "nothing to queue" in text(at)


def test_the_users_runs_replace_the_bundled_verdict_and_say_so(bundle):
    write_claim_runs(bundle / "runs", "lrn", read_only=True,
                     shapes={"lrn": (3.0, 0.20, 0.05), "none": (3.0, 0.30, 0.05)})  # bundled: LRN wins by 10 points
    at = run_page("lrn")
    assert at.radio(key="claims_pick").value == "lrn"
    assert "Bundled result" in text(at)
    mine = write_claim_runs(locations.runs_root(), "lrn", prefix="my-", seeds=(0, 1),
                            shapes={"lrn": (3.0, 0.30, 0.05), "none": (3.0, 0.20, 0.05)})  # yours: LRN loses
    at.run()
    assert not at.exception
    page = text(at)
    assert "Your runs replace the bundled result: 4 finished runs in your runs folder" in page
    assert "Bundled result" not in page
    assert ":red-badge[disagrees]" in at.radio(key="claims_pick").options[1]
    assert sorted(at.dataframe[0].value["run"]) == sorted(mine)


def test_the_gpu_size_refuses_a_folder_that_is_not_laid_out_as_imagenet(bundle, tmp_path):
    from tests.helpers import make_ilsvrc_folder

    at = run_page()
    at.radio(key="claims_size").set_value("gpu").run()
    at.text_input(key="claims_gpu_data").set_value(str(tmp_path)).run()
    assert not at.exception
    assert "is not laid out as ImageNet: it has no train/ and no val/" in at.error[0].value.replace("\\", "")
    assert not any(b.label == "Run it here" for b in at.button)
    folder = make_ilsvrc_folder(tmp_path / "ilsvrc", train=2, val=1)
    at.text_input(key="claims_gpu_data").set_value(str(folder)).run()
    assert not at.exception and not at.error
    assert any(b.label == "Run it here" for b in at.button)
    assert f"6 runs of {claims.GPU_BASE['epochs']} epochs" in text(at)


def test_time_an_epoch_here_when_no_epoch_was_measured(bundle, monkeypatch):
    """No bundle, no runs: the time comes from an epoch of each arm timed here (the Train page's
    estimate, replaced here by a fixed 7 s an epoch), for the images the runs would train on."""
    from alexnet_ui import train_view

    timed = []
    monkeypatch.setattr(train_view, "epoch_estimate",
                        lambda config_json, *counts: timed.append((json.loads(config_json), counts)) or 7.0)
    at = run_page()
    at.radio(key="claims_data").set_value("sample").run()
    assert "how long they take is not known yet" in text(at)
    next(b for b in at.button if b.label == "Time an epoch here").click().run()
    assert not at.exception, at.exception
    assert [c["switches"]["activation"] for c, _ in timed] == ["relu", "tanh"]  # one epoch of each arm
    per_class = claims.CPU_BASE["train_per_class"]
    assert {counts for _, counts in timed} == {(10, min(200, per_class) * 10, 1000)}  # the sample's images
    assert (f"About **{format_duration(6 * EPOCHS * 7.0)}** on this machine: 6 runs of {EPOCHS} epochs, from an "
            "epoch of each arm timed here") in text(at)


def test_a_bundled_runs_link_opens_it_on_the_runs_page(bundle):
    write_claim_runs(bundle / "runs", "relu", read_only=True)
    link = next(link.proto for link in run_page().get("page_link") if "run=relu-tanh-s1" in link.proto.query_string)
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT)
    at.switch_page(f"pages/{link.page}.py")
    at.query_params["run"] = "relu-tanh-s1"
    at.run()
    assert not at.exception, at.exception
    assert not at.warning, [w.value for w in at.warning]  # not "There is no run named ..."
    assert any("relu-tanh-s1" in m.value.replace("\\", "") for m in at.markdown)  # its card


def test_the_users_runs_without_a_bundle_are_measured_not_replacing(bundle):
    write_claim_runs(locations.runs_root(), "lrn", seeds=(0, 1))
    at = run_page("lrn")
    page = text(at)
    assert "Measured from your runs: 4 finished runs in your runs folder" in page
    assert "replace" not in page and "Bundled result" not in page
    assert "Validation error: without normalisation minus with LRN" in page  # what the figures compare


def test_one_seed_an_arm_is_too_few_runs_and_says_so(bundle):
    write_claim_runs(locations.runs_root(), "lrn", seeds=(0,))
    at = run_page("lrn")
    assert ":violet-badge[too few runs]" in at.radio(key="claims_pick").options[1]
    page = text(at)
    assert "too few runs: 1 finished with LRN" in page
    assert "Within noise:" not in page  # nothing compared yet
    assert "Measured from your runs: 2 finished runs" in page
