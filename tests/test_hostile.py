"""Hostile files, damaged runs, odd names and hostile query parameters: every page renders, the
CLI answers with a message naming the problem, and nothing is lost or leaked."""

import io
import json
import os
import random
import shutil
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from alexnet_core import locations
from alexnet_core.inputs import images
from alexnet_core.inputs.images import ImageDecodeError, decode_image, read_image
from alexnet_core.predict import inference
from alexnet_core.predict.inference import ModelLoadError, load_model
from alexnet_core.store import catalog, layout
from alexnet_core.train import lifecycle
from tests import helpers
from tests.helpers import make_image_folder
from tests.test_pages import run_page  # noqa: E402

PAGES = ["pages/home.py", "pages/architecture.py", "pages/train.py", "pages/evaluate.py", "pages/classify.py",
         "pages/dataset.py", "pages/runs.py"]
HOSTILE_IDS = ["x" * 5000, "[x](http://example.com)", "![t](http://example.com/t.png)", "../../etc", "a\x00b",
               ":red[boo] :material/home:", "<script>alert(1)</script>", "demo/../.."]


def cli(*args, timeout=120, env=None):
    """`python -m alexnet_core ARGS` in a fresh process (forked from one that has imported TensorFlow)."""
    return helpers.cli(*args, timeout=timeout, env=env)


def jpeg(size=(40, 30), color=(200, 30, 30)):
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "JPEG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A small finished run (3 classes, 16 px) and its data, trained once for the module."""
    base = tmp_path_factory.mktemp("hostile")
    data = make_image_folder(base / "data", classes=3, per_class=10)
    result = cli("train", "--variant", "compact", "--width", "0.25", "--input-size", "16", "--batch-size", "8",
                 "--data", str(data), "--epochs", "2", "--runs-dir", str(base / "runs"), "--run-id", "good",
                 timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return base / "runs" / "good", data


def no_leak(at):
    """Nothing on the page shows a traceback or the server's folders."""
    assert not at.exception, at.exception
    texts = [e.value for kind in ("markdown", "caption", "warning", "error", "info") for e in at.get(kind)]
    for text in texts:
        assert "Traceback" not in text and str(Path.home()) not in text, text
        assert "](http" not in text, text  # a link or an image would render live


def open_with_query(page, run_id):
    from streamlit.testing.v1 import AppTest

    from tests.test_pages import ROOT, TIMEOUT

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT)
    at.switch_page(page)
    at.query_params["run"] = run_id
    at.run()
    return at


def test_hostile_query_parameters_are_shown_escaped_and_cut():
    for page in ("pages/train.py", "pages/runs.py"):
        for run_id in HOSTILE_IDS:
            at = open_with_query(page, run_id)
            no_leak(at)
            shown = " ".join(w.value for w in at.warning)
            assert "There is no run named" in shown and len(shown) < 400, shown
            assert "[x](" not in shown and "<script>" not in shown


# --- Damaged runs -----------------------------------------------------------------------------

DAMAGES = {
    "config.json": ['["a", "list"]', '"a string"', '{"epochs": "ten", "variant": 3, "class_names": [1, 2]}'],
    "status.json": ['["running"]', '{"state": ["running"], "heartbeat": "soon", "epoch": "x", "pid": "me"}', "{"],
    "metrics.csv": ["epoch,loss,val_accuracy\n0,1.0,0.5\n1,high,0.6\nx,1,1\n2,0.5,0.7,9\n3,0.4,0.8\n\0\0\0\0",
                    "\0" * 64, "epoch,loss\n0,1\n1,2,3\n"],
    "steps.csv": [bytes(range(256)) * 4, "step,epoch,loss\n1,1,nan\nsteps,x,y\n"],
    "model.keras": ["this is a text file, not a model"],
    "checkpoints/state.json": ['["x"]', '{"completed_epochs": "two"}'],
}


def damaged_runs(root, good):
    """One copy of the good run per damage, named after it, next to the good run itself."""
    made = {}
    for name, variants in DAMAGES.items():
        for i, content in enumerate(variants):
            run_id = f"bad {name.replace('/', '-')} ({i})"
            copy = root / run_id
            shutil.copytree(good, copy)
            target = copy / name
            target.write_bytes(content if isinstance(content, bytes) else content.encode())
            made[run_id] = (name, copy)
    return made


