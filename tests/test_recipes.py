"""Recipes (CLI and Train page), cloning a run's settings, failed runs that offer what would fix
them, CIFAR-10 known to be unreachable before Start, run names and notes, a stable selection."""

import json

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from alexnet_core import locations
from alexnet_core.cli import main
from alexnet_core.inputs import data as data_module
from alexnet_core.settings.config import ConfigError, TrainConfig
from alexnet_core.settings.recipes import RECIPES, get_recipe
from alexnet_core.store import catalog, layout, liveness
from tests.helpers import make_image_folder
from tests.test_cli import run_cli
from tests.test_pages import ROOT, TIMEOUT, fake_run, run_page


def test_the_recipes_the_app_promises():
    assert {"demo", "quick", "paper", "keras-seed"} <= set(RECIPES)
    paper = RECIPES["paper"].settings
    assert (paper["optimizer"], paper["learning_rate"], paper["weight_decay"], paper["batch_size"],
            paper["epochs"], paper["schedule"], paper["augment"]) == ("sgd", 0.01, 5e-4, 128, 90, "step", "paper")
    demo = json.loads((ROOT / "assets" / "runs" / "demo" / "config.json").read_text())
    for key, value in RECIPES["demo"].settings.items():  # demo reproduces the bundled model
        if key != "data":
            assert demo[key] == value, key
    tune = RECIPES["fine-tune"].settings  # shows the network it will train: the bundled model's
    assert (tune["variant"], tune["switches"]) == (demo["variant"], demo["switches"])


def test_explicit_settings_override_the_recipe():
    config = get_recipe("quick").config(data="sample", epochs=1, learning_rate=None, switches={"width": 0.25})
    assert (config.epochs, config.lr, config.optimizer, config.recipe) == (1, 3e-3, "adamw", "quick")
    assert config.switches == {"width": 0.25}
    with pytest.raises(ConfigError, match="recipe 'paper' needs data"):
        get_recipe("paper").config()
    with pytest.raises(ConfigError, match="Unknown recipe 'fast'. Available: demo, quick"):
        get_recipe("fast")


