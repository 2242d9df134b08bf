"""torchvision's AlexNet weights (a `.pth` file) into the Keras `torchvision` variant.

Reading: only `torch.load(path, weights_only=True, map_location="cpu")` (memory-mapped when the
file's format allows), PyTorch's loader that unpickles tensors and plain containers and nothing
else, so nothing in the file can run code. PyTorch is the `pretrained` extra; without it every
function here raises `MissingDependency` saying what to install.

Identifying: by structure, never by the tensors' names: the ordered kinds (convolution: 4-D,
linear: 2-D, each followed by its 1-D bias) and shapes must be torchvision's AlexNet's, with any
number of classes in the last layer (a fine-tuned copy). What differs is said plainly.

Converting: convolution kernels OIHW -> HWIO, linear weights (out, in) -> (in, out), and fc6's
rows from PyTorch's NCHW flatten order (c, h, w) to Keras' NHWC order (h, w, c).
"""

from __future__ import annotations

# Imports inside functions are deliberate: PyTorch, NumPy and Keras load on first use, so importing
# this module (the pages, the command line's `pretrained` listing) stays light.
from dataclasses import dataclass
from pathlib import Path

from alexnet_core.pretrained.sources import PretrainedError, checked_weights_file, missing

VARIANT = "torchvision"
INPUT_SIZE = 224
# torchvision's AlexNet: (layer, kind, weight shape); None is the class count, read from the file.
EXPECTED = (
    ("conv1", "conv", (64, 3, 11, 11)),
    ("conv2", "conv", (192, 64, 5, 5)),
    ("conv3", "conv", (384, 192, 3, 3)),
    ("conv4", "conv", (256, 384, 3, 3)),
    ("conv5", "conv", (256, 256, 3, 3)),
    ("fc6", "linear", (4096, 256 * 6 * 6)),
    ("fc7", "linear", (4096, 4096)),
    ("fc8", "linear", (None, 4096)),
)
KIND_OF_RANK = {4: "conv", 2: "linear"}
MAX_CLASSES = 100_000


def require_torch():
    try:
        import torch
    except ImportError as exc:
        raise missing("PyTorch") from exc
    return torch


@dataclass
class Layer:
    """One weighted layer found in the file, in file order."""

    kind: str  # conv | linear
    weight: object  # torch.Tensor
    bias: object | None
    names: tuple[str, ...]  # the tensors' names in the file (for messages only)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.weight.shape)


def _shape_text(shape) -> str:
    return "x".join("N" if d is None else str(d) for d in shape)


def _check_file(path: Path) -> Path:
    from alexnet_core.predict.inference import MAX_MODEL_BYTES

    path = Path(path).expanduser()
    checked_weights_file(path, MAX_MODEL_BYTES, PretrainedError, ".pth")
    return path


def read_state_dict(path) -> dict:
    """The tensors of a `.pth` file, in file order ({name: tensor}), read with PyTorch's weights-only
    loader (no code in the file can run). A checkpoint that wraps its weights ({"state_dict": ...},
    {"model": ...}) is unwrapped."""
    torch = require_torch()
    path = _check_file(path)
    try:
        try:
            data = torch.load(path, weights_only=True, map_location="cpu", mmap=True)
        except RuntimeError as exc:  # a file in PyTorch's legacy (pre-1.6) format cannot be memory-mapped
            if "mmap" not in str(exc):
                raise
            data = torch.load(path, weights_only=True, map_location="cpu")
    except MemoryError:
        raise
    except Exception as exc:  # weights-only refusals (UnpicklingError), damaged archives, not a .pth at all
        detail = " ".join(str(exc).split())[:400]
        raise PretrainedError(f"{path.name} is not a PyTorch weights file that can be read safely "
                              f"({type(exc).__name__}: {detail}). Only plain tensors are read (PyTorch's "
                              "weights-only loading): a file that holds code or other objects is refused.") from exc
    return _tensors(data, path.name)


