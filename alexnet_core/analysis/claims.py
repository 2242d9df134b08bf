"""The 2012 paper's claims as experiments with measured verdicts.

Each claim (CLAIMS) is a set of arms: runs that differ from one base setting (CPU_BASE on this
machine, GPU_BASE on a user's ImageNet-layout folder) in the one switch the claim is about,
trained with the same seeds. A run belongs to an arm when its config.json equals the arm's
settings on every TrainConfig field but the ones that do not change what is learned
(MATCH_IGNORES), whatever queued it, so claims share runs (claims 2-7 share the base arm).

A verdict measures our figure the way the paper states its own (epochs to 25% training error for
ReLU, validation error or the train-validation gap for the others, mean and sample standard
deviation over seeds) and compares the arms with one rule: the effect is the difference of the
arms' means in the direction the paper claims, its standard error sqrt(sa²/na + sb²/nb); under
two standard errors it is "within noise", else "agrees" when its sign is the paper's and
"disagrees" when not. A weak effect is never rounded into agreement: an agreement much smaller
than the paper's effect says so.

The user's runs count first; the bundled runs (locations.CLAIMS_DIR/runs) only while the user
has no complete set of a claim. No TensorFlow: verdicts are read from the runs' files.
"""

from __future__ import annotations

# pandas is imported inside the functions that build frames, so importing this module stays light.
import copy
import dataclasses
import math
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from alexnet_core import locations
from alexnet_core.errors import AlexNetError
from alexnet_core.models.variants import get_arch
from alexnet_core.settings.config import SETTINGS, ConfigError, TrainConfig
from alexnet_core.store import layout, liveness

SEEDS = (0, 1, 2)
MIN_SEEDS = 2  # finished seeds an arm needs before its mean and standard deviation mean anything
SIZES = ("cpu", "gpu")
VERDICTS = ("agrees", "disagrees", "within noise", "not run yet", "too few runs")

# The base of every arm on this machine: a network and data small enough for a 2-core CPU
# (docs/CLAIMS.md). Every arm is this plus its changes; tune it here and only here.
CPU_BASE = {
    "variant": "compact",
    "switches": {"width": 0.25, "norm": "batchnorm", "groups": False, "overlapping_pool": True, "dropout": 0.5,
                 "activation": "relu", "remove_conv": 0},
    "epochs": 15, "batch_size": 128, "optimizer": "sgd", "learning_rate": 0.02, "schedule": "cosine",
    "augment": "paper", "train_per_class": 500, "val_split": 0.05, "mixed_precision": "off", "data": "cifar10",
}
CIFAR10_TRAIN_IMAGES = 50_000  # what CPU_BASE's val_split is a fraction of

# The base on a GPU: the paper's network at its own input size, on the user's ImageNet-layout
# folder (`data`), scaled by the user (`epochs`, `train_per_class`).
GPU_BASE = {
    "variant": "paper",
    "switches": {"width": 1.0, "norm": "lrn", "groups": True, "overlapping_pool": True, "dropout": 0.5,
                 "activation": "relu", "remove_conv": 0},
    "epochs": 30, "batch_size": 128, "optimizer": "sgd", "learning_rate": 0.01, "schedule": "step",
    "augment": "paper", "train_per_class": None, "val_split": 0.1, "mixed_precision": "auto",
}

# Settings that do not change what a run learns: a run that differs only in these still belongs
# to an arm. `steps_per_epoch`: config.json records the count a run actually took, not the cap.
MATCH_IGNORES = ("seed", "data", "recipe", "log_every", "cache_budget_mb", "snapshots", "steps_per_epoch")

# The switches' published defaults, for a network whose variants do not list a switch (yet).
_SWITCH_DEFAULTS = {"activation": "relu", "remove_conv": 0}
HALF_WIDTH = "half"  # an arm's width: half the base's (the groups claim's one-GPU net)
# A run that covers its seed: done, or on its way (a run taken out of the queue, `created`, is not).
COUNTED_STATES = ("finished", "queued", "starting", "running")
PENDING_STATES = ("queued", "starting", "running")


class ClaimError(AlexNetError, ValueError):
    """An unknown claim, or an experiment that cannot be set up as asked; the message says why."""


@dataclass(frozen=True)
class Arm:
    """One side of an experiment: the base settings plus `changes` (TrainConfig fields; its
    `switches` are merged into the base's)."""

    name: str
    label: str  # in words, as a sentence reads it: "with LRN"
    changes: dict = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class Measure:
    """One comparison of two arms: what is measured per run, which arm the paper says does better
    (lower, or higher when `higher`), and the paper's figure for it."""

    title: str  # what is measured, in words
    metric: str  # a key of METRICS
    paper_arm: str
    other_arm: str
    paper: str  # the paper's figure, in words
    paper_effect: float | None = None  # the paper's effect in our unit (points, or a ratio for "ratio" metrics)
    higher: bool = False  # the paper's arm has the larger value (dropout's slower convergence)
    quote: str = ""  # the words of the quote this measure tests (a second part's)


@dataclass(frozen=True)
class Claim:
    name: str
    number: int
    title: str
    section: str
    quote: str
    paper: str  # the paper's figure, in words
    measure: str  # what we measure, in words
    threshold: float | None  # the error a curve is read against (relu: 0.25), else None
    arms: tuple[Arm, ...]
    differs: str  # what differs from the paper's setting, in words (the CPU size)
    measures: tuple[Measure, ...] = ()  # the primary comparison, then the second parts

    def arm(self, name: str) -> Arm:
        return next(a for a in self.arms if a.name == name)


# --- Per-run measures -----------------------------------------------------------------------
# Each reads one run's metrics (a DataFrame, `epoch` from 1) and gives (value, censored).
# Points are percentages (0-100); "epochs" counts epochs of training.


