"""Command line: `python -m alexnet_core COMMAND ...` (contract in docs/ARCHITECTURE.md).

Results go to stdout (`--json`: exactly one JSON document), logs to stderr.
Exit codes: 0 success, 2 bad usage or bad input (a message, no traceback).
"""

from __future__ import annotations

# Imports inside functions are deliberate: TensorFlow and Keras, and the modules that reach them,
# load on first use, so importing this module (the app's pages, the command line) stays light.
import argparse
import contextlib
import json
import math
import os
import sys
import time
from pathlib import Path

from alexnet_core import exits, locations
from alexnet_core.errors import AlexNetError
from alexnet_core.join_watch import JOIN_TIMEOUT_S
from alexnet_core.pretrained.sources import SOURCES
from alexnet_core.settings.choices import DEFAULT_FRAMING, EVAL_SPLITS, FRAMINGS
from alexnet_core.settings.config import ConfigError, TrainConfig
from alexnet_core.settings.flags import add_network_flags, add_train_flags, network_from_args, train_settings_from_args
from alexnet_core.settings.recipes import get_recipe, list_recipes
from alexnet_core.store import layout, liveness

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
STARTED = time.time()  # when this command started (a stop request older than this is stale)


class UsageError(AlexNetError):
    """Bad usage or bad input: reported on stderr with exit code 2."""


def switches_from_args(args) -> dict:
    """The network flags (num_classes, input_size and the switches), each None where not given."""

    return network_from_args(args)


def cmd_variants(args) -> int:
    from alexnet_core.models.variants import get_arch, list_variants

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


def cmd_recipes(args) -> int:

    rows = list_recipes()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        print(f"{row['name']:<11} {row['title']}: {row['summary']}; made for {row['made_for']}")
    print("\npython -m alexnet_core train --recipe NAME [--data PATH] [any flag to override the recipe]")
    return 0


def cmd_summary(args) -> int:
    from alexnet_core.models.anatomy import summary
    from alexnet_core.models.variants import build_model

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


def cmd_profile(args) -> int:
    from alexnet_core.analysis.profile import profile

    if not 1 <= args.batch_size <= 4096 or not 1 <= args.repeats <= 10_000:
        raise UsageError("--batch-size must be 1..4096 and --repeats 1..10000")
    try:
        doc = profile(args.variant, batch_size=args.batch_size, repeats=args.repeats, **switches_from_args(args))
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    print(f"{doc['variant']} at {doc['input_size']} px, batch {doc['batch_size']}, on {doc['device']}: "
          f"{doc['total_ms']:.2f} ms per forward pass (the layers alone add up to {doc['sum_ms']:.2f} ms)")
    print(f"{'layer':<14}{'type':<28}{'MACs/image':>16}{'ms':>10}{'GFLOP/s':>10}")
    for layer in doc["layers"]:
        rate = f"{layer['gflops']:.1f}" if layer["gflops"] is not None else "-"
        print(f"{layer['name']:<14}{layer['type']:<28}{layer['macs']:>16,}{layer['ms']:>10.3f}{rate:>10}")
    for group, share in doc["groups"].items():
        print(f"{group}: {share['macs_share']:.1%} of the arithmetic, {share['time_share']:.1%} of the time")
    if doc.get("note"):  # a busy machine, or layers that do not add up to the whole: said, not hidden
        print(f"note: {doc['note']}", file=sys.stderr)
    return 0


def cmd_export_model(args) -> int:
    from alexnet_core.export.export_model import ExportError, export_model
    from alexnet_core.inputs.data import DataError
    from alexnet_core.predict.inference import ModelLoadError

    try:
        record = export_model(args.model, args.format, args.out, int8=args.int8,
                              parity_data=args.parity_data)
    except (ExportError, DataError, ModelLoadError) as exc:
        raise UsageError(str(exc)) from exc
    except OSError as exc:
        raise UsageError(f"Cannot write the export: {exc}") from exc
    if args.json:
        print(json.dumps(record, indent=2))
        return 0
    parity, latency = record["parity"], record["latency_ms_per_image"]
    print(f"{record['path']}: {record['format']}{' int8' if record['int8'] else ''}, {record['bytes'] / 2**20:.1f} MiB "
          f"(the .keras file: {record['keras_bytes'] / 2**20:.1f} MiB)")
    print(f"same top class as the Keras model on {parity['top1_agreement']:.1%} of {parity['images']} images "
          f"({parity['data']}); one image in {latency['export']:.2f} ms (Keras: {latency['keras']:.2f} ms)")
    return 0


def _train_config(args):
    """The TrainConfig of a new run from the flags (a recipe, overridden by explicit flags)."""

    if not args.recipe and (not (args.variant or args.init_from) or not args.data):
        raise UsageError("train needs --recipe NAME, or --variant (or --init-from MODEL) and --data (or --resume "
                         "RUN_DIR); `recipes` lists the recipes")
    fields, switches = train_settings_from_args(args)
    switches = {k: v for k, v in switches.items() if v is not None}
    if args.recipe:  # explicit flags override the recipe's settings
        config = get_recipe(args.recipe).config(**fields, switches=switches)
    else:
        config = TrainConfig(**{k: v for k, v in fields.items() if v is not None}, switches=switches)
    return _fine_tune_config(args, config) if config.init_from else config


