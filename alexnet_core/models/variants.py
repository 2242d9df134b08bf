"""AlexNet variants as data, one builder, and a registry.

Each public variant is a function returning an `Arch`; `build_model(name, ...)`
applies the switches (normalisation, activation, groups, pooling, dropout, width,
a middle convolution removed, input size, classes) and builds a functional
`keras.Model` whose layers are named like the paper: conv1..conv5, fc6, fc7, fc8
and a float32 softmax `predictions`. A removed convolution leaves a gap in the
numbers (conv1, conv2, conv4, conv5, fc6...), so a layer keeps its paper's name.
"""

from __future__ import annotations

# Imports inside functions are deliberate: TensorFlow and Keras, and the modules that reach them,
# load on first use, so importing this module (the app's pages, the command line) stays light.
import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field

NORMS = ("lrn", "batchnorm", "none")
# The nonlinearity after every convolution and hidden dense layer: the paper's ReLU, or the tanh
# its Figure 1 compares it with. Its layers are named relu6 / tanh6 by what they compute.
ACTIVATIONS = ("relu", "tanh")
# remove_conv: 0 keeps all five convolutions; 2, 3 or 4 takes that middle one out (the paper's
# section 6.1: "removing any of the middle layers results in a loss of about 2%" top-1).
REMOVE_CONV = (0, 2, 3, 4)
WIDTHS = (0.25, 0.5, 0.75, 1.0, 1.5, 2.0)  # width multipliers the pages offer
CPU_FRIENDLY = ("compact", "compact-hires")  # sized for 32x32 images: minutes an epoch on a laptop CPU
MAX_INPUT_SIZE = 1024
MIN_INPUT_SIZE = 8  # the smallest image the app classifies (inference.check_classifier), whatever the layers take
Padding = str | int  # "valid", "same" or explicit zero padding in pixels
# How a pooling window meets the map's edge: "valid" (floor: a partial window at the end is
# dropped), "same" (TensorFlow's), "ceil" (Caffe's: the output size rounded up, so a partial
# window at the end is pooled too; see `ceil_padding`).
POOL_PADDINGS = ("valid", "same", "ceil")
# What an Arch holds besides the user's switches: settings a converted network needs to be held
# exactly (Caffe's LRN constants and pooling), accepted by `get_arch` and recorded with a model.
DETAILS = ("lrn", "pool_padding")


@dataclass(frozen=True)
class Conv:
    filters: int
    kernel: int
    stride: int = 1
    padding: Padding = "same"
    groups: int = 1  # used when Arch.groups is on (the paper's two-GPU split)
    norm: bool = False  # normalise after this layer (where the variant normalises)
    pool: bool = False  # max-pool after this layer


@dataclass(frozen=True)
class LRN:
    """Local response normalisation's constants as the paper writes them (section 3.3):
    b = a / (k + alpha * sum of a^2 over the n maps centred on a's) ** beta.
    The defaults are the paper's. Caffe (and ONNX) write the same layer with `local_size` n and an
    alpha that is divided by n inside the layer: `LRN.caffe` converts."""

    n: int = 5
    k: float = 2.0
    alpha: float = 1e-4
    beta: float = 0.75

    @classmethod
    def caffe(cls, local_size: int = 5, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0) -> LRN:
        """Caffe's LRN layer (ACROSS_CHANNELS; ONNX's LRN is the same): its alpha is divided by
        local_size, and its k defaults to 1."""
        return cls(n=int(local_size), k=float(k), alpha=float(alpha) / int(local_size), beta=float(beta))

    @classmethod
    def from_value(cls, value) -> LRN:
        """An LRN from itself or a mapping of its fields (as `as_dict` writes it)."""
        if isinstance(value, LRN):
            return value
        if not isinstance(value, dict) or set(value) - {"n", "k", "alpha", "beta"}:
            raise ValueError(f"lrn must be a mapping of n, k, alpha and beta, got {str(value)[:100]!r}")
        return cls(**value)

    def as_dict(self) -> dict:
        return {"n": self.n, "k": self.k, "alpha": self.alpha, "beta": self.beta}

    def layer_config(self) -> dict:
        """The arguments of `layers.LocalResponseNormalization`."""
        return {"depth_radius": (self.n - 1) // 2, "bias": float(self.k), "alpha": float(self.alpha),
                "beta": float(self.beta)}


