"""Fine-tuning: a run that starts from a trained model's layers (`init_from`).

`fine_tune_source` loads the base model (safely) and gives the run the base's network: a run
folder's or the bundled model's (its config.json), or an installed model's (its model.json: the
ImageNet models `imagenet-torchvision`, `imagenet-bvlc`, at 224 px). `copy_features` copies
(or, as a dry run, checks) the base's layers into the network the run builds: the
convolutional layers of a run's model; an installed ImageNet model's fc6 and fc7 too (its
ImageNet features, as AlexNet is fine-tuned in practice), so only the last layer is new.
An installed model's network is rebuilt with the details its install recorded (`arch` in its
model.json: the BVLC model's Caffe pooling and LRN constants), so its layers fit exactly.
`run_preprocessing` is what the run records, and what training standardises every image with
(the loop reads it back), so its model trains and classifies with its base's recipe: the BVLC
model's Caffe mean subtraction on 0..255 pixels, torchvision's ImageNet mean and std.
lifecycle.check_fine_tune uses these before a run folder exists; the loop uses them when a
fine-tuning run starts. TensorFlow: imported lazily (by the model loader).
"""

from __future__ import annotations

# Imports inside functions are deliberate: TensorFlow and Keras, and the modules that reach them,
# load on first use, so importing this module (the app's pages, the command line) stays light.
import dataclasses

from alexnet_core.models.variants import DETAILS, get_arch, list_variants
from alexnet_core.settings.config import ConfigError, TrainConfig
from alexnet_core.store import fileio, layout, model_home

# Variants whose installed models are built with details besides their switches (the BVLC model:
# Caffe's rounded-up pooling and LRN constants): without the recorded `arch`, no run can rebuild them.
NEEDS_DETAILS = ("paper",)


@dataclasses.dataclass
class Base:
    """A fine-tuning base: the Keras model, whether its hidden dense layers (fc6, fc7) are kept
    too, and its recorded preprocessing."""

    model: object
    keep_dense: bool = False
    preprocessing: dict = dataclasses.field(default_factory=dict)


def installed_base(name: str) -> tuple[dict | None, str]:
    """(record, '') of installed model `name` if a run can start from it, else (None, why not):
    not installed, its network not one of the app's variants, or its network's details (the
    BVLC model's pooling and LRN) not recorded. No TensorFlow: the Your classes page asks
    before it offers a base."""
    if not isinstance(name, str) or model_home.find(name) is None:
        return None, f"{name!r} is not installed"
    record = model_home.read_record(name)
    variant = record.get("variant")
    if not isinstance(variant, str) or variant not in list_variants():
        return None, (f"{name!r} is not one of the app's AlexNet variants (its record names none), so no run "
                      "can rebuild its network")
    details, why = recorded_details(record)
    if details is None:
        return None, f"{name!r} {why}"
    return record, ""


def recorded_details(record: dict) -> tuple[dict | None, str]:
    """({lrn, pool_padding} an installed model's network was built with, as its install recorded
    them in `arch`; {} for a variant built without any), or (None, why not usable)."""
    variant = record.get("variant")
    arch = record.get("arch")
    if not isinstance(arch, dict) or not any(key in arch for key in DETAILS):
        if variant in NEEDS_DETAILS:
            source = record.get("source") if record.get("source") in ("bvlc", "torchvision") else "bvlc"
            return None, (f"was installed before its network's details (Caffe's pooling and LRN constants) were "
                          f"recorded, so no run can rebuild it exactly. Install it again (`python -m alexnet_core "
                          f"pretrained install {source} --file PATH`, or the Models page) and start from it then")
        return {}, ""
    details = {key: arch[key] for key in DETAILS if key in arch}
    try:
        get_arch(variant, input_size=record.get("preprocessing", {}).get("input_size")
                 if isinstance(record.get("preprocessing"), dict) else None, **details)
    except (TypeError, ValueError, AttributeError) as exc:
        return None, f"records a network its variant cannot build ({str(exc)[:200]}): install it again"
    return details, ""


def imagenet_bases() -> tuple[list[str], dict[str, str]]:
    """([installed ImageNet models a run can start from], {installed one it cannot: why}), by name."""
    bases, unusable = [], {}
    for row in model_home.installed():
        if row["record"].get("kind") != "pretrained":
            continue
        record, why = installed_base(row["name"])
        if record is None:
            unusable[row["name"]] = why
        else:
            bases.append(row["name"])
    return bases, unusable


