import keras
import numpy as np

from alexnet_core.analysis.charts import network_dot, params_and_macs
from alexnet_core.models.anatomy import compare_tables, layer_table, summary, totals
from alexnet_core.models.layers import AdaptiveAveragePooling2D, LocalResponseNormalization
from alexnet_core.models.variants import build_model


def lrn_reference(a, n=5, k=2.0, alpha=1e-4, beta=0.75):
    """The paper's formula, written out channel by channel."""
    out = np.empty_like(a)
    channels = a.shape[-1]
    for i in range(channels):
        lo, hi = max(0, i - n // 2), min(channels - 1, i + n // 2)
        out[..., i] = a[..., i] / (k + alpha * np.sum(a[..., lo:hi + 1] ** 2, axis=-1)) ** beta
    return out


def test_lrn_matches_the_paper_formula():
    a = np.random.default_rng(0).normal(0, 30, (2, 4, 4, 11)).astype(np.float32)
    got = np.asarray(LocalResponseNormalization()(a))
    np.testing.assert_allclose(got, lrn_reference(a), rtol=1e-5)


def test_lrn_config_round_trip():
    layer = LocalResponseNormalization(depth_radius=3, bias=1.0, alpha=2e-4, beta=0.5, name="x")
    clone = LocalResponseNormalization.from_config(layer.get_config())
    assert (clone.depth_radius, clone.bias, clone.alpha, clone.beta) == (3, 1.0, 2e-4, 0.5)


def test_adaptive_pool_matches_pytorch_bins():
    x = np.random.default_rng(0).random((1, 13, 13, 2), dtype=np.float32)
    got = np.asarray(AdaptiveAveragePooling2D(6)(x))
    # PyTorch bins for 13 -> 6: start floor(i*13/6), end ceil((i+1)*13/6)
    starts = [0, 2, 4, 6, 8, 10]
    ends = [3, 5, 7, 9, 11, 13]
    for i in range(6):
        for j in range(6):
            ref = x[0, starts[i]:ends[i], starts[j]:ends[j]].mean(axis=(0, 1))
            np.testing.assert_allclose(got[0, i, j], ref, rtol=1e-6)
    same = np.random.default_rng(1).random((1, 6, 6, 2), dtype=np.float32)
    np.testing.assert_array_equal(np.asarray(AdaptiveAveragePooling2D(6)(same)), same)


def tiny_model():
    inputs = keras.Input((8, 8, 3), name="image")
    x = keras.layers.Conv2D(4, 3, strides=2, padding="same", name="conv1")(inputs)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.MaxPooling2D(2, name="pool1")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    outputs = keras.layers.Dense(5, name="fc")(x)
    return keras.Model(inputs, outputs)


def test_layer_table_on_a_hand_checked_model():
    table = layer_table(tiny_model()).set_index("name")
    assert table.loc["conv1", "output_shape"] == (4, 4, 4)
    assert table.loc["conv1", "params"] == 3 * 3 * 3 * 4 + 4
    assert table.loc["conv1", "macs"] == 4 * 4 * 4 * (3 * 3 * 3)
    assert table.loc["bn1", "trainable_params"] == 8 and table.loc["bn1", "non_trainable_params"] == 8
    assert table.loc["fc", "macs"] == 16 * 5
    assert table.loc["pool1", "macs"] == 0
    assert table.loc["conv1", "activation_bytes"] == 4 * 4 * 4 * 4
    # receptive field: conv 3/2 -> 3 (stride 2), pool 2/2 -> 3 + 1*2 = 5 (stride 4)
    assert table.loc["conv1", "receptive_field"] == 3 and table.loc["conv1", "cumulative_stride"] == 2
    assert table.loc["pool1", "receptive_field"] == 5 and table.loc["pool1", "cumulative_stride"] == 4
    assert totals(table.reset_index())["total_params"] == tiny_model().count_params()


def test_paper_receptive_fields_and_memory():
    table = layer_table(build_model("paper")).set_index("name")
    fields = table["receptive_field"]
    assert (fields["conv1"], fields["pool1"], fields["conv2"], fields["conv5"], fields["pool5"]) == (
        11, 19, 51, 163, 195)
    assert table.loc["conv1", "activation_bytes"] == 55 * 55 * 96 * 4
    assert table.loc["conv2", "detail"] == "256 @ 5x5, same, groups 2"


def test_summary_document_shape():
    doc = summary(build_model("compact"), "compact")
    assert set(doc) == {"variant", "input_shape", "num_classes", "total_params", "trainable_params",
                        "total_macs", "layers"}
    assert doc["input_shape"] == [32, 32, 3] and doc["num_classes"] == 10
    assert set(doc["layers"][1]) == {"name", "type", "output_shape", "params", "macs"}
    assert sum(l["params"] for l in doc["layers"]) == doc["total_params"]
    assert doc["trainable_params"] < doc["total_params"]  # BatchNorm moving statistics


def test_compare_tables_marks_what_changed():
    a = layer_table(build_model("paper"))
    b = layer_table(build_model("paper", norm="batchnorm"))
    diff = compare_tables(a, b).set_index("name")
    assert diff.loc["lrn1", "status"] == "only in A"
    assert diff.loc["bn1", "status"] == "only in B"
    assert diff.loc["conv1", "status"] == "same"
    assert diff.loc["bn1", "params_change"] == 4 * 96
    grouped = compare_tables(a, layer_table(build_model("paper-ungrouped"))).set_index("name")
    assert grouped.loc["conv2", "status"] == "changed"
    assert grouped.loc["conv2", "params_change"] == 614_656 - 307_456
    assert list(grouped.index[:3]) == ["image", "conv1", "relu1"]


def test_charts_are_built_from_the_table():
    table = layer_table(build_model("two-tower"))
    fig = params_and_macs(table)
    names = list(fig.data[0].y)
    assert "fc6" in names and "conv1_a" in names and "relu1_a" not in names
    assert list(fig.data[0].x)[names.index("fc6")] == 37_752_832
    dot = network_dot(table)
    assert '"concat3" -> "conv3_a"' in dot and '"concat3" -> "conv3_b"' in dot
    assert '"conv2_a" -> "concat3"' in dot
    edges = [l for l in dot.splitlines() if "->" in l]
    assert len(edges) == len(set(edges))
    assert not any('"relu' in e for e in edges)  # activations fold into their block


def test_compare_shows_a_removed_convolution_and_the_activation_it_changed():
    full = layer_table(build_model("paper"))
    short = layer_table(build_model("paper", remove_conv=3, activation="tanh"))
    diff = compare_tables(full, short).set_index("name")
    assert diff.loc["conv3", "status"] == "only in A" and diff.loc["relu3", "status"] == "only in A"
    # conv4 reads conv2's 256 maps instead of conv3's 384 (two groups): 3*3*64*384 fewer weights.
    assert diff.loc["conv4", "status"] == "changed" and diff.loc["conv4", "params_change"] == -3 * 3 * 64 * 384
    assert diff.loc["conv5", "status"] == "same" and diff.loc["pool2", "status"] == "same"
    assert diff.loc["tanh1", "status"] == "only in B" and diff.loc["tanh1", "detail_b"] == "tanh"
    assert int(diff["params_change"].sum()) == totals(short)["total_params"] - totals(full)["total_params"]
