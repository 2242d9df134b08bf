"""The Train page's views of runs: the run picker and the picked run as it trains (what the trainer
does now, its figures, curves from the first step), polled together so the picker's state words
are never stale, with the one action that fits its state; what the page says about a new run
before Start (its data, what its recipe gives on this data, the time per epoch) with Start and
Add to queue; and the queue (cancel, move up)."""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

import streamlit as st

from alexnet_core.analysis.charts import training_curves
from alexnet_core.inputs import data as sources
from alexnet_core.settings.config import ConfigError, TrainConfig
from alexnet_core.settings.recipes import CIFAR10_IMAGES
from alexnet_core.store import catalog, layout, liveness
from alexnet_core.train import estimate, launcher, queue
from alexnet_ui import glossary
from alexnet_ui.loaders import all_runs, device_info, run_dir_of, runs_root
from alexnet_ui.text import format_duration, plain
from alexnet_ui.train_form import NewRun, TrainForm
from alexnet_ui.widgets import headline_metric, state_badge, state_text

SHOW_NEXT = "train_show_next"  # the run the picker selects on the next page run (a run just started)


@st.cache_data(show_spinner="Timing a few training steps...", max_entries=32)
def epoch_estimate(config_json: str, num_classes: int, num_images: int, num_val: int) -> float:
    return estimate.estimate_epoch_seconds(TrainConfig.from_dict(json.loads(config_json)), num_classes, num_images,
                                           num_val=num_val)


@st.cache_data(show_spinner="Checking the data...", ttl=60)
def describe_source(source: str, val_split: float):
    """(classes, train count, val count, skipped, note on empty class folders) or the error message."""
    try:
        data = sources.load_source(source, val_split)
    except sources.DataError as exc:
        return str(exc)
    return (data.class_names, len(data.train), len(data.val) if data.val else 0, sum(data.skipped.values()),
            data.empty_note())


def start_panel(new: NewRun) -> None:
    """What the new run will train on, its time per epoch on request, and Start."""
    config, recipe, info = new.config, new.recipe, device_info()
    described = None if new.download else describe_source(config.data, float(config.val_split))
    if isinstance(described, str):
        st.error(plain(described, 600), icon=":material/folder_off:")
        return
    n_images = described[1] if described else CIFAR10_IMAGES if config.data == "cifar10" else 0
    expect = recipe.expect(config.data, n_images) if recipe is not None else None
    if expect:  # the recipe was made for other data: what to expect here, before Start
        st.warning(plain(expect, 800), icon=":material/warning:")
    b1, b2 = st.columns([1, 3])
    if described:
        classes, n_train, n_val, skipped, note = described
        b2.caption(f"{n_train:,} training and {n_val:,} validation images in {len(classes)} classes"
                   + (f"; {skipped} unreadable files will be skipped" if skipped else "")
                   + (f". {plain(note, 300)}" if note else ""))
        if b1.button("Estimate time per epoch", icon=":material/timer:", key="train_estimate"):
            seconds = epoch_estimate(json.dumps(asdict(config), sort_keys=True), len(classes), n_train, n_val)
            same = recipe is not None and recipe.reached and not new.changed
            reach = (f" With these settings the {recipe.name} recipe reached {recipe.reached}: about "
                     f"{format_duration(seconds * config.epochs)} on this machine."
                     if same and config.data == (recipe.data or config.data) else "")
            b2.info(f"About **{format_duration(seconds)} per epoch** on this {info['kind']} "
                    f"({format_duration(seconds * config.epochs)} for {config.epochs} epochs), "
                    f"measured from a few training and validation steps.{reach}", icon=":material/timer:")
    c1, c2 = st.columns(2)
    start = c1.button("Start training", type="primary", icon=":material/play_arrow:", key="train_start",
                      disabled=new.blocked, width="stretch")
    queued = c2.button("Add to queue", icon=":material/queue:", key="train_enqueue", disabled=new.blocked,
                       width="stretch", help="The run waits in the queue and starts when the runs before it have "
                       "ended, also with no browser open")
    if not (start or queued):
        return
    checks = "Checking the settings and the data" + (
        f", and loading {config.init_from} to fine-tune from (a few seconds)" if config.init_from else "")
    try:
        with st.spinner(f"{checks}..."):
            run_dir = launcher.start(config, runs_root()) if start else queue.enqueue(config, runs_root())
    except layout.ActiveRunError as exc:  # another run trains, or just started (another tab)
        st.error(f"{plain(exc, 600)} Or press Add to queue: this run then starts when the machine is free.",
                 icon=":material/block:")
        return
    except (layout.RunError, ConfigError, sources.DataError, OSError) as exc:
        st.error(plain(exc, 600), icon=":material/block:")
        return
    if queued:
        st.toast(f"{run_dir.name} is in the queue.", icon=":material/queue:")
    st.session_state[SHOW_NEXT] = run_dir.name  # selected before the picker is drawn
    st.session_state[TrainForm.OPEN] = False
    st.query_params["run"] = run_dir.name
    st.rerun()


