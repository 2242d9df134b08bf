"""The BVLC AlexNet from the ONNX zoo, converted into the `paper` variant (alexnet_core.pretrained.onnx_import),
against ONNX Runtime running the same graph; and what the `paper` variant needs to hold Caffe's network at 224 px
(its LRN constants, its rounded-up pooling).

The zoo's file cannot be downloaded here, so the graphs are built with onnx.helper the way the zoo's is (a Caffe2
export: `data_0` in, LRN, grouped convolutions, pooling rounded up as end padding or `ceil_mode`, Reshape, Gemm with
transB, Dropout, Softmax), at the full size with seeded random weights, in two name schemes.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from alexnet_core.errors import AlexNetError
from alexnet_core.models.variants import LRN, build_model, ceil_padding, get_arch, spatial_sizes

onnx = pytest.importorskip("onnx", reason="the pretrained extra (onnx) is not installed")
pytest.importorskip("onnxruntime", reason="the pretrained extra (onnxruntime) is not installed")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from alexnet_core.pretrained import onnx_import  # noqa: E402

EXAMPLES = Path(__file__).resolve().parent.parent / "assets" / "examples"
MEAN_BGR = np.array(onnx_import.CAFFE_MEAN_BGR, np.float32)

# (filters, kernel, stride, pad, groups, followed by LRN, followed by pooling): the BVLC AlexNet's convolutions
CONVS = [(96, 11, 4, 0, 1, True, True), (256, 5, 1, 2, 2, True, True), (384, 3, 1, 1, 1, False, False),
         (384, 3, 1, 1, 2, False, False), (256, 3, 1, 1, 2, False, True)]


class Names:
    """Tensor and node names of one naming scheme."""

    def __init__(self, scheme: str):
        self.scheme, self.count = scheme, 0

    def fresh(self, hint: str) -> str:
        self.count += 1
        return hint if self.scheme == "caffe2" else f"t{self.count:03d}:{hint[::-1]}"


def _tensor(name, array, hollow):
    if not hollow:
        return numpy_helper.from_array(np.asarray(array), name)
    tensor = TensorProto(name=name, data_type=TensorProto.FLOAT)  # the shape only: identify reads no weights
    tensor.dims.extend(array.shape if hasattr(array, "shape") else array)
    return tensor


def zoo_graph(scheme="caffe2", pooling="pads", size=224, classes=1000, seed=0, hollow=False, convs=CONVS,
              order=("Conv", "Relu", "LRN", "MaxPool"), fc6_inputs=None, branch=False, lrn_size=5):
    """An AlexNet ModelProto built as the zoo's Caffe2 export is. scheme "caffe2": the zoo's names (data_0,
    conv1_w_0, ..., OC2_DUMMY_0, softmaxout_1), batch fixed at 1, Reshape to [1, 9216], Gemm(transB=1), opset 12;
    "renamed": other names, a free batch, Flatten, Gemm(transB=0) for fc6 and fc8 and MatMul + Add for fc7, prob_1.
    pooling: "pads" (the exporter's end padding), "ceil" (ceil_mode) or "floor" (neither). hollow: initializers
    with shapes but no data (enough for identify)."""
    rng = np.random.default_rng(seed)
    n = Names(scheme)
    nodes, inits = [], []
    image = "data_0" if scheme == "caffe2" else "input.image"
    current, channels, side = image, 3, size

    def weight(name, shape, fan_in, gain=2.0):
        if hollow:
            return _tensor(name, shape, True)
        values = rng.standard_normal(shape, dtype=np.float32) * np.float32(np.sqrt(gain / fan_in))
        return _tensor(name, values, False)

    def bias(name, units):
        return _tensor(name, (units,) if hollow else rng.normal(0.05, 0.05, units).astype(np.float32), hollow)

    def add(op, inputs, hint, extra_outputs=(), output=None, **attrs):
        nonlocal current
        out = output or n.fresh(hint)
        nodes.append(helper.make_node(op, inputs, [out, *extra_outputs], name=n.fresh(f"{hint}_node"), **attrs))
        current = out

    for i, (filters, kernel, stride, pad, groups, norm, pool) in enumerate(convs, start=1):
        for op in order:
            if op == "Conv":
                w, b = n.fresh(f"conv{i}_w_0"), n.fresh(f"conv{i}_b_0")
                inits += [weight(w, (filters, channels // groups, kernel, kernel), channels // groups * kernel ** 2),
                          bias(b, filters)]
                add("Conv", [current, w, b], f"conv{i}_1", kernel_shape=[kernel, kernel], strides=[stride, stride],
                    pads=[pad] * 4, dilations=[1, 1], group=groups)
                side = (side + 2 * pad - kernel) // stride + 1
                channels = filters
            elif op == "Relu":
                add("Relu", [current], f"conv{i}_2")
            elif op == "LRN" and norm:
                add("LRN", [current], f"norm{i}_1", size=lrn_size, alpha=1e-4, beta=0.75, bias=1.0)
            elif op == "MaxPool" and pool:
                caffe = -(-(side - 3) // 2) + 1
                if pooling == "pads":  # Caffe2's exporter: pad_end = out * stride - 1 + kernel - in
                    end = caffe * 2 - 1 + 3 - side
                    add("MaxPool", [current], f"pool{i}_1", kernel_shape=[3, 3], strides=[2, 2], pads=[0, 0, end, end])
                    side = caffe
                else:
                    add("MaxPool", [current], f"pool{i}_1", kernel_shape=[3, 3], strides=[2, 2], pads=[0, 0, 0, 0],
                        ceil_mode=int(pooling == "ceil"))
                    side = caffe if pooling == "ceil" else (side - 3) // 2 + 1
        if branch and i == 3:  # a side path joining back in: not a chain
            side_out = n.fresh("side")
            nodes.append(helper.make_node("Relu", [current], [side_out], name=n.fresh("side_node")))
            add("Add", [current, side_out], "joined")
    flat = fc6_inputs or channels * side * side
    if scheme == "caffe2":
        shape_name = n.fresh("OC2_DUMMY_1")
        inits.append(numpy_helper.from_array(np.array([1, flat], np.int64), shape_name))
        add("Reshape", [current, shape_name], "OC2_DUMMY_0")
    else:
        add("Flatten", [current], "flat", axis=1)
    for j, (units, inputs) in enumerate([(4096, flat), (4096, 4096), (classes, 4096)], start=6):
        w, b = n.fresh(f"fc{j}_w_0"), n.fresh(f"fc{j}_b_0")
        gain = 2.0 if j < 8 else 0.02  # logits a few units apart: a top-5 with no ties
        if scheme == "caffe2":
            inits += [weight(w, (units, inputs), inputs, gain), bias(b, units)]
            add("Gemm", [current, w, b], f"fc{j}_1", transB=1)
        elif j == 7:
            inits += [weight(w, (inputs, units), inputs, gain), bias(b, units)]
            add("MatMul", [current, w], f"fc{j}_mm")
            add("Add", [current, b], f"fc{j}_1")
        else:
            inits += [weight(w, (inputs, units), inputs, gain), bias(b, units)]
            add("Gemm", [current, w, b], f"fc{j}_1", transB=0)
        if j < 8:
            add("Relu", [current], f"fc{j}_2")
            add("Dropout", [current], f"fc{j}_3", extra_outputs=[n.fresh(f"_fc{j}_mask_1")])
    add("Softmax", [current], "softmax", output="softmaxout_1" if scheme == "caffe2" else "prob_1")
    batch = 1 if scheme == "caffe2" else "N"
    graph = helper.make_graph(
        nodes, "bvlc_alexnet" if scheme == "caffe2" else "g",
        [helper.make_tensor_value_info(image, TensorProto.FLOAT, [batch, 3, size, size])],
        [helper.make_tensor_value_info(current, TensorProto.FLOAT, [batch, classes])], initializer=inits)
    opset = 12 if scheme == "caffe2" else 11
    return helper.make_model(graph, producer_name="onnx-caffe2" if scheme == "caffe2" else "x",
                             opset_imports=[helper.make_opsetid("", opset)])


def sample_images(size=224) -> np.ndarray:
    """RGB 0..255 test images: the bundled example photos enlarged, noise, stripes, a gradient, flat grey."""
    from PIL import Image

    images = [np.asarray(Image.open(p).convert("RGB").resize((size, size), Image.BILINEAR), np.float32)
              for p in sorted(EXAMPLES.glob("*.jpg"))]
    rng = np.random.default_rng(7)
    ramp = np.linspace(0, 255, size, dtype=np.float32)
    images += [rng.uniform(0, 255, (size, size, 3)).astype(np.float32),
               np.stack([np.tile(ramp, (size, 1)), np.tile(ramp[:, None], (1, size)), np.full((size, size), 90.0)], -1),
               np.where((np.arange(size)[:, None] // 16 + np.arange(size) // 16) % 2, 240.0, 20.0)[..., None]
               .repeat(3, -1).astype(np.float32),
               np.full((size, size, 3), 128.0, np.float32)]
    return np.stack(images).astype(np.float32)


@pytest.fixture(scope="module")
def zoo_files(tmp_path_factory):
    """The two full-size graphs on disk, built once: the zoo's names with end padding, other names with ceil_mode."""
    folder = tmp_path_factory.mktemp("onnx")
    files = {}
    for key, scheme, pooling, seed in (("caffe2-pads", "caffe2", "pads", 0), ("renamed-ceil", "renamed", "ceil", 1)):
        files[key] = folder / f"{key}.onnx"
        onnx.save(zoo_graph(scheme, pooling, seed=seed), files[key])
    return files


@pytest.fixture(scope="module")
def converted(zoo_files):
    import keras

    out = {}
    for key, path in zoo_files.items():
        model, info = onnx_import.convert(path)
        logits = keras.Model(model.inputs, model.get_layer("fc8").output)
        out[key] = (model, logits, info)
    return out


# --- The paper variant holds Caffe's network ----------------------------------------------------------------------


def caffe_max_pool(x: np.ndarray, k=3, s=2) -> np.ndarray:
    """Caffe's max pooling (no padding): ceil((n - k) / s) + 1 windows, the last one cut at the edge."""
    h, w = x.shape[1:3]
    oh, ow = -(-(h - k) // s) + 1, -(-(w - k) // s) + 1
    out = np.empty((x.shape[0], oh, ow, x.shape[3]), x.dtype)
    for i in range(oh):
        for j in range(ow):
            out[:, i, j] = x[:, i * s:min(i * s + k, h), j * s:min(j * s + k, w)].max(axis=(1, 2))
    return out


@pytest.mark.parametrize("side", [13, 14, 27, 54, 55])
def test_ceil_padding_then_valid_pooling_is_caffes_pooling(side):
    import keras

    x = np.random.default_rng(side).uniform(0, 5, (2, side, side, 4)).astype(np.float32)  # >= 0, as after a ReLU
    pad = ceil_padding(side, 3, 2)
    padded = keras.layers.ZeroPadding2D(((0, pad), (0, pad)))(x) if pad else x
    got = np.asarray(keras.layers.MaxPooling2D(3, 2, padding="valid")(padded))
    np.testing.assert_array_equal(got, caffe_max_pool(x))


def test_paper_variant_holds_caffes_network_at_224():
    from alexnet_core.models.anatomy import layer_table, totals

    arch = get_arch("paper", input_size=224, lrn=LRN.caffe(5, 1e-4, 0.75, 1.0), pool_padding="ceil")
    assert spatial_sizes(arch) == [27, 13, 13, 13, 6]
    assert spatial_sizes(get_arch("paper", input_size=224)) == [26, 12, 12, 12, 5]  # rounding down loses a row
    model = build_model("paper", input_size=224, lrn=arch.lrn, pool_padding="ceil")
    table = layer_table(model).set_index("name")
    assert table.loc["conv1", "output_shape"] == (54, 54, 96)
    assert table.loc["ceilpad1", "output_shape"] == (55, 55, 96)
    assert table.loc["pool1", "output_shape"] == (27, 27, 96) and table.loc["pool5", "output_shape"] == (6, 6, 256)
    assert table.loc["pool1", "detail"] == "3x3 /2, rounded up" and table.loc["pool2", "detail"] == "3x3 /2"
    assert table.loc["ceilpad1", "detail"] == "pad 0 before, 1 after"
    assert "ceilpad2" not in table.index and "ceilpad5" not in table.index  # 27 and 13 need no padding
    assert table.loc["lrn1", "detail"] == "n=5, k=1, alpha=2e-05, beta=0.75"
    assert totals(table.reset_index())["total_params"] == 60_965_224  # the published count: same layers
    lrn = model.get_layer("lrn2")
    assert (lrn.depth_radius, lrn.bias, lrn.alpha, lrn.beta) == (2, 1.0, 2e-5, 0.75)
    # The paper's defaults are untouched.
    paper = build_model("paper").get_layer("lrn1")
    assert (paper.depth_radius, paper.bias, paper.alpha, paper.beta) == (2, 2.0, 1e-4, 0.75)


def test_ceil_pooling_at_227_is_the_papers_network_and_round_trips(tmp_path):
    import keras

    valid = build_model("paper", num_classes=10, width=0.25)
    ceil = build_model("paper", num_classes=10, width=0.25, pool_padding="ceil")
    assert [l.name for l in ceil.layers] == [l.name for l in valid.layers]  # 55, 27, 13 all divide: no padding
    ceil.set_weights(valid.get_weights())
    x = np.random.default_rng(3).uniform(-50, 50, (2, 227, 227, 3)).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(valid(x)), np.asarray(ceil(x)))
    small = build_model("paper", num_classes=10, width=0.25, input_size=224, lrn=LRN.caffe(), pool_padding="ceil")
    small.save(tmp_path / "m.keras")
    again = keras.models.load_model(tmp_path / "m.keras", safe_mode=True)
    y = np.random.default_rng(4).uniform(-50, 50, (2, 224, 224, 3)).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(small(y)), np.asarray(again(y)))
    assert again.get_layer("lrn1").alpha == 2e-5 and again.get_layer("ceilpad1").padding == ((0, 1), (0, 1))


