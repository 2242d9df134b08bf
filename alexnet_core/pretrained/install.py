"""Installing published ImageNet weights: downloaded (with progress, the published checksum
verified) or taken from a file the user has, converted once, and kept as an installed model
(store/model_home.py) that every command and page names: `imagenet-torchvision`, `imagenet-bvlc`.

Nothing is ever half-made: the download goes to a temporary folder inside the models folder, the
model is written inside `model_home.installing(name)` (model.keras, then model.json last) and
appears in one rename; a failure removes what it wrote, and the leftovers of a killed install
(its process gone) are cleared by the next one. A file with the published structure but not the
published checksum (a fine-tuned copy, a re-saved file) is installed as the user's own, under a
name that is not the published one, with the user's class names.
"""

from __future__ import annotations

# Imports inside functions are deliberate: the converters (PyTorch, ONNX, Keras) load only when a
# file is converted, so listing the sources (the pages, the command line) stays light.
import contextlib
import errno
import hashlib
import importlib.util
import os
import re
import secrets
import shutil
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

from alexnet_core import locations
from alexnet_core.pretrained import sources
from alexnet_core.pretrained.sources import PretrainedError
from alexnet_core.store import fileio, model_home

CHUNK = 1 << 20
MAX_CLASSES_FILE_BYTES = 4 * 2**20
MAX_CLASS_NAME = 200
IMAGENET = "imagenet"  # `classes_file` value meaning the bundled 1,000 ImageNet classes
WNID_LINE = re.compile(r"^(n\d{8})\s+(\S.*)$")
Progress = Callable[[dict], None]


def own_name(source: str) -> str:
    return f"own-{source}"


def _report(progress: Progress | None, **event) -> None:
    if progress is not None:
        progress(event)


def _sha256(path: Path, progress: Progress | None = None) -> str:
    digest = hashlib.sha256()
    total = path.stat().st_size
    done, started = 0, time.monotonic()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
            done += len(chunk)
            if done % (32 * CHUNK) < CHUNK or done == total:
                _report(progress, phase="checksum", done=done, total=total, rate=done / max(time.monotonic() - started,
                                                                                          1e-6), eta=None)
    return digest.hexdigest()


def _temp_folder(label: str) -> Path:
    """A temporary folder in the models folder, named so that model_home.remove_leftovers clears it
    once this process is gone."""
    root = locations.models_root()
    root.mkdir(parents=True, exist_ok=True)
    folder = root / f"{model_home.TEMP_PREFIX}{label}-{os.getpid()}-{secrets.token_hex(4)}"
    folder.mkdir()
    return folder


def _check_space(folder: Path, needed: int, what: str) -> None:
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise PretrainedError(f"Not enough disk space for {what}: {needed / 2**20:,.0f} MiB needed in {folder}, "
                              f"{free / 2**20:,.0f} MiB free. Free some space (or set ALEXNET_MODELS_DIR to a "
                              "folder on a larger disk) and try again.")


def _disk_refusal(exc: OSError, folder: Path, needed: int) -> PretrainedError:
    free = shutil.disk_usage(folder).free if folder.exists() else 0
    why = "the disk is full" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else os.strerror(exc.errno)
    return PretrainedError(f"Cannot write in {folder} ({why}; {free / 2**20:,.0f} MiB free, about "
                           f"{needed / 2**20:,.0f} MiB needed); nothing was installed. Free some space or make the "
                           "folder writable (or set ALEXNET_MODELS_DIR to another folder) and try again.")


