"""The Models page (AppTest): the ImageNet sources offline and online, opening a model of your own
through the form (then loadable by name), refusals that install nothing and keep what was typed,
and removing an installed model."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import zipfile

import pytest
import streamlit as st
from imagenet_models import install_own_keras, own_class_names, save_own_keras
from test_pages import ROOT, run_page

from alexnet_core import locations
from alexnet_core.predict.inference import load_model
from alexnet_core.pretrained import install, sources
from alexnet_core.store import model_home

PAGE = "pages/models.py"


@pytest.fixture
def host(monkeypatch):
    """Whether the download hosts answer, set by the test (the page's cached check cleared)."""
    answers = {"up": False}
    monkeypatch.setattr(install, "host_reachable", lambda url, timeout=3: answers["up"])
    st.cache_data.clear()
    yield answers
    st.cache_data.clear()


def leftovers() -> list[str]:
    root = locations.models_root()
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


def texts(elements) -> str:
    return " ".join(e.value.replace("\\", "") for e in elements)


def test_offline_each_source_is_shown_with_i_have_the_file_and_no_download(host):
    at = run_page(PAGE)
    assert not at.error
    labels = [b.label for b in at.button]
    assert not any(label.startswith("Download") for label in labels)
    assert [e.label for e in at.expander] == [f"I have the file ({s.file_name})" for s in sources.SOURCES.values()]
    shown = texts(at.markdown) + texts(at.caption)
    for source in sources.SOURCES.values():
        assert source.title in shown and source.file_name in shown
        assert f"top-1 {source.published['top1']:.1%}" in shown and source.published["split"] in shown
        assert source.licence.split(";")[0] in shown
    assert "does not answer from this machine" in shown
    assert "No models installed yet" in texts(at.info)
    at.button(key="models_own_open").click().run()  # nothing given yet: said, not a silent no-op
    assert "Upload the model file, or give its path" in texts(at.warning) and not at.error


def test_online_download_is_offered_and_a_missing_reader_says_what_to_install(host, monkeypatch):
    host["up"] = True
    monkeypatch.setattr(install, "dependency_available", lambda source: source.file_format != "onnx")
    at = run_page(PAGE)
    assert [b.label for b in at.button if b.label.startswith("Download")] == ["Download (233.1 MiB)"]
    warning = texts(at.warning)
    assert "needs ONNX" in warning and sources.INSTALL_EXTRA in warning
    assert any(b.label == "Open" for b in at.button)  # your own models still work


def test_i_have_the_file_with_a_bad_path_installs_nothing(host, tmp_path):
    at = run_page(PAGE)
    at.radio(key="models_torchvision_how").set_value("A path on this machine").run()
    at.text_input(key="models_torchvision_path").set_value(str(tmp_path / "nowhere.pth")).run()
    at.button(key="models_torchvision_install").click().run()
    assert not at.exception
    assert "nowhere.pth is not a file on this machine" in texts(at.error)
    assert model_home.installed() == [] and at.text_input(key="models_torchvision_path").value.endswith("nowhere.pth")


def test_opening_your_own_keras_file_by_path_installs_it(host, tmp_path):
    path = save_own_keras(tmp_path / "My Flowers.keras")
    at = run_page(PAGE)
    at.radio(key="models_own_how").set_value("A path on this machine").run()
    at.text_input(key="models_own_path").set_value(str(path)).run()
    at.button(key="models_own_open").click().run()
    assert not at.exception and not at.error, texts(at.error)
    assert "takes 64x64-pixel RGB images and gives 5 class probabilities" in texts(at.markdown)
    assert at.text_input(key="models_own_name").value == "my-flowers"
    assert at.text_area(key="models_own_classes").value.splitlines() == own_class_names()  # from its sidecar
    # Install without saying how its pixels were scaled: asked, nothing lost, nothing installed.
    next(b for b in at.button if b.label == "Install").click().run()
    assert "Choose how its training images were scaled" in texts(at.error)
    assert model_home.installed() == [] and at.text_input(key="models_own_name").value == "my-flowers"
    at.selectbox(key="models_own_preprocessing").set_value("unit")
    at.text_input(key="models_own_name").set_value("flowers")
    next(b for b in at.button if b.label == "Install").click().run()
    assert not at.error, texts(at.error)
    assert "Installed flowers" in texts(at.success)
    loaded = load_model("flowers")
    assert loaded.class_names == own_class_names() and loaded.preprocessing["std"] == [1.0] * 3
    assert "flowers" in texts(at.markdown) and leftovers() == ["flowers"]


def test_an_uploaded_h5_gets_its_class_names_from_the_form(host, tmp_path):
    from imagenet_models import build_own_keras

    h5 = tmp_path / "pets.h5"
    build_own_keras(num_classes=3).save(h5)
    at = run_page(PAGE)
    at.get("file_uploader")[0].set_value([("pets.h5", h5.read_bytes(), "application/octet-stream")]).run()
    at.button(key="models_own_open").click().run()
    assert not at.error, texts(at.error)
    assert "no class names came with it" in texts(at.text_area) + " ".join(t.label for t in at.text_area)
    at.text_area(key="models_own_classes").set_value("cat\ndog")
    at.selectbox(key="models_own_preprocessing").set_value("symmetric")
    next(b for b in at.button if b.label == "Install").click().run()
    assert "has 3 outputs, but 2 class names" in texts(at.error) and model_home.installed() == []
    assert at.text_area(key="models_own_classes").value == "cat\ndog"  # what was typed is kept
    at.text_area(key="models_own_classes").set_value("cat\ndog\nbird")
    next(b for b in at.button if b.label == "Install").click().run()
    assert not at.error, texts(at.error)
    assert load_model("pets").class_names == ["cat", "dog", "bird"]
    assert leftovers() == ["pets"]  # the uploaded copy is gone


@pytest.mark.parametrize("name, data, message", [
    ("broken.keras", b"PK\x03\x04 not a zip at all", "is not a Keras model file"),
    ("model.h5", b"\x89HDF\r\n\x1a\n damaged", "not a Keras .h5 model file"),
    ("lambda.keras", None, "Lambda layer"),
])
def test_a_bad_upload_gets_a_message_and_installs_nothing(host, name, data, message):
    if data is None:  # a Lambda planted in a model's description
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            archive.writestr("config.json", '{"class_name": "Sequential", "config": {"layers": [{"class_name": '
                                            '"Lambda", "module": "keras.layers", "config": {"name": "sneaky"}}]}}')
        data = buffer.getvalue()
    at = run_page(PAGE)
    at.get("file_uploader")[0].set_value([(name, data, "application/octet-stream")]).run()
    at.button(key="models_own_open").click().run()
    assert not at.exception
    assert message in texts(at.error)
    assert model_home.installed() == [] and leftovers() == []
    assert at.button(key="models_own_open")  # still on the open form, ready for another file


def test_an_installed_model_is_listed_and_removed(host):
    install_own_keras("mine")
    at = run_page(PAGE)
    assert "mine" in texts(at.markdown) and "5 classes" in texts(at.caption)
    at.button(key="models_remove_mine").click().run()
    assert not at.error and "Removed mine." in texts(at.success)
    assert model_home.find("mine") is None and "No models installed yet" in texts(at.info)


def test_the_page_loads_no_tensorflow_torch_or_onnx_until_a_model_is_opened(tmp_path):
    code = ("import sys; from streamlit.testing.v1 import AppTest; at = AppTest.from_file('app.py', "
            "default_timeout=120); at.switch_page('pages/models.py'); at.run(); assert not at.exception, at.exception; "
            "print(sorted(m for m in ('tensorflow', 'keras', 'torch', 'onnx', 'onnxruntime') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT,
                            env={**os.environ, "ALEXNET_MODELS_DIR": str(tmp_path / "models")})
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_i_have_the_file_installs_a_torchvision_structured_file_as_your_own(host, tmp_path):
    """A .pth with torchvision's AlexNet structure but not the published checksum (generated
    weights, 3 classes): installed under the name and class names given in the form."""
    torch = pytest.importorskip("torch", reason="reading a .pth needs PyTorch (the pretrained extra)")
    from alexnet_core.pretrained import torch_import

    torch.manual_seed(0)
    path = tmp_path / "alexnet-birds.pth"
    torch.save(torch_import.reference_module(num_classes=3).state_dict(), path)
    at = run_page(PAGE)
    at.radio(key="models_torchvision_how").set_value("A path on this machine").run()
    at.text_input(key="models_torchvision_path").set_value(str(path))
    at.text_input(key="models_torchvision_name").set_value("birds")
    at.text_area(key="models_torchvision_classes").set_value("robin\nwren\nowl\n")
    at.button(key="models_torchvision_install").click().run(timeout=600)
    assert not at.exception and not at.error, texts(at.error)
    assert "Installed birds as your own model" in texts(at.warning)
    record = model_home.read_record("birds")
    assert record["kind"] == "own" and record["class_names"] == ["robin", "wren", "owl"]
    shown = texts(at.markdown)
    assert "birds" in shown and shown.count("not installed") == 2  # the published models still are not
    assert sorted(leftovers()) == ["birds"]  # the class names' file is gone
