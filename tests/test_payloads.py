"""Planted payloads: model files that would create a file if anything in them ran.

Each test first proves its payload is live (loaded the way an unsafe reader loads it, in a fresh
process: Keras with safe_mode=False, a registered custom object with Keras' own safe mode,
pickle.load, importing the module a config names), so the file does get created; then that our
loaders refuse the file with a message naming what was found, and the file is never created.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

from alexnet_core.predict import untrusted
from alexnet_core.predict.inference import ModelLoadError, check_file, load_model

ROOT = Path(__file__).resolve().parent.parent


def run_python(code: str, *args, path_extra: Path | None = None) -> subprocess.CompletedProcess:
    """`code` in a fresh Python (this checkout importable, and `path_extra` when given)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT)] + ([str(path_extra)] if path_extra else []))}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *map(str, args)], capture_output=True,
                          text=True, timeout=300, env=env, cwd=ROOT)


@pytest.fixture(scope="module")
def clean_keras(tmp_path_factory) -> Path:
    """A tiny, harmless image classifier (.keras) the payloads are planted into."""
    import keras

    folder = tmp_path_factory.mktemp("clean")
    model = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Conv2D(2, 3, name="conv"),
                              keras.layers.GlobalAveragePooling2D(name="pool"),
                              keras.layers.Dense(3, activation="softmax", name="head")])
    path = folder / "clean.keras"
    model.save(path)
    return path


def planted(clean: Path, dest: Path, mutate) -> Path:
    """A copy of `clean` whose config.json `mutate(config)` changed (every other member as it was)."""
    with zipfile.ZipFile(clean) as source, zipfile.ZipFile(dest, "w") as target:
        for info in source.infolist():
            data = source.read(info.filename)
            if info.filename == "config.json":
                document = json.loads(data)
                mutate(document)
                data = json.dumps(document).encode()
            target.writestr(info.filename, data)
    return dest


def layer(document: dict, name: str) -> dict:
    return next(item for item in document["config"]["layers"] if item["config"].get("name") == name)


def refused(path: Path, marker: Path, *expected: str) -> str:
    """Our loader refuses `path` (by file and as MODEL), the marker is never created; the message."""
    with pytest.raises(ModelLoadError) as caught:
        load_model(str(path))
    assert not marker.exists(), "the payload ran"
    message = str(caught.value)
    for text in expected:
        assert text in message, message
    assert "refused before anything in it was loaded" in message
    return message


def test_a_clean_model_passes_every_check(clean_keras):
    check_file(clean_keras)  # the payloads below differ from this file only in what they plant
    assert untrusted.findings(json.loads(zipfile.ZipFile(clean_keras).read("config.json"))) == []


def _as_activation(document):
    layer(document, "head")["config"]["activation"] = {"module": "os", "class_name": "function", "config": "system",
                                                       "registered_name": None}
    return "os", "system"


def _as_class(document):
    layer(document, "pool").update({"module": "os", "class_name": "system"})
    return "os", "system"


@pytest.mark.parametrize("plant", [_as_activation, _as_class], ids=["activation", "class"])
def test_os_system_named_in_a_config(clean_keras, tmp_path, plant):
    marker = tmp_path / "owned-by-os-system"
    named = []
    path = planted(clean_keras, tmp_path / "os-system.keras", lambda d: named.extend(plant(d)))
    # Live: a reader that honours the module path (as Keras did before 3.9) gets os.system itself,
    # which runs any command it is handed.
    resolved = getattr(importlib.import_module(named[0]), named[1])
    assert resolved is os.system
    resolved(f'"{sys.executable}" -c "open(r\'{marker}\', \'w\').close()"')
    assert marker.exists()
    marker.unlink()
    message = refused(path, marker, "'os'" if plant is _as_class else "os.system")
    assert "outside" in message and ("'pool'" if plant is _as_class else "'head'") in message


def test_a_module_named_as_a_class_is_never_imported(clean_keras, tmp_path, monkeypatch):
    marker = tmp_path / "owned-by-import"
    payloads = tmp_path / "site"
    payloads.mkdir()
    (payloads / "planted_payload.py").write_text(f"open({str(marker)!r}, 'w').close()\nclass Payload: pass\n")

    def plant(document):
        layer(document, "pool").update({"module": "planted_payload", "class_name": "Payload"})

    path = planted(clean_keras, tmp_path / "module.keras", plant)
    # Live: importing the module the config names (what a module path asks of a reader) creates the file.
    result = run_python("import importlib, sys; importlib.import_module(sys.argv[1])", "planted_payload",
                        path_extra=payloads)
    assert result.returncode == 0, result.stderr[-2000:]
    assert marker.exists()
    marker.unlink()
    monkeypatch.syspath_prepend(str(payloads))  # importable here too: only our check stands in the way
    refused(path, marker, "planted_payload", "Payload")
    assert "planted_payload" not in sys.modules


