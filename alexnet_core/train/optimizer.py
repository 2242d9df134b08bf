"""The optimizer and its learning rate: the configured optimizer and schedule (`build_optimizer`),
and the plateau rule of the `step` and `plateau` schedules, computed from the committed history
so it survives stops, kills and resumes exactly. TensorFlow: imported lazily (Keras).
"""

from __future__ import annotations

# Imports inside functions are deliberate: TensorFlow and Keras, and the modules that reach them,
# load on first use, so importing this module (the app's pages, the command line) stays light.
import math

from alexnet_core.settings.config import TrainConfig

PLATEAU = {  # Keras ReduceLROnPlateau's settings for the two schedules that react to a plateau
    "step": {"factor": 0.1, "patience": 3, "mode": "max"},  # the paper: /10 when validation stalls
    "plateau": {"factor": 0.5, "patience": 2, "mode": "min"},  # the Keras seed: halve on a loss plateau
}
MIN_LR = 1e-6
MIN_DELTA = 1e-4


def build_optimizer(config: TrainConfig, steps_per_epoch: int, loss_scaling: bool = False):
    """The configured optimizer and learning-rate schedule; wrapped for float16 loss scaling if asked."""
    import keras

    total = max(1, config.epochs * steps_per_epoch)
    warmup = int(config.warmup_epochs * steps_per_epoch)
    lr = config.lr
    if config.schedule == "cosine":
        lr = keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=lr / 100 if warmup else lr, decay_steps=max(1, total - warmup), alpha=0.0,
            warmup_target=lr if warmup else None, warmup_steps=warmup)
    if config.optimizer == "sgd":
        optimizer = keras.optimizers.SGD(lr, momentum=0.9, weight_decay=config.weight_decay or None)
    elif config.optimizer == "adamw":
        optimizer = keras.optimizers.AdamW(lr, weight_decay=config.weight_decay)
    else:
        optimizer = keras.optimizers.Adam(lr)
    return keras.optimizers.LossScaleOptimizer(optimizer) if loss_scaling else optimizer


def plateau_learning_rate(config: TrainConfig, history: list[dict], monitor: str) -> float:
    """The learning rate of the next epoch under `step`/`plateau`, from the metrics so far.

    The same rule as keras.callbacks.ReduceLROnPlateau (cooldown 0), computed from the committed
    history instead of kept in a callback, so it survives stops, kills and resumes exactly.
    """
    rule = PLATEAU[config.schedule]
    lr, best, wait = config.lr, None, 0
    for row in history:
        value = row.get(monitor)
        if value is None or not math.isfinite(value):
            continue
        improved = best is None or (value > best + MIN_DELTA if rule["mode"] == "max" else value < best - MIN_DELTA)
        if improved:
            best, wait = value, 0
            continue
        wait += 1
        if wait >= rule["patience"]:
            if lr > MIN_LR:
                lr = max(lr * rule["factor"], MIN_LR)
            wait = 0
    return lr


def current_learning_rate(optimizer) -> float:
    """The optimizer's learning rate now (NaN when it cannot be read as one number)."""
    try:
        return float(optimizer.learning_rate)
    except (TypeError, ValueError):
        return float("nan")
