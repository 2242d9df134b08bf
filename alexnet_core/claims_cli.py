"""The `claims` command: the paper's claims, their experiments and verdicts (analysis/claims.py).

    claims [--json|--markdown]             every claim with the paper's figure, ours and the verdict
    claims run NAME [--size cpu|gpu] ...   queue the experiment's missing runs, with the estimate
    claims verdict NAME [--json]           one claim's verdict from the runs that exist
    claims bundle --runs-dir DIR           ship the finished runs of DIR as the bundled results

`--json` prints one JSON document: `claims` a list of the objects `claims verdict` prints. A
claim that does not exist, or an experiment that cannot be set up, exits 2 with a message.
"""

from __future__ import annotations

# The claims module reads run files only (no TensorFlow); `claims run` checks the data like a Start.
import argparse
import json
import sys

from alexnet_core import exits
from alexnet_core.errors import AlexNetError

MAX_SEEDS = 20


def _seeds(text: str) -> int:
    from alexnet_core.analysis.claims import MIN_SEEDS

    try:
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a whole number, got {text!r}") from None
    if not MIN_SEEDS <= count <= MAX_SEEDS:
        raise argparse.ArgumentTypeError(f"from {MIN_SEEDS} (the fewest a verdict can use) to {MAX_SEEDS}, "
                                         f"got {count}")
    return count


def _duration(seconds: float) -> str:
    minutes = seconds / 60
    if minutes < 90:
        return f"about {max(1, round(minutes))} minutes"
    return f"about {minutes / 60:.1f} hours"


def _scale(args) -> dict:
    return {"epochs": getattr(args, "epochs", None), "train_per_class": getattr(args, "train_per_class", None)}


def _source(result: dict) -> str:
    return "the bundled runs" if result["source"] == "bundled" else "your runs"


def _print_verdict(result: dict, full: bool) -> None:
    print(f"{result['number']}. {result['name']}, {result['section']}: {result['verdict']}, from {_source(result)}")
    if full:
        print(f"  \"{result['quote']}\"")
    print(f"  paper: {result['paper']}")
    print(f"  ours:  {result['ours']}")
    for part in result["parts"]:
        shown = part["ours"] if part["ours"].startswith(part["title"]) else f"{part['title']}: {part['ours']}"
        print(f"  then {shown}")
    if full:
        print(f"  measured: {result['measure']}")
        print(f"  differs from the paper: {result['differs']}")
        if result["runs"]:
            print(f"  runs ({result['seconds'] / 60:,.0f} minutes of training): {', '.join(result['runs'])}")
        if result["yours"]["pending"]:
            print(f"  your runs still to come: {', '.join(result['yours']['pending'])}")


def _list(args) -> int:
    from alexnet_core.analysis import claims

    results = claims.claims_json(args.runs_dir)
    if args.markdown:
        print(claims.markdown(results))
        return exits.OK
    if args.json:
        print(json.dumps(results))
        return exits.OK
    for result in results:
        _print_verdict(result, full=False)
    print("one claim in full: python -m alexnet_core claims verdict NAME; its experiment: claims run NAME",
          file=sys.stderr)
    return exits.OK


def _verdict(args) -> int:
    from alexnet_core.analysis import claims

    result = claims.verdict(args.name, args.runs_dir, size=args.size, data=args.data, **_scale(args))
    if args.json:
        print(json.dumps(result))
    else:
        _print_verdict(result, full=True)
    return exits.OK


def _run(args) -> int:
    from alexnet_core.analysis import claims
    from alexnet_core.train import queue

    seeds = tuple(range(args.seeds))
    scale = _scale(args)
    estimate = claims.estimate_seconds(args.name, args.size, args.runs_dir, data=args.data, seeds=seeds, **scale)
    planned = len(claims.experiment_configs(args.name, args.size, args.data, seeds, **scale))
    queued = claims.queue_missing(args.name, args.size, args.data, args.runs_dir, seeds, **scale)
    positions = {entry["run_id"]: entry["position"] for entry in queue.entries(args.runs_dir)}
    rows = [{"run_id": path.name, "run_dir": str(path), "arm": arm.name, "seed": seed,
             "position": positions.get(path.name), "state": "queued" if path.name in positions else "started"}
            for arm, seed, path in queued]
    if args.json:
        print(json.dumps({"name": args.name, "size": args.size, "queued": rows, "runs": planned,
                          "existing": planned - len(rows), "estimate": estimate}))
        return exits.OK
    if not rows:
        print(f"every run of claim {args.name}'s experiment is finished, queued or training: "
              f"python -m alexnet_core claims verdict {args.name}")
        return exits.OK
    for row in rows:
        where = f"position {row['position']} in the queue" if row["position"] else "started now"
        print(f"{row['run_id']}: {row['arm']}, seed {row['seed']}: {where}")
    time = (f"{_duration(estimate['seconds'])} of training ({estimate['measured']})" if estimate["seconds"] else
            f"time unknown: {estimate['measured']}")
    print(f"queued {len(rows)} of the experiment's {planned} runs ({planned - len(rows)} already there): {time}. "
          f"Watch them with `python -m alexnet_core queue`; the verdict: claims verdict {args.name}")
    return exits.OK