def test_recipes_command(capsys):
    assert main(["recipes", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in listed] == list(RECIPES)
    assert all(r["settings"]["variant"] and r["description"] and r["made_for"] for r in listed)
    for r in listed:  # the one-line summary is written from the settings themselves
        assert f"{r['settings']['epochs']} epochs, batch {r['settings']['batch_size']}" in r["summary"]
    assert main(["recipes"]) == 0
    assert "train --recipe NAME" in capsys.readouterr().out


def test_train_with_a_recipe_and_an_override(tmp_path):
    folder = make_image_folder(tmp_path / "pets", classes=2, per_class=6, size=(32, 32))
    done = run_cli("train", "--recipe", "quick", "--data", str(folder), "--epochs", "1", "--steps-per-epoch", "1",
                   "--batch-size", "4", "--width", "0.25", "--runs-dir", str(tmp_path / "runs"), "--run-id", "r")
    assert done.returncode == 0, done.stderr
    config = json.loads((tmp_path / "runs" / "r" / "config.json").read_text())
    assert (config["recipe"], config["optimizer"], config["learning_rate"], config["epochs"],
            config["batch_size"]) == ("quick", "adamw", 3e-3, 1, 4)
    refused = run_cli("train", "--recipe", "paper", "--runs-dir", str(tmp_path / "runs"))
    assert refused.returncode == 2 and "recipe 'paper' needs data" in refused.stderr
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["r"]  # nothing left behind


def test_train_page_starts_from_a_recipe_and_says_what_changed():
    at = run_page("pages/train.py")
    assert at.radio(key="train_data_kind").value == "sample"  # CIFAR-10 is not cached in tests
    assert at.selectbox(key="train_recipe").value == "sample"  # the sample's own first run
    assert at.number_input(key="train_epochs").value == RECIPES["sample"].settings["epochs"]
    assert (at.selectbox(key="train_init_from").value, at.toggle(key="train_freeze").value) == ("demo", True)
    assert at.selectbox(key="train_optimizer").value == "adamw"
    assert not at.warning  # made for this data: nothing to warn of
    at.selectbox(key="train_recipe").select("demo").run()
    assert (at.number_input(key="train_epochs").value, at.number_input(key="train_lr").value,
            at.selectbox(key="train_optimizer").value) == (120, 0.1, "sgd")
    assert (at.selectbox(key="train_variant").value, at.select_slider(key="train_width").value) == ("compact-hires", 0.75)
    assert at.radio(key="train_data_kind").value == "sample"  # the data stays the user's choice
    at.number_input(key="train_epochs").set_value(5).run()
    assert not at.exception
    assert any("Changed from the recipe: epochs 120 → 5" in c.value for c in at.caption)


def test_cifar10_unreachable_is_known_before_start(monkeypatch):
    st.cache_data.clear()
    monkeypatch.setattr(data_module, "cifar10_reachable", lambda timeout=2.0: False)
    at = run_page("pages/train.py")
    at.radio(key="train_data_kind").set_value("cifar10").run()
    assert not at.exception
    assert any("download server cannot be reached" in w.value for w in at.warning)
    assert at.button(key="train_start").disabled
    assert not any("--data" in w.value for w in at.warning)  # the app's words, not a flag
    st.cache_data.clear()
    monkeypatch.setattr(data_module, "cifar10_reachable", lambda timeout=2.0: True)
    at.run()
    assert not at.button(key="train_start").disabled
    assert any("downloads it first" in c.value for c in at.caption)
    st.cache_data.clear()


def test_a_run_that_failed_on_its_data_offers_a_new_run_not_resume():
    root = locations.runs_root()
    run_dir = fake_run(root, "offline-a", state="failed", epochs=5, done=0)
    config = json.loads((run_dir / layout.CONFIG).read_text())
    config.update({"data": "cifar10", "epochs": 7})
    (run_dir / layout.CONFIG).write_text(json.dumps(config))
    liveness.write_status(run_dir, state="failed", reason="data", message="CIFAR-10 could not be downloaded")
    row = catalog.run_summary(run_dir)
    assert not catalog.can_resume(row)
    at = run_page("pages/train.py")
    assert not any(b.label == "Resume" for b in at.button)
    assert any("fix the data or pick other data" in c.value for c in at.caption), [c.value for c in at.caption]
    at.button(key="train_clone").click().run()
    assert not at.exception
    assert any("Settings and data of offline-a filled in" in s.value.replace("\\", "") for s in at.success)
    assert at.number_input(key="train_epochs").value == 7
    assert at.radio(key="train_data_kind").value == "cifar10"
    assert at.selectbox(key="train_recipe").value == "custom"


def test_resume_stays_for_runs_a_resume_can_fix():
    root = locations.runs_root()
    for reason, resumable in (("disk", True), ("internal", True), ("data", False), ("settings", False)):
        run_dir = fake_run(root, f"r-{reason}", state="failed", epochs=5, done=1)
        liveness.write_status(run_dir, state="failed", reason=reason)
        assert catalog.can_resume(catalog.run_summary(run_dir)) is resumable, reason


def test_runs_can_be_named_and_the_name_is_shown_everywhere():
    root = locations.runs_root()
    run_dir = fake_run(root, "plain-a")
    at = run_page("pages/runs.py")
    at.query_params["run"] = "plain-a"
    at.run()
    at.text_input(key="label_name_plain-a").set_value("  Baseline,   lr 0.05 ")
    at.text_area(key="label_notes_plain-a").set_value("First try.\nFlip only.")
    at.button(key="label_save_plain-a").click().run()
    assert not at.exception
    assert catalog.read_label(run_dir) == {"name": "Baseline, lr 0.05", "notes": "First try.\nFlip only.", "tags": []}
    table = at.dataframe[0].value
    assert table.loc[table["run_id"] == "plain-a", "label"].item() == "Baseline, lr 0.05"
    train = run_page("pages/train.py")
    assert any("Baseline, lr 0.05 (plain-a)" in o for o in train.selectbox(key="train_run").options)
    with pytest.raises(layout.RunError, match="read-only"):
        catalog.write_label(locations.BUNDLED_DIR / "demo", "mine", "")
    with pytest.raises(layout.RunError, match="at most 80 characters"):
        catalog.write_label(run_dir, "x" * 81, "")
    (run_dir / layout.LABEL).write_text("{damaged")
    assert catalog.read_label(run_dir) == {"name": "", "notes": "", "tags": []}  # a damaged label: no name, no crash


def test_selection_stays_on_the_same_runs_after_a_delete():
    root = locations.runs_root()
    for name in ("one-a", "two-b", "three-c"):
        fake_run(root, name)
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT)
    at.switch_page("pages/runs.py")
    at.run()
    ids = list(at.dataframe[0].value["run_id"])
    at.session_state["runs_table"] = {"selection": {"rows": [ids.index("one-a"), ids.index("three-c")],
                                                    "columns": []}}
    at.run()
    assert not at.exception
    at.button(key="delete_three-c").click().run()
    at.run()
    assert not (root / "three-c").exists()
    shown = [m.value.replace("\\", "") for m in at.markdown if m.value.startswith("**")]
    assert any("one-a" in m for m in shown) and not any("two-b" in m for m in shown)