def test_architecture_details_rebuild_the_same_network_and_bad_ones_are_named():
    arch = get_arch("paper", input_size=224, lrn=LRN.caffe(), pool_padding="ceil")
    assert arch.details() == {"lrn": {"n": 5, "k": 1.0, "alpha": 2e-5, "beta": 0.75}, "pool_padding": "ceil"}
    assert get_arch("paper", input_size=224, **arch.details()) == arch
    assert get_arch("paper").details() == {"lrn": {"n": 5, "k": 2.0, "alpha": 1e-4, "beta": 0.75},
                                           "pool_padding": "valid"}
    for changes, message in (({"lrn": {"n": 4}}, "the LRN's n must be an odd whole number"),
                             ({"lrn": {"k": 0.0}}, "the LRN's k must be above 0"),
                             ({"lrn": {"alpha": -1.0}}, "the LRN's alpha must be a number >= 0"),
                             ({"lrn": {"colour": 1}}, "lrn must be a mapping of n, k, alpha and beta"),
                             ({"pool_padding": "round"}, "pool_padding must be one of valid, same, ceil")):
        with pytest.raises(ValueError, match=message):
            get_arch("paper", **changes)


# --- Conversion against ONNX Runtime ---------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["caffe2-pads", "renamed-ceil"])
def test_conversion_matches_onnx_runtime(key, zoo_files, converted):
    _, logits_model, info = converted[key]
    images = sample_images()
    rgb = images - MEAN_BGR[::-1]  # Caffe's mean subtraction, in the converted model's RGB order
    bgr_nchw = np.ascontiguousarray((images[..., ::-1] - MEAN_BGR).transpose(0, 3, 1, 2))
    np.testing.assert_array_equal(onnx_import.to_reference_input(rgb), bgr_nchw)
    ours = np.asarray(logits_model(rgb, training=False), np.float64)
    theirs = onnx_import.reference_logits(zoo_files[key], bgr_nchw).astype(np.float64)
    assert ours.shape == theirs.shape == (len(images), 1000)
    scale = np.abs(theirs).max(axis=1, keepdims=True)
    assert np.all(np.abs(ours - theirs) <= 1e-4 * scale), float((np.abs(ours - theirs) / scale).max())
    assert np.all(scale > 1.0)  # logits of a real spread, not a vanished signal
    assert (ours.argmax(1) == theirs.argmax(1)).all()
    assert len(set(theirs.argmax(1))) > 1  # the images do not all get one class
    probs = np.exp(theirs - theirs.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    compared = 0
    for mine, ref, p in zip(ours, theirs, probs):
        top_ours, top_ref = np.argsort(-mine)[:5], np.argsort(-ref)[:5]
        for rank in range(5):
            if rank == 4 or p[top_ref[rank]] - p[top_ref[rank + 1]] > 1e-6:  # not tied with the next
                assert top_ours[rank] == top_ref[rank], (rank, top_ours, top_ref)
                compared += 1
            else:
                break  # below a tie the order is the runtime's choice
    assert compared >= 4 * len(images)


def test_the_softmax_output_is_the_graphs_probabilities(zoo_files, converted):
    import onnxruntime as ort

    model, _, _ = converted["renamed-ceil"]
    images = sample_images()[:3]
    session = ort.InferenceSession(str(zoo_files["renamed-ceil"]), providers=["CPUExecutionProvider"])
    graph_probs = session.run(None, {"input.image": onnx_import.to_reference_input(images - MEAN_BGR[::-1])})[0]
    np.testing.assert_allclose(np.asarray(model(images - MEAN_BGR[::-1])), graph_probs, atol=1e-5)


@pytest.mark.parametrize("key, names", [
    ("caffe2-pads", ("data_0", "softmaxout_1", "fc8_1", 12, [[0, 0, 2, 2], [0, 0, 1, 1], [0, 0, 1, 1]], 0)),
    ("renamed-ceil", ("input.image", "prob_1", None, 11, [[0, 0, 0, 0]] * 3, 1))])
def test_what_was_identified(key, names, converted):
    _, _, info = converted[key]
    input_name, output_name, logits_name, opset, pads, ceil_mode = names
    assert (info["input_size"], info["num_classes"], info["variant"]) == (224, 1000, "paper")
    assert (info["input_name"], info["output_name"], info["opset"]) == (input_name, output_name, opset)
    if logits_name:
        assert info["logits_name"] == logits_name
    assert info["softmax"] and info["channel_order"] == "BGR" and info["bvlc_structure"]
    assert info["lrn"] == {"size": 5, "alpha": 1e-4, "beta": 0.75, "bias": 1.0}
    assert [p["pads"] for p in info["pools"]] == pads and {p["ceil_mode"] for p in info["pools"]} == {ceil_mode}
    assert [p["out"] for p in info["pools"]] == [27, 13, 6] and info["pool_rounding"] == "up"
    assert info["arch"] == {"variant": "paper", "input_size": 224, "num_classes": 1000,
                            "lrn": {"n": 5, "k": 1.0, "alpha": 2e-5, "beta": 0.75}, "pool_padding": "ceil"}
    assert [l["name"] for l in info["layers"]] == ["conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"]
    assert [l["groups"] for l in info["layers"][:5]] == [1, 2, 1, 2, 2]
    assert info["parameters"] == 60_965_224
    assert info["file_bytes"] > 240_000_000


def test_recorded_preprocessing_is_caffes_mean_subtraction():
    from alexnet_core.inputs.preprocess import standardize

    record = onnx_import.preprocessing(224)
    assert (record["resize_to"], record["resize_mode"], record["crop"], record["input_size"]) == (256, "square", 224,
                                                                                                  224)
    pixels = sample_images()[:2]
    np.testing.assert_allclose(np.asarray(standardize(pixels, record)), pixels - MEAN_BGR[::-1], atol=1e-4)


# --- Refusals -----------------------------------------------------------------------------------------------------


def _identify(**changes):
    return onnx_import.identify(zoo_graph(hollow=True, **changes), "x.onnx")


def test_hollow_graphs_are_identified_like_full_ones():
    for scheme, pooling in (("caffe2", "pads"), ("renamed", "ceil")):
        info = onnx_import.identify(zoo_graph(scheme, pooling, hollow=True), "x.onnx").info
        assert info["arch"]["pool_padding"] == "ceil" and info["num_classes"] == 1000
    own = _identify(classes=37, size=227, pooling="floor").info  # another class count and size: the user's own
    assert (own["num_classes"], own["input_size"], own["bvlc_structure"]) == (37, 227, False)
    assert own["arch"]["pool_padding"] == "ceil"  # 55 -> 27: both roundings agree, Caffe's is kept
    floor = _identify(pooling="floor").info  # rounding down at 224: a 5x5 map, fc6 of 6400 inputs, held exactly
    assert (floor["arch"]["pool_padding"], floor["pool_rounding"], floor["bvlc_structure"]) == ("valid", "down", False)
    assert floor["parameters"] == 60_965_224 - 4096 * (9216 - 6400)


@pytest.mark.parametrize("changes, message", [
    ({"order": ("Conv", "Relu", "MaxPool")}, "where AlexNet has lrn1 (LRN), after conv1's ReLU, this graph has MaxPool"),
    ({"order": ("Conv", "Relu", "MaxPool", "LRN")}, "CaffeNet pools before it normalises"),
    ({"convs": [CONVS[0], (256, 5, 1, 2, 1, True, True), *CONVS[2:]]},
     "conv2 has weights of 256x96x5x5 in 1 group where AlexNet's conv2 has 256x48x5x5 in 2 groups"),
    ({"convs": [(96, 11, 2, 0, 1, True, True), *CONVS[1:]]}, "conv1 has strides [2, 2]"),
    ({"convs": CONVS[:4]}, "where AlexNet has conv5 (Conv), after conv4's ReLU, this graph has Reshape"),
    ({"pooling": "floor", "fc6_inputs": 9216, "scheme": "renamed"}, "fc6 maps 9216 inputs to 4096 outputs where AlexNet's fc6 is 4096 x 6400 (the 256x5x5 map"),
    ({"branch": True}, "is not one chain of layers: node"),
    ({"lrn_size": 4}, "an LRN has size 4"),
    ({"size": 10}, "its 10x10 input leaves nothing after conv1"),
])
def test_a_graph_that_is_not_alexnet_is_refused_naming_what_differs(changes, message):
    with pytest.raises(onnx_import.NotAlexNetError) as err:
        _identify(**changes)
    assert message in str(err.value)
    assert isinstance(err.value, AlexNetError)


def test_a_graph_with_more_layers_or_other_inputs_is_refused():
    model = zoo_graph(hollow=True)
    extra = helper.make_tensor_value_info("second", TensorProto.FLOAT, [1, 3])
    model.graph.input.append(extra)
    with pytest.raises(onnx_import.NotAlexNetError, match="takes 2 inputs"):
        onnx_import.identify(model, "x.onnx")
    model = zoo_graph(hollow=True)
    last = model.graph.output[0].name
    model.graph.node.append(helper.make_node("Relu", [last], ["after"]))
    model.graph.output[0].name = "after"
    with pytest.raises(onnx_import.NotAlexNetError, match="the last layer|after fc8|more layers"):
        onnx_import.identify(model, "x.onnx")


def test_damaged_truncated_and_hostile_files_are_refused(tmp_path, zoo_files, monkeypatch):
    whole = zoo_files["renamed-ceil"]
    cases = {"random.onnx": np.random.default_rng(0).bytes(100_000), "empty.onnx": b""}
    with open(whole, "rb") as handle:
        cases["half.onnx"] = handle.read(whole.stat().st_size // 2)
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(onnx_import.OnnxImportError, match="damaged|truncated|empty|holds no ONNX graph"):
            onnx_import.convert(tmp_path / name)
    with pytest.raises(onnx_import.OnnxImportError, match="not a regular file"):
        onnx_import.convert(tmp_path)
    with pytest.raises(onnx_import.OnnxImportError, match="no such file"):
        onnx_import.convert(tmp_path / "missing.onnx")
    # The right structure, but the weights' bytes are gone: damaged, said before anything is built.
    onnx.save(zoo_graph(hollow=True), tmp_path / "hollow.onnx")
    with pytest.raises(onnx_import.OnnxImportError, match="conv1's tensor 'conv1_w_0' holds 0 float values where its shape needs 34,848"):
        onnx_import.convert(tmp_path / "hollow.onnx")
    # A tensor naming external data (here: a file outside the folder) is refused; nothing is read from it.
    model = zoo_graph(hollow=True)
    tensor = model.graph.initializer[0]
    tensor.data_location = TensorProto.EXTERNAL
    tensor.external_data.add(key="location", value="../../etc/passwd")
    onnx.save(model, tmp_path / "external.onnx")
    with pytest.raises(onnx_import.OnnxImportError, match="external data .*'../../etc/passwd'.*self-contained"):
        onnx_import.convert(tmp_path / "external.onnx")
    with pytest.raises(onnx_import.OnnxImportError, match="external data"):
        onnx_import.reference_logits(tmp_path / "external.onnx", np.zeros((1, 3, 224, 224), np.float32))
    monkeypatch.setattr(onnx_import, "MAX_FILE_BYTES", 1000)
    with pytest.raises(onnx_import.OnnxImportError, match="over the 0 MiB this importer reads"):
        onnx_import.convert(whole)


def test_reference_refuses_a_batch_of_the_wrong_shape(zoo_files):
    with pytest.raises(onnx_import.OnnxImportError, match="N x 3 x 224 x 224"):
        onnx_import.reference_logits(zoo_files["caffe2-pads"], np.zeros((1, 224, 224, 3), np.float32))


def test_missing_onnx_names_the_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "onnx", None)
    (tmp_path / "m.onnx").write_bytes(b"x")
    with pytest.raises(onnx_import.OnnxImportError) as err:
        onnx_import.convert(tmp_path / "m.onnx")
    assert 'pip install "alexnet-explorer[pretrained]"' in str(err.value)


# --- Reading the structure without the weights (onnx_import.load_structure) --------------------------------------


def test_the_structure_is_read_without_the_big_weights_and_they_read_back_exactly(zoo_files):
    path = zoo_files["caffe2-pads"]
    whole = onnx_import.load_graph(path)
    model, stored = onnx_import.load_structure(path)
    assert model.ByteSize() < 2**20 and path.stat().st_size > 200 * 2**20  # the weights stayed in the file
    assert list(model.graph.node) == list(whole.graph.node)
    assert [(t.name, list(t.dims)) for t in model.graph.initializer] == \
        [(t.name, list(t.dims)) for t in whole.graph.initializer]
    big = {t.name: t for t in whole.graph.initializer if len(t.raw_data) >= onnx_import.BIG_RAW}
    assert set(stored.spans) == set(big) and {"fc6_w_0", "fc7_w_0", "fc8_w_0"} <= set(big)
    tensors = onnx_import._constants(model.graph)
    with stored:
        for name, tensor in big.items():
            expected = numpy_helper.to_array(tensor)
            assert np.array_equal(stored.rows(tensors[name], 0, expected.shape[0]), expected)
            assert np.array_equal(stored.rows(tensors[name], 3, 7), expected[3:7])


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        out.append((value & 0x7F) | (0x80 if value > 0x7F else 0))
        value >>= 7
        if not value:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def test_split_reading_gives_what_protobuf_parses_for_every_encoding(tmp_path, monkeypatch):
    """float32, float16, float64 raw data; float_data; a raw_data field given twice (the last one counts, big or
    small); two graph fields (protobuf merges them): the values read back equal onnx's own parse of the bytes."""
    monkeypatch.setattr(onnx_import, "BIG_RAW", 64)
    rng = np.random.default_rng(3)
    arrays = {"f32": rng.normal(size=(6, 5)).astype(np.float32), "f16": rng.normal(size=(8, 4)).astype(np.float16),
              "f64": rng.normal(size=(3, 7)), "small": rng.normal(size=(2,)).astype(np.float32)}
    inits = [numpy_helper.from_array(a, name) for name, a in arrays.items()]
    inits.append(helper.make_tensor("listed", TensorProto.FLOAT, [4, 5], rng.normal(size=20).tolist()))
    node = helper.make_node("Identity", ["x"], ["y"])
    first = helper.make_model(helper.make_graph([node], "g", [helper.make_tensor_value_info("x", 1, [1])],
                                                [helper.make_tensor_value_info("y", 1, [1])], initializer=inits))
    # A tensor whose raw data is given twice: a big value, then a small one that replaces it; and the reverse.
    big, small = rng.normal(size=(40,)).astype(np.float32), np.arange(3, dtype=np.float32)
    twice = []
    for name, values in (("big-then-small", (big, small)), ("small-then-big", (small, big))):
        tensor = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=[len(values[1])]).SerializeToString()
        twice.append(_field(5, tensor + b"".join(_field(9, v.tobytes()) for v in values)))
    data = first.SerializeToString() + _field(7, b"".join(twice))
    (tmp_path / "m.onnx").write_bytes(data)
    reference = onnx.load_model_from_string(data)
    model, stored = onnx_import.load_structure(tmp_path / "m.onnx")
    assert set(stored.spans) == {"f32", "f16", "f64", "small-then-big"}  # 64 bytes or more; the rest stay parsed
    assert [t.name for t in model.graph.initializer] == [t.name for t in reference.graph.initializer]
    tensors = onnx_import._constants(model.graph)
    with stored:
        for tensor in reference.graph.initializer:
            expected = numpy_helper.to_array(tensor).astype(np.float32)
            got = onnx_import._array(tensors, tensor.name, "m.onnx", stored)
            assert got.dtype == np.float32 and np.array_equal(got, expected), tensor.name


