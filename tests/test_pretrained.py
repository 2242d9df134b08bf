"""torchvision's ImageNet weights in: the bundled class list, the structure check, the conversion's
parity with PyTorch, installing (download from a local server, or a file at hand; the published
file, or one of the user's own), what a failed or killed install leaves (nothing), the missing
PyTorch message and the `pretrained` command. No test downloads anything from outside this
machine: weights are generated in torchvision's structure (seeded), once per module.
"""

import dataclasses
import functools
import hashlib
import http.server
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

torch = pytest.importorskip("torch", reason="the pretrained extra: pip install -e \".[pretrained]\"")

from alexnet_core.cli import main  # noqa: E402
from alexnet_core.pretrained import check, install, sources, torch_import  # noqa: E402
from alexnet_core.pretrained.sources import PretrainedError  # noqa: E402
from alexnet_core.store import model_home  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TOLERANCE = 1e-4


def torchvision_alexnet(num_classes=1000):
    """torchvision's AlexNet: torchvision's own when it imports, else the same structure (and
    state_dict keys) written out here."""
    try:
        from torchvision.models import alexnet

        return alexnet(weights=None, num_classes=num_classes)
    except Exception:  # torchvision missing or built for another PyTorch
        pass
    nn = torch.nn

    class AlexNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2), nn.ReLU(inplace=True),
                nn.MaxPool2d(kernel_size=3, stride=2),
                nn.Conv2d(64, 192, kernel_size=5, padding=2), nn.ReLU(inplace=True),
                nn.MaxPool2d(kernel_size=3, stride=2),
                nn.Conv2d(192, 384, kernel_size=3, padding=1), nn.ReLU(inplace=True),
                nn.Conv2d(384, 256, kernel_size=3, padding=1), nn.ReLU(inplace=True),
                nn.Conv2d(256, 256, kernel_size=3, padding=1), nn.ReLU(inplace=True),
                nn.MaxPool2d(kernel_size=3, stride=2),
            )
            self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
            self.classifier = nn.Sequential(
                nn.Dropout(p=0.5), nn.Linear(256 * 6 * 6, 4096), nn.ReLU(inplace=True),
                nn.Dropout(p=0.5), nn.Linear(4096, 4096), nn.ReLU(inplace=True),
                nn.Linear(4096, num_classes),
            )

        def forward(self, x):
            return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))

    return AlexNet()


def seeded(num_classes, seed):
    torch.manual_seed(seed)
    module = torchvision_alexnet(num_classes).eval()
    with torch.no_grad():  # He initialisation keeps the signal alive through 8 layers: the images' logits differ
        for m in module.modules():
            if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
                torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                m.bias.normal_(0.0, 0.01)
    return module


def sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """Three generated files in torchvision's structure: 1,000 classes (the stand-in for the
    published file), the same with renamed keys, and a 10-class fine-tuned copy."""
    folder = tmp_path_factory.mktemp("weights")
    reference = seeded(1000, 0)
    state = reference.state_dict()
    published = folder / "alexnet-owt-generated.pth"
    torch.save(state, published)
    renamed = folder / "renamed.pth"  # same tensors, names that mean nothing: identified by structure
    torch.save({f"layer{i}.w": t for i, t in enumerate(state.values())}, renamed)
    tuned = seeded(10, 1)
    own = folder / "fine-tuned-10.pth"
    torch.save({"epoch": 3, "state_dict": tuned.state_dict()}, own)  # a training checkpoint wrapping its weights
    return {"published": published, "renamed": renamed, "own": own, "reference": reference, "tuned": tuned,
            "folder": folder}


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