def test_train_config_records_the_recipe():
    assert TrainConfig(recipe="quick").recipe == "quick"
    with pytest.raises(ConfigError, match="recipe must be a name"):
        TrainConfig(recipe=3)


def test_curves_have_fixed_axes_and_a_learning_rate_panel():
    import pandas as pd

    from alexnet_core.analysis.charts import compare_curves, training_curves

    metrics = pd.DataFrame({"epoch": [0], "loss": [2.0], "accuracy": [0.18], "val_loss": [2.1],
                            "val_accuracy": [0.17]})
    steps = pd.DataFrame({"step": [10, 20, 30], "epoch": [1, 1, 1], "loss": [2.3, 2.2, 2.1],
                          "accuracy": [0.1, 0.15, 0.18], "learning_rate": [1e-3, 2e-3, 3e-3]})
    fig = training_curves(metrics, steps, 30)
    assert [a.text for a in fig.layout.annotations] == ["Loss", "Accuracy", "Learning rate"]
    assert list(fig.layout.yaxis2.range) == [0, 1.02]  # accuracy: 0-100% whatever the data
    lr = next(t for t in fig.data if t.name == "learning rate")
    assert list(lr.y) == [1e-3, 2e-3, 3e-3]
    compare = compare_curves({"a": metrics}, "val_accuracy")
    assert list(compare.layout.yaxis.range) == [0, 1.02]  # no "18%, 18%, 17%" ticks for one point
    short = training_curves(metrics.assign(learning_rate=[5e-4]), steps.iloc[0:0], 30)  # fewer steps than log_every
    assert list(next(t for t in short.data if t.name == "learning rate").y) == [5e-4]
    assert {t.mode for t in fig.data if t.name == "validation"} == {"lines+markers"}  # a dot per epoch
    long = pd.DataFrame({"epoch": range(120), "loss": 1.0, "accuracy": 0.5, "val_loss": 1.1, "val_accuracy": 0.5})
    assert {t.mode for t in training_curves(long, None).data if t.name in ("train", "validation")} == {"lines"}
    assert {t.mode for t in compare_curves({"a": long, "b": metrics}).data} == {"lines", "lines+markers"}


def test_live_view_waits_for_the_first_steps_instead_of_an_empty_chart(tmp_path):
    import os

    root = locations.runs_root()
    run_dir = catalog.create_run(root, "fresh-a", {"variant": "compact", "data": "sample", "epochs": 2})
    liveness.write_status(run_dir, state="running", pid=os.getpid(), epoch=1, step=0, steps_per_epoch=16,
                          phase="first step")
    lock = liveness.TrainerLock(run_dir).acquire()
    try:
        at = run_page("pages/train.py")
        assert any("Waiting for the first training step" in i.value for i in at.info)
        assert "Epoch 1 of 2: compiling the training step" in at.get("progress")[0].proto.text
        assert not at.get("plotly_chart")
        assert any(b.label == "Stop" for b in at.button) and not any(b.label == "Resume" for b in at.button)
        liveness.write_status(run_dir, state="running", epoch=1, step=13, steps_per_epoch=16, phase="saving",
                              images_per_sec=100.0, eta_seconds=5.0)
        at.run()
        bar = at.get("progress")[0]
        assert bar.proto.text == "Epoch 1 of 2: saving the checkpoint" and bar.proto.value == 50
    finally:
        lock.release()


def test_duration_adds_up_across_resumes(tmp_path, monkeypatch):
    """A resumed run's duration is its first session plus the new one, not the new one alone."""
    from alexnet_core.train import monitor

    run_dir = catalog.create_run(tmp_path, "twice", {"variant": "compact", "data": "sample", "epochs": 4})
    clock = [1000.0]
    monkeypatch.setattr(monitor.time, "time", lambda: clock[0])
    first = monitor.StatusWriter(run_dir)
    clock[0] += 300  # five minutes of training, then a stop
    first.update(state="stopped")
    clock[0] += 3600  # an hour later, resumed
    second = monitor.StatusWriter(run_dir)
    clock[0] += 28
    second.update(state="finished")
    assert liveness.read_status(run_dir)["elapsed_s"] == pytest.approx(328)
    assert catalog.run_summary(run_dir)["duration_s"] == pytest.approx(328)