def test_split_reading_refuses_damage_and_a_file_that_changes(tmp_path, zoo_files, monkeypatch):
    path = tmp_path / "z.onnx"
    path.write_bytes(zoo_files["renamed-ceil"].read_bytes())
    model, stored = onnx_import.load_structure(path)
    fc6 = onnx_import._constants(model.graph)[stored_name := next(iter(stored.spans))]
    with open(path, "r+b") as handle:  # cut short after its structure was read
        handle.truncate(stored.spans[stored_name][0] + 100)
    with stored, pytest.raises(onnx_import.OnnxImportError, match="ended while tensor .* was read: the file changed"):
        stored.rows(fc6, 0, int(fc6.dims[0]))
    # A field of a wire type ONNX never writes (a group), a length past the end, and two tensors of one name.
    for name, data in {"group.onnx": _varint(7 << 3 | 3) + b"\x00", "long.onnx": _field(7, b"\x2a\x05abc")[:-1]
                       + b"\xff\xff\xff\x0f"}.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(onnx_import.OnnxImportError, match="damaged or truncated"):
            onnx_import.load_structure(tmp_path / name)
    monkeypatch.setattr(onnx_import, "BIG_RAW", 16)
    weights = [numpy_helper.from_array(np.ones(8, np.float32), "w"), numpy_helper.from_array(np.zeros(8, np.float32), "w")]
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", 1, [1])], [helper.make_tensor_value_info("y", 1, [1])],
                              initializer=weights)
    onnx.save(helper.make_model(graph), tmp_path / "twice.onnx")
    with pytest.raises(onnx_import.OnnxImportError, match="names two tensors 'w'"):
        onnx_import.load_structure(tmp_path / "twice.onnx")