def epochs_to_error(metrics, threshold: float, classes: int = 10) -> tuple[float | None, bool]:
    """Epochs until the training error first reaches `threshold`, linearly interpolated between
    epochs (epoch k's row is the error after k epochs; before the first, chance: 1 - 1/classes).
    A run that never reaches it is censored at its epochs: (epochs, True), a lower bound."""
    if "accuracy" not in metrics or metrics.empty:
        return None, False
    errors = [1.0 - float(a) for a in metrics["accuracy"]]
    before, previous = 0.0, 1.0 - 1.0 / max(2, classes)
    for done, error in enumerate(errors, start=1):
        if error <= threshold:
            if previous <= threshold:
                return before, False
            return before + (previous - threshold) / (previous - error), False
        before, previous = float(done), error
    return float(len(errors)), True


def _last(metrics, column: str) -> float | None:
    if column not in metrics or metrics.empty:
        return None
    value = metrics[column].iloc[-1]
    return None if value != value else float(value)


def validation_error(metrics) -> tuple[float | None, bool]:
    """1 - the final epoch's validation accuracy, in points."""
    accuracy = _last(metrics, "val_accuracy")
    return (None if accuracy is None else 100.0 * (1.0 - accuracy)), False


def train_val_gap(metrics) -> tuple[float | None, bool]:
    """The final epoch's training accuracy minus its validation accuracy, in points: how much
    the network overfits."""
    train, val = _last(metrics, "accuracy"), _last(metrics, "val_accuracy")
    return (None if train is None or val is None else 100.0 * (train - val)), False


def epochs_to_converge(metrics, within: float = 0.01) -> tuple[float | None, bool]:
    """The first epoch whose validation accuracy is within `within` (1 point) of the run's best."""
    if "val_accuracy" not in metrics or metrics["val_accuracy"].isna().all():
        return None, False
    values = metrics["val_accuracy"].tolist()
    best = max(v for v in values if v == v)
    return float(next(i for i, v in enumerate(values, start=1) if v == v and v >= best - within)), False


# metric -> (unit, whether our figure is the ratio of the arms' means, how a value is written)
METRICS = {
    "epochs_to_error": ("epochs", True, "{:.1f}{} epochs"),
    "val_error": ("points", False, "{:.1f}%{}"),  # an error rate
    "gap": ("points", False, "{:.1f}{} points"),  # a difference of two rates
    "converge": ("epochs", True, "{:.1f}{} epochs"),
}


def measure_run(metric: str, metrics, claim: Claim, classes: int = 10) -> tuple[float | None, bool]:
    if metric == "epochs_to_error":
        return epochs_to_error(metrics, claim.threshold, classes)
    if metric == "val_error":
        return validation_error(metrics)
    if metric == "gap":
        return train_val_gap(metrics)
    if metric == "converge":
        return epochs_to_converge(metrics)
    raise ValueError(f"unknown metric {metric!r}")


# --- The claims -----------------------------------------------------------------------------


def _cpu_setting(imagenet: bool = True, norm: str | None = None) -> str:
    """What differs from the paper's setting at the CPU size, in words, written from CPU_BASE (with
    `norm` instead of its normalisation, for a claim whose arms change it)."""
    base, switches = CPU_BASE, {**CPU_BASE["switches"], **({"norm": norm} if norm else {})}
    per_class = base.get("train_per_class")
    held_out = round(CIFAR10_TRAIN_IMAGES * base["val_split"])
    train = (f"{per_class * 10:,} CIFAR-10 training images ({per_class:,} per class)" if per_class else
             f"{CIFAR10_TRAIN_IMAGES - held_out:,} CIFAR-10 training images")
    norm = {"lrn": "LRN", "batchnorm": "batch normalisation", "none": "no normalisation"}.get(switches["norm"],
                                                                                             switches["norm"])
    network = (f"our {base['variant']} network at width {switches['width']:g} "
               + ("without normalisation" if switches["norm"] == "none" else f"with {norm} after every convolution"))
    time = f"{base['epochs']} epochs with a {base['schedule']} schedule on a CPU"
    if not imagenet:  # the paper's own CIFAR-10 experiment
        return (f"{train} instead of all 50,000; {network} (five convolutions) instead of the paper's four-layer "
                f"network, which it does not describe in detail; {time}")
    return (f"32-pixel CIFAR-10 instead of 224-pixel ImageNet: {train} instead of 1.2 million, validation error on "
            f"{held_out:,} held-out CIFAR-10 training images instead of top-1 error on ImageNet's 50,000 validation "
            f"images; {network} instead of the paper's; {time} instead of about 90 on two GTX 580 GPUs")


_CPU = _cpu_setting()


CLAIMS: dict[str, Claim] = {}


def _add(claim: Claim) -> None:
    CLAIMS[claim.name] = claim


_add(Claim(
    name="relu", number=1, title="ReLUs train six times faster than tanh", section="Section 3.1, Figure 1",
    quote="A four-layer convolutional neural network with ReLUs (solid line) reaches a 25% training error rate on "
          "CIFAR-10 six times faster than an equivalent network with tanh neurons (dashed line).",
    paper="6x fewer epochs to 25% training error (CIFAR-10)",
    measure="epochs to 25% training error (each epoch's training accuracy, interpolated between epochs): "
            "the ratio tanh / ReLU of the arms' means",
    threshold=0.25,
    arms=(Arm("relu", "with ReLU", {"switches": {"activation": "relu", "dropout": 0.0, "norm": "none"},
                                    "augment": "none"}),
          Arm("tanh", "with tanh", {"switches": {"activation": "tanh", "dropout": 0.0, "norm": "none"},
                                    "augment": "none"})),
    differs=_cpu_setting(imagenet=False, norm="none") + "; no dropout, no augmentation and no normalisation in "
                                                        "either arm, as the paper's Figure 1 (\"No regularization "
                                                        "of any kind was employed\"; batch normalisation, which "
                                                        "came later, keeps tanh units out of saturation too); "
                                                        "Keras' default Glorot-uniform initial weights, which are "
                                                        "scaled for tanh units, where the paper drew every weight "
                                                        "from a Gaussian with standard deviation 0.01",
    measures=(Measure("epochs to 25% training error", "epochs_to_error", "relu", "tanh",
                      "6x fewer epochs to 25% training error", paper_effect=6.0),),
))

