"""Files that unpack to far more than they hold, or nest too deep: a model whose weights member is
padded with a gibibyte of zeros, snapshots and caches of compressed zeros, an .npz whose header
declares (10**7, 10**7), JSON of nested brackets. Each costs at most 300 MB more than reading a
good file (measured in a fresh process), is refused or skipped as damaged with a message, and
never takes a page or the CLI down."""

import io
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from alexnet_core import locations
from alexnet_core.locations import DEMO_RUN
from alexnet_core.predict import inference
from alexnet_core.predict.inference import ModelLoadError, check_model_file
from alexnet_core.store import fileio, layout
from tests.test_hostile import cli, no_leak, open_with_query
from tests.test_pages import ROOT, TIMEOUT, run_page

GIB = 2**30
MAX_GROWTH_MIB = 300
CAT = str(ROOT / "assets" / "examples" / "cat.jpg")
SNAPSHOT = DEMO_RUN / "snapshots" / "epoch-0001.npz"
DEEP = "[" * 200_000 + "]" * 200_000  # 400 KB


# --- Making bombs ------------------------------------------------------------------------------


def write_zeros(fh, size):
    chunk = bytes(2**24)
    while size > 0:
        fh.write(chunk[:min(size, len(chunk))])
        size -= len(chunk)


def npy(array) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, np.asarray(array), allow_pickle=False)
    return buffer.getvalue()


