"""JPEG decode and the training crops per CPU core, and on the GPU, without TensorFlow.

For a machine that has no TensorFlow (the GPU machines this project is measured on carry PyTorch,
Pillow and OpenCV): how many images a second one core, and N cores together, decode and crop,
with the libraries such machines have, and how many the GPU decodes (nvJPEG through
torchvision) when there is one. It answers how many cores a GPU host needs to feed the `paper`
network (about 21,700 images/s in bfloat16 on an H100, docs/BENCHMARKS.md).

Writes (once) `--images` photo-like 500x375 JPEGs (bench.synthetic, quality 90, the size of a
typical ILSVRC photo) and their prepared copies (shorter side 256: 341x256, quality 90, as
`python -m alexnet_core prepare` writes them), all held in memory as bytes. Then, for each
process count in `--procs` (forked workers, one thread each, each decoding its share of the
images `--repeat` times):

  orig-decode      Pillow: decode a 500x375 original to RGB pixels (the bare-decode baseline)
  paper            Pillow: decode a prepared 341x256 JPEG, a random 227x227 window, random flip
  random-resized   Pillow: decode a prepared JPEG, a random box of 8-100% of the area and
                   aspect 3:4-4:3 resized to 227 (bilinear, `resize(box=...)`), random flip
  cv2-orig-decode  OpenCV (libjpeg-turbo): decode an original
  cv2-random-resized  OpenCV: decode a prepared JPEG, the same box, cv2.resize bilinear, flip

and, with a CUDA GPU and torchvision: `gpu-decode` (nvJPEG, batches of 256 prepared JPEGs),
`gpu-random-resized` (that, plus each image's box resized to 227 and flipped on the GPU, one
image at a time) and `gpu-random-resized-batched` (the boxes of same-sized images resized
together by `torchvision.ops.roi_align`, one bilinear sample per pixel).

Prints one JSON object: images/s in all and per process for each row and process count, and
the ratio of each crop to bare decode of the originals with the same library and processes.

    python bench/decode_cores.py [--images 2000] [--procs 1,2] [--repeat 2] [--json FILE]
"""

from __future__ import annotations

import argparse
import io
import json
import math
import multiprocessing as mp
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.synthetic import jpeg_folder  # noqa: E402

SIZE = 227
PREPARED = 256
QUALITY = 90

ORIGINALS: list[bytes] = []
PREPARED_JPEGS: list[bytes] = []


def load(images: int) -> None:
    """Fill ORIGINALS and PREPARED_JPEGS (written to a folder once, then read into memory)."""
    from PIL import Image

    root = jpeg_folder(Path(tempfile.gettempdir()) / f"alexnet-decode-cores-{images}", images, 10)
    for path in sorted(root.glob("*/*.jpg")):
        data = path.read_bytes()
        ORIGINALS.append(data)
        image = Image.open(io.BytesIO(data)).convert("RGB")
        w, h = image.size
        scale = PREPARED / min(w, h)
        small = image.resize((round(w * scale), round(h * scale)), Image.BILINEAR)
        out = io.BytesIO()
        small.save(out, "JPEG", quality=QUALITY)
        PREPARED_JPEGS.append(out.getvalue())


def rrc_box(rng, width: int, height: int) -> tuple[int, int, int, int]:
    """torchvision's RandomResizedCrop box: (left, top, w, h), scale (0.08, 1), ratio (3/4, 4/3),
    10 tries, then the centre crop of the image's own aspect clamped to the ratio range."""
    area = width * height
    for _ in range(10):
        target = area * rng.uniform(0.08, 1.0)
        aspect = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
        w, h = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1)), w, h
    ratio = width / height
    if ratio < 3 / 4:
        w, h = width, int(round(width / (3 / 4)))
    elif ratio > 4 / 3:
        w, h = int(round(height * (4 / 3))), height
    else:
        w, h = width, height
    return (width - w) // 2, (height - h) // 2, w, h


def pil_orig_decode(data, rng):
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def pil_paper(data, rng):
    from PIL import Image

    image = Image.open(io.BytesIO(data)).convert("RGB")
    w, h = image.size
    left, top = int(rng.integers(0, w - SIZE + 1)), int(rng.integers(0, h - SIZE + 1))
    image = image.crop((left, top, left + SIZE, top + SIZE))
    if rng.random() < 0.5:
        image = image.transpose(Image.FLIP_LEFT_RIGHT)
    return np.asarray(image)