def test_gemm_scales_are_honoured_from_the_file(tmp_path, zoo_files):
    """Gemm's alpha and beta (1 in the zoo's file) on a transposed and an untransposed weight, read from the file a
    block at a time: the converted model matches ONNX Runtime on the changed graph."""
    import keras

    for key in ("caffe2-pads", "renamed-ceil"):
        model = onnx.load(zoo_files[key])
        for node in model.graph.node:
            if node.op_type == "Gemm":
                node.attribute.extend([helper.make_attribute("alpha", 0.5), helper.make_attribute("beta", 2.0)])
        onnx.save(model, tmp_path / f"{key}.onnx")
        keras_model, _ = onnx_import.convert(tmp_path / f"{key}.onnx")
        rgb = sample_images()[:2] - MEAN_BGR[::-1]
        ours = np.asarray(keras.Model(keras_model.inputs, keras_model.get_layer("fc8").output)(rgb), np.float64)
        theirs = onnx_import.reference_logits(tmp_path / f"{key}.onnx", onnx_import.to_reference_input(rgb))
        reference = onnx_import.reference_logits(zoo_files[key], onnx_import.to_reference_input(rgb))
        assert np.abs(theirs - reference).max() > 1.0  # the scales changed the logits
        scale = np.abs(theirs).max(axis=1, keepdims=True)
        assert np.all(np.abs(ours - theirs) <= 1e-4 * scale), float((np.abs(ours - theirs) / scale).max())