def download(url: str, dest: Path, expected_bytes: int, progress: Progress | None = None,
             timeout: float = 30.0) -> str:
    """Download `url` into `dest`, reporting bytes, rate and ETA; returns the SHA-256 of what came.
    More bytes than `expected_bytes` is refused as soon as they come (not the published file)."""
    if urllib.parse.urlparse(url).scheme not in ("http", "https"):
        raise PretrainedError(f"{url} is not an http(s) address.")
    request = urllib.request.Request(url, headers={"User-Agent": "alexnet-explorer"})
    digest = hashlib.sha256()
    done, started = 0, time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response, open(dest, "wb") as fh:
            declared = response.headers.get("Content-Length")
            total = int(declared) if declared and declared.isdigit() else expected_bytes
            if total > expected_bytes:
                raise PretrainedError(f"{url} offers {total:,} bytes where the published file has {expected_bytes:,}: "
                                      "it is not the published file; nothing was installed.")
            while chunk := response.read(CHUNK):
                done += len(chunk)
                if done > expected_bytes:
                    raise PretrainedError(f"{url} sent more than the published file's {expected_bytes:,} bytes: it is "
                                          "not the published file; nothing was installed.")
                digest.update(chunk)
                fh.write(chunk)
                rate = done / max(time.monotonic() - started, 1e-6)
                _report(progress, phase="download", done=done, total=total, rate=rate,
                        eta=max(total - done, 0) / rate if rate > 0 else None)
    except (urllib.error.URLError, OSError) as exc:
        if fileio.is_disk_error(exc):
            raise _disk_refusal(exc, dest.parent, expected_bytes) from exc
        reason = getattr(exc, "reason", None) or exc
        raise PretrainedError(f"Downloading {url} failed ({reason}); nothing was installed. On a machine without "
                              "internet access, download the file elsewhere and install it with --file PATH "
                              "(the app: \"I have the file\").") from exc
    return digest.hexdigest()


def read_classes(classes_file, num_classes: int | None) -> tuple[list[str], dict[str, str]]:
    """Class names (and words) for a model with `num_classes` outputs: the lines of a text file,
    one per output in order (`wnid words` lines give the wnid as name and the rest as words), or
    `imagenet` for the bundled 1,000 ImageNet classes. `num_classes` None: the count is checked later."""
    if str(classes_file) == IMAGENET:
        names, words = sources.imagenet_classes()
    else:
        path = Path(classes_file).expanduser()
        if not fileio.regular_file(path):
            raise PretrainedError(f"The classes file {path} is not a readable file; give a text file with one class "
                                  "name per line, in the model's output order.")
        if path.stat().st_size > MAX_CLASSES_FILE_BYTES:
            raise PretrainedError(f"The classes file {path} is over {MAX_CLASSES_FILE_BYTES // 2**20} MiB: give one "
                                  "class name per line.")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise PretrainedError(f"The classes file {path} is not UTF-8 text; save it as UTF-8, one class name per "
                                  "line.") from exc
        lines = [" ".join(line.split()) for line in text.splitlines()]
        while lines and not lines[-1]:
            lines.pop()
        if any(not line for line in lines):
            raise PretrainedError(f"The classes file {path} has an empty line ({lines.index('') + 1}); give one "
                                  "class name on every line, in the model's output order.")
        matched = [WNID_LINE.match(line) for line in lines]
        if lines and all(matched):
            names = [m.group(1) for m in matched]
            words = {m.group(1): m.group(2)[:MAX_CLASS_NAME] for m in matched}
        else:
            names, words = [line[:MAX_CLASS_NAME] for line in lines], {}
        duplicates = sorted({n for n in names if names.count(n) > 1}) if len(set(names)) != len(names) else []
        if duplicates:
            raise PretrainedError(f"The classes file {path} names {', '.join(map(repr, duplicates[:3]))} more than "
                                  "once; every class needs its own name.")
    check_count(names, num_classes)
    return names, words


def check_count(names: list[str], num_classes: int | None) -> None:
    if num_classes is not None and len(names) != num_classes:
        raise PretrainedError(f"The classes file gives {len(names):,} class names but the model's last layer has "
                              f"{num_classes:,} outputs; give exactly one name per output, in order.")


def converter(source: sources.Source):
    """The module that reads this source's files: torch_import (.pth) or onnx_import (.onnx)."""
    if source.file_format == "pth":
        from alexnet_core.pretrained import torch_import

        return torch_import
    from alexnet_core.pretrained import onnx_import

    return onnx_import


def _require(source: sources.Source) -> None:
    """Refuse early (before any download) when the library that reads this source is missing."""
    needed = {"pth": ("torch",), "onnx": ("onnx", "onnxruntime")}[source.file_format]
    for module in needed:
        if importlib.util.find_spec(module) is None:
            raise sources.missing(source.needs)


