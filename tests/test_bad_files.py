"""One bad file never takes a page down: every image a page reads from disk goes through the safe
decoder, and a file that does not decode is named as damaged while the rest of the page renders.
And the Your classes page accounts for every photo given to it: added, or skipped with a reason."""

import io
import shutil
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image

from alexnet_core.inputs import datasets
from tests.test_hostile import no_leak
from tests.test_pages import run_page


def jpeg(color=(200, 30, 30), size=(40, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def png(color=(200, 30, 30), size=(40, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, "PNG")
    return buffer.getvalue()


def huge_png(width=100_000, height=100_000) -> bytes:
    """A tiny file whose header claims 10 gigapixels (a decompression bomb's shape)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 100)) + chunk(b"IEND", b""))


# One bad file of each kind a page can meet: {file name: contents}.
BAD = {
    "notes.jpg": b"just some text, whatever the name says",
    "truncated.jpg": jpeg((10, 200, 10), (64, 64))[:300],
    "empty.jpg": b"",
    "bomb.png": huge_png(),
}


def plant(folder: Path, names=tuple(BAD)) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(BAD[name])


def texts(at) -> str:
    """Every text on the page, unescaped (names are shown escaped for Markdown)."""
    kinds = ("markdown", "caption", "warning", "error", "info", "success")
    return "\n".join(e.value.replace("\\", "") for kind in kinds for e in at.get(kind))


def image_count(at) -> int:
    return sum(len(element.proto.imgs) for element in at.get("image"))


# --- Your classes -------------------------------------------------------------------------------


def make_dataset(tmp_path, per_class=3) -> Path:
    path = datasets.create_dataset("pets", tmp_path / "data")
    for n, name in enumerate(["cats", "dogs"]):
        datasets.add_class(path, name)
        for i in range(per_class):
            datasets.add_image(path, name, png((40 * i, 100 * n, 90)), f"{name}{i}.png")
    return path


def test_your_classes_names_each_damaged_file_and_removes_just_that_one(tmp_path):
    path = make_dataset(tmp_path)
    plant(path / "cats")
    at = run_page("pages/dataset.py")
    no_leak(at)
    page = texts(at)
    for name in BAD:
        assert name in page, name
    assert "notes.jpg: not an image" in page
    assert "empty.jpg: the file is empty" in page
    assert "truncated.jpg: the image is damaged or truncated" in page
    assert "bomb.png: refused: more than the 50-megapixel limit" in page
    assert "**cats**: 3 images, 4 damaged files" in "\n".join(m.value for m in at.markdown)
    assert image_count(at) == 6  # the good ones: 3 cats, 3 dogs
    assert not any("Every class needs" in i.value for i in at.info)  # 3 good images a class: ready to train

    at.button(key="dataset_rm_file_pets/cats/notes.jpg").click().run()
    no_leak(at)
    assert not (path / "cats" / "notes.jpg").exists()
    assert all((path / "cats" / name).exists() for name in BAD if name != "notes.jpg")
    page = texts(at)
    assert "cats: removed notes.jpg" in page
    assert "notes.jpg: not an image" not in page and "truncated.jpg" in page
    assert "**cats**: 3 images, 3 damaged files" in "\n".join(m.value for m in at.markdown)


def test_your_classes_does_not_count_damaged_files_towards_training(tmp_path):
    path = make_dataset(tmp_path, per_class=1)
    datasets.add_image(path, "dogs", png((1, 2, 3)), "more.png")
    plant(path / "cats", ["notes.jpg", "truncated.jpg"])  # 3 files, 1 image
    at = run_page("pages/dataset.py")
    no_leak(at)
    assert any("Every class needs at least 2 images" in i.value and "cats" in i.value for i in at.info)


def upload(at, class_name, files):
    uploader = next(u for u in at.get("file_uploader") if u.label == f"Add images of {class_name}")
    uploader.set_value(files)
    at.run()
    no_leak(at)
    return texts(at)


def test_a_big_upload_says_how_many_were_added_and_skipped_and_why(tmp_path):
    path = make_dataset(tmp_path, per_class=0)
    at = run_page("pages/dataset.py")
    files = [(f"p{i:02d}.png", png((8 * i, 0, 0)), "image/png") for i in range(30)]
    page = upload(at, "cats", files)
    assert len(datasets.classes(path)["cats"]) == 20
    assert "cats: added 20 images. Skipped 10 of 30, for the reasons below." in page
    assert "10 over the limit of 20 images per upload, not saved: p20.png, p21.png" in page

    page = upload(at, "cats", [("again.png", png((0, 0, 0)), "image/png"),
                               ("junk.jpg", b"not a picture", "image/jpeg"),
                               ("new.png", png((0, 0, 200)), "image/png"),
                               ("new copy.png", png((0, 0, 200)), "image/png")])
    assert len(datasets.classes(path)["cats"]) == 21
    assert "cats: added 1 image. Skipped 3 of 4, for the reasons below." in page
    assert "again.png (already in cats as" in page
    assert "new copy.png (the same picture as new.png in this upload)" in page
    assert "junk.jpg: not an image" in page


def test_a_photo_already_there_is_named_with_the_reason(tmp_path):
    make_dataset(tmp_path, per_class=1)
    at = run_page("pages/dataset.py")
    page = upload(at, "cats", [("same.png", png((0, 0, 90)), "image/png")])  # cats0.png's pixels
    assert "cats: added 0 images. Skipped 1 of 1, for the reason below." in page
    assert "1 already there (the same picture is kept once): same.png (already in cats as" in page


def test_an_upload_to_a_class_removed_on_disk_is_reported_and_kept(tmp_path):
    path = make_dataset(tmp_path, per_class=2)
    at = run_page("pages/dataset.py")
    shutil.rmtree(path / "cats")  # removed outside the page while it is open
    page = upload(at, "cats", [("tabby.png", png((9, 9, 9)), "image/png"),
                               ("kitten.png", png((19, 9, 9)), "image/png")])
    assert "class cats no longer exists on disk" in page
    assert "Not saved: tabby.png, kitten.png" in page
    assert "2 photos for cats, a class removed on disk, kept here until you leave" in page
    at.button(key="dataset_orphans_keep").click().run()
    no_leak(at)
    assert len(datasets.classes(path)["cats"]) == 2
    assert "cats: added 2 images." in texts(at)


def test_add_images_accounts_for_every_item(tmp_path):
    path = make_dataset(tmp_path, per_class=0)
    items = [("a.png", png((1, 1, 1))), ("b.jpg", b"text"), ("c.png", png((1, 1, 1))), ("d.png", png((2, 2, 2)))]
    result = datasets.add_images(path, "cats", items, limit=3)
    assert result.added == ["a.png"]
    assert [(name, why) for name, why, _ in result.skipped] == [
        ("b.jpg", datasets.SKIP_UNREADABLE), ("c.png", datasets.SKIP_DUPLICATE), ("d.png", datasets.SKIP_LIMIT)]
    shutil.rmtree(path / "dogs")
    gone = datasets.add_images(path, "dogs", [("x.png", png((3, 3, 3)))])
    assert gone.class_gone and not gone.added
    assert gone.lines()[-1][0] == "error" and "class dogs no longer exists on disk" in gone.lines()[-1][1]


@pytest.mark.parametrize("name", list(BAD))
def test_image_problem_names_the_file_without_its_folder(tmp_path, name):
    plant(tmp_path, [name])
    problem = datasets.image_problem(tmp_path / name)
    assert problem.startswith(f"{name}: ") and str(tmp_path) not in problem


# --- Classify: the example images and the sample's nearest neighbours --------------------------


@pytest.fixture
def own_assets(tmp_path, monkeypatch):
    """Example images and a sample of our own (a copy of a few of the bundled ones), so bad files
    can be planted without touching the app's assets."""
    from alexnet_core import locations

    examples = tmp_path / "assets" / "examples"
    examples.mkdir(parents=True)
    shutil.copy(locations.EXAMPLES_DIR / "cat.jpg", examples / "cat.jpg")
    sample = tmp_path / "assets" / "sample"
    for split in ("train", "val"):
        for name in ("cat", "dog"):
            folder = sample / split / name
            folder.mkdir(parents=True)
            for f in sorted((locations.SAMPLE_DIR / split / name).glob("*.jpg"))[:4]:
                shutil.copy(f, folder / f.name)
    monkeypatch.setattr(locations, "EXAMPLES_DIR", examples)
    monkeypatch.setattr(locations, "SAMPLE_DIR", sample)
    return examples, sample


def test_classify_names_damaged_example_and_sample_images(own_assets):
    examples, sample = own_assets
    for name, content in BAD.items():
        (examples / name.replace(".png", ".jpg")).write_bytes(content)  # bomb.jpg: a PNG header named .jpg
    (examples / "folder.jpg").mkdir()  # not a file at all
    plant(sample / "val" / "cat", ["truncated.jpg", "bomb.png"])  # image signatures: the data loader keeps them
    at = run_page("pages/classify.py")
    no_leak(at)
    warnings = "\n".join(w.value.replace("\\", "") for w in at.warning)
    for name in ("notes.jpg: not an image", "truncated.jpg: the image is damaged", "empty.jpg: the file is empty",
                 "bomb.jpg: refused", "folder.jpg"):
        assert f"Damaged example image, left out: {name}" in warnings, name
    assert len(at.get("plotly_chart")) == 1  # the good example is classified

    at.segmented_control(key="classify_explain").set_value("neighbours").run()
    no_leak(at)
    captions = "\n".join(c.value.replace("\\", "") for c in at.caption)
    assert "Damaged sample image, left out: cat/truncated.jpg: the image is damaged" in captions
    assert "Damaged sample image, left out: cat/bomb.png: refused" in captions
    assert sum(c.startswith(("cat (", "dog (")) for c in (i.caption for e in at.get("image") for i in e.proto.imgs)) == 8

    victim = sorted((sample / "val" / "dog").glob("*.jpg"))[0]
    victim.write_bytes(victim.read_bytes()[:300])  # damaged after its features were read: its tile says so
    at.run()
    no_leak(at)
    captions = "\n".join(c.value.replace("\\", "") for c in at.caption)
    assert f"Damaged file, not shown: dog/{victim.name}: the image is damaged or truncated" in captions


# --- Evaluate: the images behind a cell, the mistakes and the map's pick ------------------------


def test_evaluate_names_images_damaged_since_they_were_evaluated(tmp_path):
    from alexnet_core.locations import SAMPLE_DIR

    folder = tmp_path / "eval"
    for name in ("cat", "dog"):
        (folder / name).mkdir(parents=True)
        for f in sorted((SAMPLE_DIR / "val" / name).glob("*.jpg"))[:6]:
            shutil.copy(f, folder / name / f.name)
    plant(folder / "cat")  # never decodable: the evaluation leaves them out
    at = run_page("pages/evaluate.py")
    at.selectbox(key="eval_data").set_value("folder")
    at.selectbox(key="eval_split").set_value("all").run()
    at.text_input(key="eval_folder").input(str(folder)).run()
    no_leak(at)
    assert next(m.value for m in at.metric if m.label == "Images") == "12"
    mistakes = [i.caption for e in at.get("image") for i in e.proto.imgs if "→" in i.caption]
    assert mistakes, "the bundled model makes no mistake on these images: pick others"

    # Damage every evaluated file on disk, each in its own way: the evaluation (remembered) still
    # points at them, and each tile names its file instead of taking the page down.
    kinds = [BAD["notes.jpg"], BAD["truncated.jpg"], BAD["empty.jpg"], BAD["bomb.png"]]
    evaluated = sorted(p for name in ("cat", "dog") for p in (folder / name).glob("*.jpg") if p.name[0].isdigit())
    for n, f in enumerate(evaluated):
        f.write_bytes(kinds[n % len(kinds)])
    at.run()
    no_leak(at)
    captions = "\n".join(c.value.replace("\\", "") for c in at.caption)
    notes = [c for c in captions.splitlines() if c.startswith(":material/broken_image: Damaged file, not shown: ")]
    assert len(notes) == len(mistakes), captions
    assert all(any(f"{f.parent.name}/{f.name}: " in note for f in evaluated) for note in notes)
    assert any(": the file is empty" in note for note in notes) or any(": not an image" in note for note in notes)


# --- The other pages: they read no image from disk, and bad files anywhere cannot reach them -----


@pytest.mark.parametrize("page", ["pages/home.py", "pages/architecture.py", "pages/train.py", "pages/runs.py"])
def test_pages_without_images_render_with_bad_files_everywhere(tmp_path, own_assets, page):
    examples, sample = own_assets
    path = make_dataset(tmp_path, per_class=2)
    for folder in (path / "cats", examples, sample / "val" / "cat", sample / "train" / "dog"):
        plant(folder)
    at = run_page(page)
    no_leak(at)
    if page == "pages/train.py":
        # The training data picked: a folder with bad files is described, not fatal.
        at.radio(key="train_data_kind").set_value(str(path)).run()
        no_leak(at)
        assert any("unreadable files will be skipped" in c.value for c in at.caption)


def test_pages_open_no_image_file_but_through_the_safe_decoder():
    """Images from disk reach a page only through inputs.images.read_image (alexnet_ui.loaders.image_from_disk
    and image_problem): no page script or page module opens an image file itself or hands st.image a path."""
    import re

    root = Path(__file__).resolve().parent.parent
    for script in sorted([*(root / "pages").glob("*.py"), *(root / "alexnet_ui").glob("*.py")]):
        source = script.read_text()
        assert "Image.open(" not in source, script.name
        assert not re.search(r"\.image\(\s*(\[\s*)?str\(", source), script.name
        assert not re.search(r"\.image\(\s*[\w.]*(path|file)", source), script.name


def test_many_damaged_files_are_counted_and_removed_at_once(tmp_path):
    path = make_dataset(tmp_path)
    for i in range(12):
        (path / "dogs" / f"junk{i:02d}.jpg").write_bytes(BAD["notes.jpg"])
    at = run_page("pages/dataset.py")
    no_leak(at)
    page = texts(at)
    assert "**dogs**: 3 images, 12 damaged files" in page
    assert "and 2 more: junk10.jpg, junk11.jpg" in page
    at.button(key="dataset_rm_damaged_pets/dogs").click().run()
    no_leak(at)
    assert sorted(f.suffix for f in (path / "dogs").iterdir()) == [".jpg"] * 3  # the three good ones
    assert "dogs: removed 12 damaged files." in texts(at)


def test_a_file_removed_while_the_class_is_listed_is_no_crash(tmp_path, monkeypatch):
    path = make_dataset(tmp_path, per_class=2)
    gone = path / "cats" / "gone.jpg"
    gone.write_bytes(jpeg())
    real_stat, calls = Path.stat, []

    def stat(self, *args, **kwargs):
        if self == gone:
            calls.append(self)
            if len(calls) > 1:  # there when listed (is_file), gone when its time is read
                raise FileNotFoundError(2, "No such file or directory", str(self))
        return real_stat(self, *args, **kwargs)

    monkeypatch.setattr(Path, "stat", stat)
    assert [f.name for f in datasets.classes(path)["cats"]][0] == "gone.jpg"