def test_damaged_runs_never_take_a_page_down(trained, tmp_path):
    good, _ = trained
    root = locations.runs_root()
    shutil.copytree(good, root / "good")
    made = damaged_runs(root, good)
    rows = {r["run_id"]: r for r in catalog.all_runs(root)}
    assert not rows["good"]["problems"]
    for run_id, (name, _) in made.items():
        if name != "checkpoints/state.json":  # the commit record is read only when resuming
            assert any(p.startswith(Path(name).name) for p in rows[run_id]["problems"]), (run_id, rows[run_id])
            assert rows[run_id]["damaged"].startswith("damaged: ")
    for page in PAGES:
        no_leak(run_page(page))
    for run_id in [*made, "good"]:  # hostile names that are no run: test_hostile_query_parameters_...
        for page in ("pages/train.py", "pages/runs.py"):
            no_leak(open_with_query(page, run_id))
    runs_page = run_page("pages/runs.py")
    assert any("damaged: status.json" in str(v) for v in runs_page.dataframe[0].value["notes"])
    for run_id, (_, copy) in made.items():  # every damaged run stays deletable
        catalog.delete_run(root, run_id)
        assert not copy.exists()
    assert (root / "good" / layout.MODEL).exists()


def test_cli_names_the_damaged_file(trained, tmp_path):
    good, data = trained
    root = tmp_path / "runs"
    made = damaged_runs(root, good)
    config_bad = made["bad config.json (0)"][1]
    result = cli("evaluate", str(config_bad), "--data", str(data))
    assert result.returncode == 2 and "config.json" in result.stderr and "Traceback" not in result.stderr
    assert "It knows" not in result.stderr
    model_bad = made["bad model.keras (0)"][1]
    result = cli("predict", str(model_bad), str(next(Path(data).rglob("*.png"))))
    assert result.returncode == 2 and "model.keras" in result.stderr and "not a Keras model file" in result.stderr
    for run_id in ("bad config.json (2)", "bad checkpoints-state.json (0)", "bad status.json (0)"):
        run_dir = made[run_id][1]
        result = cli("train", "--resume", str(run_dir))
        assert "Traceback" not in result.stderr, result.stderr[-2000:]
        if "status" in run_id:  # status.json is only a report: the run resumes from its commit
            assert result.returncode == 0, result.stderr[-2000:]
        else:
            assert result.returncode == 2, result.stderr[-2000:]
            assert ("config.json" if "config" in run_id else "state.json") in result.stderr


@pytest.mark.parametrize("seed", [1, 2])
def test_fuzz_every_file_of_a_run(trained, tmp_path, seed):
    """Seeded damage (truncation, random bytes, JSON of the wrong type) to each file of a run in
    turn; the readers, the pages and the CLI's resume never raise."""
    good, _ = trained
    rng = random.Random(seed)
    root = locations.runs_root()
    files = [p.relative_to(good) for p in good.rglob("*") if p.is_file() and p.suffix in (".json", ".csv", ".keras")]
    for n, rel in enumerate(files):
        run_dir = root / f"fuzz-{n}"
        shutil.copytree(good, run_dir)
        target = run_dir / rel
        data = target.read_bytes()
        damage = rng.choice(["truncate", "random", "type"])
        if damage == "truncate":
            target.write_bytes(data[: rng.randrange(max(1, len(data)))])
        elif damage == "random":
            target.write_bytes(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 512))))
        else:
            target.write_text(json.dumps(rng.choice([[1, 2], "text", 3.5, None, {"state": 7, "epochs": []}])))
        summary = catalog.run_summary(run_dir)
        assert isinstance(summary["problems"], list)
    for page in ("pages/runs.py", "pages/train.py", "pages/classify.py", "pages/evaluate.py"):
        no_leak(run_page(page))
    for n in range(len(files)):
        result = cli("train", "--resume", str(root / f"fuzz-{n}"))
        assert result.returncode in (0, 1, 2) and "Traceback" not in result.stderr, result.stderr[-2000:]


