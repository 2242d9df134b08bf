import time
from pathlib import Path

import streamlit as st

from alexnet_core.analysis.charts import training_curves
from alexnet_core.inputs.data import DataError, cifar10_available, cifar10_reachable, load_source
from alexnet_core.models.variants import CPU_FRIENDLY, NORMS, WIDTHS, get_arch, list_variants
from alexnet_core.settings.config import (
    AUGMENTATIONS,
    MIXED_PRECISION,
    OPTIMIZERS,
    SCHEDULES,
    ConfigError,
    TrainConfig,
    default_learning_rate,
)
from alexnet_core.settings.recipes import RECIPES
from alexnet_core.store import catalog, layout, liveness
from alexnet_core.train.estimate import estimate_epoch_seconds
from alexnet_core.train.launcher import resume, start
from alexnet_ui.loaders import all_runs, data_choices, device_info, model_choices, run_dir_of, runs_root
from alexnet_ui.navigation import page_setup
from alexnet_ui.text import cpu_friendly_variants, format_duration, plain
from alexnet_ui.train_form import BATCH_SIZES, DEFAULT_RECIPE, apply_recipe, clone_settings, form_state
from alexnet_ui.widgets import device_banner, state_badge

page_setup()
st.title("Train")
st.caption("Training runs in a separate process: reload the page, close the tab or restart the app, "
           "and nothing is lost.")
info = device_info()


@st.cache_data(show_spinner="Timing a few training steps...", max_entries=32)
def epoch_estimate(config_json: str, num_classes: int, num_images: int, num_val: int) -> float:
    import json

    return estimate_epoch_seconds(TrainConfig.from_dict(json.loads(config_json)), num_classes, num_images,
                                  num_val=num_val)


@st.cache_data(show_spinner="Checking the data...", ttl=60)
def describe_source(source: str, val_split: float):
    """(classes, train count, val count, skipped, note on empty class folders) or the error message."""
    try:
        data = load_source(source, val_split)
    except DataError as exc:
        return str(exc)
    return (data.class_names, len(data.train), len(data.val) if data.val else 0, sum(data.skipped.values()),
            data.empty_note())


@st.cache_data(show_spinner="Checking whether CIFAR-10 can be downloaded...", ttl=60)
def cifar10_can_download() -> bool:
    return cifar10_reachable()


def on_variant_change() -> None:
    """A new variant starts from its own published switches."""
    arch = get_arch(st.session_state["train_variant"])
    st.session_state.update({"train_norm": arch.norm, "train_dropout": float(arch.dropout),
                             "train_width": float(arch.width)})


def on_optimizer_change() -> None:
    st.session_state["train_lr"] = float(default_learning_rate(st.session_state["train_optimizer"]))


def recipe_label(name: str) -> str:
    if name == "custom":
        return "Custom: your own settings"
    recipe = RECIPES[name]
    return f"{recipe.title} ({name}): {recipe.settings['variant']}, {recipe.settings['epochs']} epochs"


def changed_from(recipe, state: dict) -> list[str]:
    """The settings that differ from `recipe`'s, as 'epochs 4 → 10'."""
    wanted = form_state(recipe.settings)
    names = {"train_variant": "variant", "train_epochs": "epochs", "train_batch": "batch size",
             "train_optimizer": "optimizer", "train_lr": "learning rate", "train_schedule": "schedule",
             "train_augment": "augmentation", "train_warmup": "warm-up epochs", "train_smoothing": "label smoothing",
             "train_decay": "weight decay", "train_seed": "seed", "train_val_split": "validation fraction",
             "train_mixed": "mixed precision", "train_norm": "normalisation", "train_dropout": "dropout",
             "train_width": "width", "train_init_from": "start from", "train_freeze": "frozen layers"}
    return [f"{names[k]} {wanted[k]:g} → {state.get(k):g}" if isinstance(wanted[k], float)
            and isinstance(state.get(k), (int, float)) else f"{names[k]} {wanted[k]} → {state.get(k)}"
            for k in names if k in state and state.get(k) != wanted[k]]


