"""Named presets of every training setting: `train --recipe NAME`, the Train page's first choice.

A recipe is a complete TrainConfig minus what only the user knows (where their data is, when the
recipe is not made for CIFAR-10). Explicit settings always win over the recipe's. Each recipe
declares the data it was made for (`data`, `images`) and what it gives on other data
(`elsewhere`, measured where it could be), which the Train page says before Start (`expect`).
No TensorFlow.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from alexnet_core.settings.config import ConfigError, TrainConfig


@dataclass(frozen=True)
class Recipe:
    name: str
    title: str
    description: str
    made_for: str  # the data it was made for, in words
    settings: dict = field(default_factory=dict)  # TrainConfig fields
    result: str = ""  # what it reached, where it was measured
    reached: str = ""  # the accuracy in a few words, for "... in about N minutes on this machine"
    data: str = ""  # the source it was made for ("cifar10", "sample"); "" for the user's own folders
    images: int = 0  # the training images it was made for (0: any number)
    elsewhere: str = ""  # what it gives on other data, in words (measured where it could be)

    def config(self, **overrides) -> TrainConfig:
        """The recipe's TrainConfig with `overrides` (None values are ignored) applied on top."""
        settings = {**self.settings, **{k: v for k, v in overrides.items() if v is not None}}
        switches = {**self.settings.get("switches", {}), **(overrides.get("switches") or {})}
        settings["switches"] = switches
        settings["recipe"] = self.name
        if not settings.get("data"):
            raise ConfigError(f"recipe '{self.name}' needs data: it is made for {self.made_for}. "
                              "Give --data PATH (or pick the data on the Train page).")
        return TrainConfig(**settings)

    def summary(self) -> str:
        """Its settings in one line, written from `settings` (so the words cannot drift from them)."""
        s = self.settings
        decay = f", weight decay {s['weight_decay']:g}" if s.get("weight_decay") else ""
        warmup = f" after {s['warmup_epochs']:g} warm-up epoch(s)" if s.get("warmup_epochs") else ""
        smoothing = f", label smoothing {s['label_smoothing']:g}" if s.get("label_smoothing") else ""
        precision = f", {s['mixed_precision']} compute" if s.get("mixed_precision", "auto") != "auto" else ""
        start = (f", starting from {s['init_from']}'s convolutional layers"
                 + (" (kept as they are)" if s.get("freeze_features") else "")) if s.get("init_from") else ""
        width = (s.get("switches") or {}).get("width")
        network = f"{s['variant']} at width {width:g}" if width else s["variant"]
        return (f"{network}, {s['epochs']} epochs, batch {s['batch_size']}, {s['optimizer']} at "
                f"{s['learning_rate']:g}{decay}, {s['schedule']} schedule{warmup}{smoothing}, "
                f"{s['augment']} augmentation{precision}{start}")

    def expect(self, data: str, images: int) -> str | None:
        """What to expect from this recipe on `data` with `images` training images, when that is not
        the data it was made for (None when it is, or when it says nothing of other data): said on
        the Train page before Start."""
        if not self.elsewhere:
            return None
        if self.data:  # made for a named source: that one, or a folder about as large
            if data == self.data or (data not in SOURCES_OF_RECIPES and self.images and images >= self.images // 2):
                return None
        elif data not in SOURCES_OF_RECIPES:  # made for the user's own folders
            return None
        size = f", {self.images:,} training images" if self.images else ""
        return f"The {self.name} recipe is made for {self.made_for}{size}; this data has {images:,}. {self.elsewhere}"

    def as_dict(self) -> dict:
        return {**dataclasses.asdict(self), "summary": self.summary()}


RECIPES: dict[str, Recipe] = {}
CIFAR10 = "CIFAR-10 (32x32 images, 10 classes)"
CIFAR10_IMAGES = 45_000  # CIFAR-10's training images less the 10% validation split
SOURCES_OF_RECIPES = ("cifar10", "sample")  # the sources a recipe may be made for by name
# What the sample recipe reached, measured from the Start button to the saved model on a 2-core CPU
# (no AVX512-BF16) busy with other work (load average 6-7): 86.5% after its first epoch.
SAMPLE_REACHED = "88% validation accuracy on the sample"
SAMPLE_RESULT = ("87.9% validation accuracy on the sample's 1,000 validation images after 3 epochs, 2m 18s from "
                 "Start to saved model on a busy 2-core CPU.")
# What the quick recipe reached on the bundled sample from scratch (measured: see its `elsewhere`).
FROM_SCRATCH_ON_SAMPLE = ("From scratch, 2,000 images are too few: the quick recipe ended at 16.1% and 22.4% on the "
                          "sample's validation images in two runs.")
# What the CIFAR-10 recipes give on fewer images (the sample, a small folder), said before Start.
ON_FEWER_IMAGES = (f"On fewer images expect much less. {FROM_SCRATCH_ON_SAMPLE} For a first run on the sample, "
                   "pick the recipe First run on the sample: it starts from the bundled model's features.")


def _add(recipe: Recipe) -> None:
    TrainConfig(**{**recipe.settings, "data": recipe.settings.get("data") or "sample"})  # valid as written
    RECIPES[recipe.name] = recipe


_add(Recipe(
    name="demo",
    title="Bundled model",
    description="The bundled demo model's recipe: compact-hires at width 0.75, the paper's SGD (momentum 0.9, "
                "weight decay) at batch 256 with a cosine schedule after two warm-up epochs, label smoothing, the "
                "standard CIFAR augmentation (padding + random crop, flip) then random erasing, computed in "
                "bfloat16 as the bundled model was (fast on CPUs with AVX512-BF16 or AMX and on recent GPUs; "
                "other CPUs emulate it many times slower: set mixed precision to auto there).",
    made_for=CIFAR10,
    settings={"variant": "compact-hires", "data": "cifar10", "switches": {"width": 0.75}, "epochs": 120,
              "batch_size": 256, "optimizer": "sgd", "learning_rate": 0.1, "weight_decay": 5e-4,
              "schedule": "cosine", "warmup_epochs": 2.0, "label_smoothing": 0.1, "augment": "cifar-erasing",
              "val_split": 0.1, "seed": 0, "mixed_precision": "bf16"},
    result="89.3% validation accuracy (5,000 held-out CIFAR-10 training images) after 120 epochs, about 2.6 "
           "hours of epochs on an idle 2-core CPU with AVX512-BF16.",
    reached="89.3% validation accuracy on CIFAR-10",
    data="cifar10", images=CIFAR10_IMAGES,
    elsewhere=ON_FEWER_IMAGES,
))
_add(Recipe(
    name="quick",
    title="Quick",
    description="80% on CIFAR-10 in under 8 minutes on a 2-core CPU: compact-hires at width 0.5 (conv1 and conv2 at "
                "the full 32x32), AdamW with a short cosine schedule and a large batch, label smoothing, computed "
                "in bfloat16 on CPUs with AVX512-BF16 or AMX, float32 on other CPUs and float16 on a GPU (mixed "
                "precision auto).",
    made_for=CIFAR10,
    settings={"variant": "compact-hires", "data": "cifar10", "epochs": 8, "batch_size": 256, "optimizer": "adamw",
              "learning_rate": 3e-3, "weight_decay": 0.05, "schedule": "cosine", "warmup_epochs": 0.5,
              "label_smoothing": 0.1, "augment": "cifar", "val_split": 0.1, "seed": 0, "mixed_precision": "auto"},
    result="81.7% validation accuracy (5,000 held-out CIFAR-10 images) in 6 minutes from start to saved "
           "model on a 2-core CPU with AVX512-BF16.",
    reached="81.7% validation accuracy on CIFAR-10",
    data="cifar10", images=CIFAR10_IMAGES,
    elsewhere=ON_FEWER_IMAGES,
))
_add(Recipe(
    name="sample",
    title="First run on the sample",
    description="A first run that works on the bundled sample's 2,000 training images, far too few to learn "
                "CIFAR-10 from scratch: it starts from the bundled model's convolutional layers (what it learned "
                "to see on CIFAR-10's 45,000 training images, these 2,000 among them), kept as they are, and "
                "trains new dense layers for the 10 classes with AdamW and a short cosine schedule. The network is "
                "the bundled model's.",
    made_for="the bundled sample (CIFAR-10's 10 classes; its validation images are files the bundled model never "
             "trained on)",
    settings={"variant": "compact-hires", "switches": {"width": 0.75}, "data": "sample", "epochs": 3,
              "batch_size": 64, "optimizer": "adamw", "learning_rate": 1e-3, "weight_decay": 0.01,
              "schedule": "cosine", "label_smoothing": 0.1, "augment": "cifar", "val_split": 0.1, "seed": 0,
              "init_from": "demo", "freeze_features": True},
    result=f"{SAMPLE_RESULT} {FROM_SCRATCH_ON_SAMPLE}",
    reached=SAMPLE_REACHED,
    data="sample", images=2_000,
    elsewhere="On other data it fine-tunes the bundled model's features for that data's classes, as the Fine-tune "
              "recipe does: how well depends on how much the images look like CIFAR-10's.",
))
_add(Recipe(
    name="fine-tune",
    title="Fine-tune the bundled model",
    description="For your own classes, even a few images each: starts from the bundled model's convolutional "
                "layers (what it learned to see on CIFAR-10), kept as they are, and trains only a new head for "
                "your classes with AdamW and a cosine schedule. The network keeps the bundled model's shape and "
                "input size.",
    made_for="your own image folders, small ones included (PATH/<class>/<image>)",
    settings={"variant": "compact-hires", "switches": {"width": 0.75}, "data": "", "epochs": 10,
              "batch_size": 32, "optimizer": "adamw",
              "learning_rate": 1e-3, "weight_decay": 0.01, "schedule": "cosine", "label_smoothing": 0.1,
              "augment": "cifar", "val_split": 0.2, "seed": 0, "init_from": "demo", "freeze_features": True},
    result="Depends on your images: two classes with 10 photos each usually train in under a minute on a CPU.",
))
_add(Recipe(
    name="paper",
    title="The 2012 paper",
    description="Krizhevsky et al.'s ImageNet recipe: the grouped network with LRN, SGD with momentum 0.9, the "
                "learning rate divided by 10 when the validation accuracy stalls (the step schedule), random "
                "crops of a larger resize with flips and PCA lighting.",
    made_for="ImageNet-style folders of photos (PATH/train/<class>/<image>)",
    settings={"variant": "paper", "data": "", "epochs": 90, "batch_size": 128, "optimizer": "sgd",
              "learning_rate": 0.01, "weight_decay": 5e-4, "schedule": "step", "augment": "paper",
              "val_split": 0.1, "seed": 0},
    result="The paper reports 40.7% top-1 error (single model, ILSVRC-2012 validation) after about 90 epochs "
           "on two GTX 580 GPUs; hours per epoch on a CPU.",
    images=1_281_167,
    elsewhere="Its 227-px network enlarges small images, takes hours per epoch on a CPU, and from scratch learns "
              "little from a few thousand images.",
))
_add(Recipe(
    name="keras-seed",
    title="Keras seed",
    description="The Keras CIFAR-10 AlexNet's setup: the cifar-bn network, Adam without weight decay, the "
                "learning rate halved when the validation loss stalls (the plateau schedule), rotation/flip/zoom "
                "augmentation.",
    made_for=CIFAR10,
    settings={"variant": "cifar-bn", "data": "cifar10", "epochs": 50, "batch_size": 64, "optimizer": "adam",
              "learning_rate": 1e-3, "weight_decay": 0.0, "schedule": "plateau", "augment": "keras-seed",
              "val_split": 0.1, "seed": 0},
    result="The Keras seed reported 64.8% on CIFAR-10's test split.",
    data="cifar10", images=CIFAR10_IMAGES,
    elsewhere=f"On fewer images expect much less. {FROM_SCRATCH_ON_SAMPLE}",
))


def get_recipe(name: str) -> Recipe:
    try:
        return RECIPES[name]
    except KeyError:
        raise ConfigError(f"Unknown recipe {name!r}. Available: {', '.join(RECIPES)}") from None


def list_recipes() -> list[dict]:
    """The `recipes --json` document."""
    return [recipe.as_dict() for recipe in RECIPES.values()]