@dataclass(frozen=True)
class Arch:
    title: str
    source: str
    note: str
    convs: tuple[Conv, ...]
    fcs: tuple[int, ...] = (4096, 4096)
    input_size: int = 227
    num_classes: int = 1000
    norm: str = "lrn"
    activation: str = "relu"  # one of ACTIVATIONS
    groups: bool = False
    overlapping_pool: bool = True  # 3x3 stride 2 (paper) instead of 2x2 stride 2
    pool_padding: str = "valid"  # one of POOL_PADDINGS
    lrn: LRN = LRN()  # the constants of every LRN layer (norm="lrn")
    dropout: float = 0.5
    dropout_before_fc: bool = False  # torchvision: Dropout -> Linear -> ReLU
    fc_norm: bool = False  # BatchNorm after every dense layer (Keras CIFAR-10 network)
    adaptive_pool: int = 0  # torchvision: AdaptiveAvgPool2d(6) before the classifier
    towers: int = 1  # 2 = two explicit streams instead of grouped convolutions
    width: float = 1.0  # multiplies every conv and hidden dense width
    remove_conv: int = 0  # one of REMOVE_CONV: the middle convolution left out (0: none)
    published: dict = field(default_factory=dict)  # published totals at the defaults

    def switches(self) -> dict:
        """The user-facing switches and their current values."""
        return {
            "norm": self.norm,
            "activation": self.activation,
            "groups": self.groups,
            "overlapping_pool": self.overlapping_pool,
            "dropout": self.dropout,
            "width": self.width,
            "remove_conv": self.remove_conv,
            "input_size": self.input_size,
            "num_classes": self.num_classes,
        }

    def details(self) -> dict:
        """The settings besides the switches (`DETAILS`), as JSON: `get_arch(name, **details)`
        builds the same network again."""
        return {"lrn": self.lrn.as_dict(), "pool_padding": self.pool_padding}


_REGISTRY: dict[str, Callable[[], Arch]] = {}


def register_variant(name: str):
    """Decorator adding an `Arch` factory to the registry under `name`."""

    def decorator(fn: Callable[[], Arch]) -> Callable[[], Arch]:
        if name in _REGISTRY:
            raise ValueError(f"Variant {name!r} is already registered")
        _REGISTRY[name] = fn
        return fn

    return decorator


def list_variants() -> list[str]:
    return list(_REGISTRY)


# --- The variants -------------------------------------------------------------------------

PAPER_CONVS = (
    Conv(96, 11, stride=4, padding="valid", norm=True, pool=True),
    Conv(256, 5, padding="same", groups=2, norm=True, pool=True),
    Conv(384, 3, padding="same"),
    Conv(384, 3, padding="same", groups=2),
    Conv(256, 3, padding="same", groups=2, pool=True),
)


@register_variant("paper")
def paper() -> Arch:
    return Arch(
        title="AlexNet (Krizhevsky et al. 2012)",
        source="Krizhevsky, Sutskever, Hinton: ImageNet Classification with Deep "
        "Convolutional Neural Networks, NIPS 2012",
        note=(
            "The network of the paper, as trained on two GTX 580s: conv2, conv4 and conv5 see only "
            "the kernel maps of their own GPU (groups=2), conv3 and the dense layers see both. "
            "Local response normalisation (k=2, n=5, alpha=1e-4, beta=0.75) follows the ReLU of "
            "conv1 and conv2, and overlapping 3x3/2 max-pooling follows both LRNs and conv5. "
            "Input 227x227 (the paper's '224' does not divide: (224-11)/4+1 is not whole). "
            "60,965,224 parameters and 724 million multiply-accumulates per image; the paper rounds "
            "this to '60 million parameters'. The BVLC AlexNet (Caffe's, from the ONNX model zoo) is this "
            "network at 224x224 with Caffe's LRN constants (k=1, alpha=1e-4 over the window of 5) and "
            "pooling rounded up (54 -> 27 after conv1), which keeps the 6x6 map before fc6."
        ),
        convs=PAPER_CONVS,
        groups=True,
        published={"total_params": 60_965_224, "total_macs": 724_406_816},
    )