def _choose_name(source: sources.Source, published: bool, name: str | None) -> str:
    if published:
        return model_home.check_name(name or source.model_name)
    chosen = model_home.check_name(name or own_name(source.key))
    if chosen in sources.PUBLISHED_NAMES:
        raise PretrainedError(f"This file is not the published {source.file_name} (its checksum differs), so it "
                              f"cannot be installed as {chosen!r}, the published weights' name; give it another "
                              f"name with --name (default {own_name(source.key)!r}).")
    return chosen


def install(source: str, file=None, name: str | None = None, classes_file=None,
            progress: Progress | None = None, url: str | None = None) -> dict:
    """Install `source`'s weights (torchvision | bvlc): downloaded from `url` (default: the
    published address) when `file` is None, else read from `file`. Returns {"name", "path",
    "kind", "source", "checksum_match", "sha256", "num_classes", "seconds"}. `progress(event)` is
    called with {"phase": "download" | "checksum" | "convert" | "write", "done", "total" (bytes),
    "rate" (bytes a second), "eta" (seconds left, or None)}."""
    try:
        return _install(source, file, name, classes_file, progress, url)
    except OSError as exc:  # the models folder cannot be made or written
        root = locations.models_root()
        if fileio.is_disk_error(exc):
            raise _disk_refusal(exc, root, sources.get(source).bytes) from exc
        raise PretrainedError(f"Cannot install into the models folder {root} ({exc.strerror or exc}"
                              f"{': ' + str(exc.filename) if exc.filename else ''}); nothing was installed. Make it a "
                              "writable folder (or set ALEXNET_MODELS_DIR to one) and try again.") from exc


def _install(source, file, name, classes_file, progress, url) -> dict:
    started = time.monotonic()
    src = sources.get(source)
    _require(src)
    model_home.remove_leftovers()
    root = locations.models_root()
    root.mkdir(parents=True, exist_ok=True)
    if file is None and name is not None:
        _choose_name(src, True, name)  # a bad name is refused before a 233 MB download
    download_dir = None
    try:
        if file is None:
            _check_space(root, int(src.bytes * 2.2), f"downloading and converting {src.file_name}")
            download_dir = _temp_folder(f"download-{src.key}")
            path = download_dir / src.file_name
            digest = download(url or src.url, path, src.bytes, progress)
            if digest != src.sha256:
                raise PretrainedError(f"The downloaded {src.file_name} is not the published file: its SHA-256 is "
                                      f"{digest}, the published one {src.sha256}. Nothing was installed; try again "
                                      "later, or check what sits between this machine and the internet.")
        else:
            path = Path(file).expanduser()
            if not fileio.regular_file(path):
                raise PretrainedError(f"{path} is not a readable file; give the path of the {src.file_name} file "
                                      f"(or another .{src.file_format} file of the same structure).")
            try:
                digest = _sha256(path, progress)
            except OSError as exc:
                raise PretrainedError(f"{path} cannot be read ({exc.strerror or exc}); nothing was installed.") from exc
        published = digest == src.sha256
        chosen = _choose_name(src, published, name)
        _check_space(root, int(src.bytes * 1.1), f"the converted model {chosen!r}")
        given = read_classes(IMAGENET if published else classes_file, None) if published or classes_file else None
        if given is not None and src.file_format == "pth":  # the class count is known before converting
            from alexnet_core.pretrained import torch_import

            check_count(given[0], torch_import.read_layers(path)[1])
        _report(progress, phase="convert", done=0, total=1, rate=None, eta=None)
        model, info = converter(src).convert(path)
        num_classes = int(model.output_shape[-1])
        input_size = int(model.input_shape[1])
        if given is not None:
            check_count(given[0], num_classes)
            names, words = given
        else:
            names, words = [f"class {i}" for i in range(num_classes)], {}
        record = {
            "kind": "pretrained" if published else "own",
            "source": src.key,
            "title": src.title if published else f"Your own {src.variant} AlexNet ({Path(path).name})",
            "variant": src.variant,
            "class_names": names,
            "class_words": words,
            "preprocessing": src.preprocessing(input_size),
            "file_sha256": digest,
            "file_name": Path(path).name[:200],
            "installed": time.time(),
            "note": (f"{src.what} Converted from {src.file_name}, the published file (checksum verified)."
                     if published else
                     f"Imported from {Path(path).name[:200]}: the structure of {src.title}, but not the published "
                     f"file (its SHA-256 differs), so these are your own weights"
                     + (" and class names." if classes_file is not None else "; its classes are numbered.")),
            "identified": {k: v for k, v in info.items() if k in ("format", "input_size", "num_classes", "layers")},
            # The network as converted (variant, input size, classes and details such as the BVLC model's
            # Caffe pooling and LRN constants): what a fine-tuning run rebuilds (train/finetune.py).
            "arch": architecture(src.variant, input_size, num_classes, info),
        }
        if published:
            record["published"] = dict(src.published)
        _report(progress, phase="write", done=0, total=1, rate=None, eta=None)
        try:
            model_home.keep(chosen, model.save, record)
        except OSError as exc:
            if fileio.is_disk_error(exc):
                raise _disk_refusal(exc, root, src.bytes) from exc
            raise
    finally:
        if download_dir is not None:
            shutil.rmtree(download_dir, ignore_errors=True)
    final = model_home.find(chosen)
    return {"name": chosen, "path": str(final), "kind": record["kind"], "source": src.key,
            "checksum_match": published, "sha256": digest, "num_classes": num_classes,
            "seconds": round(time.monotonic() - started, 2)}