def _tensors(data, name: str) -> dict:
    torch = require_torch()
    for _ in range(3):  # {"state_dict": {...}}, {"model": {...}}, possibly nested once more
        if isinstance(data, dict) and data and all(isinstance(v, torch.Tensor) for v in data.values()):
            return dict(data)
        if isinstance(data, dict):
            inner = [v for k, v in data.items() if k in ("state_dict", "model", "model_state_dict", "weights")
                     and isinstance(v, dict)]
            if len(inner) == 1:
                data = inner[0]
                continue
        break
    what = type(data).__name__ if not isinstance(data, dict) else f"a dict of {len(data)} entries, not all tensors"
    raise PretrainedError(f"{name} holds {what}, not a model's weights (a state_dict of tensors). Save the "
                          "model's weights with torch.save(model.state_dict(), path).")


def find_layers(tensors: dict, name: str = "the file") -> list[Layer]:
    """The weighted layers of a state_dict in file order: each 4-D (convolution) or 2-D (linear)
    tensor with the 1-D bias after it. Anything else is refused, named."""
    layers: list[Layer] = []
    strays = []
    for key, tensor in tensors.items():
        if not tensor.is_floating_point():
            strays.append(f"{key} ({tensor.dtype}, {_shape_text(tuple(tensor.shape))})")
            continue
        rank = tensor.dim()
        if rank in KIND_OF_RANK:
            layers.append(Layer(KIND_OF_RANK[rank], tensor, None, (str(key),)))
        elif rank == 1 and layers and layers[-1].bias is None and tensor.shape[0] == layers[-1].weight.shape[0]:
            layers[-1].bias = tensor
            layers[-1].names += (str(key),)
        else:
            strays.append(f"{key} ({_shape_text(tuple(tensor.shape))})")
    if strays:
        more = f" and {len(strays) - 4} more" if len(strays) > 4 else ""
        raise PretrainedError(
            f"{name} is not torchvision's AlexNet: it has tensors that AlexNet has none of: "
            f"{', '.join(strays[:4])}{more} (batch normalisation or another network?). AlexNet has 5 "
            "convolutions and 3 linear layers, each a weight and a bias, and nothing else.")
    return layers


def identify(layers: list[Layer], name: str = "the file") -> int:
    """Check the layers are torchvision's AlexNet (any class count); returns the class count."""
    found = [layer.kind for layer in layers]
    expected = [kind for _, kind, _ in EXPECTED]
    differences = []
    if found != expected:
        counts = f"{found.count('conv')} convolutions and {found.count('linear')} linear layers"
        differences.append(f"it has {counts} in the order {' '.join(found) or 'none'}, where torchvision's AlexNet "
                           f"has 5 convolutions then 3 linear layers")
    else:
        for (label, _, shape), layer in zip(EXPECTED, layers):
            want = tuple(layer.shape[0] if d is None else d for d in shape)
            if layer.shape != want:
                differences.append(f"{label} is {_shape_text(layer.shape)} where it should be {_shape_text(shape)}")
            if layer.bias is None:
                differences.append(f"{label} has no bias")
    if not differences:
        classes = layers[-1].shape[0]
        if not 2 <= classes <= MAX_CLASSES:
            differences.append(f"its last layer has {classes} outputs (a classifier needs 2 to {MAX_CLASSES:,})")
    if differences:
        layout = ", ".join(f"{label} {_shape_text(shape)}" for label, _, shape in EXPECTED)
        raise PretrainedError(f"{name} is not torchvision's AlexNet: {'; '.join(differences[:6])}. Expected, in "
                              f"order (weights as PyTorch stores them, N classes): {layout}.")
    return layers[-1].shape[0]


def read_layers(path) -> tuple[list[Layer], int]:
    """Read and identify a `.pth` file: (its layers in order, its class count)."""
    path = Path(path)
    layers = find_layers(read_state_dict(path), path.name)
    return layers, identify(layers, path.name)


def _float32(tensor):
    import numpy as np

    array = tensor.detach().numpy()  # a view of the tensor (of the mapped file)
    return array if array.dtype == np.float32 else array.astype(np.float32)


def keras_weights(layer: Layer, label: str) -> list:
    """A layer's weights in Keras' layout, as views of the file's tensors (no copy yet): fc6's
    kernel as (h, w, c, out), whose rows in that order are Keras' (h, w, c) flatten order."""
    weight, bias = _float32(layer.weight), _float32(layer.bias)
    if layer.kind == "conv":
        return [weight.transpose(2, 3, 1, 0), bias]  # OIHW -> HWIO
    if label == "fc6":
        # PyTorch flattens (C, H, W); Keras flattens (H, W, C): fc6's inputs are reordered to match.
        return [weight.reshape(weight.shape[0], 256, 6, 6).transpose(2, 3, 1, 0), bias]
    return [weight.T, bias]  # (out, in) -> (in, out)


