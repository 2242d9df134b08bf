"""Model files from anyone, refused before Keras deserialises anything when they carry code.

A Keras model file is a description (JSON) of objects Keras builds: layers, activations,
initialisers, each named by class and Python module. Keras' `safe_mode` refuses serialised
lambdas, but a file can still name a Python module outside Keras, a custom object registered by
some other library, a layer that runs or loads code (Lambda, TFSMLayer, TorchModuleWrapper,
JaxLayer, FlaxLayer), or ask for unsafe deserialisation. This module walks the whole
description first (nested models included) and refuses any of those with a ModelLoadError that
names what was found, where, why it is refused and what to do instead. Only then does
inference.load_model hand the file to Keras, with `safe_mode=True`.

The forms recognised are the ones Keras 3 reads (keras/src/saving/serialization_lib.py and the
legacy HDF5 loader, keras/src/legacy/saving/): `{"module", "class_name", "config",
"registered_name"}` objects, `"class_name": "function"` references to functions by module path,
`"__lambda__"` (marshalled Python bytecode), `"__typespec__"`, legacy `.h5` class names that are
registered names (`"package>Name"`), and the legacy Lambda's `"function_type": "lambda"` with
its bytecode in a list.

A legacy `.h5` file's description is its root `model_config` attribute, read here with h5py
under the same size caps as a `.keras` file's config.json; its datasets are sized from their
metadata (nothing is read) and may not point outside the file (external links, external
storage, virtual datasets). No TensorFlow; h5py is imported only to read an `.h5` file.
"""

from __future__ import annotations

import os
import re
import stat
import zipfile
import zlib
from pathlib import Path

from alexnet_core.errors import AlexNetError
from alexnet_core.store import fileio

# The packages whose classes a model file may name: Keras itself and this project (its layers
# are registered under the package name "alexnet_core").
ALLOWED_PACKAGES = ("keras", "alexnet_core")
PROJECT_PACKAGE = "alexnet_core"

# Keras namespaces whose functions a model may name (activations, losses, ...): what a model
# computes with. Everything else under keras (config, utils, saving, models, backend, export,
# ...) can change how Keras itself behaves, read or write files, or load further models.
FUNCTION_NAMESPACES = ("activations", "losses", "metrics", "ops", "initializers", "regularizers", "constraints",
                       "optimizers", "random")

# Layers that carry or load code instead of describing computation.
CODE_LAYERS = {
    "Lambda": "a Lambda layer runs Python code stored in the file (or named from a script) when the model runs",
    "TFSMLayer": "a TFSMLayer loads a TensorFlow SavedModel from another place on disk, with its own graph of "
                 "operations",
    "TorchModuleWrapper": "a TorchModuleWrapper unpickles a PyTorch module stored in the file, and unpickling runs "
                          "code",
    "JaxLayer": "a JaxLayer runs Python functions named in the file",
    "FlaxLayer": "a FlaxLayer runs a Flax module named in the file",
}

# The Keras forms that are values, not classes or functions.
SPECIAL_CLASS_NAMES = {"__keras_tensor__", "__tensor__", "__numpy__", "__bytes__", "__ellipsis__", "__slice__"}

IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,199}$")
CLASS = re.compile(r"^[A-Z][A-Za-z0-9_]{0,199}$")

MAX_FINDINGS = 5  # named in one message
MAX_NODES = 2_000_000  # objects and lists walked in one description

REBUILD = ("rebuild the model from Keras' own layers (Rescaling or Normalization for preprocessing, "
           "Activation for activations), train or copy its weights, and save it again with model.save('model.keras')")


class ModelLoadError(AlexNetError, ValueError):
    """A model that cannot be loaded; the message says what to give instead. (Defined here, where
    model files are first judged, and used by inference, which every caller imports it from.)"""


def _module_package(module: str) -> str:
    return module.split(".", 1)[0]


def _where(path: list[str]) -> str:
    return " > ".join(path[-4:]) if path else "the top level"


