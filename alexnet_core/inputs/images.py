"""Safe image decoding: every image the app or the command line reads from a user or from disk
becomes pixels here, and nowhere else.

Pillow decodes, with the decompression-bomb guard on, limits on a file's bytes and an image's
pixels, EXIF orientation applied and the first frame only; only regular files are read. Used by
Classify, predict, the datasets built in the app and every page that shows an image from disk.
No TensorFlow.
"""

from __future__ import annotations

import io
import os
import stat
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from alexnet_core.errors import AlexNetError

ACCEPTED_FORMATS = {"JPEG", "MPO", "PNG", "WEBP", "BMP", "GIF", "TIFF"}


def env_limit(name: str, default: int) -> int:
    """A limit from the environment variable `name` (at least 1), else `default`."""
    try:
        return max(1, int(os.environ.get(name, default)))
    except ValueError:
        return default


# Limits on what one image may cost (set the environment variables to change them).
MAX_PIXELS = env_limit("ALEXNET_MAX_IMAGE_PIXELS", 50_000_000)  # a 48-megapixel phone photo fits
MAX_IMAGE_BYTES = env_limit("ALEXNET_MAX_IMAGE_BYTES", 64 * 2**20)
# Larger images are decoded at reduced size (JPEG: in the decoder, others: Image.reduce) to a
# longest side of at least REDUCED_SIDE; smaller ones are decoded whole, pixel for pixel as
# training and evaluation decode them.
REDUCE_ABOVE = 2048
REDUCED_SIDE = 1024
# What one batch of uploads may hold on the Classify page.
MAX_UPLOAD_FILES = env_limit("ALEXNET_MAX_UPLOAD_FILES", 20)
MAX_UPLOAD_BYTES = env_limit("ALEXNET_MAX_UPLOAD_BYTES", 200 * 2**20)
UPLOAD_TYPES = ["jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff"]


class ImageDecodeError(AlexNetError, ValueError):
    """An image that cannot be classified; the message says what is wrong with it."""


