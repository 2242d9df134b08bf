"""Layers Keras does not ship: the paper's local response normalisation and
torchvision's adaptive average pooling. Both are registered so a `.keras`
file that uses them loads with `safe_mode=True`."""

from __future__ import annotations

# Imports inside functions are deliberate: TensorFlow and Keras, and the modules that reach them,
# load on first use, so importing this module (the app's pages, the command line) stays light.
import math

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="alexnet_core")
class LocalResponseNormalization(keras.layers.Layer):
    """Across-channel LRN (Krizhevsky et al. 2012, section 3.3).

    b = a / (bias + alpha * sum_{|j-i| <= depth_radius} a_j^2) ** beta

    The paper's k=2, n=5, alpha=1e-4, beta=0.75 are depth_radius=2, bias=2,
    alpha=1e-4, beta=0.75 here. Caffe's and ONNX's LRN (local_size, alpha, beta, k) divides its
    alpha by local_size: it is depth_radius=(local_size-1)/2, bias=k, alpha=alpha/local_size
    (variants.LRN.caffe), so the BVLC AlexNet's (5, 1e-4, 0.75, 1) is (2, 1, 2e-5, 0.75). Computed in float32 so mixed precision cannot
    overflow the squared sum. The same sum as tf.nn.local_response_normalization: channels
    beyond the edges count as zero (tests/test_layers_backend.py compares the two).
    """

    def __init__(self, depth_radius=2, bias=2.0, alpha=1e-4, beta=0.75, **kwargs):
        super().__init__(**kwargs)
        self.depth_radius = int(depth_radius)
        self.bias = float(bias)
        self.alpha = float(alpha)
        self.beta = float(beta)

    def call(self, inputs):
        if keras.backend.backend() == "tensorflow":  # TensorFlow's own kernel: 3x faster on a CPU
            import tensorflow as tf

            y = tf.nn.local_response_normalization(tf.cast(inputs, tf.float32), depth_radius=self.depth_radius,
                                                   bias=self.bias, alpha=self.alpha, beta=self.beta)
            return tf.cast(y, inputs.dtype)
        return self.portable(inputs)

    def portable(self, inputs):
        """The same normalisation in keras.ops, for every backend."""
        x = ops.cast(inputs, "float32")
        squared = ops.square(x)
        r, channels = self.depth_radius, x.shape[-1]
        if r > 0:
            padded = ops.pad(squared, [[0, 0]] * (len(x.shape) - 1) + [[r, r]])
            window = padded[..., 0:channels]
            for k in range(1, 2 * r + 1):
                window = window + padded[..., k:k + channels]
        else:
            window = squared
        y = x / ops.power(self.bias + self.alpha * window, self.beta)
        return ops.cast(y, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "depth_radius": self.depth_radius,
            "bias": self.bias,
            "alpha": self.alpha,
            "beta": self.beta,
        }


@keras.saving.register_keras_serializable(package="alexnet_core")
class AdaptiveAveragePooling2D(keras.layers.Layer):
    """PyTorch's AdaptiveAvgPool2d for channels-last inputs of static size.

    Bin i covers rows floor(i*H/out) .. ceil((i+1)*H/out), as in PyTorch, so a
    torchvision AlexNet gets the same 6x6 map at any input size.
    """

    def __init__(self, output_size=6, **kwargs):
        super().__init__(**kwargs)
        self.output_size = int(output_size)

    @staticmethod
    def _bins(size, out):
        return [(math.floor(i * size / out), math.ceil((i + 1) * size / out)) for i in range(out)]

    def call(self, inputs):
        height, width = inputs.shape[1], inputs.shape[2]
        if (height, width) == (self.output_size, self.output_size):
            return inputs
        rows = []
        for r0, r1 in self._bins(height, self.output_size):
            cols = [
                ops.mean(inputs[:, r0:r1, c0:c1, :], axis=(1, 2))
                for c0, c1 in self._bins(width, self.output_size)
            ]
            rows.append(ops.stack(cols, axis=1))
        return ops.stack(rows, axis=1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.output_size, self.output_size, input_shape[3])

    def get_config(self):
        return {**super().get_config(), "output_size": self.output_size}


CUSTOM_OBJECTS = {
    "LocalResponseNormalization": LocalResponseNormalization,
    "AdaptiveAveragePooling2D": AdaptiveAveragePooling2D,
}


@keras.saving.register_keras_serializable(package="alexnet_core")
class BatchNormalization(keras.layers.BatchNormalization):
    """Keras' BatchNormalization, trained with TensorFlow's fused kernel under the TensorFlow
    backend: one op forward and one backward (as in PyTorch and in Keras 2), where Keras 3
    builds it from a dozen ops and a float32 round trip. On this project's 2-core CPU that
    alone was about 45% of `compact`'s training step (bench/keras_vs_torch.py).

    The same weights and the same statistics as Keras' layer: the moving variance is updated
    with the batch's biased variance, as Keras does (the kernel reports the unbiased one), and a
    frozen layer (trainable=False) normalises with its moving statistics. Inputs the kernel does
    not take (not 4-D channels-last, a mask, renorm, synchronized statistics, another backend)
    go through Keras' own code.
    """

    def _fusable(self, inputs, training, mask) -> bool:
        return (bool(training) and self.trainable and keras.backend.backend() == "tensorflow" and mask is None
                and not self.renorm and not self.synchronized and len(inputs.shape) == 4 and self.axis in (-1, 3))

    def call(self, inputs, training=None, mask=None):
        if not self._fusable(inputs, training, mask):
            # Inference keeps Keras' few element-wise ops: TensorFlow folds them into the convolution
            # before it, and `profile` can still tell the two layers apart.
            return super().call(inputs, training=training, mask=mask)
        import tensorflow as tf

        channels = inputs.shape[-1]
        # Variables read as float32 whatever the compute dtype: the kernel takes float32 statistics.
        gamma = tf.cast(self.gamma.value, tf.float32) if self.scale else tf.ones((channels,), tf.float32)
        beta = tf.cast(self.beta.value, tf.float32) if self.center else tf.zeros((channels,), tf.float32)
        moving_mean = tf.cast(self.moving_mean.value, tf.float32)
        moving_variance = tf.cast(self.moving_variance.value, tf.float32)
        x = inputs if inputs.dtype in (tf.float32, tf.bfloat16, tf.float16) else tf.cast(inputs, tf.float32)
        y, mean, unbiased = tf.compat.v1.nn.fused_batch_norm(x, gamma, beta, epsilon=self.epsilon,
                                                              data_format="NHWC", is_training=True)
        n = tf.cast(tf.reduce_prod(tf.shape(x)[:-1]), tf.float32)
        variance = unbiased * tf.maximum(n - 1.0, 0.0) / tf.maximum(n, 1.0)
        self.moving_mean.assign(moving_mean * self.momentum + mean * (1.0 - self.momentum))
        self.moving_variance.assign(moving_variance * self.momentum + variance * (1.0 - self.momentum))
        return tf.cast(y, self.compute_dtype)
