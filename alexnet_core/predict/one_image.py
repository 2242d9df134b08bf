"""One image at a time through an XLA-compiled copy of a forward pass, for the 224-px networks.

At batch 1 on a CPU, TensorFlow's own kernels run the 224-px AlexNets slower than PyTorch eager
(the dense layers' matrix-vector products above all); the same graph compiled by XLA for a fixed
1 x S x S x 3 input takes 16-23% less time than without XLA, 1.01-1.24x PyTorch eager on torchvision's
network (docs/BENCHMARKS.md, "The real AlexNet at 224 px"). Compiling takes about half a second,
once per model and process, in a background thread started by the first single image (which the
plain function answers), and holds about 80 MiB of compiled code and buffers, not a copy of the
weights. Small networks gain nothing a click would notice, so only inputs of XLA_FROM px or more
use it. Batches, and any model XLA cannot compile, go through the plain function.
"""

from __future__ import annotations

import threading

XLA_FROM = 128  # input side (px) from which one image goes through XLA


class OneImageFast:
    """`plain` (a tf.function over batches) with one-image calls sent to an XLA compilation of
    `body`, the same computation. Called like `plain`; returns what it returns. The compilation is
    made in a background thread, started by the first one-image call, which (like every call
    until it is ready) is served by `plain`: no click waits for the compiler."""

    def __init__(self, plain, body, input_size: int):
        self.plain, self.body, self.size = plain, body, int(input_size)
        self._compiled = None
        self._failed = False
        self._thread = None
        self._lock = threading.Lock()

    def _compile(self) -> None:
        import tensorflow as tf

        try:
            spec = tf.TensorSpec([1, self.size, self.size, 3], tf.float32)
            compiled = tf.function(self.body, jit_compile=True, input_signature=[spec])
            compiled(tf.zeros([1, self.size, self.size, 3]))  # compiles, and runs once
            self._compiled = compiled
        except Exception:  # an op XLA cannot compile (or run) here: the plain function from now on
            self._failed = True

    def _start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._compile, name="xla-one-image", daemon=True)
                self._thread.start()

    def wait(self, timeout: float | None = None) -> bool:
        """Start the compilation if it is not under way and wait for it; True when one image now
        goes through XLA."""
        self._start()
        self._thread.join(timeout)
        return self._compiled is not None and not self._failed

    def __call__(self, batch):
        import tensorflow as tf

        shape = getattr(batch, "shape", None)
        if self._failed or shape is None or tuple(shape[:1]) != (1,) or tuple(shape[1:]) != (self.size, self.size, 3):
            return self.plain(batch)
        compiled = self._compiled
        if compiled is None:
            self._start()
            return self.plain(batch)
        try:
            return compiled(tf.cast(batch, tf.float32))
        except Exception:  # failing at run time too: the plain function from now on
            self._failed = True
            return self.plain(batch)


def fast_for_one_image(plain, body, input_size: int):
    """`plain` itself for small inputs, else a OneImageFast around it."""
    return OneImageFast(plain, body, input_size) if int(input_size) >= XLA_FROM else plain
