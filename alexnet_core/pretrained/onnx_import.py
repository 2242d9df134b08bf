"""The BVLC AlexNet from the ONNX model zoo (`bvlcalexnet-12.onnx`: "Caffe BVLC AlexNet ==> Caffe2
AlexNet ==> ONNX"), identified by its graph's structure and converted exactly into the `paper`
variant; and ONNX Runtime running the same graph, the reference a conversion must match.

The network is recognised by what it computes, never by tensor names (they differ between the
zoo's versions: `softmaxout_1` or `prob_1`, ...): one chain from the image to the output of
Conv, Relu, LRN, MaxPool, ..., Reshape or Flatten, Gemm (or MatMul + Add), Relu, Dropout, ...,
Softmax, with the paper's kernel shapes, groups (2 on conv2, conv4 and conv5), strides and
padding. Its LRN constants and its pooling are carried over as they are:
- ONNX's (and Caffe's) LRN divides alpha by the window size; ours does not (`variants.LRN.caffe`).
- Caffe rounds pooling outputs up (54 -> 27 after conv1 at 224 px); the Caffe2 export writes that
  as extra padding at the end of the pooling, or as `ceil_mode`. Both become the `paper` variant
  with `pool_padding="ceil"`.

Conversion: OIHW kernels to HWIO (grouped ones too: Keras and ONNX order the groups alike), Gemm's
transB honoured, fc6's rows reordered from NCHW to NHWC flatten order, and conv1's input channels
reversed, so the Keras model takes RGB while the graph takes Caffe's BGR. The mean subtraction
is recorded as preprocessing (`preprocessing`), so `inputs.preprocess.standardize` gives x - mean
on 0..255 pixels exactly as Caffe does.

Reading: protobuf parses a message whole, so the conversion splits the file at the wire level
first (`load_structure`): protobuf parses everything but the initializers' big raw data, which
stays in the file and is read a block of rows at a time as each layer is filled (`Stored`). The
conversion so holds the model and a few MiB, never the file's weights beside it. ONNX Runtime
(the reference) gets the whole graph (`load_graph`).

Safety: the file is read only when it is a regular file under the size limit, parsed without
following external data, and refused when any tensor names external data. `onnx` and
`onnxruntime` come from the `pretrained` extra and load only inside the functions that need them.
"""

from __future__ import annotations

# Imports inside functions are deliberate: onnx, onnxruntime, TensorFlow and Keras load on first
# use, so importing this module (the command line, the app's pages) stays light.
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from alexnet_core.errors import AlexNetError
from alexnet_core.predict.inference import MAX_MODEL_BYTES
from alexnet_core.pretrained import sources
from alexnet_core.pretrained.torch_import import ASSIGN_ROWS, assign_in_blocks, assign_slice, fill_from_out_in

INSTALL = 'pip install "alexnet-explorer[pretrained]"'
# A protobuf file cannot exceed 2 GiB; the weights within it obey the project's model limit.
MAX_FILE_BYTES = min(MAX_MODEL_BYTES + 64 * 2**20, 2**31 - 1)
VARIANT = "paper"
# Caffe's ImageNet mean (ilsvrc_2012_mean.npy averaged per channel), B, G, R on 0..255 pixels.
CAFFE_MEAN_BGR = (104.00698793, 116.66876762, 122.67891434)
# The zoo's LRN (Caffe's defaults for AlexNet): local_size, alpha (before the division), beta, bias.
BVLC_LRN = {"size": 5, "alpha": 1e-4, "beta": 0.75, "bias": 1.0}
BVLC_INPUT_SIZE = 224
PASS_THROUGH = ("Dropout", "Identity")  # nothing at inference
MAX_NAME = 120  # tensor names echoed in messages and the record are cut to this


class OnnxImportError(AlexNetError, ValueError):
    """An ONNX file that cannot be read or converted; the message says why and what to do."""


class NotAlexNetError(OnnxImportError):
    """A readable ONNX graph that is not the BVLC AlexNet; the message names what differs."""


def _name(text) -> str:
    text = str(text)
    return repr(text if len(text) <= MAX_NAME else text[:MAX_NAME] + "...")


def _modules():
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError:
        raise OnnxImportError(f"Reading an ONNX file needs the onnx package, which is not installed: {INSTALL}") \
            from None
    return onnx, numpy_helper


# --- Reading the file -------------------------------------------------------------------------


def _tensors_of(graph):
    """Every tensor held in `graph` and its subgraphs: initializers, sparse ones, Constant values."""
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.HasField("t"):
                yield attribute.t
            yield from attribute.tensors
            if attribute.HasField("g"):
                yield from _tensors_of(attribute.g)
            for sub in attribute.graphs:
                yield from _tensors_of(sub)


def _checked_size(path: Path, label: str) -> int:
    size = sources.checked_weights_file(path, MAX_FILE_BYTES, OnnxImportError, ".onnx")
    if size == 0:
        raise OnnxImportError(f"{label} is empty: the download did not finish. Download it again.")
    return size


def _damaged(label: str, exc: Exception) -> OnnxImportError:
    return OnnxImportError(f"{label} is not a readable ONNX model: it is damaged or truncated "
                           f"({type(exc).__name__}). Download it again and check its SHA-256.")


def _validated(model, label: str):
    """`model`, refused when it holds no graph or any tensor names external data."""
    from onnx import TensorProto

    if not model.HasField("graph") or not len(model.graph.node):
        raise OnnxImportError(f"{label} holds no ONNX graph: it is damaged, truncated or not an ONNX model.")
    for tensor in _tensors_of(model.graph):
        if tensor.data_location == TensorProto.EXTERNAL or len(tensor.external_data):
            where = next((e.value for e in tensor.external_data if e.key == "location"), "another file")
            raise OnnxImportError(
                f"{label} keeps tensor {_name(tensor.name)} in external data ({_name(where)}); this importer reads "
                "only self-contained .onnx files, as the zoo publishes. Save it as one file: onnx.save(onnx.load(path), "
                "new_path, save_as_external_data=False).")
    return model