def _default_lr(config: dict) -> float:
    from alexnet_core.settings.config import default_learning_rate

    return default_learning_rate(config.get("optimizer") or "sgd")


def _settings_line(run_dir: Path) -> str:
    """A queued run's settings in one line."""
    config = layout.read_checked(run_dir / layout.CONFIG, layout.CONFIG_SCHEMA)[0]
    switches = config.get("switches") if isinstance(config.get("switches"), dict) else {}
    parts = [str(config.get("variant") or "?"), str(config.get("data_description") or config.get("data") or "?"),
             f"{config.get('epochs') or '?'} epochs", f"batch {config.get('batch_size') or '?'}",
             f"{config.get('optimizer') or '?'} lr {config.get('learning_rate') or _default_lr(config):g}",
             *(f"{k} {v}" for k, v in sorted(switches.items()))]
    return ", ".join(parts)


def queue_panel() -> None:
    """The queue: each waiting run with its place, settings and GPU, Cancel, and Move up."""
    order = queue.entries(runs_root())
    for problem in queue.problems(runs_root()):
        st.warning(plain(problem, 400), icon=":material/report:")
    if not order:
        return
    st.subheader("Queue")
    st.caption("Each run starts when the one before it ends (finished, stopped, failed or diverged), "
               "also with no browser open.")
    gpus = queue.gpus()
    for entry in order:
        run_id = entry["run_id"]
        where = f"; GPU {entry['gpu']}" if entry["gpu"] is not None else "; any GPU" if gpus else ""
        text, cancel, up = st.columns([6, 1, 1])
        text.markdown(f"**{entry['position']}.** {plain(run_id, 120)}  \n"
                      f":small[{plain(_settings_line(Path(entry['run_dir'])), 300)}{where}]")
        if cancel.button("Cancel", icon=":material/close:", key=f"queue_cancel_{run_id}", width="stretch",
                         help="Take it out of the queue: its folder stays, and Resume starts it by hand"):
            _change(queue.cancel, run_id, runs_root())
        if up.button("Up", icon=":material/arrow_upward:", key=f"queue_up_{run_id}", width="stretch",
                     disabled=entry["position"] == 1, help="Move it one place nearer the front"):
            _change(queue.move, run_id, entry["position"] - 1, runs_root())


def _change(change, *args) -> None:
    """Make a change to the queue, then redraw; a change it no longer fits is said, not raised."""
    try:
        change(*args)
    except (layout.RunError, OSError) as exc:  # changed meanwhile (started, cancelled in another tab)
        st.warning(plain(exc, 400), icon=":material/block:")
        return
    st.rerun()


PICKED = "train_run"  # the run picker's key: the run the page shows
POLLING = "train_was_active"  # some run was active or queued at the last view: the view polls


def polls(rows: list[dict]) -> bool:
    """Whether the run view polls: while any run trains, starts or waits in the queue, its state
    (in the picker too) changes without the page being run."""
    return any(catalog.is_active(r) or r["state"] == layout.QUEUED for r in rows)


def run_view(wanted: str | None) -> None:
    """The run picker and the picked run as it is now. Drawn inside the polling fragment, so the
    picker's state words are read afresh every time the run is (never 'starting' for a run that
    has stopped since the page was drawn)."""
    rows = all_runs()
    by_id = {r["run_id"]: r for r in rows}
    ids = list(by_id)
    if not ids:
        return
    active = [r["run_id"] for r in rows if catalog.is_active(r)]
    if st.session_state.get(SHOW_NEXT) in ids:  # a run just started
        st.session_state[PICKED] = st.session_state.pop(SHOW_NEXT)
    if st.session_state.get(PICKED) not in ids:
        st.session_state[PICKED] = wanted if wanted in ids else (active[0] if active else ids[0])
    st.subheader("Run")
    run_id = st.selectbox("Run", ids, key=PICKED, label_visibility="collapsed",
                          format_func=lambda r: f"{catalog.display_name(by_id[r])}: {by_id[r]['variant']}, "
                                                f"{state_text(by_id[r])}")
    if st.query_params.get("run") != run_id:
        st.query_params["run"] = run_id
    live_view(run_id)
    was_polling, polling = st.session_state.get(POLLING), polls(rows)
    st.session_state[POLLING] = polling
    if was_polling and not polling:
        st.rerun()  # the last active run ended: redraw the page, which stops polling
    if not was_polling and polling:
        st.rerun()  # a run started (the queue, another tab): redraw the page, which polls