def write_npz(path, arrays, bombs):
    """An .npz of `arrays`, plus a member per `bombs` entry {key: (shape, descr, zero bytes)}:
    a hand-written header declaring that shape and dtype, then that many zeros (deflated: a GiB
    of them takes 5 MB)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for key, value in arrays.items():
            if key not in bombs:
                archive.writestr(f"{key}.npy", npy(value))
        for key, (shape, descr, size) in bombs.items():
            with archive.open(f"{key}.npy", "w", force_zip64=True) as fh:
                header = io.BytesIO()
                np.lib.format.write_array_header_1_0(header, {"descr": descr, "fortran_order": False,
                                                              "shape": tuple(shape)})
                fh.write(header.getvalue())
                write_zeros(fh, size)
    return path


def pad_member(src, dest, name, pad, extra=None):
    """A copy of the archive `src` whose member `name` is followed by `pad` zero bytes, plus the
    members `extra` {name: zero bytes}."""
    with zipfile.ZipFile(src) as archive:
        members = {info.filename: archive.read(info) for info in archive.infolist()}
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for member, data in members.items():
            with archive.open(member, "w", force_zip64=True) as fh:
                fh.write(data)
                if member == name:
                    write_zeros(fh, pad)
        for member, size in (extra or {}).items():
            with archive.open(member, "w", force_zip64=True) as fh:
                write_zeros(fh, size)
    return Path(dest)


def with_config(src, dest, text):
    with zipfile.ZipFile(src) as archive:
        members = {info.filename: archive.read(info) for info in archive.infolist()}
    members["config.json"] = text.encode()
    with zipfile.ZipFile(dest, "w") as archive:
        for member, data in members.items():
            archive.writestr(member, data)
    return Path(dest)


def run_copy(root, run_id):
    """A writable copy of the bundled run (its model, config, metrics and 120 snapshots)."""
    dest = Path(root) / run_id
    shutil.copytree(DEMO_RUN, dest)
    (dest / layout.READ_ONLY).unlink()
    return dest


# --- Measuring ---------------------------------------------------------------------------------


def peak_growth(setup, usual, bomb):
    """Run `setup`, then `usual` (reading a good file), then `bomb` in a fresh Python; returns
    (MiB the peak resident memory grew during `bomb`, the value of `bomb`, as text)."""
    code = "\n".join([
        "import json, resource, sys",
        setup,
        usual,
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss",
        f"value = {bomb}",
        "after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss",
        "print(json.dumps([(after - before) / 1024, str(value)[:2000]]))",
    ])
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


# --- Models ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_bomb(tmp_path_factory):
    """The bundled model with a GiB of zeros after its weights: 21 MB on disk."""
    folder = tmp_path_factory.mktemp("model_bomb")
    return pad_member(DEMO_RUN / layout.MODEL, folder / "bomb.keras", "model.weights.h5", GIB)


def test_a_model_whose_weights_unpack_to_a_gibibyte_is_refused_in_bounded_memory(model_bomb):
    setup = ("from alexnet_core.predict.inference import ModelLoadError, load_model\n"
             "def attempt(spec):\n"
             "    try:\n"
             "        return load_model(spec).path.name\n"
             "    except ModelLoadError as exc:\n"
             "        return str(exc)")
    grew, outcome = peak_growth(setup, "attempt('demo')", f"attempt({str(model_bomb)!r})")
    assert "bomb.keras: its model.weights.h5 unpacks to 1039.3 MiB, more than the" in outcome, outcome
    assert "not loaded" in outcome
    assert grew < MAX_GROWTH_MIB, f"+{grew:.0f} MiB"


def test_archive_members_over_their_limits_are_refused(tmp_path):
    demo = DEMO_RUN / layout.MODEL
    for name, extra, pad, message in [
            ("metadata", {}, ("metadata.json", 2**20), "its metadata.json unpacks to 1.0 MiB, more than the 0.1 MiB"),
            ("asset", {"assets/vocabulary.txt": 8 * 2**20}, None, "assets/vocabulary.txt unpacks to 8.0 MiB"),
            ("config", {}, ("config.json", 17 * 2**20), "its config.json is 17 MiB, over the 16 MiB limit")]:
        path = pad_member(demo, tmp_path / f"{name}.keras", *(pad or ("", 0)), extra=extra)
        with pytest.raises(ModelLoadError, match=message.replace(".", r"\.")):
            check_model_file(path)


def test_checkpoints_with_optimizer_state_and_common_layers_pass(tmp_path):
    """The budget counts an optimizer's copies of the weights, and the weights of the layers
    Keras image models use; a model trained at float64 keeps 8 bytes a weight."""
    import keras

    layers = keras.layers
    model = keras.Sequential([keras.Input((16, 16, 3)), layers.Conv2D(8, 3), layers.DepthwiseConv2D(3),
                              layers.SeparableConv2D(8, 3), layers.BatchNormalization(), layers.LayerNormalization(),
                              layers.GroupNormalization(2), layers.Conv2DTranspose(4, 3), layers.Flatten(),
                              layers.Dense(300), layers.Dense(3, activation="softmax")])
    config = json.loads(json.dumps(keras.saving.serialize_keras_object(model)))
    assert inference._declared_parameters(config["config"]["layers"]) == model.count_params()
    for optimizer in (keras.optimizers.SGD(momentum=0.9), keras.optimizers.AdamW(amsgrad=True),
                      keras.optimizers.RMSprop(momentum=0.5, centered=True)):
        model.compile(optimizer=optimizer)
        optimizer.build(model.trainable_variables)
        model.save(tmp_path / "checkpoint.keras")
        check_model_file(tmp_path / "checkpoint.keras")
    wide = keras.Sequential([keras.Input((16, 16, 3)), layers.Flatten(), layers.Dense(2000, dtype="float64"),
                             layers.Dense(3, activation="softmax")])
    wide.save(tmp_path / "float64.keras")
    check_model_file(tmp_path / "float64.keras")


def test_resume_refuses_a_checkpoint_that_unpacks_to_more_than_it_declares(tmp_path):
    from tests.helpers import make_image_folder
    from tests.test_training import TINY

    folder = make_image_folder(tmp_path / "data", classes=3, per_class=10)
    run_dir = tmp_path / "runs" / "killed"
    result = cli("train", *TINY, "--data", str(folder), "--epochs", "3", "--runs-dir", str(tmp_path / "runs"),
                 "--run-id", "killed", env={"ALEXNET_FAULT": "kill@snapshot#2"}, timeout=300)
    assert result.returncode == -9, result.stderr[-2000:]  # epoch 1 committed, with its optimizer state
    last = run_dir / layout.CHECKPOINTS / json.loads((run_dir / layout.CHECKPOINTS / layout.STATE).read_text())["last"]
    check_model_file(last)
    shutil.copy(pad_member(last, tmp_path / "padded.keras", "model.weights.h5", 256 * 2**20), last)
    result = cli("train", "--resume", str(run_dir), timeout=300)
    assert result.returncode == 2 and "Cannot resume: " in result.stderr, result.stderr[-2000:]
    assert "model.weights.h5 unpacks to" in result.stderr and "Traceback" not in result.stderr


# --- Snapshots and caches ----------------------------------------------------------------------

SNAPSHOT_ARRAYS = dict(np.load(SNAPSHOT))
NPZ_BOMBS = {  # what a file should hold, and a GiB of zeros in one of its arrays
    "snapshot": ("snapshots/epoch-0001.npz", SNAPSHOT_ARRAYS, {"labels": ((GIB // 2,), "<i2", GIB)}),
    "probe": ("snapshots/probe.npz", {"images": np.zeros((32, 32, 32, 3), np.uint8), "labels": np.arange(32) % 10},
              {"images": ((32, 3344, 3344, 3), "|u1", 32 * 3344 * 3344 * 3)}),
    "evaluation": ("eval/0123456789abcdef.npz", {"probs": np.full((1000, 10), 0.1, np.float32),
                                                "kept": np.arange(1000)}, {"probs": ((GIB // 40, 10), "<f4", GIB)}),
    "map": ("eval/map-0123456789abcdef.npz", {"xy": np.zeros((1000, 2), np.float32),
                                             "thumbnails": np.array(["data:image/jpeg;base64,AAAA"] * 1000)},
            {"thumbnails": ((256,), "<U1048576", GIB)}),
}
KEYS = {"snapshot": ("labels", "predicted", "conv1", "probe_top", "probe_prob"), "probe": ("images", "labels"),
        "evaluation": ("probs", "kept"), "map": ("xy", "thumbnails")}


@pytest.mark.parametrize("kind", list(NPZ_BOMBS))
def test_npz_bombs_are_damage_read_in_bounded_memory(tmp_path, kind):
    name, arrays, bombs = NPZ_BOMBS[kind]
    good = write_npz(tmp_path / "good" / name, arrays, {})
    bomb = write_npz(tmp_path / "bomb" / name, arrays, bombs)
    assert bomb.stat().st_size < 12 * 2**20
    keys = KEYS[kind]
    setup = "from alexnet_core.store import fileio"
    grew, value = peak_growth(setup, f"assert fileio.load_npz({str(good)!r}, {keys!r}) is not None",
                              f"fileio.load_npz({str(bomb)!r}, {keys!r})")
    assert value == "None" and grew < MAX_GROWTH_MIB, (value, f"+{grew:.0f} MiB")


def test_a_run_with_snapshot_bombs_shows_the_others_in_bounded_memory(tmp_path):
    run_dir = run_copy(tmp_path, "bombs")
    for epoch, bomb in ((2, NPZ_BOMBS["snapshot"][2]), (3, {"conv1": ((10**7, 10**7, 3, 48), "<f2", 64)})):
        write_npz(run_dir / "snapshots" / f"epoch-{epoch:04d}.npz", SNAPSHOT_ARRAYS, bomb)
    setup = "from alexnet_core.train.snapshots import read_timeline"
    usual = f"read_timeline({str(DEMO_RUN)!r}, 120, 10)"
    grew, notes = peak_growth(setup, usual, f"read_timeline({str(run_dir)!r}, 120, 10).notes")
    assert "Left out epoch 2: its snapshot (epoch-0002.npz) is damaged." in notes
    assert "Left out epoch 3: its snapshot (epoch-0003.npz) is damaged." in notes
    assert grew < MAX_GROWTH_MIB, f"+{grew:.0f} MiB"


def test_headers_declaring_ten_to_the_fourteen_items_are_damage(tmp_path):
    """np.load would allocate the declared array before reading it: MemoryError."""
    from alexnet_core.analysis import embedding_map, evaluation
    from alexnet_core.train import snapshots

    huge = (10**7, 10**7)
    probe = write_npz(tmp_path / "snapshots" / "probe.npz", {"labels": np.arange(4)}, {"images": (huge, "|u1", 64)})
    write_npz(tmp_path / "snapshots" / "epoch-0001.npz", SNAPSHOT_ARRAYS, {"labels": (huge, "<i2", 64)})
    timeline = snapshots.read_timeline(tmp_path, 1, 10)
    assert not timeline and len(timeline.notes) == 2 and fileio.load_npz(probe, ("images", "labels")) is None
    cache = write_npz(tmp_path / "eval.npz", {"kept": np.arange(3)}, {"probs": (huge, "<f4", 64)})
    assert fileio.load_npz(cache, ("probs", "kept")) is None and evaluation.read_cache(cache, 3, 10) is None
    cache = write_npz(tmp_path / "map.npz", {"thumbnails": np.array(["x"])}, {"xy": (huge, "<f4", 64)})
    assert embedding_map.read_cache(cache, 1) is None


def test_caches_that_do_not_describe_the_split_are_read_as_none(tmp_path):
    from alexnet_core.analysis import embedding_map, evaluation

    probs = np.full((4, 3), 1 / 3, np.float32)
    good = tmp_path / "good.npz"
    fileio.save_npz(good, probs=probs, kept=np.array([0, 1, 3, 4]))
    assert evaluation.read_cache(good, 5, 3) is not None
    assert evaluation.read_cache(good, 4, 3) is None  # an index past the split
    assert evaluation.read_cache(good, 5, 10) is None  # another model's classes
    for kept in ([0, 1, 1, 2], [-1, 0, 1, 2], [0, 1, 2]):
        fileio.save_npz(tmp_path / "bad.npz", probs=probs, kept=np.array(kept))
        assert evaluation.read_cache(tmp_path / "bad.npz", 5, 3) is None, kept
    fileio.save_npz(tmp_path / "nan.npz", probs=probs * np.nan, kept=np.arange(4))
    assert evaluation.read_cache(tmp_path / "nan.npz", 5, 3) is None
    thumbs = np.array([embedding_map.THUMB_PREFIX + "AAAA"] * 3)
    fileio.save_npz(tmp_path / "map.npz", xy=np.zeros((3, 2), np.float32), thumbnails=thumbs)
    assert embedding_map.read_cache(tmp_path / "map.npz", 3) is not None
    assert embedding_map.read_cache(tmp_path / "map.npz", 4) is None
    fileio.save_npz(tmp_path / "map.npz", xy=np.zeros((3, 2), np.float32),
                  thumbnails=np.array(["javascript:alert(1)"] * 3))
    assert embedding_map.read_cache(tmp_path / "map.npz", 3) is None
    with pytest.raises(ValueError):  # never written, so never unpickled
        fileio.save_npz(tmp_path / "objects.npz", values=np.array([{"a": 1}], dtype=object))


def test_fifos_named_like_run_files_are_never_opened(tmp_path):
    """Opening a FIFO blocks until something writes to it: a reader would hang the page."""
    import contextlib
    import os
    import threading

    from alexnet_core.train.snapshots import read_timeline

    run_dir = tmp_path / "run"
    (run_dir / "snapshots").mkdir(parents=True)
    fifos = [run_dir / layout.CONFIG, run_dir / layout.STATUS, run_dir / "snapshots" / "probe.npz",
             run_dir / "snapshots" / "epoch-0001.npz", run_dir / "model.keras"]
    for fifo in fifos:
        os.mkfifo(fifo)
    seen = {}

    def read():
        seen["json"] = fileio.read_json(run_dir / layout.STATUS, "default")
        seen["checked"] = layout.read_checked(run_dir / layout.CONFIG, layout.CONFIG_SCHEMA)
        seen["timeline"] = read_timeline(run_dir, 1, 10).notes
        with pytest.raises(ModelLoadError, match="model.keras is not a regular file"):
            check_model_file(run_dir / "model.keras")
        seen["model"] = True
        seen["problem"] = layout.model_problem(run_dir)  # the run list's check

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(10)
    finished = not reader.is_alive()
    for fifo in fifos:  # let a reader stuck in open() go
        with contextlib.suppress(OSError):
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    assert finished, seen
    assert seen == {"json": "default", "model": True, "problem": "model.keras: not a regular file",
                    "checked": ({}, ["config.json: not a regular file (a folder, pipe or device), not read"]),
                    "timeline": ["Left out the probe images: probe.npz is damaged.",
                                 "Left out epoch 1: its snapshot (epoch-0001.npz) is damaged."]}


# --- JSON ----------------------------------------------------------------------------------------


def test_deeply_nested_json_is_damage_in_every_reader(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(DEEP)
    assert fileio.read_json(path, "default") == "default" and fileio.read_object(path) == {}
    assert layout.read_checked(path, layout.CONFIG_SCHEMA) == ({}, [
        "config.json: not valid JSON (nested more than 100 levels deep)"])
    path.write_text(json.dumps({"a": [[[[[[1]]]]]]}))
    assert layout.read_checked(path, layout.CONFIG_SCHEMA) == ({"a": [[[[[[1]]]]]]}, [])
    model = with_config(DEMO_RUN / layout.MODEL, tmp_path / "deep.keras", DEEP)
    with pytest.raises(ModelLoadError, match="deep.keras: its config.json is damaged"):
        check_model_file(model)


def test_cli_refuses_the_model_bomb_and_deep_json_with_a_message(model_bomb, tmp_path):
    bomb_run = run_copy(tmp_path, "bomb-run")
    shutil.copy(model_bomb, bomb_run / layout.MODEL)
    deep_run = run_copy(tmp_path, "deep-run")
    (deep_run / layout.CONFIG).write_text(DEEP)
    deep_model = with_config(DEMO_RUN / layout.MODEL, tmp_path / "deep.keras", DEEP)
    cases = [(("predict", str(model_bomb), CAT), "unpacks to"), (("evaluate", str(bomb_run), "--data", "sample"),
                                                                  "model.keras: its model.weights.h5 unpacks to"),
             (("predict", str(deep_run), CAT), "config.json: not valid JSON (nested"),
             (("evaluate", str(deep_run), "--data", "sample"), "config.json"),
             (("predict", str(deep_model), CAT), "its config.json is damaged")]
    for args, message in cases:
        result = cli(*args)
        assert result.returncode == 2 and message in result.stderr, (args, result.stderr[-2000:])
        assert "Traceback" not in result.stderr, result.stderr[-3000:]


# --- Pages ---------------------------------------------------------------------------------------


def test_pages_render_with_every_bomb_planted(model_bomb):
    from streamlit.testing.v1 import AppTest

    root = locations.runs_root()
    root.mkdir(parents=True, exist_ok=True)
    snaps = run_copy(root, "snapshot-bombs")
    write_npz(snaps / "snapshots" / "epoch-0002.npz", SNAPSHOT_ARRAYS, {"labels": ((GIB // 2,), "<i2", GIB)})
    write_npz(snaps / "snapshots" / "epoch-0003.npz", SNAPSHOT_ARRAYS, {"conv1": ((10**7, 10**7, 3, 48), "<f2", 64)})
    write_npz(snaps / "snapshots" / "probe.npz", {"labels": np.arange(32) % 10},
              {"images": ((32, 3344, 3344, 3), "|u1", 32 * 3344 * 3344 * 3)})
    shutil.copy(model_bomb, run_copy(root, "model-bomb") / layout.MODEL)
    (run_copy(root, "deep-config") / layout.CONFIG).write_text(DEEP)

    at = open_with_query("pages/runs.py", "snapshot-bombs")
    no_leak(at)
    captions = " ".join(c.value for c in at.caption).replace("\\", "")
    for left_out in ("epoch 2: its snapshot (epoch-0002.npz)", "epoch 3: its snapshot (epoch-0003.npz)",
                     "the probe images: probe.npz is damaged"):
        assert left_out in captions, captions[:3000]
    assert any("deep-config" in str(v) for v in at.dataframe[0].value["run_id"])

    at = run_page("pages/classify.py")
    no_leak(at)
    at.selectbox(key="classify_model").select(str(root / "model-bomb")).run()
    no_leak(at)
    assert any("This model cannot be used" in e.value and "unpacks to" in e.value for e in at.error), at.error

    def evaluate_page():
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT)
        at.switch_page("pages/evaluate.py")
        at.session_state["eval_model"] = str(snaps)
        at.run()
        no_leak(at)
        return at

    at = evaluate_page()
    assert any("Left out epoch 2" in c.value for c in at.caption)
    (cache,) = (snaps / layout.EVAL).glob("[0-9a-f]*.npz")
    good = fileio.load_npz(cache, ("probs", "kept"))
    accuracy, n = at.metric[0].value, good["kept"].size
    for planted in ({"probs": np.full((n, 10), 0.1, np.float32), "kept": np.arange(n) + 1},  # indices past the split
                    {"probs": np.full((n + 7, 10), 0.1, np.float32), "kept": np.arange(n + 7)},  # more than it has
                    None):
        if planted is None:
            write_npz(cache, {"kept": np.arange(n)}, {"probs": ((GIB // 40, 10), "<f4", GIB)})
        else:
            fileio.save_npz(cache, **planted)
        at = evaluate_page()
        assert at.metric[0].value == accuracy
        notes = " ".join(i.value for i in at.info).replace("\\", "")
        assert f"The saved evaluation ({cache.name}) was damaged or did not match this data: evaluated again" in notes
        again = fileio.load_npz(cache, ("probs", "kept"))  # written whole again
        assert all(np.array_equal(again[k], good[k]) for k in good)