PAYLOAD_MODELS = """
    import sys, keras
    marker, folder = sys.argv[1], sys.argv[2]
    touch = eval(f"lambda x: (open({marker!r}, 'w').close(), x)[1]")
    inputs = keras.Input((32, 32, 3))
    hidden = keras.layers.Conv2D(2, 3, name="conv")(inputs)
    hidden = keras.layers.Lambda(touch, name="innocent_scaling")(hidden)
    outputs = keras.layers.Dense(3, activation="softmax", name="head")(keras.layers.GlobalAveragePooling2D()(hidden))
    model = keras.Model(inputs, outputs)
    model.save(folder + "/lambda.keras")
    model.save(folder + "/lambda.h5")
    wrapper = keras.Sequential([keras.Input((32, 32, 3)), model], name="outer")  # the Lambda one level down
    wrapper.save(folder + "/nested.keras")
"""

UNSAFE_LOAD = """
    import sys, keras
    keras.models.load_model(sys.argv[1], safe_mode=False, compile=False)
"""


@pytest.fixture(scope="module")
def lambda_payloads(tmp_path_factory) -> tuple[Path, Path]:
    """lambda.keras, lambda.h5 and nested.keras, each with a Lambda whose marshalled bytecode
    creates `marker` when the model is built; (folder, marker), the marker removed."""
    folder = tmp_path_factory.mktemp("lambda")
    marker = folder / "owned-by-lambda"
    result = run_python(PAYLOAD_MODELS, marker, folder)
    assert result.returncode == 0, result.stderr[-2000:]
    marker.unlink()  # building the model ran the lambda once
    return folder, marker