# What an active run's trainer is doing before its steps, in words (status.json `phase`).
PHASES = {"base": "loading the base model to fine-tune from", "loading": "loading the data",
          "building": "building the model",
          "preparing": "preparing the input pipeline and the training step",
          "joining": "waiting for the other workers to join"}


def progress_words(status: dict, epochs: int) -> tuple[float, str]:
    """(fraction done, what the trainer is doing now) for an active run's progress bar, from its
    status.json: the phase before the first step, then the epoch and step."""
    per_epoch = int(status.get("steps_per_epoch") or 0)
    epoch, step = int(status.get("epoch") or 0), int(status.get("step") or 0)
    done = int(status.get("completed_epochs") or 0)
    phase = status.get("phase")
    where = f"Epoch {epoch} of {epochs}"
    if per_epoch and epoch and phase in ("first step", "training", "validating", "saving"):
        step = per_epoch if phase in ("validating", "saving") else step
        fraction = min(1.0, (epoch - 1 + step / per_epoch) / epochs)
        speed = status.get("images_per_sec")
        text = {"first step": f"{where}: compiling the training step and running the first of {per_epoch}",
                "validating": f"{where}: its {per_epoch} steps done, validating",
                "saving": f"{where}: saving the checkpoint"}.get(phase, f"{where}, step {step} of {per_epoch}")
        if phase == "training" and speed:
            text += f", {speed:,.0f} images/s, about {format_duration(status.get('eta_seconds'))} left"
        return fraction, text
    fraction = min(1.0, done / epochs)
    if phase == "building" and done:
        return fraction, f"Loading the checkpoint of epoch {done}"
    if phase in PHASES:
        return fraction, PHASES[phase][0].upper() + PHASES[phase][1:]
    return fraction, "Starting the trainer process (loading TensorFlow)"


def live_view(run_id: str) -> None:
    """A run as it is now: state, progress, figures and curves (polled while it trains)."""
    run_dir = run_dir_of(run_id)
    if run_dir is None:
        st.warning(f"There is no run named {plain(run_id, 80)}.")
        return
    run = catalog.read_run(run_dir)
    status, config, metrics, steps = run["status"], run["config"], run["metrics"], run["steps"]
    row = catalog.run_summary(run_dir, run)
    state = status.get("state", "unknown")
    top = st.columns([3, 1])
    if state == layout.QUEUED:
        row["queue_position"] = next((e["position"] for e in queue.entries(runs_root()) if e["run_id"] == run_id), None)
    with top[0]:
        state_badge(state, state_text(row))
    with top[1]:
        run_actions(row, config)  # here, inside the polling view, so the buttons always match the state
    where = catalog.trained_on(row)
    st.markdown(f"**{plain(catalog.display_name(row), 160)}**: {plain(row['variant'] or '?')} on "
                f"{plain(row['data'] or '?')}" + (f", trained on {plain(where)}" if where else "")
                + f". {plain(status.get('message', ''), 600)}")
    for problem in run["problems"]:
        st.warning(f"Damaged: {plain(problem, 300)}", icon=":material/report:")
    epochs = int(config.get("epochs") or 1)
    per_epoch = int(status.get("steps_per_epoch") or config.get("steps_per_epoch") or 0) or None
    done = len(metrics)
    if catalog.is_active(status):
        st.progress(*progress_words(status, epochs))
    else:
        st.progress(min(1.0, done / epochs), text=f"{done} of {epochs} epochs")
    figures(run_dir, metrics, epochs)
    if done or len(steps):
        st.plotly_chart(training_curves(metrics, steps, per_epoch, epochs), width="stretch", key=f"curves_{run_id}")
    elif catalog.is_active(status):
        st.info("Waiting for the first training step: the curves start with it, one point per step at first.",
                icon=":material/hourglass_top:")
    else:
        st.caption("This run logged no training steps.")
    log = layout.safe_file(run_dir, layout.LOG)
    if state == "failed" and log is not None:
        st.download_button("Trainer log (train.log)", log.read_bytes()[-1_000_000:], f"{run_id}-train.log",
                           mime="text/plain", icon=":material/download:", key="train_log")