def test_split_reading_of_randomly_damaged_files_is_protobufs_reading_or_a_refusal(tmp_path, monkeypatch):
    """Bytes changed or cut at random in a small model: load_structure either refuses with its own error or reads
    exactly what protobuf parses from the same bytes (every initializer's fields, and its raw data from the file)."""
    monkeypatch.setattr(onnx_import, "BIG_RAW", 64)
    rng = np.random.default_rng(11)
    inits = [numpy_helper.from_array(rng.normal(size=shape).astype(np.float32), f"w{i}")
             for i, shape in enumerate([(4, 8), (3,), (16, 2), (2, 2)])]
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", 1, [1])], [helper.make_tensor_value_info("y", 1, [1])],
                              initializer=inits)
    data = helper.make_model(graph).SerializeToString()
    path, read = tmp_path / "m.onnx", 0
    for _ in range(300):
        mutated = bytearray(data)
        for _ in range(int(rng.integers(1, 4))):
            mutated[int(rng.integers(len(mutated)))] = int(rng.integers(256))
        if rng.random() < 0.3:
            mutated = mutated[:int(rng.integers(1, len(mutated)))]
        path.write_bytes(bytes(mutated))
        try:
            model, stored = onnx_import.load_structure(path)
        except onnx_import.OnnxImportError:
            continue
        read += 1
        reference = onnx.load_model_from_string(bytes(mutated))  # what protobuf makes of the same bytes
        assert len(model.graph.initializer) == len(reference.graph.initializer)
        for ours, theirs in zip(model.graph.initializer, reference.graph.initializer):
            if stored.holds(ours):
                offset, length = stored.spans[ours.name]
                assert bytes(mutated[offset:offset + length]) == theirs.raw_data
                theirs.ClearField("raw_data")
                ours.ClearField("raw_data")
            assert ours == theirs
    assert read > 30  # damage that leaves a valid model is read, not only refused


def test_a_flood_of_tiny_fields_is_refused_before_it_takes_minutes(tmp_path, monkeypatch):
    monkeypatch.setattr(onnx_import, "MAX_FIELDS", 1000)
    (tmp_path / "flood.onnx").write_bytes(bytes([0x08, 0x01]) * 1001)  # ir_version, 1001 times
    with pytest.raises(onnx_import.OnnxImportError, match="flood.onnx: the file holds more than 1,000 protobuf fields"):
        onnx_import.convert(tmp_path / "flood.onnx")