@register_variant("paper-ungrouped")
def paper_ungrouped() -> Arch:
    return dataclasses.replace(
        paper(),
        title="AlexNet, single tower",
        source="Krizhevsky et al. 2012 without the two-GPU split (the single-tower network of "
        "'CNN Champions Part 2')",
        note=(
            "The paper's network on one device: every convolution sees every kernel map of the "
            "layer below. conv2, conv4 and conv5 double their weights (614,656 / 1,327,488 / "
            "884,992), for 62,378,344 parameters and 1.14 billion multiply-accumulates, 57% more "
            "compute than the grouped network for the same layer shapes."
        ),
        groups=False,
        published={"total_params": 62_378_344, "total_macs": 1_135_256_096},
    )


@register_variant("two-tower")
def two_tower() -> Arch:
    return Arch(
        title="Two-stream AlexNet (Keras)",
        source="The two-stream Keras AlexNet: two towers, BatchNorm instead of LRN",
        note=(
            "The paper's two GPUs written out as two explicit streams (suffixes _a and _b): "
            "48 and 128 kernels per tower in conv1-conv2 with BatchNorm, 'same' padding, the "
            "streams concatenated before conv3 (each tower's conv3 sees all 256 maps), then "
            "towers of 192/192/128, 4096/4096 dense layers and 10 classes: 56,910,602 parameters "
            "at 224x224. Mathematically it is the grouped paper network with BatchNorm."
        ),
        convs=tuple(dataclasses.replace(c, padding="same") for c in PAPER_CONVS),
        input_size=224,
        num_classes=10,
        norm="batchnorm",
        groups=True,
        towers=2,
        published={"total_params": 56_910_602},
    )


@register_variant("cifar-bn")
def cifar_bn() -> Arch:
    return Arch(
        title="AlexNet for CIFAR-10 (Keras, BatchNorm)",
        source="The Keras CIFAR-10 Sequential AlexNet",
        note=(
            "ImageNet's AlexNet applied to 32x32 images as-is: 96 kernels of 11x11 with stride 4 "
            "and 'same' padding shrink the image to 8x8 at once, 2x2 max-pooling brings it to 1x1 "
            "by conv5, and BatchNorm follows every convolution and dense layer (4096/4096/1000, "
            "dropout 0.4, then 10 outputs + BatchNorm + softmax): 25,730,506 parameters. It "
            "reached 64.8% on CIFAR-10; most of its capacity is in dense layers fed by a 1x1 map."
        ),
        convs=(
            Conv(96, 11, stride=4, padding="same", norm=True, pool=True),
            Conv(256, 5, padding="same", norm=True, pool=True),
            Conv(384, 3, padding="same", norm=True),
            Conv(384, 3, padding="same", norm=True),
            Conv(256, 3, padding="same", norm=True, pool=True),
        ),
        fcs=(4096, 4096, 1000),
        input_size=32,
        num_classes=10,
        norm="batchnorm",
        overlapping_pool=False,
        pool_padding="same",
        dropout=0.4,
        fc_norm=True,
        published={"total_params": 25_730_506},
    )


@register_variant("torchvision")
def torchvision() -> Arch:
    return Arch(
        title="AlexNet (torchvision)",
        source="torchvision.models.alexnet, after Krizhevsky: One weird trick for parallelizing "
        "convolutional neural networks, 2014",
        note=(
            "The single-GPU AlexNet of 'One weird trick': 64/192/384/256/256 kernels, 2-pixel "
            "padding on conv1 so that 224x224 works, no LRN, no groups, and an adaptive average "
            "pool to 6x6 before the classifier so any input size above 63 fits; dropout comes "
            "before fc6 and fc7. 61,100,840 parameters, 714 million multiply-accumulates."
        ),
        convs=(
            Conv(64, 11, stride=4, padding=2, pool=True),
            Conv(192, 5, padding=2, groups=2, pool=True),
            Conv(384, 3, padding=1),
            Conv(256, 3, padding=1, groups=2),
            Conv(256, 3, padding=1, groups=2, pool=True),
        ),
        input_size=224,
        norm="none",
        dropout_before_fc=True,
        adaptive_pool=6,
        published={"total_params": 61_100_840, "total_macs": 714_188_480},
    )