def _to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode -> 8-bit RGB; transparency is composited onto white."""
    mode = image.mode
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        a = np.asarray(image, dtype=np.float64)
        top = 65535.0 if mode.startswith("I;16") or a.max() > 255 else 255.0
        return Image.fromarray(np.clip(a / top * 255.0, 0, 255).astype(np.uint8), "L").convert("RGB")
    if mode == "F":
        a = np.asarray(image, dtype=np.float64)
        a = a * 255.0 if a.size and np.nanmax(a) <= 1.0 else a
        return Image.fromarray(np.clip(np.nan_to_num(a), 0, 255).astype(np.uint8), "L").convert("RGB")
    return image.convert("RGB")


def _reduce(image: Image.Image) -> Image.Image:
    """Decode a large image at reduced size: JPEG through the decoder's DCT scaling (draft), the
    rest loaded whole and box-reduced. Images with sides up to REDUCE_ABOVE are left alone."""
    side = max(image.size)
    if side <= REDUCE_ABOVE:
        return image
    scale = REDUCED_SIDE / side
    if image.format in ("JPEG", "MPO"):
        image.draft("RGB", (max(1, int(image.width * scale) + 1), max(1, int(image.height * scale) + 1)))
    image.load()
    factor = max(image.size) // REDUCED_SIDE
    return image.reduce(factor) if factor > 1 else image


def decode_image(data: bytes, name: str = "image", shorter_at_least: int | None = None) -> np.ndarray:
    """Bytes of an uploaded or read file -> HxWx3 uint8 RGB (EXIF orientation applied); images
    over REDUCE_ABOVE pixels a side come back reduced to about REDUCED_SIDE. With
    `shorter_at_least` (for a caller that shrinks the image anyway), a JPEG is decoded at the
    smallest scale of the decoder (1/2, 1/4, 1/8) that keeps its shorter side at least that."""
    if not data:
        raise ImageDecodeError(f"{name}: the file is empty (0 bytes)")
    head = data[:256].lstrip().lower()
    if head.startswith(b"<svg") or (head.startswith(b"<?xml") and b"<svg" in data[:2048].lower()):
        raise ImageDecodeError(f"{name}: SVG drawings are not supported; export it as PNG or JPEG")
    too_big = (f"{name}: refused: more than the {MAX_PIXELS / 1e6:.0f}-megapixel limit for one image (a "
               "possible decompression bomb). Downscale it first, or raise ALEXNET_MAX_IMAGE_PIXELS.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            if image.format not in ACCEPTED_FORMATS:
                raise ImageDecodeError(f"{name}: {image.format} images are not supported; use JPEG, PNG, "
                                       "WebP, BMP, GIF or TIFF")
            if image.width == 0 or image.height == 0:
                raise ImageDecodeError(f"{name}: the image has no pixels ({image.width}x{image.height})")
            if image.width * image.height > MAX_PIXELS:
                raise ImageDecodeError(f"{name}: {image.width}x{image.height} pixels is "
                                       f"{image.width * image.height / 1e6:.0f} megapixels, over the "
                                       f"{MAX_PIXELS / 1e6:.0f}-megapixel limit for one image. Downscale it first, "
                                       "or raise ALEXNET_MAX_IMAGE_PIXELS.")
            image.seek(0)  # GIF/TIFF: the first frame
            if shorter_at_least and image.format in ("JPEG", "MPO"):
                image.draft("RGB", (shorter_at_least, shorter_at_least))
            image = _reduce(image)
            image.load()
            image = ImageOps.exif_transpose(image)
            return np.asarray(_to_rgb(image), dtype=np.uint8)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageDecodeError(too_big) from exc
    except UnidentifiedImageError as exc:
        raise ImageDecodeError(f"{name}: not an image (the contents are not JPEG, PNG, WebP, BMP, GIF or "
                               "TIFF, whatever the file name says)") from exc
    except ImageDecodeError:
        raise
    except MemoryError as exc:
        raise ImageDecodeError(too_big) from exc
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise ImageDecodeError(f"{name}: the image is damaged or truncated ({exc})") from exc


def read_image(path: str | os.PathLike) -> np.ndarray:
    """An image file -> decode_image. Only regular files are read (never a FIFO, a device or a
    folder, which could block or never end), and at most MAX_IMAGE_BYTES of them. A record path
    of a prepared dataset ("<shard>.tfrecord#<index>", inputs/prepared.py) reads that record's
    image, so every page that shows an image by its path shows those too."""

    from alexnet_core.inputs import prepared

    if prepared.is_record_path(path) and not os.path.lexists(path):
        try:
            data = prepared.read_record(path)[0]
        except AlexNetError as exc:
            raise ImageDecodeError(str(exc)) from None
        if len(data) > MAX_IMAGE_BYTES:
            raise ImageDecodeError(f"{path}: over the {MAX_IMAGE_BYTES / 2**20:.0f} MiB limit for one image file")
        return decode_image(data, str(path))
    path = Path(path)
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            kind = "a folder" if stat.S_ISDIR(info.st_mode) else "not a regular file (a pipe, device or socket)"
            raise ImageDecodeError(f"{path}: {kind}; give an image file")
        if info.st_size > MAX_IMAGE_BYTES:
            raise ImageDecodeError(f"{path}: {info.st_size / 2**20:.0f} MiB is over the "
                                   f"{MAX_IMAGE_BYTES / 2**20:.0f} MiB limit for one image file")
        with open(path, "rb") as fh:
            data = fh.read(MAX_IMAGE_BYTES + 1)
    except (OSError, ValueError) as exc:  # ValueError: a name with a NUL byte
        raise ImageDecodeError(f"{path}: cannot read the file ({getattr(exc, 'strerror', None) or exc})") from exc
    if len(data) > MAX_IMAGE_BYTES:
        raise ImageDecodeError(f"{path}: over the {MAX_IMAGE_BYTES / 2**20:.0f} MiB limit for one image file")
    return decode_image(data, str(path))


def photo_size(data: bytes, decoded: tuple[int, int]) -> tuple[int, int]:
    """(width, height) of the photo as taken, upright: a large one is decoded reduced (`_reduce`),
    so its own size is read from its header, turned as its EXIF orientation turns it. Called once
    `decode_image` has accepted the bytes; `decoded` (the decoded pixels' size) if the header
    cannot say."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            turned = image.getexif().get(0x0112) in (5, 6, 7, 8)  # EXIF orientation: a quarter turn
    except Exception:  # noqa: BLE001 - the pixels are decoded already; their size is the fallback
        return decoded
    size = (height, width) if turned else (width, height)
    # The header must describe these pixels: the same shape, at most the decoder's reduction apart.
    return size if size[0] >= decoded[0] and size[1] >= decoded[1] else decoded
