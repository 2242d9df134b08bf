"""AppTest per page: run the script, set widgets, assert on elements and no exception."""

from pathlib import Path

from streamlit.testing.v1 import AppTest

TIMEOUT = 120
ROOT = Path(__file__).resolve().parent.parent


def run_page(path):
    """Run `path` as app.py's navigation runs it (so page links resolve)."""
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT)
    if path != "app.py":
        at.switch_page(path)
    at.run()
    assert not at.exception, at.exception
    return at


def metric(at, label):
    return next(m.value for m in at.metric if m.label == label)


def test_app_navigation_runs_home():
    at = run_page("app.py")
    assert at.title[0].value == "AlexNet Explorer"


def test_home_shows_device_and_links():
    at = run_page("pages/home.py")
    assert metric(at, "Device") in ("CPU", "GPU")
    labels = " ".join(link.proto.label for link in at.get("page_link"))
    for page in ("Architecture", "Train", "Evaluate", "Classify", "Runs"):
        assert page in labels
    assert metric(at, "Validation accuracy") == "89.3%"
    assert any("5,000 held-out CIFAR-10 images" in c.value.replace("\\", "") for c in [*at.caption, *at.markdown])  # with its split


def test_architecture_defaults_reproduce_the_paper():
    at = run_page("pages/architecture.py")
    assert metric(at, "Parameters") == "60,965,224"
    assert metric(at, "MACs per image") == "724.4 M"
    assert "60,965,224 ✓" in at.success[0].value and "724,406,816 ✓" in at.success[0].value
    assert not at.error


def test_architecture_switch_variant_and_settings():
    at = run_page("pages/architecture.py")
    at.selectbox(key="arch_variant").select("two-tower").run()
    assert not at.exception
    assert metric(at, "Parameters") == "56,910,602"
    at.toggle(key="arch_two-tower_groups").set_value(False).run()
    assert metric(at, "Parameters") != "56,910,602"
    assert not at.success  # switches off the defaults: no claim of reproducing the publication


def test_architecture_shows_compact_hires():
    at = run_page("pages/architecture.py")
    at.selectbox(key="arch_variant").select("compact-hires").run()
    assert not at.exception and not at.error
    assert (metric(at, "Parameters"), metric(at, "MACs per image")) == ("1,774,026", "67.7 M")
    rows = at.dataframe[0].value.set_index("name")
    assert (rows.loc["conv2", "output_shape"], rows.loc["pool5", "output_shape"]) == ("32 × 32 × 64", "2 × 2 × 256")
    assert rows.loc["fc6", "params"] == 2 * 2 * 256 * 512 + 512  # fc6 reads the 2x2 map


def test_architecture_impossible_setting_shows_message():
    at = run_page("pages/architecture.py")
    at.number_input(key="arch_paper_size").set_value(32).run()
    assert not at.exception
    assert "input_size must be >= 67 for 'paper', got 32" in at.error[0].value.replace("\\", "")
    at.number_input(key="arch_paper_size").set_value(227)
    at.number_input(key="arch_paper_classes").set_value(0).run()
    assert "num_classes must be >= 2, got 0" in at.error[0].value.replace("\\", "")
    at.button(key="arch_paper_reset").click().run()  # back to the published network
    assert not at.exception and not at.error
    assert at.number_input(key="arch_paper_classes").value == 1000
    assert any("Published figures reproduced" in s.value for s in at.success)
    table = at.dataframe[0].value
    assert "None" not in table.astype(str).to_numpy().ravel().tolist()
    assert table.loc[table["name"] == "fc6", "cumulative_stride"].item() == "—"
    assert any("counts the zero padding" in c.value for c in at.caption)


def test_architecture_compare():
    at = run_page("pages/architecture.py")
    assert at.selectbox(key="arch_variant_b").value == "paper-ungrouped"
    assert metric(at, "Parameters (B)") == "62,378,344"
    table = at.dataframe[-1].value
    assert set(table["name"]) == {"conv2", "conv4", "conv5"}
    assert set(table["status"]) == {"changed"}


