"""One image of a 224-px network through XLA (alexnet_core.predict.one_image): the same answers as the plain
forward, batches and small networks untouched, and a model XLA cannot compile served by the plain function."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from alexnet_core.predict import novelty, one_image
from alexnet_core.predict.inference import LoadedModel, Predictor, make_forward


def _loaded(variant: str, size: int) -> LoadedModel:
    import keras

    from alexnet_core.inputs.preprocess import describe
    from alexnet_core.models.variants import build_model

    keras.utils.set_random_seed(0)
    model = build_model(variant, num_classes=10, input_size=size)
    return LoadedModel(model, [f"c{i}" for i in range(10)], "test", Path("m.keras"), None, describe(size))


@pytest.fixture(scope="module")
def large():
    return _loaded("compact", 128)


def test_one_image_of_a_large_network_goes_through_xla_with_the_same_answer(large):
    import tensorflow as tf

    forward = make_forward(large)
    assert isinstance(forward, one_image.OneImageFast)
    images = np.random.default_rng(0).uniform(0, 255, (3, 128, 128, 3)).astype(np.float32)
    plain = forward.plain(images).numpy()
    first = forward(images[:1]).numpy()  # answered by the plain function while XLA compiles
    np.testing.assert_array_equal(first, forward.plain(images[:1]).numpy())
    assert forward.wait(120)
    one = forward(images[:1]).numpy()
    assert forward._compiled.experimental_get_compiler_ir(tf.constant(images[:1]))(stage="hlo")  # an XLA program
    np.testing.assert_allclose(one, plain[:1], rtol=1e-4, atol=1e-6)
    assert one.argmax() == plain[0].argmax()
    np.testing.assert_array_equal(forward(images).numpy(), plain)  # a batch: the plain function itself
    # uint8 pixels, as evaluation passes them, give the same as their float values
    np.testing.assert_allclose(forward(images[:1].round().astype(np.uint8)).numpy(),
                               forward.plain(images[:1].round()).numpy(), rtol=1e-4, atol=1e-6)


def test_the_tapped_function_of_classify_takes_the_same_path(large):
    run = novelty.tapped_function(large.model, large.preprocessing, ["fc7"])
    assert isinstance(run, one_image.OneImageFast)
    image = np.random.default_rng(1).uniform(0, 255, (1, 128, 128, 3)).astype(np.float32)
    assert run.wait(120)
    probs, (pooled,) = run(image)
    plain_probs, (plain_pooled,) = run.plain(image)
    np.testing.assert_allclose(probs, plain_probs, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(pooled, plain_pooled, rtol=1e-4, atol=1e-4)
    predictor = Predictor(large)
    np.testing.assert_allclose(predictor.probabilities(image), plain_probs, rtol=1e-4, atol=1e-6)


def test_small_networks_keep_the_plain_function():
    forward = make_forward(_loaded("compact", 32))
    assert not isinstance(forward, one_image.OneImageFast)
    assert forward(np.zeros((1, 32, 32, 3), np.float32)).shape == (1, 10)


def test_what_xla_cannot_compile_is_served_by_the_plain_function():
    import tensorflow as tf

    def body(batch):  # a NumPy step inside: XLA cannot compile it
        return tf.numpy_function(lambda x: x.mean(axis=(1, 2, 3), keepdims=True), [tf.cast(batch, tf.float32)],
                                 tf.float32)

    fast = one_image.OneImageFast(tf.function(body), body, 128)
    image = np.full((1, 128, 128, 3), 7.0, np.float32)
    assert float(np.asarray(fast(image)).ravel()[0]) == 7.0
    assert not fast.wait(120) and fast._failed
    assert float(np.asarray(fast(image)).ravel()[0]) == 7.0  # and from then on, without trying again
    assert fast._compiled is None
