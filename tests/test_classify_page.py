"""Classify shows nothing stale: the Grad-CAM class follows the verdict of the framing picked, and a
large photo is captioned with its own size, not the reduced size it is decoded at."""

import io
from pathlib import Path

import numpy as np
from PIL import Image
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parent.parent


def classify_page():
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.switch_page("pages/classify.py")
    at.run()
    assert not at.exception, at.exception
    return at


def cam_pickers(at):
    return [box for box in at.selectbox if box.key.startswith("classify_cam_")]


def cam_captions(at):
    return [img.caption for element in at.get("image") for img in element.proto.imgs
            if img.caption.startswith("Where it looked for")]


def jpeg(width, height, orientation=None):
    """A smooth photo-like JPEG (small in bytes at any size), with an EXIF orientation if given."""
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :, None]
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None, None]
    pixels = np.concatenate([np.broadcast_to(x, (height, width, 1)), np.broadcast_to(y, (height, width, 1)),
                             np.full((height, width, 1), 90, np.float32)], axis=2).astype(np.uint8)
    out = io.BytesIO()
    exif = Image.Exif()
    if orientation:
        exif[0x0112] = orientation
    Image.fromarray(pixels).save(out, "JPEG", quality=70, exif=exif.tobytes())
    return out.getvalue()


def wide_example() -> bytes:
    from alexnet_core.locations import ASSETS

    example = sorted((ASSETS / "examples").glob("*.jpg"))[0]
    out = io.BytesIO()
    Image.open(example).convert("RGB").resize((120, 32)).save(out, "PNG")
    return out.getvalue()


def test_the_grad_cam_class_follows_the_verdict_when_the_framing_changes():
    at = classify_page()
    at.get("file_uploader")[0].set_value([("wide.png", wide_example(), "image/png")])
    at.run()
    (picker,) = cam_pickers(at)
    assert picker.value == picker.options[0]  # the verdict's class
    picked = picker.options[3]  # the user asks where it looked for another class
    picker.select(picked).run()
    assert cam_pickers(at)[0].value == picked and picked in cam_captions(at)[0]
    at.segmented_control(key="classify_framing").set_value("fit").run()
    assert not at.exception
    (picker,) = cam_pickers(at)
    verdict = next(m.value for m in at.markdown if "**" in m.value and "%" in m.value)
    # The picker starts again on the new framing's verdict: its first class, named in the verdict line.
    assert picker.value == picker.options[0]
    top_words = picker.options[0]
    assert top_words in verdict, (top_words, verdict)
    assert f"Where it looked for '{top_words}'" in cam_captions(at)[0]


def test_a_large_photo_is_captioned_with_its_own_size():
    at = classify_page()
    at.get("file_uploader")[0].set_value([("big.jpg", jpeg(4240, 2832), "image/jpeg"),
                                          ("turned.jpg", jpeg(3000, 2100, orientation=6), "image/jpeg")])
    at.run()
    assert not at.exception and not at.error
    captions = [img.caption.replace("\\", "") for element in at.get("image") for img in element.proto.imgs]
    assert "big.jpg (4240×2832)" in captions, captions
    assert "turned.jpg (2100×3000)" in captions, captions  # upright, as the phone shows it