ASSIGN_ROWS = 256  # rows of a kernel copied at a time (4 MiB of fc6): no second whole copy in memory


def assign_in_blocks(variable, value) -> None:
    """`variable` = `value` (a NumPy view in Keras' layout), a block of rows at a time, so the only
    copy made on the way is one block (float32). A (h, w, c, out) value fills a (h*w*c, out) kernel.

    Each block goes in by the variable's handle (`ResourceStridedSliceAssign`): Python's
    `variable[a:b].assign(...)` first reads the whole variable for the slice, and that read makes
    the assignment copy the whole kernel (fc6: 144 MiB more at the conversion's peak)."""
    import numpy as np

    if value.ndim == 4 and len(variable.shape) == 2:  # fc6: one (c, out) block per place of the map
        blocks = ((np.ascontiguousarray(value[h, w], np.float32), (h * value.shape[1] + w) * value.shape[2])
                  for h in range(value.shape[0]) for w in range(value.shape[1]))
    elif value.ndim < 2 or value.shape[0] <= ASSIGN_ROWS:
        variable.assign(np.ascontiguousarray(value, np.float32))
        return
    else:
        blocks = ((np.ascontiguousarray(value[start:start + ASSIGN_ROWS], np.float32), start)
                  for start in range(0, value.shape[0], ASSIGN_ROWS))
    for block, start in blocks:
        assign_slice(variable, [start, 0], [start + len(block), block.shape[1]], [1, 1], block)


def assign_slice(variable, begin, end, strides, value) -> None:
    """variable[begin:end:strides] = value (float32), written through the variable's handle
    without reading the variable (see assign_in_blocks)."""
    import tensorflow as tf

    tf.raw_ops.ResourceStridedSliceAssign(ref=variable.value.handle, begin=begin, end=end, strides=strides,
                                          value=value)