# --- Train and Runs -----------------------------------------------------------------------

import os  # noqa: E402

from alexnet_core import locations  # noqa: E402
from alexnet_core.store import catalog, layout, liveness  # noqa: E402


def fake_run(root, run_id, state="finished", epochs=3, pid=None, done=None):
    run_dir = catalog.create_run(root, run_id, {"variant": "compact", "data": "sample", "epochs": epochs,
                                             "optimizer": "sgd", "learning_rate": 0.05 if run_id.endswith("a") else 0.1})
    rows = "".join(f"{e},{1.5 - 0.3 * e},{0.4 + 0.1 * e},{1.6 - 0.3 * e},{0.35 + 0.1 * e}\n" for e in range(epochs if done is None else done))
    (run_dir / layout.METRICS).write_text("epoch,loss,accuracy,val_loss,val_accuracy\n" + rows)
    (run_dir / layout.STEPS).write_text("step,epoch,loss,accuracy,learning_rate\n" +
                                      "".join(f"{s},{s // 10 + 1},{2 - s / 40},{s / 60},0.01\n" for s in range(1, 30)))
    liveness.write_status(run_dir, state=state, pid=pid, started=1.0 + len(run_id), steps_per_epoch=10,
                      message=f"{state} run")
    return run_dir


def test_train_page_without_runs_offers_the_form(tmp_path):
    at = run_page("pages/train.py")
    assert at.radio(key="train_data_kind").value == "sample"  # CIFAR-10 is not cached in tests
    assert any("2,000 training and 1,000 validation images in 10 classes" in c.value for c in at.caption)
    assert any(b.label == "Start training" for b in at.button)
    at.radio(key="train_data_kind").set_value("folder").run()
    at.text_input(key="train_folder").set_value(str(tmp_path / "missing")).run()
    assert not at.exception
    assert "does not exist" in at.error[0].value


def test_train_page_warns_of_slow_variants_on_a_cpu_only():
    at = run_page("pages/train.py")

    def warned():
        return any("ImageNet-sized variants take hours" in c.value for c in at.caption)

    seen = {}
    for variant in ("compact", "compact-hires", "paper"):
        at.selectbox(key="train_variant").select(variant).run()
        assert not at.exception, at.exception
        seen[variant] = warned()
    assert seen == {"compact": False, "compact-hires": False, "paper": True}
    warning = next(c.value for c in at.caption if "ImageNet-sized variants take hours" in c.value)
    assert "`compact` and `compact-hires` train in minutes" in warning  # names what to pick instead


def test_train_page_shows_a_run_and_stops_it(tmp_path):
    root = locations.runs_root()
    fake_run(root, "old-run-a")
    active = fake_run(root, "live-run-b", state="running", epochs=5, pid=os.getpid())
    lock = liveness.TrainerLock(active).acquire()  # held by a live trainer
    try:
        at = run_page("pages/train.py")
        assert at.selectbox(key="train_run").value == "live-run-b"  # the active run first
        assert metric(at, "Best in-training validation") == "75.0%"
        assert len(at.get("plotly_chart")) == 1
        assert not any(b.label == "Resume" for b in at.button)  # the buttons match the state
        next(b for b in at.button if b.label == "Stop").click().run()
        assert liveness.stop_requested(active)
    finally:
        lock.release()
    at.selectbox(key="train_run").select("old-run-a").run()
    assert not at.exception and metric(at, "Epochs done") == "3 / 3"


def test_train_page_offers_resume_for_interrupted_runs():
    root = locations.runs_root()
    run_dir = fake_run(root, "cut-a", state="running", epochs=5, pid=2**22 + 7, done=2)  # a pid that is gone
    at = run_page("pages/train.py")
    assert liveness.read_status(run_dir)["state"] == "interrupted"
    assert any(b.label == "Resume" for b in at.button)


