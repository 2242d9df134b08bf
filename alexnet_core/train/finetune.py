"""Fine-tuning: a run that starts from a trained model's layers (`init_from`).

`fine_tune_source` loads the base model (safely) and gives the run the base's network: a run
folder's or the bundled model's (its config.json), or an installed model's (its model.json: the
ImageNet models `imagenet-torchvision`, `imagenet-bvlc`, at 224 px). `copy_features` copies
(or, as a dry run, checks) the base's layers into the network the run builds: the
convolutional layers of a run's model; an installed ImageNet model's fc6 and fc7 too (its
ImageNet features, as AlexNet is fine-tuned in practice), so only the last layer is new.
`run_preprocessing` is what the run records, so its model classifies with its base's recipe.
training.check_fine_tune uses these before a run folder exists; the loop uses them when a
fine-tuning run starts. TensorFlow: imported lazily (by the model loader).
"""

from __future__ import annotations

# Imports inside functions are deliberate: TensorFlow and Keras, and the modules that reach them,
# load on first use, so importing this module (the app's pages, the command line) stays light.
import dataclasses
import math

from alexnet_core.models.variants import list_variants
from alexnet_core.settings.config import ConfigError, TrainConfig
from alexnet_core.store import fileio, layout, model_home

# What training standardises every image with (preprocess.MEAN/STD, as data.make_dataset and the
# training step apply them): a base recorded with another standardisation (the BVLC model's
# Caffe mean subtraction on 0..255 pixels) would be fed inputs it never saw.
TRAINING_MEAN = (0.485, 0.456, 0.406)
TRAINING_STD = (0.229, 0.224, 0.225)


@dataclasses.dataclass
class Base:
    """A fine-tuning base: the Keras model, whether its hidden dense layers (fc6, fc7) are kept
    too, and its recorded preprocessing."""

    model: object
    keep_dense: bool = False
    preprocessing: dict = dataclasses.field(default_factory=dict)


def installed_base(name: str) -> tuple[dict | None, str]:
    """(record, '') of installed model `name` if a run can start from it, else (None, why not):
    not installed, its network not one of the app's variants, or preprocessing training cannot
    give it. No TensorFlow: the Your classes page asks before it offers a base."""
    if not isinstance(name, str) or model_home.find(name) is None:
        return None, f"{name!r} is not installed"
    record = model_home.read_record(name)
    variant = record.get("variant")
    if not isinstance(variant, str) or variant not in list_variants():
        return None, (f"{name!r} is not one of the app's AlexNet variants (its record names none), so no run "
                      "can rebuild its network")
    if not _same_standardisation(record.get("preprocessing")):
        return None, (f"{name!r} takes its pixels standardised another way than training gives them "
                      "(e.g. the BVLC model's Caffe mean subtraction on 0..255 pixels): its features would "
                      "see inputs they never saw. Start from imagenet-torchvision instead")
    return record, ""


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


def _same_standardisation(preprocessing) -> bool:
    if not isinstance(preprocessing, dict):
        return True  # nothing recorded: the app's own (preprocess.describe)
    try:
        mean, std = [float(v) for v in preprocessing["mean"]], [float(v) for v in preprocessing["std"]]
    except (KeyError, TypeError, ValueError):
        return True
    return len(mean) == len(std) == 3 and all(math.isclose(a, b, abs_tol=1e-6) for a, b in
                                              zip(mean + std, TRAINING_MEAN + TRAINING_STD))


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
    """The preprocessing a run records (config.json), so its model classifies as it should: an
    installed base's own at the run's input size (an ImageNet model's recipe: shorter side to
    256, centre crop 224), else the app's (preprocess.describe). A resumed run keeps what it
    recorded when it started (its base may have been removed since)."""
    from alexnet_core.inputs.preprocess import describe, has_recipe, recorded

    if config.init_from and model_home.find(config.init_from) is not None:
        record = model_home.read_record(config.init_from)
        if isinstance(record.get("preprocessing"), dict):
            return {**recorded(record, int(input_size)), "input_size": int(input_size)}
    if config.init_from and run_dir is not None:
        before = recorded(fileio.read_object(run_dir / layout.CONFIG), int(input_size))
        if has_recipe(before):
            return before
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
