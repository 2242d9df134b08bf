"""Small image folders written by the tests themselves (tests never need ../shared)."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

COLORS = [(220, 40, 40), (40, 200, 40), (40, 40, 220), (220, 220, 40)]


def make_image_folder(root, classes=3, per_class=12, size=(20, 24), fmt="png", seed=0):
    """root/<class>/<nnn>.<fmt>: noisy images of one colour per class (learnable in a few steps)."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    for c in range(classes):
        folder = root / f"class{c}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = np.clip(rng.normal(COLORS[c % len(COLORS)], 30, (size[0], size[1], 3)), 0, 255)
            Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{i:03d}.{fmt}")
    return root


def wait_for(predicate, timeout=180, what="condition"):
    """The first true value of `predicate()`, polled every 0.2 s; AssertionError after `timeout` s."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


WNIDS = {"n01440764": "tench, Tinca tinca", "n01443537": "goldfish, Carassius auratus",
         "n01484850": "great white shark, white shark"}


def make_ilsvrc_folder(root, train=6, val=2, size=(30, 40)):
    """root/{train,val}/<wnid>/*.JPEG and LOC_synset_mapping.txt, as ILSVRC is laid out."""
    root = Path(root)
    for split, n in (("train", train), ("val", val)):
        for c, wnid in enumerate(WNIDS):
            folder = root / split / wnid
            folder.mkdir(parents=True, exist_ok=True)
            rng = np.random.default_rng(c)
            for i in range(n):
                pixels = np.clip(rng.normal(COLORS[c], 30, (size[0], size[1], 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{wnid}_{i}.JPEG", format="JPEG")
    lines = [f"{wnid} {words}" for wnid, words in WNIDS.items()] + ["n99999999 not a class here", "garbage"]
    (root / "LOC_synset_mapping.txt").write_text("\n".join(lines) + "\n")
    return root


def with_keras_alone(model_path, expression):
    """JSON value of `expression` (over `m`, the model, and `np`) in a fresh Python that loads the
    model with Keras alone: nothing of this project is imported, so a project layer would fail."""
    code = ("import sys, json, keras, numpy as np; m = keras.models.load_model(sys.argv[1], safe_mode=True, "
            f"compile=False); assert 'alexnet_core' not in sys.modules; print(json.dumps({expression}))")
    path = Path(model_path).resolve()
    result = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120,
                            cwd=path.parent)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


# The smallest network the training tests use: compact at a quarter width on 16-px images.
TINY = {"variant": "compact", "batch_size": 8, "input_size": 16, "switches": {"width": 0.25}}
TINY_ARGS = ["--variant", "compact", "--width", "0.25", "--input-size", "16", "--batch-size", "8"]


def cli(*args, env=None, timeout=300):
    """`python -m alexnet_core ARGS` in a fresh process, its output captured."""
    return subprocess.run([sys.executable, "-m", "alexnet_core", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})