def test_runs_page_lists_compares_and_deletes():
    root = locations.runs_root()
    fake_run(root, "first-a")
    fake_run(root, "second-b")
    at = run_page("pages/runs.py")
    table = at.dataframe[0].value
    assert list(table["run_id"]) == ["second-b", "first-a", "demo"]  # newest first, then the bundled run
    at.query_params["run"] = "first-a"
    at.run()
    assert not at.exception
    assert len(at.get("plotly_chart")) == 2
    at.button(key="delete_first-a").click().run()
    assert not (root / "first-a").exists() and (root / "second-b").exists()
    at.query_params["run"] = "demo"
    at.run()
    assert not at.exception
    assert not any(b.key == "delete_demo" for b in at.button)  # the bundled run is read-only
    assert any("read-only" in c.value for c in at.caption)


def test_runs_page_prepares_a_deployable_file_of_the_bundled_model():
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT)
    at.switch_page("pages/runs.py")
    at.query_params["run"] = "demo"
    at.run()
    at.selectbox(key="deploy_kind_demo").select("int8").run()
    at.button(key="deploy_go_demo").click().run()
    assert not at.exception, at.exception
    assert any("the same top class as the model on" in c.value and "airplane, automobile" in c.value
               for c in at.caption)
    assert at.session_state["deploy_demo"][0] == "int8" and at.session_state["deploy_demo"][2].endswith(".tflite")
    model_bytes = (locations.BUNDLED_DIR / "demo" / layout.MODEL).stat().st_size
    assert len(at.session_state["deploy_demo"][1]) < model_bytes / 3  # the int8 file, not the float model


def test_runs_page_rejects_path_escapes_from_the_url():
    fake_run(locations.runs_root(), "only-a")
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT)
    at.switch_page("pages/runs.py")
    at.query_params["run"] = "../../etc"
    at.run()
    assert not at.exception
    assert any("There is no run named ../../etc" in w.value.replace("\\", "") for w in at.warning)


# --- Evaluate and Classify (on the bundled demo model and sample) ----------------------------

import io  # noqa: E402
import json  # noqa: E402

from PIL import Image  # noqa: E402


def test_evaluate_page_on_the_demo_model():
    at = run_page("pages/evaluate.py")
    assert at.selectbox(key="eval_model").value == "demo"
    assert metric(at, "Images") == "1,000" and metric(at, "Split") == "val"
    accuracy = float(metric(at, "Accuracy here").rstrip("%"))  # the sample is not the headline's data
    assert 10 < accuracy <= 100
    assert any("Click a cell" in i.value for i in at.info)
    at.session_state["eval_cell"] = (3, 5)  # what a click on (true cat, predicted dog) stores
    at.run()
    assert not at.exception
    assert any(s.value.startswith("True cat, predicted dog") for s in at.subheader)
    chart = json.loads(at.get("plotly_chart")[0].proto.spec)
    outline = chart["layout"]["shapes"]
    assert len(outline) == 1 and (outline[0]["x0"], outline[0]["y0"]) == (4.5, 5.5)  # dog column, cat row
    assert chart["data"][0]["unselected"]["marker"]["opacity"] == 1  # the other cells stay readable
    at.toggle(key="cell_cam").set_value(True).run()
    assert any("Grad-CAM colours" in c.value for c in at.caption)


def test_evaluate_page_leaves_out_empty_class_folders_with_a_note(tmp_path):
    import shutil

    from alexnet_core.locations import SAMPLE_DIR

    folder = tmp_path / "cifar"
    for name in ("cat", "dog"):
        shutil.copytree(SAMPLE_DIR / "val" / name, folder / name)
    (folder / "horse").mkdir()
    at = run_page("pages/evaluate.py")
    at.selectbox(key="eval_data").select("folder").run()
    at.text_input(key="eval_folder").set_value(str(folder)).run()
    at.selectbox(key="eval_split").select("all").run()
    assert not at.exception and not at.error
    assert any("Left out 1 class folder with no readable image ('horse')" in i.value.replace("\\", "")
               for i in at.info)
    assert metric(at, "Images") == f"{sum(1 for _ in folder.rglob('*.png')) + sum(1 for _ in folder.rglob('*.jpg')):,}"