def architecture(variant: str, input_size: int, num_classes: int, info: dict) -> dict:
    """The record's `arch`: {variant, input_size, num_classes, lrn, pool_padding}, the details as
    the converter built the network (`info["arch"]`), else the variant's own."""
    from alexnet_core.models.variants import DETAILS, get_arch

    built = info.get("arch") if isinstance(info.get("arch"), dict) else {}
    details = {key: built[key] for key in DETAILS if key in built}
    return {"variant": variant, "input_size": int(input_size), "num_classes": int(num_classes),
            **get_arch(variant, input_size=input_size, **details).details()}


def dependency_available(source: sources.Source) -> bool:
    needed = {"pth": ("torch",), "onnx": ("onnx", "onnxruntime")}[source.file_format]
    return all(importlib.util.find_spec(module) is not None for module in needed)


def status() -> list[dict]:
    """Each source: what it is, its size and licence, whether its library is here, whether it is
    installed (and under which name, with what record)."""
    rows = []
    for src in sources.SOURCES.values():
        path = model_home.find(src.model_name)
        record = model_home.read_record(src.model_name) if path is not None else {}
        rows.append({**src.describe(), "installed": path is not None, "path": str(path) if path else None,
                     "installed_bytes": path.stat().st_size if path else None,
                     "checksum_match": record.get("file_sha256") == src.sha256 if record else None,
                     "reader_available": dependency_available(src),
                     "install_hint": None if dependency_available(src) else sources.INSTALL_EXTRA})
    return rows


def host_reachable(url: str, timeout: float = 3) -> bool:
    """Whether the host of `url` accepts a connection within `timeout` seconds (no request is sent)."""
    try:
        parts = urllib.parse.urlparse(url)
        port = parts.port or {"https": 443, "http": 80}.get(parts.scheme)
        if not parts.hostname or port is None:
            return False
        found: list = []
        # The name lookup ignores socket timeouts (it can hang for many seconds offline): bounded here.
        lookup = threading.Thread(target=lambda: found.extend(_addresses(parts.hostname, port)), daemon=True)
        lookup.start()
        lookup.join(timeout)
        for family, kind, proto, _, address in found[:4]:
            with contextlib.suppress(OSError), socket.socket(family, kind, proto) as sock:
                sock.settimeout(timeout)
                sock.connect(address)
                return True
        return False
    except (OSError, ValueError):
        return False


def _addresses(host: str, port: int) -> list:
    try:
        return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return []


def remove(name: str) -> None:
    model_home.remove(name)