def fine_tune_source(config: TrainConfig):
    """(config with the base model's variant, switches and input size; the Base) for a run that
    starts from a trained model's layers (`init_from`). The new head's dropout is the run's own
    when it sets one."""

    from alexnet_core.predict.inference import ModelLoadError, load_model

    installed = model_home.find(config.init_from) is not None if isinstance(config.init_from, str) else False
    if installed:
        record, why = installed_base(config.init_from)
        if record is None:
            raise ConfigError(f"Cannot fine-tune from {config.init_from!r}: {why}.")
    try:
        base = load_model(config.init_from)
    except ModelLoadError as exc:
        raise ConfigError(f"Cannot fine-tune from {config.init_from!r}: {exc}") from exc
    if not installed:
        record = fileio.read_object(base.run_dir / layout.CONFIG) if base.run_dir else {}
    if not isinstance(record.get("variant"), str):
        raise ConfigError(f"Cannot fine-tune from {config.init_from!r}: its settings are not recorded. Give a run "
                          "folder, 'demo' or an installed ImageNet model (`python -m alexnet_core pretrained`).")
    switches = dict(record["switches"]) if isinstance(record.get("switches"), dict) else {}
    if installed:  # the network as its install built it (the BVLC model: Caffe's pooling and LRN)
        switches.update(recorded_details(record)[0] or {})
    if "dropout" in config.switches:  # only the new dense layers drop out
        switches["dropout"] = config.switches["dropout"]
    size = record.get("input_size") if isinstance(record.get("input_size"), int) else None
    if installed:
        size = base.input_size  # the network the weights were converted into
    try:
        tuned = dataclasses.replace(config, variant=record["variant"], switches=switches, input_size=size)
    except ConfigError as exc:
        raise ConfigError(f"Cannot fine-tune from {config.init_from!r}: its recorded network is not usable ({exc})") \
            from exc
    return tuned, Base(base.model, keep_dense=installed, preprocessing=dict(base.preprocessing))


def run_preprocessing(config: TrainConfig, input_size: int, run_dir=None) -> dict:
    """The preprocessing a run records (config.json) and trains with (its mean and std standardise
    every training image), so its model classifies as it was trained: an installed base's own at
    the run's input size (an ImageNet model's recipe: torchvision's shorter side to 256, centre
    crop 224 and ImageNet mean/std; the BVLC model's 256x256 warp and Caffe's mean subtraction
    on 0..255 pixels), else the app's (preprocess.describe). A resumed run keeps what it
    recorded when it started (its base may have been removed or reinstalled since)."""
    from alexnet_core.inputs.preprocess import describe, has_recipe, recorded

    if config.init_from and run_dir is not None:
        before = recorded(fileio.read_object(run_dir / layout.CONFIG), int(input_size))
        if has_recipe(before):
            return before
    if config.init_from and model_home.find(config.init_from) is not None:
        record = model_home.read_record(config.init_from)
        if isinstance(record.get("preprocessing"), dict):
            return {**recorded(record, int(input_size)), "input_size": int(input_size)}
    return describe(input_size)


def _kept_layers(target, keep_dense: bool) -> list:
    """The layers of `target` that come from the base: every layer before the flatten (the
    convolutional part), and with `keep_dense` the dense layers after it but the last."""
    names = [layer.name for layer in target.layers]
    end = next((i for i, n in enumerate(names) if n in ("flatten", "avgpool")), len(names))
    kept = list(target.layers[:end])
    if keep_dense:
        dense = [layer for layer in target.layers[end:] if layer.weights]
        kept += dense[:-1]  # fc6 and fc7 (and their normalisation); the classifier is new
    return kept


def copy_features(source, target, freeze: bool = False, dry_run: bool = False) -> list[str]:
    """Copy the weights of `target`'s layers from the layers of the same name in `source` (a
    Base, or a bare Keras model: its convolutional part): the convolutional part (every layer
    before the flatten), and an installed ImageNet base's fc6 and fc7; freeze them if asked.
    Returns the names copied. `dry_run`: only check that every one of them can be copied."""
    keep_dense = isinstance(source, Base) and source.keep_dense
    source = source.model if isinstance(source, Base) else source
    kept = []
    for layer in _kept_layers(target, keep_dense):
        if not layer.weights:
            continue
        try:
            weights = source.get_layer(layer.name).get_weights()
        except ValueError:
            raise ConfigError(f"The base model has no layer {layer.name!r} to fine-tune from") from None
        if [w.shape for w in weights] != [tuple(w.shape) for w in layer.weights]:
            raise ConfigError(f"The base model's {layer.name} has another shape: fine-tuning keeps its network")
        if dry_run:
            kept.append(layer.name)
            continue
        layer.set_weights(weights)
        layer.trainable = not freeze
        kept.append(layer.name)
    return kept
