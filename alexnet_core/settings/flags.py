"""The command line's settings flags, written from the settings' descriptions (config.SETTINGS).

`train` gets a flag for every training setting; `summary`, `profile` and `train` share the
network's (input size and switches). No TensorFlow.
"""

from __future__ import annotations

import argparse

from alexnet_core.settings.config import SWITCHES, Setting, each_setting


def _add(parser: argparse.ArgumentParser, described: Setting) -> None:
    options = {"help": described.help}
    if described.action == "on":
        options.update(action="store_true", default=None)
    elif described.action == "on-off":
        options.update(action=argparse.BooleanOptionalAction, default=None)
    elif described.action == "off":
        options.update(dest=described.name, action="store_false", default=None)
    else:
        options.update(type=None if described.kind is str else described.kind, choices=described.choices or None,
                       metavar=described.metavar)
    parser.add_argument(described.cli_flag, **options)


def network_settings() -> list[Setting]:
    """The settings of the network a command can set: the input size, then the switches."""
    return sorted((s for s in each_setting().values() if s.network), key=lambda s: s.name in SWITCHES)


def add_network_flags(parser: argparse.ArgumentParser, num_classes: bool = True) -> None:
    if num_classes:  # training takes the number of classes from its data
        parser.add_argument("--num-classes", type=int, help="number of output classes")
    for described in network_settings():
        _add(parser, described)


def add_train_flags(parser: argparse.ArgumentParser) -> None:
    """A flag for every training setting but the network's (add_network_flags); --recipe first,
    since the others override it."""
    settings = [s for s in each_setting().values() if not s.network]
    for described in sorted(settings, key=lambda s: s.name != "recipe"):
        _add(parser, described)


def network_from_args(args) -> dict:
    """{switch: value or None} of the network flags, with num_classes and input_size."""
    return {"num_classes": getattr(args, "num_classes", None),
            **{s.name: getattr(args, s.name) for s in network_settings()}}


def train_settings_from_args(args) -> tuple[dict, dict]:
    """(TrainConfig fields, switches) given on the command line, each None where no flag gave it."""
    fields = {path: getattr(args, path) for path in each_setting() if "." not in path and path != "recipe"}
    switches = {name: getattr(args, name) for name in SWITCHES}
    return fields, switches
