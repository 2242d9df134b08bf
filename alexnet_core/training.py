"""Training: a TrainConfig dataclass and train(config, run_dir) via model.fit + Keras callbacks.

A run can be rebuilt from config.json alone. Resume loads checkpoints/last.keras, which holds
the model *and* the optimizer (momentum, step count and so the learning-rate schedule), and
continues at the next epoch; metrics of an epoch that was cut short are dropped first.
"""

from __future__ import annotations

import dataclasses
import math
import os
import platform
import signal
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import runs

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "step", "plateau", "cosine")
LAST = "last.keras"
BEST = "best.keras"
STATE = "state.json"


@dataclass
class TrainConfig:
    variant: str = "compact"
    data: str = "sample"
    switches: dict = field(default_factory=dict)  # norm, groups, overlapping_pool, dropout, width
    input_size: int | None = None  # None: the variant's own
    epochs: int = 10
    batch_size: int = 128
    optimizer: str = "sgd"  # sgd: momentum 0.9 + weight decay, as the paper; adam: as the Keras seed
    learning_rate: float | None = None  # None: 0.01 for sgd (the paper), 1e-3 for adam/adamw
    weight_decay: float = 5e-4  # the paper's; decoupled (Keras' weight_decay)
    schedule: str = "cosine"  # step: /10 on plateau (paper); plateau: ReduceLROnPlateau (Keras seed)
    warmup_epochs: float = 0.0
    label_smoothing: float = 0.0
    augment: str = "none"
    val_split: float = 0.1
    seed: int = 0
    mixed_precision: str = "auto"  # auto: on a GPU only
    steps_per_epoch: int | None = None  # cap per epoch (quick experiments)
    log_every: int = 10  # steps between rows of steps.csv
    cache_budget_mb: int = 2048  # decoded images held in memory up to this size, else stream

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        from .augment import PRESETS
        from .variants import get_arch

        get_arch(self.variant, input_size=self.input_size, **self.switches)
        checks = [
            (self.optimizer in OPTIMIZERS, f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}"),
            (self.schedule in SCHEDULES, f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}"),
            (self.augment in PRESETS, f"augment must be one of {', '.join(PRESETS)}, got {self.augment!r}"),
            (isinstance(self.epochs, int) and 1 <= self.epochs <= 10_000, f"epochs must be 1..10000, got {self.epochs!r}"),
            (isinstance(self.batch_size, int) and 1 <= self.batch_size <= 8192,
             f"batch_size must be 1..8192, got {self.batch_size!r}"),
            (self.learning_rate is None or (0 < self.learning_rate <= 10),
             f"learning_rate must be in (0, 10], got {self.learning_rate!r}"),
            (0 <= self.weight_decay < 1, f"weight_decay must be in [0, 1), got {self.weight_decay!r}"),
            (0 <= self.label_smoothing < 1, f"label_smoothing must be in [0, 1), got {self.label_smoothing!r}"),
            (0 <= self.val_split < 1, f"val_split must be in [0, 1), got {self.val_split!r}"),
            (0 <= self.warmup_epochs < self.epochs or self.warmup_epochs == 0,
             f"warmup_epochs must be below epochs ({self.epochs}), got {self.warmup_epochs!r}"),
            (self.mixed_precision in ("auto", "on", "off"),
             f"mixed_precision must be auto, on or off, got {self.mixed_precision!r}"),
            (self.steps_per_epoch is None or self.steps_per_epoch >= 1,
             f"steps_per_epoch must be >= 1, got {self.steps_per_epoch!r}"),
            (self.log_every >= 1, f"log_every must be >= 1, got {self.log_every!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    @property
    def lr(self) -> float:
        if self.learning_rate is not None:
            return self.learning_rate
        return 0.01 if self.optimizer == "sgd" else 1e-3

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def environment() -> dict:
    import keras
    import tensorflow as tf

    from . import __version__
    from .devices import describe

    return {"alexnet_core": __version__, "tensorflow": tf.__version__, "keras": keras.__version__,
            "python": platform.python_version(), "device": describe()}


def run_document(config: TrainConfig, class_names: list[str]) -> dict:
    """What config.json holds: the whole config, class names, versions and device."""
    return {**asdict(config), "class_names": list(class_names), "environment": environment()}


def _optimizer(config: TrainConfig, steps_per_epoch: int):
    import keras

    total = max(1, config.epochs * steps_per_epoch)
    warmup = int(config.warmup_epochs * steps_per_epoch)
    lr = config.lr
    if config.schedule == "cosine":
        lr = keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=lr / 100 if warmup else lr, decay_steps=max(1, total - warmup), alpha=0.0,
            warmup_target=lr if warmup else None, warmup_steps=warmup)
    if config.optimizer == "sgd":
        return keras.optimizers.SGD(lr, momentum=0.9, weight_decay=config.weight_decay or None)
    if config.optimizer == "adamw":
        return keras.optimizers.AdamW(lr, weight_decay=config.weight_decay)
    return keras.optimizers.Adam(lr)


def compile_model(model, config: TrainConfig, steps_per_epoch: int, num_classes: int) -> None:
    import keras

    model.compile(
        optimizer=_optimizer(config, steps_per_epoch),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing),
        metrics=[keras.metrics.CategoricalAccuracy(name="accuracy"),
                 keras.metrics.TopKCategoricalAccuracy(k=min(5, num_classes), name="top5_accuracy")],
    )


