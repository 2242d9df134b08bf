"""Command line: `python -m alexnet_core COMMAND ...` (contract in DESIGN.md).

Results go to stdout (`--json`: exactly one JSON document), logs to stderr.
Exit codes: 0 success, 2 bad usage or bad input (a message, no traceback).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


class UsageError(Exception):
    """Bad usage or bad input: reported on stderr with exit code 2."""


def _switch_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--num-classes", type=int, help="number of output classes")
    parser.add_argument("--input-size", type=int, help="input image side in pixels")
    parser.add_argument("--norm", choices=["lrn", "batchnorm", "none"], help="normalisation layers")
    parser.add_argument("--groups", action=argparse.BooleanOptionalAction, default=None,
                        help="the paper's two-GPU grouped convolutions on conv2/4/5")
    parser.add_argument("--overlapping-pool", action=argparse.BooleanOptionalAction, default=None,
                        help="3x3 stride-2 pooling (the paper) instead of 2x2")
    parser.add_argument("--dropout", type=float, help="dropout rate of the dense layers")
    parser.add_argument("--width", type=float, help="width multiplier of every layer")


def switches_from_args(args) -> dict:
    return {
        "num_classes": args.num_classes,
        "input_size": args.input_size,
        "norm": args.norm,
        "groups": args.groups,
        "overlapping_pool": args.overlapping_pool,
        "dropout": args.dropout,
        "width": args.width,
    }


def cmd_variants(args) -> int:
    from .variants import get_arch, list_variants

    rows = []
    for name in list_variants():
        arch = get_arch(name)
        rows.append({"name": name, "title": arch.title, "input_size": arch.input_size,
                     "num_classes": arch.num_classes, "source": arch.source})
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for row in rows:
            print(f"{row['name']:<16} {row['input_size']:>4}px {row['num_classes']:>5} classes  {row['title']}")
    return 0


def cmd_summary(args) -> int:
    from .anatomy import summary
    from .variants import build_model

    try:
        model = build_model(args.variant, **switches_from_args(args))
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    doc = summary(model, args.variant)
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    print(f"{doc['variant']}: input {'x'.join(map(str, doc['input_shape']))}, {doc['num_classes']} classes")
    print(f"{'layer':<16}{'type':<28}{'output':>16}{'params':>14}{'MACs':>16}")
    for layer in doc["layers"]:
        shape = "x".join(map(str, layer["output_shape"]))
        print(f"{layer['name']:<16}{layer['type']:<28}{shape:>16}{layer['params']:>14,}{layer['macs']:>16,}")
    print(f"total params {doc['total_params']:,} (trainable {doc['trainable_params']:,}); "
          f"MACs per image {doc['total_macs']:,}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m alexnet_core",
                                     description="AlexNet Explorer on the command line.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("variants", help="list the AlexNet variants")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(func=cmd_variants)

    p = sub.add_parser("summary", help="layer table, parameters and MACs of a variant")
    p.add_argument("variant")
    _switch_args(p)
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(func=cmd_summary)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