def _fine_tune_config(args, config):
    """The settings of a run fine-tuning from `config.init_from`: the base model loaded and its
    convolutional layers checked against the network (ConfigError otherwise), all before a run
    folder exists. The run keeps the base's network, so a network flag that asks for another one
    is a usage error naming both flags; --dropout (the new head's) applies."""
    from alexnet_core.models.variants import get_arch
    from alexnet_core.train.training import check_fine_tune, prepare_tensorflow

    prepare_tensorflow()
    tuned = check_fine_tune(config)
    arch = get_arch(tuned.variant, input_size=tuned.input_size, **tuned.switches)
    source = f"--init-from {args.init_from}" if args.init_from else f"--recipe {args.recipe}"
    network = f"{tuned.variant}, width {arch.width:g}, input size {arch.input_size}"
    for flag, given, kept in (("--variant", args.variant, tuned.variant), ("--width", args.width, arch.width),
                              ("--input-size", args.input_size, arch.input_size), ("--norm", args.norm, arch.norm),
                              ("--groups", args.groups, arch.groups),
                              ("--overlapping-pool", args.overlapping_pool, arch.overlapping_pool),
                              ("--activation", args.activation, arch.activation),
                              ("--remove-conv", args.remove_conv, arch.remove_conv)):
        if given is None or given == kept:
            continue
        if isinstance(given, bool):
            flag, shown = (flag if given else flag.replace("--", "--no-", 1)), ""
        else:
            shown = f" {given:g}" if isinstance(given, float) else f" {given}"
        raise UsageError(f"{flag}{shown} cannot apply with {source}: fine-tuning starts from "
                         f"{config.init_from!r}'s convolutional layers and keeps its network ({network}). "
                         f"Leave out {flag}, or train from scratch without {source.split()[0]}.")
    return tuned


def _refuse_settings_with_resume(args) -> None:
    """`--resume` continues a run with the settings it recorded: any other setting would be
    silently ignored, so it is a usage error naming both flags."""
    given = []
    for dest, flags in args.resume_conflicts.items():
        value = getattr(args, dest, None)
        if value is not None:  # --no-groups is the second spelling of --groups
            given.append(flags[1] if value is False and len(flags) > 1 else flags[0])
    if given:
        raise UsageError(f"{', '.join(given)} cannot apply with --resume: a resumed run keeps the settings it "
                         f"started with ({args.resume}/config.json). Give --resume RUN_DIR alone (with "
                         "--allow-parallel, --json or the multi-worker flags), or start a new run.")


def cmd_train(args) -> int:
    """Validate everything (settings, data, the one-run rule) before a run folder exists, then train."""

    from alexnet_core.inputs.data import DataError
    from alexnet_core.train import launcher, lifecycle
    from alexnet_core.train.training import prepare_tensorflow, run_training

    if args.resume:
        _refuse_settings_with_resume(args)
    if args.queue:
        return _train_queued(args)
    if args.gpu is not None:
        raise UsageError("--gpu applies to a queued run: give it with --queue (the queue gives the run that GPU "
                         "alone and starts it when the GPU is free)")
    if args.join_timeout is not None and not (math.isfinite(args.join_timeout) and args.join_timeout > 0):
        raise UsageError(f"--join-timeout must be a number of seconds above 0, got {args.join_timeout:g}")
    try:
        place = _join_cluster(args)
        if args.join_timeout is not None and place is None:
            raise UsageError("--join-timeout applies to a multi-worker run: give it with --workers and "
                             "--worker-index (or TF_CONFIG)")
        if place is not None and not place.is_chief:
            # Another worker of a multi-worker run: it reads the run folder the chief writes, never writes it.
            config, run_dir = _worker_config(args)
        elif args.resume:
            run_dir = Path(args.resume)
            config = lifecycle.check_resumable(run_dir, allow_parallel=args.allow_parallel,
                                               launching=os.environ.get(launcher.LAUNCHED_ENV) == str(run_dir),
                                               starter_pid=os.getpid())
            if os.environ.get(launcher.LAUNCHED_ENV) != str(run_dir):  # the launcher clears stale requests itself
                clear_stale_stop(run_dir, STARTED)
            _check_data_service(config)
        else:
            config = _train_config(args)
            _check_data_service(config)  # before the run folder exists: a dispatcher that is not there, at once
            run_dir = lifecycle.new_run(config, args.runs_dir, args.run_id, allow_parallel=args.allow_parallel,
                                   starter_pid=os.getpid())
            print(f"run folder: {run_dir}", file=sys.stderr, flush=True)
    except (ConfigError, DataError, layout.RunError) as exc:  # each names the bad value
        raise UsageError(str(exc)) from exc
    except OSError as exc:
        raise UsageError(f"Cannot create the run folder: {exc}") from exc
    if place is not None:
        from alexnet_core.join_watch import supervise_worker

        code = supervise_worker(config, run_dir, place, args.join_timeout)
    else:
        prepare_tensorflow()
        with contextlib.redirect_stdout(sys.stderr):  # Keras' progress lines are logs: stdout stays for results
            code = exits.of_training(run_training(config, run_dir))
    if not args.json:
        print(run_dir)
    else:
        print(json.dumps({"run_dir": str(run_dir), **liveness.read_status(run_dir)}))
    return code