@register_variant("compact")
def compact() -> Arch:
    return Arch(
        title="Compact AlexNet for 32x32 (ours)",
        source="AlexNet Explorer: AlexNet's five-conv, three-dense shape sized for CIFAR-10 on a CPU",
        note=(
            "AlexNet's layout scaled to 32x32 images and a laptop CPU: 5x5 kernels with stride 1 "
            "in conv1-conv2 (an 11x11/4 kernel would throw away most of a 32-pixel image), "
            "torchvision's 64/192/384/256/256 widths times a width multiplier (0.5 by default), "
            "BatchNorm after every convolution for fast, stable training, overlapping 3x3/2 "
            "pooling after conv1, conv2 and conv5, and 512-wide fc6/fc7."
        ),
        convs=(
            Conv(64, 5, norm=True, pool=True),
            Conv(192, 5, groups=2, norm=True, pool=True),
            Conv(384, 3, norm=True),
            Conv(256, 3, groups=2, norm=True),
            Conv(256, 3, groups=2, norm=True, pool=True),
        ),
        fcs=(1024, 1024),
        input_size=32,
        num_classes=10,
        norm="batchnorm",
        pool_padding="same",
        dropout=0.3,
        width=0.5,
    )


@register_variant("compact-hires")
def compact_hires() -> Arch:
    return dataclasses.replace(
        compact(),
        title="Compact AlexNet, high resolution (ours)",
        source="AlexNet Explorer: the compact network with its convolutions at higher resolution",
        note=(
            "The compact network rearranged to look at more of each 32x32 image: 3x3 kernels "
            "throughout, conv1 and conv2 both at the full 32x32 and AlexNet's overlapping 3x3/2 "
            "pooling only after conv2-conv5, so the widths double as the maps halve (64/128/256/512/512 "
            "times a width multiplier, 0.5 by default) and fc6 reads a 2x2 map. BatchNorm after every "
            "convolution, 1024-wide fc6/fc7 times the width, dropout 0.3. On CIFAR-10 it learns more "
            "per epoch than compact at width 0.75 from half the arithmetic (docs/BENCHMARKS.md)."
        ),
        convs=(
            Conv(64, 3, norm=True),
            Conv(128, 3, norm=True, pool=True),
            Conv(256, 3, norm=True, pool=True),
            Conv(512, 3, norm=True, pool=True),
            Conv(512, 3, norm=True, pool=True),
        ),
    )


# --- Switches and validation ---------------------------------------------------------------


def get_arch(name: str, **switches) -> Arch:
    """The `Arch` of variant `name` with `switches` applied and checked.

    A switch given as None keeps the variant's default. The `DETAILS` (`lrn`, an `LRN` or its
    mapping, and `pool_padding`) are accepted too: what a converted network needs.
    """
    if name not in _REGISTRY:
        raise ValueError(f"Unknown variant {name!r}. Available: {', '.join(_REGISTRY)}")
    arch = _REGISTRY[name]()
    allowed = set(arch.switches())
    unknown = sorted(set(switches) - allowed - set(DETAILS))
    if unknown:
        raise ValueError(f"Unknown switch {unknown[0]!r}. Available: {', '.join(sorted(allowed))}")
    changes = {k: v for k, v in switches.items() if v is not None}
    if "lrn" in changes:
        changes["lrn"] = LRN.from_value(changes["lrn"])
    arch = dataclasses.replace(arch, **changes)
    _validate(name, arch)
    return arch


def _check_int(label, value, low, high=None):
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{label} must be a whole number, got {value!r}")
    if value < low:
        raise ValueError(f"{label} must be >= {low}, got {value}")
    if high is not None and value > high:
        raise ValueError(f"{label} must be <= {high}, got {value}")


