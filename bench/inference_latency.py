"""Inference latency and evaluation time, measured side by side in one process.

  latency: one uploaded image (PNG bytes) -> top-5, p50/p95 over repeated calls,
           our path (Pillow decode + compiled forward) vs a naive `model.predict` per call,
           for the `compact` and `paper` variants
  evaluation: 10,000 images from an image folder through `evaluate` (cold), then again
           from the eval cache

    python bench/inference_latency.py [--calls 200] [--images 10000]
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from alexnet_core.train.training import configure_threads  # noqa: E402

configure_threads()

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from alexnet_core.analysis.evaluation import evaluate  # noqa: E402
from alexnet_core.inputs.images import decode_image  # noqa: E402
from alexnet_core.inputs.preprocess import preprocess  # noqa: E402
from alexnet_core.locations import SAMPLE_DIR  # noqa: E402
from alexnet_core.models.variants import build_model  # noqa: E402
from alexnet_core.predict.inference import Predictor, load_model, top_k, write_class_names  # noqa: E402


def percentiles(samples):
    ms = np.array(samples) * 1000
    return np.percentile(ms, 50), np.percentile(ms, 95)


def latency(variant: str, calls: int, tmp: Path):
    model = build_model(variant, num_classes=10)
    path = tmp / f"{variant}.keras"
    model.save(path)
    write_class_names(path, [f"c{i}" for i in range(10)])
    loaded = load_model(str(path))
    predictor = Predictor(loaded)
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (240, 320, 3), dtype=np.uint8)).save(buf, "PNG")
    data = buf.getvalue()

    def ours():
        return predictor.top_k(decode_image(data, "upload.png"), 5)

    def naive():
        image = decode_image(data, "upload.png")
        probs = loaded.model.predict(preprocess(image[None], loaded.input_size), verbose=0)[0]
        return top_k(probs, loaded.class_names, 5)

    results = {}
    for name, fn in (("ours", ours), ("naive model.predict", naive)):
        for _ in range(5):
            fn()  # warm-up: tracing, first allocations
        samples = []
        for _ in range(calls):
            start = time.perf_counter()
            fn()
            samples.append(time.perf_counter() - start)
        results[name] = percentiles(samples)
    assert [p["label"] for p in ours()] == [p["label"] for p in naive()]
    (o50, o95), (n50, n95) = results["ours"], results["naive model.predict"]
    print(f"{variant:<8} ours p50 {o50:7.2f} ms  p95 {o95:7.2f} ms | naive p50 {n50:7.2f} ms  p95 {n95:7.2f} ms | "
          f"speed-up at p50 {n50 / o50:4.1f}x", flush=True)
    return o50, n50


def evaluation_time(count: int, tmp: Path):
    folder = tmp / "eval-folder"
    sources = sorted((SAMPLE_DIR / "val").glob("*/*.jpg"))
    for i in range(count):
        src = sources[i % len(sources)]
        dest = folder / src.parent.name
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest / f"{i:05d}.jpg")
    loaded = load_model("demo")
    os.environ["ALEXNET_RUNS_DIR"] = str(tmp / "runs")  # the eval cache of a read-only model goes here
    start = time.perf_counter()
    result = evaluate(loaded, str(folder), "train", val_split=0.0)
    cold = time.perf_counter() - start
    start = time.perf_counter()
    again = evaluate(loaded, str(folder), "train", val_split=0.0)
    warm = time.perf_counter() - start
    assert again.n == result.n == count
    print(f"evaluate {count} images (demo model, JPEG folder): {cold:.2f} s cold ({count / cold:,.0f} img/s), "
          f"{warm:.2f} s from the cache", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--images", type=int, default=10_000)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-inference-"))
    try:
        for variant in ("compact", "paper"):
            latency(variant, args.calls, tmp)
        evaluation_time(args.images, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
