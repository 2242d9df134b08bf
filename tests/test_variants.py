import numpy as np
import pytest

from alexnet_core.models.anatomy import layer_table, totals
from alexnet_core.models.layers import CUSTOM_OBJECTS
from alexnet_core.models.variants import build_model, get_arch, list_variants, min_input_size

# (input size, classes, total params, MACs) from the published networks; compact, compact-hires,
# two-tower and cifar-bn MACs worked out by hand from their layer shapes.
EXPECTED = {
    "paper": (227, 1000, 60_965_224, 724_406_816),
    "paper-ungrouped": (227, 1000, 62_378_344, 1_135_256_096),
    "two-tower": (224, 10, 56_910_602, 724_219_904),
    "cifar-bn": (32, 10, 25_730_506, 46_378_768),
    "torchvision": (224, 1000, 61_100_840, 714_188_480),
    "compact": (32, 10, 1_933_482, 57_644_032),
    # 3x3 convs of 32/64/128/256/256 at 32, 32, 16, 8, 4 px; fc6 reads 2x2x256:
    # 864*1024 + 18,432*1024 + 73,728*256 + 294,912*64 + 589,824*16 + 1024*512 + 512*512 + 512*10
    "compact-hires": (32, 10, 1_774_026, 67_736_576),
}


def test_every_variant_has_expected_figures():
    assert sorted(EXPECTED) == sorted(list_variants())


@pytest.mark.parametrize("name", list_variants())
def test_build_forward_and_totals(name):
    size, classes, params, macs = EXPECTED[name]
    model = build_model(name)
    assert model.input_shape == (None, size, size, 3)
    assert model.output_shape == (None, classes)
    assert model.count_params() == params
    table = layer_table(model)
    assert totals(table)["total_params"] == params
    assert totals(table)["total_macs"] == macs
    probs = model(np.random.default_rng(0).random((2, size, size, 3), dtype=np.float32), training=False)
    assert probs.shape == (2, classes)
    np.testing.assert_allclose(np.asarray(probs).sum(axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("name", list_variants())
def test_save_load_round_trip(name, tmp_path):
    import keras

    # Narrower (same layer kinds, much smaller files) so the whole table stays quick.
    model = build_model(name, num_classes=7, width=0.25)
    x = np.random.default_rng(1).random((2, *model.input_shape[1:]), dtype=np.float32)
    path = tmp_path / f"{name}.keras"
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    assert [l.name for l in loaded.layers] == [l.name for l in model.layers]
    np.testing.assert_array_equal(model.predict(x, verbose=0), loaded.predict(x, verbose=0))


def test_paper_round_trip_at_full_size(tmp_path):
    import keras

    model = build_model("paper")
    x = np.random.default_rng(2).random((1, 227, 227, 3), dtype=np.float32)
    model.save(tmp_path / "paper.keras")
    loaded = keras.models.load_model(tmp_path / "paper.keras", safe_mode=True, custom_objects=CUSTOM_OBJECTS)
    np.testing.assert_array_equal(model.predict(x, verbose=0), loaded.predict(x, verbose=0))


def _row_params(model):
    return {row.name: row.params for row in layer_table(model).itertuples() if row.params}


def test_paper_ungrouped_layer_rows():
    rows = _row_params(build_model("paper-ungrouped"))
    assert [rows[n] for n in ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8")] == [
        34_944, 614_656, 885_120, 1_327_488, 884_992, 37_752_832, 16_781_312, 4_097_000]


def test_two_tower_rows_per_tower():
    rows = _row_params(build_model("two-tower"))
    for tower in "ab":
        assert [rows[f"{n}_{tower}"] for n in ("conv1", "bn1", "conv2", "bn2", "conv3", "conv4", "conv5")] == [
            17_472, 192, 153_728, 512, 442_560, 331_968, 221_312]


def test_layers_named_like_the_paper():
    names = [l.name for l in build_model("paper").layers]
    for n in ("conv1", "conv2", "conv3", "conv4", "conv5", "lrn1", "lrn2", "pool1", "pool2", "pool5",
              "fc6", "fc7", "fc8", "predictions"):
        assert n in names


def test_switches_change_the_network():
    assert build_model("paper", groups=False).count_params() == EXPECTED["paper-ungrouped"][2]
    bn = [l.name for l in build_model("paper", norm="batchnorm").layers]
    assert "bn1" in bn and "lrn1" not in bn
    none = [type(l).__name__ for l in build_model("paper", norm="none").layers]
    assert "BatchNormalization" not in none and "LocalResponseNormalization" not in none
    pooled = {l.name: l.output.shape for l in build_model("compact", overlapping_pool=False).layers}
    assert pooled["pool1"][1:3] == (16, 16) and build_model("compact", overlapping_pool=False).get_layer(
        "pool1").pool_size == (2, 2)
    assert build_model("paper", dropout=0.2).get_layer("drop6").rate == 0.2
    assert "drop6" not in [l.name for l in build_model("paper", dropout=0.0).layers]
    assert build_model("compact", width=1.0).get_layer("conv1").filters == 64
    assert build_model("paper", num_classes=10, input_size=99).output_shape == (None, 10)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"name": "alexnet2"}, "Unknown variant 'alexnet2'. Available: paper, paper-ungrouped"),
        ({"name": "paper", "input_size": 32}, "input_size must be >= 67 for 'paper', got 32"),
        ({"name": "torchvision", "input_size": 62}, "input_size must be >= 63 for 'torchvision', got 62"),
        ({"name": "compact", "num_classes": 0}, "num_classes must be >= 2, got 0"),
        ({"name": "compact", "norm": "layernorm"}, "norm must be one of lrn, batchnorm, none, got 'layernorm'"),
        ({"name": "compact", "dropout": 1.0}, "dropout must be in [0, 1), got 1.0"),
        ({"name": "compact", "input_size": 5000}, "input_size must be <= 1024, got 5000"),
        ({"name": "compact", "colour": "red"}, "Unknown switch 'colour'"),
    ],
)
def test_impossible_settings_name_the_value_and_limit(kwargs, message):
    with pytest.raises(ValueError) as err:
        get_arch(**kwargs)
    assert message in str(err.value)


def test_min_input_size_builds_and_one_less_fails():
    for name in list_variants():
        arch = get_arch(name)
        low = min_input_size(arch)
        assert build_model(name, input_size=max(low, 1), width=0.25).output_shape[-1] == arch.num_classes
        if low > 1:
            with pytest.raises(ValueError, match=f">= {low}"):
                get_arch(name, input_size=low - 1)


def test_registry_refuses_duplicates():
    from alexnet_core.models.variants import register_variant

    with pytest.raises(ValueError, match="already registered"):
        register_variant("paper")(lambda: None)


def test_a_model_built_to_be_filled_starts_at_zero_and_otherwise_at_random():
    """A conversion builds its model with zeros (random initial values cost about three times a
    layer's memory while they are drawn); everything else keeps Keras' random initial weights."""
    empty = build_model("compact", num_classes=3, input_size=32, width=0.25, to_fill=True)
    fresh = build_model("compact", num_classes=3, input_size=32, width=0.25)
    kernels = [w.name for w in empty.weights if "kernel" in w.path]
    assert kernels and all(not np.any(w.numpy()) for w in empty.weights if "kernel" in w.path)
    assert all(np.any(w.numpy()) for w in fresh.weights if "kernel" in w.path)
    assert [w.shape for w in empty.weights] == [w.shape for w in fresh.weights]
