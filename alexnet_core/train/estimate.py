"""The Train page's epoch estimate: seconds per epoch of a run's settings on this machine,
measured with the real training step and input pipeline. TensorFlow: imported lazily.
"""

from __future__ import annotations

# Imports inside functions are deliberate: TensorFlow and Keras, the modules that reach them
# and NumPy load on first use, so importing this module
# (the app's pages, the command line) stays light.
import math
import time

from alexnet_core.settings.config import TrainConfig
from alexnet_core.train.loop import PER_IMAGE, loss_function, make_steps, numbers
from alexnet_core.train.optimizer import build_optimizer


def estimate_epoch_seconds(config: TrainConfig, num_classes: int, num_images: int, steps: int = 5,
                           num_val: int = 0) -> float:
    """Seconds per epoch: the real training step fed by the real input pipeline (augmentation,
    standardisation, prefetch) from decoded images in memory, timed after two warm-up steps,
    plus the validation pass over `num_val` images, timed the same way, in the run's precision."""
    from alexnet_core.train.devices import precision_policy

    with precision_policy(config.mixed_precision) as loss_scaling:
        return _estimate_epoch_seconds(config, num_classes, num_images, steps, num_val, loss_scaling)


def _estimate_epoch_seconds(config: TrainConfig, num_classes: int, num_images: int, steps: int, num_val: int,
                            loss_scaling: bool) -> float:
    import numpy as np
    import tensorflow as tf

    from alexnet_core.inputs.augment import dataset_options
    from alexnet_core.inputs.data import Split, make_dataset
    from alexnet_core.models.variants import build_model

    strategy = tf.distribute.get_strategy()
    model = build_model(config.variant, num_classes=num_classes, input_size=config.input_size, **config.switches)
    optimizer = build_optimizer(config, max(1, num_images // config.batch_size), loss_scaling=loss_scaling)
    size = model.input_shape[1]
    rng = np.random.default_rng(0)
    count = config.batch_size * 4
    split = Split(rng.integers(0, num_classes, count).astype(np.int32),
                  images=rng.integers(0, 256, (count, size, size, 3), dtype=np.uint8))
    train = make_dataset(split, num_classes, size, config.batch_size, training=True, drop_remainder=True,
                         **dataset_options(config.augment, size, config.seed))
    iterator = iter(train)
    train_step, eval_step = make_steps(model, optimizer, strategy, loss_function(config), config.batch_size,
                                       min(5, num_classes), per_image=config.snapshots)
    for _ in range(2):
        numbers(train_step(iterator))
    start = time.perf_counter()
    for _ in range(steps):
        numbers(train_step(iterator))
    seconds = (time.perf_counter() - start) / steps * math.ceil(num_images / config.batch_size)
    if num_val:
        batches = list(make_dataset(split, num_classes, size, config.batch_size).take(2))
        def evaluate(batch):  # as the trainer reads it, the snapshot's per-image outputs included
            out = eval_step(batch)
            return [out.pop(key).numpy() for key in PER_IMAGE if key in out], numbers(out)

        evaluate(batches[0])
        start = time.perf_counter()
        for batch in batches:
            evaluate(batch)
        seconds += (time.perf_counter() - start) / len(batches) * math.ceil(num_val / config.batch_size)
    return seconds