def load_graph(path: str | Path):
    """The whole ModelProto in `path` (weights included, as ONNX Runtime needs it), read safely: a
    regular file under MAX_FILE_BYTES, parsed without loading external data, refused when any
    tensor names external data or it holds no graph. The conversion reads the file with
    `load_structure` instead, which leaves the big weights in the file."""
    onnx, _ = _modules()
    path = Path(path)
    label = path.name or str(path)
    _checked_size(path, label)
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise OnnxImportError(f"{label} cannot be read ({exc.strerror or exc}).") from None
    if len(data) > MAX_FILE_BYTES:  # grew while we looked
        raise OnnxImportError(f"{label} is over the {MAX_FILE_BYTES / 2**20:,.0f} MiB this importer reads.")
    try:
        model = onnx.load_model_from_string(data)  # parses only: external data is never followed
    except Exception as exc:  # protobuf's DecodeError and its kin, whatever the damage
        raise _damaged(label, exc) from None
    del data
    return _validated(model, label)


# --- Reading the file without holding its weights ---------------------------------------------
#
# protobuf parses a message whole, so parsing the zoo's file holds its 233 MiB of weights beside the
# model being filled (the conversion peaked at 2.85x the file). The file is therefore split at the
# protobuf wire level first: every field is parsed by protobuf itself, except each initializer's
# `raw_data` of BIG_RAW bytes or more, whose place in the file is kept instead; those bytes are
# read a block at a time while the layer is filled (`Stored`).

BIG_RAW = 1 << 20
# Fields read one by one in Python (about 1.3 s a million): an exported network has hundreds to
# thousands; a file of hundreds of millions of tiny fields would take minutes, so it is refused.
MAX_FIELDS = 1_000_000
# ModelProto.graph, GraphProto.initializer, TensorProto.raw_data (onnx.proto's field numbers)
MODEL_GRAPH, GRAPH_INITIALIZER, TENSOR_RAW_DATA = 7, 5, 9
LENGTH_DELIMITED = 2