def _validate(name: str, arch: Arch) -> None:
    _check_int("num_classes", arch.num_classes, 2, 100_000)
    _check_int("input_size", arch.input_size, 1, MAX_INPUT_SIZE)
    if arch.norm not in NORMS:
        raise ValueError(f"norm must be one of {', '.join(NORMS)}, got {arch.norm!r}")
    if not isinstance(arch.dropout, (int, float)) or not 0.0 <= arch.dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {arch.dropout!r}")
    if not isinstance(arch.width, (int, float)) or not 0.05 <= arch.width <= 4.0:
        raise ValueError(f"width must be between 0.05 and 4, got {arch.width!r}")
    if arch.pool_padding not in POOL_PADDINGS:
        raise ValueError(f"pool_padding must be one of {', '.join(POOL_PADDINGS)}, got {arch.pool_padding!r}")
    if arch.activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, got {arch.activation!r}")
    if arch.activation != "relu" and arch.pool_padding == "ceil":
        raise ValueError(f"activation {arch.activation!r} cannot be used with pool_padding 'ceil' (Caffe's rounded-up "
                         "pooling): that pooling pads the map with zeros, which is exact only when every value "
                         "pooled is >= 0, as after a ReLU, and tanh's outputs go down to -1; use relu, or "
                         "pool_padding 'valid'")
    _validate_remove_conv(name, arch)
    _validate_lrn(arch.lrn)
    minimum = min_input_size(arch)
    if arch.input_size < minimum:
        why = ("its layers shrink a smaller image to nothing" if minimum > MIN_INPUT_SIZE else
               f"the app classifies no image under {MIN_INPUT_SIZE}x{MIN_INPUT_SIZE} pixels")
        raise ValueError(f"input_size must be >= {minimum} for {name!r}, got {arch.input_size}: {why}")


