"""Fine-tuning: a run that starts from a trained model's convolutional layers (`init_from`).

`fine_tune_source` loads the base model (safely) and gives the run the base's network;
`copy_features` copies (or, as a dry run, checks) the convolutional layers into the network the
run builds. training.check_fine_tune uses both before a run folder exists; the loop uses them
when a fine-tuning run starts. TensorFlow: imported lazily (by the model loader).
"""

from __future__ import annotations

# Imports inside functions are deliberate: TensorFlow and Keras, and the modules that reach them,
# load on first use, so importing this module (the app's pages, the command line) stays light.
import dataclasses

from alexnet_core.settings.config import ConfigError, TrainConfig
from alexnet_core.store import fileio, layout


def fine_tune_source(config: TrainConfig):
    """(config with the base model's variant, switches and input size; the base Keras model) for
    a run that starts from a trained model's convolutional layers (`init_from`). The new head's
    dropout is the run's own when it sets one."""

    from alexnet_core.predict.inference import ModelLoadError, load_model

    try:
        base = load_model(config.init_from)
    except ModelLoadError as exc:
        raise ConfigError(f"Cannot fine-tune from {config.init_from!r}: {exc}") from exc
    record = fileio.read_object(base.run_dir / layout.CONFIG) if base.run_dir else {}
    if not isinstance(record.get("variant"), str):
        raise ConfigError(f"Cannot fine-tune from {config.init_from!r}: its settings are not recorded. Give a run "
                          "folder or 'demo'.")
    switches = dict(record["switches"]) if isinstance(record.get("switches"), dict) else {}
    if "dropout" in config.switches:  # only the new dense layers drop out
        switches["dropout"] = config.switches["dropout"]
    size = record.get("input_size") if isinstance(record.get("input_size"), int) else None
    try:
        tuned = dataclasses.replace(config, variant=record["variant"], switches=switches, input_size=size)
    except ConfigError as exc:
        raise ConfigError(f"Cannot fine-tune from {config.init_from!r}: its recorded network is not usable ({exc})") \
            from exc
    return tuned, base.model


def copy_features(source, target, freeze: bool = False, dry_run: bool = False) -> list[str]:
    """Copy the weights of `target`'s convolutional part (every layer before the flatten) from
    the layers of the same name in `source`; freeze them if asked. Returns the names copied.
    `dry_run`: only check that every one of them can be copied."""
    kept = []
    for layer in target.layers:
        if layer.name in ("flatten", "avgpool"):
            break
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
