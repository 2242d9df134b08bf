"""The checks before a run starts or resumes: its settings, its data and its fine-tuning base are
loaded and refused with a reason before a run folder exists."""

from __future__ import annotations

# Imports inside functions are deliberate: TensorFlow and Keras, and the modules that reach them,
# load on first use, so importing this module (the app's pages, the command line) stays light.
import os
from dataclasses import asdict
from pathlib import Path

from alexnet_core import locations
from alexnet_core.settings.config import ConfigError, TrainConfig
from alexnet_core.store import catalog, layout, liveness


def check_fine_tune(config: TrainConfig) -> TrainConfig:
    """The settings of a run that fine-tunes from `config.init_from`, once the base model has
    loaded (safely) and its convolutional layers fit the network the run will build; ConfigError
    naming the problem otherwise. Called before a run folder exists."""
    from alexnet_core.models.variants import build_model
    from alexnet_core.train.finetune import copy_features, fine_tune_source

    tuned, base = fine_tune_source(config)
    try:
        target = build_model(tuned.variant, num_classes=2, input_size=tuned.input_size, **tuned.switches)
    except ValueError as exc:
        raise ConfigError(f"Cannot fine-tune from {config.init_from!r}: its recorded network is not usable "
                          f"({exc})") from exc
    copy_features(base, target, dry_run=True)
    return tuned


def new_run(config, root=None, run_id: str | None = None, allow_parallel: bool = False,
            starter_pid: int | None = None, then=None) -> Path:
    """Create the folder of a new run for a validated TrainConfig once its data has been read
    and the one-run rule checked; on any refusal nothing is created. The rule's check and the
    creation are one step (`liveness.runs_lock`). `starter_pid`: the process that starts the run's trainer
    at once (the command line, which trains it itself, or the launcher, which spawns it): the run
    is then created `starting`, so the rule counts it before that trainer takes its lock. `then(run_dir)`
    runs in the same step, after the creation (the queue adds the run to itself). Without a `run_id`
    the run gets a new one, made unique with -2, -3... when two runs start within the same second."""

    from alexnet_core.inputs.data import load_source

    load_source(config.data, config.val_split)  # DataError names what is wrong with the data
    if config.init_from:
        from alexnet_core.predict.inference import ModelLoadError, resolve_model_path

        try:
            resolve_model_path(config.init_from)
        except ModelLoadError as exc:
            raise ConfigError(f"Cannot fine-tune from {config.init_from!r}: {exc}") from exc
    root = locations.runs_root(root)
    layout.check_runs_root(root)
    with liveness.runs_lock(root):
        if not allow_parallel:
            catalog.check_no_active_run(root)
        run_dir = catalog.create_run(root, run_id or _free_run_id(root, config), asdict(config))
        if starter_pid is not None:
            liveness.mark_starting(run_dir, starter_pid)
        if then is not None:
            then(run_dir)
    return run_dir


def _free_run_id(root: Path, config) -> str:
    """A new run id not taken under `root` (called holding the runs folder's lock)."""
    base = layout.new_run_id(config.variant, config.data)
    run_id, number = base, 1
    while os.path.lexists(root / run_id):
        number += 1
        run_id = f"{base}-{number}"
    return run_id


def check_resumable(run_dir: Path, allow_parallel: bool = False, launching: bool = False,
                    starter_pid: int | None = None):
    """The TrainConfig of a run that may be resumed now, or layout.RunError saying why not.

    `launching`: the caller is the trainer that the app's launcher just started for this run.
    `starter_pid`: the process that starts its trainer now (as in `new_run`): the run is marked
    `starting` in the same step as the checks (`liveness.runs_lock`), so two resumes give one trainer.
    """

    run_dir = Path(run_dir)
    if not (run_dir / layout.CONFIG).exists():
        raise layout.RunError(f"{run_dir} is not a run folder (no {layout.CONFIG})")
    if run_dir.is_symlink():
        raise layout.RunError(f"{run_dir.name} is a link to {os.readlink(run_dir)}: resume it where it lives")
    if layout.is_read_only(run_dir):
        raise layout.RunError(f"{run_dir.name} is bundled with the app and cannot be resumed")
    try:
        config = TrainConfig.from_dict(layout.read_config(run_dir))
    except (ConfigError, TypeError) as exc:
        raise layout.RunError(f"Cannot resume {run_dir}: its {layout.CONFIG} is not usable ({exc})") from exc
    with liveness.runs_lock(run_dir.parent):
        status = liveness.read_status(run_dir)
        if status.get("state") == "starting" and not launching:
            trainer = f"pid {status['pid']}" if status.get("pid") else "its trainer is on its way"
            raise layout.ActiveRunError(f"Run {run_dir.name} is already starting ({trainer}): it was just started or "
                                 "resumed elsewhere (another tab, or the command line).")
        if status.get("state") == layout.QUEUED and not launching:
            raise layout.ActiveRunError(f"Run {run_dir.name} is waiting in the queue: it starts when a place is free. "
                                        f"To start it yourself, take it out first (`python -m alexnet_core queue "
                                        f"cancel {run_dir.name}`, or Cancel on the Train page).")
        if status.get("state") in layout.ACTIVE_STATES and not launching:
            raise layout.ActiveRunError(f"Run {run_dir.name} is still training (pid {status.get('pid', '?')})")
        if not allow_parallel:
            catalog.check_no_active_run(run_dir.parent, except_run=run_dir)
        if starter_pid is not None:
            liveness.mark_starting(run_dir, starter_pid)
    return config
