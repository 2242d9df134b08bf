"""The custom layers in keras.ops (any Keras backend) against TensorFlow's own ops and numpy.

bench/gpu_throughput.py builds `paper` and `torchvision` under Keras' JAX backend on machines
without TensorFlow, so alexnet_core/models/layers.py must not need TensorFlow; these tests pin the
keras.ops versions to what the TensorFlow ops computed before.
"""

import ast
import math
import tempfile
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from alexnet_core.models.layers import AdaptiveAveragePooling2D, LocalResponseNormalization

CORE = Path(__file__).resolve().parent.parent / "alexnet_core"
LRN_SETTINGS = [dict(depth_radius=2, bias=2.0, alpha=1e-4, beta=0.75),  # the paper's
                dict(depth_radius=1, bias=1.0, alpha=1e-3, beta=0.5),
                dict(depth_radius=0, bias=1.0, alpha=1e-2, beta=0.75)]


def tf_lrn(x, depth_radius, bias, alpha, beta):
    return tf.nn.local_response_normalization(tf.cast(x, tf.float32), depth_radius=depth_radius, bias=bias,
                                              alpha=alpha, beta=beta).numpy()


@pytest.mark.parametrize("settings", LRN_SETTINGS)
def test_lrn_equals_tensorflow_float32(settings):
    x = np.random.default_rng(0).normal(0, 40, (3, 5, 7, 19)).astype(np.float32)
    layer = LocalResponseNormalization(**settings)
    for got in (np.asarray(layer(x)), np.asarray(layer.portable(x))):  # TensorFlow's kernel, and keras.ops
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, tf_lrn(x, **settings), rtol=1e-5, atol=1e-5)


def test_lrn_equals_tensorflow_on_bfloat16_inputs():
    x = tf.cast(np.random.default_rng(1).normal(0, 40, (2, 6, 6, 16)).astype(np.float32), tf.bfloat16)
    settings = LRN_SETTINGS[0]
    reference = tf_lrn(x, **settings)  # bfloat16 values, normalised in float32
    # The float32 arithmetic on the same bfloat16 values:
    exact = np.asarray(LocalResponseNormalization(**settings).portable(tf.cast(x, tf.float32)))
    np.testing.assert_allclose(exact, reference, rtol=1e-5, atol=1e-5)
    # Under the mixed_bfloat16 policy the layer takes and gives bfloat16, computing in float32:
    layer = LocalResponseNormalization(**settings, dtype="mixed_bfloat16")
    out = layer(x)
    assert keras.backend.standardize_dtype(out.dtype) == "bfloat16"
    expected = tf.cast(tf.cast(reference, tf.bfloat16), tf.float32).numpy()
    got = tf.cast(out, tf.float32).numpy()
    np.testing.assert_allclose(got, expected, rtol=2**-8, atol=1e-5)  # at most one bfloat16 rounding step
    assert np.mean(got == expected) > 0.99


def adaptive_reference(x, out):
    """PyTorch's AdaptiveAvgPool2d bins written out with numpy."""
    n, h, w, c = x.shape
    y = np.empty((n, out, out, c), np.float64)
    for i in range(out):
        r0, r1 = math.floor(i * h / out), math.ceil((i + 1) * h / out)
        for j in range(out):
            c0, c1 = math.floor(j * w / out), math.ceil((j + 1) * w / out)
            y[:, i, j] = x[:, r0:r1, c0:c1].astype(np.float64).mean(axis=(1, 2))
    return y


@pytest.mark.parametrize("height, width", [(13, 13), (7, 7), (13, 7), (6, 6), (20, 9)])
def test_adaptive_pooling_equals_numpy(height, width):
    x = np.random.default_rng(2).normal(0, 5, (2, height, width, 4)).astype(np.float32)
    got = np.asarray(AdaptiveAveragePooling2D(6)(x))
    assert got.shape == (2, 6, 6, 4)
    np.testing.assert_allclose(got, adaptive_reference(x, 6), rtol=1e-5, atol=1e-5)


def test_the_layers_need_no_tensorflow():
    """layers.py and variants.py import no TensorFlow at module level (build_model's path); the
    LRN layer uses TensorFlow's kernel only when Keras runs on TensorFlow."""

    def tf_imports(nodes):
        found = []
        for node in nodes:
            if isinstance(node, ast.Import):
                found += [a.name for a in node.names if a.name.split(".")[0] == "tensorflow"]
            elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "tensorflow":
                found.append(node.module)
        return found

    layers = ast.parse((CORE / "models" / "layers.py").read_text())
    assert tf_imports(layers.body) == []
    variants = ast.parse((CORE / "models" / "variants.py").read_text())
    assert tf_imports(variants.body) == []


@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16"])
def test_fused_batch_norm_trains_exactly_as_keras_batch_norm(policy):
    """Our BatchNormalization (TensorFlow's fused kernel while training) against Keras' own: the
    same outputs, the same moving statistics after a step, the same gradients."""
    import keras
    import tensorflow as tf

    from alexnet_core.models.layers import BatchNormalization

    before = keras.mixed_precision.global_policy().name
    keras.mixed_precision.set_global_policy(policy)
    try:
        rng = np.random.default_rng(0)
        x = tf.constant(rng.normal(2, 3, (8, 5, 5, 6)).astype("float32"))
        ours, theirs = BatchNormalization(), keras.layers.BatchNormalization()
        for layer in (ours, theirs):
            layer.build(x.shape)
        weights = [rng.normal(1, .2, 6), rng.normal(0, .2, 6), rng.normal(0, 1, 6), rng.uniform(.5, 2, 6)]
        for layer in (ours, theirs):
            layer.set_weights([w.astype("float32") for w in weights])
        results = []
        for layer in (ours, theirs):
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = tf.cast(layer(x, training=True), tf.float32)
                loss = tf.reduce_sum(y * y * tf.range(1, 7, dtype=tf.float32))
            grads = tape.gradient(loss, [x, layer.gamma, layer.beta])
            results.append((y.numpy(), [g.numpy() for g in grads], layer.moving_mean.numpy(),
                            layer.moving_variance.numpy(), tf.cast(layer(x, training=False), tf.float32).numpy()))
        tol = 1e-4 if policy == "float32" else 5e-2
        for a, b in zip(results[0], results[1]):
            for u, v in zip(a if isinstance(a, list) else [a], b if isinstance(b, list) else [b]):
                np.testing.assert_allclose(u, v, rtol=tol, atol=tol)
        assert not np.allclose(results[0][2], weights[2])  # the moving mean did move
    finally:
        keras.mixed_precision.set_global_policy(before)


def test_models_train_with_the_fused_batch_norm_and_reload():
    import keras

    from alexnet_core.models.layers import BatchNormalization
    from alexnet_core.models.variants import build_model

    model = build_model("compact", num_classes=3, input_size=16, width=0.25)
    assert type(model.get_layer("bn1")) is BatchNormalization
    path = Path(tempfile.mkdtemp()) / "m.keras"
    model.save(path)
    again = keras.models.load_model(path, safe_mode=True)
    assert type(again.get_layer("bn1")) is BatchNormalization