def test_the_quick_recipe_says_how_long_it_takes_here(monkeypatch):
    import numpy as np

    from alexnet_core.inputs.data import DataSource, Split
    from alexnet_core.train import estimate

    st.cache_data.clear()
    fake = DataSource("cifar10", [f"c{i}" for i in range(10)], train=Split(np.zeros(45_000, np.int32)),
                      val=Split(np.zeros(5_000, np.int32)))
    monkeypatch.setattr(data_module, "cifar10_available", lambda: True)
    monkeypatch.setattr(data_module, "load_source", lambda source, val_split=0.1: fake)
    monkeypatch.setattr(estimate, "estimate_epoch_seconds", lambda *a, **k: 60.0)
    at = run_page("pages/train.py")
    assert at.radio(key="train_data_kind").value == "cifar10"
    at.button(key="train_estimate").click().run()
    text = next(i.value for i in at.info if "per epoch" in i.value)
    epochs = RECIPES["quick"].settings["epochs"]
    assert f"the quick recipe reached {RECIPES['quick'].reached}: about {epochs}m 00s on this machine" in text
    at.number_input(key="train_epochs").set_value(epochs + 1).run()
    at.button(key="train_estimate").click().run()
    assert not any("recipe reached" in i.value for i in at.info)  # changed settings: no promise
    st.cache_data.clear()


def test_bfloat16_training_and_its_model(tmp_path):
    folder = make_image_folder(tmp_path / "pets", classes=2, per_class=6, size=(32, 32))
    done = run_cli("train", "--variant", "compact", "--data", str(folder), "--epochs", "1", "--steps-per-epoch", "2",
                   "--batch-size", "4", "--width", "0.25", "--mixed-precision", "bf16",
                   "--runs-dir", str(tmp_path / "runs"), "--run-id", "bf")
    assert done.returncode == 0, done.stderr
    assert "compute in bfloat16" in done.stderr
    image = next(folder.rglob("*.png"))
    predicted = run_cli("predict", str(tmp_path / "runs" / "bf"), str(image), "--json")
    assert predicted.returncode == 0, predicted.stderr
    assert json.loads(predicted.stdout)[0]["predictions"]


def test_the_epoch_estimate_runs_in_the_recipes_precision_and_leaves_the_app_as_it_was(monkeypatch):
    import keras

    from alexnet_core.train import estimate

    seen = []
    real = estimate._estimate_epoch_seconds

    def spy(config, *args):
        seen.append(keras.mixed_precision.global_policy().name)
        return real(config, *args)

    monkeypatch.setattr(estimate, "_estimate_epoch_seconds", spy)
    config = get_recipe("quick").config(data="sample", batch_size=8, switches={"width": 0.25}, mixed_precision="bf16")
    before = keras.mixed_precision.global_policy().name
    assert estimate.estimate_epoch_seconds(config, 10, 64, steps=1, num_val=16) > 0
    assert seen == ["mixed_bfloat16"]
    assert keras.mixed_precision.global_policy().name == before


@pytest.mark.parametrize("gpu, cpu_bf16, policy", [
    (True, False, "mixed_float16"), (False, True, "mixed_bfloat16"), (False, False, "float32")])
def test_auto_precision_computes_bfloat16_only_where_the_hardware_does(monkeypatch, gpu, cpu_bf16, policy):
    """A CPU without AVX512-BF16 or AMX emulates bfloat16 many times slower than float32: the
    quick recipe says auto, which picks bfloat16 only on a CPU that computes it."""
    import keras
    import tensorflow as tf

    from alexnet_core.train import devices

    assert get_recipe("quick").settings["mixed_precision"] == "auto"  # the Train page's first recipe
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: ["GPU:0"] if gpu and kind == "GPU" else [])
    monkeypatch.setattr(devices, "cpu_computes_bf16", lambda: cpu_bf16)
    with devices.precision_policy("auto") as loss_scaling:
        assert keras.mixed_precision.global_policy().name == policy
        assert loss_scaling == (policy == "mixed_float16")


def test_the_cpu_bfloat16_check_reads_the_cpu_flags(monkeypatch, tmp_path):
    import builtins

    from alexnet_core.train import devices

    real_open = builtins.open
    for flags, expected in (("fpu avx2 avx512f avx512_bf16", True), ("fpu amx_bf16 amx_tile", True),
                            ("fpu sse avx2 avx512f", False)):
        info = tmp_path / "cpuinfo"
        info.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
        monkeypatch.setattr(builtins, "open", lambda path, *a, _i=info, **k: real_open(
            _i if path == "/proc/cpuinfo" else path, *a, **k))
        assert devices.cpu_computes_bf16() is expected
        monkeypatch.setattr(builtins, "open", real_open)