def test_evaluate_page_names_an_unknown_class(tmp_path):
    from tests.helpers import make_image_folder

    folder = make_image_folder(tmp_path / "pets", classes=2, per_class=3)
    at = run_page("pages/evaluate.py")
    at.selectbox(key="eval_data").select("folder").run()
    at.text_input(key="eval_folder").set_value(str(folder)).run()
    assert not at.exception
    assert "does not know the classes 'class0', 'class1'" in at.error[0].value


def png(color=(200, 30, 30), size=(40, 30)):
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "PNG")
    return buf.getvalue()


def test_classify_page_examples_and_uploads():
    at = run_page("pages/classify.py")
    assert at.toggle(key="classify_examples").value is True
    assert len(at.get("plotly_chart")) == 6  # one top-k chart per example
    at.get("file_uploader")[0].set_value([("red.png", png(), "image/png"),
                                          ("notes.jpg", b"just text", "image/jpeg"),
                                          ("empty.png", b"", "image/png")])
    at.run()
    assert not at.exception
    errors = [e.value.replace("\\", "") for e in at.error]  # shown escaped (Markdown)
    assert any("notes.jpg: not an image" in e for e in errors)
    assert any("empty.png: the file is empty" in e for e in errors)
    assert len(at.get("plotly_chart")) == 1  # the good image is still classified; examples step aside
    cams = [box for box in at.selectbox if box.key.startswith("classify_cam_")]
    assert len(cams) == 1 and cams[0].value == cams[0].options[0]  # Grad-CAM starts on the top class


def test_classify_is_honest_about_what_the_model_sees():
    from alexnet_core.locations import ASSETS

    at = run_page("pages/classify.py")
    note = next(i.value for i in at.info if "What this model can say" in i.value)
    assert "10 classes" in note and "32×32 pixels" in note
    def image_captions():
        return [img.caption for element in at.get("image") for img in element.proto.imgs]

    # Each example: the original, the network's input, Grad-CAM; then the Grad-CAM legend.
    assert sum(c == "What the network sees: 32×32 pixels, enlarged" for c in image_captions()) == 6
    assert len(image_captions()) == 6 * 3 + 1
    assert any("Grad-CAM colours" in c.value for c in at.caption)
    example = sorted((ASSETS / "examples").glob("*.jpg"))[0]
    wide = io.BytesIO()
    Image.open(example).convert("RGB").resize((96, 32)).save(wide, "PNG")
    at.get("file_uploader")[0].set_value([("wide.png", wide.getvalue(), "image/png")])
    at.run()
    assert not at.exception
    assert at.segmented_control(key="classify_framing").value == "crop"
    at.slider(key="classify_sure_p").set_value(95).run()
    unsure = [m.value for m in at.markdown if "Unsure" in m.value]
    reasons = [c.value for c in at.caption if c.value.startswith("Unsure because")]
    if len(unsure) == 0:  # the model was at least 95% sure of this image: demand a bigger lead
        at.slider(key="classify_sure_margin").set_value(80).run()
        unsure = [m.value for m in at.markdown if "Unsure" in m.value]
        reasons = [c.value for c in at.caption if c.value.startswith("Unsure because")]
    assert len(unsure) == 1 and len(reasons) == 1
    assert "needed" in reasons[0] and ("95%" in reasons[0] or "the 80 needed" in reasons[0])
    at.segmented_control(key="classify_framing").set_value("fit").run()
    assert not at.exception
    assert "What the network sees: 32×32 pixels, enlarged" in image_captions()


