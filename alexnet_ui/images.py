"""Pictures as a page shows them: shrunk to a size a page can hold, padded so a strip cannot
stretch it, a small network input enlarged so its pixels can be seen, or two pictures side by
side (a photo and where the network looked). Pure functions of
pixels (uint8 RGB arrays); files are read only through loaders.image_from_disk."""

from __future__ import annotations

# Imports inside functions are deliberate: Pillow loads on first use, so importing this module
# (the app's pages, the command line) stays light.
import numpy as np


def thumbnail(image, max_side: int = 768):
    """`image` shrunk to at most `max_side` pixels a side (what the page shows and overlays on)."""
    from PIL import Image

    picture = Image.fromarray(image)
    picture.thumbnail((max_side, max_side))
    return np.asarray(picture)


def fit_for_display(image, max_side: int = 768, max_ratio: float = 2.0):
    """An image to show: at most `max_side` pixels a side, and padded (white) to at most
    `max_ratio` tall, so a 20x900 strip cannot stretch the page."""
    from PIL import Image

    picture = Image.fromarray(thumbnail(image, max_side))
    w, h = picture.size
    if h > max_ratio * w:
        canvas = Image.new("RGB", (int(np.ceil(h / max_ratio)), h), (255, 255, 255))
        canvas.paste(picture, ((canvas.width - w) // 2, 0))
        picture = canvas
    return np.asarray(picture)


def enlarged(view: np.ndarray, side: int = 224) -> np.ndarray:
    """The network's input made big enough to see, each pixel a block (nearest neighbour)."""
    from PIL import Image

    scale = max(1, side // view.shape[0])
    return np.asarray(Image.fromarray(view).resize((view.shape[1] * scale, view.shape[0] * scale),
                                                   Image.Resampling.NEAREST))


def side_by_side(left: np.ndarray, right: np.ndarray, min_height: int = 160, gap: int = 6) -> np.ndarray:
    """Two pictures of the same size in one, left and right with a white gap (a photo and its
    Grad-CAM overlay), a small one enlarged pixel by pixel to at least `min_height` so both can
    be seen."""
    scale = max(1, -(-min_height // left.shape[0]))
    if scale > 1:
        left, right = (np.repeat(np.repeat(a, scale, axis=0), scale, axis=1) for a in (left, right))
    white = np.full((left.shape[0], gap, 3), 255, np.uint8)
    return np.concatenate([left, white, right], axis=1)
