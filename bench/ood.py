"""Images of none of the model's classes: does the verdict flag them, and does it keep in-class
images sure? The bundled demo model (CIFAR-10) against an out-of-distribution set assembled from
what is at hand offline, with the softmax rule alone as the baseline in the same run.

In-class: the CIFAR-10 validation images the demo model never trained on (files NNNN >= 4500 of
../shared/datasets/cifar10/train), the second half of each class's (4750-4999): the first half
set the shipped calibration's threshold (`python -m alexnet_core calibrate demo --data ...`), so
these figures are on images that picked nothing.

Out of class, none of them a CIFAR-10 class (airplane, automobile, bird, cat, deer, dog, frog,
horse, ship, truck), each photo whole and in 4 random half-size crops:
  people    scikit-image's astronaut and camera(man), matplotlib's grace_hopper
  faces     the 100 faces of scikit-image's LFW subset (25x25 grey, cropped tight)
  scenes    scikit-learn's china (a temple) and flower; scikit-image's coffee, rocket, moon,
            hubble_deep_field, clock_motion, coins, motorcycle_left, retina, ihc, cell, page,
            text, logo, color
  textures  scikit-image's brick, grass, gravel, and 120 generated images (noise, gradients,
            checkerboards, stripes, flat colours, smooth colour blobs)
The photos need scikit-image and matplotlib's data files (`pip install scikit-image
matplotlib`; only their files are read, nothing of them is imported); a group whose files are
missing is left out and said.

For each group: the AUROC of the novelty score and of the softmax (1 - top probability) against
the in-class images, and the share flagged (not sure) by the softmax rule alone and by the whole
verdict; for the in-class images, the share still sure under each.

    python bench/ood.py [--data ../shared/datasets/cifar10/train] [--model demo] [--json]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

SKIMAGE_PHOTOS = {"people": ["astronaut", "camera"],
                  "scenes": ["coffee", "rocket", "moon", "hubble_deep_field", "clock_motion", "coins", "motorcycle_left",
                             "retina", "ihc", "cell", "page", "text", "logo", "color"],
                  "textures": ["brick", "grass", "gravel"]}


def package_folder(name: str) -> Path | None:
    """The folder of an installed package, found without importing it."""
    spec = importlib.util.find_spec(name)
    return Path(spec.origin).parent if spec and spec.origin else None


def crops(image: np.ndarray, rng, count: int = 4) -> list[np.ndarray]:
    """The image and `count` random half-size crops of it."""
    h, w = image.shape[:2]
    out = [image]
    for _ in range(count):
        y, x = rng.integers(0, h - h // 2 + 1), rng.integers(0, w - w // 2 + 1)
        out.append(image[y:y + h // 2, x:x + w // 2])
    return out


def generated(rng, count: int = 120, size: int = 64) -> list[np.ndarray]:
    yy, xx = np.mgrid[:size, :size]
    images = []
    for i in range(count):
        colour = lambda: rng.integers(0, 256, 3)  # noqa: E731
        kind = i % 6
        if kind == 0:
            im = rng.integers(0, 256, (size, size, 3))
        elif kind == 1:
            t = np.linspace(0, 1, size)[:, None, None] if rng.random() < 0.5 else np.linspace(0, 1, size)[None, :, None]
            im = np.broadcast_to(colour() * (1 - t) + colour() * t, (size, size, 3))
        elif kind == 2:
            s = rng.integers(2, 12)
            c = ((yy // s + xx // s) % 2)[..., None]
            im = c * colour() + (1 - c) * colour()
        elif kind == 3:
            f, angle = rng.uniform(0.1, 1.2), rng.uniform(0, np.pi)
            v = ((np.sin(f * (xx * np.cos(angle) + yy * np.sin(angle))) + 1) / 2)[..., None]
            im = v * colour() + (1 - v) * colour()
        elif kind == 4:
            im = np.broadcast_to(colour(), (size, size, 3))
        else:
            from PIL import Image

            small = rng.integers(0, 256, (6, 6, 3)).astype(np.uint8)
            im = np.asarray(Image.fromarray(small).resize((size, size), Image.BICUBIC))
        images.append(np.clip(np.asarray(im, np.float64), 0, 255).astype(np.uint8))
    return images


def ood_set(seed: int = 2026) -> tuple[dict[str, list[np.ndarray]], list[str]]:
    """{group: images} and what was left out for want of its files."""
    from alexnet_core.inputs.images import read_image

    rng = np.random.default_rng(seed)
    groups = {"people": [], "faces": [], "scenes": [], "textures": []}
    missing = []
    skimage = package_folder("skimage")
    if skimage and (skimage / "data").is_dir():
        for group, names in SKIMAGE_PHOTOS.items():
            for name in names:
                found = sorted((skimage / "data").glob(f"{name}.*"))
                if found:
                    groups[group] += crops(read_image(found[0]), rng)
                else:
                    missing.append(f"scikit-image's {name}")
        lfw = skimage / "data" / "lfw_subset.npy"
        if lfw.is_file():
            faces = np.load(lfw, allow_pickle=False)[:100]  # the first 100 are faces, the rest are not
            groups["faces"] += [np.repeat(np.clip(f * 255, 0, 255).astype(np.uint8)[..., None], 3, axis=-1)
                                 for f in faces]
    else:
        missing.append("scikit-image's data images (pip install scikit-image)")
    matplotlib = package_folder("matplotlib")
    hopper = matplotlib / "mpl-data" / "sample_data" / "grace_hopper.jpg" if matplotlib else None
    if hopper and hopper.is_file():
        groups["people"] += crops(read_image(hopper), rng)
    else:
        missing.append("matplotlib's grace_hopper.jpg (pip install matplotlib)")
    sklearn = package_folder("sklearn")
    for name in ("china.jpg", "flower.jpg"):
        path = sklearn / "datasets" / "images" / name if sklearn else None
        if path and path.is_file():
            groups["scenes"] += crops(read_image(path), rng)
        else:
            missing.append(f"scikit-learn's {name}")
    groups["textures"] += generated(rng)
    return {g: images for g, images in groups.items() if images}, missing


def run(args) -> dict:
    from sklearn.metrics import roc_auc_score

    from alexnet_core.inputs.data import load_source
    from alexnet_core.predict import novelty
    from alexnet_core.predict.inference import Predictor, load_model, verdict

    loaded = load_model(args.model)
    predictor = Predictor(loaded)
    calibration, why = predictor.calibration()
    if calibration is None:
        raise SystemExit(f"{args.model} is not calibrated ({why}); {novelty.HOW_TO}")
    source = load_source(args.data)
    split, positions = novelty.plan(source)["held_out"]

    def judged(images) -> dict:
        probs, verdicts = [], []
        for i in range(0, len(images), 256):
            p, v = predictor.judge(images[i:i + 256])
            probs.append(p)
            verdicts += v
        probs = np.concatenate(probs)
        return {"score": np.array([v["novelty"] for v in verdicts]), "softmax": 1 - probs.max(axis=1),
                "softmax_sure": np.array([verdict(p)["sure"] for p in probs]),  # the softmax rule alone
                "sure": np.array([v["sure"] for v in verdicts])}

    tally = {}
    held = [image for batch in novelty.images_of(split, positions, tally) for image in batch]
    inside = judged(held)
    groups, missing = ood_set()
    doc = {"model": args.model, "calibration": str(calibration.path), "keep": calibration.keep,
           "threshold": calibration.threshold, "in_class": {"n": len(held), "data": f"{args.data} (held out)",
                                                           "sure_softmax_only": float(inside["softmax_sure"].mean()),
                                                           "sure": float(inside["sure"].mean())},
           "groups": {}, "left_out": missing}
    every = {k: [] for k in inside}
    for group, images in groups.items():
        out = judged(images)
        for k in every:
            every[k].append(out[k])
        doc["groups"][group] = summary(out, inside, roc_auc_score)
    doc["groups"]["all"] = summary({k: np.concatenate(v) for k, v in every.items()}, inside, roc_auc_score)
    return doc


def summary(out: dict, inside: dict, auroc) -> dict:
    labels = np.r_[np.zeros(len(inside["score"])), np.ones(len(out["score"]))]
    return {"n": len(out["score"]),
            "auroc_novelty": float(auroc(labels, np.r_[inside["score"], out["score"]])),
            "auroc_softmax": float(auroc(labels, np.r_[inside["softmax"], out["softmax"]])),
            "flagged_softmax_only": float(1 - out["softmax_sure"].mean()),
            "flagged": float(1 - out["sure"].mean())}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(Path(__file__).resolve().parent.parent.parent / "shared" / "datasets"
                                              / "cifar10" / "train"))
    parser.add_argument("--model", default="demo")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    doc = run(args)
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    inside = doc["in_class"]
    print(f"{args.model}: calibration keeps {doc['keep']:.0%} (threshold {doc['threshold']:.2f})")
    print(f"in class, {inside['n']} held-out images: sure {inside['sure']:.1%} "
          f"(softmax rule alone {inside['sure_softmax_only']:.1%})")
    print(f"{'group':10s} {'n':>5s} {'AUROC novelty':>14s} {'AUROC softmax':>14s} {'flagged':>8s} {'softmax only':>13s}")
    for group, row in doc["groups"].items():
        print(f"{group:10s} {row['n']:5d} {row['auroc_novelty']:14.3f} {row['auroc_softmax']:14.3f} "
              f"{row['flagged']:8.1%} {row['flagged_softmax_only']:13.1%}")
    if doc["left_out"]:
        print("left out (files not found): " + "; ".join(doc["left_out"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