def new_run_form():
    if "train_variant" not in st.session_state:  # first visit: the default recipe fills the form
        st.session_state.setdefault("train_recipe", DEFAULT_RECIPE)
        st.session_state.update(form_state(RECIPES[DEFAULT_RECIPE].settings))
    problem = st.session_state.pop("train_clone_problem", None)
    if problem:
        st.error(f"That run's settings cannot be reused: {plain(problem, 400)}", icon=":material/error:")
    cloned = st.session_state.pop("train_cloned_from", None)
    if cloned:
        st.success(f"Settings and data of {plain(cloned, 80)} filled in below: change what you like, then "
                   "start.", icon=":material/content_copy:")
    recipes = [*RECIPES, "custom"]
    recipe_name = st.selectbox("Recipe", recipes, key="train_recipe", format_func=recipe_label,
                               on_change=apply_recipe,
                               help="A recipe sets every setting below at once; change any of them afterwards.")
    recipe = RECIPES.get(recipe_name)
    differences = changed_from(recipe, st.session_state) if recipe is not None else []
    if recipe is not None:
        st.caption(f"{recipe.description} Settings: {recipe.summary()}. Made for {recipe.made_for}. {recipe.result}")
        if differences:
            st.caption(":material/edit: Changed from the recipe: " + "; ".join(differences) + ".")

    c1, c2, c3 = st.columns(3)
    variant = c1.selectbox("Variant", list_variants(), key="train_variant", on_change=on_variant_change,
                           format_func=lambda n: f"{n}: {get_arch(n).title}")
    if info["kind"] == "CPU" and variant not in CPU_FRIENDLY:
        c1.caption(f":material/info: On a CPU, {cpu_friendly_variants()} train in minutes; ImageNet-sized "
                   "variants take hours.")
    cached = cifar10_available()
    labels = data_choices(with_download=True)
    if not cached:
        labels["cifar10"] = "CIFAR-10 (download, 170 MB)"
    st.session_state.setdefault("train_data_kind", "cifar10" if cached else "sample")
    kind = c2.radio("Data", list(labels), format_func=labels.get, horizontal=True, key="train_data_kind")
    data = kind
    cifar_blocked = False
    if kind == "cifar10" and not cached:
        if cifar10_can_download():
            c2.caption("CIFAR-10 is not on this machine yet: the run downloads it first (170 MB, once).")
        else:
            cifar_blocked = True
            c2.warning("CIFAR-10 is not on this machine, and its download server cannot be reached from here. "
                       "Connect this machine to the internet and pick CIFAR-10 again (it downloads once, "
                       "170 MB), or train on the bundled sample or on a folder of your own images.",
                       icon=":material/cloud_off:")
    if kind == "folder":
        data = c2.text_input("Folder", placeholder="/path/to/images (class folders inside)",
                             key="train_folder").strip()
    val_split = c2.slider("Validation fraction", 0.0, 0.5, step=0.05, key="train_val_split",
                          help="Used when the folder has no val/ subfolder: the last files of each class")
    epochs = c3.number_input("Epochs", 1, 10_000, key="train_epochs")
    batch_options = sorted({*BATCH_SIZES, int(st.session_state["train_batch"])})
    batch = c3.select_slider("Batch size", batch_options, key="train_batch")
    optimizer = c1.selectbox("Optimizer", OPTIMIZERS, key="train_optimizer", on_change=on_optimizer_change,
                             help="sgd: momentum 0.9 and weight decay, as the paper; adam: as the Keras seed")
    lr = c1.number_input("Learning rate", 1e-6, 10.0, format="%g", key="train_lr")
    schedule = c1.selectbox("Schedule", SCHEDULES, key="train_schedule",
                            help="step: divide by 10 when validation stalls (paper); plateau: halve when the "
                                 "validation loss stalls (Keras seed); cosine: smooth decay to zero")
    augment = c3.selectbox("Augmentation", list(AUGMENTATIONS), key="train_augment")
    c3.caption(AUGMENTATIONS[augment])
    with st.expander("More settings", icon=":material/tune:"):
        m = st.columns(4)
        warmup = m[0].number_input("Warm-up epochs", 0.0, 100.0, step=0.5, key="train_warmup")
        smoothing = m[0].number_input("Label smoothing", 0.0, 0.5, step=0.05, key="train_smoothing")
        decay = m[1].number_input("Weight decay", 0.0, 0.1, format="%g", key="train_decay")
        seed = m[1].number_input("Seed", 0, 2**31 - 1, key="train_seed")
        norm = m[2].selectbox("Normalisation", NORMS, key="train_norm")
        dropout = m[2].slider("Dropout", 0.0, 0.9, step=0.05, key="train_dropout")
        widths = sorted({*WIDTHS, float(st.session_state["train_width"])})
        width = m[3].select_slider("Width", widths, key="train_width")
        mixed = m[3].selectbox("Mixed precision", MIXED_PRECISION, key="train_mixed",
                               help="auto: float16 compute on a GPU, bfloat16 on a CPU with AVX512-BF16 or AMX, "
                                    "float32 on other CPUs (they emulate bfloat16, many times slower); bf16: "
                                    "bfloat16 always")
        starts = {"": "Random weights (from scratch)", **model_choices()}
        if st.session_state.get("train_init_from") not in starts:  # a cloned run's base that is not listed
            starts[st.session_state["train_init_from"]] = st.session_state["train_init_from"]
        f = st.columns([2, 2])
        init_from = f[0].selectbox(
            "Start from", list(starts), format_func=starts.get, key="train_init_from",
            help="Fine-tuning: a trained model's convolutional layers start the run and new dense layers learn "
                 "your classes. The run keeps that model's network: its variant, width and input size replace "
                 "the ones set here.")
        freeze = f[1].toggle("Keep those layers as they are (train only the new head)", key="train_freeze",
                             disabled=not init_from)
    if kind == "folder" and not data:
        st.info("Enter the path of an image folder: PATH/<class>/<image> or PATH/train/<class>/<image>.")
        return
    try:
        config = TrainConfig(variant=variant, data=data, epochs=int(epochs), batch_size=int(batch),
                             optimizer=optimizer, learning_rate=float(lr), schedule=schedule,
                             warmup_epochs=float(warmup), label_smoothing=float(smoothing),
                             weight_decay=float(decay), augment=augment, val_split=float(val_split),
                             seed=int(seed), mixed_precision=mixed, recipe=recipe.name if recipe else None,
                             init_from=init_from or None, freeze_features=bool(freeze and init_from),
                             switches={"norm": norm, "dropout": float(dropout), "width": float(width)})
    except ValueError as exc:
        st.error(f"{plain(exc, 400)}. Change the setting above.", icon=":material/error:")
        return
    described = None if data == "cifar10" and not cached else describe_source(data, float(val_split))
    if isinstance(described, str):
        st.error(plain(described, 600), icon=":material/folder_off:")
        return
    b1, b2 = st.columns([1, 3])
    if described:
        classes, n_train, n_val, skipped, note = described
        b2.caption(f"{n_train:,} training and {n_val:,} validation images in {len(classes)} classes"
                   + (f"; {skipped} unreadable files will be skipped" if skipped else "")
                   + (f". {plain(note, 300)}" if note else ""))
        if b1.button("Estimate time per epoch", icon=":material/timer:", key="train_estimate"):
            import json
            from dataclasses import asdict

            seconds = epoch_estimate(json.dumps(asdict(config), sort_keys=True), len(classes), n_train, n_val)
            same = recipe is not None and recipe.reached and not differences
            reach = (f" With these settings the {recipe.name} recipe reached {recipe.reached}: about "
                     f"{format_duration(seconds * config.epochs)} on this machine." if same and data == "cifar10"
                     else "")
            b2.info(f"About **{format_duration(seconds)} per epoch** on this {info['kind']} "
                    f"({format_duration(seconds * config.epochs)} for {config.epochs} epochs), "
                    f"measured from a few training and validation steps.{reach}", icon=":material/timer:")
    if st.button("Start training", type="primary", icon=":material/play_arrow:", key="train_start",
                 disabled=cifar_blocked):
        try:
            run_dir = start(config, runs_root())
        except (layout.RunError, ConfigError, DataError, OSError) as exc:  # ActiveRunError: another run is active
            st.error(plain(exc, 600), icon=":material/block:")
            return
        st.session_state["train_show_next"] = run_dir.name  # selected before the picker is drawn
        st.session_state["train_form_open"] = False
        st.query_params["run"] = run_dir.name
        st.rerun()