def _train_queued(args) -> int:
    """`train ... --queue`: a new run checked as for a start, created `queued` and put in the queue;
    returns at once (the run starts when its place is free)."""
    from alexnet_core.inputs.data import DataError
    from alexnet_core.train import queue

    if args.workers is not None or args.worker_index is not None or os.environ.get("TF_CONFIG"):
        raise UsageError("--queue starts a run on this machine: a multi-worker run (--workers, TF_CONFIG) is "
                         "started on every worker by hand")
    try:
        config = _train_config(args)
        _check_data_service(config)
        run_dir = queue.enqueue(config, args.runs_dir, run_id=args.run_id, gpu=args.gpu)
    except (ConfigError, DataError, layout.RunError) as exc:
        raise UsageError(str(exc)) from exc
    except OSError as exc:
        raise UsageError(f"Cannot create the run folder: {exc}") from exc
    status = liveness.read_status(run_dir)
    position = next((e["position"] for e in queue.entries(args.runs_dir) if e["run_id"] == run_dir.name), None)
    if args.json:
        print(json.dumps({"run_dir": str(run_dir), "run_id": run_dir.name, "position": position,
                          "state": status.get("state"), "gpu": args.gpu}))
    else:
        where = f"queued, position {position}" if position else f"{status.get('state')}: started by the queue"
        print(f"{run_dir} ({where})", file=sys.stderr)
        print(run_dir)
    return exits.OK


def cmd_queue(args) -> int:
    """`queue` (start what can start, then list), `queue cancel RUN`, `queue move RUN POSITION`."""
    from alexnet_core.store import catalog
    from alexnet_core.train import queue

    try:
        if args.action == "cancel":
            queue.cancel(args.run, args.runs_dir)
            print(f"{args.run} left the queue; its folder stays (state created): resume it with "
                  f"`python -m alexnet_core train --resume RUN_DIR`, or delete it.", file=sys.stderr)
            return exits.OK
        started = []
        if args.action == "move":
            order = queue.move(args.run, args.position, args.runs_dir)
        else:
            started = queue.advance(args.runs_dir)
            order = queue.entries(args.runs_dir)
        problems = queue.problems(args.runs_dir)
        active = [(run_id, s) for run_id, s in catalog.statuses(args.runs_dir).items()
                  if s.get("state") in layout.ACTIVE_STATES]
    except AlexNetError as exc:
        raise UsageError(str(exc)) from exc
    except OSError as exc:
        raise UsageError(f"Cannot read or change the queue in {locations.runs_root(args.runs_dir)}: {exc}") from exc
    for problem in problems:
        print(f"note: {problem}", file=sys.stderr)
    if getattr(args, "json", False):
        print(json.dumps({"queue": order, "started": [p.name for p in started],
                          "training": [{"run_id": run_id, "state": s.get("state"), "gpu": s.get("gpu")}
                                       for run_id, s in active]}))
        return exits.OK
    if args.action is None:
        for path in started:
            print(f"started {path.name}", file=sys.stderr)
        for run_id, s in active:
            print(f"training: {run_id} ({s.get('state')}{'' if s.get('gpu') is None else ', GPU ' + str(s['gpu'])})")
    if not order:
        print("The queue is empty.")
    gpus = queue.gpus()
    for entry in order:
        gpu = f" (GPU {entry['gpu']})" if entry["gpu"] is not None else " (any GPU)" if gpus else ""
        print(f"{entry['position']:>3}. {entry['run_id']}{gpu}")
    return exits.OK


def add_queue_parser(sub) -> None:
    p = sub.add_parser("queue", help="list the run queue (starting the next run when nothing trains), or change it",
                       description="Without an action: start the queued runs whose place is free (the machine, or "
                                   "their GPU), then list the queue. `train ... --queue` adds a run to it.")
    p.add_argument("--runs-dir", help="runs root (default ./runs or $ALEXNET_RUNS_DIR)")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(func=cmd_queue, action=None)
    actions = p.add_subparsers(dest="action")
    a = actions.add_parser("cancel", help="take a waiting run out of the queue (its folder stays, state created)")
    a.add_argument("run", metavar="RUN", help="the run's id (its folder's name)")
    a.add_argument("--runs-dir", default=argparse.SUPPRESS, help="runs root (default ./runs or $ALEXNET_RUNS_DIR)")
    a = actions.add_parser("move", help="put a waiting run at another place in the queue (1 is next)")
    a.add_argument("run", metavar="RUN", help="the run's id (its folder's name)")
    a.add_argument("position", type=int, metavar="POSITION", help="its new place, from 1")
    a.add_argument("--runs-dir", default=argparse.SUPPRESS, help="runs root (default ./runs or $ALEXNET_RUNS_DIR)")
    a.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print the queue as one JSON document")


