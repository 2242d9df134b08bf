"""Training settings: TrainConfig, each of its fields described once, and the enumerations they use.

Every training setting is declared once: a TrainConfig field whose `Setting` (its metadata) says
what a valid value is, its `train` flag and its widget on the Train page; the network's switches,
kept in `TrainConfig.switches`, are described the same way in SWITCHES. The command line
(settings.flags), the Train page's form (alexnet_ui.train_form) and the run record's schema
(store.layout.CONFIG_SCHEMA) are written from these descriptions: a new setting is a new field
here, plus the code that uses it.

A run can be rebuilt from config.json alone (`TrainConfig.from_dict`). This module imports no
TensorFlow, so the app and the command line can validate settings instantly.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field

from alexnet_core.errors import AlexNetError
from alexnet_core.models.variants import ACTIVATIONS, NORMS, REMOVE_CONV, WIDTHS, Arch, get_arch, list_variants

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
    "paper-no-lighting": "The paper's augmentation without its PCA lighting noise: the same crop and flip only "
                         "(what the paper's lighting claim compares against).",
    "random-resized-crop": "A random crop of 8-100% of the image's area and 3:4-4:3 aspect, resized to the "
                           "input, horizontal flip (the Inception/ResNet ImageNet recipe; decodes only the crop).",
    "cifar": "4-pixel zero padding + random crop, horizontal flip (the standard CIFAR recipe).",
    "cifar-erasing": "The cifar augmentation, then random erasing: about half the images get a grey patch of "
                     "2-25% of their area (Zhong et al. 2017; Cutout). Helps long runs, slows short ones.",
}
BATCH_SIZES = (16, 32, 64, 128, 256, 512)  # what the Train page offers (any size works on the command line)

# What the schedules that react to a plateau watch, and what they fall back to without a
# validation set (recorded in config.json as `monitor`).
SCHEDULE_MONITOR = {"step": ("val_accuracy", "accuracy"), "plateau": ("val_loss", "loss")}


_SERVICE_ADDRESS = re.compile(r"(?:grpc://)?(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252})):([0-9]{1,5})")


def service_address(text) -> str | None:
    """A tf.data service dispatcher's address as TensorFlow takes it ("grpc://HOST:PORT"), from
    "grpc://HOST:PORT" or "HOST:PORT"; None when `text` is not one."""
    match = _SERVICE_ADDRESS.fullmatch(text.strip()) if isinstance(text, str) else None
    if match is None or not 1 <= int(match.group(2)) <= 65535:
        return None
    return f"grpc://{match.group(1)}:{int(match.group(2))}"


class ConfigError(AlexNetError, ValueError):
    """A training setting that cannot be used; the message names the setting and the bad value."""


def default_learning_rate(optimizer: str) -> float:
    """0.01 for SGD (the paper), 1e-3 for Adam and AdamW (the Keras seed)."""
    return 0.01 if optimizer == "sgd" else 1e-3


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)) and math.isfinite(value)


def _anything(value, config) -> bool:
    return True


@dataclass(frozen=True)
class Setting:
    """One setting: what a valid value is, its command-line flag and its widget on the Train page."""

    # --- What a valid value is: "NAME must be RULE, got VALUE" ("{epochs}" in RULE: that field's value).
    rule: str = ""  # default, with `choices`: "one of A, B, C"
    valid: Callable = _anything  # (value, config) -> bool; with `choices`: one of them
    choices: tuple = ()
    # --- `train` (and `summary` and `profile` for a setting of the network)
    flag: str = ""  # default: --the-name
    action: str = ""  # a true/false setting: "on" (--x), "on-off" (--x and --no-x), "off" (--no-x)
    help: str | None = None
    metavar: str | None = None
    network: bool = False  # a setting of the network: its flag goes with the network's (add_network_flags)
    # --- The Train page's form. A setting that is not on it says why in `cli_only`.
    label: str = ""
    key: str = ""  # the widget's session-state key
    widget: str = ""  # a Streamlit widget (selectbox, number_input, slider, select_slider, toggle), or
    #                   the form's own: "recipe", "data", "model"
    place: tuple = ("main", 0)  # (part of the form, column)
    bounds: tuple = ()  # (min, max) of a number_input or slider
    step: float | None = None
    format: str | None = None
    options: tuple | Callable = ()  # what a select offers when not `choices`; a select_slider adds the value
    names: Callable | None = None  # a choice in words (the widget's format_func)
    notes: dict | None = None  # {choice: a caption under the widget}
    tip: str | None = None  # the widget's help
    words: str = ""  # its name in "Changed from the recipe: ..." (default: the label in lower case)
    follows: str = ""  # the setting whose change resets this one to `unset(its value)`
    unset: Callable | None = None  # the value None stands for, from the followed setting's value
    needs: str = ""  # the setting without which this one is off (its widget disabled)
    cli_only: str = ""  # why the Train page does not offer it
    parts: dict | None = None  # a setting made of others (switches): {name: Setting}
    # --- Filled in from the field's type (SETTINGS)
    name: str = ""
    kind: type = object  # str, int, float, bool or dict
    optional: bool = False  # None is allowed (and means the default)

    @property
    def cli_flag(self) -> str:
        return self.flag or "--" + self.name.replace("_", "-")

    @property
    def in_words(self) -> str:
        return self.words or self.label.lower()

    def offered(self) -> list:
        """What a select widget offers."""
        options = self.options() if callable(self.options) else self.options
        return list(options or self.choices)

    def problem(self, value, config) -> str | None:
        """What is wrong with `value`, as "NAME must be RULE, got VALUE"; None if it is valid."""
        ok = value in self.choices if self.choices else self.valid(value, config)
        if ok:
            return None
        rule = self.rule or "one of " + ", ".join(self.choices)
        return f"{self.name} must be {rule.format_map(vars(config))}, got {value!r}"


def setting(default=dataclasses.MISSING, *, factory=dataclasses.MISSING, **description):
    """A TrainConfig field described by a Setting."""
    return field(default=default, default_factory=factory, metadata={"setting": Setting(**description)})


def _variant_default(switch: str) -> Callable:
    return lambda variant: getattr(get_arch(variant), switch)


def removed_conv_name(number: int) -> str:
    """A remove_conv choice in words: "none (all five)", "conv3"."""
    return "none (all five)" if number == 0 else f"conv{number}"


# The network's switches a run can set (TrainConfig.switches), in the order of their flags.
SWITCHES = {
    "norm": Setting(choices=NORMS, help="normalisation layers", network=True,
                    label="Normalisation", key="train_norm", widget="selectbox", place=("more", 2),
                    follows="variant", unset=_variant_default("norm")),
    "activation": Setting(choices=ACTIVATIONS,
                          help="the activation after every convolution and hidden dense layer: relu (the paper) or "
                               "tanh (what the paper's Figure 1 compares it with)", network=True,
                          label="Activation", key="train_activation", widget="selectbox", place=("more", 2),
                          tip="ReLU as in the paper, or tanh, the saturating unit the paper says trains several "
                              "times slower (its Figure 1)",
                          follows="variant", unset=_variant_default("activation")),
    "groups": Setting(action="on-off", help="the paper's two-GPU grouped convolutions on conv2/4/5", network=True,
                      cli_only="the Train page trains each variant with its own grouping"),
    "overlapping_pool": Setting(action="on-off", help="3x3 stride-2 pooling (the paper) instead of 2x2", network=True,
                                cli_only="the Train page trains each variant with its own pooling"),
    "dropout": Setting(help="dropout rate of the dense layers", network=True,
                       label="Dropout", key="train_dropout", widget="slider", bounds=(0.0, 0.9), step=0.05,
                       place=("more", 2), follows="variant", unset=_variant_default("dropout")),
    "width": Setting(help="width multiplier of every layer", network=True,
                     label="Width", key="train_width", widget="select_slider", options=WIDTHS, place=("more", 3),
                     follows="variant", unset=_variant_default("width")),
    "remove_conv": Setting(choices=REMOVE_CONV, rule="0 (none), 2, 3 or 4", flag="--remove-conv", metavar="N",
                           help="remove one middle convolution, 2, 3 or 4 (0: keep all five), as the paper's section "
                                "6.1 does; its max-pooling stays, so every later map keeps its size, and the other "
                                "layers keep their names (conv1, conv2, conv4, conv5, fc6...)", network=True,
                           label="Remove a convolution", key="train_remove_conv", widget="selectbox",
                           place=("more", 3), names=removed_conv_name, words="removed convolution",
                           tip="The paper's depth claim (section 6.1): removing any middle convolution costs about "
                               "2% top-1. The convolution goes with its normalisation and activation; its pooling "
                               "stays, so the later layers see maps of the same size.",
                           follows="variant", unset=_variant_default("remove_conv")),
}


@dataclass
class TrainConfig:
    variant: str = setting(
        "compact", rule="a name", valid=lambda v, c: isinstance(v, str), help="a variant name (see `variants`)",
        label="Variant", key="train_variant", widget="selectbox", options=list_variants,
        names=lambda n: f"{n}: {get_arch(n).title}")
    data: str = setting(
        "sample", rule="a source", valid=lambda v, c: isinstance(v, str) and v.strip() != "",
        help="cifar10, sample, or PATH to an image folder",
        label="Data", key="train_data_kind", widget="data", place=("main", 1))
    switches: dict = setting(
        factory=dict, rule="a mapping", valid=lambda v, c: isinstance(v, dict), parts=SWITCHES)
    input_size: int | None = setting(  # None: the variant's own
        None, rule="a whole number", valid=lambda v, c: v is None or _is_int(v), help="input image side in pixels",
        network=True, cli_only="the Train page trains at the variant's own input size")
    epochs: int = setting(
        10, rule="1..10000", valid=lambda v, c: _is_int(v) and 1 <= v <= 10_000,
        label="Epochs", key="train_epochs", widget="number_input", bounds=(1, 10_000), place=("main", 2))
    batch_size: int = setting(
        128, rule="1..8192", valid=lambda v, c: _is_int(v) and 1 <= v <= 8192,
        label="Batch size", key="train_batch", widget="select_slider", options=BATCH_SIZES, place=("main", 2))
    optimizer: str = setting(
        "sgd", choices=OPTIMIZERS,
        label="Optimizer", key="train_optimizer", widget="selectbox",
        tip="sgd: momentum 0.9 and weight decay, as the paper; adam: as the Keras seed")
    learning_rate: float | None = setting(  # None: default_learning_rate(optimizer)
        None, rule="in (0, 10]", valid=lambda v, c: v is None or (_is_number(v) and 0 < v <= 10),
        label="Learning rate", key="train_lr", widget="number_input", bounds=(1e-6, 10.0), format="%g",
        follows="optimizer", unset=default_learning_rate)
    weight_decay: float = setting(  # the paper's; decoupled (Keras' weight_decay)
        5e-4, rule="in [0, 1)", valid=lambda v, c: _is_number(v) and 0 <= v < 1,
        label="Weight decay", key="train_decay", widget="number_input", bounds=(0.0, 0.1), format="%g",
        place=("more", 1))
    schedule: str = setting(
        "cosine", choices=SCHEDULES,
        label="Schedule", key="train_schedule", widget="selectbox",
        tip="step: divide by 10 when validation stalls (paper); plateau: halve when the validation loss stalls "
            "(Keras seed); cosine: smooth decay to zero")
    warmup_epochs: float = setting(
        0.0, rule="in [0, epochs) ({epochs})", valid=lambda v, c: _is_number(v) and (0 <= v < c.epochs or v == 0),
        label="Warm-up epochs", key="train_warmup", widget="number_input", bounds=(0.0, 100.0), step=0.5,
        place=("more", 0))
    label_smoothing: float = setting(
        0.0, rule="in [0, 1)", valid=lambda v, c: _is_number(v) and 0 <= v < 1,
        label="Label smoothing", key="train_smoothing", widget="number_input", bounds=(0.0, 0.5), step=0.05,
        place=("more", 0))
    augment: str = setting(
        "none", choices=tuple(AUGMENTATIONS),
        label="Augmentation", key="train_augment", widget="selectbox", notes=AUGMENTATIONS, place=("main", 2))
    val_split: float = setting(
        0.1, rule="in [0, 1)", valid=lambda v, c: _is_number(v) and 0 <= v < 1,
        help="fraction of each class held out (last files by name)",
        label="Validation fraction", key="train_val_split", widget="slider", bounds=(0.0, 0.5), step=0.05,
        place=("main", 1), tip="Used when the folder has no val/ subfolder: the last files of each class")
    seed: int = setting(
        0, rule=f"0..{2**32 - 1}", valid=lambda v, c: _is_int(v) and 0 <= v < 2**32,
        label="Seed", key="train_seed", widget="number_input", bounds=(0, 2**31 - 1), place=("more", 1))
    mixed_precision: str = setting(
        "auto", choices=MIXED_PRECISION, rule=", ".join(MIXED_PRECISION),
        label="Mixed precision", key="train_mixed", widget="selectbox", place=("more", 3),
        tip="auto: float16 compute on a GPU, bfloat16 on a CPU with AVX512-BF16 or AMX, float32 on other CPUs "
            "(they emulate bfloat16, many times slower); bf16: bfloat16 always")
    jit: bool = setting(
        False, rule="true or false", valid=lambda v, c: isinstance(v, bool),
        action="on", help="compile the training step with XLA",
        cli_only="XLA helps on GPUs and slows small CPUs: a choice for the command line")
    steps_per_epoch: int | None = setting(  # None: every image once an epoch
        None, rule=">= 1", valid=lambda v, c: v is None or (_is_int(v) and v >= 1),
        help="cap the steps of each epoch", cli_only="a cap for quick experiments from the command line")
    train_per_class: int | None = setting(  # None: every training image
        None, rule=">= 1", valid=lambda v, c: v is None or (_is_int(v) and v >= 1), metavar="N",
        help="train on the first N training images of each class (by file name) only: a smaller training set "
             "for quick experiments; the validation split stays whole",
        cli_only="a smaller training set for quick experiments (the paper's claims) from the command line")
    log_every: int = setting(
        10, rule=">= 1", valid=lambda v, c: _is_int(v) and v >= 1,
        help="steps between rows of steps.csv", cli_only="the Train page's curves read the default")
    cache_budget_mb: int = setting(
        2048, rule=">= 0", valid=lambda v, c: _is_int(v) and v >= 0,
        help="decoded images kept in memory up to this many MiB, else streamed from disk (default 2048)",
        cli_only="memory tuning for large data sets, from the command line")
    recipe: str | None = setting(  # the recipe these settings started from (settings.recipes), if any
        None, rule="a name", valid=lambda v, c: v is None or isinstance(v, str),
        help="start from a named recipe (see `recipes`); other flags override it",
        label="Recipe", key="train_recipe", widget="recipe", place=("top", 0),
        tip="A recipe sets every setting below at once; change any of them afterwards.")
    snapshots: bool = setting(  # keep each epoch's validation predictions, conv1 and probe top-5 (snapshots.py)
        True, rule="true or false", valid=lambda v, c: isinstance(v, bool),
        flag="--no-snapshots", action="off",
        help="keep no per-epoch snapshots (validation predictions, conv1, probe top-5)",
        cli_only="the Train page always keeps them: the Runs page's epoch time-travel shows them")
    init_from: str | None = setting(  # fine-tune: a trained model whose conv layers start the run
        None, rule="a model (a run folder, 'demo' or an installed ImageNet model such as imagenet-torchvision)",
        valid=lambda v, c: v is None or (isinstance(v, str) and v.strip() != ""),
        metavar="MODEL", help="fine-tune: start from this model's convolutional layers (a run folder or 'demo'), "
                              "or from an installed ImageNet model's features through fc7 (imagenet-torchvision)",
        label="Start from", key="train_init_from", widget="model", place=("start", 0),
        tip="Fine-tuning: a trained model's convolutional layers start the run and new dense layers learn your "
            "classes (from an installed ImageNet model, its fc6 and fc7 too, and a new last layer). The run keeps "
            "that model's network: its variant, width and input size replace the ones set here.")
    data_service: str | None = setting(  # decode and augment the training images on a tf.data service
        None, rule="a dispatcher's address, grpc://HOST:PORT or HOST:PORT",
        valid=lambda v, c: v is None or service_address(v) is not None, metavar="ADDRESS",
        help="decode and augment the training images on a tf.data service's workers: its dispatcher's "
             "address (python -m alexnet_core data-service; docs/DISTRIBUTED.md)",
        cli_only="input on other machines is set up from the command line (docs/DISTRIBUTED.md)")
    freeze_features: bool = setting(  # with init_from: keep those layers as they are, train only the new head
        False, rule="true or false", valid=lambda v, c: isinstance(v, bool),
        action="on-off", help="with --init-from: keep those layers as they are and train only the new head",
        label="Keep those layers as they are (train only the new head)", key="train_freeze", widget="toggle",
        place=("start", 1), words="frozen layers", needs="init_from")

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        """Raise ConfigError naming the first bad setting; never touches the disk or TensorFlow."""
        for f in dataclasses.fields(self):
            problem = SETTINGS[f.name].problem(getattr(self, f.name), self)
            if problem:
                raise ConfigError(problem)
        if self.freeze_features and self.init_from is None:
            raise ConfigError("freeze_features needs init_from: there are no trained layers to keep")
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


def _described(described: Setting, name: str, hint) -> Setting:
    """`described` with its name and kind from its field's type ("int | None": int, optional)."""
    optional = isinstance(hint, types.UnionType) and type(None) in typing.get_args(hint)
    kind = next(k for k in typing.get_args(hint) if k is not type(None)) if optional else hint
    return dataclasses.replace(described, name=name, kind=kind, optional=optional)