def test_a_linked_run_is_listed_as_such_and_never_written(trained, tmp_path):
    good, _ = trained
    elsewhere = tmp_path / "elsewhere" / "shared-run"
    shutil.copytree(good, elsewhere)
    root = locations.runs_root()
    root.mkdir(parents=True, exist_ok=True)
    (root / "linked").symlink_to(elsewhere, target_is_directory=True)
    row = next(r for r in catalog.all_runs(root) if r["run_id"] == "linked")
    assert row["link"] == str(elsewhere) and row["read_only"] and not catalog.can_resume(row)
    with pytest.raises(layout.RunError, match="is a link"):
        lifecycle.check_resumable(root / "linked")
    no_leak(run_page("pages/runs.py"))
    catalog.delete_run(root, "linked")
    assert not (root / "linked").exists() and (elsewhere / layout.MODEL).exists()


def test_downloads_serve_only_regular_files_inside_the_run(tmp_path):
    run_dir = catalog.create_run(tmp_path, "r", {})
    (tmp_path / "secret.txt").write_text("secret")
    (run_dir / layout.METRICS).symlink_to(tmp_path / "secret.txt")
    assert layout.safe_file(run_dir, layout.METRICS) is None
    assert layout.safe_file(run_dir, layout.CONFIG) == run_dir / layout.CONFIG
    assert layout.safe_file(run_dir, "../secret.txt") is None


def test_a_runs_folder_that_is_a_file(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    result = cli("train", "--variant", "compact", "--data", "sample", env={"ALEXNET_RUNS_DIR": str(tmp_path / "file")})
    assert result.returncode == 2 and "is a file" in result.stderr and "Traceback" not in result.stderr
    assert catalog.list_runs(tmp_path / "file") == []


# --- Uploads and images ----------------------------------------------------------------------


def test_two_uploads_with_the_same_name_both_classify():
    at = run_page("pages/classify.py")
    at.get("file_uploader")[0].set_value([("IMG_0001.jpg", jpeg(color=(200, 30, 30)), "image/jpeg"),
                                          ("IMG_0001.jpg", jpeg(color=(30, 30, 200)), "image/jpeg")])
    at.run()
    assert not at.exception
    assert len(at.get("plotly_chart")) == 2
    at.session_state["classify_explain"] = "maps"
    at.run()
    assert not at.exception
    assert at.selectbox(key="classify_map_image").options == ["IMG_0001.jpg", "IMG_0001.jpg (2)"]


def test_an_upload_batch_is_capped(monkeypatch):
    monkeypatch.setattr(images, "MAX_UPLOAD_FILES", 2)
    at = run_page("pages/classify.py")
    at.get("file_uploader")[0].set_value([(f"{i}.jpg", jpeg(), "image/jpeg") for i in range(3)])
    at.run()
    assert not at.exception and len(at.get("plotly_chart")) == 2
    assert any("first 2 of 3 images" in w.value for w in at.warning)


def test_a_tall_strip_cannot_stretch_the_page():
    from alexnet_ui.images import fit_for_display

    shown = fit_for_display(np.zeros((900, 20, 3), np.uint8))
    assert shown.shape[0] <= 2 * shown.shape[1] and shown.shape[0] <= 768
    assert fit_for_display(np.zeros((3000, 4000, 3), np.uint8)).shape[:2] == (576, 768)


def test_large_photos_are_decoded_at_reduced_size():
    rng = np.random.default_rng(0)
    big = Image.fromarray(rng.integers(0, 255, (3000, 4000, 3), dtype=np.uint8).repeat(1, 0))
    for fmt in ("JPEG", "PNG"):
        buf = io.BytesIO()
        big.save(buf, fmt)
        image = decode_image(buf.getvalue(), f"big.{fmt.lower()}")
        assert 1024 <= max(image.shape[:2]) <= 2048 and image.shape[2] == 3
    small = jpeg((640, 480))
    assert decode_image(small, "small.jpg").shape == (480, 640, 3)  # decoded whole, as training decodes it


def test_the_pixel_limit_is_one_clear_number(monkeypatch):
    monkeypatch.setattr(images, "MAX_PIXELS", 10_000)
    with pytest.raises(ImageDecodeError) as caught:
        decode_image(jpeg((200, 200)), "photo.jpg")
    message = str(caught.value)
    assert "photo.jpg: 200x200 pixels" in message and "megapixel limit" in message
    assert "DOS" not in message and "attack" not in message


def test_only_regular_files_are_read_as_images(tmp_path, monkeypatch):
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    start = time.time()
    with pytest.raises(ImageDecodeError, match="not a regular file"):
        read_image(fifo)
    assert time.time() - start < 5
    with pytest.raises(ImageDecodeError, match="not a regular file"):
        read_image("/dev/zero")
    with pytest.raises(ImageDecodeError, match="a folder"):
        read_image(tmp_path)
    (tmp_path / "big.jpg").write_bytes(jpeg())
    monkeypatch.setattr(images, "MAX_IMAGE_BYTES", 10)
    with pytest.raises(ImageDecodeError, match="limit for one image file"):
        read_image(tmp_path / "big.jpg")


def test_cli_predict_refuses_a_fifo_and_dev_zero_without_blocking(tmp_path):
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    good = tmp_path / "good.jpg"
    good.write_bytes(jpeg())
    result = cli("predict", "demo", str(fifo), "/dev/zero", str(good), "--json", timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    out = json.loads(result.stdout)
    assert "not a regular file" in out[0]["error"] and "not a regular file" in out[1]["error"]
    assert out[2]["error"] is None and out[2]["predictions"]


# --- Model files -----------------------------------------------------------------------------


def _save(model, path):
    model.save(path)
    return path


def _rewrite_config(path, edit):
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    config = json.loads(members["config.json"])
    edit(config)
    members["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)


def test_models_declaring_huge_weights_are_refused_before_loading(tmp_path):
    import keras

    model = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Flatten(), keras.layers.Dense(20),
                              keras.layers.Dense(3, activation="softmax")])
    path = _save(model, tmp_path / "m.keras")

    def inflate(units, inputs):
        def edit(config):
            dense = next(layer for layer in config["config"]["layers"] if layer["class_name"] == "Dense")
            dense["config"]["units"] = units
            dense["build_config"]["input_shape"][-1] = inputs
        return edit

    _rewrite_config(path, inflate(20000, 20000))  # 1.6 GB declared, a few KB stored
    start = time.time()
    with pytest.raises(ModelLoadError, match="declares .* but holds"):
        load_model(str(path))
    _rewrite_config(path, inflate(30000, 30000))  # 3.6 GB: over the limit
    with pytest.raises(ModelLoadError, match="over the 2.0 GiB limit"):
        load_model(str(path))
    assert time.time() - start < 5


def test_oversized_configs_and_non_archives_are_refused(tmp_path, monkeypatch):
    text = tmp_path / "text.keras"
    text.write_text("not a model")
    with pytest.raises(ModelLoadError, match="not a Keras model file"):
        load_model(str(text))
    import keras

    path = _save(keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Flatten(),
                                   keras.layers.Dense(3, activation="softmax")]), tmp_path / "ok.keras")
    monkeypatch.setattr(inference, "MAX_MODEL_CONFIG_BYTES", 100)
    with pytest.raises(ModelLoadError, match="config.json is .* over the"):
        load_model(str(path))