def _bundle(args) -> int:
    from alexnet_core.analysis import claims

    shipped = claims.bundle(args.runs_dir, args.out, docs=args.docs)
    if args.json:
        print(json.dumps(shipped))
        return exits.OK
    print(f"{len(shipped['runs'])} runs ({shipped['bytes'] / 2**20:.1f} MiB) in {shipped['out']}; verdicts in "
          f"{shipped['verdicts']}" + (f" and {shipped['docs']}" if shipped["docs"] else ""))
    for result in shipped["claims"]:
        _print_verdict(result, full=False)
    return exits.OK


def run(args) -> int:
    """`claims`, `claims run`, `claims verdict`, `claims bundle`: exit 2 with the message for what cannot be
    done."""
    action = {None: _list, "run": _run, "verdict": _verdict, "bundle": _bundle}[args.action]
    try:
        return action(args)
    except AlexNetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exits.USAGE


def _add_experiment_flags(parser) -> None:
    from alexnet_core.analysis.claims import SIZES

    parser.add_argument("--size", choices=SIZES, default="cpu",
                        help="cpu: CIFAR-10 and the compact network, sized for this machine (default); gpu: the "
                             "paper's network on your ImageNet-layout folder (--data)")
    parser.add_argument("--data", metavar="SOURCE", help="the data: required with --size gpu (PATH/train/<class>/* "
                                                         "and PATH/val/<class>/*); default for cpu: cifar10")
    parser.add_argument("--epochs", type=int, metavar="N", help="epochs of every run (default: the size's)")
    parser.add_argument("--train-per-class", type=int, metavar="N",
                        help="train on the first N images of each class (default: the size's)")


def _add_common_flags(parser) -> None:
    # given before the action or after it: an action's flag left out keeps the one before it
    parser.add_argument("--runs-dir", metavar="DIR", default=argparse.SUPPRESS,
                        help="the runs folder (default $ALEXNET_RUNS_DIR, else ./runs)")
    parser.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print one JSON document")


def add_parser(subparsers) -> None:
    from alexnet_core.analysis.claims import CLAIMS

    p = subparsers.add_parser("claims", help="the paper's claims as experiments with measured verdicts",
                              description="Without an action: every claim of the 2012 paper we test, with the "
                                          "paper's figure, ours and the verdict (from your runs, else the bundled "
                                          "ones).")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.add_argument("--markdown", action="store_true", help="print the verdicts as docs/CLAIMS.md shows them")
    p.add_argument("--runs-dir", metavar="DIR", help="the runs folder (default $ALEXNET_RUNS_DIR, else ./runs)")
    p.set_defaults(func=run, action=None)
    actions = p.add_subparsers(dest="action")
    names = ", ".join(CLAIMS)
    a = actions.add_parser("run", help="queue a claim's experiment: the runs it still needs",
                           description="Queue the runs of claim NAME's experiment that your runs folder has "
                                       "neither finished, queued nor training (seed 0 of every arm first), and "
                                       "say how long they take from a measured epoch.")
    a.add_argument("name", metavar="NAME", help=f"the claim: {names}")
    _add_experiment_flags(a)
    a.add_argument("--seeds", type=_seeds, default=3, metavar="N", help="seeds 0..N-1 of every arm (default 3)")
    _add_common_flags(a)
    a = actions.add_parser("verdict", help="one claim's verdict from the runs that exist",
                           description="Claim NAME's verdict: the paper's figure and ours measured the same way, "
                                       "agrees, disagrees or within noise (under two standard errors), and what "
                                       "differs from the paper's setting.")
    a.add_argument("name", metavar="NAME", help=f"the claim: {names}")
    _add_experiment_flags(a)
    _add_common_flags(a)
    a = actions.add_parser("bundle", help="ship the finished CPU runs of a runs folder as the bundled results",
                           description="Copy the finished runs of --runs-dir that belong to a claim's CPU "
                                       "experiment into the bundle (their settings, metrics, status, step "
                                       "curves and snapshots; no model files), then write the verdicts they "
                                       "give (verdicts.json) and, with --docs, the verdicts part of that page.")
    a.add_argument("--out", metavar="DIR", help="the bundle's folder (default: the app's assets/claims)")
    a.add_argument("--docs", metavar="FILE", help="a Markdown page whose verdicts part (between its "
                                                  "'<!-- verdicts -->' and '<!-- /verdicts -->' lines) is rewritten")
    _add_common_flags(a)