_add(Claim(
    name="lrn", number=2, title="Local response normalisation lowers the error", section="Section 3.3",
    quote="Response normalization reduces our top-1 and top-5 error rates by 1.4% and 1.2%, respectively. We also "
          "verified the effectiveness of this scheme on the CIFAR-10 dataset: a four-layer CNN achieved a 13% test "
          "error rate without normalization and 11% with normalization.",
    paper="-1.4 points top-1 (ImageNet); 13% -> 11% test error (CIFAR-10)",
    measure="validation error, mean ± sd over seeds: without LRN minus with it, in points",
    threshold=None,
    arms=(Arm("lrn", "with LRN", {"switches": {"norm": "lrn"}}),
          Arm("none", "without normalisation", {"switches": {"norm": "none"}})),
    differs=_CPU + "; this claim's arms have LRN or no normalisation after every convolution (the paper: LRN after "
                   "conv1 and conv2 only)",
    measures=(Measure("validation error", "val_error", "lrn", "none",
                      "2 points lower with LRN on CIFAR-10 (13% -> 11%); 1.4 points top-1 on ImageNet",
                      paper_effect=2.0),),
))

_add(Claim(
    name="overlapping-pool", number=3, title="Overlapping pooling lowers the error", section="Section 3.4",
    quote="This scheme reduces the top-1 and top-5 error rates by 0.4% and 0.3%, respectively, as compared with "
          "the non-overlapping scheme s = 2, z = 2, which produces output of equivalent dimensions. We generally "
          "observe during training that models with overlapping pooling find it slightly more difficult to "
          "overfit.",
    paper="-0.4 points top-1 (ImageNet); slightly harder to overfit",
    measure="validation error, mean ± sd over seeds (non-overlapping minus overlapping, in points); then the "
            "train-validation gap",
    threshold=None,
    arms=(Arm("overlapping", "with overlapping 3x3/2 pooling", {"switches": {"overlapping_pool": True}}),
          Arm("non-overlapping", "with non-overlapping 2x2/2 pooling", {"switches": {"overlapping_pool": False}})),
    differs=_CPU,
    measures=(Measure("validation error", "val_error", "overlapping", "non-overlapping",
                      "0.4 points lower top-1 with overlapping pooling", paper_effect=0.4),
              Measure("train-validation gap", "gap", "overlapping", "non-overlapping",
                      "slightly harder to overfit with overlapping pooling (no figure)",
                      quote="We generally observe during training that models with overlapping pooling find it "
                            "slightly more difficult to overfit.")),
))

_add(Claim(
    name="dropout", number=4, title="Dropout prevents overfitting and slows convergence", section="Section 4.2",
    quote="Without dropout, our network exhibits substantial overfitting. Dropout roughly doubles the number of "
          "iterations required to converge.",
    paper="substantial overfitting without dropout; about 2x the iterations to converge with it",
    measure="the train-validation gap, mean ± sd over seeds (without minus with, in points); then epochs to "
            "converge (the first epoch within 1 point of the run's best validation accuracy)",
    threshold=None,
    arms=(Arm("dropout", "with dropout 0.5", {"switches": {"dropout": 0.5}}),
          Arm("no-dropout", "without dropout", {"switches": {"dropout": 0.0}})),
    differs=_CPU + "; convergence in epochs under a schedule that ends every run at the same epoch, not in "
                   "iterations of the paper's step schedule",
    measures=(Measure("train-validation gap", "gap", "dropout", "no-dropout",
                      "substantial overfitting without dropout (no figure)",
                      quote="Without dropout, our network exhibits substantial overfitting."),
              Measure("epochs to converge", "converge", "dropout", "no-dropout",
                      "about 2x the iterations to converge with dropout", paper_effect=2.0, higher=True,
                      quote="Dropout roughly doubles the number of iterations required to converge.")),
))

_add(Claim(
    name="augmentation", number=5, title="Data augmentation prevents overfitting; PCA lighting lowers the error",
    section="Section 4.1",
    quote="Without this scheme, our network suffers from substantial overfitting, which would have forced us to use "
          "much smaller networks. ... This scheme reduces the top-1 error rate by over 1%.",
    paper="substantial overfitting without augmentation; PCA lighting: over 1 point lower top-1",
    measure="the train-validation gap, mean ± sd over seeds (without minus with, in points); then the validation "
            "error without PCA lighting minus with it",
    threshold=None,
    arms=(Arm("paper", "with the paper's augmentation", {"augment": "paper"}),
          Arm("none", "without augmentation", {"augment": "none"}),
          Arm("no-lighting", "with crops and flips but no PCA lighting", {"augment": "paper-no-lighting"})),
    differs=_CPU + "; crops and flips of 32-pixel images (the paper: 224 of 256) and our lighting noise on them",
    measures=(Measure("train-validation gap", "gap", "paper", "none",
                      "substantial overfitting without augmentation (no figure)",
                      quote="Without this scheme, our network suffers from substantial overfitting, which would "
                            "have forced us to use much smaller networks."),
              Measure("validation error", "val_error", "paper", "no-lighting",
                      "over 1 point lower top-1 with PCA lighting", paper_effect=1.0,
                      quote="This scheme reduces the top-1 error rate by over 1%.")),
))

_add(Claim(
    name="groups", number=6, title="Two GPUs' grouped convolutions beat half the kernels on one",
    section="Section 3.2",
    quote="This scheme reduces our top-1 and top-5 error rates by 1.7% and 1.2%, respectively, as compared with a "
          "net with half as many kernels in each convolutional layer trained on one GPU.",
    paper="-1.7 points top-1 (ImageNet)",
    measure="validation error, mean ± sd over seeds: the one-GPU net minus the grouped one, in points",
    threshold=None,
    arms=(Arm("grouped", "grouped (two GPUs' layout)", {"switches": {"groups": True}}),
          Arm("half", "ungrouped with half the kernels (one GPU)", {"switches": {"groups": False,
                                                                               "width": HALF_WIDTH}})),
    differs=_CPU + "; two switches differ, by the claim's own definition: the grouping of conv2, conv4 and conv5, "
                   "and half the kernels in every layer; one CPU computes both groups",
    measures=(Measure("validation error", "val_error", "grouped", "half", "1.7 points lower top-1 grouped",
                      paper_effect=1.7),),
))