@pytest.mark.parametrize("build", ["vector", "any_size", "grey", "logits"])
def test_models_that_do_not_classify_rgb_images_are_refused(tmp_path, build):
    import keras

    layers = keras.layers
    models = {
        "vector": lambda: keras.Sequential([keras.Input((10,)), layers.Dense(3, activation="softmax")]),
        "any_size": lambda: keras.Sequential([keras.Input((None, None, 3)), layers.GlobalAveragePooling2D(),
                                              layers.Dense(3, activation="softmax")]),
        "grey": lambda: keras.Sequential([keras.Input((16, 16, 1)), layers.Flatten(),
                                          layers.Dense(3, activation="softmax")]),
        "logits": lambda: keras.Sequential([keras.Input((16, 16, 3)), layers.Flatten(), layers.Dense(3)]),
    }
    path = _save(models[build](), tmp_path / f"{build}.keras")
    with pytest.raises(ModelLoadError, match="this app needs one RGB image"):
        load_model(str(path))
    result = cli("predict", str(path), "assets/examples/cat.jpg")
    assert result.returncode == 2 and "this app needs" in result.stderr and "Traceback" not in result.stderr


def test_declared_parameters_match_keras_for_every_variant():
    from alexnet_core.models.variants import build_model, list_variants
    from alexnet_core.predict.inference import _declared_parameters

    for name in list_variants():
        model = build_model(name, width=0.25)
        config = json.loads(json.dumps(keras_config(model)))
        assert _declared_parameters(config["config"]["layers"]) == model.count_params(), name


def keras_config(model):
    from keras.src.saving import serialization_lib

    return serialization_lib.serialize_keras_object(model)