class _QuietServer(http.server.ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        """A client killed mid-download (the test that kills an install) is expected: no traceback."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


@pytest.fixture(scope="module")
def server(weights):
    """A local HTTP server (127.0.0.1 only) serving the weights folder."""
    handler = functools.partial(_Quiet, directory=str(weights["folder"]))
    httpd = _QuietServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def installed(weights, server, tmp_path_factory):
    """The stand-in published file downloaded from the local server and installed, once."""
    models = tmp_path_factory.mktemp("models")
    path = weights["published"]
    fake = dataclasses.replace(sources.SOURCES["torchvision"], sha256=sha256(path), bytes=path.stat().st_size)
    events = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ALEXNET_MODELS_DIR", str(models))
        mp.setitem(sources.SOURCES, "torchvision", fake)
        result = install.install("torchvision", url=f"{server}/{path.name}", progress=events.append)
    return {"models": models, "result": result, "events": events}


def leftovers(models):
    return sorted(p.name for p in Path(models).glob(".*")) if Path(models).exists() else []


def test_the_imagenet_class_list_is_whole_and_in_output_order():
    lines = (ROOT / "assets" / "imagenet" / "synset_words.txt").read_text(encoding="utf-8").splitlines()
    wnids = [line.split(" ", 1)[0] for line in lines]
    assert len(lines) == 1000 and len(set(wnids)) == 1000
    assert wnids == sorted(wnids)  # the sorted-wnid order torchvision's and Caffe's outputs use
    assert all(w.startswith("n") and len(w) == 9 and w[1:].isdigit() for w in wnids)
    names, words = sources.imagenet_classes()
    assert names == wnids and all(words[w] for w in names)
    assert (names[0], words[names[0]]) == ("n01440764", "tench, Tinca tinca")  # output 0
    assert words[names[281]].startswith("tabby")  # output 281, the class torchvision names "tabby"
    assert "assets/**/*" in (ROOT / "pyproject.toml").read_text()  # shipped in the wheel with the other assets


def test_the_sources_say_what_they_are():
    tv, bvlc = sources.get("torchvision"), sources.get("bvlc")
    assert tv.sha256.startswith(tv.file_name.split("-")[-1].split(".")[0])  # torchvision's own name check
    assert (tv.model_name, tv.variant, bvlc.model_name, bvlc.variant) == (
        "imagenet-torchvision", "torchvision", "imagenet-bvlc", "paper")
    assert tv.published["top1"] == 0.56522 and bvlc.published["top5"] == 0.802
    caffe = bvlc.preprocessing(224)
    assert [round(m * 255, 8) for m in caffe["mean"]] == [122.67891434, 116.66876762, 104.00698793]  # RGB
    assert caffe["resize_mode"] == "square" and tv.preprocessing()["resize_mode"] == "shorter"
    with pytest.raises(PretrainedError, match="torchvision, bvlc"):
        sources.get("resnet")


def generated_images():
    rng = np.random.default_rng(7)
    images = check.generated_images(6, seed=3)
    images.append(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8))  # already at the intermediate size
    return images


def test_parity_with_pytorch_and_loading_by_name(installed, weights, monkeypatch):
    """The installed model, loaded by name as every command and page loads it, gives PyTorch's
    logits on the same preprocessed images: within 1e-4 relative, the same top-1 everywhere, the
    same top-5 order wherever the reference is not tied."""
    import keras

    from alexnet_core.inputs import preprocess
    from alexnet_core.predict.inference import load_model

    monkeypatch.setenv("ALEXNET_MODELS_DIR", str(installed["models"]))
    loaded = load_model("imagenet-torchvision")
    record = loaded.preprocessing
    assert (record["resize_to"], record["resize_mode"], record["input_size"]) == (256, "shorter", 224)
    images = generated_images()
    pixels = np.stack([preprocess.fit(image, record, "crop") for image in images])
    np.testing.assert_array_equal(pixels[-1], images[-1][16:240, 16:240])  # only cropped, never resampled
    x = preprocess.standardize(pixels, record).numpy()
    ours = keras.Model(loaded.model.input, loaded.model.get_layer("fc8").output)(x).numpy()
    with torch.inference_mode():
        theirs = weights["reference"](torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()
    scale = np.abs(theirs).max(axis=1)
    assert (np.abs(ours - theirs).max(axis=1) / scale).max() <= TOLERANCE
    assert (ours.argmax(1) == theirs.argmax(1)).all()
    for mine, ref in zip(ours, theirs):
        order = np.argsort(-ref)[:6]
        gaps = -np.diff(ref[order])
        for k in range(5):
            tied = gaps[k] < 1e-6 * scale.max() or (k > 0 and gaps[k - 1] < 1e-6 * scale.max())
            assert tied or np.argsort(-mine)[k] == order[k]
    assert len(set(theirs.argmax(1))) > 1  # the images really differ for this network: the check can fail


def test_a_download_is_verified_installed_whole_and_named(installed, weights):
    result, models = installed["result"], installed["models"]
    assert result["name"] == "imagenet-torchvision" and result["kind"] == "pretrained" and result["checksum_match"]
    assert Path(result["path"]) == models / "imagenet-torchvision" / "model.keras"
    record = json.loads((models / "imagenet-torchvision" / "model.json").read_text())
    assert record["kind"] == "pretrained" and record["variant"] == "torchvision"
    assert len(record["class_names"]) == 1000 and record["class_words"]["n01440764"] == "tench, Tinca tinca"
    assert record["published"]["split"] == "ILSVRC-2012 validation, centre crop"
    assert record["preprocessing"]["mean"] == sources.IMAGENET_MEAN and record["preprocessing"]["crop"] == 224
    downloads = [e for e in installed["events"] if e["phase"] == "download"]
    assert downloads and downloads[-1]["done"] == downloads[-1]["total"] == weights["published"].stat().st_size
    assert all(e["rate"] > 0 and e["eta"] is not None for e in downloads)
    assert leftovers(models) == []  # the temporary download folder is gone


def test_a_download_that_is_not_the_published_file_installs_nothing(weights, server, monkeypatch, tmp_path):
    """The right structure, the right size, the wrong checksum: refused before anything is made."""
    path = weights["published"]
    sized = dataclasses.replace(sources.SOURCES["torchvision"], bytes=path.stat().st_size)  # the real checksum
    monkeypatch.setitem(sources.SOURCES, "torchvision", sized)
    with pytest.raises(PretrainedError, match="not the published file.*Nothing was installed"):
        install.install("torchvision", url=f"{server}/{path.name}")
    models = tmp_path / "models"
    assert model_home.find("imagenet-torchvision") is None and leftovers(models) == []
    smaller = dataclasses.replace(sized, bytes=1000)  # a server sending more than the published size
    monkeypatch.setitem(sources.SOURCES, "torchvision", smaller)
    with pytest.raises(PretrainedError, match="where the published file has 1,000"):
        install.install("torchvision", url=f"{server}/{path.name}")
    with pytest.raises(PretrainedError, match="failed.*--file PATH"):
        install.install("torchvision", url=f"{server}/missing.pth")
    assert model_home.installed() == [] and leftovers(models) == []


def write_classes(path, names):
    path.write_text("\n".join(names) + "\n", encoding="utf-8")
    return path


def test_a_fine_tuned_file_is_the_users_own_with_their_class_names(weights, tmp_path, capsys):
    flowers = [f"flower {i}" for i in range(10)]
    classes = write_classes(tmp_path / "classes.txt", flowers)
    assert main(["pretrained", "install", "torchvision", "--file", str(weights["own"]), "--classes", str(classes),
                 "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["name"] == "own-torchvision" and result["kind"] == "own" and not result["checksum_match"]
    assert result["num_classes"] == 10
    record = model_home.read_record("own-torchvision")
    assert record["class_names"] == flowers and "published" not in record and record["kind"] == "own"
    assert "not the published file" in record["note"]

    from alexnet_core.predict.inference import load_model

    loaded = load_model("own-torchvision")
    assert loaded.class_names == flowers and loaded.model.output_shape[-1] == 10
    x = np.random.default_rng(0).normal(0, 1, (2, 224, 224, 3)).astype(np.float32)
    import keras

    ours = keras.Model(loaded.model.input, loaded.model.get_layer("fc8").output)(x).numpy()
    with torch.inference_mode():
        theirs = weights["tuned"](torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()
    assert (np.abs(ours - theirs).max(axis=1) / np.abs(theirs).max(axis=1)).max() <= TOLERANCE


def test_an_own_file_never_takes_the_published_name_and_its_classes_are_counted(weights, tmp_path):
    with pytest.raises(PretrainedError, match="cannot be installed as 'imagenet-torchvision'"):
        install.install("torchvision", file=weights["own"], name="imagenet-torchvision")
    wrong = write_classes(tmp_path / "three.txt", ["a", "b", "c"])
    with pytest.raises(PretrainedError, match="3 class names but the model's last layer has 10 outputs"):
        install.install("torchvision", file=weights["own"], classes_file=wrong)
    twice = write_classes(tmp_path / "twice.txt", ["a"] * 10)
    with pytest.raises(PretrainedError, match="more than once"):
        install.install("torchvision", file=weights["own"], classes_file=twice)
    assert model_home.installed() == [] and leftovers(tmp_path / "models") == []


def small_state(shapes):
    return {f"t{i}": torch.zeros(shape) for i, shape in enumerate(shapes)}


@pytest.mark.parametrize("shapes, message", [
    # a ResNet-like start: batch normalisation's tensors are not AlexNet's
    ([(64, 3, 7, 7), (64,), (64,), (64,), (64,)], "tensors that AlexNet has none of.*batch normalisation"),
    # four convolutions only
    ([(64, 3, 11, 11), (64,), (192, 64, 5, 5), (192,), (384, 192, 3, 3), (384,), (256, 384, 3, 3), (256,),
      (4096, 9216), (4096,), (4096, 4096), (4096,), (1000, 4096), (1000,)], "4 convolutions and 3 linear layers"),
    # VGG-like widths in the first layer
    ([(96, 3, 11, 11), (96,), (192, 64, 5, 5), (192,), (384, 192, 3, 3), (384,), (256, 384, 3, 3), (256,),
      (256, 256, 3, 3), (256,), (4096, 9216), (4096,), (4096, 4096), (4096,), (1000, 4096), (1000,)],
     "conv1 is 96x3x11x11 where it should be 64x3x11x11"),
])
def test_a_file_of_another_structure_is_refused_saying_what_differs(tmp_path, shapes, message):
    path = tmp_path / "other.pth"
    torch.save(small_state(shapes), path)
    with pytest.raises(PretrainedError, match=f"is not torchvision's AlexNet: .*{message}"):
        install.install("torchvision", file=path)
    assert model_home.installed() == [] and leftovers(tmp_path / "models") == []


def test_files_that_are_not_weights_are_refused(tmp_path):
    damaged = tmp_path / "damaged.pth"
    damaged.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(PretrainedError, match="not a PyTorch weights file that can be read safely"):
        torch_import.read_state_dict(damaged)
    listed = tmp_path / "list.pth"
    torch.save([torch.zeros(3)], listed)
    with pytest.raises(PretrainedError, match="not a model's weights"):
        torch_import.read_state_dict(listed)
    with pytest.raises(PretrainedError, match="not a regular file"):
        torch_import.read_state_dict(tmp_path)


def test_an_install_killed_midway_leaves_nothing_and_the_next_one_works(weights, tmp_path):
    env = {**os.environ, "ALEXNET_FAULT": "kill@model.json#1", "ALEXNET_MODELS_DIR": str(tmp_path / "models")}
    done = subprocess.run([sys.executable, "-m", "alexnet_core", "pretrained", "install", "torchvision", "--file",
                           str(weights["own"]), "--name", "tuned", "--json"], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    assert model_home.find("tuned") is None and not (tmp_path / "models" / "tuned").exists()
    assert leftovers(tmp_path / "models")  # the killed install's temporary folder, never a model
    result = install.install("torchvision", file=weights["own"], name="tuned")
    assert result["name"] == "tuned" and model_home.find("tuned") is not None
    assert leftovers(tmp_path / "models") == []  # cleared: its process is gone


def test_without_pytorch_the_message_says_what_to_install(weights, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` fails as if it were not installed
    with pytest.raises(sources.MissingDependency, match=r'pip install "alexnet-explorer\[pretrained\]"'):
        torch_import.read_state_dict(weights["own"])
    assert main(["pretrained", "install", "torchvision", "--file", str(weights["own"])]) == 2
    err = capsys.readouterr().err
    assert "PyTorch is needed" in err and 'pip install -e ".[pretrained]"' in err and "Traceback" not in err
    assert model_home.installed() == []


def test_the_pretrained_command_lists_the_sources(capsys):
    assert main(["pretrained", "--json"]) == 0
    rows = {row["source"]: row for row in json.loads(capsys.readouterr().out)}
    assert set(rows) == {"torchvision", "bvlc"}
    assert rows["torchvision"]["bytes"] == 244_408_911 and rows["bvlc"]["bytes"] == 243_863_787
    assert not rows["torchvision"]["installed"] and rows["torchvision"]["reader_available"]
    assert main(["pretrained"]) == 0
    text = capsys.readouterr().out
    assert "torchvision: AlexNet" in text and "233 MiB download, not installed" in text and "BSD-3-Clause" in text
    assert "56.5% top-1" in text and "57.1% top-1" in text


def test_check_compares_a_file_with_pytorch(weights, tmp_path, capsys):
    """`pretrained check` on a file whose tensors have meaningless names (identified by structure),
    on a folder of images with one damaged file among them."""
    images = tmp_path / "images"
    images.mkdir()
    for i, image in enumerate(generated_images()[:3]):
        Image.fromarray(image).save(images / f"{i}.png")
    (images / "broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    assert main(["pretrained", "check", "torchvision", "--file", str(weights["renamed"]), "--images", str(images),
                 "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert {"max_abs_diff", "max_rel_diff", "top1_agreement", "n"} <= set(result)
    assert result["n"] == 3 and result["skipped"] == ["broken.jpg"]
    assert result["max_rel_diff"] <= TOLERANCE and result["top1_agreement"] == 1.0 and result["agrees"]


def test_the_parity_figures_see_a_difference():
    """check.compare, which `pretrained check` reports from, fails a conversion that is off."""
    rng = np.random.default_rng(0)
    reference = rng.normal(0, 1, (4, 20))
    assert check.compare(reference + 1e-7, reference)["agrees"]
    off = reference.copy()
    off[:, :] = off[:, ::-1]  # the classes in the wrong order
    result = check.compare(off, reference)
    assert not result["agrees"] and result["top1_agreement"] < 1 and result["max_rel_diff"] > TOLERANCE


def test_predict_names_an_installed_model(installed, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("ALEXNET_MODELS_DIR", str(installed["models"]))
    photo = tmp_path / "photo.png"
    Image.fromarray(generated_images()[2]).save(photo)
    assert main(["predict", "imagenet-torchvision", str(photo), "--json"]) == 0
    [result] = json.loads(capsys.readouterr().out)
    assert result["error"] is None and len(result["predictions"]) == 5
    assert all(p["label"].startswith("n") and len(p["label"]) == 9 for p in result["predictions"])


def test_remove_and_host_reachable(server, capsys):
    assert install.host_reachable(server) and not install.host_reachable("http://127.0.0.1:1")
    assert not install.host_reachable("not a url")
    assert main(["pretrained", "remove", "nothing-here"]) == 2
    assert "No model named 'nothing-here'" in capsys.readouterr().err


def test_the_bvlc_source_installs_and_checks_through_onnx(tmp_path, capsys):
    """The `bvlc` source goes through onnx_import (graph built as the zoo's Caffe2 export is, in
    tests/test_pretrained_onnx.py): check against ONNX Runtime, then installed as the user's own
    with the ImageNet classes and Caffe's recipe recorded."""
    onnx = pytest.importorskip("onnx")
    from tests.test_pretrained_onnx import zoo_graph

    path = tmp_path / "bvlcalexnet-generated.onnx"
    onnx.save(zoo_graph("caffe2", "pads", seed=2), path)
    assert main(["pretrained", "check", "bvlc", "--file", str(path), "--count", "3", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["reference"] == "ONNX Runtime" and result["n"] == 3 and result["agrees"]
    assert result["max_rel_diff"] <= TOLERANCE and result["top1_agreement"] == 1.0
    assert main(["pretrained", "install", "bvlc", "--file", str(path), "--classes", "imagenet", "--json"]) == 0
    installed = json.loads(capsys.readouterr().out)
    assert installed["name"] == "own-bvlc" and installed["kind"] == "own"
    record = model_home.read_record("own-bvlc")
    assert record["variant"] == "paper" and record["class_words"]["n01440764"] == "tench, Tinca tinca"
    assert record["preprocessing"] == sources.get("bvlc").preprocessing(224)


def test_a_models_folder_that_cannot_be_one_is_said_plainly(weights, tmp_path, monkeypatch, capsys):
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    monkeypatch.setenv("ALEXNET_MODELS_DIR", str(blocked))
    assert main(["pretrained", "install", "torchvision", "--file", str(weights["own"])]) == 2
    err = capsys.readouterr().err
    assert f"Cannot install into the models folder {blocked}" in err and "Traceback" not in err
    assert blocked.read_text() == "not a folder"


def _resident_mib() -> float:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:")) / 1024


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status (Linux)")
def test_a_copied_tensors_pages_leave_memory_and_only_a_mapped_files(tmp_path):
    """The conversion hands back the pages of each tensor it has copied, so the file is never whole
    in memory beside the model: the pages of a tensor mapped from the file leave (and read back the
    same from the file), while memory that is not the file's mapping is never touched."""
    import torch

    path = tmp_path / "weights.pth"
    torch.save({"w": torch.arange(8 * 2**20, dtype=torch.float32)}, path)  # 32 MiB
    mapped = torch.load(path, weights_only=True, map_location="cpu", mmap=True)["w"]
    assert float(mapped.sum()) > 0  # every page read
    before = _resident_mib()
    torch_import._release_pages(mapped, path)
    assert before - _resident_mib() >= 24
    assert float(mapped[-1]) == 8 * 2**20 - 1 and float(mapped[12345]) == 12345  # read again from the file

    held = torch.arange(8 * 2**20, dtype=torch.float32)  # in memory, not the file's
    torch_import._release_pages(held, path)
    assert torch.equal(held, torch.arange(8 * 2**20, dtype=torch.float32))  # not a page zeroed
    torch_import._release_pages(mapped, tmp_path / "another.pth")  # another file's name: nothing released
    assert float(mapped[7]) == 7


def test_blocks_fill_a_kernel_exactly_as_one_assignment_would():
    import keras

    layer = keras.layers.Dense(6, kernel_initializer="zeros")
    layer.build((None, 2 * 3 * 700))
    value = np.random.default_rng(0).normal(size=(2, 3, 700, 6)).astype(np.float32)  # (h, w, c, out)
    torch_import.assign_in_blocks(layer.kernel, value)
    assert np.array_equal(layer.kernel.numpy(), value.reshape(-1, 6))
    rows = np.random.default_rng(1).normal(size=(4200, 6))  # float64, more rows than ASSIGN_ROWS
    torch_import.assign_in_blocks(layer.kernel, rows)
    assert np.array_equal(layer.kernel.numpy(), rows.astype(np.float32))
