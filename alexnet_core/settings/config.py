"""Training settings: the TrainConfig dataclass and every enumeration the CLI, pages and core share.

A run can be rebuilt from config.json alone (`TrainConfig.from_dict`). This module imports no
TensorFlow, so the app and the command line can validate settings instantly.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from alexnet_core.errors import AlexNetError

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "step", "plateau", "cosine")
# auto: float16 on a GPU, bfloat16 on a CPU with AVX512-BF16 or AMX, float32 on other CPUs (which
# only emulate bfloat16, many times slower); on: float16 with loss scaling; bf16: bfloat16 (no loss
# scaling needed; fast on CPUs with AVX512-BF16/AMX and on recent GPUs); off: float32.
MIXED_PRECISION = ("auto", "on", "bf16", "off")
AUGMENTATIONS = {
    "none": "No augmentation.",
    "keras-seed": "Rotation up to 2 degrees, horizontal flip, zoom 10% (the Keras seed's ImageDataGenerator).",
    "paper": "Shorter side resized to 256/224 of the input (256 for 224), a random square crop of the input "
             "size, horizontal flip, PCA lighting noise (std 0.1), as in the paper.",
    "random-resized-crop": "A random crop of 8-100% of the image's area and 3:4-4:3 aspect, resized to the "
                           "input, horizontal flip (the Inception/ResNet ImageNet recipe; decodes only the crop).",
    "cifar": "4-pixel zero padding + random crop, horizontal flip (the standard CIFAR recipe).",
    "cifar-erasing": "The cifar augmentation, then random erasing: about half the images get a grey patch of "
                     "2-25% of their area (Zhong et al. 2017; Cutout). Helps long runs, slows short ones.",
}
DEFAULT_AUGMENT = "cifar"
DEFAULT_SCHEDULE = "cosine"

# What the schedules that react to a plateau watch, and what they fall back to without a
# validation set (recorded in config.json as `monitor`).
SCHEDULE_MONITOR = {"step": ("val_accuracy", "accuracy"), "plateau": ("val_loss", "loss")}


class ConfigError(AlexNetError, ValueError):
    """A training setting that cannot be used; the message names the setting and the bad value."""


def default_learning_rate(optimizer: str) -> float:
    """0.01 for SGD (the paper), 1e-3 for Adam and AdamW (the Keras seed)."""
    return 0.01 if optimizer == "sgd" else 1e-3


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)) and math.isfinite(value)


@dataclass
class TrainConfig:
    variant: str = "compact"
    data: str = "sample"
    switches: dict = field(default_factory=dict)  # norm, groups, overlapping_pool, dropout, width
    input_size: int | None = None  # None: the variant's own
    epochs: int = 10
    batch_size: int = 128
    optimizer: str = "sgd"  # sgd: momentum 0.9 + weight decay, as the paper; adam: as the Keras seed
    learning_rate: float | None = None  # None: default_learning_rate(optimizer)
    weight_decay: float = 5e-4  # the paper's; decoupled (Keras' weight_decay)
    schedule: str = DEFAULT_SCHEDULE  # step: /10 when validation stalls (paper); plateau: halve (Keras seed)
    warmup_epochs: float = 0.0
    label_smoothing: float = 0.0
    augment: str = "none"
    val_split: float = 0.1
    seed: int = 0
    mixed_precision: str = "auto"  # auto: on a GPU only
    jit: bool = False  # compile the training step with XLA (helps on GPUs; slower on small CPUs)
    steps_per_epoch: int | None = None  # cap per epoch (quick experiments)
    log_every: int = 10  # steps between rows of steps.csv
    cache_budget_mb: int = 2048  # decoded images held in memory up to this size, else stream
    recipe: str | None = None  # the recipe these settings started from (alexnet_core.settings.recipes), if any
    snapshots: bool = True  # keep each epoch's validation predictions, conv1 and probe top-5 (snapshots.py)
    init_from: str | None = None  # fine-tune: a trained model (run folder or 'demo') whose conv layers start the run
    freeze_features: bool = False  # with init_from: keep those layers as they are, train only the new head

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        """Raise ConfigError naming the first bad setting; never touches the disk or TensorFlow."""
        from alexnet_core.models.variants import get_arch

        checks = [
            (isinstance(self.variant, str), f"variant must be a name, got {self.variant!r}"),
            (isinstance(self.data, str) and self.data.strip() != "", f"data must be a source, got {self.data!r}"),
            (isinstance(self.switches, dict), f"switches must be a mapping, got {self.switches!r}"),
            (self.input_size is None or _is_int(self.input_size), f"input_size must be a whole number, got {self.input_size!r}"),
            (self.optimizer in OPTIMIZERS, f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}"),
            (self.schedule in SCHEDULES, f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}"),
            (self.augment in AUGMENTATIONS,
             f"augment must be one of {', '.join(AUGMENTATIONS)}, got {self.augment!r}"),
            (_is_int(self.epochs) and 1 <= self.epochs <= 10_000, f"epochs must be 1..10000, got {self.epochs!r}"),
            (_is_int(self.batch_size) and 1 <= self.batch_size <= 8192,
             f"batch_size must be 1..8192, got {self.batch_size!r}"),
            (self.learning_rate is None or (_is_number(self.learning_rate) and 0 < self.learning_rate <= 10),
             f"learning_rate must be in (0, 10], got {self.learning_rate!r}"),
            (_is_number(self.weight_decay) and 0 <= self.weight_decay < 1,
             f"weight_decay must be in [0, 1), got {self.weight_decay!r}"),
            (_is_number(self.label_smoothing) and 0 <= self.label_smoothing < 1,
             f"label_smoothing must be in [0, 1), got {self.label_smoothing!r}"),
            (_is_number(self.val_split) and 0 <= self.val_split < 1, f"val_split must be in [0, 1), got {self.val_split!r}"),
            (_is_number(self.warmup_epochs) and (0 <= self.warmup_epochs < self.epochs or self.warmup_epochs == 0),
             f"warmup_epochs must be in [0, epochs) ({self.epochs}), got {self.warmup_epochs!r}"),
            (_is_int(self.seed) and 0 <= self.seed < 2**32, f"seed must be 0..{2**32 - 1}, got {self.seed!r}"),
            (self.mixed_precision in MIXED_PRECISION,
             f"mixed_precision must be {', '.join(MIXED_PRECISION)}, got {self.mixed_precision!r}"),
            (isinstance(self.jit, bool), f"jit must be true or false, got {self.jit!r}"),
            (self.steps_per_epoch is None or (_is_int(self.steps_per_epoch) and self.steps_per_epoch >= 1),
             f"steps_per_epoch must be >= 1, got {self.steps_per_epoch!r}"),
            (_is_int(self.log_every) and self.log_every >= 1, f"log_every must be >= 1, got {self.log_every!r}"),
            (_is_int(self.cache_budget_mb) and self.cache_budget_mb >= 0,
             f"cache_budget_mb must be >= 0, got {self.cache_budget_mb!r}"),
            (self.recipe is None or isinstance(self.recipe, str), f"recipe must be a name, got {self.recipe!r}"),
            (isinstance(self.snapshots, bool), f"snapshots must be true or false, got {self.snapshots!r}"),
            (self.init_from is None or (isinstance(self.init_from, str) and self.init_from.strip() != ""),
             f"init_from must be a model (a run folder or 'demo'), got {self.init_from!r}"),
            (isinstance(self.freeze_features, bool), f"freeze_features must be true or false, got {self.freeze_features!r}"),
            (not self.freeze_features or self.init_from is not None,
             "freeze_features needs init_from: there are no trained layers to keep"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        try:
            get_arch(self.variant, input_size=self.input_size, **self.switches)
        except (TypeError, ValueError) as exc:
            raise ConfigError(str(exc)) from exc

    @property
    def lr(self) -> float:
        return self.learning_rate if self.learning_rate is not None else default_learning_rate(self.optimizer)

    def monitor(self, has_validation: bool) -> str | None:
        """The metric a plateau schedule watches: validation if there is any, else training."""
        if self.schedule not in SCHEDULE_MONITOR:
            return None
        with_val, without = SCHEDULE_MONITOR[self.schedule]
        return with_val if has_validation else without

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        if not isinstance(data, dict):
            raise ConfigError(f"settings must be a JSON object, got {type(data).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})