def _varint(handle, pos: int, end: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = handle.read(1)
        if not byte or pos >= end or shift > 63:
            raise ValueError("a field runs past the end of its message")
        pos += 1
        value |= (byte[0] & 0x7F) << shift
        if byte[0] < 0x80:
            return value, pos
        shift += 7


def _fields(handle, start: int, end: int, budget: list):
    """(number, wire type, where the field starts, where its value starts, where it ends) of each
    field of the protobuf message stored in the file between `start` and `end`. `budget` ([int])
    is the fields left to read in the whole file."""
    pos = start
    while pos < end:
        budget[0] -= 1
        if budget[0] < 0:
            raise OnnxImportError(f"the file holds more than {MAX_FIELDS:,} protobuf fields, more than any exported "
                                  "network: it is not a model this importer reads.")
        handle.seek(pos)
        key, body = _varint(handle, pos, end)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise ValueError("field number 0")
        if wire == 0:
            _, stop = _varint(handle, body, end)
        elif wire == 1:
            stop = body + 8
        elif wire == 5:
            stop = body + 4
        elif wire == LENGTH_DELIMITED:
            length, body = _varint(handle, body, end)
            stop = body + length
        else:  # groups (3, 4): not in ONNX; 6, 7: not protobuf
            raise ValueError(f"wire type {wire}")
        if stop > end:
            raise ValueError("a field runs past the end of its message")
        yield number, wire, pos, body, stop
        pos = stop


def _read(handle, start: int, stop: int) -> bytes:
    handle.seek(start)
    data = handle.read(stop - start)
    if len(data) != stop - start:
        raise ValueError("the file ended early")
    return data


def _split(handle, size: int):
    """The file's ModelProto split into: its bytes without any graph, each graph's bytes without
    its initializers, and each initializer's bytes without a big raw_data with that field's
    (offset, length) in the file (None when its data is small enough to parse)."""
    top, graphs, budget = bytearray(), [], [MAX_FIELDS]
    for number, wire, begin, body, stop in _fields(handle, 0, size, budget):
        if (number, wire) != (MODEL_GRAPH, LENGTH_DELIMITED):
            top += _read(handle, begin, stop)
            continue
        rest, initializers = bytearray(), []
        for n, w, f, b, s in _fields(handle, body, stop, budget):
            if (n, w) != (GRAPH_INITIALIZER, LENGTH_DELIMITED):
                rest += _read(handle, f, s)
                continue
            tensor, span = bytearray(), None
            for n3, w3, f3, b3, s3 in _fields(handle, b, s, budget):
                if (n3, w3) == (TENSOR_RAW_DATA, LENGTH_DELIMITED) and s3 - b3 >= BIG_RAW:
                    span = (b3, s3 - b3)  # the last occurrence wins, as protobuf's parser decides
                    continue
                if n3 == TENSOR_RAW_DATA:
                    span = None
                tensor += _read(handle, f3, s3)
            initializers.append((bytes(tensor), span))
        graphs.append((bytes(rest), initializers))
    return bytes(top), graphs


class Stored:
    """The initializers' raw data left in the file by `load_structure`: `spans` maps a tensor's
    name to (offset, length) of its little-endian bytes. Read a block of rows at a time; a file
    that changed or ends early is said to be damaged."""

    DTYPES = {1: "<f4", 11: "<f8", 10: "<f2"}  # TensorProto FLOAT, DOUBLE, FLOAT16

    def __init__(self, path: Path, spans: dict, label: str):
        self.path, self.spans, self.label = path, spans, label
        self.handle = None

    def __enter__(self):
        try:
            self.handle = open(self.path, "rb")
        except OSError as exc:
            raise OnnxImportError(f"{self.label} cannot be read ({exc.strerror or exc}).") from None
        return self

    def __exit__(self, *exc):
        if self.handle is not None:
            self.handle.close()
            self.handle = None

    def holds(self, tensor) -> bool:
        return tensor.name in self.spans and not len(tensor.raw_data)

    def values(self, tensor) -> int:
        """How many values of the tensor's type its stored bytes hold (-1: not a float type, or
        bytes that do not divide into values)."""
        dtype = self.DTYPES.get(tensor.data_type)
        length = self.spans[tensor.name][1]
        if dtype is None or length % np.dtype(dtype).itemsize:
            return -1
        return length // np.dtype(dtype).itemsize

    def rows(self, tensor, start: int, stop: int) -> np.ndarray:
        """Rows start..stop of the tensor (along its first dimension) as float32, checked finite."""
        dims = tuple(int(d) for d in tensor.dims)
        dtype = np.dtype(self.DTYPES[tensor.data_type])
        row = math.prod(dims[1:])
        offset, _ = self.spans[tensor.name]
        block = np.empty((stop - start) * row, dtype)
        self.handle.seek(offset + start * row * dtype.itemsize)
        try:
            got = self.handle.readinto(memoryview(block).cast("B"))
        except OSError as exc:
            raise OnnxImportError(f"{self.label} cannot be read ({exc.strerror or exc}).") from None
        if got != block.nbytes:
            raise OnnxImportError(f"{self.label} ended while tensor {_name(tensor.name)} was read: the file changed "
                                  "or is damaged. Download it again.")
        block = block.astype(np.float32, copy=False).reshape((stop - start, *dims[1:]))
        if not np.all(np.isfinite(block)):
            raise OnnxImportError(f"{self.label}: tensor {_name(tensor.name)} holds NaN or infinite weights; the file "
                                  "is damaged.")
        return block


def load_structure(path: str | Path):
    """The ModelProto in `path` with every initializer's big raw data left in the file, and the
    `Stored` that reads it: what `load_graph` checks, checked the same way, holding a few hundred
    KiB instead of the file's weights. Two tensors of one name (not valid ONNX) are refused, so
    a name always means one stored tensor."""
    onnx, _ = _modules()
    path = Path(path)
    label = path.name or str(path)
    size = _checked_size(path, label)
    try:
        with open(path, "rb") as handle:
            top, graphs = _split(handle, size)
    except OSError as exc:
        raise OnnxImportError(f"{label} cannot be read ({exc.strerror or exc}).") from None
    except OnnxImportError as exc:
        raise OnnxImportError(f"{label}: {exc}") from None
    except ValueError as exc:
        raise _damaged(label, exc) from None
    spans = {}
    try:
        model = onnx.ModelProto.FromString(top)
        for rest, initializers in graphs:
            model.graph.MergeFromString(rest)
            for data, span in initializers:
                tensor = model.graph.initializer.add()
                tensor.MergeFromString(data)
                if span is not None:
                    tensor.raw_data = b""
                    spans[tensor.name] = span
    except Exception as exc:  # protobuf's DecodeError and its kin, whatever the damage
        raise _damaged(label, exc) from None
    _validated(model, label)
    names = Counter(t.name for t in model.graph.initializer)
    names.update(node.output[0] for node in model.graph.node if node.op_type == "Constant" and node.output)
    twice = {name for name in spans if names[name] > 1}
    if twice:
        raise OnnxImportError(f"{label} names two tensors {_name(sorted(twice)[0])}; an ONNX graph names each value "
                              "once. The file is damaged or not an exported model.")
    return model, Stored(path, spans, label)


# --- Identifying the network ------------------------------------------------------------------


@dataclass
class Layer:
    """One layer found in the graph: its place in the paper's network and its tensors."""

    name: str  # the paper's name: conv1..conv5, fc6..fc8
    op: str
    node: str  # the graph's node name (for messages only)
    weight: str  # tensor names in the graph
    bias: str | None
    shape: tuple  # the weight's dims as stored
    transpose: bool = False  # dense weight stored [out, in] (Gemm transB=1)
    scale: float = 1.0  # Gemm's alpha
    bias_scale: float = 1.0  # Gemm's beta
    groups: int = 1


@dataclass
class Plan:
    """What `identify` found: enough to convert without looking at the graph again."""

    info: dict
    layers: list[Layer] = field(default_factory=list)
    input_name: str = ""  # the graph's names, whole (info holds them cut for display)
    logits_name: str = ""


def _constants(graph) -> dict:
    """Every constant of `graph` by name: its initializers and the values of its Constant nodes."""
    from onnx import numpy_helper

    tensors = {t.name: t for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and not node.input and node.output:
            attrs = _attributes(node)
            value = attrs.get("value")
            if value is None and isinstance(attrs.get("value_ints"), list):
                value = numpy_helper.from_array(np.asarray(attrs["value_ints"], np.int64))
            if value is not None and hasattr(value, "dims"):
                tensors[node.output[0]] = value
    return tensors


def _attributes(node) -> dict:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _ints(value, default) -> list[int]:
    return [int(v) for v in value] if value is not None else list(default)


def _dims(value_info) -> list:
    shape = value_info.type.tensor_type.shape
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in shape.dim]


def _expected_tokens(arch) -> list[tuple[str, str]]:
    """The paper's network as (op, name) in graph order: what the chain must read."""
    tokens = []
    for i, conv in enumerate(arch.convs, start=1):
        tokens += [("Conv", f"conv{i}"), ("Relu", f"conv{i}'s ReLU")]
        if conv.norm:
            tokens.append(("LRN", f"lrn{i}"))
        if conv.pool:
            tokens.append(("MaxPool", f"pool{i}"))
    tokens.append(("Flatten", "the flatten before fc6 (Reshape or Flatten)"))
    first = len(arch.convs) + 1
    for j, _ in enumerate(arch.fcs):
        tokens += [("Dense", f"fc{first + j}"), ("Relu", f"fc{first + j}'s ReLU")]
    tokens.append(("Dense", f"fc{first + len(arch.fcs)}"))
    return tokens


def _chain(graph, constants: dict, label: str) -> list[tuple[str, list]]:
    """The graph as one chain from its image input: [(token, [nodes])], where a token is an op,
    "Dense" (Gemm, or MatMul + Add) or "Flatten" (Reshape, Flatten); Dropout and Identity dropped.
    Refuses a graph that branches, has other inputs or does not end in its output."""
    weights = set(constants)
    inputs = [i for i in graph.input if i.name not in weights]
    if len(inputs) != 1:
        raise NotAlexNetError(f"{label} takes {len(inputs)} inputs; the BVLC AlexNet takes one batch of images.")
    current, found = inputs[0].name, []
    for index, node in enumerate(graph.node):
        if node.op_type == "Constant" and not node.input:
            continue
        data = [name for name in node.input if name and name not in weights]
        if data != [current] or not node.output:
            raise NotAlexNetError(
                f"{label} is not one chain of layers: node {index} ({node.op_type}) reads "
                f"{', '.join(_name(d) for d in data) or 'no layer output'} instead of the output of the layer before "
                "it. The BVLC AlexNet runs its layers one after another.")
        current = node.output[0]
        if node.op_type in PASS_THROUGH:
            continue
        if node.op_type == "Add" and found and found[-1][0] == "MatMul":
            found[-1] = ("Dense", found[-1][1] + [node])
            continue
        token = {"Gemm": "Dense", "Reshape": "Flatten", "Flatten": "Flatten"}.get(node.op_type, node.op_type)
        found.append((token, [node]))
    if current not in [o.name for o in graph.output]:
        raise NotAlexNetError(f"{label}'s last layer does not give the graph's output; it is not the BVLC AlexNet.")
    return [("Dense", nodes) if token == "MatMul" else (token, nodes) for token, nodes in found]


def _describe_token(token: str, nodes: list) -> str:
    if token == "Dense":
        return " + ".join(n.op_type for n in nodes)
    return nodes[0].op_type


def _conv_padding(conv) -> int:
    if conv.padding == "valid":
        return 0
    if conv.padding == "same":
        return conv.kernel // 2  # stride 1 in the paper's layers that use it
    return int(conv.padding)


def _shape_text(dims) -> str:
    return "x".join(str(int(d)) for d in dims)


def _pool_size(size: int, kernel: int, stride: int, begin: int, end: int, ceil_mode: bool) -> int:
    """MaxPool's output side as ONNX computes it (a window never starts in the end padding)."""
    span = size + begin + end - kernel
    if span < 0:
        return 0
    out = (-(-span // stride) if ceil_mode else span // stride) + 1
    if ceil_mode and (out - 1) * stride >= size + begin:
        out -= 1
    return out


def identify(model, label: str = "the file") -> Plan:
    """Identify the BVLC AlexNet in ModelProto `model` by its structure (shapes and attributes,
    never names). Returns the plan `convert` follows; refuses with NotAlexNetError naming what
    differs. Reads no weights, only their shapes."""
    from alexnet_core.models.variants import LRN, _out_size, _validate_lrn, get_arch

    _, numpy_helper = _modules()
    graph = model.graph
    tensors = _constants(graph)
    arch = get_arch(VARIANT)
    chain = _chain(graph, tensors, label)
    expected = _expected_tokens(arch)
    if chain and chain[-1][0] == "Softmax":
        softmax = chain.pop()[1][0]
    else:
        softmax = None
    for k, (token, nodes) in enumerate(chain):
        if k >= len(expected):
            raise NotAlexNetError(f"{label} is not the BVLC AlexNet: after fc8 it has more layers "
                                  f"({', '.join(_describe_token(t, n) for t, n in chain[k:k + 3])}).")
        want, where = expected[k]
        if token != want:
            before = f", after {expected[k - 1][1]}" if k else ""
            hint = " (CaffeNet pools before it normalises; the BVLC AlexNet normalises first)" \
                if (want, token) == ("LRN", "MaxPool") else ""
            raise NotAlexNetError(f"{label} is not the BVLC AlexNet: where AlexNet has {where} ({want}){before}, "
                                  f"this graph has {_describe_token(token, nodes)}{hint}.")
    if len(chain) < len(expected):
        missing = ", ".join(w for _, w in expected[len(chain):])
        raise NotAlexNetError(f"{label} is not the BVLC AlexNet: its graph ends after "
                              f"{expected[len(chain) - 1][1] if chain else 'its input'}, without {missing}.")

    def dims_of(name: str, what: str) -> tuple:
        if name not in tensors:
            raise NotAlexNetError(f"{label}: {what} is not a constant of the graph; the BVLC AlexNet's weights are.")
        return tuple(int(d) for d in tensors[name].dims)

    image = next(i for i in graph.input if i.name not in tensors)
    shape = _dims(image)
    if len(shape) != 4 or shape[1] != 3 or not isinstance(shape[2], int) or shape[2] != shape[3] or shape[2] < 1:
        raise NotAlexNetError(f"{label} takes input of shape {shape}; the BVLC AlexNet takes batches of square "
                              "3-channel images of a fixed size (N x 3 x 224 x 224).")
    size = int(shape[2])
    side, channels, layers, lrns, pools = size, 3, [], [], []
    conv_iter = iter(enumerate(arch.convs, start=1))
    for token, nodes in chain:
        node = nodes[0]
        attrs = _attributes(node)
        if token == "Conv":
            i, conv = next(conv_iter)
            name = f"conv{i}"
            if len(node.input) < 2:
                raise NotAlexNetError(f"{label}: {name} has no weights.")
            w = dims_of(node.input[1], f"{name}'s weight")
            groups = int(attrs.get("group", 1))
            want_groups = conv.groups if arch.groups else 1
            want = (conv.filters, channels // want_groups, conv.kernel, conv.kernel)
            if w != want or groups != want_groups:
                raise NotAlexNetError(
                    f"{label} is not the BVLC AlexNet: {name} has weights of {_shape_text(w)} in {groups} "
                    f"group{'s' if groups != 1 else ''} where AlexNet's {name} has {_shape_text(want)} in "
                    f"{want_groups} group{'s' if want_groups != 1 else ''}.")
            pad = _conv_padding(conv)
            strides = _ints(attrs.get("strides"), [1, 1])
            pads = _ints(attrs.get("pads"), [0, 0, 0, 0])
            dilations = _ints(attrs.get("dilations"), [1, 1])
            auto_pad = attrs.get("auto_pad", b"NOTSET")
            auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else str(auto_pad)
            if (strides != [conv.stride] * 2 or pads != [pad] * 4 or dilations != [1, 1]
                    or auto_pad not in ("NOTSET", "", "VALID" if pad == 0 else "NOTSET")):
                raise NotAlexNetError(
                    f"{label} is not the BVLC AlexNet: {name} has strides {strides}, pads {pads}, dilations "
                    f"{dilations} and auto_pad {auto_pad} where AlexNet's {name} has stride {conv.stride} and "
                    f"{pad} pixels of padding on every side.")
            bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
            if bias is not None and dims_of(bias, f"{name}'s bias") != (conv.filters,):
                raise NotAlexNetError(f"{label}: {name}'s bias has shape {list(dims_of(bias, ''))} where AlexNet's has "
                                      f"[{conv.filters}].")
            layers.append(Layer(name, "Conv", node.name, node.input[1], bias, w, groups=groups))
            side, channels = _out_size(side, conv.kernel, conv.stride, pad), conv.filters
            if side <= 0:
                raise NotAlexNetError(f"{label}: its {size}x{size} input leaves nothing after {name}.")
        elif token == "LRN":
            size_attr = int(attrs.get("size", 0))
            # ONNX stores float attributes in float32: read back as the decimal they were written as (1e-4)
            constants = {"size": size_attr, **{key: float(str(np.float32(attrs.get(key, default))))
                                               for key, default in (("alpha", 1e-4), ("beta", 0.75), ("bias", 1.0))}}
            if size_attr < 1 or size_attr % 2 == 0:
                raise NotAlexNetError(f"{label}: an LRN has size {size_attr}; AlexNet's window is odd (5), centred on "
                                      "each map.")
            try:
                _validate_lrn(LRN.caffe(size_attr, constants["alpha"], constants["beta"], constants["bias"]))
            except ValueError as exc:
                raise NotAlexNetError(f"{label}: an LRN layer cannot be held ({exc}).") from None
            lrns.append(constants)
        elif token == "MaxPool":
            kernel = _ints(attrs.get("kernel_shape"), [])
            strides = _ints(attrs.get("strides"), [1, 1])
            pads = _ints(attrs.get("pads"), [0, 0, 0, 0])
            ceil_mode = bool(attrs.get("ceil_mode", 0))
            dilations = _ints(attrs.get("dilations"), [1, 1])
            auto_pad = attrs.get("auto_pad", b"NOTSET")
            auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else str(auto_pad)
            pool_name = f"pool{len(pools) + 1}" if len(pools) < 2 else "pool5"
            if (kernel != [3, 3] or strides != [2, 2] or dilations != [1, 1] or len(pads) != 4
                    or pads[0] or pads[1] or auto_pad not in ("NOTSET", "")
                    or int(attrs.get("storage_order", 0)) != 0):
                raise NotAlexNetError(
                    f"{label} is not the BVLC AlexNet: {pool_name} pools {kernel} windows with strides {strides}, pads "
                    f"{pads} and auto_pad {auto_pad}, where AlexNet pools overlapping 3x3 windows with stride 2 and "
                    "no padding before the map.")
            out = _pool_size(side, 3, 2, 0, pads[2], ceil_mode)
            out_w = _pool_size(side, 3, 2, 0, pads[3], ceil_mode)
            modes = {m for m, n in (("ceil", _out_size(side, 3, 2, "ceil")), ("valid", _out_size(side, 3, 2, "valid")))
                     if n == out}
            if out != out_w or not modes:
                raise NotAlexNetError(
                    f"{label} is not the BVLC AlexNet: {pool_name} turns a {side}x{side} map into {out}x{out_w}, "
                    f"neither Caffe's rounded-up pooling ({_out_size(side, 3, 2, 'ceil')}) nor rounding down "
                    f"({_out_size(side, 3, 2, 'valid')}).")
            pools.append({"name": pool_name, "pads": pads, "ceil_mode": int(ceil_mode), "in": side, "out": out,
                          "modes": sorted(modes)})
            side = out
        elif token == "Flatten":
            flat = channels * side * side
            if node.op_type == "Flatten":
                if int(attrs.get("axis", 1)) != 1:
                    raise NotAlexNetError(f"{label}: the Flatten before fc6 flattens from axis {attrs.get('axis')}, "
                                          "not 1.")
            else:
                target = node.input[1] if len(node.input) > 1 else ""
                value = tensors.get(target)
                try:
                    new = [int(v) for v in numpy_helper.to_array(value).reshape(-1)] if value is not None else None
                except Exception:
                    new = None
                if (new is None or len(new) != 2 or new[1] not in (-1, flat) or new[0] not in (-1, 0, 1)
                        or new == [-1, -1]):
                    raise NotAlexNetError(f"{label}: the Reshape before fc6 gives shape {new}, not one row of "
                                          f"{flat} values per image.")
        elif token == "Dense":
            name = f"fc{6 + sum(1 for l in layers if l.op != 'Conv')}"
            layers.append(_dense(nodes, attrs, name, tensors, dims_of, label))
        # Relu has nothing to check
    _check_dense_shapes(layers, channels * side * side, side, channels, label)
    if len({tuple(sorted(c.items())) for c in lrns}) > 1:
        raise NotAlexNetError(f"{label}: its two LRN layers differ ({lrns[0]} and {lrns[1]}); AlexNet's are the same.")
    common = set.intersection(*(set(p["modes"]) for p in pools))
    if not common:
        raise NotAlexNetError(f"{label}: its pooling layers round their outputs differently "
                              f"({', '.join(p['name'] + ': ' + '/'.join(p['modes']) for p in pools)}).")
    pool_padding = "ceil" if "ceil" in common else "valid"
    num_classes = layers[-1].shape[0] if layers[-1].transpose else layers[-1].shape[1]
    lrn = lrns[0]
    details = {"lrn": LRN.caffe(lrn["size"], lrn["alpha"], lrn["beta"], lrn["bias"]).as_dict(),
               "pool_padding": pool_padding}
    logits = chain[-1][1][-1].output[0]
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    bvlc = (num_classes == 1000 and size == BVLC_INPUT_SIZE and lrn == BVLC_LRN and pool_padding == "ceil")
    info = {
        "format": "onnx",
        "variant": VARIANT,
        "input_size": size,
        "num_classes": int(num_classes),
        "input_name": image.name[:MAX_NAME],
        "input_shape": shape,
        "output_name": graph.output[0].name[:MAX_NAME],
        "logits_name": logits[:MAX_NAME],
        "softmax": softmax is not None,
        "opset": int(opset),
        "producer": f"{model.producer_name} {model.producer_version}".strip()[:MAX_NAME],
        "channel_order": "BGR",  # the graph's input; the converted model takes RGB
        "lrn": lrn,
        "pool_rounding": "up" if pool_padding == "ceil" else "down",
        "pools": [{k: p[k] for k in ("name", "pads", "ceil_mode", "in", "out")} for p in pools],
        "layers": [{"name": l.name, "op": l.op, "weight_shape": list(l.shape), "groups": l.groups,
                    "node": l.node[:MAX_NAME]} for l in layers],
        "parameters": int(sum(math.prod(l.shape) + (l.shape[0] if l.op == "Conv" or l.transpose else l.shape[1])
                              for l in layers)),
        "bvlc_structure": bool(bvlc),  # the zoo's network exactly (its weights may still be the user's own)
        "arch": {"variant": VARIANT, "input_size": size, "num_classes": int(num_classes), **details},
        "preprocessing": preprocessing(size),
    }
    return Plan(info, layers, input_name=image.name, logits_name=logits)


def _dense(nodes, attrs, name, tensors, dims_of, label) -> Layer:
    node = nodes[0]
    if node.op_type == "Gemm":
        if int(attrs.get("transA", 0)):
            raise NotAlexNetError(f"{label}: {name} (Gemm) transposes its input (transA=1); AlexNet's does not.")
        weight = node.input[1]
        bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
        layer = Layer(name, "Gemm", node.name, weight, bias, dims_of(weight, f"{name}'s weight"),
                      transpose=bool(int(attrs.get("transB", 0))), scale=float(attrs.get("alpha", 1.0)),
                      bias_scale=float(attrs.get("beta", 1.0)))
    else:  # MatMul + Add
        if len(node.input) != 2 or node.input[0] in tensors or node.input[1] not in tensors:
            raise NotAlexNetError(f"{label}: {name} (MatMul) does not multiply the layer's input by a weight "
                                  "(input first, as AlexNet's dense layers do).")
        weight = node.input[1]
        add = nodes[1] if len(nodes) > 1 else None
        bias = next((n for n in add.input if n in tensors), None) if add is not None else None
        layer = Layer(name, "MatMul", node.name, weight, bias, dims_of(weight, f"{name}'s weight"))
    if len(layer.shape) != 2:
        raise NotAlexNetError(f"{label}: {name}'s weight has shape {list(layer.shape)}; a dense layer's is 2-D.")
    if layer.bias is not None:
        units = layer.shape[0] if layer.transpose else layer.shape[1]
        bias_dims = dims_of(layer.bias, f"{name}'s bias")
        if math.prod(bias_dims) != units or (bias_dims and bias_dims[-1] != units):
            raise NotAlexNetError(f"{label}: {name}'s bias has shape {list(bias_dims)} for {units} units.")
    return layer


def _check_dense_shapes(layers, flat, side, channels, label) -> None:
    dense = [l for l in layers if l.op != "Conv"]
    widths = [(4096, flat), (4096, 4096)]
    for layer, (units, inputs) in zip(dense, widths + [(None, 4096)]):
        out, inp = (layer.shape if layer.transpose else layer.shape[::-1])
        if inp != inputs or (units is not None and out != units):
            what = f"{units} x {inputs}" if units is not None else f"classes x {inputs}"
            reason = (f" (the {channels}x{side}x{side} map before it)" if layer.name == "fc6" else "")
            raise NotAlexNetError(f"{label} is not the BVLC AlexNet: {layer.name} maps {inp} inputs to {out} outputs "
                                  f"where AlexNet's {layer.name} is {what}{reason}.")
    if not 2 <= dense[-1].shape[0 if dense[-1].transpose else 1] <= 100_000:
        raise NotAlexNetError(f"{label}: fc8 gives {dense[-1].shape} outputs; a classifier has 2 to 100,000 classes.")


def preprocessing(size: int = BVLC_INPUT_SIZE) -> dict:
    """The recorded preprocessing of the converted model (the shared record of inputs.preprocess):
    Caffe's recipe, the image warped to 256x256 then the centre crop of the input size, and its
    BGR mean subtracted from 0..255 pixels; written for the converted model's RGB input."""
    b, g, r = CAFFE_MEAN_BGR
    return {"input_size": int(size), "mean": [r / 255.0, g / 255.0, b / 255.0], "std": [1.0 / 255.0] * 3,
            "scale": 255.0, "resize": "bilinear, antialiased", "resize_to": 256, "resize_mode": "square",
            "crop": int(size)}


# --- Converting -------------------------------------------------------------------------------


def _stored_values(tensor, stored: Stored | None = None) -> int:
    """How many values tensor holds, from the lengths of its data (nothing decoded)."""
    from onnx import TensorProto

    if stored is not None and stored.holds(tensor):
        return stored.values(tensor)
    size = {TensorProto.FLOAT: 4, TensorProto.DOUBLE: 8, TensorProto.FLOAT16: 2}.get(tensor.data_type)
    if size is None:
        return -1
    if tensor.HasField("raw_data"):
        return len(tensor.raw_data) // size if len(tensor.raw_data) % size == 0 else -1
    return len(tensor.double_data) if tensor.data_type == TensorProto.DOUBLE else (
        len(tensor.float_data) if tensor.data_type == TensorProto.FLOAT else len(tensor.int32_data))


def check_data(plan: Plan, tensors: dict, label: str, stored: Stored | None = None) -> None:
    """Refuse a file whose weights do not fill their shapes (damaged or truncated), before any
    work: only the lengths of the stored data are read."""
    for layer in plan.layers:
        for name in (layer.weight, layer.bias):
            if name is None:
                continue
            tensor = tensors[name]
            need = math.prod(int(d) for d in tensor.dims)
            have = _stored_values(tensor, stored)
            if have != need:
                what = f"holds {have:,} float values" if have >= 0 else "holds values that are not floats"
                raise OnnxImportError(f"{label}: {layer.name}'s tensor {_name(name)} {what} where its shape needs "
                                      f"{need:,}: the file is damaged. Download it again.")


def _array(tensors: dict, name: str, label: str, stored: Stored | None = None) -> np.ndarray:
    """Tensor `name` as float32, refused when its data does not fill its shape (a damaged file)."""
    onnx, numpy_helper = _modules()
    tensor = tensors[name]
    count = math.prod(int(d) for d in tensor.dims)
    if stored is not None and stored.holds(tensor):
        return stored.rows(tensor, 0, int(tensor.dims[0]))
    try:
        array = numpy_helper.to_array(tensor)
    except Exception as exc:
        raise OnnxImportError(f"{label}: tensor {_name(name)} is damaged ({type(exc).__name__}); download the file "
                              "again.") from None
    if array.size != count or not np.issubdtype(array.dtype, np.floating):
        raise OnnxImportError(f"{label}: tensor {_name(name)} holds {array.size:,} {array.dtype} values where its shape "
                              f"needs {count:,} floats: the file is damaged. Download it again.")
    array = array.astype(np.float32, copy=False).reshape(tuple(int(d) for d in tensor.dims))
    if not np.all(np.isfinite(array)):
        raise OnnxImportError(f"{label}: tensor {_name(name)} holds NaN or infinite weights; the file is damaged.")
    return array


def _release(tensors: dict, name: str) -> None:
    if name in tensors and tensors[name].HasField("raw_data"):
        tensors[name].ClearField("raw_data")


def _fill_dense(variable, layer: Layer, tensor, stored: Stored, flat_shape: tuple) -> None:
    """Dense kernel `variable` (Keras' [in, out]) from a weight left in the file, read a block of
    stored rows at a time (about 9 MiB: 256 x 9,216 floats) and written straight into its place:
    no whole copy of the weight is ever in memory. fc6's rows go from the graph's NCHW flatten
    order (c, h, w) to Keras' (h, w, c). A Gemm's [out, in] weight is torch_import's case too
    (fill_from_out_in)."""
    stored_rows, row = (int(d) for d in layer.shape)
    inputs, units = (row, stored_rows) if layer.transpose else (stored_rows, row)
    channels, height, width = flat_shape
    fc6 = layer.name == "fc6"
    step = max(1, ASSIGN_ROWS * 9216 // row)
    scale = np.float32(layer.scale)

    def scaled(block):
        return block if layer.scale == 1.0 else block * scale

    if layer.transpose:  # stored [out, in]: a block of outputs fills a block of the kernel's columns
        fill_from_out_in(variable, stored_rows, inputs, lambda start, stop: scaled(stored.rows(tensor, start, stop)),
                         flat_shape=flat_shape if fc6 else None)
    elif fc6:  # stored [in, out] in (c, h, w) order: channel c's rows are Keras' rows c, c + C, ...
        places = height * width
        for c in range(channels):
            block = scaled(stored.rows(tensor, c * places, (c + 1) * places))
            assign_slice(variable, [c, 0], [inputs, units], [channels, 1], np.ascontiguousarray(block))
    else:
        for start in range(0, stored_rows, step):
            stop = min(start + step, stored_rows)
            assign_slice(variable, [start, 0], [stop, units], [1, 1], scaled(stored.rows(tensor, start, stop)))


# Big kernels are filled a block at a time (`_fill_dense`, torch_import.assign_in_blocks): no whole
# second copy of a weight is made. The model so filled runs about 5x slower at batch 1 on TensorFlow
# 2.21 than the same model saved and loaded, which is what the app runs (docs/BENCHMARKS.md).
def _load_layer(target, layer: Layer, tensors: dict, label: str, flat_shape: tuple, keep: set,
                stored: Stored | None = None) -> None:
    """Copy `layer`'s weights from the graph into Keras layer `target`, in Keras' layout. A dense
    weight left in the file (`stored`) is read a block at a time; the graph's copy of any other
    tensor is released as soon as it is read (peak memory)."""
    weight = tensors[layer.weight]
    if layer.op != "Conv" and stored is not None and stored.holds(weight):
        units = int(layer.shape[0] if layer.transpose else layer.shape[1])
        want = (int(layer.shape[1] if layer.transpose else layer.shape[0]), units)
        if tuple(target.kernel.shape) != want:
            raise NotAlexNetError(f"{label}: {layer.name}'s weights {list(want)} do not fit the network's "
                                  f"{list(target.kernel.shape)}.")  # identify's checks make this unreachable
        _fill_dense(target.kernel, layer, weight, stored, flat_shape)
    else:
        units = _load_kernel(target, layer, tensors, label, flat_shape, keep, stored)
    if layer.bias is None:
        bias = np.zeros(units, np.float32)
    else:
        bias = _array(tensors, layer.bias, label, stored).reshape(-1)
        if layer.bias not in keep:
            _release(tensors, layer.bias)
        if layer.bias_scale != 1.0:
            bias = bias * np.float32(layer.bias_scale)
    target.bias.assign(bias)


def _load_kernel(target, layer: Layer, tensors: dict, label: str, flat_shape: tuple, keep: set,
                 stored: Stored | None) -> int:
    """A kernel held in the parsed graph (or small enough to read whole), copied into `target`;
    returns its units."""
    w = _array(tensors, layer.weight, label, stored)
    if layer.weight not in keep:  # a later layer may read the same tensor
        _release(tensors, layer.weight)
    if layer.op == "Conv":
        kernel = w.transpose(2, 3, 1, 0)  # OIHW -> HWIO (per group alike: both order groups the same)
        if layer.name == "conv1":
            kernel = kernel[:, :, ::-1, :]  # the graph's BGR input channels -> RGB
        units = w.shape[0]
    else:
        kernel = w.T if layer.transpose else w  # -> [in, out], a view
        if layer.scale != 1.0:
            kernel = kernel * np.float32(layer.scale)
        units = kernel.shape[1]
    if tuple(target.kernel.shape) != (kernel.shape if layer.name != "fc6" else (kernel.shape[0], units)):
        raise NotAlexNetError(f"{label}: {layer.name}'s weights {list(kernel.shape)} do not fit the network's "
                              f"{list(target.kernel.shape)}.")  # identify's checks make this unreachable
    if layer.name == "fc6":
        # Rows in NCHW flatten order (c, h, w) -> Keras' NHWC order (h, w, c): one map row (w, c) at a time.
        channels, height, width = flat_shape
        # (c, h, w, units) as a view in Keras' (h, w, c) row order: filled one (c, units) block at a time
        assign_in_blocks(target.kernel, kernel.reshape(channels, height, width, units).transpose(1, 2, 0, 3))
    else:
        assign_in_blocks(target.kernel, kernel)
    return int(units)


def convert(path: str | Path):
    """The ONNX file at `path` as a Keras `paper` model taking RGB at the graph's input size
    (softmax output, layers named as the paper's), and `info`: what was identified (input size,
    class count, the tensor names found, LRN and pooling, the architecture details, the
    preprocessing to record). Refuses anything that is not this network, naming what differs."""
    from alexnet_core.models.variants import build_model

    path = Path(path)
    model, stored = load_structure(path)
    plan = identify(model, path.name)
    info = plan.info
    tensors = _constants(model.graph)
    check_data(plan, tensors, path.name, stored)
    arch = info["arch"]
    try:
        keras_model = build_model(VARIANT, num_classes=arch["num_classes"], input_size=arch["input_size"],
                                  lrn=arch["lrn"], pool_padding=arch["pool_padding"], to_fill=True)
    except ValueError as exc:  # variants' own checks: an input size or class count it cannot build
        raise NotAlexNetError(f"{path.name} cannot be held as the {VARIANT!r} network: {exc}.") from None
    pool5 = keras_model.get_layer("pool5").output.shape
    flat_shape = (int(pool5[3]), int(pool5[1]), int(pool5[2]))
    with stored:
        for index, layer in enumerate(plan.layers):
            keep = {name for later in plan.layers[index + 1:] for name in (later.weight, later.bias)}
            _load_layer(keras_model.get_layer(layer.name), layer, tensors, path.name, flat_shape, keep, stored)
    info["file_bytes"] = path.stat().st_size
    info["file_name"] = path.name[:MAX_NAME]
    return keras_model, info


# --- The reference: ONNX Runtime on the same graph -------------------------------------------


class Reference:
    """ONNX Runtime running the file's own graph, with the last dense layer's output (the logits
    before the softmax) added as an output. Input: BGR NCHW float32, mean already subtracted,
    exactly what the graph takes."""

    def __init__(self, path: str | Path, threads: int | None = None):
        try:
            import onnxruntime as ort
        except ImportError:
            raise OnnxImportError(f"Running an ONNX file needs onnxruntime, which is not installed: {INSTALL}") \
                from None
        from onnx import helper

        path = Path(path)
        model = load_graph(path)
        plan = identify(model, path.name)
        self.info, self.input_name, self.logits_name = plan.info, plan.input_name, plan.logits_name
        if self.logits_name not in [o.name for o in model.graph.output]:
            model.graph.output.append(helper.make_tensor_value_info(self.logits_name, 1, None))  # 1: FLOAT
        image = next(i for i in model.graph.input if i.name == self.input_name)
        batch = _dims(image)[0]
        # The zoo's input (and its Reshape to [1, 9216]) fix the batch at 1: such a graph runs image by image.
        self.one_at_a_time = isinstance(batch, int) and batch == 1
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = int(threads)
            options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise OnnxImportError(f"ONNX Runtime cannot run {path.name}: {str(exc)[:300]}") from None
        self.size = self.info["input_size"]

    def logits(self, batch_nchw: np.ndarray) -> np.ndarray:
        x = np.asarray(batch_nchw)
        if x.ndim != 4 or x.shape[1:] != (3, self.size, self.size):
            raise OnnxImportError(f"The reference takes a batch of shape N x 3 x {self.size} x {self.size} (BGR, mean "
                                  f"subtracted), got {list(x.shape)}.")
        x = np.ascontiguousarray(x, dtype=np.float32)
        if self.one_at_a_time:
            outs = [self.session.run([self.logits_name], {self.input_name: x[i:i + 1]})[0] for i in range(len(x))]
            return np.concatenate(outs, axis=0) if outs else np.zeros((0, self.info["num_classes"]), np.float32)
        return self.session.run([self.logits_name], {self.input_name: x})[0]


def reference_logits(path: str | Path, batch_nchw: np.ndarray) -> np.ndarray:
    """ONNX Runtime's logits (the last Gemm's output, before the softmax) for `batch_nchw`: BGR,
    N x 3 x S x S float32 with the mean subtracted, the graph's own input."""
    return Reference(path).logits(batch_nchw)


def to_reference_input(images_rgb: np.ndarray) -> np.ndarray:
    """Preprocessed RGB network input of the converted model (N x S x S x 3: pixels minus the mean,
    as `standardize` gives with `preprocessing`) -> the graph's input (N x 3 x S x S, BGR)."""
    x = np.asarray(images_rgb, dtype=np.float32)
    return np.ascontiguousarray(x[..., ::-1].transpose(0, 3, 1, 2))