_add(Claim(
    name="depth", number=7, title="Removing a middle convolution costs about 2 points",
    section="Section 7 (Discussion)",
    quote="It is notable that our network's performance degrades if a single convolutional layer is removed. For "
          "example, removing any of the middle layers results in a loss of about 2% for the top-1 performance of "
          "the network.",
    paper="about 2 points top-1 lost without a middle convolution (ImageNet)",
    measure="validation error, mean ± sd over seeds: without conv3 minus with all five, in points",
    threshold=None,
    arms=(Arm("all", "with all five convolutions", {"switches": {"remove_conv": 0}}),
          Arm("no-conv3", "without conv3", {"switches": {"remove_conv": 3}})),
    differs=_CPU + "; conv3 removed (the middle one; the maps keep their sizes)",
    measures=(Measure("validation error", "val_error", "all", "no-conv3", "about 2 points higher top-1 without it",
                      paper_effect=2.0),),
))


def get_claim(name: str) -> Claim:
    if name not in CLAIMS:
        raise ClaimError(f"No claim {name!r}. The claims: {', '.join(CLAIMS)}.")
    return CLAIMS[name]


# --- The experiments' settings --------------------------------------------------------------


def base_settings(size: str = "cpu", data: str | None = None, **scale) -> dict:
    """The base settings of `size` with `scale` (TrainConfig fields; None keeps the base's) on top."""
    if size not in SIZES:
        raise ClaimError(f"size must be one of {', '.join(SIZES)}, got {size!r}")
    unknown = sorted(set(scale) - set(SETTINGS))
    if unknown:
        raise ClaimError(f"{unknown[0]!r} is not a training setting: scale an experiment with "
                         f"epochs, train_per_class or another TrainConfig field")
    base = copy.deepcopy(CPU_BASE if size == "cpu" else GPU_BASE)
    if size == "gpu" and not data:
        raise ClaimError("The GPU size trains the paper's network on your ImageNet-layout folder: give it as "
                         "data (--data PATH with PATH/train/<class>/* and PATH/val/<class>/*).")
    if data:
        base["data"] = data
    for key, value in scale.items():
        if value is None:
            continue
        if key == "switches":
            base["switches"].update(value)
        else:
            base[key] = value
    return base


def arm_settings(base: dict, arm: Arm) -> dict:
    """The base's settings with the arm's changes: every switch explicit (a switch the variant
    does not know yet stays out while it is at its published default)."""
    settings = {**base, **{k: v for k, v in arm.changes.items() if k != "switches"}}
    switches = {**base["switches"], **arm.changes.get("switches", {})}
    if switches.get("width") == HALF_WIDTH:
        switches["width"] = base["switches"].get("width", get_arch(base["variant"]).width) / 2
    known = get_arch(settings["variant"]).switches()
    settings["switches"] = {k: v for k, v in switches.items()
                            if k in known or _SWITCH_DEFAULTS.get(k, object()) != v}
    return settings


def experiment_configs(name: str, size: str = "cpu", data: str | None = None, seeds=SEEDS,
                       **scale) -> list[tuple[Arm, int, TrainConfig]]:
    """Every run of claim `name`'s experiment: (arm, seed, settings), seed 0 of every arm first,
    so the first verdict needs the fewest runs."""
    claim = get_claim(name)
    base = base_settings(size, data, **scale)
    configs = []
    for seed in seeds:
        for arm in claim.arms:
            try:
                config = TrainConfig(**{**arm_settings(base, arm), "seed": seed})
            except ConfigError as exc:
                raise ClaimError(f"Claim {name}'s arm {arm.name!r} cannot be trained: {exc}") from exc
            configs.append((arm, seed, config))
    return configs


def canonical(record: dict) -> dict | None:
    """The settings of a run that decide what it learns, written out in full (each switch and the
    input size as the network has them, the learning rate the optimizer uses), for comparing two
    runs; None for a record that is not a usable TrainConfig."""
    try:
        config = TrainConfig.from_dict({k: v for k, v in record.items() if k not in MATCH_IGNORES})
        arch = get_arch(config.variant, input_size=config.input_size, **config.switches)
    except (ConfigError, TypeError, ValueError):
        return None
    settings = {f.name: getattr(config, f.name) for f in dataclasses.fields(config) if f.name not in MATCH_IGNORES}
    switches = {k: v for k, v in arch.switches().items() if k not in ("input_size", "num_classes")}
    settings.update(switches={**_SWITCH_DEFAULTS, **switches}, input_size=arch.input_size, learning_rate=config.lr)
    return settings


# --- Finding the runs -----------------------------------------------------------------------


def bundled_root() -> Path:
    """Where the bundled claims' runs are (read at call time, so a test may point it elsewhere)."""
    return Path(locations.CLAIMS_DIR) / "runs"


def _scan(folder: Path, source: str) -> list[dict]:
    """Every run folder in `folder`: its id, path, seed, state, canonical settings and record."""
    runs = []
    try:
        paths = sorted(Path(folder).iterdir())
    except OSError:
        return runs
    for path in paths:
        try:
            if not (path / layout.CONFIG).is_file():
                continue
        except OSError:  # a name the filesystem cannot stat (too long, a broken link loop)
            continue
        record, problems = layout.read_checked(path / layout.CONFIG, layout.CONFIG_SCHEMA)
        settings = canonical(record) if not problems else None
        if settings is None:
            continue
        status = liveness.read_status(path)
        runs.append({"run_id": path.name, "path": str(path), "seed": record.get("seed", 0),
                     "state": status.get("state") or "unknown", "source": source, "settings": settings,
                     "classes": len(record.get("class_names") or []) or 10,
                     "elapsed_s": status.get("elapsed_s"), "data": record.get("data")})
    return runs


@dataclass
class _Store:
    """The runs of the user's folder and of the bundle, scanned once for several claims."""

    root: Path | None = None
    include_bundled: bool = True
    yours: list = field(default_factory=list)
    bundled: list = field(default_factory=list)

    def __post_init__(self):
        root = locations.runs_root(self.root)
        self.yours = _scan(root, "yours") if root.is_dir() else []
        bundle = bundled_root()
        self.bundled = _scan(bundle, "bundled") if self.include_bundled and bundle.is_dir() else []