def _function_allowed(module: str, name) -> bool:
    parts = module.split(".")
    if parts[0] != "keras" or not isinstance(name, str) or not IDENTIFIER.match(name):
        return False
    rest = parts[1:]
    if rest[:1] == ["src"]:
        rest = rest[1:]
    return bool(rest) and rest[0] in FUNCTION_NAMESPACES and "enable_unsafe_deserialization" not in name


def _check_object(node: dict, where: str) -> list[str]:
    """Findings for one `{"class_name", ...}` object of a model description."""
    found = []
    class_name = node.get("class_name")
    module = node.get("module")
    registered = node.get("registered_name")
    config = node.get("config")
    if not isinstance(class_name, str):
        return [f"an object at {where} whose class name is not text ({str(class_name)[:60]!r}); a model file "
                "names every object it holds by class"]
    short = class_name.split(">")[-1]
    if class_name == "__lambda__":
        return [f"serialised Python code (a lambda function's bytecode) at {where}: loading it would run code from "
                "the file. Replace the lambda with a named Keras function or layer"]
    if class_name == "__typespec__":
        return [f"a TensorFlow type specification at {where} naming {str(node.get('module'))[:80]!r}: image "
                "classifiers do not carry one, and it names a class outside Keras"]
    if short in CODE_LAYERS:
        kind = short if short.endswith("Layer") else f"{short} layer"
        return [f"a {kind} at {where}: {CODE_LAYERS[short]}. Remove it: "
                f"{REBUILD}"]
    if class_name in SPECIAL_CLASS_NAMES:
        return []
    if ">" in class_name and class_name.split(">", 1)[0] != PROJECT_PACKAGE:
        found.append(f"the custom object {class_name[:100]!r} at {where}: its code is registered by a package "
                     "outside Keras and this app, so it is not in the file and this app will not look for it")
    elif ">" not in class_name and class_name != "function" and not CLASS.match(class_name):
        found.append(f"{class_name[:100]!r} at {where}, which is not the name of a Keras class (Keras classes "
                     "start with a capital letter); an old-style model file could make Keras call a function by "
                     "that name")
    if module is not None:
        if not isinstance(module, str) or not module:
            found.append(f"an object at {where} whose module is not text ({str(module)[:60]!r})")
        elif class_name == "function":
            if module == "builtins":
                if not (isinstance(config, str) and IDENTIFIER.match(config)):
                    found.append(f"a built-in function reference at {where} with a name that is not a plain "
                                 f"name ({str(config)[:80]!r})")
            elif not _function_allowed(module, config):
                found.append(f"the function {module[:100]}.{str(config)[:60]} at {where}: a model may name "
                             f"functions from Keras' {', '.join(FUNCTION_NAMESPACES[:4])}, ... only; this one "
                             "lives outside them and calling it could run anything")
        elif _module_package(module) not in ALLOWED_PACKAGES:
            found.append(f"the Python module {module[:100]!r} (class {class_name[:60]!r}) at {where}: it is outside "
                         "Keras and this app, the only places a model file may name classes from, and importing it "
                         "would run its code")
        elif _module_package(module) == PROJECT_PACKAGE and not (isinstance(registered, str)
                                                                 and registered.startswith(PROJECT_PACKAGE + ">")):
            found.append(f"the class {module[:100]}.{class_name[:60]} at {where}, which this app does not register "
                         "as a model part")
    if registered is not None:
        allowed = {class_name, short} | ({config} if class_name == "function" and isinstance(config, str) else set())
        if not isinstance(registered, str):
            found.append(f"an object at {where} with a registered name that is not text ({str(registered)[:60]!r})")
        elif registered not in allowed and not registered.startswith(PROJECT_PACKAGE + ">"):
            found.append(f"the registered name {registered[:100]!r} on {class_name[:60]!r} at {where}: Keras would "
                         "build whatever was registered under that name instead of the class the file names (a "
                         "custom-object substitution); only Keras' own classes and this app's are accepted")
    if class_name == "function" and module is None and registered not in (None, config):
        found.append(f"a function reference at {where} without a module ({str(config)[:60]!r})")
    return found