def _current_lr(model) -> float:
    opt = model.optimizer
    lr = opt.learning_rate
    try:
        return float(lr(opt.iterations)) if callable(lr) else float(lr.numpy() if hasattr(lr, "numpy") else lr)
    except Exception:
        return float("nan")


def make_callbacks(run_dir: Path, config: TrainConfig, steps_per_epoch: int, batch_size: int, has_val: bool,
                   best_so_far: float | None = None):
    import keras

    class RunMonitor(keras.callbacks.Callback):
        """Heartbeat and progress in status.json, per-step rows in steps.csv, stop requests."""

        def __init__(self):
            super().__init__()
            self.last_beat = 0.0
            self.last_stop_check = 0.0
            self.stop_reason = None
            self.diverged = None
            self.global_step = 0
            self.window_start = time.time()
            self.window_images = 0
            self.images_per_sec = None
            self.steps_file = None

        def on_train_begin(self, logs=None):
            new = not (run_dir / runs.STEPS).exists()
            self.steps_file = open(run_dir / runs.STEPS, "a", encoding="utf-8", buffering=1)
            if new:
                self.steps_file.write("step,epoch,loss,accuracy,learning_rate\n")
            self.global_step = int(self.model.optimizer.iterations.numpy())

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch
            self.epoch_start = time.time()
            runs.write_status(run_dir, state="running", epoch=epoch + 1, step=0,
                              steps_per_epoch=steps_per_epoch, message=f"Epoch {epoch + 1} of {config.epochs}")

        def on_train_batch_end(self, batch, logs=None):
            logs = logs or {}
            self.global_step += 1
            self.window_images += batch_size
            loss = logs.get("loss")
            if loss is not None and not math.isfinite(float(loss)):
                self.diverged = (self.epoch + 1, batch + 1)
                self.model.stop_training = True
                return
            if self.global_step % config.log_every == 0:
                self.steps_file.write(f"{self.global_step},{self.epoch + 1},{float(loss):.6g},"
                                      f"{float(logs.get('accuracy', float('nan'))):.6g},"
                                      f"{_current_lr(self.model):.6g}\n")
            now = time.time()
            if now - self.last_stop_check > 0.5:
                self.last_stop_check = now
                if runs.stop_requested(run_dir) or STOP_SIGNAL["set"]:
                    self.stop_reason = "Stopped on request"
                    self.model.stop_training = True
            if now - self.last_beat > 2.0:
                elapsed = now - self.window_start
                if elapsed > 0:
                    self.images_per_sec = self.window_images / elapsed
                self.window_start, self.window_images = now, 0
                remaining = (config.epochs - self.epoch - 1) * steps_per_epoch + (steps_per_epoch - batch - 1)
                eta = remaining * batch_size / self.images_per_sec if self.images_per_sec else None
                runs.write_status(run_dir, state="running", epoch=self.epoch + 1, step=batch + 1,
                                  steps_per_epoch=steps_per_epoch, images_per_sec=self.images_per_sec,
                                  eta_seconds=eta, learning_rate=_current_lr(self.model))
                self.last_beat = now

        def on_train_end(self, logs=None):
            if self.steps_file:
                self.steps_file.close()

    class Checkpoint(keras.callbacks.Callback):
        """checkpoints/last.keras (model + optimizer) and state.json after every epoch, atomically."""

        def on_epoch_end(self, epoch, logs=None):
            if monitor.diverged:
                return
            tmp = run_dir / runs.CHECKPOINTS / f".{LAST}.tmp.keras"
            self.model.save(tmp)
            os.replace(tmp, run_dir / runs.CHECKPOINTS / LAST)
            runs.write_json_atomic(run_dir / runs.CHECKPOINTS / STATE, {"completed_epochs": epoch + 1})
            runs.write_status(run_dir, epoch=epoch + 1, completed_epochs=epoch + 1)

    monitor = RunMonitor()
    callbacks = [
        monitor,
        keras.callbacks.TerminateOnNaN(),
        keras.callbacks.CSVLogger(str(run_dir / runs.METRICS), append=True),
        Checkpoint(),
        keras.callbacks.ModelCheckpoint(str(run_dir / runs.CHECKPOINTS / BEST),
                                        monitor="val_accuracy" if has_val else "accuracy",
                                        mode="max", save_best_only=True,
                                        initial_value_threshold=best_so_far),  # a resumed run keeps its best
        keras.callbacks.TensorBoard(str(run_dir / runs.TENSORBOARD), update_freq="epoch",
                                    profile_batch=0, write_graph=False),
    ]
    if config.schedule == "step":
        callbacks.append(keras.callbacks.ReduceLROnPlateau(monitor="val_accuracy", mode="max", factor=0.1,
                                                           patience=3, min_lr=1e-6))
    elif config.schedule == "plateau":
        callbacks.append(keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=2,
                                                           min_lr=1e-6))
    return callbacks, monitor