def _match(runs: list[dict], arms: dict[str, dict], data: str | None) -> dict[str, list[dict]]:
    wanted = {name: canonical(settings) for name, settings in arms.items()}
    found = {name: [] for name in arms}
    for run in runs:
        if data is not None and not _same_data(run["data"], data):
            continue
        for name, settings in wanted.items():
            if run["settings"] == settings:
                found[name].append(run)
                break
    return found


def _same_data(recorded, data: str) -> bool:
    """Whether a run's recorded data is `data`: the same text, or the same folder."""
    if recorded == data:
        return True
    try:
        return isinstance(recorded, str) and Path(recorded).expanduser().resolve() == Path(data).expanduser().resolve()
    except (OSError, RuntimeError):
        return False


def _finished(runs: list[dict]) -> list[dict]:
    return [r for r in runs if r["state"] == "finished"]


def _complete(found: dict[str, list[dict]]) -> bool:
    return all(len({r["seed"] for r in _finished(runs)}) >= MIN_SEEDS for runs in found.values())


def _arm_settings_of(claim: Claim, size: str, data: str | None, scale: dict) -> dict[str, dict]:
    base = base_settings(size, data, **scale)
    return {arm.name: {**arm_settings(base, arm), "seed": 0} for arm in claim.arms}


def _matching(claim: Claim, store: _Store, size: str, data: str | None, scale: dict) -> tuple[dict, str, dict]:
    """(runs by arm from the source the verdict uses, that source, the user's runs by arm)."""
    arms = _arm_settings_of(claim, size, data, scale)
    match_data = data if size == "gpu" else None
    yours = _match(store.yours, arms, match_data)
    if _complete(yours) or not store.bundled:
        return yours, "yours", yours
    bundled = _match(store.bundled, arms, match_data)
    if not any(bundled.values()):
        return yours, "yours", yours
    return bundled, "bundled", yours


def matching_runs(name: str, root=None, include_bundled: bool = True, size: str = "cpu", data: str | None = None,
                  **scale) -> dict[str, list[dict]]:
    """{arm: [run]} of claim `name`: runs whose settings equal the arm's (but MATCH_IGNORES), each
    {"run_id", "path", "seed", "state", "source", "elapsed_s", ...}; only "finished" ones count
    for a verdict, the others are pending. The user's runs; the bundled ones instead while the
    user has no complete set (MIN_SEEDS finished runs in every arm)."""
    claim = get_claim(name)
    found, _, _ = _matching(claim, _Store(root, include_bundled), size, data, scale)
    return found


# --- Verdicts -------------------------------------------------------------------------------


