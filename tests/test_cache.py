"""Cached results on disk (store.cache): a file that is missing, damaged, truncated, oversized or
does not match is computed again, never trusted; a changed model file names another cache."""

import os
import subprocess
import sys

import numpy as np
import pytest

from alexnet_core import locations
from alexnet_core.store import cache, fileio, layout

LIMITS = {"values": ((4,), "f", 4)}


def read(path):
    """A reader as the caches build theirs: bounded by LIMITS, then checked."""

    def check(arrays):
        values = arrays["values"]
        return arrays if values.shape == (4,) and np.all(np.isfinite(values)) else None

    return cache.read(path, LIMITS, check)


class Counter:
    def __init__(self):
        self.calls = 0

    def __call__(self):
        self.calls += 1
        return {"values": np.arange(4, dtype=np.float32)}


def test_a_result_is_computed_once_then_read(tmp_path):
    path, compute = tmp_path / "eval" / "r.npz", Counter()
    first, replaced = cache.load_or_compute(path, read, compute)
    assert compute.calls == 1 and not replaced and path.is_file()
    again, replaced = cache.load_or_compute(path, read, compute)
    assert compute.calls == 1 and not replaced
    np.testing.assert_array_equal(again["values"], first["values"])


def write_good(path):
    fileio.save_npz(path, values=np.arange(4, dtype=np.float32))
    return path.read_bytes()


@pytest.mark.parametrize("damage", ["garbage", "zip header", "truncated", "empty", "oversized", "wrong shape",
                                    "not finite", "wrong kind", "missing key", "pickled"])
def test_a_bad_cache_file_is_computed_again_and_replaced(tmp_path, damage):
    path = tmp_path / "r.npz"
    good = write_good(path)
    if damage == "garbage":
        path.write_bytes(os.urandom(500))
    elif damage == "zip header":
        path.write_bytes(b"PK\x03\x04 damaged")
    elif damage == "truncated":
        path.write_bytes(good[: len(good) // 2])
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "oversized":  # more than the limits allow: refused before it is unpacked
        fileio.save_npz(path, values=np.zeros(10_000, np.float32))
    elif damage == "wrong shape":
        fileio.save_npz(path, values=np.zeros(3, np.float32))
    elif damage == "not finite":
        fileio.save_npz(path, values=np.array([0, np.nan, 1, np.inf], np.float32))
    elif damage == "wrong kind":
        fileio.save_npz(path, values=np.array(["a", "b", "c", "d"]))
    elif damage == "missing key":
        fileio.save_npz(path, other=np.zeros(4, np.float32))
    elif damage == "pickled":
        np.savez(path, values=np.array([{"a": 1}] * 4, dtype=object), allow_pickle=True)
    assert read(path) is None
    compute = Counter()
    result, replaced = cache.load_or_compute(path, read, compute)
    assert compute.calls == 1 and replaced
    np.testing.assert_array_equal(result["values"], np.arange(4))
    assert read(path) is not None  # the cache is whole again


def test_a_fifo_named_like_a_cache_is_never_opened(tmp_path):
    path = tmp_path / "r.npz"
    os.mkfifo(path)
    result, replaced = cache.load_or_compute(path, read, Counter())  # would block if it opened the FIFO
    assert replaced and read(path) is not None and result["values"].shape == (4,)


def test_without_the_cache_nothing_is_read_or_written(tmp_path):
    path, compute = tmp_path / "r.npz", Counter()
    write_good(path)
    before = path.stat().st_mtime_ns
    cache.load_or_compute(path, read, compute, use_cache=False)
    assert compute.calls == 1 and path.stat().st_mtime_ns == before
    cache.load_or_compute(tmp_path / "new.npz", read, compute, use_cache=False)
    assert not (tmp_path / "new.npz").exists()


def test_a_disk_that_cannot_take_the_cache_only_loses_it(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    result, replaced = cache.load_or_compute(tmp_path / "file" / "r.npz", read, Counter())
    assert result["values"].shape == (4,) and not replaced


def test_the_model_fingerprint_follows_the_file(tmp_path):
    model = tmp_path / "model.keras"
    missing = cache.model_fingerprint(model)
    assert missing == cache.model_fingerprint(model) and len(missing) == 16
    model.write_bytes(b"first model")
    first = cache.model_fingerprint(model)
    assert first != missing and first == cache.model_fingerprint(model)
    assert cache.model_fingerprint(tmp_path / "." / "model.keras") == first  # the same file, however named

    with fileio.atomic_write(model) as tmp:  # replaced by one of the same size within the same second
        tmp.write_bytes(b"other model")
    replaced = cache.model_fingerprint(model)
    assert replaced != first

    stat = model.stat()
    model.write_bytes(b"third model")  # rewritten in place, its old times put back: the inode stays,
    os.utime(model, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1000))  # and its time moves by a microsecond
    assert cache.model_fingerprint(model) not in (first, replaced)

    copy = tmp_path / "copy.keras"
    copy.write_bytes(model.read_bytes())
    assert cache.model_fingerprint(copy) != cache.model_fingerprint(model)  # another file, another cache


def test_cache_names_follow_the_model_fingerprint(tmp_path):
    """Evaluation and the map name their caches by the model's fingerprint: a new model file,
    a new cache (the old one is never read for it)."""
    from alexnet_core.analysis import embedding_map, evaluation
    from alexnet_core.inputs.data import Split
    from alexnet_core.predict.inference import LoadedModel

    model = tmp_path / "m.keras"
    model.write_bytes(b"one")
    loaded = LoadedModel(None, ["a", "b"], str(model), model, None)
    split = Split(np.array([0, 1, 1]), paths=["x/a/1.jpg", "x/b/2.jpg", "x/b/3.jpg"])
    result = evaluation.Evaluation(["a", "b"], np.full((3, 2), 0.5, np.float32), split.labels, split.paths, "x", "all")
    indices = np.arange(3)

    def names():
        return (evaluation._cache_path(loaded, "x", split, "all", False).name,
                embedding_map._cache_path(loaded, result, indices).name)

    before = names()
    assert before == names() and before[1].startswith("map-")
    assert evaluation._cache_path(loaded, "x", split, "all", True).name != before[0]  # flip: another result
    with fileio.atomic_write(model) as tmp:
        tmp.write_bytes(b"two")
    after = names()
    assert after[0] != before[0] and after[1] != before[1]


def test_results_of_a_run_are_kept_in_it_unless_it_is_read_only(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    assert cache.folder(run) == run / layout.EVAL
    assert cache.folder(None) == locations.runs_root() / ".cache" / "eval"
    (run / layout.READ_ONLY).touch()
    assert cache.folder(run) == locations.runs_root() / ".cache" / "eval"


def test_keys_tell_their_parts_apart():
    assert cache.key("a", 1) == cache.key("a", 1) and len(cache.key("a", 1)) == 16
    assert len({cache.key("a", 1), cache.key("a", "1"), cache.key("a1"), cache.key(["a", 1]),
                cache.key(b"a", 1), cache.key("a", 1, None)}) == 6


def test_the_bottom_modules_need_no_tensorflow():
    code = ("import sys\n"
            "import alexnet_core.locations, alexnet_core.store.cache, alexnet_core.inputs.images\n"
            "import alexnet_core.inputs.datasets\n"
            "assert 'tensorflow' not in sys.modules, 'tensorflow imported'\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