def pil_random_resized(data, rng):
    from PIL import Image

    image = Image.open(io.BytesIO(data)).convert("RGB")
    left, top, w, h = rrc_box(rng, *image.size)
    image = image.resize((SIZE, SIZE), Image.BILINEAR, box=(left, top, left + w, top + h))
    if rng.random() < 0.5:
        image = image.transpose(Image.FLIP_LEFT_RIGHT)
    return np.asarray(image)


def cv2_orig_decode(data, rng):
    import cv2

    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)


def cv2_random_resized(data, rng):
    import cv2

    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    left, top, w, h = rrc_box(rng, image.shape[1], image.shape[0])
    out = cv2.resize(image[top:top + h, left:left + w], (SIZE, SIZE), interpolation=cv2.INTER_LINEAR)
    return out[:, ::-1] if rng.random() < 0.5 else out


CPU_ROWS = {
    "orig-decode": (pil_orig_decode, "orig"),
    "paper": (pil_paper, "prepared"),
    "random-resized": (pil_random_resized, "prepared"),
    "cv2-orig-decode": (cv2_orig_decode, "orig"),
    "cv2-random-resized": (cv2_random_resized, "prepared"),
}


def _worker(name: str, index: int, procs: int, repeat: int, start, queue) -> None:
    try:
        import cv2

        cv2.setNumThreads(1)
    except ImportError:
        pass
    fn, which = CPU_ROWS[name]
    jpegs = (ORIGINALS if which == "orig" else PREPARED_JPEGS)[index::procs]
    rng = np.random.default_rng(index)
    fn(jpegs[0], rng)  # imports and first-call costs outside the timing
    start.wait()
    began, cpu = time.perf_counter(), time.process_time()
    for _ in range(repeat):
        for data in jpegs:
            fn(data, rng)
    queue.put((len(jpegs) * repeat, time.perf_counter() - began, time.process_time() - cpu))


def cpu_row(name: str, procs: int, repeat: int) -> dict:
    """Images/s of `procs` forked workers together (all images / the slowest worker's time)."""
    context = mp.get_context("fork")
    start, queue = context.Barrier(procs + 1), context.Queue()
    workers = [context.Process(target=_worker, args=(name, i, procs, repeat, start, queue)) for i in range(procs)]
    for worker in workers:
        worker.start()
    start.wait()
    results = [queue.get(timeout=600) for _ in workers]
    for worker in workers:
        worker.join()
    images = sum(r[0] for r in results)
    wall = max(r[1] for r in results)
    cpu = sum(r[2] for r in results)
    return {"images_per_s": images / wall, "per_process": images / wall / procs, "images_per_cpu_s": images / cpu}


