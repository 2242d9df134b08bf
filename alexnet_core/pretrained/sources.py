"""The published ImageNet weights this app can install, one entry per source, and the 1,000
ImageNet classes bundled with the app (assets/imagenet/synset_words.txt). No TensorFlow, no
PyTorch, no ONNX: the pages and the command line read this to list the sources.

How each fact was checked (nothing can be downloaded on the machines this was written on):
- torchvision: the URL, file name, published accuracy (acc@1 56.522, acc@5 79.066) and size
  (`_file_size` 233.087 MiB) are read from torchvision 0.28's own source
  (`torchvision/models/alexnet.py`, `AlexNet_Weights.IMAGENET1K_V1`, in its wheel). The file
  name carries the first 8 hex digits of the file's SHA-256 (`7be5be79`), which is what
  torchvision itself checks on download. The full SHA-256 and the byte size (244,408,911, which is
  233.087 MiB) are those pinned by several independent public projects that verify this very
  file; they agree with each other and with the name's prefix and torchvision's size.
- bvlc: the ONNX model zoo (github.com/onnx/models) keeps `bvlcalexnet-12.onnx` as a Git LFS
  pointer whose text gives `oid sha256:6b0da951...` and `size 243863787`; the zoo's model card
  (validated/vision/classification/alexnet/README.md) gives the input (data_0, 1x3x224x224), the
  source (Caffe BVLC AlexNet -> Caffe2 -> ONNX), the licence (BSD-3-Clause) and the accuracy
  of the BVLC model: 57.1% top-1 and 80.2% top-5 on the ILSVRC-2012 validation set, centre crop
  only. (The zoo's table also lists 54.80% / 78.23% for bvlcalexnet-12, measured by Intel with
  another preprocessing; the model card's figures are the BVLC model's own and are the ones shown.)
  Caffe's recipe (the image warped to 256x256, a centre crop of the network's input, the
  BGR mean (104.00698793, 116.66876762, 122.67891434) subtracted from 0..255 pixels) is the BVLC
  model's published preprocessing (Caffe's ilsvrc_2012_mean.npy averaged per channel, as Caffe's
  classification example does).
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from alexnet_core import locations
from alexnet_core.errors import AlexNetError

INSTALL_EXTRA = ('pip install "alexnet-explorer[pretrained]" (or, in a checkout of the project, '
                 'pip install -e ".[pretrained]")')

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
CAFFE_MEAN_BGR = (104.00698793, 116.66876762, 122.67891434)  # on 0..255 pixels, B, G, R


class PretrainedError(AlexNetError, ValueError):
    """A pretrained-weights file, source or install that cannot be used; the message says why and what to do."""


def checked_weights_file(path: Path, limit: int, error: type[AlexNetError], kind: str) -> int:
    """The size of the weights file `path` (a `kind` file such as ".pth"), refused with `error` when
    it is missing, unreadable, not a regular file (a FIFO would block the reader) or over `limit`
    bytes."""
    label = path.name or str(path)
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise error(f"{label}: no such file. Give the path of the downloaded {kind} file.") from None
    except OSError as exc:
        raise error(f"{label} cannot be read ({exc.strerror or exc}); give the path of the {kind} file.") from None
    if not stat.S_ISREG(info.st_mode):
        raise error(f"{label} is not a regular file; give the {kind} file itself.")
    if info.st_size > limit:
        raise error(f"{label} is {info.st_size / 2**20:,.0f} MiB, over the {limit / 2**20:,.0f} MiB this importer "
                    "reads (ALEXNET_MAX_MODEL_BYTES); AlexNet's weights are about 233 MiB.")
    return info.st_size


class MissingDependency(PretrainedError):
    """PyTorch or ONNX (the `pretrained` extra) is not installed."""


def missing(what: str) -> MissingDependency:
    return MissingDependency(f"{what} is needed to read this file and is not installed here. Install the "
                             f"`pretrained` extra: {INSTALL_EXTRA}.")


@dataclass(frozen=True)
class Source:
    key: str  # torchvision | bvlc
    title: str
    what: str  # one sentence a non-engineer understands
    file_name: str
    url: str
    bytes: int
    licence: str
    sha256: str
    model_name: str  # the installed model's name (MODEL everywhere)
    variant: str  # the Keras variant it is converted into
    file_format: str  # "pth" (PyTorch) | "onnx"
    needs: str  # the library that reads the file
    published: dict = field(default_factory=dict)  # {"top1", "top5", "split"}
    home: str = ""  # where the file is described

    def preprocessing(self, input_size: int = 224) -> dict:
        """The preprocessing record (inputs/preprocess.py's form) of this source's training recipe."""
        base = {"input_size": int(input_size), "scale": 255.0, "resize": "bilinear, antialiased",
                "resize_to": 256, "crop": int(input_size)}
        if self.key == "bvlc":
            # Caffe subtracts a BGR mean from 0..255 pixels; the converted model takes RGB, so the
            # mean is recorded in RGB order, over 255, with std 1/255: (x/255 - m/255) / (1/255) = x - m.
            mean = [v / 255.0 for v in reversed(CAFFE_MEAN_BGR)]
            return {**base, "mean": mean, "std": [1.0 / 255.0] * 3, "resize_mode": "square"}
        return {**base, "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD), "resize_mode": "shorter"}

    def describe(self) -> dict:
        return {"source": self.key, "title": self.title, "what": self.what, "file_name": self.file_name,
                "url": self.url, "bytes": self.bytes, "licence": self.licence, "sha256": self.sha256,
                "model_name": self.model_name, "variant": self.variant, "needs": self.needs,
                "published": dict(self.published), "home": self.home}


SOURCES: dict[str, Source] = {
    "torchvision": Source(
        key="torchvision",
        title="AlexNet, torchvision's ImageNet weights (IMAGENET1K_V1)",
        what="PyTorch's AlexNet trained on the 1.2 million photos of ImageNet, which names 1,000 kinds of "
             "things (animals, objects, foods, scenes).",
        file_name="alexnet-owt-7be5be79.pth",
        url="https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
        bytes=244_408_911,
        licence="BSD-3-Clause (torchvision); trained on ImageNet, whose images are for non-commercial research",
        sha256="7be5be791159472b1fbf3c69796f7cb30dca7ad8466c2df70058c37116cdee02",
        model_name="imagenet-torchvision",
        variant="torchvision",
        file_format="pth",
        needs="PyTorch",
        published={"top1": 0.56522, "top5": 0.79066, "split": "ILSVRC-2012 validation, centre crop"},
        home="https://pytorch.org/vision/stable/models/generated/torchvision.models.alexnet.html",
    ),
    "bvlc": Source(
        key="bvlc",
        title="AlexNet, the BVLC Caffe model (ONNX model zoo)",
        what="The 2012 paper's own network, split in two halves as on its two GPUs, trained on ImageNet's "
             "1.2 million photos of 1,000 kinds of things by the Berkeley Vision and Learning Center.",
        file_name="bvlcalexnet-12.onnx",
        url="https://github.com/onnx/models/raw/main/validated/vision/classification/alexnet/model/"
            "bvlcalexnet-12.onnx",
        bytes=243_863_787,
        licence="BSD-3-Clause (ONNX model zoo); BVLC released the Caffe weights for unrestricted use; "
                "trained on ImageNet, whose images are for non-commercial research",
        sha256="6b0da9510f27f234ee96a85dc3809dd210150fdefad87f6850f9788513216945",
        model_name="imagenet-bvlc",
        variant="paper",
        file_format="onnx",
        needs="ONNX",
        published={"top1": 0.571, "top5": 0.802, "split": "ILSVRC-2012 validation, centre crop"},
        home="https://github.com/onnx/models/tree/main/validated/vision/classification/alexnet",
    ),
}

PUBLISHED_NAMES = frozenset(s.model_name for s in SOURCES.values())


def get(key: str) -> Source:
    """The source named `key` (torchvision | bvlc)."""
    if key not in SOURCES:
        raise PretrainedError(f"{str(key)[:40]!r} is not a source of published weights: use one of "
                              f"{', '.join(SOURCES)}.")
    return SOURCES[key]


# --- The 1,000 ImageNet classes ---------------------------------------------------------------

IMAGENET_CLASSES_FILE = "synset_words.txt"
IMAGENET_CLASSES = 1000


def imagenet_classes_path():
    return locations.ASSETS / "imagenet" / IMAGENET_CLASSES_FILE


def imagenet_classes() -> tuple[list[str], dict[str, str]]:
    """The 1,000 ImageNet classes in output order: (wnids, {wnid: words}), from the bundled file."""
    path = imagenet_classes_path()
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PretrainedError(f"The bundled ImageNet class list ({path}) cannot be read ({exc}); reinstall "
                              "the app.") from exc
    wnids, words = [], {}
    for line in text.splitlines():
        wnid, _, word = line.strip().partition(" ")
        if wnid:
            wnids.append(wnid)
            words[wnid] = word.strip()
    if len(wnids) != IMAGENET_CLASSES or len(words) != IMAGENET_CLASSES:
        raise PretrainedError(f"The bundled ImageNet class list ({path}) is damaged: {len(wnids)} lines, "
                              f"{len(words)} distinct classes instead of {IMAGENET_CLASSES}; reinstall the app.")
    return wnids, words
