"""Synthetic image folders for the benchmarks (written once, reused while their count matches)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_jpegs(root: Path, count: int, classes: int, width: int, height: int) -> Path:
    """`count` photo-like JPEGs (smooth colour fields plus grain, quality 90) in `classes` folders."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(count):
        folder = root / f"class_{i % classes:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        coarse = Image.fromarray(rng.integers(0, 256, (height // 32 + 2, width // 32 + 2, 3), dtype=np.uint8))
        smooth = np.asarray(coarse.resize((width, height), Image.BICUBIC), dtype=np.float32)
        grain = rng.normal(0, 8, smooth.shape).astype(np.float32)
        Image.fromarray(np.clip(smooth + grain, 0, 255).astype(np.uint8)).save(folder / f"{i:06d}.jpg", quality=90)
    return root


def jpeg_folder(root: Path, count: int, classes: int, width: int = 500, height: int = 375) -> Path:
    """write_jpegs into `root` unless it already holds `count` of them (a marker file says so)."""
    marker = root / f".complete-{count}-{classes}-{width}x{height}"
    if not marker.exists():
        write_jpegs(root, count, classes, width, height)
        marker.touch()
    return root