def gpu_rows(repeat: int) -> dict:
    """nvJPEG decode of the prepared JPEGs in batches of 256, and that plus random-resized crops
    and flips on the GPU; images/s with the GPU synchronised at the end."""
    import torch
    import torchvision
    from torchvision.io import decode_jpeg
    from torchvision.transforms.v2 import functional as F

    if not torch.cuda.is_available():
        return {"gpu": "no CUDA device"}
    device = torch.device("cuda")
    data = [torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in PREPARED_JPEGS]
    batches = [data[i:i + 256] for i in range(0, len(data), 256)]
    rng = np.random.default_rng(0)

    def decode_all():
        out = []
        for batch in batches:
            out += decode_jpeg(batch, device=device)
        return out

    def crop_all():
        out = []
        for batch in batches:
            for image in decode_jpeg(batch, device=device):
                left, top, w, h = rrc_box(rng, image.shape[2], image.shape[1])
                crop = F.resized_crop(image, top, left, h, w, [SIZE, SIZE], antialias=False)
                out.append(crop.flip(-1) if rng.random() < 0.5 else crop)
        return torch.stack(out)

    def crop_batched():
        # Images of one size at a time: every box resized at once by roi_align, one bilinear sample
        # per output pixel at its centre (a plain bilinear resize), the flips by one gather.
        from torchvision.ops import roi_align

        out = []
        for batch in batches:
            images = decode_jpeg(batch, device=device)
            shapes = {}
            for k, image in enumerate(images):
                shapes.setdefault(tuple(image.shape), []).append(k)
            for shape, members in shapes.items():
                stack = torch.stack([images[k] for k in members]).float()
                boxes = torch.tensor([[i, *(lambda l, t, w, h: (l, t, l + w, t + h))(*rrc_box(rng, shape[2], shape[1]))]
                                      for i in range(len(members))], dtype=torch.float32, device=device)
                crops = roi_align(stack, boxes, (SIZE, SIZE), spatial_scale=1.0, sampling_ratio=1, aligned=True)
                flip = torch.from_numpy(rng.random(len(members)) < 0.5).to(device)
                crops = torch.where(flip[:, None, None, None], crops.flip(-1), crops)
                out.append(crops.round_().clamp_(0, 255).to(torch.uint8))
        return torch.cat(out)

    rows = {"torch": torch.__version__, "torchvision": torchvision.__version__,
            "gpu_name": torch.cuda.get_device_name(0)}
    for name, fn in (("gpu-decode", decode_all), ("gpu-random-resized", crop_all),
                     ("gpu-random-resized-batched", crop_batched)):
        fn()
        torch.cuda.synchronize()
        began = time.perf_counter()
        for _ in range(repeat):
            fn()
        torch.cuda.synchronize()
        rows[name] = {"images_per_s": len(data) * repeat / (time.perf_counter() - began)}
    from torchvision.ops import roi_align  # the batched crop is the plain bilinear resize of its box

    image = decode_jpeg(data[0], device=device).float()
    box = (30, 20, 200, 180)  # left, top, width, height
    plain = F.resized_crop(image, box[1], box[0], box[3], box[2], [SIZE, SIZE], antialias=False)
    aligned = roi_align(image[None], torch.tensor([[0, box[0], box[1], box[0] + box[2], box[1] + box[3]]],
                                                   dtype=torch.float32, device=device), (SIZE, SIZE), 1.0, 1, True)[0]
    rows["batched_vs_resized_crop_max_abs_diff"] = float((plain - aligned).abs().max())
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--procs", default="1,2", help="comma-separated process counts")
    parser.add_argument("--repeat", type=int, default=2, help="passes over the images per measurement")
    parser.add_argument("--rows", default=",".join(CPU_ROWS), help="comma-separated rows to time")
    parser.add_argument("--gpu", action="store_true", help="also time nvJPEG on a CUDA GPU (torchvision)")
    parser.add_argument("--json", help="also write the result to this file")
    args = parser.parse_args()
    began = time.perf_counter()
    load(args.images)
    result = {"images": len(ORIGINALS), "cores": len(os.sched_getaffinity(0)), "load_s": time.perf_counter() - began,
              "prepared_size": list(map(int, _size(PREPARED_JPEGS[0]))), "rows": {}}
    try:
        import cv2  # noqa: F401
    except ImportError:
        result["cv2"] = "not installed"
    rows = [r for r in args.rows.split(",") if r and (r in CPU_ROWS) and not (r.startswith("cv2") and "cv2" in result)]
    for procs in (int(p) for p in args.procs.split(",")):
        for name in rows:
            result["rows"].setdefault(name, {})[str(procs)] = cpu_row(name, procs, args.repeat)
            print(name, procs, json.dumps(result["rows"][name][str(procs)]), file=sys.stderr, flush=True)
        for crop, base in (("paper", "orig-decode"), ("random-resized", "orig-decode"),
                           ("cv2-random-resized", "cv2-orig-decode")):
            if crop in result["rows"] and base in result["rows"]:
                result.setdefault("ratios", {}).setdefault(crop, {})[str(procs)] = round(
                    result["rows"][crop][str(procs)]["images_per_s"] / result["rows"][base][str(procs)]["images_per_s"],
                    3)
    if args.gpu:
        try:
            result["gpu"] = gpu_rows(args.repeat)
        except Exception as exc:  # report what failed rather than lose the CPU rows
            result["gpu"] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
    text = json.dumps(result, indent=1)
    print(text)
    if args.json:
        Path(args.json).write_text(text)


def _size(data: bytes) -> tuple[int, int]:
    from PIL import Image

    return Image.open(io.BytesIO(data)).size


if __name__ == "__main__":
    main()