def test_streamlit_still_has_the_legacy_pages_flag(tmp_path):
    """alexnet_ui/streamlit_internals.declare_navigation_app relies on this private flag and on how
    Streamlit sets it; if an upgrade changes either, this fails instead of deep links silently
    losing app.py's navigation."""
    import inspect

    from streamlit.commands import navigation
    from streamlit.runtime.pages_manager import PagesManager

    from alexnet_ui import streamlit_internals

    assert "uses_pages_directory" in vars(PagesManager), "Streamlit removed PagesManager.uses_pages_directory"
    (tmp_path / "pages").mkdir()
    (tmp_path / "app.py").write_text("")
    saved = PagesManager.uses_pages_directory
    try:
        PagesManager.uses_pages_directory = None
        PagesManager(str(tmp_path / "app.py"))
        assert PagesManager.uses_pages_directory is True  # a pages/ folder means legacy mode...
        assert "PagesManager.uses_pages_directory = False" in inspect.getsource(navigation)  # ...until st.navigation
        PagesManager.uses_pages_directory = None
        assert streamlit_internals.declare_navigation_app()
        PagesManager(str(tmp_path / "app.py"))  # the first session, after the server started
        assert PagesManager.uses_pages_directory is False  # decided once: a set flag is kept
    finally:
        PagesManager.uses_pages_directory = saved


def test_your_classes_page_creates_a_dataset_and_refuses_hostile_names(tmp_path):
    at = run_page("pages/dataset.py")
    at.text_input[0].input("../../etc")
    at.button[0].click().run()
    assert any("names use letters" in e.value for e in at.error)
    at.text_input[0].input("my pets")
    at.button[0].click().run()
    assert not at.exception and at.selectbox[0].value == "my pets"
    new_class = next(t for t in at.text_input if t.label == "New class")
    new_class.input("cats")
    next(b for b in at.button if b.label == "Add class").click().run()
    assert any("cats" in m.value and "0 images" in m.value for m in at.markdown)
    assert any("Add at least two classes" in i.value for i in at.info)
    assert (tmp_path / "data" / "my pets" / "cats").is_dir()
    train = run_page("pages/train.py")
    assert "Your classes: my pets" in train.radio(key="train_data_kind").options  # offered as data to train on


# --- One place where pages catch errors -------------------------------------------------------------


def test_user_errors_says_what_a_user_can_act_on_and_lets_bugs_through():
    def script():
        import errno

        import streamlit as st

        from alexnet_core.store.layout import RunError
        from alexnet_ui.feedback import user_errors

        with user_errors() as refused:
            raise RunError("Another run is training: stop it first.")
        st.write(f"refused: {refused.failed}")
        with user_errors(limit=400, icon=None):
            raise OSError(errno.ENOSPC, "No space left on device", "/nowhere/runs/x/config.json")
        with user_errors() as fine:
            st.write("inside")
        st.write(f"fine: {fine.failed}")
        with user_errors():
            raise KeyError("a bug")

    at = AppTest.from_function(script, default_timeout=TIMEOUT).run()
    errors = [e.value.replace("\\", "") for e in at.error]
    assert errors[0] == "Another run is training: stop it first."
    assert "No space left on device" in errors[1] and "/nowhere/runs/x/config.json" in errors[1]
    assert [m.value for m in at.markdown] == ["refused: True", "inside", "fine: False"]
    assert at.exception and "KeyError" in at.exception[0].message + str(at.exception[0].proto)


def test_user_errors_lets_rerun_and_stop_through():
    def script():
        import streamlit as st

        from alexnet_ui.feedback import user_errors

        st.session_state["runs"] = st.session_state.get("runs", 0) + 1
        with user_errors():
            if st.session_state["runs"] == 1:
                st.rerun()
            st.stop()
        st.write("after the block")

    at = AppTest.from_function(script, default_timeout=TIMEOUT).run()
    assert at.session_state["runs"] == 2 and not at.markdown and not at.error


def test_page_scripts_catch_nothing_themselves():
    """A page shows a user's error through alexnet_ui.feedback.user_errors (or a helper of its
    alexnet_ui module that does more than show it), never with an except clause of its own."""
    import ast

    for script in sorted((ROOT / "pages").glob("*.py")):
        handlers = [node for node in ast.walk(ast.parse(script.read_text())) if isinstance(node, ast.ExceptHandler)]
        assert not handlers, f"{script.name} line {handlers[0].lineno}: use alexnet_ui.feedback.user_errors"