def _check_data_service(config) -> None:
    if config.data_service:
        from alexnet_core.train.data_service import check_dispatcher

        check_dispatcher(config.data_service)


def clear_stale_stop(run_dir, before: float) -> None:
    """Remove the run's stop request if it was written before `before` (a stop meant for an
    earlier trainer); one written since stays, for the trainer to honour as soon as it can."""


    path = Path(run_dir) / layout.STOP_REQUEST
    try:
        written = float(path.read_text(encoding="utf-8")[:64])
    except (OSError, ValueError):
        try:
            written = path.stat().st_mtime
        except OSError:
            return
    if written < before:
        path.unlink(missing_ok=True)


def _join_cluster(args):
    """This process's place in a multi-worker run: `--workers`/`--worker-index` become TF_CONFIG
    (TensorFlow's own setting), which is then read like one set by hand. None: it trains alone."""
    from alexnet_core.train.devices import cluster, workers_tf_config

    if args.workers is not None or args.worker_index is not None:
        if args.workers is None or args.worker_index is None:
            raise UsageError("--workers and --worker-index go together (or set TF_CONFIG instead)")
        if os.environ.get("TF_CONFIG"):
            raise UsageError("TF_CONFIG is already set: give either it or --workers/--worker-index, not both")
        os.environ["TF_CONFIG"] = workers_tf_config(args.workers, args.worker_index)
    return cluster()


def _worker_config(args):
    """(config, run folder) for a worker other than the chief, which gets the chief's arguments."""


    if args.resume:
        run_dir = Path(args.resume)
        try:
            return TrainConfig.from_dict(layout.read_config(run_dir)), run_dir
        except (OSError, ValueError, TypeError) as exc:
            raise UsageError(f"Cannot resume {run_dir}: {exc}. Every worker must read the run folder the chief "
                             "writes (shared storage)") from exc
    config = _train_config(args)
    return config, locations.runs_root(args.runs_dir) / (args.run_id or "unnamed")


def cmd_stop(args) -> int:


    run_dir = Path(args.run_dir)
    if not (run_dir / layout.CONFIG).exists():
        raise UsageError(f"{run_dir} is not a run folder (no {layout.CONFIG})")
    liveness.request_stop(run_dir)
    print(f"Stop requested: {run_dir.name} stops after its current batch.", file=sys.stderr)
    return 0


def cmd_app(args) -> int:
    """`streamlit run` on the app.py installed with the package (or this checkout's), with every
    other argument passed on. Streamlit replaces this process: its signals and exit code are the app's."""

    if not locations.APP.is_file():
        raise UsageError(f"The app's files are missing ({locations.APP} does not exist): reinstall alexnet-explorer")
    passed_on = args.streamlit_args[1:] if args.streamlit_args[:1] == ["--"] else args.streamlit_args
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, "-m", "streamlit", "run", str(locations.APP), *passed_on])
    return 0  # not reached


def _load(spec: str):
    from alexnet_core.predict.inference import ModelLoadError, load_model

    try:
        return load_model(spec)
    except ModelLoadError as exc:
        raise UsageError(str(exc)) from exc


def _progress_bar(done: int, total: int) -> None:
    width = 30
    filled = int(width * done / max(total, 1))
    end = "\n" if done >= total else ""
    print(f"\revaluating [{'#' * filled}{'.' * (width - filled)}] {done}/{total}", end=end, file=sys.stderr,
          flush=True)