def _stats(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def _read_metrics(run: dict):
    if "metrics" not in run:
        run["metrics"] = layout.read_metrics(Path(run["path"]))
    return run["metrics"]


def _arm_stats(claim: Claim, metric: str, runs: list[dict]) -> dict:
    """An arm's values over its finished runs, one run per seed (the first made, by run id: a seed
    trained twice is not two samples)."""
    values, censored, ids, seeds = [], [], [], set()
    for run in sorted(_finished(runs), key=lambda r: (r["seed"], r["run_id"])):
        if run["seed"] in seeds:
            continue
        value, cut = measure_run(metric, _read_metrics(run), claim, run["classes"])
        if value is None:
            continue
        seeds.add(run["seed"])
        values.append(value)
        censored.append(cut)
        ids.append(run["run_id"])
    mean, sd = _stats(values)
    return {"n": len(values), "mean": mean, "sd": sd, "values": values, "censored": censored, "runs": ids,
            "pending": [r["run_id"] for r in runs if r["state"] in PENDING_STATES]}


def _pm(stats: dict, metric: str) -> str:
    """"38.2% ± 0.6" (an error), "12.0 ± 1.1 points" (a gap), "4.1 ± 0.3 epochs"; censored runs
    as lower bounds."""
    mean, sd = stats["mean"], stats["sd"]
    cut = sum(stats["censored"])
    if cut and cut == stats["n"]:
        return f"not reached in {stats['values'][0]:g} epochs"
    text = METRICS[metric][2].format(mean, f" ± {sd:.1f}" if sd is not None else "")
    return f">= {text} ({cut} of {stats['n']} runs did not reach it)" if cut else text


def _compare(claim: Claim, measure: Measure, found: dict[str, list[dict]]) -> dict:
    """One measure's verdict: the arms' statistics, the effect, its standard error and the words."""
    unit, as_ratio, _ = METRICS[measure.metric]
    arms = {name: _arm_stats(claim, measure.metric, found.get(name, []))
            for name in (measure.paper_arm, measure.other_arm)}
    for name, stats in arms.items():
        stats["label"] = claim.arm(name).label
    a, b = arms[measure.paper_arm], arms[measure.other_arm]
    result = {"title": measure.title, "metric": measure.metric, "unit": unit, "paper": measure.paper,
              "quote": measure.quote or claim.quote, "arms": arms, "effect": None, "se": None, "ratio": None}
    if a["n"] == 0 and b["n"] == 0:
        pending = a["pending"] or b["pending"]
        return {**result, "verdict": "not run yet",
                "ours": "not run yet" + (": its runs are queued or training" if pending else "")}
    if a["n"] < MIN_SEEDS or b["n"] < MIN_SEEDS:
        return {**result, "verdict": "too few runs",
                "ours": f"too few runs: {a['n']} finished {a['label']}, {b['n']} {b['label']}; a verdict needs "
                        f"{MIN_SEEDS} finished seeds of each"}
    # effect > 0: in the paper's direction (the paper's arm lower, or higher when `higher`)
    effect = (a["mean"] - b["mean"]) if measure.higher else (b["mean"] - a["mean"])
    se = math.sqrt(a["sd"] ** 2 / a["n"] + b["sd"] ** 2 / b["n"])
    ratio = None
    if as_ratio:
        slow, fast = (a, b) if measure.higher else (b, a)
        ratio = slow["mean"] / fast["mean"] if fast["mean"] > 0 else None
    seeds = f"{a['n']} seeds each" if a["n"] == b["n"] else f"{a['n']} and {b['n']} seeds"
    figures = f"{measure.title} {_pm(a, measure.metric)} {a['label']}, {_pm(b, measure.metric)} {b['label']} ({seeds})"
    if any(a["censored"]) and not measure.higher:
        # the paper's arm did not reach the threshold in some runs: its mean is only a lower bound
        if not any(b["censored"]) and effect < 0 and abs(effect) >= 2 * se:
            verdict, words = "disagrees", f"{b['label']} reached it sooner"
        else:
            verdict, words = "within noise", (f"{a['label']} did not reach it in every run, so the two cannot be "
                                               "told apart: train for more epochs")
        return {**result, "verdict": verdict, "effect": effect, "se": se, "ratio": None,
                "ours": f"{figures}: {words}"}
    bound = any(b["censored"]) and not measure.higher  # the other arm's mean is a lower bound: so is the effect
    if as_ratio:
        slow_label = (a if measure.higher else b)["label"]
        size = f"{'>= ' if bound else ''}{ratio:.1f}x" if ratio is not None else "an unmeasurable ratio"
        difference = (f"{slow_label} it takes {size} as long ({abs(effect):.1f} epochs "
                      f"{'more' if effect >= 0 else 'less'})")
    else:
        lower, higher = (a, b) if a["mean"] <= b["mean"] else (b, a)
        difference = f"{higher['mean'] - lower['mean']:.1f} points lower {lower['label']}"
    noise = f"2 SE = {2 * se:.1f} {'epochs' if unit == 'epochs' else 'points'}"
    if abs(effect) < 2 * se or effect == 0:  # no difference at all is no direction either
        verdict, judged = "within noise", f"within noise ({noise})"
    elif effect > 0:
        verdict, judged = "agrees", f"agrees ({noise})"
        smaller = _much_smaller(measure, effect, ratio, as_ratio)
        if smaller and bound:  # the ratio is only a lower bound: how much smaller is not known
            judged = (f"agrees; at least {smaller}: {b['label']} did not reach it in every run, train for more "
                      f"epochs to measure the ratio ({noise})")
        elif smaller:
            judged = f"agrees in direction; {smaller} ({noise})"
    else:
        verdict, judged = "disagrees", f"disagrees: the opposite direction ({noise})"
    return {**result, "verdict": verdict, "effect": effect, "se": se, "ratio": ratio,
            "ours": f"{figures}: {difference}; {judged}"}


def _much_smaller(measure: Measure, effect: float, ratio: float | None, as_ratio: bool) -> str:
    """Words for an agreeing effect under half the paper's ('' when it is not, or the paper gives
    no figure)."""
    if measure.paper_effect is None:
        return ""
    if as_ratio:
        if ratio is not None and ratio - 1 < (measure.paper_effect - 1) / 2:
            return f"{ratio:.1f}x against the paper's {measure.paper_effect:g}x"
        return ""
    if effect < measure.paper_effect / 2:
        return f"{effect:.1f} points against the paper's {measure.paper_effect:g}"
    return ""


def _gpu_differs(base: dict) -> str:
    per_class = base.get("train_per_class")
    images = f"{per_class:,} training images per class" if per_class else "every training image of your folder"
    return (f"the paper's network on your data ({base['data']}): {images}, {base['epochs']} epochs, validation "
            f"error on your folder's validation images; one device computes both groups of the grouped layers")


def _verdict(claim: Claim, store: _Store, size: str, data: str | None, scale: dict) -> dict:
    found, source, yours = _matching(claim, store, size, data, scale)
    primary, *parts = [_compare(claim, m, found) for m in claim.measures]
    every = {name: _arm_stats(claim, claim.measures[0].metric, found.get(name, [])) for name in
             (a.name for a in claim.arms)}
    for name, stats in every.items():
        stats["label"] = claim.arm(name).label
    used = {run_id for m in (primary, *parts) for stats in m["arms"].values() for run_id in stats["runs"]}
    counted = [r for runs in found.values() for r in runs if r["run_id"] in used]
    seconds = sum(r["elapsed_s"] for r in counted if isinstance(r["elapsed_s"], (int, float)))
    differs = claim.differs if size == "cpu" else _gpu_differs(base_settings(size, data, **scale))
    return {
        "name": claim.name, "number": claim.number, "title": claim.title, "section": claim.section,
        "quote": claim.quote, "paper": claim.paper, "ours": primary["ours"], "verdict": primary["verdict"],
        "source": source, "size": size, "differs": differs, "measure": claim.measure, "threshold": claim.threshold,
        "arms": every, "effect": primary["effect"], "se": primary["se"], "ratio": primary["ratio"],
        "parts": parts, "runs": sorted(r["run_id"] for r in counted), "seconds": seconds,
        "yours": {"finished": sum(len(_finished(r)) for r in yours.values()),
                  "pending": sorted(r["run_id"] for runs in yours.values() for r in runs
                                    if r["state"] in PENDING_STATES)},
    }


def _json_safe(value):
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def verdict(name: str, root=None, size: str = "cpu", data: str | None = None, include_bundled: bool = True,
            **scale) -> dict:
    """Claim `name`'s verdict from the runs that exist: {"name", "number", "section", "quote", "paper",
    "ours", "verdict", "source" ("yours" or "bundled"), "differs", "measure", "arms", "effect",
    "se", "parts", "runs", "seconds", ...} (JSON-ready)."""
    return _json_safe(_verdict(get_claim(name), _Store(root, include_bundled), size, data, scale))


def claims_json(root=None, include_bundled: bool = True) -> list[dict]:
    """Every claim's verdict, in order (what `claims --json` prints)."""
    store = _Store(root, include_bundled)
    return [_json_safe(_verdict(claim, store, "cpu", None, {})) for claim in CLAIMS.values()]


def markdown(results: list[dict]) -> str:
    """The verdicts as docs/CLAIMS.md shows them (its "Measured verdicts" part), written from
    `claims_json()` so the document says exactly what the verdicts say."""
    lines = []
    for result in results:
        minutes = result["seconds"] / 60
        lines += [f"### {result['number']}. {result['title']} ({result['name']}, {result['section']})", "",
                  f"> {result['quote']}", "",
                  f"- The paper: {result['paper']}",
                  f"- Ours: {result['ours']}",
                  f"- Verdict: **{result['verdict']}**"]
        lines += [f"- Then {part['title']}: {part['ours']} (**{part['verdict']}**)" for part in result["parts"]]
        lines += [f"- What differs from the paper: {result['differs']}",
                  f"- Runs: {len(result['runs'])}, {minutes:,.0f} minutes of training ({', '.join(result['runs'])})"
                  if result["runs"] else "- Runs: none yet", ""]
    return "\n".join(lines)


# --- The bundle -----------------------------------------------------------------------------

# What a bundled run keeps: enough to recompute its verdict, draw its curves and play its epochs.
BUNDLED_FILES = (layout.CONFIG, layout.STATUS, layout.METRICS, layout.STEPS)
VERDICTS_FILE = "verdicts.json"
DOCS_START, DOCS_END = "<!-- verdicts -->", "<!-- /verdicts -->"


def bundle(runs_root, out=None, docs=None) -> dict:
    """Ship the finished runs of `runs_root` that belong to a claim's CPU experiment as the bundled
    results: each run's BUNDLED_FILES and snapshots (no model files) copied into `out`/runs (default
    locations.CLAIMS_DIR; an older copy of a run replaced), its `data` recorded as the CPU base's
    (the bundle names no folder of the machine it was trained on), then `out`/verdicts.json written
    from the bundle alone, and in `docs` the part between DOCS_START and DOCS_END rewritten."""
    import shutil

    from alexnet_core.store import fileio

    out = Path(out) if out is not None else Path(locations.CLAIMS_DIR)
    store = _Store(runs_root, include_bundled=False)
    chosen = {}
    for claim in CLAIMS.values():
        for runs in _match(store.yours, _arm_settings_of(claim, "cpu", None, {}), None).values():
            chosen.update({r["run_id"]: Path(r["path"]) for r in _finished(runs)})
    if not chosen:
        raise ClaimError(f"{runs_root} has no finished run of a claim's CPU experiment: "
                         "queue them with `claims run NAME` first")
    for run_id, source in sorted(chosen.items()):
        dest = out / "runs" / run_id
        staging = dest.with_name(f".{run_id}.partial")
        shutil.rmtree(staging, ignore_errors=True)
        (staging / layout.SNAPSHOTS).mkdir(parents=True)
        for name in BUNDLED_FILES:
            if (source / name).is_file():
                shutil.copyfile(source / name, staging / name)
        for snapshot in sorted((source / layout.SNAPSHOTS).glob("*.npz")):
            shutil.copyfile(snapshot, staging / layout.SNAPSHOTS / snapshot.name)
        (staging / layout.READ_ONLY).touch()  # shipped: the app neither resumes nor deletes it
        record = fileio.read_object(staging / layout.CONFIG)
        fileio.write_json_atomic(staging / layout.CONFIG, {**record, "data": CPU_BASE["data"]})
        shutil.rmtree(dest, ignore_errors=True)
        staging.rename(dest)
    previous, locations.CLAIMS_DIR = locations.CLAIMS_DIR, out
    try:
        results = claims_json(root=out / ".no-runs-of-yours")
    finally:
        locations.CLAIMS_DIR = previous
    fileio.write_json_atomic(out / VERDICTS_FILE, results)
    if docs is not None:
        page = Path(docs).read_text()
        if DOCS_START not in page or DOCS_END not in page:
            raise ClaimError(f"{docs} has no '{DOCS_START}' ... '{DOCS_END}' part to write the verdicts into")
        head, rest = page.split(DOCS_START, 1)
        tail = rest.split(DOCS_END, 1)[1]
        fileio.write_text_atomic(Path(docs), f"{head}{DOCS_START}\n\n{markdown(results)}\n{DOCS_END}{tail}")
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    return {"out": str(out), "runs": sorted(chosen), "bytes": size, "verdicts": str(out / VERDICTS_FILE),
            "docs": str(docs) if docs else None, "claims": results}


# --- Curves, queueing, estimates ------------------------------------------------------------


CURVE_COLUMNS = ("run_id", "arm", "seed", "state", "source", "epoch", "accuracy", "val_accuracy", "loss", "val_loss",
                 "train_error", "val_error")


def curves(name: str, root=None, size: str = "cpu", data: str | None = None, include_bundled: bool = True, **scale):
    """The per-epoch metrics of the runs the verdict reads (finished or not), one row per run and
    epoch: CURVE_COLUMNS (errors as fractions, `epoch` from 1)."""
    import pandas as pd

    claim = get_claim(name)
    found, _, _ = _matching(claim, _Store(root, include_bundled), size, data, scale)
    frames = []
    for arm, runs in found.items():
        for run in runs:
            metrics = _read_metrics(run)
            if metrics.empty or "epoch" not in metrics:
                continue
            frame = pd.DataFrame({"epoch": metrics["epoch"].astype(int)})
            for column in ("accuracy", "val_accuracy", "loss", "val_loss"):
                frame[column] = metrics[column] if column in metrics else float("nan")
            frame["train_error"] = 1.0 - frame["accuracy"]
            frame["val_error"] = 1.0 - frame["val_accuracy"]
            frame["run_id"], frame["arm"], frame["seed"] = run["run_id"], arm, run["seed"]
            frame["state"], frame["source"] = run["state"], run["source"]
            frames.append(frame)
    if not frames:
        return pd.DataFrame(columns=list(CURVE_COLUMNS))
    return pd.concat(frames, ignore_index=True)[list(CURVE_COLUMNS)]


def missing_runs(name: str, size: str = "cpu", data: str | None = None, root=None, seeds=SEEDS,
                 **scale) -> list[tuple[Arm, int, TrainConfig]]:
    """The experiment's runs that the user's runs folder has neither finished nor queued nor
    training (a failed or stopped run does not cover its seed), in queueing order."""
    claim = get_claim(name)
    configs = experiment_configs(name, size, data, seeds, **scale)
    store = _Store(root, include_bundled=False)
    arms = {arm.name: {**arm_settings(base_settings(size, data, **scale), arm), "seed": 0} for arm in claim.arms}
    found = _match(store.yours, arms, data if size == "gpu" else None)
    covered = {(arm, run["seed"]) for arm, runs in found.items() for run in runs if run["state"] in COUNTED_STATES}
    return [(arm, seed, config) for arm, seed, config in configs if (arm.name, seed) not in covered]


_QUEUEING = threading.Lock()


def check_gpu_data(data: str) -> None:
    """The GPU size's data: an ImageNet-layout folder (PATH/train/<class>/*, with PATH/val/<class>/*
    for the validation error) or a prepared one (`prepare`); ClaimError saying what it is not."""
    from alexnet_core.inputs import prepared

    folder = Path(data).expanduser()
    if not folder.is_dir():
        raise ClaimError(f"There is no folder {data}: the GPU size needs your ImageNet-layout folder "
                         "(PATH/train/<class>/* and PATH/val/<class>/*).")
    if prepared.detect(folder):
        return
    if not (folder / "train").is_dir() or not (folder / "val").is_dir():
        raise ClaimError(f"{data} is not an ImageNet-layout folder: it needs train/<class>/* to train on and "
                         "val/<class>/* for the validation error the verdicts compare (or give a folder made by "
                         "`python -m alexnet_core prepare`).")


def queue_missing(name: str, size: str = "cpu", data: str | None = None, root=None, seeds=SEEDS,
                  **scale) -> list[tuple[Arm, int, Path]]:
    """queue_experiment, saying which arm and seed each queued run is."""
    from alexnet_core.train import queue

    claim = get_claim(name)
    if size == "gpu" and data:
        check_gpu_data(data)
    root = locations.runs_root(root)
    queued = []
    # Two clicks at once (two tabs of one app) queue the missing runs once. Not the runs folder's
    # lock: each enqueue reads the data, and a trainer the first one starts needs that lock soon.
    with _QUEUEING:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        for arm, seed, config in missing_runs(name, size, data, root, seeds, **scale):
            run_id, number = f"{stamp}-{name}-{arm.name}-seed{seed}", 1
            while (root / run_id).exists():
                number += 1
                run_id = f"{stamp}-{name}-{arm.name}-seed{seed}-{number}"
            label = {"name": f"Claim {claim.number} ({name}): {arm.label}, seed {seed}",
                     "notes": f"{claim.section}. Queued by `claims run {name}`; it counts for every claim with an "
                              "arm of these settings."}
            queued.append((arm, seed, queue.enqueue(config, root, run_id=run_id, label=label)))
    return queued


def queue_experiment(name: str, size: str = "cpu", data: str | None = None, root=None, seeds=SEEDS,
                     **scale) -> list[Path]:
    """Queue the experiment's missing runs (missing_runs) in the runs folder: seed 0 of every arm
    first, so a first verdict comes early. Returns the queued run folders (none when every run
    exists). Runs already there, whatever queued them, are not queued again."""
    return [path for _, _, path in queue_missing(name, size, data, root, seeds, **scale)]


def estimate_seconds(name: str, size: str = "cpu", root=None, data: str | None = None, seeds=SEEDS,
                     **scale) -> dict:
    """The training time the missing runs need, from measured epochs: each arm's recorded
    `epoch_seconds` (metrics.csv) in the finished runs that match it (the user's first, then the
    bundled ones: measured on the machine that made the bundle); an arm with none takes the
    others' mean. Scaled as asked (other epochs or `train_per_class`), the same size's default
    runs are measured instead, per epoch scaled by the training images of an epoch. Cheap: reads
    files, trains nothing. {"seconds" (None when no epoch was measured), "runs", "epochs",
    "per_epoch_s" {arm: seconds}, "measured" (in words)}."""
    claim = get_claim(name)
    missing = missing_runs(name, size, data, root, seeds, **scale)
    store = _Store(root)
    base = base_settings(size, data, **scale)
    per_epoch, measured = _measured_epochs(claim, store, size, data, scale)
    unscaled = base_settings(size, data)
    if not per_epoch and scale:
        per_epoch, measured = _measured_epochs(claim, store, size, data, {})
        before, after = unscaled.get("train_per_class"), base.get("train_per_class")
        factor = after / before if before and after else 1.0
        per_epoch = {arm: seconds * factor for arm, seconds in per_epoch.items()}
    if per_epoch:
        fallback = sum(per_epoch.values()) / len(per_epoch)
        for arm in claim.arms:
            per_epoch.setdefault(arm.name, fallback)
    total = None
    if per_epoch and missing:
        total = sum(per_epoch[arm.name] * config.epochs for arm, _, config in missing)
    elif not missing:
        total = 0.0
    words = (f"from the measured epochs of {' and '.join(sorted(measured))}" if measured else
             "no epoch of these settings has been measured yet")
    return {"seconds": total, "runs": len(missing), "epochs": sum(c.epochs for _, _, c in missing),
            "per_epoch_s": per_epoch, "measured": words, "size": size,
            "train_per_class": base.get("train_per_class")}


def _measured_epochs(claim: Claim, store: _Store, size: str, data: str | None, scale: dict) -> tuple[dict, set]:
    """({arm: mean recorded seconds an epoch}, where they were measured) of the finished runs
    matching each arm: the user's first, then the bundled ones."""
    arms = _arm_settings_of(claim, size, data, scale)
    per_epoch, measured = {}, set()
    for source, runs in (("your runs", store.yours), ("the bundled runs", store.bundled)):
        for arm, arm_runs in _match(runs, arms, data if size == "gpu" else None).items():
            seconds = [s for run in _finished(arm_runs) for s in _epoch_seconds(run)]
            if seconds and arm not in per_epoch:
                per_epoch[arm] = sum(seconds) / len(seconds)
                measured.add(source)
    return per_epoch, measured


def _epoch_seconds(run: dict) -> list[float]:
    metrics = _read_metrics(run)
    if "epoch_seconds" not in metrics:
        return []
    return [float(s) for s in metrics["epoch_seconds"] if s == s and s > 0]