def _release_pages(tensor, path) -> None:
    """Let the kernel drop the pages of a tensor read from the memory-mapped file `path` once it is
    copied (Linux `madvise(MADV_DONTNEED)`; they would be read again from the file if touched). The
    file stays mapped until its last tensor goes, so without this every page read stays resident:
    the whole file beside the model's copy. Only pages inside a mapping of `path` itself (per
    /proc/self/maps) are released; anywhere else (another system, a legacy file read into memory)
    it does nothing."""
    import ctypes
    import mmap
    import os
    import sys

    if tensor is None or not sys.platform.startswith("linux") or not hasattr(mmap, "MADV_DONTNEED"):
        return
    try:
        if not tensor.is_contiguous():
            return
        start = tensor.data_ptr()
        end = start + tensor.numel() * tensor.element_size()
        where = os.path.realpath(path)
        with open("/proc/self/maps") as maps:  # address range, permissions, offset, device, inode, path
            regions = [fields[0].split("-") for fields in map(str.split, maps) if len(fields) >= 6 and fields[-1] == where]
        if not any(int(low, 16) <= start and end <= int(high, 16) for low, high in regions):
            return
        page = mmap.PAGESIZE
        first, last = -(-start // page) * page, end // page * page  # the pages the tensor fills whole
        if last > first:
            ctypes.CDLL(None, use_errno=True).madvise(ctypes.c_void_p(first), ctypes.c_size_t(last - first),
                                                      mmap.MADV_DONTNEED)
    except (AttributeError, OSError, RuntimeError, ValueError):  # keep the pages
        return


def to_keras(layers: list[Layer], num_classes: int, path=None):
    """The Keras `torchvision` variant at 224 px holding these weights (it ends in a softmax;
    its `fc8` layer gives the logits). Each layer's tensors are dropped from `layers` once copied,
    so the file's weights and the model's are not both whole in memory for longer than needed;
    with `path`, the file the tensors are mapped from, their pages are released as well."""
    from alexnet_core.models.variants import build_model

    model = build_model(VARIANT, num_classes=num_classes, input_size=INPUT_SIZE, to_fill=True)
    for (label, _, _), layer in zip(EXPECTED, layers):
        target = model.get_layer(label)
        kernel, bias = keras_weights(layer, label)
        if layer.kind == "linear":
            del kernel
            _fill_linear(target.kernel, layer.weight, label, path)
        else:
            assign_in_blocks(target.kernel, kernel)
            del kernel
        assign_in_blocks(target.bias, bias)
        _release_pages(layer.weight, path)
        layer.weight = layer.bias = None
        del bias
    return model


def _fill_linear(variable, weight, label: str, path) -> None:
    """A linear layer's kernel from PyTorch's [out, in] weight (fill_from_out_in), each block's
    pages of the mapped file handed back once copied: the file's copy of a weight is never
    resident whole. fc6's inputs are PyTorch's (c, h, w) flatten of 256 x 6 x 6."""
    outputs, inputs = weight.shape
    fill_from_out_in(variable, outputs, inputs, lambda start, stop: _float32(weight[start:stop]),
                     flat_shape=(256, 6, 6) if label == "fc6" else None,
                     done=lambda start, stop: _release_pages(weight[start:stop], path))


def fill_from_out_in(variable, outputs: int, inputs: int, read_rows, flat_shape: tuple | None = None,
                     done=None) -> None:
    """Dense kernel `variable` (Keras' [in, out]) from an [out, in] weight, a block of output rows
    at a time (about 9 MiB: 256 x 9,216 floats), each written straight into its columns: no whole
    copy of the weight is ever made. `read_rows(start, stop)` gives rows start..stop as float32;
    `done(start, stop)` is called once they are copied. `flat_shape` (c, h, w): the inputs are a
    (c, h, w) flatten, reordered to Keras' (h, w, c) (fc6)."""
    import numpy as np

    step = max(1, ASSIGN_ROWS * 9216 // inputs)
    for start in range(0, outputs, step):
        stop = min(start + step, outputs)
        block = read_rows(start, stop)
        block = block.reshape(stop - start, *flat_shape).transpose(2, 3, 1, 0) if flat_shape else block.T
        assign_slice(variable, [0, start], [inputs, stop], [1, 1],
                     np.ascontiguousarray(block.reshape(inputs, stop - start), np.float32))
        if done is not None:
            done(start, stop)


def convert(path) -> tuple[object, dict]:
    """A `.pth` of torchvision's AlexNet structure -> (the Keras model, what was identified)."""
    layers, num_classes = read_layers(path)
    info = {"format": "pth", "variant": VARIANT, "input_size": INPUT_SIZE, "num_classes": num_classes,
            "layers": [{"layer": label, "kind": layer.kind, "shape": list(layer.shape), "tensors": list(layer.names)}
                       for (label, _, _), layer in zip(EXPECTED, layers)]}
    model = to_keras(layers, num_classes, path)
    return model, info


# --- The reference: PyTorch running torchvision's AlexNet -------------------------------------


def reference_module(num_classes: int = 1000):
    """torchvision's AlexNet as a torch module: `torchvision.models.alexnet` when torchvision
    imports, else the same structure written out (its state_dict keys are torchvision's:
    features.0/3/6/8/10, classifier.1/4/6)."""
    torch = require_torch()
    try:
        from torchvision.models import alexnet

        return alexnet(weights=None, num_classes=num_classes)
    except Exception:  # torchvision missing, or built against another PyTorch (its C++ operators fail to load)
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


def reference_model(layers: list[Layer], num_classes: int):
    """torchvision's AlexNet in PyTorch holding the file's weights (matched by order, as the
    conversion does), in eval mode."""
    torch = require_torch()
    module = reference_module(num_classes)
    targets = [m for m in module.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    with torch.no_grad():
        for target, layer in zip(targets, layers):
            target.weight.copy_(layer.weight.float())
            target.bias.copy_(layer.bias.float())
    return module.eval()


def reference_logits(path, batch_nchw) -> object:
    """PyTorch's logits for a batch (N, 3, H, W float32, already preprocessed) of a `.pth` file."""
    import numpy as np

    torch = require_torch()
    layers, num_classes = read_layers(path)
    module = reference_model(layers, num_classes)
    with torch.inference_mode():
        return module(torch.from_numpy(np.ascontiguousarray(batch_nchw, dtype=np.float32))).numpy()