@pytest.mark.parametrize("name", ["lambda.keras", "lambda.h5", "nested.keras"])
def test_lambda_with_marshalled_bytecode(lambda_payloads, name):
    folder, marker = lambda_payloads
    path = folder / name
    if name == "lambda.keras":
        assert "__lambda__" in zipfile.ZipFile(path).read("config.json").decode()  # the bytecode is in the file
    # Live: Keras with safe_mode=False runs the bytecode while it builds the model.
    result = run_python(UNSAFE_LOAD, path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert marker.exists()
    marker.unlink()
    message = refused(path, marker, "Lambda", "innocent_scaling", "save it again")
    assert "rebuild the model" in message


REGISTERED = """
    import keras

    @keras.saving.register_keras_serializable(package="helpful")
    class Payload(keras.layers.Layer):
        @classmethod
        def from_config(cls, config):
            open(config.pop("marker"), "w").close()
            return keras.layers.Dense.from_config(config)
"""


def test_a_registered_custom_object_cannot_stand_in_for_a_keras_class(clean_keras, tmp_path):
    marker = tmp_path / "owned-by-registration"
    payloads = tmp_path / "site"
    payloads.mkdir()
    (payloads / "helpful_layers.py").write_text(textwrap.dedent(REGISTERED))

    def plant(document):
        head = layer(document, "head")
        head["registered_name"] = "helpful>Payload"  # still says Dense from keras.layers
        head["config"]["marker"] = str(marker)

    path = planted(clean_keras, tmp_path / "registered.keras", plant)
    # Live: in a process where some library registered that name, Keras' own safe mode builds it.
    live = run_python("""
        import sys, helpful_layers, keras
        keras.models.load_model(sys.argv[1], safe_mode=True, compile=False)
    """, path, path_extra=payloads)
    assert live.returncode == 0, live.stderr[-2000:]
    assert marker.exists()
    marker.unlink()
    ours = run_python("""
        import sys, helpful_layers
        from alexnet_core.predict.inference import ModelLoadError, load_model
        try:
            load_model(sys.argv[1])
        except ModelLoadError as exc:
            print(exc)
        else:
            print("LOADED")
    """, path, path_extra=payloads)
    assert ours.returncode == 0, ours.stderr[-2000:]
    assert not marker.exists(), "the payload ran"
    assert "helpful>Payload" in ours.stdout and "substitution" in ours.stdout and "LOADED" not in ours.stdout


class Payload:
    """Unpickling it calls os.system with a command that creates `marker`."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f'"{sys.executable}" -c "open(r\'{self.marker}\', \'w\').close()"',)


def test_a_pickle_payload_in_a_pth_file(tmp_path):
    torch = pytest.importorskip("torch", reason="the .pth reader needs PyTorch (the pretrained extra)")
    from alexnet_core.errors import AlexNetError
    from alexnet_core.pretrained import torch_import

    marker = tmp_path / "owned-by-pickle"
    path = tmp_path / "alexnet-owt-7be5be79.pth"
    torch.save({"features.0.weight": torch.zeros(64, 3, 11, 11), "extra": Payload(marker)}, path)
    assert not marker.exists()
    # Live: plain unpickling (torch.load without weights_only) runs os.system.
    live = run_python("import sys, torch; torch.load(sys.argv[1], weights_only=False)", path)
    assert live.returncode == 0, live.stderr[-2000:]
    assert marker.exists()
    marker.unlink()
    with pytest.raises(AlexNetError) as caught:
        torch_import.read_state_dict(path)
    assert not marker.exists(), "the payload ran"
    message = str(caught.value)
    assert path.name in message and "read safely" in message and "code" in message


# Every form of code Keras 3 reads, planted in a description, and the words that must name it.
FORMS = {
    "unsafe-switch": ({"class_name": "Activation", "module": "keras.layers", "config": {"name": "a", "activation": {
        "module": "keras.config", "class_name": "function", "config": "enable_unsafe_deserialization",
        "registered_name": None}}}, "unsafe deserialisation"),
    "safe-mode-key": ({"class_name": "Dense", "module": "keras.layers", "config": {"name": "d", "safe_mode": False}},
                      "safe mode"),
    "function-by-module": ({"class_name": "Dense", "module": "keras.layers", "config": {"name": "d", "activation": {
        "module": "__main__", "class_name": "function", "config": "shout", "registered_name": None}}},
        "__main__.shout"),
    "utils-function": ({"class_name": "Dense", "module": "keras.layers", "config": {"name": "d", "activation": {
        "module": "keras.utils", "class_name": "function", "config": "get_file"}}}, "keras.utils.get_file"),
    "tfsm": ({"class_name": "TFSMLayer", "module": "keras.layers", "config": {"name": "t", "filepath": "/x"}},
             "TFSMLayer"),
    "torch-wrapper": ({"class_name": "TorchModuleWrapper", "module": "keras.layers", "config": {"name": "w"}},
                      "unpickles"),
    "typespec": ({"class_name": "__typespec__", "module": "builtins", "spec_name": "X", "config": []},
                 "type specification"),
    "legacy-lambda": ({"class_name": "Sequential", "config": {"layers": [{"class_name": "Dropout", "config": {
        "name": "drop", "function": ["4wEAAAAA", None, None], "function_type": "lambda"}}]}}, "marshalled"),
    "legacy-registered": ({"class_name": "evil>Thing", "config": {"name": "x"}}, "evil>Thing"),
    "legacy-function-name": ({"class_name": "deserialize", "config": {"name": "x"}}, "not the name of a Keras class"),
    "other-package": ({"class_name": "Layer", "module": "keras_hub.layers", "config": {"name": "x"}}, "keras_hub"),
    "lambda-deep": ({"class_name": "Functional", "module": "keras", "config": {"layers": [{"class_name": "Sequential",
        "module": "keras", "config": {"name": "inner", "layers": [{"class_name": "Functional", "module": "keras",
            "config": {"name": "deeper", "layers": [{"class_name": "Lambda", "module": "keras.layers",
                                                     "config": {"name": "hidden"}}]}}]}}]}}, "'hidden'"),
}


@pytest.mark.parametrize("form", sorted(FORMS))
def test_every_form_of_code_is_named(form):
    description, words = FORMS[form]
    found = untrusted.findings(description)
    assert found and any(words in sentence for sentence in found), found
    with pytest.raises(ModelLoadError, match="refused before anything in it was loaded"):
        untrusted.check_description(description, "model.keras")


def test_h5_pointing_outside_itself_is_refused(tmp_path):
    import h5py

    outside = tmp_path / "outside.h5"
    with h5py.File(outside, "w") as f:
        f["secret"] = [1.0, 2.0]
    path = tmp_path / "linked.h5"
    with h5py.File(path, "w") as f:
        f.attrs["model_config"] = json.dumps({"class_name": "Sequential", "config": {"layers": []}})
        f["model_weights/dense/kernel"] = h5py.ExternalLink(str(outside), "/secret")
    with pytest.raises(ModelLoadError, match="link to another file"):
        check_file(path)


def test_keras_weights_stored_in_another_file_are_refused(clean_keras, tmp_path):
    """A .keras whose weights member reads its numbers from a file elsewhere on the machine."""
    import h5py

    secret = tmp_path / "secret.bin"
    secret.write_bytes(bytes(range(24)))
    weights = tmp_path / "model.weights.h5"
    with zipfile.ZipFile(clean_keras) as source:
        weights.write_bytes(source.read("model.weights.h5"))
        members = {i.filename: source.read(i.filename) for i in source.infolist()}
    with h5py.File(weights, "a") as f:
        f.create_dataset("layers/head/vars/extra", shape=(6,), dtype="float32", external=[(str(secret), 0, 24)])
    path = tmp_path / "external.keras"
    with zipfile.ZipFile(path, "w") as target:
        for name, data in members.items():
            target.writestr(name, weights.read_bytes() if name == "model.weights.h5" else data)
    with h5py.File(weights, "r") as f:  # live: reading the dataset reads the other file
        assert f["layers/head/vars/extra"][()].tobytes() == secret.read_bytes()
    with pytest.raises(ModelLoadError, match=r"extra are stored in another file"):
        load_model(str(path))
