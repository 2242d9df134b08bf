"""ImageNet-scale input pipeline: the paper's augmentation on original and on prepared JPEGs,
side by side with bare JPEG decode of the originals.

Writes (once) a synthetic ImageNet-like folder: `--images` photo-like JPEGs of 500x375 in
`--classes` class folders, the size of a typical ILSVRC photo, and (once) its prepared copy in
FOLDER.prepared-256/ beside it (shorter side 256: 341x256 JPEGs of quality 90 in TFRecord shards, the
`python -m alexnet_core prepare` writes them). Then, side by side in one run, from the page cache:

  (a) bare decode of the originals: read + tf.io.decode_jpeg, parallel, nothing else
  (b) file pipeline, `paper`: data.make_dataset on the originals, crop of the square the
      paper's 256-resize + 227-crop keeps (only its blocks decoded), flip, PCA lighting, 227 px
  (c) file pipeline, `random-resized-crop`: the same with a random-resized crop, no lighting
  (d) prepared pipeline, `paper`: data.make_dataset on the prepared folder, as training reads it
      (records.train_batches: the same crop and flip; each image's PCA lighting shift drawn here
      and sent beside its label, added by the training step on its device)
  (e) prepared pipeline, `random-resized-crop`, as training on a GPU reads it
      (records.train_batches with `resize_on_device`: each crop's blocks decoded and sent as they
      are, packed into one buffer per batch; the step resizes and flips them on its device)
  (f) (d) with the lighting shift added in the stream instead (a float pass per image on the CPU:
      what a CPU-only run pays in its step instead)
  (g) (e) with the crops resized and flipped in the stream, as a CPU-only run (or a tf.data
      service's workers) makes them

Prints images/s and images/s per CPU core for each and the ratios to (a) (issue #27's goal:
(d) and (e) >= 1.15x (a) and >= 1,400 images/s per core). `--stages` adds a per-stage
ablation of (d) (what each step of the prepared pipeline costs), `--stages random-resized` one
of (e) and (g); `--stage-rounds` alternating rounds of it, the best of each step kept.
`--device-resize` times the step's resize of (e)'s crops on this machine's device; `--profile`
shows where (e)'s and (g)'s time goes by TensorFlow's profiler (with xprof installed).

    python bench/imagenet_pipeline.py [--images 6000] [--classes 100] [--folder /tmp/alexnet-imagenet-like-6000]
    python bench/imagenet_pipeline.py --rounds 0 --stages random-resized --stage-rounds 3
    python bench/imagenet_pipeline.py --rounds 0 --device-resize   # the step's resize of (e)'s crops
    python bench/imagenet_pipeline.py --rounds 0 --profile         # by TensorFlow's profiler (pip install xprof)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import tensorflow as tf  # noqa: E402

from alexnet_core.inputs import records  # noqa: E402
from alexnet_core.inputs.augment import dataset_options  # noqa: E402
from alexnet_core.inputs.data import load_folder, load_source, make_dataset  # noqa: E402
from bench.synthetic import jpeg_folder  # noqa: E402

PREPARED_SIZE = 256
PREPARED_QUALITY = 90


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def timed(name: str, dataset, images: int, batch: int) -> tuple[float, float]:
    """(images/s, images per CPU-second of this process) over `images` images of `dataset` (batches
    of `batch`), after two warm-up batches."""
    iterator = iter(dataset)
    next(iterator)
    next(iterator)
    start, cpu = time.perf_counter(), cpu_seconds()
    seen = 0
    while seen < images:
        seen += batch if batch else 1
        next(iterator)
    rate = seen / (time.perf_counter() - start)
    per_cpu = seen / max(cpu_seconds() - cpu, 1e-9)
    print(f"{name:<62} {rate:7.0f} img/s {rate / cores():7.0f} per core {per_cpu:7.0f} per CPU-second", flush=True)
    return rate, per_cpu


def cpu_seconds() -> float:
    """CPU time (user + system) of this process so far: what a pass costs, however busy the machine."""
    times = os.times()
    return times.user + times.system


def bare_decode(paths, batch: int):
    ds = tf.data.Dataset.from_tensor_slices(paths).repeat()
    ds = ds.map(lambda p: tf.io.decode_jpeg(tf.io.read_file(p), channels=3), num_parallel_calls=tf.data.AUTOTUNE)
    # Batched as ragged only to count in the same units as the pipeline; decode is the work.
    return ds.map(lambda x: tf.shape(x)[0], num_parallel_calls=tf.data.AUTOTUNE).batch(batch).prefetch(2)


# -- the prepared copy ---------------------------------------------------------------------------

def prepared_copy(root: Path, shards: int) -> tuple[Path, bool]:
    """FOLDER.prepared-256 beside the folder, made once by `prepare.prepare` (all images in the
    train split). Returns the folder and whether this run made it."""
    from alexnet_core.inputs import prepare

    dest = root.parent / f"{root.name}.prepared-{PREPARED_SIZE}"
    if (dest / "prepared.json").is_file():
        return dest, False
    prepare.prepare(str(root), dest, size=PREPARED_SIZE, shards=shards, quality=PREPARED_QUALITY, val_split=0.0)
    return dest, True


def train_shards(dest: Path) -> list[str]:
    info = json.loads((dest / "prepared.json").read_text())
    return [str(dest / name) for name in info["splits"]["train"]["shards"]]


# -- per-stage ablations of the prepared pipelines ------------------------------------------------

def stages(shards: list[str], num_classes: int, size: int, batch: int, crop: str = "paper"):
    """(name, dataset) for each step of the prepared `crop` stream ("paper" or "random-resized")
    added in turn."""
    autotune = tf.data.AUTOTUNE
    spec = {"image/encoded": tf.io.FixedLenFeature([], tf.string),
            "image/class/label": tf.io.FixedLenFeature([], tf.int64)}
    base = records.records(shards, seed=0)

    def parsed():
        def parse(step, serialized):
            example = tf.io.parse_example(serialized, spec)
            n = tf.shape(serialized)[0]
            uniform = tf.random.stateless_uniform([n, 3], tf.stack([step, step]))
            shifts = 0.5 + tf.random.stateless_normal([n, 3], tf.stack([step, step + 1]))
            return example["image/encoded"], uniform, shifts
        return base.batch(records.PARSE_BATCH).enumerate().map(parse, num_parallel_calls=autotune).unbatch()

    def counted(ds):
        return ds.batch(batch).prefetch(autotune).with_options(records.stream_options())

    def window(data, uniform, flip=False):
        begin, _ = records.paper_window(tf.io.extract_jpeg_shape(data), size, uniform[:2])
        image = tf.io.decode_and_crop_jpeg(data, tf.concat([begin, [size, size]], 0), channels=3)
        image.set_shape([size, size, 3])
        return tf.cond(uniform[2] < 0.5, lambda: tf.reverse(image, [1]), lambda: image) if flip else image

    def shape_of(image):
        return image[0, 0, 0]  # one pixel out: the decode is timed, not the batching of pixels

    if crop == "random-resized":
        return rrc_stages(shards, num_classes, size, batch, base, counted, shape_of)
    return [
        ("records: read, interleave, shuffle buffer", counted(base)),
        ("+ parse and draw the random numbers, a batch at a time", counted(parsed())),
        ("+ decode the whole 341x256 JPEG (no crop, one pixel out)", counted(parsed().map(
            lambda d, u, s: shape_of(tf.io.decode_jpeg(d, channels=3)), num_parallel_calls=autotune))),
        ("+ decode only the 227 window instead (one pixel out)", counted(parsed().map(
            lambda d, u, s: shape_of(window(d, u)), num_parallel_calls=autotune))),
        ("+ the window's pixels out, batched", counted(parsed().map(
            lambda d, u, s: window(d, u), num_parallel_calls=autotune))),
        ("+ flip", counted(parsed().map(lambda d, u, s: window(d, u, True), num_parallel_calls=autotune))),
        ("+ PCA lighting: to float, add, clip, to bytes (train_batches)", records.train_batches(
            shards, num_classes, size, batch, seed=0, crop="paper", lighting=0.1, drop_remainder=True)),
    ]


def rrc_stages(shards, num_classes, size, batch, base, counted, shape_of):
    """The steps of the prepared `random-resized` stream (records.decode_crop's resized branch),
    each added in turn: the box alone, the crop's blocks decoded, the flip, the float copy and its
    bilinear resize to size x size (and, beside it, the bytes resized directly), + 0.5 and the
    cast to bytes, batched (= (g)); and the stream as sent to a GPU step (= (e))."""
    from alexnet_core.inputs.crops import crop_window

    autotune = tf.data.AUTOTUNE
    spec = {"image/encoded": tf.io.FixedLenFeature([], tf.string)}

    def parsed():  # as train_batches: each image's seed pair and uniforms drawn a batch at a time
        def parse(step, serialized):
            n = tf.shape(serialized)[0]
            pairs = tf.random.stateless_uniform([n, 2], tf.stack([step, step]), minval=None, maxval=None,
                                                dtype=tf.int64)
            uniform = tf.random.stateless_uniform([n, 3], tf.stack([step, step + 1]))
            return tf.io.parse_example(serialized, spec)["image/encoded"], pairs, uniform
        return base.batch(records.PARSE_BATCH).enumerate().map(parse, num_parallel_calls=autotune).unbatch()

    def box(data, pair):
        return crop_window(tf.io.extract_jpeg_shape(data), size, "random-resized", pair)

    def cut(data, pair):
        begin, extent = box(data, pair)
        return tf.io.decode_and_crop_jpeg(data, tf.concat([begin, extent], 0), channels=3)

    def flipped(data, pair, u):
        part = cut(data, pair)
        return tf.cond(u[2] < 0.5, lambda: tf.reverse(part, [1]), lambda: part)

    def resized(data, pair, u, bytes_in=False):  # as decode_crop: a float copy of the crop resized
        part = flipped(data, pair, u)
        return tf.image.resize(part if bytes_in else tf.cast(part, tf.float32), (size, size))

    def staged(fn):
        return counted(parsed().map(fn, num_parallel_calls=autotune))

    return [
        ("records + parse + random numbers, a batch at a time", counted(parsed())),
        ("+ the box alone (jpeg shape, sample_distorted_bounding_box)",
         staged(lambda d, p, u: tf.reduce_sum(box(d, p)[1]))),
        ("+ decode the box's blocks (one pixel out)", staged(lambda d, p, u: shape_of(cut(d, p)))),
        ("+ flip (one pixel out)", staged(lambda d, p, u: shape_of(flipped(d, p, u)))),
        ("+ to float, bilinear resize to the input (one pixel out)",
         staged(lambda d, p, u: shape_of(resized(d, p, u)))),
        ("  (the bytes resized directly instead, one pixel out)",
         staged(lambda d, p, u: shape_of(resized(d, p, u, bytes_in=True)))),
        ("+ the float pixels out, batched", staged(resized)),
        ("+ 0.5 and cast to bytes instead, batched", staged(lambda d, p, u: tf.cast(resized(d, p, u) + 0.5, tf.uint8))),
        ("train_batches, random-resized (= (g))", records.train_batches(
            shards, num_classes, size, batch, seed=0, crop="random-resized", drop_remainder=True)),
        ("train_batches, resize_on_device: unresized crops packed (= (e))", records.train_batches(
            shards, num_classes, size, batch, seed=0, crop="random-resized", drop_remainder=True,
            resize_on_device=True)),
    ]


def device_resize(shards: list[str], num_classes: int, size: int, batch: int, rounds: int = 2, count: int = 6):
    """records.resize_sent on this machine, over `count` sent batches held in memory: compiled by
    XLA (as the step runs it) against the same ops without XLA. On a CPU this is what resizing in
    the step would cost (against the stream's own resize, in the stages); on a GPU, its cost there."""
    sent = list(records.train_batches(shards, num_classes, size, batch, seed=0, crop="random-resized",
                                      resize_on_device=True, drop_remainder=True).take(count))
    plain = tf.function(lambda flat, hw, ends, flip: records._resize_packed(flat, hw, ends, flip, size),
                        reduce_retracing=True)
    ways = {"resize_sent, XLA (as the step runs it)": lambda flat, extras: records.resize_sent(flat, extras, size)[0],
            "the same ops without XLA": lambda flat, extras: plain(flat, extras["hw"], extras["ends"], extras["flip"])}
    print(f"\nthe step's resize of sent crops on {tf.config.list_logical_devices()[-1].device_type}, "
          f"batches of {batch} at {size} px (best of {rounds}):")
    for name, resize in ways.items():
        resize(*sent[0][::2]).numpy()  # compiled (or traced) once, outside the clock
        best_wall = best_cpu = float("inf")
        for _ in range(rounds):
            start, cpu = time.perf_counter(), cpu_seconds()
            for flat, _, extras in sent:
                resize(flat, extras).numpy()
            best_wall = min(best_wall, (time.perf_counter() - start) / len(sent))
            best_cpu = min(best_cpu, (cpu_seconds() - cpu) / len(sent))
        print(f"  {name:<44} {best_wall * 1e3:7.0f} ms a batch {best_cpu * 1e6 / batch:7.0f} us of CPU an image",
              flush=True)


def profile(shards: list[str], num_classes: int, size: int, batch: int, batches: int = 8, top: int = 10):
    """Where the CPU time of (e) and (g) goes, by TensorFlow's profiler: `batches` batches of each
    stream traced (after two untraced), then xprof's framework op statistics: self-time per op type
    on the host, and tf.data's iterators apart (their self-time includes waits). Needs `pip install
    xprof` (its converter only; nothing is served)."""
    import tempfile

    try:
        from xprof.convert import raw_to_tool_data
    except ImportError:
        print("\n--profile needs xprof's converter: pip install xprof", flush=True)
        return
    streams = {"(e) for a GPU step": True, "(g) resized in the stream": False}
    for name, on_gpu in streams.items():
        stream = records.train_batches(shards, num_classes, size, batch, seed=0, crop="random-resized",
                                       resize_on_device=on_gpu, drop_remainder=True)
        iterator = iter(stream)
        next(iterator)
        next(iterator)
        with tempfile.TemporaryDirectory() as logdir:
            tf.profiler.experimental.start(logdir)
            for _ in range(batches):
                next(iterator)
            tf.profiler.experimental.stop()
            planes = [str(p) for p in Path(logdir).rglob("*.xplane.pb")]
            data, _ = raw_to_tool_data.xspace_to_tool_data(planes, "framework_op_stats^", {})
        table = json.loads(data)[0]
        columns = [c["id"] for c in table["cols"]]
        rows = [dict(zip(columns, (cell["v"] for cell in row["c"]))) for row in table["rows"]]
        # TensorFlow ops by type. tf.data's iterators are left out of the sum: their "self-time"
        # is the time a GetNext took beyond its inputs', waiting on parallel calls included.
        by_type: dict[str, float] = {}
        waiting = 0.0
        for row in rows:
            if row["host_or_device"] != "Host" or row["type"] == "IDLE":
                continue
            if row["type"] == "Dataset":
                waiting += row["total_self_time"]
            else:
                by_type[row["type"]] = by_type.get(row["type"], 0.0) + row["total_self_time"]
        busy, images = sum(by_type.values()), batches * batch
        print(f"\nprofile of {name} ({batches} batches of {batch}): {busy / images:.0f} us of TensorFlow ops an "
              f"image; tf.data's iterators {waiting / images:.0f} us (waits included)")
        for kind, micros in sorted(by_type.items(), key=lambda item: -item[1])[:top]:
            print(f"  {kind:<48} {micros / images:7.1f} us an image {100 * micros / busy:5.1f}%")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=6_000)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--folder", default=None, help="default: $TMPDIR/alexnet-imagenet-like-IMAGES")
    parser.add_argument("--shards", type=int, default=16, help="shards of the prepared copy")
    parser.add_argument("--size", type=int, default=227)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--timed", type=int, default=0, help="images timed per measurement (default: all)")
    parser.add_argument("--rounds", type=int, default=2,
                        help="alternating rounds; the best of each is kept (0: only the stages)")
    parser.add_argument("--stages", nargs="?", const="paper", default=None, choices=["paper", "random-resized"],
                        help="also time each step of the prepared paper stream (or of the random-resized one)")
    parser.add_argument("--stage-rounds", type=int, default=0,
                        help="alternating rounds of the stages, best kept (default: --rounds, at least 1)")
    parser.add_argument("--default-allocator", action="store_true",
                        help="leave glibc's allocator as it is (by default every row runs with the heap "
                             "setting the prepared stream makes, records.roomy_allocator)")
    parser.add_argument("--profile", action="store_true",
                        help="also profile (e) and (g) with TensorFlow's profiler (needs `pip install xprof`)")
    parser.add_argument("--device-resize", action="store_true",
                        help="also time the step's resize of crops sent unresized (records.resize_sent)")
    args = parser.parse_args()
    if not args.default_allocator:  # the same allocator for every row, whichever is built first
        print(f"allocator: {'heap reuses batch-sized blocks' if records.roomy_allocator() else 'unchanged'} "
              "(records.roomy_allocator)", flush=True)

    folder = args.folder or str(Path(os.environ.get("TMPDIR", "/tmp")) / f"alexnet-imagenet-like-{args.images}")
    start = time.perf_counter()
    root = jpeg_folder(Path(folder), args.images, args.classes)
    print(f"folder: {root} ({args.images} JPEGs of 500x375, {args.classes} classes; ready in "
          f"{time.perf_counter() - start:.0f} s); {cores()} CPU core(s); TensorFlow {tf.__version__}", flush=True)
    source = load_folder(root, val_split=0.0)
    split = source.train
    start = time.perf_counter()
    dest, made = prepared_copy(root, args.shards)
    shards = train_shards(dest)
    size_mb = sum(Path(s).stat().st_size for s in shards) / 2**20
    print(f"prepared: {dest} ({len(shards)} shards, {size_mb:.0f} MB, shorter side {PREPARED_SIZE}, quality "
          f"{PREPARED_QUALITY}; {'made by prepare.prepare' if made else 'made before'}, ready in {time.perf_counter() - start:.0f} s)", flush=True)
    n = args.timed or len(split)
    for path in list(split.paths) + shards:  # first pass: every file in the page cache, as for every later epoch
        Path(path).read_bytes()
    num_classes = len(source.class_names)

    def pipeline(preset):
        return make_dataset(split, num_classes, args.size, args.batch_size, training=True,
                            cache_budget=0, drop_remainder=True, **dataset_options(preset, args.size, 0))

    prepared_split = load_source(str(dest)).train  # what training reads: record paths of the shards

    def prepared(preset, on_gpu=True):  # make_dataset, as training: the lighting shifts go to the step
        return make_dataset(prepared_split, num_classes, args.size, args.batch_size, training=True,
                            cache_budget=0, drop_remainder=True, resize_on_device=on_gpu,
                            **dataset_options(preset, args.size, 0))

    def prepared_lit_here():  # the same with the shifts added in the stream, a float pass per image on the CPU
        options = dataset_options("paper", args.size, 0)
        return records.train_batches(shards, num_classes, args.size, args.batch_size, seed=0, crop=options["crop"],
                                     lighting=options["lighting"], drop_remainder=True)

    runs = {
        "bare": ("(a) bare JPEG decode of the 500x375 originals", lambda: bare_decode(split.paths, args.batch_size)),
        "file-paper": ("(b) file pipeline, paper crop + flip + PCA lighting", lambda: pipeline("paper")),
        "file-rrc": ("(c) file pipeline, random-resized crop + flip", lambda: pipeline("random-resized-crop")),
        "prep-paper": ("(d) prepared 256 px, paper crop + flip + PCA lighting", lambda: prepared("paper")),
        "prep-rrc": ("(e) prepared 256 px, random-resized crop, for a GPU step", lambda: prepared("random-resized-crop")),
        "prep-lit": ("(f) = (d) with the lighting added in the stream", prepared_lit_here),
        "prep-rrc-here": ("(g) = (e) resized and flipped in the stream",
                          lambda: prepared("random-resized-crop", on_gpu=False)),
    }
    best, cpu = dict.fromkeys(runs, 0.0), dict.fromkeys(runs, 0.0)
    for round_ in range(args.rounds):
        print(f"round {round_ + 1}", flush=True)
        for key, (name, build) in runs.items():
            rate, per_cpu = timed(name, build(), n, args.batch_size)
            best[key], cpu[key] = max(best[key], rate), max(cpu[key], per_cpu)
    if args.rounds:
        print(f"\nbest of {args.rounds}: img/s, per core, ratio to (a); img per CPU-second, ratio to (a)")
        for key, (name, _) in runs.items():
            print(f"  {name:<62} {best[key]:7.0f} {best[key] / cores():7.0f} {best[key] / best['bare']:5.2f}x   "
                  f"{cpu[key]:7.0f} {cpu[key] / cpu['bare']:5.2f}x")
        print(f"goal: (d) and (e) >= 1.15x (a) and >= 1,400 img/s per core. Wall clock: (d) "
              f"{best['prep-paper'] / best['bare']:.2f}x, {best['prep-paper'] / cores():.0f}/core; (e) "
              f"{best['prep-rrc'] / best['bare']:.2f}x, {best['prep-rrc'] / cores():.0f}/core. CPU time: (d) "
              f"{cpu['prep-paper'] / cpu['bare']:.2f}x, {cpu['prep-paper']:.0f}/CPU-s; (e) "
              f"{cpu['prep-rrc'] / cpu['bare']:.2f}x, {cpu['prep-rrc']:.0f}/CPU-s")
    if args.profile:
        profile(shards, num_classes, args.size, args.batch_size)
    if args.device_resize:
        device_resize(shards, num_classes, args.size, args.batch_size)
    if args.stages:
        steps = {}
        which = "(d)" if args.stages == "paper" else "(e) and (g)"
        for round_ in range(args.stage_rounds or max(args.rounds, 1)):
            print(f"\nstages of {which}, each step added in turn, round {round_ + 1}:", flush=True)
            for name, dataset in stages(shards, num_classes, args.size, args.batch_size, args.stages):
                rate, per_cpu = timed(name, dataset, n, args.batch_size)
                old_rate, old_cpu = steps.get(name, (0.0, 0.0))
                steps[name] = (max(old_rate, rate), max(old_cpu, per_cpu))
        print(f"\nstages of {which}, best: img/s, img per CPU-second, microseconds of CPU per image")
        for name, (rate, per_cpu) in steps.items():
            print(f"  {name:<62} {rate:7.0f} {per_cpu:7.0f} {1e6 / per_cpu:7.0f} us")


if __name__ == "__main__":
    main()