def _all_settings() -> dict[str, Setting]:
    fields = typing.get_type_hints(TrainConfig)
    network = typing.get_type_hints(Arch)
    settings = {}
    for f in dataclasses.fields(TrainConfig):
        described = f.metadata.get("setting")
        if described is None:
            raise TypeError(f"TrainConfig.{f.name} has no Setting: declare it with setting(...)")
        if described.parts:
            parts = {name: _described(part, name, network[name]) for name, part in described.parts.items()}
            described = dataclasses.replace(described, parts=parts)
        settings[f.name] = _described(described, f.name, fields[f.name])
    return settings


# Every TrainConfig field's Setting, in field order, with its name and kind filled in.
SETTINGS: dict[str, Setting] = _all_settings()


def each_setting() -> dict[str, Setting]:
    """{path: Setting} of every setting a user gives, in field order: the fields, with `switches`
    as its parts ("switches.width")."""
    return {path: described for name, s in SETTINGS.items()
            for path, described in ({f"{name}.{p}": d for p, d in s.parts.items()} if s.parts else {name: s}).items()}


def record_kinds() -> dict[str, type]:
    """{field: what config.json holds for it: str, int, float, bool or dict} for every TrainConfig
    field (store.layout.CONFIG_SCHEMA checks a run's record against it)."""
    return {name: s.kind for name, s in SETTINGS.items()}