def live_view(run_id: str) -> None:
    run_dir = run_dir_of(run_id)
    if run_dir is None:
        st.warning(f"There is no run named {plain(run_id, 80)}.")
        return
    run = catalog.read_run(run_dir)
    status, config, metrics, steps = run["status"], run["config"], run["metrics"], run["steps"]
    row = catalog.run_summary(run_dir, run)
    state = status.get("state", "unknown")
    top = st.columns([3, 1])
    with top[0]:
        state_badge(state)
    with top[1]:
        run_actions(row, config)  # here, inside the polling view, so the buttons always match the state
    where = catalog.trained_on(row)
    st.markdown(f"**{plain(catalog.display_name(row), 160)}**: {plain(row['variant'] or '?')} on "
                f"{plain(row['data'] or '?')}" + (f", trained on {plain(where)}" if where else "")
                + f". {plain(status.get('message', ''), 600)}")
    for problem in run["problems"]:
        st.warning(f"Damaged: {plain(problem, 300)}", icon=":material/report:")
    epochs = int(config.get("epochs") or 1)
    per_epoch = int(status.get("steps_per_epoch") or 1)
    epoch = int(status.get("epoch") or 0)
    step = int(status.get("step") or 0)
    done = len(metrics)
    if catalog.is_active(status):
        if status.get("phase") in ("validating", "saving"):
            step = per_epoch  # every step of this epoch has run
        fraction = min(1.0, (max(epoch - 1, 0) + step / per_epoch) / epochs)
        speed = status.get("images_per_sec")
        phase = {"validating": ", validating", "saving": ", saving checkpoint"}.get(status.get("phase"), "")
        st.progress(fraction, text=f"epoch {epoch}/{epochs}, step {step}/{per_epoch}{phase}"
                    + (f", {speed:,.0f} images/s, about {format_duration(status.get('eta_seconds'))} left"
                       if speed else ""))
    else:
        st.progress(min(1.0, done / epochs), text=f"{done} of {epochs} epochs")
    m = st.columns(4)
    headline = catalog.headline_accuracy(run_dir)
    if headline:  # the model's own accuracy, measured after training: the one figure it is quoted by
        m[0].metric("Model accuracy", f"{headline['accuracy']:.1%}",
                    help=f"Measured on {headline.get('description') or headline.get('data')}")
        st.caption(f"Model accuracy: the saved model on {plain(headline.get('description') or headline.get('data'))}. "
                   "The curves below are the per-epoch figures logged during training.")
    elif "val_accuracy" in metrics and done:
        m[0].metric("Best validation accuracy", f"{metrics['val_accuracy'].max():.1%}")
        m[1].metric("Last validation accuracy", f"{metrics['val_accuracy'].iloc[-1]:.1%}",
                    delta=f"{metrics['val_accuracy'].iloc[-1] - metrics['val_accuracy'].iloc[-2]:+.1%}"
                    if done > 1 else None)
    if "loss" in metrics and done:
        m[2].metric("Training loss", f"{metrics['loss'].iloc[-1]:.3f}")
    m[3].metric("Epochs done", f"{done} / {epochs}")
    if done or len(steps) >= 2:
        st.plotly_chart(training_curves(metrics, steps, per_epoch), width="stretch", key=f"curves_{run_id}")
    elif catalog.is_active(status):
        st.info(f"Waiting for the first steps: the curves start after {int(config.get('log_every') or 10) * 2} "
                "training steps.", icon=":material/hourglass_top:")
    else:
        st.caption("This run logged no training steps.")
    log = layout.safe_file(run_dir, layout.LOG)
    if state == "failed" and log is not None:
        st.download_button("Trainer log (train.log)", log.read_bytes()[-1_000_000:], f"{run_id}-train.log",
                           mime="text/plain", icon=":material/download:", key="train_log")
    was_active = st.session_state.get("train_was_active")
    st.session_state["train_was_active"] = catalog.is_active(status)
    if was_active and not catalog.is_active(status):
        st.rerun()  # the run ended: redraw the page and stop polling