def findings(document) -> list[str]:
    """Everything in a model description (a parsed config.json or model_config) that names or
    carries code: a list of sentences, empty when the description is clean."""
    found: list[str] = []
    stack: list[tuple[object, list[str]]] = [(document, [])]
    nodes = 0
    while stack and len(found) < MAX_FINDINGS:
        node, path = stack.pop()
        nodes += 1
        if nodes > MAX_NODES:
            found.append(f"a description of over {MAX_NODES:,} objects: damaged or not a model")
            break
        if isinstance(node, list):
            stack.extend((item, path) for item in reversed(node))
            continue
        if not isinstance(node, dict):
            continue
        where = _where(path)
        if "class_name" in node:
            name = node.get("name") or (node["config"].get("name") if isinstance(node.get("config"), dict) else None)
            if isinstance(name, str) and node.get("class_name") not in SPECIAL_CLASS_NAMES:
                path = [*path, f"{str(node.get('class_name'))[:40]} {name[:60]!r}"]
            found.extend(_check_object(node, _where(path)))
            if str(node.get("class_name")).split(">")[-1] in CODE_LAYERS:
                continue  # named once: its function is the code just reported
        for key, value in node.items():
            if key == "safe_mode" or (isinstance(value, str) and "enable_unsafe_deserialization" in value):
                found.append(f"a request for unsafe deserialisation ({str(key)[:40]}: {str(value)[:60]}) at {where}: "
                             "this app always loads with Keras' safe mode on")
            elif key == "function_type" and value == "lambda":
                found.append(f"a legacy Lambda's function at {where}: marshalled Python bytecode, which would run "
                             f"when the model is built. Remove it: {REBUILD}")
            elif key in ("function_type", "output_shape_type") and value == "function":
                found.append(f"a function named by module path at {where} ({str(node.get('function'))[:60]!r} in "
                             f"{str(node.get('module'))[:60]!r}): it would be imported and run")
            if isinstance(value, (dict, list)):
                stack.append((value, path + ([str(key)[:40]] if key not in ("config", "layers") else [])))
    return found[:MAX_FINDINGS]


def check_description(document, file_name: str) -> None:
    """Raise ModelLoadError naming what a model description carries that could run code."""
    found = findings(document)
    if found:
        raise _refusal(file_name, found)


def _refusal(file_name: str, found: list[str]) -> ModelLoadError:
    listed = "; ".join(found)
    return ModelLoadError(f"{file_name} was refused before anything in it was loaded. It contains {listed}. "
                          "Model files can carry code, so this app opens only models described entirely by "
                          "Keras' own layers and functions (and this app's). If you made this model, save it "
                          "again without those parts; if it came from someone else, treat it as unsafe anywhere.")


# --- legacy HDF5 (.h5) files --------------------------------------------------------------------------

H5_SUFFIXES = (".h5", ".hdf5")
MAX_H5_OBJECTS = 100_000  # groups and datasets in one file


def is_h5(path: Path) -> bool:
    return Path(path).suffix.lower() in H5_SUFFIXES