def cmd_evaluate(args) -> int:
    from alexnet_core.analysis.evaluation import evaluate
    from alexnet_core.inputs.data import DataError

    loaded = _load(args.model)
    try:
        result = evaluate(loaded, args.data, args.split, flip=args.flip, progress=_progress_bar)
    except DataError as exc:
        raise UsageError(str(exc)) from exc
    doc = result.summary()
    if args.json:
        print(json.dumps(doc))
        return 0
    print(f"{doc['n']} images ({args.data}, {result.split}): accuracy {doc['accuracy']:.2%}, "
          f"top-5 {doc['top5_accuracy']:.2%}")
    print(result.report().to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    return 0


def cmd_predict(args) -> int:
    from alexnet_core.predict.inference import predict_files

    if args.top_k < 1:
        raise UsageError(f"--top-k must be >= 1, got {args.top_k}")
    loaded = _load(args.model)
    if args.classes:
        from alexnet_core.predict.own_model import OwnModelError, read_classes_file

        try:
            loaded.class_names, loaded.class_words = read_classes_file(args.classes, len(loaded.class_names)), {}
        except OwnModelError as exc:
            raise UsageError(str(exc)) from exc
    results = predict_files(loaded, args.images, args.top_k, args.framing)
    if args.json:
        print(json.dumps(results))
    else:
        for r in results:
            if r["error"]:
                print(f"{r['image']}: error: {r['error']}")
                continue
            top = ", ".join(f"{p.get('words') or p['label']} {p['probability']:.1%}" for p in r["predictions"])
            print(f"{r['image']}: {top}" + ("" if r["sure"] else f" (unsure: {r['unsure_because']})"))
    return exits.USAGE if all(r["error"] for r in results) else exits.OK


def cmd_calibrate(args) -> int:
    """Calibrate a model for images outside its classes, on images of its own classes, and store
    the calibration with the model (predict.novelty)."""
    from alexnet_core.inputs.data import DataError, load_source
    from alexnet_core.predict import novelty
    from alexnet_core.predict.inference import Predictor, verdict

    loaded = _load(args.model)

    def show(done: int, total: int) -> None:
        end = "\n" if done >= total else ""
        print(f"\rcalibrating: {done}/{total} images", end=end, file=sys.stderr, flush=True)

    try:
        source = load_source(args.data)
        keep = novelty.KEEP if args.keep is None else args.keep
        calibration, report = novelty.calibrate(Predictor(loaded), source, keep=keep,
                                                bank=novelty.BANK if args.bank is None else args.bank,
                                                limit=novelty.LIMIT if args.limit is None else args.limit, sure=lambda p: verdict(p)["sure"],
                                                progress=None if args.json else show)
        path = novelty.location(loaded)
        novelty.write(calibration, path)
    except (DataError, novelty.NoveltyError) as exc:
        raise UsageError(str(exc)) from exc
    doc = {"model": args.model, "file": str(path), **report}
    if args.json:
        print(json.dumps(doc))
        return exits.OK
    images = report["images"]
    print(f"Calibrated {args.model}: {images['bank']} training images to compare with, threshold set on "
          f"{images['calibration']} held-out images of its classes (keeps {keep:.0%}); written to {path}")
    if "held_out_kept" in report:
        print(f"Checked on {images['held_out']} other held-out images: {report['held_out_kept']:.1%} pass the "
              f"novelty test, {report['held_out_sure']:.1%} stay sure with the softmax rule too "
              f"({report['held_out_sure_softmax']:.1%} with the softmax rule alone).")
    return exits.OK


def cmd_export(args) -> int:
    from alexnet_core.export import bundle
    from alexnet_core.inputs.data import DataError
    from alexnet_core.predict.inference import ModelLoadError

    try:
        dest = bundle.export_run(args.run_dir, args.dest, evaluate_on=args.evaluate, split=args.split,
                               read_only=args.read_only, headline=args.headline,
                               data_description=args.data_description)
    except (layout.RunError, ModelLoadError, DataError) as exc:
        raise UsageError(str(exc)) from exc
    print(dest)
    return 0


# --- pretrained: the published ImageNet weights -------------------------------------------


def _install_progress():
    """An install's progress on stderr: bytes, rate and time left while downloading."""
    last = {"at": 0.0}

    def show(event: dict) -> None:
        phase, done, total = event.get("phase"), event.get("done") or 0, event.get("total") or 0
        final = bool(total) and done >= total
        now = time.monotonic()
        if phase in ("download", "checksum") and not final and now - last["at"] < 0.5:
            return
        last["at"] = now
        mib = 2**20
        if phase == "download":
            eta = event.get("eta")
            line = (f"downloading {done / mib:,.1f} / {total / mib:,.1f} MiB at {(event.get('rate') or 0) / mib:.1f} "
                    f"MiB/s" + (f", {eta:,.0f} s left" if eta is not None else ""))
        elif phase == "checksum":
            line = f"checking the file's SHA-256: {done / mib:,.0f} / {total / mib:,.0f} MiB"
        else:
            line = {"convert": "converting", "write": "writing the model"}.get(phase, str(phase))
        print(f"\r{line:<76}", end="\n" if final or phase not in ("download", "checksum") else "", file=sys.stderr,
              flush=True)

    return show


def _pretrained_list(args) -> int:
    from alexnet_core.pretrained import install
    from alexnet_core.store import model_home

    rows = install.status()
    if args.json:
        print(json.dumps(rows))
        return exits.OK
    for row in rows:
        published = row["published"]
        state = f"installed as {row['model_name']}" if row["installed"] else "not installed"
        print(f"{row['source']}: {row['title']} ({row['bytes'] / 2**20:,.0f} MiB download, {state})")
        print(f"  {row['what']}")
        print(f"  published accuracy: {published['top1']:.1%} top-1, {published['top5']:.1%} top-5 "
              f"({published['split']})")
        print(f"  licence: {row['licence']}")
        if not row["reader_available"]:
            print(f"  needs {row['needs']}: {row['install_hint']}")
    own = [m for m in model_home.installed() if m["name"] not in {r["model_name"] for r in rows}]
    if own:
        print("other installed models: " + ", ".join(f"{m['name']} ({m['record'].get('kind', 'own')})" for m in own))
    print("install: python -m alexnet_core pretrained install torchvision|bvlc [--file PATH]", file=sys.stderr)
    return exits.OK


def _pretrained_install(args) -> int:
    from alexnet_core.pretrained import install

    result = install.install(args.source, file=args.file, name=args.name, classes_file=args.classes,
                             progress=None if args.json else _install_progress())
    if args.json:
        print(json.dumps(result))
        return exits.OK
    kind = "the published weights, checksum verified" if result["checksum_match"] else "your own weights"
    print(f"installed {result['name']} ({kind}, {result['num_classes']} classes) in {result['seconds']:.0f} s: "
          f"name it as MODEL, e.g. python -m alexnet_core predict {result['name']} IMAGE")
    return exits.OK


def _pretrained_check(args) -> int:
    from alexnet_core.pretrained import check

    result = check.check(args.source, args.file, images_dir=args.images, n=args.count)
    if args.json:
        print(json.dumps(result))
    else:
        verdict = "agrees" if result["agrees"] else "DOES NOT agree"
        print(f"our conversion {verdict} with {result['reference']} on {result['n']} images ({result['images']}): "
              f"largest logit difference {result['max_abs_diff']:.3g} ({result['max_rel_diff']:.3g} relative, "
              f"tolerance {result['tolerance']:g}), top-1 agreement {result['top1_agreement']:.0%}, top-5 order "
              f"agreement {result['top5_agreement']:.0%}")
    return exits.OK if result["agrees"] else exits.FAILED


def _pretrained_remove(args) -> int:
    from alexnet_core.store import model_home

    model_home.remove(args.name)
    print(f"removed {args.name}", file=sys.stderr)
    return exits.OK


def cmd_pretrained(args) -> int:
    """`pretrained` (list), `pretrained install|check|remove`: the published ImageNet weights."""
    action = {None: _pretrained_list, "install": _pretrained_install, "check": _pretrained_check,
              "remove": _pretrained_remove}[args.action]
    try:
        return action(args)
    except AlexNetError as exc:
        raise UsageError(str(exc)) from exc


def add_pretrained_parser(sub) -> None:
    p = sub.add_parser("pretrained", help="the published ImageNet weights: list, install, check, remove",
                       description="Without an action: list the sources of published ImageNet weights (what each "
                                   "is, its size, its licence, whether it is installed).")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(func=cmd_pretrained, action=None)
    actions = p.add_subparsers(dest="action")
    sources = list(SOURCES)
    a = actions.add_parser("install", help="download (or take --file) and convert a source into an installed model")
    a.add_argument("source", choices=sources)
    a.add_argument("--file", metavar="PATH", help="the weights file you already have (no download)")
    a.add_argument("--classes", metavar="FILE",
                   help="class names, one per line in output order, for a file that is not the published one "
                        "(or 'imagenet' for the 1,000 ImageNet classes); default: numbered")
    a.add_argument("--name", help="the installed model's name (default imagenet-SOURCE, or own-SOURCE for a file "
                                  "that is not the published one)")
    a.add_argument("--json", action="store_true", help="print one JSON document")
    a = actions.add_parser("check", help="compare our conversion of a file with its reference runtime")
    a.add_argument("source", choices=sources)
    a.add_argument("--file", metavar="PATH", required=True, help="the weights file (.pth for torchvision, .onnx "
                                                                 "for bvlc)")
    a.add_argument("--images", metavar="DIR", help="a folder of images (default: generated images)")
    a.add_argument("--count", type=int, default=8, help="how many images (default 8)")
    a.add_argument("--json", action="store_true", help="print one JSON document")
    a = actions.add_parser("remove", help="remove an installed model")
    a.add_argument("name")
    a.add_argument("--json", action="store_true", help=argparse.SUPPRESS)


# --- prepare: a dataset written once as TFRecord shards of resized JPEGs ------------------


def cmd_prepare(args) -> int:
    from alexnet_core.inputs.prepare import PrepareError, WorkerLostError, prepare, progress_printer
    from alexnet_core.inputs.splits import DataError

    try:
        summary = prepare(args.source, args.dest, size=args.size, shards=args.shards, quality=args.quality,
                          val_split=args.val_split, workers=args.workers, seed=args.seed,
                          progress=progress_printer(sys.stderr), overwrite=args.overwrite)
    except WorkerLostError as exc:  # not bad input: a failure, as a training run's
        print(f"error: {exc}", file=sys.stderr)
        return exits.FAILED
    except (PrepareError, DataError) as exc:
        raise UsageError(str(exc)) from exc
    if args.json:
        print(json.dumps(summary))
        return exits.OK
    parts = ", ".join(f"{s} {p['count']:,}" for s, p in summary["splits"].items())
    print(f"Prepared {summary['dest']}: {summary['images']:,} images ({parts}) in {summary['shards']} shards, "
          f"{summary['bytes'] / 1e6:,.1f} MB; {summary['skipped']} damaged or unreadable files skipped; "
          f"{summary['shards_written']} shards written now, {summary['shards_kept']} kept from before.")
    return exits.OK


def add_prepare_parser(sub) -> None:
    p = sub.add_parser("prepare", help="write a dataset once as TFRecord shards of resized JPEGs (resumable)",
                       description="Turn SOURCE (an image folder, an ImageNet-layout folder, sample) into DEST: "
                                   "TFRecord shards of JPEGs with the shorter side at --size (aspect kept, never "
                                   "enlarged), usable wherever SOURCE is. Run the same command again to resume.")
    p.add_argument("source", help="sample, or PATH to PATH/<class>/* or PATH/{train,val,test}/<class>/*")
    p.add_argument("dest", help="a new or empty folder (or one this command is writing)")
    p.add_argument("--size", type=int, default=256, help="the shorter side in pixels (default 256)")
    p.add_argument("--shards", type=int, help="shards of all splits together (default: about 1,000 images each)")
    p.add_argument("--quality", type=int, default=90, help="JPEG quality of resized images (default 90)")
    p.add_argument("--val-split", type=float, default=0.1,
                   help="without a val/ folder: the last fraction of each class held out (default 0.1)")
    p.add_argument("--workers", type=int, help="processes (default: the usable cores, fewer for a small job)")
    p.add_argument("--seed", type=int, default=0, help="the order of images in the shards (default 0)")
    p.add_argument("--overwrite", action="store_true", help="replace what an earlier prepare wrote in DEST")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON document")
    p.set_defaults(func=cmd_prepare)


def cmd_data_service(args) -> int:
    """Run a tf.data service dispatcher or worker until SIGTERM or Ctrl-C (docs/DISTRIBUTED.md)."""
    from alexnet_core.train.data_service import serve_dispatcher, serve_worker
    from alexnet_core.train.training import prepare_tensorflow

    prepare_tensorflow()
    try:
        if args.role == "dispatcher":
            serve_dispatcher(args.port, args.work_dir, args.host)
        else:
            serve_worker(args.dispatcher, args.port, args.host)
    except AlexNetError as exc:
        raise UsageError(str(exc)) from exc
    return exits.OK


def add_data_service_parser(sub) -> None:
    p = sub.add_parser("data-service", help="run a tf.data service dispatcher or worker for train --data-service")
    roles = p.add_subparsers(dest="role", required=True)
    a = roles.add_parser("dispatcher", help="the service's dispatcher: give its address to workers and trainers")
    a.add_argument("--port", type=int, default=0, help="its port (default: a free one, printed)")
    a.add_argument("--work-dir", metavar="DIR", help="keep its journal here, so a restarted dispatcher resumes its jobs")
    a.add_argument("--host", help="the name or address others reach this machine at, for the printed address")
    a = roles.add_parser("worker", help="a worker: decodes and augments training images for the dispatcher's jobs")
    a.add_argument("--dispatcher", required=True, metavar="HOST:PORT", help="the dispatcher's address")
    a.add_argument("--port", type=int, default=0, help="its port (default: a free one)")
    a.add_argument("--host", help="the name or address trainers reach this machine at (default: its host name)")
    p.set_defaults(func=cmd_data_service)


def build_parser() -> argparse.ArgumentParser:
    from alexnet_core import __version__, claims_cli, report_cli

    parser = argparse.ArgumentParser(prog="python -m alexnet_core",
                                     description="AlexNet Explorer on the command line.")
    parser.add_argument("--version", action="version", version=f"alexnet_core {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("variants", help="list the AlexNet variants")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(func=cmd_variants)

    p = sub.add_parser("recipes", help="list the training recipes (presets of every setting)")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(func=cmd_recipes)

    p = sub.add_parser("summary", help="layer table, parameters and MACs of a variant")
    p.add_argument("variant")
    add_network_flags(p)
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(func=cmd_summary)

    p = sub.add_parser("profile", help="measured forward time of every layer on this machine, beside its MACs")
    p.add_argument("variant")
    add_network_flags(p)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--repeats", type=int, default=20, help="timed calls per layer (the median is kept)")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(func=cmd_profile)

    p = sub.add_parser("export-model", help="a SavedModel or TensorFlow Lite file of a model, checked against it")
    p.add_argument("model", help="a run folder, a .keras file, or demo")
    p.add_argument("--format", required=True, choices=["savedmodel", "tflite"])
    p.add_argument("--int8", action="store_true", help="quantise weights and activations to int8 (tflite)")
    p.add_argument("--out", help="where to write it (default: exports/NAME...)")
    p.add_argument("--parity-data", default="sample", help="images for the parity check (default: the sample)")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(func=cmd_export_model)

    p = sub.add_parser("train", help="train a variant into a run folder")
    add_train_flags(p)  # every training setting but the network's (below)
    p.add_argument("--runs-dir", help="runs root (default ./runs or $ALEXNET_RUNS_DIR)")
    p.add_argument("--run-id", help="name of the run folder")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a stopped or interrupted run")
    p.add_argument("--allow-parallel", action="store_true", help="start even if another run is training")
    p.add_argument("--queue", action="store_true", default=None,
                   help="add the run to the queue and return at once: it starts when nothing else trains "
                        "(`queue` lists the queue)")
    p.add_argument("--gpu", type=int, metavar="N", help="with --queue: the one GPU the run trains on")
    p.add_argument("--workers", metavar="HOST:PORT,...",
                   help="every worker of a multi-worker run, the chief first (sets TF_CONFIG)")
    p.add_argument("--worker-index", type=int, metavar="I", help="this worker's place in --workers (0: the chief)")
    p.add_argument("--join-timeout", type=float, metavar="SECONDS",
                   help=f"a multi-worker run fails if the other workers have not all joined by then "
                        f"(default {JOIN_TIMEOUT_S:g})")
    p.add_argument("--json", action="store_true", help="print the final status as one JSON document")
    add_network_flags(p, num_classes=False)
    # Every setting of a run: none of them can apply to a resumed run (it keeps its own).
    kept_with_resume = {"help", "resume", "allow_parallel", "json", "workers", "worker_index", "join_timeout"}
    p.set_defaults(func=cmd_train, resume_conflicts={a.dest: a.option_strings for a in p._actions
                                                     if a.dest not in kept_with_resume and a.option_strings})

    p = sub.add_parser("evaluate", help="accuracy and confusion matrix of a model on a data split")
    p.add_argument("model", help="a run folder, a .keras file, or demo")
    p.add_argument("--data", required=True, help="cifar10, sample, or PATH to an image folder")
    p.add_argument("--split", choices=EVAL_SPLITS,
                   help="default: test if the data has one, else val")
    p.add_argument("--flip", action="store_true", help="average with the horizontally flipped image")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", help="top-k classes of image files")
    p.add_argument("model", help="a run folder, a .keras file, or demo")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--framing", choices=list(FRAMINGS), default=DEFAULT_FRAMING,
                   help="images that are not square: centre crop (default) or the whole image on a square")
    p.add_argument("--classes", metavar="FILE",
                   help="the model's class names, one per line in output order (e.g. for a bare .keras or .h5 file)")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("calibrate", help="teach a model's verdict to flag images of none of its classes")
    p.add_argument("model", help="a run folder, a .keras file, an installed model's name, or demo")
    p.add_argument("--data", required=True,
                   help="cifar10, sample, or PATH to images of the model's own classes (PATH/<class>/* or "
                        "PATH/{train,val}/<class>/*; for an ImageNet model, an ImageNet-layout folder)")
    p.add_argument("--keep", type=float,
                   help="the share of held-out images of its classes the threshold keeps sure (default 0.96)")
    p.add_argument("--bank", type=int, help="training images to compare with (default 1000)")
    p.add_argument("--limit", type=int,
                   help="at most this many held-out images to set the threshold on, and as many to check it on")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(func=cmd_calibrate)

    p = sub.add_parser("export", help="copy a finished run into a compact (optionally read-only) folder")
    p.add_argument("run_dir")
    p.add_argument("dest")
    p.add_argument("--evaluate", metavar="SOURCE", action="append",
                   help="record the model's accuracy on this data (repeat for several sources)")
    p.add_argument("--split", help="the split of each SOURCE to evaluate (default: test, else val)")
    p.add_argument("--headline", metavar="TEXT",
                   help="what the last --evaluate data is, in words: its accuracy becomes the one the app quotes")
    p.add_argument("--data-description", metavar="TEXT", help="what the run trained on, in words, for the app")
    p.add_argument("--read-only", action="store_true", help="mark the copy read-only in the app")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("stop", help="ask a training run to stop after its current batch")
    p.add_argument("run_dir")
    p.set_defaults(func=cmd_stop)

    add_data_service_parser(sub)
    add_pretrained_parser(sub)
    add_prepare_parser(sub)
    add_queue_parser(sub)
    claims_cli.add_parser(sub)
    report_cli.add_parser(sub)

    p = sub.add_parser("app", help="start the app (streamlit run on the installed app.py)",
                       usage="%(prog)s [STREAMLIT OPTION ...]",
                       description="Start the app in the browser: `streamlit run` on the app.py installed with "
                                   "this package, with the bundled model and sample. Every other argument goes "
                                   "to streamlit run, e.g. --server.port 8502, --server.address 0.0.0.0, "
                                   "--server.headless true.")
    p.set_defaults(func=cmd_app, streamlit_args=[])
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args, passed_on = parser.parse_known_args(argv)
    if passed_on and args.command != "app":  # only `app` passes arguments on (to streamlit run)
        parser.error(f"unrecognized arguments: {' '.join(passed_on)}")
    if passed_on:
        args.streamlit_args = passed_on
    try:
        return args.func(args)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exits.USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return exits.INTERRUPTED