def figures(run_dir: Path, metrics, epochs: int) -> None:
    """The run's figures: the saved model's headline accuracy once it has one (the one figure a model
    is quoted by), and the validation accuracy measured during training, labelled as such."""
    done = len(metrics)
    m = st.columns(4)
    headline = headline_metric(run_dir, m[0], caption=False)
    trained = "val_accuracy" in metrics and done and metrics["val_accuracy"].notna().any()
    if trained:
        best, last = float(metrics["val_accuracy"].max()), float(metrics["val_accuracy"].iloc[-1])
        tip = glossary.help("in-training validation")
        if headline is None:
            m[0].metric("Best in-training validation", f"{best:.1%}", help=tip)
        change = (last - float(metrics["val_accuracy"].iloc[-2])) * 100 if done > 1 else None
        m[1].metric("Last epoch's validation", f"{last:.1%}", help=tip,
                    delta=f"{change:+.1f} points" if change is not None else None)
    if "loss" in metrics and done:
        m[2].metric("Training loss", f"{metrics['loss'].iloc[-1]:.3f}", help=glossary.help("loss"))
    m[3].metric("Epochs done", f"{done} / {epochs}", help=glossary.help("epoch"))
    if headline is not None:
        st.caption(f"Headline: {plain(headline['sentence'])}, measured on the saved model after training."
                   + (f" The validation figures beside it and in the curves were measured during training, at "
                      f"the end of each epoch with that epoch's weights (best {best:.1%}): they differ from "
                      "the headline by the weights, and by the images and precision when those differ."
                      if trained else ""))
    elif trained:
        st.caption("Validation accuracy measured during training, at the end of each epoch with that epoch's "
                   "weights and the run's compute precision: the model's headline figure is measured on the "
                   "saved model once the run has an evaluation.")


def run_actions(row: dict, config: dict) -> None:
    """The one action that fits the run's state: Stop, Resume, or a new run with its settings."""
    run_dir = Path(row["path"])
    if row["read_only"]:
        st.caption(":material/lock: Bundled with the app: read-only.")
        return
    notice = st.session_state.get("train_resumed_elsewhere")
    if notice and notice[0] == row["run_id"] and time.time() - notice[2] < 10:
        st.info(plain(notice[1], 600), icon=":material/hourglass_top:")
    if row["state"] == layout.QUEUED:
        if st.button("Cancel", icon=":material/close:", key="train_unqueue", width="stretch",
                     help="Take it out of the queue: its folder stays, and Resume starts it by hand"):
            _change(queue.cancel, row["run_id"], runs_root())
    if catalog.is_active(row):
        if st.button("Stop", icon=":material/stop:", key="train_stop", width="stretch"):
            liveness.request_stop(run_dir)
            st.toast("Stop requested: the run stops after its current step. Completed epochs are saved; "
                     "an unfinished epoch is redone from its start when you resume.")
    elif catalog.can_resume(row):
        if st.button("Resume", icon=":material/play_arrow:", key="train_resume", type="primary", width="stretch"):
            try:
                launcher.resume(run_dir)
            except layout.ActiveRunError as exc:  # resumed a moment ago (another tab), or another run is training
                if catalog.is_active(liveness.read_status(run_dir)):  # said for a few seconds over the live view
                    st.session_state["train_resumed_elsewhere"] = (row["run_id"], str(exc), time.time())
                    st.rerun()
                st.warning(plain(exc, 600), icon=":material/block:")
            except (layout.RunError, OSError) as exc:
                st.error(plain(exc, 600))
            else:
                st.rerun()
    if catalog.is_active(row) or not config:
        return
    failed = row["state"] in ("failed", "diverged") and not catalog.can_resume(row)
    if st.button("New run with these settings" if failed else "Clone settings", icon=":material/content_copy:",
                 key="train_clone", type="primary" if failed else "secondary", width="stretch",
                 help="Fill the form below with this run's settings and data"):
        TrainForm().clone(config, row["run_id"])
        st.rerun(scope="app")
    advice = {"data": "Its data could not be used: fix the data or pick other data, then start a new run.",
              "settings": "A setting could not be used: change it in a new run.",
              "diverged": "The loss blew up: a new run with a smaller learning rate should work.",
              "cluster": "A worker of this multi-worker run was lost. Start every worker again with --resume "
                         "(docs/DISTRIBUTED.md), or resume it here to finish on this machine alone."}
    why = "diverged" if row["state"] == "diverged" else row.get("reason")
    if row["state"] in ("failed", "diverged") and why in advice:
        st.caption(advice[why])