def _validate_remove_conv(name: str, arch: Arch) -> None:
    removed = arch.remove_conv
    if isinstance(removed, bool) or removed not in REMOVE_CONV:
        raise ValueError(f"remove_conv must be 0 (keep all five convolutions) or 2, 3 or 4 (the middle convolution "
                         f"to remove), got {removed!r}")
    if removed and len(arch.convs) != 5:
        raise ValueError(f"remove_conv takes a middle convolution out of a five-convolution network, and {name!r} "
                         f"has {len(arch.convs)}; use remove_conv 0")
    if removed:
        conv = arch.convs[removed - 1]
        if conv.stride != 1 or conv.padding not in ("same", (conv.kernel - 1) // 2) or conv.kernel % 2 == 0:
            # What makes the removal clean: the layers after it see maps of the sizes they always saw.
            raise ValueError(f"remove_conv {removed} cannot be used with {name!r}: its conv{removed} changes the "
                             "size of its map, so removing it would change every later layer too")


def _validate_lrn(lrn: LRN) -> None:
    if isinstance(lrn.n, bool) or not isinstance(lrn.n, int) or lrn.n < 1 or lrn.n % 2 == 0 or lrn.n > 63:
        raise ValueError(f"the LRN's n must be an odd whole number from 1 to 63 (a window centred on each map), "
                         f"got {lrn.n!r}")
    for label, value, low in (("k", lrn.k, 0.0), ("alpha", lrn.alpha, 0.0), ("beta", lrn.beta, 0.0)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < low:
            raise ValueError(f"the LRN's {label} must be a number >= {low:g}, got {value!r}")
    if lrn.k <= 0:
        # k > 0 keeps the denominator positive: an all-zero window stays 0 (not 0/0), and every
        # output keeps the sign of its input, which "ceil" pooling relies on.
        raise ValueError(f"the LRN's k must be above 0, got {lrn.k!r}")


def scaled(filters: int, width: float) -> int:
    """Width-multiplied channel count, rounded to a multiple of 8 (and of 2 towers/groups)."""
    if width == 1.0:
        return filters
    return max(8, int(round(filters * width / 8)) * 8)


def _out_size(size: int, kernel: int, stride: int, padding: Padding) -> int:
    if padding == "same":
        return math.ceil(size / stride)
    if padding == "ceil":
        if size < kernel:
            return 0
        out = -(-(size - kernel) // stride) + 1
        return out - 1 if (out - 1) * stride >= size else out  # no window starts past the map (Caffe)
    if isinstance(padding, int):
        size += 2 * padding
    return (size - kernel) // stride + 1 if size >= kernel else 0


def spatial_sizes(arch: Arch, input_size: int | None = None) -> list[int]:
    """Feature-map side after each conv (and its pooling); 0 marks a map that vanished. A removed
    convolution (remove_conv) has an entry too: the side after its pooling, which stays."""
    size = arch.input_size if input_size is None else input_size
    pool = 3 if arch.overlapping_pool else 2
    sizes = []
    for i, conv in enumerate(arch.convs, start=1):
        if i != arch.remove_conv:
            size = _out_size(size, conv.kernel, conv.stride, conv.padding)
        if conv.pool and size > 0:
            size = _out_size(size, pool, 2, arch.pool_padding)
        sizes.append(size)
        if size <= 0:
            break
    return sizes


def min_input_size(arch: Arch) -> int:
    """The smallest input side this network takes: every conv and pooling layer left with a map
    of at least one pixel, and never under MIN_INPUT_SIZE (what the app can classify)."""
    for size in range(MIN_INPUT_SIZE, MAX_INPUT_SIZE + 1):
        sizes = spatial_sizes(arch, size)
        if len(sizes) == len(arch.convs) and sizes[-1] > 0:
            return size
    return MAX_INPUT_SIZE + 1


def ceil_padding(size: int, pool: int, stride: int) -> int:
    """Zero pixels to add after a map of side `size` so that a "valid" pooling gives Caffe's
    rounded-up output: ceil((size - pool) / stride) + 1 windows, the last one allowed to run past
    the edge (but never to start past it)."""
    out = _out_size(size, pool, stride, "ceil")
    return max(0, (out - 1) * stride + pool - size) if out > 0 else 0


# --- The builder ---------------------------------------------------------------------------


def build_model(name: str, num_classes: int | None = None, input_size: int | None = None, to_fill: bool = False,
                **switches):
    """Build variant `name` as a functional `keras.Model` (weights freshly initialised). `to_fill`:
    every weight starts at zero, for a model whose weights are copied in next (a conversion):
    drawing random initial values takes about three times a layer's memory while they are drawn
    (438 MiB for fc6's 144 MiB kernel), zeros take the kernel's own."""
    arch = get_arch(name, num_classes=num_classes, input_size=input_size, **switches)
    return build_from_arch(arch, name, to_fill)


def build_from_arch(arch: Arch, name: str = "alexnet", to_fill: bool = False):
    import keras

    initial = {"kernel_initializer": "zeros"} if to_fill else {}

    from alexnet_core.models.layers import AdaptiveAveragePooling2D, BatchNormalization, LocalResponseNormalization

    L = keras.layers
    inputs = keras.Input((arch.input_size, arch.input_size, 3), name="image")
    pool_size = 3 if arch.overlapping_pool else 2

    def activation(x, n: int, suffix: str = ""):
        """The nonlinearity after conv n or fc n, named by what it computes: relu{n} or tanh{n}."""
        if arch.activation == "relu":
            return L.ReLU(name=f"relu{n}{suffix}")(x)
        return L.Activation(arch.activation, name=f"{arch.activation}{n}{suffix}")(x)

    def conv_block(x, conv: Conv, i: int, filters: int, groups: int, suffix: str):
        if isinstance(conv.padding, int):
            x = L.ZeroPadding2D(conv.padding, name=f"pad{i}{suffix}")(x)
            padding = "valid"
        else:
            padding = conv.padding
        x = L.Conv2D(filters, conv.kernel, strides=conv.stride, padding=padding, groups=groups,
                     name=f"conv{i}{suffix}", **initial)(x)
        if conv.norm and arch.norm == "batchnorm":
            x = BatchNormalization(name=f"bn{i}{suffix}")(x)
        x = activation(x, i, suffix)
        if conv.norm and arch.norm == "lrn":
            x = LocalResponseNormalization(**arch.lrn.layer_config(), name=f"lrn{i}{suffix}")(x)
        return pool_block(x, conv, i, suffix)

    def pool_block(x, conv: Conv, i: int, suffix: str):
        if not conv.pool:
            return x
        padding = arch.pool_padding
        if padding == "ceil":
            # Caffe's rounded-up pooling as zero padding at the end, then "valid" pooling. Exact
            # because every value pooled here is >= 0 (a ReLU, an LRN with k > 0 of a ReLU's output,
            # or the pooling of those, comes right before every pool this builder makes; _validate
            # refuses tanh with "ceil"), so a padded zero never beats a real pixel, and every window
            # holds one (none starts past the map).
            rows, cols = (ceil_padding(int(side), pool_size, 2) for side in x.shape[1:3])
            if rows or cols:
                x = L.ZeroPadding2D(((0, rows), (0, cols)), name=f"ceilpad{i}{suffix}")(x)
            padding = "valid"
        return L.MaxPooling2D(pool_size, strides=2, padding=padding, name=f"pool{i}{suffix}")(x)

    streams = [inputs]
    for i, conv in enumerate(arch.convs, start=1):
        if i == arch.remove_conv:
            # The paper's section 6.1: the convolution goes with its normalisation and activation,
            # its max-pooling (if it had one) stays, so every later map keeps its size (_validate
            # allows only a convolution that keeps its map's size) and the layers after it differ
            # only in the maps they read. Each tower keeps its own stream.
            suffixes = [""] if len(streams) == 1 else [f"_{chr(ord('a') + t)}" for t in range(len(streams))]
            streams = [pool_block(x, conv, i, s) for x, s in zip(streams, suffixes)]
            continue
        filters = scaled(conv.filters, arch.width)
        groups = conv.groups if arch.groups else 1
        if arch.towers == 1:
            streams = [conv_block(streams[0], conv, i, filters, groups, "")]
            continue
        # Two explicit towers: a grouped layer reads its own tower, an ungrouped one both.
        if len(streams) == 1:
            sources = streams * arch.towers
        elif groups == 1:
            sources = [L.Concatenate(name=f"concat{i}")(streams)] * arch.towers
        else:
            sources = streams
        suffixes = [f"_{chr(ord('a') + t)}" for t in range(arch.towers)]
        streams = [conv_block(x, conv, i, filters // arch.towers, 1, s) for x, s in zip(sources, suffixes)]

    x = L.Concatenate(name="concat_towers")(streams) if len(streams) > 1 else streams[0]
    if arch.adaptive_pool:
        x = AdaptiveAveragePooling2D(arch.adaptive_pool, name="avgpool")(x)
    x = L.Flatten(name="flatten")(x)
    first_fc = len(arch.convs) + 1  # fc6 after five convolutions, one of them removed or not
    for j, units in enumerate(arch.fcs):
        n = first_fc + j
        if arch.dropout_before_fc and arch.dropout > 0:
            x = L.Dropout(arch.dropout, name=f"drop{n}")(x)
        x = L.Dense(scaled(units, arch.width), name=f"fc{n}", **initial)(x)
        if arch.fc_norm and arch.norm == "batchnorm":
            x = BatchNormalization(name=f"bn{n}")(x)
        x = activation(x, n)
        if not arch.dropout_before_fc and arch.dropout > 0:
            x = L.Dropout(arch.dropout, name=f"drop{n}")(x)
    n = first_fc + len(arch.fcs)
    x = L.Dense(arch.num_classes, name=f"fc{n}", **initial)(x)
    if arch.fc_norm and arch.norm == "batchnorm":
        x = BatchNormalization(name=f"bn{n}")(x)
    # Softmax in float32 so mixed-precision training stays numerically safe.
    outputs = L.Activation("softmax", dtype="float32", name="predictions")(x)
    return keras.Model(inputs, outputs, name=name.replace("-", "_"))
