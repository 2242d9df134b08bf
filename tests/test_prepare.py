"""`prepare`: a source written once as TFRecord shards of resized JPEGs (inputs/prepare.py), read
back with TensorFlow's own TFRecord reader; damaged files, a kill, a fault mid-shard, a full disk
and changed options."""

import errno
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from alexnet_core.cli import main
from alexnet_core.inputs import prepare as prep
from alexnet_core.inputs import prepared_format as fmt

ROOT = Path(__file__).resolve().parent.parent
WORDS = {"n01440764": "tench, Tinca tinca", "n01443537": "goldfish, Carassius auratus"}


def picture(w, h, seed=0):
    """A smooth picture with a little noise (compresses like a photo), h x w x 3."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 255 / max(w - 1, 1), y * 255 / max(h - 1, 1), (x + y) * 127 / max(w + h - 2, 1)], -1)
    return np.clip(base + rng.normal(0, 8, (h, w, 3)), 0, 255).astype(np.uint8)


def save(path, w, h, fmt_="JPEG", seed=0, **kw):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(picture(w, h, seed)).save(path, format=fmt_, **kw)
    return path


def jpeg_bytes(w, h, seed=0, **kw) -> bytes:
    out = io.BytesIO()
    Image.fromarray(picture(w, h, seed)).save(out, format="JPEG", **kw)
    return out.getvalue()


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """An ImageNet-layout folder: train/ and val/ of two wnids, the synset words, hostile names,
    images from 40x30 to 800x300 (JPEG and PNG, one with an EXIF rotation) and damaged files.
    Returns (root, {split: {relative path: (label, (w, h) as stored or None to skip)}})."""
    root = tmp_path_factory.mktemp("prep") / "imagenet"
    (root / "train").mkdir(parents=True)
    (root / "LOC_synset_mapping.txt").write_text("".join(f"{k} {v}\n" for k, v in WORDS.items()))
    a, b = sorted(WORDS)
    good = {"train": {}, "val": {}}
    for rel, (w, h), kind, stored in [
        (f"train/{a}/small one.jpg", (40, 30), "JPEG", (40, 30)),
        (f"train/{a}/big é.jpg", (600, 400), "JPEG", (384, 256)),
        (f"train/{a}/tall\nname.png", (300, 500), "PNG", (256, 427)),
        (f"train/{b}/square.jpg", (256, 256), "JPEG", (256, 256)),
        (f"train/{b}/wide.jpg", (800, 300), "JPEG", (683, 256)),
        (f"train/{b}/小さい.png", (100, 80), "PNG", (100, 80)),
        (f"val/{a}/v1.jpg", (500, 375), "JPEG", (341, 256)),
        (f"val/{a}/v 2.png", (64, 64), "PNG", (64, 64)),
        (f"val/{b}/v3.jpg", (375, 500), "JPEG", (256, 341)),
    ]:
        save(root / rel, w, h, kind, seed=len(rel))
        good[rel.split("/")[0]][rel] = (sorted(WORDS).index(rel.split("/")[1]), stored)
    raw_name = f"train/{b}/" + os.fsdecode(b"raw \xff bytes.jpg")  # not UTF-8: kept as bytes in the record
    save(root / raw_name, 90, 70)
    good["train"][raw_name] = (1, (90, 70))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees to show it upright: 60x40 as stored, 40x60 as seen
    save(root / f"train/{b}/rotated.jpg", 60, 40, exif=exif.tobytes())
    good["train"][f"train/{b}/rotated.jpg"] = (1, (40, 60))
    damaged = root / "train" / a
    (damaged / "truncated.jpg").write_bytes(jpeg_bytes(600, 400)[:3000])
    (damaged / "noise.jpg").write_bytes(np.random.default_rng(1).bytes(5000))
    (damaged / "empty.jpg").write_bytes(b"")
    bomb = io.BytesIO()
    Image.new("1", (8000, 8000)).save(bomb, format="PNG")  # 64 megapixels in a few kB: over the 50 MP limit
    (damaged / "bomb.png").write_bytes(bomb.getvalue())
    return root, good


def read_back(dest):
    """Every record of every split, in shard-then-record order, read with tf.data."""
    import tensorflow as tf

    spec = {fmt.FEATURE_IMAGE: tf.io.FixedLenFeature([], tf.string),
            fmt.FEATURE_LABEL: tf.io.FixedLenFeature([], tf.int64),
            fmt.FEATURE_NAME: tf.io.FixedLenFeature([], tf.string),
            fmt.FEATURE_SPLIT: tf.io.FixedLenFeature([], tf.string),
            fmt.FEATURE_HEIGHT: tf.io.FixedLenFeature([], tf.int64),
            fmt.FEATURE_WIDTH: tf.io.FixedLenFeature([], tf.int64),
            fmt.FEATURE_FILENAME: tf.io.FixedLenFeature([], tf.string)}
    info = fmt.read_info(dest)
    out = {}
    for split in info["splits"]:
        rows = []
        for shard in fmt.shard_paths(dest, split, info):
            for raw in tf.data.TFRecordDataset(str(shard)):
                ex = {k: v.numpy() for k, v in tf.io.parse_single_example(raw, spec).items()}
                rows.append({"file": ex[fmt.FEATURE_FILENAME].decode("utf-8", "surrogateescape"),
                             "label": int(ex[fmt.FEATURE_LABEL]), "name": ex[fmt.FEATURE_NAME].decode(),
                             "split": ex[fmt.FEATURE_SPLIT].decode(), "jpeg": ex[fmt.FEATURE_IMAGE],
                             "hw": (int(ex[fmt.FEATURE_HEIGHT]), int(ex[fmt.FEATURE_WIDTH])), "shard": shard.name})
        out[split] = rows
    return out


def leftovers(dest) -> list[str]:
    return [str(p) for p in Path(dest).rglob("*") if p.name.endswith(".tmp") or ".tmp" in p.name]


@pytest.fixture(scope="module")
def prepared(source, tmp_path_factory):
    root, _ = source
    dest = tmp_path_factory.mktemp("prepared") / "imagenet-256"
    summary = prep.prepare(str(root), dest, shards=3, workers=1)
    return dest, summary


def test_round_trip_every_good_image_once_resized_and_labelled(source, prepared):
    root, good = source
    dest, summary = prepared
    records = read_back(dest)
    assert set(records) == {"train", "val"}
    for split, expected in good.items():
        rows = records[split]
        assert sorted(r["file"] for r in rows) == sorted(expected), split  # each good image exactly once
        for row in rows:
            label, (w, h) = expected[row["file"]]
            assert (row["label"], row["name"], row["split"]) == (label, sorted(WORDS)[label], split)
            decoded = Image.open(io.BytesIO(row["jpeg"]))
            assert decoded.format == "JPEG" and decoded.size == (w, h) and row["hw"] == (h, w), row["file"]
            assert min(w, h) <= 256
    # The shorter side is 256 and the aspect kept when the source was larger, never enlarged when not.
    big = next(r for r in records["train"] if r["file"].endswith("big é.jpg"))
    assert big["hw"] == (256, 384)
    # A JPEG that needed no resizing is stored byte for byte; a PNG and a rotated JPEG are encoded.
    for rel in ("train/n01440764/small one.jpg", "train/n01443537/square.jpg"):
        row = next(r for r in records["train"] if r["file"] == rel)
        assert row["jpeg"] == (root / rel).read_bytes()
    rotated = next(r for r in records["train"] if r["file"].endswith("rotated.jpg"))
    assert rotated["jpeg"] != (root / rotated["file"]).read_bytes() and rotated["hw"] == (60, 40)
    # Class names, words and labels kept; labels.npz in shard-then-record order.
    info = fmt.read_info(dest)
    assert info["class_names"] == sorted(WORDS) and info["class_words"] == WORDS
    assert info["size"] == 256 and info["quality"] == 90 and "val_split" not in info  # val/ kept as it is
    for split, rows in records.items():
        assert fmt.read_labels(dest, split).tolist() == [r["label"] for r in rows]
        assert info["splits"][split]["count"] == len(rows) == summary["splits"][split]["count"]
    assert [len(info["splits"][s]["shards"]) for s in ("train", "val")] == [2, 1]  # 3 shared by 13 : 3 files
    assert fmt.is_prepared(dest) and not (dest / fmt.WORK_DIR).exists() and not leftovers(dest)


def test_damaged_files_skipped_and_counted_with_reasons(prepared):
    dest, summary = prepared
    train = summary["splits"]["train"]
    assert train["skipped"] == 4 and summary["splits"]["val"]["skipped"] == 0
    # random bytes and the empty file are left out by the source's scan (not images by their first
    # bytes); the truncated JPEG and the bomb fail to decode, each named in its shard's .json
    assert train["skipped_reasons"] == {prep.SCAN_REASON: 2, "damaged or truncated": 1, "over the image limits": 1}
    named = {rel: reason for shard in fmt.read_info(dest)["splits"]["train"]["shards"]
             for rel, reason in json.loads((dest / fmt.shard_info_name(shard)).read_text())["skipped"]}
    assert set(named) == {"train/n01440764/truncated.jpg", "train/n01440764/bomb.png"}
    assert "megapixel" in named["train/n01440764/bomb.png"]


def test_permutation_mixes_classes_and_is_fixed_by_the_seed(tmp_path):
    root = tmp_path / "src"
    for c in range(2):
        for i in range(6):
            save(root / f"c{c}" / f"{i}.png", 20, 20, "PNG", seed=i)
    plans = [prep._make_plan(str(root), {"seed": s, "val_split": 0.0}, 3) for s in (0, 0, 1)]
    assert plans[0]["splits"] == plans[1]["splits"] != plans[2]["splits"]
    shards = plans[0]["splits"]["train"]
    assert [len(s) for s in shards] == [4, 4, 4]
    assert sorted(f for s in shards for f, _ in s) == sorted(f"c{c}/{i}.png" for c in range(2) for i in range(6))
    assert not all(len({label for _, label in s}) == 1 for s in shards)  # not one class per shard


def small_source(root: Path, per_class=6, size=(120, 90), png=False) -> Path:
    """root/class{0,1}/NNN.jpg: four different pictures over and over (each file is its own image);
    `png`: smooth PNGs (small files that take a while to decode and resize)."""
    pictures = []
    for k in range(4):
        out = io.BytesIO()
        if png:
            y, x = np.mgrid[0:size[1], 0:size[0]]
            pixels = np.stack([(x + 40 * k) % 256, y % 256, (x + y) // 8 % 256], -1).astype(np.uint8)
        else:
            pixels = picture(*size, seed=k)
        Image.fromarray(pixels).save(out, format="PNG" if png else "JPEG")
        pictures.append(out.getvalue())
    for c in range(2):
        (root / f"class{c}").mkdir(parents=True)
        for i in range(per_class):
            (root / f"class{c}" / f"{i:03d}.jpg").write_bytes(pictures[(c + i) % 4])
    return root


def inodes(dest: Path) -> dict[str, tuple[int, int]]:
    """(inode, mtime) of every done shard (its .json there)."""
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in dest.glob("*.tfrecord")
            if (dest / fmt.shard_info_name(p.name)).exists()}


def check_exactly_once(dest: Path, root: Path) -> None:
    records = read_back(dest)
    files = sorted(r["file"] for rows in records.values() for r in rows)
    assert files == sorted(str(p.relative_to(root)) for p in root.rglob("*.jpg"))
    assert not leftovers(dest) and not (dest / fmt.WORK_DIR).exists()


def live_in_group(pgid: int) -> list[int]:
    """The processes of process group `pgid` still running (zombies left out), from /proc."""
    alive = []
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat_file.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            alive.append(int(stat_file.parent.name))
    return alive


def test_kill_and_resume_writes_each_shard_once(tmp_path):
    """SIGKILL the command (two worker processes) once some shards are done; the rerun keeps those
    shards as they are, writes the rest and leaves no temporary file."""
    root = small_source(tmp_path / "src", per_class=48, size=(1200, 900), png=True)  # about 0.2 s a shard
    dest = tmp_path / "dest"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "alexnet_core", "prepare", str(root), str(dest), "--shards", "16",
                             "--val-split", "0", "--workers", "2"], env=env, cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None and len(list(dest.glob("train-*.json"))) < 2:
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)  # the command only: its workers must die with it
        proc.wait(30)
        assert not (dest / fmt.INFO_FILE).exists(), "the run finished before it could be killed: give it more work"
        before = inodes(dest)
        assert 2 <= len(before) < 16
        deadline = time.time() + 10
        while live_in_group(proc.pid) and time.time() < deadline:
            time.sleep(0.05)
        assert not live_in_group(proc.pid), "worker processes outlived the command"
        time.sleep(0.5)
        assert inodes(dest) == before, "a worker finished its shard after the command was killed"
    finally:
        with __import__("contextlib").suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # whatever is left, if the workers did not die with it
    summary = prep.prepare(str(root), dest, shards=16, val_split=0.0, workers=1)
    assert summary["shards_kept"] == len(before) and summary["shards_written"] == 16 - len(before)
    after = inodes(dest)
    assert {k: after[k] for k in before} == before  # the shards done before the kill were not written again
    check_exactly_once(dest, root)


def fail_shard(monkeypatch, nth: int, error: Exception) -> list:
    """Make the nth shard written fail with `error` after part of it is on disk; the temporary
    files asked for, in order."""
    real, calls = prep._write_records, []

    def faulty(tmp, records):
        calls.append(tmp)
        if len(calls) == nth:
            tmp.write_bytes(next(iter(records))[:100])  # part of a shard on disk, then the fault
            raise error
        real(tmp, records)

    monkeypatch.setattr(prep, "_write_records", faulty)
    return calls


def test_a_fault_in_the_middle_of_a_shard_leaves_no_half_shard(tmp_path, monkeypatch):
    root = small_source(tmp_path / "src")
    dest = tmp_path / "dest"
    real = prep._write_records
    calls = fail_shard(monkeypatch, 3, RuntimeError("injected fault while writing a shard"))
    with pytest.raises(RuntimeError, match="injected"):
        prep.prepare(str(root), dest, shards=4, val_split=0.0, workers=1)
    assert len(inodes(dest)) == 2 and not (dest / fmt.INFO_FILE).exists()
    assert not calls[2].exists() and not leftovers(dest)
    assert not (dest / fmt.shard_name("train", 2, 4)).exists()
    assert (dest / fmt.WORK_DIR / prep.PLAN_FILE).exists()
    before = inodes(dest)
    monkeypatch.setattr(prep, "_write_records", real)
    summary = prep.prepare(str(root), dest, shards=4, val_split=0.0, workers=1)
    assert (summary["shards_kept"], summary["shards_written"]) == (2, 2)
    assert {k: v for k, v in inodes(dest).items() if k in before} == before
    check_exactly_once(dest, root)


def test_a_full_disk_exits_2_with_what_to_do_and_the_rerun_finishes(tmp_path, monkeypatch, capsys):
    root = small_source(tmp_path / "src")
    dest = tmp_path / "dest"
    real = prep._write_records
    fail_shard(monkeypatch, 2, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
    args = ["prepare", str(root), str(dest), "--shards", "3", "--val-split", "0", "--workers", "1"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"he disk holding {dest} is full" in err and "MB free, about" in err and "MB more needed" in err
    assert "run the same command again: the 1 shards already written are kept" in err
    assert "Traceback" not in err
    assert len(inodes(dest)) == 1 and not leftovers(dest) and not (dest / fmt.shard_name("train", 1, 3)).exists()
    monkeypatch.setattr(prep, "_write_records", real)
    assert main(args + ["--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["shards_kept"], summary["shards_written"], summary["images"]) == (1, 2, 12)
    check_exactly_once(dest, root)


def test_other_options_on_a_dest_with_work_are_refused(tmp_path, monkeypatch):
    root = small_source(tmp_path / "src")
    dest = tmp_path / "dest"
    prep.prepare(str(root), dest, size=64, workers=1)
    with pytest.raises(prep.PrepareError, match=r"other options \(size: 64 there, 128 now\).*--overwrite"):
        prep.prepare(str(root), dest, size=128, workers=1)
    again = prep.prepare(str(root), dest, size=64, workers=1)  # the same options: nothing to do
    assert again["shards_written"] == 0 and again["images"] == 12
    summary = prep.prepare(str(root), dest, size=128, workers=1, overwrite=True)
    assert summary["size"] == 128 and fmt.read_info(dest)["size"] == 128
    # Unfinished (a fault stopped it): other options are refused too, and the plan is kept.
    unfinished = tmp_path / "unfinished"

    def stop(tmp, records):
        raise RuntimeError("stopped")

    monkeypatch.setattr(prep, "_write_records", stop)
    with pytest.raises(RuntimeError):
        prep.prepare(str(root), unfinished, workers=1)
    with pytest.raises(prep.PrepareError, match=r"quality: 90 there, 80 now"):
        prep.prepare(str(root), unfinished, quality=80, workers=1)
    assert (unfinished / fmt.WORK_DIR / prep.PLAN_FILE).exists()


def test_a_folder_prepare_did_not_write_is_refused_and_left_alone(tmp_path, capsys):
    root = small_source(tmp_path / "src")
    dest = tmp_path / "mine"
    dest.mkdir()
    (dest / "notes.txt").write_text("keep me")
    for extra in ([], ["--overwrite"]):
        assert main(["prepare", str(root), str(dest), "--workers", "1", *extra]) == 2
        assert "already holds other files ('notes.txt')" in capsys.readouterr().err
    assert [p.name for p in dest.iterdir()] == ["notes.txt"] and (dest / "notes.txt").read_text() == "keep me"
    assert main(["prepare", str(root), str(root / "inside"), "--workers", "1"]) == 2
    assert "inside SOURCE" in capsys.readouterr().err
    assert main(["prepare", str(root), str(tmp_path / "d"), "--quality", "0"]) == 2
    assert "--quality must be" in capsys.readouterr().err
    assert main(["prepare", "cifar10", str(tmp_path / "d")]) == 2  # refused before any download
    assert "cifar10 is held in memory" in capsys.readouterr().err and not (tmp_path / "d").exists()


def test_damaged_prepared_files_are_named(prepared, tmp_path):
    import shutil

    dest = tmp_path / "copy"
    shutil.copytree(prepared[0], dest)
    shard = dest / fmt.read_info(dest)["splits"]["val"]["shards"][0]
    shard.write_bytes(shard.read_bytes()[:-10])
    with pytest.raises(prep.DataError, match=r"truncated.*prepare"):
        fmt.shard_paths(dest, "val")
    (dest / fmt.LABELS_FILE).write_bytes(b"not a zip")
    with pytest.raises(prep.DataError, match=r"labels\.npz"):
        fmt.read_labels(dest, "train")
    (dest / fmt.INFO_FILE).write_text("{")
    with pytest.raises(prep.DataError, match=r"prepared\.json is not valid JSON.*prepare"):
        fmt.read_info(dest)


def test_the_cli_json_summary(source, tmp_path, capsys):
    root, good = source
    dest = tmp_path / "out"
    assert main(["prepare", str(root), str(dest), "--size", "128", "--workers", "1", "--json"]) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert summary["dest"] == str(dest) and summary["size"] == 128 and summary["classes"] == 2
    assert summary["images"] == sum(len(g) for g in good.values()) and summary["skipped"] == 4
    assert {s: p["count"] for s, p in summary["splits"].items()} == {s: len(g) for s, g in good.items()}
    assert summary["shards"] == 2 and summary["shards_written"] == 2 and summary["bytes"] > 0
    assert "images/s" in captured.err and f"{summary['images'] + 2}/{summary['images'] + 2} images" in captured.err


def test_a_large_jpeg_is_decoded_at_reduced_scale_then_resized(monkeypatch):
    from PIL import JpegImagePlugin

    scales = []
    real = JpegImagePlugin.JpegImageFile.draft

    def spy(self, mode, size):
        before = self.size
        result = real(self, mode, size)
        scales.append(before[0] // self.size[0])
        return result

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    data = jpeg_bytes(2400, 1800)
    encoded, h, w = prep.encode_image(data, "big.jpg", 256, 90)
    assert (h, w) == (256, 341) and Image.open(io.BytesIO(encoded)).size == (341, 256)
    assert scales and scales[0] == 4  # 600x450 out of the decoder, never below 256