def run_actions(row: dict, config: dict) -> None:
    """The one action that fits the run's state: Stop, Resume, or a new run with its settings."""
    run_dir = Path(row["path"])
    if row["read_only"]:
        st.caption(":material/lock: Bundled with the app: read-only.")
        return
    notice = st.session_state.get("train_resumed_elsewhere")
    if notice and notice[0] == row["run_id"] and time.time() - notice[2] < 10:
        st.info(plain(notice[1], 600), icon=":material/hourglass_top:")
    if catalog.is_active(row):
        if st.button("Stop", icon=":material/stop:", key="train_stop", width="stretch"):
            liveness.request_stop(run_dir)
            st.toast("Stop requested: the run stops after its current step. Completed epochs are saved; "
                     "an unfinished epoch is redone from its start when you resume.")
    elif catalog.can_resume(row):
        if st.button("Resume", icon=":material/play_arrow:", key="train_resume", type="primary", width="stretch"):
            try:
                resume(run_dir)
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
        clone_settings(config, row["run_id"])
        st.rerun(scope="app")
    advice = {"data": "Its data could not be used: fix the data or pick other data, then start a new run.",
              "settings": "A setting could not be used: change it in a new run.",
              "diverged": "The loss blew up: a new run with a smaller learning rate should work.",
              "cluster": "A worker of this multi-worker run was lost. Start every worker again with --resume "
                         "(docs/DISTRIBUTED.md), or resume it here to finish on this machine alone."}
    why = "diverged" if row["state"] == "diverged" else row.get("reason")
    if row["state"] in ("failed", "diverged") and why in advice:
        st.caption(advice[why])


