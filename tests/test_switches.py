"""The two switches the paper's claims need besides the published ones: the activation (ReLU, or
the tanh of its Figure 1) and one middle convolution removed (its section 6.1). Exact counts worked
out by hand, the names the layers keep, the command line, the Train form and the Architecture page,
and what reads a trained network (Grad-CAM, activation maps, fc7, the novelty taps) on a tanh
network with a convolution removed."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from alexnet_core.models.anatomy import layer_table, totals
from alexnet_core.models.variants import ACTIVATIONS, REMOVE_CONV, build_model, get_arch, min_input_size, spatial_sizes
from alexnet_core.settings.config import SWITCHES, ConfigError, TrainConfig
from alexnet_core.settings.recipes import RECIPES
from alexnet_core.store import layout
from tests.helpers import TINY_ARGS, cli, make_image_folder

PAPER = {"params": 60_965_224, "macs": 724_406_816}
# The paper's convolutions, weights + biases (kernel side^2 x input maps per group x kernels):
CONV2 = 5 * 5 * 48 * 256 + 256  # 307,456: conv2 reads 96 maps in 2 groups
CONV3 = 3 * 3 * 256 * 384 + 384  # 885,120: conv3 reads all 256 of conv2's maps
CONV4 = 3 * 3 * 192 * 384 + 384  # 663,936: conv4 reads 384 maps in 2 groups
# Their MACs at the 13x13 maps after pool2 (27x27 for conv2):
CONV2_MACS = 27 * 27 * 5 * 5 * 48 * 256
CONV3_MACS = 13 * 13 * 3 * 3 * 256 * 384
CONV4_MACS = 13 * 13 * 3 * 3 * 192 * 384


def rows(model) -> dict:
    return {row.name: (row.params, row.macs) for row in layer_table(model).itertuples() if row.params}


# --- Exact counts --------------------------------------------------------------------------------


@pytest.mark.parametrize("removed, params, macs, reader", [
    # conv3 gone: conv4 reads conv2's 256 maps (128 a group) instead of conv3's 384.
    (3, PAPER["params"] - CONV3 - CONV4 + (3 * 3 * 128 * 384 + 384),
     PAPER["macs"] - CONV3_MACS - CONV4_MACS + 13 * 13 * 3 * 3 * 128 * 384, ("conv4", 442_752)),
    # conv2 gone: conv3 reads conv1's 96 maps after pool1 and pool2 (13x13, as conv2's output was).
    (2, PAPER["params"] - CONV2 - CONV3 + (3 * 3 * 96 * 384 + 384),
     PAPER["macs"] - CONV2_MACS - CONV3_MACS + 13 * 13 * 3 * 3 * 96 * 384, ("conv3", 332_160)),
    # conv4 gone: conv5 reads conv3's 384 maps, as many as conv4 gave it: conv5 is unchanged.
    (4, PAPER["params"] - CONV4, PAPER["macs"] - CONV4_MACS, ("conv5", 3 * 3 * 192 * 256 + 256)),
])
def test_paper_without_a_middle_convolution_has_the_counts_worked_out_by_hand(removed, params, macs, reader):
    model = build_model("paper", remove_conv=removed)
    table = layer_table(model)
    assert (totals(table)["total_params"], totals(table)["total_macs"]) == (params, macs)
    assert model.count_params() == params
    by_name = rows(model)
    assert by_name[reader[0]][0] == reader[1]
    names = [layer.name for layer in model.layers]
    assert f"conv{removed}" not in names and f"relu{removed}" not in names
    kept = [n for n in ("conv1", "conv2", "conv3", "conv4", "conv5") if n != f"conv{removed}"]
    assert [n for n in names if n.startswith(("conv", "fc"))] == [*kept, "fc6", "fc7", "fc8"]
    if removed == 2:  # conv2's normalisation goes with it, its pooling stays
        assert "lrn2" not in names and "pool2" in names
        assert names.index("pool2") == names.index("pool1") + 1
    shapes = dict(zip(table["name"], table["output_shape"]))
    assert shapes["pool5"] == (6, 6, 256) and shapes["pool2"][:2] == (13, 13)  # every later map keeps its size


def test_a_removed_convolution_shrinks_the_receptive_field_by_its_kernel():
    full = layer_table(build_model("paper")).set_index("name")
    short = layer_table(build_model("paper", remove_conv=3)).set_index("name")
    # conv3 (3x3) widened the field by 2 steps of conv3's 16-pixel stride: 32 pixels fewer without it.
    assert full.loc["pool5", "receptive_field"] - short.loc["pool5", "receptive_field"] == 2 * 16
    assert full.loc["pool5", "cumulative_stride"] == short.loc["pool5", "cumulative_stride"] == 32


def test_tanh_has_the_same_counts_as_relu_and_its_layers_are_named_tanh():
    relu = build_model("compact")
    tanh = build_model("compact", activation="tanh")
    assert tanh.count_params() == relu.count_params() == 1_933_482
    assert totals(layer_table(tanh))["total_macs"] == 57_644_032
    names = [layer.name for layer in tanh.layers]
    assert [n for n in names if n.startswith("tanh")] == ["tanh1", "tanh2", "tanh3", "tanh4", "tanh5", "tanh6",
                                                          "tanh7"]
    assert not [n for n in names if n.startswith("relu")]
    assert {tanh.get_layer(f"tanh{i}").activation.__name__ for i in range(1, 8)} == {"tanh"}
    x = np.random.default_rng(0).normal(0, 3, (2, 32, 32, 3)).astype(np.float32)
    cut = __import__("keras").Model(tanh.input, tanh.get_layer("tanh6").output)
    out = np.asarray(cut(x, training=False))
    assert out.min() < 0 and -1 <= out.min() and out.max() <= 1  # tanh, not a ReLU: negative values too


def test_the_published_defaults_are_relu_with_all_five_convolutions():
    for name in ("paper", "paper-ungrouped", "two-tower", "cifar-bn", "torchvision", "compact", "compact-hires"):
        arch = get_arch(name)
        assert (arch.activation, arch.remove_conv) == ("relu", 0)
        assert arch.switches()["activation"] == "relu" and arch.switches()["remove_conv"] == 0
    assert ACTIVATIONS == ("relu", "tanh") and REMOVE_CONV == (0, 2, 3, 4)


def test_two_towers_lose_the_convolution_in_both_streams():
    model = build_model("two-tower", remove_conv=3)
    names = [layer.name for layer in model.layers]
    assert not [n for n in names if n.startswith(("conv3", "concat3"))]
    by_name = rows(model)
    # Each tower's conv4 reads its own tower's conv2 maps (128) instead of conv3's 192: the grouped
    # paper network, as without the removal.
    assert by_name["conv4_a"][0] == by_name["conv4_b"][0] == 3 * 3 * 128 * 192 + 192
    assert model.count_params() == 56_910_602 - 2 * (442_560 + 331_968) + 2 * (3 * 3 * 128 * 192 + 192)


def test_a_pooling_of_the_removed_convolution_stays_where_every_middle_one_pools():
    arch = get_arch("compact-hires", remove_conv=3)  # conv3 pools here
    assert spatial_sizes(arch) == spatial_sizes(get_arch("compact-hires")) == [32, 16, 8, 4, 2]
    assert min_input_size(arch) == min_input_size(get_arch("compact-hires"))
    names = [layer.name for layer in build_model("compact-hires", remove_conv=3, width=0.25).layers]
    assert "pool3" in names and "conv3" not in names and "bn3" not in names


@pytest.mark.parametrize("switches, message", [
    ({"remove_conv": 1}, "remove_conv must be 0 (keep all five convolutions) or 2, 3 or 4"),
    ({"remove_conv": 5}, "got 5"),
    ({"remove_conv": True}, "got True"),
    ({"remove_conv": "3"}, "got '3'"),
    ({"activation": "sigmoid"}, "activation must be one of relu, tanh, got 'sigmoid'"),
    ({"activation": "tanh", "pool_padding": "ceil"}, "exact only when every value pooled is >= 0"),
])
def test_impossible_switches_say_what_is_allowed(switches, message):
    with pytest.raises(ValueError) as err:
        get_arch("paper", **switches)
    assert message in str(err.value)
    if "pool_padding" not in switches:  # a run's settings (config.json) are refused alike
        with pytest.raises(ConfigError, match="activation|remove_conv"):
            TrainConfig(variant="paper", switches=switches)


def test_ceil_pooling_still_builds_with_relu_and_a_removed_convolution():
    # The BVLC network's pooling: a pool that follows a pool reads values >= 0 too.
    model = build_model("paper", input_size=224, pool_padding="ceil", remove_conv=2)
    assert tuple(model.get_layer("pool5").output.shape[1:]) == (6, 6, 256)


# --- The command line, the Train form, the Architecture page -------------------------------------


def test_summary_json_with_both_switches():
    result = cli("summary", "paper", "--activation", "tanh", "--remove-conv", "3", "--json", timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    doc = json.loads(result.stdout)
    assert doc["total_params"] == PAPER["params"] - CONV3 - CONV4 + (3 * 3 * 128 * 384 + 384)
    names = [layer["name"] for layer in doc["layers"]]
    assert "conv3" not in names and "tanh4" in names and "fc6" in names and "relu1" not in names


@pytest.mark.parametrize("args, message", [
    (["--remove-conv", "5"], "argument --remove-conv: invalid choice: 5 (choose from 0, 2, 3, 4)"),
    (["--remove-conv", "three"], "argument --remove-conv: invalid int value: 'three'"),
    (["--activation", "sigmoid"], "argument --activation: invalid choice: 'sigmoid'"),
])
def test_bad_switch_values_exit_2_with_the_choices_and_no_traceback(args, message):
    result = cli("summary", "paper", *args, timeout=120)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr


def test_the_train_form_offers_both_switches_and_reads_them_back():
    from alexnet_ui.train_form import FORM, TrainForm

    activation, removed = FORM["switches.activation"], FORM["switches.remove_conv"]
    assert activation.offered() == ["relu", "tanh"] and removed.offered() == [0, 2, 3, 4]
    assert [removed.names(n) for n in removed.offered()] == ["none (all five)", "conv2", "conv3", "conv4"]
    assert SWITCHES["remove_conv"].cli_flag == "--remove-conv"
    config = TrainConfig(variant="compact", switches={"activation": "tanh", "remove_conv": 4})
    state = TrainForm.values(dataclasses.asdict(config))
    assert (state[activation.key], state[removed.key]) == ("tanh", 4)
    read = TrainForm(state).config("sample", None)
    assert (read.switches["activation"], read.switches["remove_conv"]) == ("tanh", 4)
    TrainForm(state).follow("variant")  # another variant: back to its own (published) switches
    assert (state[activation.key], state[removed.key]) == ("relu", 0)
    state = {**TrainForm.values(RECIPES["quick"].settings), activation.key: "tanh", removed.key: 3}
    assert TrainForm(state).changed_from(RECIPES["quick"]) == [
        "activation relu → tanh", "removed convolution none (all five) → conv3"]


def test_the_architecture_page_removes_a_convolution_and_changes_the_activation():
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(Path(__file__).resolve().parent.parent / "app.py"), default_timeout=120)
    at.switch_page("pages/architecture.py")
    at.run()
    at.selectbox(key="arch_paper_remove_conv").select(3).run()
    assert not at.exception and not at.error
    assert next(m.value for m in at.metric if m.label == "Parameters") == "59,858,920"
    table = at.dataframe[0].value
    assert "conv3" not in set(table["name"]) and "conv4" in set(table["name"])
    assert not at.success  # no claim of reproducing the publication
    assert any("parameters -1,106,304" in c.value and "removed conv3" in c.value for c in at.caption)
    at.selectbox(key="arch_paper_activation").select("tanh").run()
    assert not at.exception and not at.error
    assert next(m.value for m in at.metric if m.label == "Parameters") == "59,858,920"
    assert {"tanh1", "tanh7"} <= set(at.dataframe[0].value["name"])
    at.button(key="arch_paper_reset").click().run()
    assert any("Published figures reproduced" in s.value for s in at.success)


# --- A trained tanh network with a convolution removed -------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny compact network with tanh and conv3 removed, trained two steps by `train`."""
    root = tmp_path_factory.mktemp("switches")
    folder = make_image_folder(root / "data", classes=3, per_class=8)
    result = cli("train", *TINY_ARGS, "--activation", "tanh", "--remove-conv", "3", "--data", str(folder),
                 "--epochs", "1", "--steps-per-epoch", "2", "--runs-dir", str(root / "runs"), "--run-id", "tanh",
                 "--json", timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return root / "runs" / "tanh"


def test_a_tanh_network_without_conv3_trains_and_records_its_switches(trained):
    from alexnet_core.predict.inference import load_model

    config = layout.read_config(trained)
    assert config["switches"]["activation"] == "tanh" and config["switches"]["remove_conv"] == 3
    assert TrainConfig.from_dict(config).switches["remove_conv"] == 3  # rebuilt from config.json alone
    loaded = load_model(str(trained / layout.MODEL))  # the safe loading: a tanh Activation layer is no code
    names = [layer.name for layer in loaded.model.layers]
    assert "conv3" not in names and "tanh4" in names and "relu1" not in names
    assert np.isfinite(layout.read_metrics(trained)["loss"]).all()


def test_grad_cam_maps_fc7_and_novelty_taps_read_a_tanh_network(trained):
    from alexnet_core.analysis import explain
    from alexnet_core.predict import novelty
    from alexnet_core.predict.inference import load_model

    model = load_model(str(trained / layout.MODEL)).model
    assert explain.gradcam_layers(model) == ["tanh5"]
    image = np.random.default_rng(1).normal(0, 1, (16, 16, 3)).astype(np.float32)
    heat, chosen = explain.gradcam(model, image)
    assert heat.shape == (16, 16) and 0 <= chosen < 3 and np.isfinite(heat).all()
    shown = explain.feature_layers(model)
    assert {"tanh1", "tanh2", "tanh4", "tanh5", "pool1"} <= set(shown) and "conv3" not in shown
    maps = explain.activations(model, image, "tanh1", limit=4)
    assert maps.shape[0] == 4 and 0 <= maps.min() and maps.max() <= 1
    assert np.isclose(np.abs(maps - 0.5).max(axis=(1, 2)), 0.5).all()  # zero at mid-grey, each channel to its edge
    assert explain.embedding_layer(model) == "tanh7"
    assert explain.embeddings(model, image[None]).shape == (1, model.get_layer("fc7").units)
    taps = novelty.tap_layers(model)
    assert taps == ["tanh1", "tanh2", "tanh4", "tanh5", "fc8:input"]
    assert novelty.tap_widths(model, taps)[-1] == model.get_layer("fc7").units
