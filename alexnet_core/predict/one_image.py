"""One image at a time through an XLA-compiled copy of a forward pass, for the 224-px networks.

At batch 1 on a CPU, TensorFlow's own kernels run the 224-px AlexNets slower than PyTorch eager
(the dense layers' matrix-vector products above all); the same graph compiled by XLA for a fixed
1 x S x S x 3 input runs 23-29% faster than without XLA, 1.01-1.24x PyTorch eager on torchvision's
network (docs/BENCHMARKS.md, "The real AlexNet at 224 px"). Compiling takes about half a second, once per
model and process, and holds about 80 MiB of compiled code and buffers, not a copy of the
weights. Small networks gain nothing a click would notice and would pay the compile on the first
click, so only inputs of XLA_FROM px or more use it. Batches of other sizes, and any model XLA
cannot compile, go through the plain function.
"""

from __future__ import annotations

import threading

XLA_FROM = 128  # input side (px) from which one image goes through XLA


class OneImageFast:
    """`plain` (a tf.function over batches) with one-image calls sent to an XLA compilation of
    `body`, the same computation. Called like `plain`; returns what it returns."""

    def __init__(self, plain, body, input_size: int):
        self.plain, self.body, self.size = plain, body, int(input_size)
        self._compiled = None
        self._failed = False
        self._lock = threading.Lock()

    def _one(self):
        import tensorflow as tf

        with self._lock:
            if self._compiled is None:
                spec = tf.TensorSpec([1, self.size, self.size, 3], tf.float32)
                self._compiled = tf.function(self.body, jit_compile=True, input_signature=[spec])
            return self._compiled

    def __call__(self, batch):
        import tensorflow as tf

        shape = getattr(batch, "shape", None)
        if self._failed or shape is None or tuple(shape[:1]) != (1,) or tuple(shape[1:]) != (self.size, self.size, 3):
            return self.plain(batch)
        try:
            return self._one()(tf.cast(batch, tf.float32))
        except Exception:  # an op XLA cannot compile (or run) here: the plain function from now on
            self._failed = True
            return self.plain(batch)


def fast_for_one_image(plain, body, input_size: int):
    """`plain` itself for small inputs, else a OneImageFast around it."""
    return OneImageFast(plain, body, input_size) if int(input_size) >= XLA_FROM else plain
