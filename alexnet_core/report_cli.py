"""The `report` command: one self-contained HTML file about one or more runs (analysis/report.py).

    report MODEL... --out FILE.html [--data SOURCE] [--split S] [--runs-dir DIR] [--json]

MODEL: a run folder, a run id of the runs folder (or of a bundled run), or `demo`. Every MODEL is
checked before anything is computed; one that names no run, data that cannot be read, or a file
that cannot be written exits 2 with a message, and nothing is written.
"""

from __future__ import annotations

# The report module loads TensorFlow only when it loads a model: parsing stays light.
import json
import sys

from alexnet_core import exits
from alexnet_core.errors import AlexNetError
from alexnet_core.settings.choices import EVAL_SPLITS


def _progress(share: float, text: str) -> None:
    width = 30
    filled = int(width * share)
    end = "\n" if share >= 1 else ""
    print(f"\r[{'#' * filled}{'.' * (width - filled)}] {text[:70]:<70}", end=end, file=sys.stderr, flush=True)


def run(args) -> int:
    """Write the report; exit 2 with the message for a MODEL that is not a run, data that cannot be
    read or a file that cannot be written."""
    from alexnet_core.analysis import report

    try:
        if args.split and not args.data:
            raise report.ReportError("--split applies to the data of --data: give --data SOURCE too, or leave "
                                     "--split out (each run is then evaluated where its report says)")
        run_dirs = report.resolve_all(args.models, args.runs_dir)
        done = report.write(run_dirs, args.out, data=args.data, split=args.split,
                            progress=None if args.json else _progress)
    except AlexNetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exits.USAGE
    if args.json:
        print(json.dumps(done))
        return exits.OK
    print(f"{done['out']}: {done['bytes'] / 2**20:.1f} MiB, {len(done['runs'])} run"
          f"{'s' if len(done['runs']) > 1 else ''}, made in {done['seconds']:.0f} s")
    for measured in done["runs"]:
        if "accuracy" in measured:
            print(f"  {measured['name']}: evaluated on {measured['n']:,} images of the {measured['split']} split of "
                  f"{measured['data']}: {measured['accuracy']:.1%}")
        else:
            print(f"  {measured['name']}: not evaluated ({measured['note']})")
    return exits.OK


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("report", help="one self-contained HTML report of runs, to hand over",
                              description="Write one HTML file that opens offline in any browser: for each "
                                          "MODEL a model card, the headline figures and what they were measured "
                                          "on, the training curves, an evaluation (confusion matrix, per-class "
                                          "table, the most confident mistakes, Grad-CAM) and the settings; for "
                                          "several, a comparison. Print it from the browser for a PDF.")
    p.add_argument("models", nargs="+", metavar="MODEL",
                   help="a run folder, a run id of the runs folder, or demo")
    p.add_argument("--out", required=True, metavar="FILE.html", help="the file to write (replaced whole)")
    p.add_argument("--data", metavar="SOURCE",
                   help="evaluate every MODEL on this data (cifar10, sample, or PATH); default: the data of "
                        "each run's headline figure when it is on this machine, else the run's own validation "
                        "split, else the bundled sample's")
    p.add_argument("--split", choices=EVAL_SPLITS, help="with --data: the split (default: test, else val)")
    p.add_argument("--runs-dir", metavar="DIR", help="the runs folder (default $ALEXNET_RUNS_DIR, else ./runs)")
    p.add_argument("--json", action="store_true",
                   help='print one JSON document: {"out", "bytes", "seconds", "runs": [{"run_id", "name", "data", '
                        '"split", "n", "accuracy"} or {"run_id", "name", "note"}]}')
    p.set_defaults(func=run)