STOP_SIGNAL = {"set": False}


def _on_sigterm(signum, frame):
    STOP_SIGNAL["set"] = True


def configure_threads() -> None:
    """Cap TensorFlow's thread pools at $ALEXNET_THREADS when set (to share a machine).

    Left alone otherwise: on this project's 2-core reference machine TensorFlow's defaults
    (one thread per core) spend about 3% of training time in system calls (bench/train_throughput.py).
    """
    import tensorflow as tf

    threads = os.environ.get("ALEXNET_THREADS")
    if not threads:
        return
    try:
        tf.config.threading.set_intra_op_parallelism_threads(int(threads))
        tf.config.threading.set_inter_op_parallelism_threads(min(2, int(threads)))
    except RuntimeError:  # already initialised (e.g. inside a test process)
        pass


def train(config: TrainConfig, run_dir: Path, log=print) -> dict:
    """Train into `run_dir` (fresh or resumed) and return the final status."""
    import keras

    from .data import load_source, make_dataset, steps_for
    from .augment import build as build_augment
    from .devices import configure_gpus, strategy, use_mixed_precision
    from .variants import build_model, get_arch

    run_dir = Path(run_dir)
    signal.signal(signal.SIGTERM, _on_sigterm)
    STOP_SIGNAL["set"] = False
    (run_dir / runs.STOP_REQUEST).unlink(missing_ok=True)
    configure_gpus()
    runs.write_status(run_dir, state="starting", pid=os.getpid(), host=platform.node(),
                      started=runs.read_json(run_dir / runs.STATUS, {}).get("started") or time.time(),
                      message="Loading data", finished=None)
    mixed = use_mixed_precision(config.mixed_precision)
    keras.utils.set_random_seed(config.seed)

    source = load_source(config.data, config.val_split)
    stored = runs.read_json(run_dir / runs.CONFIG, {}) or {}
    if stored.get("class_names") and stored["class_names"] != source.class_names:
        raise ValueError(f"The data's classes {source.class_names} differ from the run's {stored['class_names']}")
    runs.write_json_atomic(run_dir / runs.CONFIG, run_document(config, source.class_names))
    arch = get_arch(config.variant, input_size=config.input_size, **config.switches)
    size, num_classes = arch.input_size, len(source.class_names)
    batch = config.batch_size
    train_split = source.split("train")
    steps = min(steps_for(train_split, batch), config.steps_per_epoch or 10**12)
    budget = config.cache_budget_mb * 2**20
    strat = strategy()
    log(f"{type(strat).__name__} with {strat.num_replicas_in_sync} replica(s); "
        f"mixed precision {'on' if mixed else 'off'}")
    # Training data repeats and the trainer counts steps: the file count is known even when
    # tf.data cannot tell (undecodable files are dropped on the fly).
    train_ds = make_dataset(train_split, num_classes, size, batch, training=True,
                            augment=build_augment(config.augment, size, config.seed), seed=config.seed,
                            cache_budget=budget)
    # Several replicas need equal shares of every batch: full batches only, a multiple of the replicas.
    replicas = strat.num_replicas_in_sync
    n_val = len(source.val) if source.val else 0
    val_batch = batch if replicas == 1 else min(batch, n_val // replicas * replicas)
    val_ds = (make_dataset(source.val, num_classes, size, val_batch, cache_budget=budget, drop_remainder=replicas > 1)
              if val_batch > 0 and n_val else None)
    skipped = sum(source.skipped.values())
    log(f"{source.name}: {len(train_split)} training and {len(source.val) if source.val else 0} validation "
        f"images, {num_classes} classes" + (f"; skipped {skipped} unreadable files" if skipped else ""))

    state = runs.read_json(run_dir / runs.CHECKPOINTS / STATE, {}) or {}
    initial_epoch = int(state.get("completed_epochs", 0))
    with strat.scope():
        if initial_epoch and (run_dir / runs.CHECKPOINTS / LAST).exists():
            model = keras.models.load_model(run_dir / runs.CHECKPOINTS / LAST, safe_mode=True)
            log(f"Resuming after epoch {initial_epoch} of {config.epochs}")
        else:
            initial_epoch = 0
            model = build_model(config.variant, num_classes=num_classes, input_size=config.input_size,
                                **config.switches)
            compile_model(model, config, steps, num_classes)
    runs.truncate_metrics(run_dir, initial_epoch)
    kept = runs.read_metrics(run_dir)
    monitored = "val_accuracy" if val_ds is not None else "accuracy"
    best_so_far = float(kept[monitored].max()) if initial_epoch and monitored in kept and len(kept) else None
    callbacks, monitor = make_callbacks(run_dir, config, steps, batch, val_ds is not None, best_so_far)
    runs.write_status(run_dir, state="running", epoch=initial_epoch, steps_per_epoch=steps, skipped_files=skipped,
                      mixed_precision=mixed, message=f"Training from epoch {initial_epoch + 1}")
    if initial_epoch < config.epochs:
        model.fit(train_ds, validation_data=val_ds, epochs=config.epochs, initial_epoch=initial_epoch,
                  steps_per_epoch=steps, callbacks=callbacks, verbose=2, shuffle=False)

    if monitor.diverged:
        epoch, step = monitor.diverged
        return runs.write_status(
            run_dir, state="diverged", finished=time.time(),
            message=(f"The loss became NaN at epoch {epoch}, step {step}: the learning rate "
                     f"{config.lr:g} is too high for this setup. Start a new run with a lower learning "
                     "rate (e.g. a tenth) or warm-up epochs."))
    completed = int((runs.read_json(run_dir / runs.CHECKPOINTS / STATE, {}) or {}).get("completed_epochs", 0))
    best = run_dir / runs.CHECKPOINTS / BEST
    final = best if best.exists() else run_dir / runs.CHECKPOINTS / LAST
    if final.exists():
        tmp = run_dir / f".{runs.MODEL}.tmp"
        tmp.write_bytes(final.read_bytes())
        os.replace(tmp, run_dir / runs.MODEL)
    if monitor.stop_reason and completed < config.epochs:
        return runs.write_status(run_dir, state="stopped", finished=time.time(), completed_epochs=completed,
                                 message=f"Stopped after epoch {completed} of {config.epochs}; resume to continue.")
    return runs.write_status(run_dir, state="finished", finished=time.time(), completed_epochs=completed,
                             message=f"Finished {completed} epochs")


def run_training(config: TrainConfig, run_dir: Path, log=None) -> int:
    """train() with failures recorded in status.json; returns a process exit code."""
    log = log or (lambda m: print(m, file=sys.stderr, flush=True))
    try:
        status = train(config, run_dir, log=log)
    except KeyboardInterrupt:
        runs.write_status(run_dir, state="stopped", finished=time.time(), message="Interrupted; resume to continue.")
        return 130
    except Exception as exc:
        from .data import DataError

        runs.write_status(run_dir, state="failed", finished=time.time(), message=f"{type(exc).__name__}: {exc}")
        if isinstance(exc, (DataError, ValueError)):
            log(f"error: {exc}")
            return 2
        traceback.print_exc()
        return 1
    log(status.get("message", ""))
    return 0 if status["state"] in ("finished", "stopped") else 1


def estimate_epoch_seconds(config: TrainConfig, num_classes: int, num_images: int, steps: int = 3) -> float:
    """Seconds per epoch measured from a few training steps on random data (after one warm-up)."""
    import keras
    import numpy as np

    from .variants import build_model

    model = build_model(config.variant, num_classes=num_classes, input_size=config.input_size, **config.switches)
    compile_model(model, config, max(1, num_images // config.batch_size), num_classes)
    size = model.input_shape[1]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((config.batch_size, size, size, 3), dtype=np.float32)
    y = keras.utils.to_categorical(rng.integers(0, num_classes, config.batch_size), num_classes)
    model.train_on_batch(x, y)
    start = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(x, y)
    per_step = (time.perf_counter() - start) / steps
    return per_step * math.ceil(num_images / config.batch_size)