rows = all_runs()
by_id = {r["run_id"]: r for r in rows}
ids = list(by_id)
active = [r["run_id"] for r in rows if catalog.is_active(r)]
wanted = st.query_params.get("run")
if wanted and wanted not in ids:
    st.warning(f"There is no run named {plain(wanted, 80)}; showing the latest instead.")
    wanted = None
if ids:
    default = wanted or (active[0] if active else ids[0])
    if st.session_state.get("train_show_next") in ids:
        st.session_state["train_run"] = st.session_state.pop("train_show_next")
    if st.session_state.get("train_run") not in ids:
        st.session_state["train_run"] = default
    st.subheader("Run")
    run_id = st.selectbox("Run", ids, key="train_run", label_visibility="collapsed",
                          format_func=lambda r: f"{catalog.display_name(by_id[r])}: {by_id[r]['variant']}, "
                                                f"{by_id[r]['state']}")
    if st.query_params.get("run") != run_id:
        st.query_params["run"] = run_id
    polling = catalog.is_active(by_id[run_id])
    st.session_state["train_was_active"] = polling
    st.fragment(live_view, run_every=2.0 if polling else None)(run_id)

with st.expander("Start a new run", expanded=st.session_state.get("train_form_open", not active),
                 icon=":material/add_circle:"):
    new_run_form()

device_banner()