def check_h5_file(path: Path, max_config_bytes: int, max_weight_bytes: int) -> dict:
    """Refuse a legacy Keras `.h5` model file, before Keras reads it, that is not a regular HDF5
    file, has no model description, whose description is oversized, damaged or carries code
    (`findings`), whose weights would unpack to more than `max_weight_bytes` or much more than
    the file holds, or that points outside itself. Returns the parsed description."""
    import h5py

    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise ModelLoadError(f"{path.name} is not a regular file (a folder, pipe or device); not loaded")
        size = os.stat(path).st_size
        handle = h5py.File(path, "r")
    except ModelLoadError:
        raise
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{path.name} is not a Keras .h5 model file (not an HDF5 file: {str(exc)[:200]})") from exc
    with handle:
        if "model_config" not in handle.attrs:
            raise ModelLoadError(f"{path.name} holds no model description (no model_config): it is a weights-only file "
                         "or not a Keras model. Save the whole model with model.save('model.keras').")
        try:
            attr = handle.attrs.get_id("model_config")
            stored = attr.get_storage_size()
        except (OSError, ValueError, KeyError) as exc:
            raise ModelLoadError(f"{path.name}: its model description is damaged ({str(exc)[:200]})") from exc
        if stored > max_config_bytes:
            raise ModelLoadError(f"{path.name}: its model description is {stored / 2**20:.0f} MiB, over the "
                         f"{max_config_bytes // 2**20} MiB limit; not loaded")
        try:
            raw = handle.attrs["model_config"]
            if hasattr(raw, "tobytes") and not isinstance(raw, (bytes, str)):
                raw = raw.tobytes() if getattr(raw, "ndim", 1) == 0 else raw
            document = fileio.parse_json(raw if isinstance(raw, (bytes, str)) else str(raw))
        except (OSError, ValueError, TypeError, UnicodeDecodeError) as exc:
            raise ModelLoadError(f"{path.name}: its model description is damaged ({str(exc)[:200]})") from exc
        if not isinstance(document, dict) or not isinstance(document.get("config"), (dict, list)):
            raise ModelLoadError(f"{path.name}: its model description is not a Keras model's")
        check_description(document, path.name)
        declared = _h5_weight_bytes(handle, path.name)
    if declared > max_weight_bytes:
        raise ModelLoadError(f"{path.name} declares {declared / 2**30:.1f} GiB of weights, over the "
                     f"{max_weight_bytes / 2**30:.1f} GiB limit (ALEXNET_MAX_MODEL_BYTES); not loaded")
    if declared > 1.1 * size + 2**20:
        raise ModelLoadError(f"{path.name} declares {declared / 2**20:.0f} MiB of weights but holds "
                             f"{size / 2**20:.0f} MiB: the file is damaged or not what it claims; not loaded")
    return document


def check_weights_member(path: Path, member: str) -> None:
    """Refuse a .keras file whose weights (an HDF5 file inside the archive) link or point outside
    it (external links, external storage, virtual datasets), from their metadata only."""
    import h5py

    try:
        with zipfile.ZipFile(path) as archive, archive.open(member) as fh, h5py.File(fh, "r") as handle:
            _h5_weight_bytes(handle, f"{path.name} ({member})")
    except ModelLoadError:
        raise
    except (OSError, ValueError, RuntimeError, NotImplementedError, zipfile.BadZipFile, zlib.error, EOFError) as exc:
        raise ModelLoadError(f"{path.name}: its weights ({member}) are damaged ({str(exc)[:200]}); not loaded") from exc


def _h5_weight_bytes(handle, file_name: str) -> int:
    """Bytes the file's datasets would unpack to, from their metadata; refuses links and storage
    outside the file."""
    import h5py

    total, seen = 0, 0
    stack = [(handle, "/")]
    while stack:
        group, where = stack.pop()
        for key in list(group.keys()):
            seen += 1
            if seen > MAX_H5_OBJECTS:
                raise ModelLoadError(f"{file_name} holds over {MAX_H5_OBJECTS:,} objects: damaged or not a model; "
                                     "not loaded")
            link = group.get(key, getlink=True)
            if isinstance(link, (h5py.ExternalLink, h5py.SoftLink)):
                target = "another file" if isinstance(link, h5py.ExternalLink) else "another place"
                raise ModelLoadError(f"{file_name}: {where}{key[:80]} is a link to {target}; a model file must hold "
                                     "its own weights. Not loaded.")
            item = group.get(key)
            if isinstance(item, h5py.Group):
                stack.append((item, f"{where}{key[:80]}/"))
            elif isinstance(item, h5py.Dataset):
                if item.external or item.is_virtual:
                    raise ModelLoadError(f"{file_name}: the weights {where}{key[:80]} are stored in another file; a "
                                         "model file must hold its own weights. Not loaded.")
                total += int(item.size) * int(item.dtype.itemsize)
    return total
