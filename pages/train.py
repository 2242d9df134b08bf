from pathlib import Path

import streamlit as st

from alexnet_core import runs
from alexnet_core.charts import training_curves
from alexnet_core.config import (
    AUGMENTATIONS,
    DEFAULT_AUGMENT,
    DEFAULT_SCHEDULE,
    MIXED_PRECISION,
    OPTIMIZERS,
    SCHEDULES,
    TrainConfig,
    default_learning_rate,
)
from alexnet_core.data import DataError, cifar10_available, load_source
from alexnet_core.launcher import resume, start
from alexnet_core.training import estimate_epoch_seconds
from alexnet_core.variants import NORMS, WIDTHS, get_arch, list_variants
from pages.common import (
    all_runs,
    data_choices,
    device_banner,
    device_info,
    format_duration,
    page_setup,
    plain,
    run_dir_of,
    runs_root,
    state_badge,
)

page_setup()
st.title("Train")
st.caption("Training runs in a separate process: reload the page, close the tab or restart the app, "
           "and nothing is lost.")
info = device_info()


@st.cache_data(show_spinner="Timing a few training steps...", max_entries=32)
def epoch_estimate(config_json: str, num_classes: int, num_images: int) -> float:
    import json

    return estimate_epoch_seconds(TrainConfig.from_dict(json.loads(config_json)), num_classes, num_images)


@st.cache_data(show_spinner="Checking the data...", ttl=60)
def describe_source(source: str, val_split: float):
    """(classes, train count, val count, skipped) or the error message."""
    try:
        data = load_source(source, val_split)
    except DataError as exc:
        return str(exc)
    return (data.class_names, len(data.train), len(data.val) if data.val else 0, sum(data.skipped.values()))


def new_run_form():
    c1, c2, c3 = st.columns(3)
    variants = list_variants()
    variant = c1.selectbox("Variant", variants, index=variants.index("compact"), key="train_variant",
                           format_func=lambda n: f"{n}: {get_arch(n).title}")
    if info["kind"] == "CPU" and variant != "compact":
        c1.caption(":material/info: On a CPU, `compact` trains in minutes; ImageNet-sized variants take hours.")
    cached = cifar10_available()
    labels = data_choices(with_download=True)
    choices = list(labels)
    kind = c2.radio("Data", choices, index=choices.index("cifar10" if cached else "sample"), format_func=labels.get,
                    horizontal=True, key="train_data_kind")
    if not cached:
        c2.caption("CIFAR-10 is not downloaded on this machine, so the bundled sample is selected. Picking "
                   "CIFAR-10 downloads it once (170 MB).")
    data = kind
    if kind == "folder":
        data = c2.text_input("Folder", placeholder="/path/to/images (class folders inside)",
                             key="train_folder").strip()
    val_split = c2.slider("Validation fraction", 0.0, 0.5, 0.1, 0.05, key="train_val_split",
                          help="Used when the folder has no val/ subfolder: the last files of each class")
    epochs = c3.number_input("Epochs", 1, 1000, 10, key="train_epochs")
    batch = c3.select_slider("Batch size", [16, 32, 64, 128, 256, 512], 128, key="train_batch")
    optimizer = c1.selectbox("Optimizer", OPTIMIZERS, key="train_optimizer",
                             help="sgd: momentum 0.9 and weight decay, as the paper; adam: as the Keras seed")
    lr = c1.number_input("Learning rate", 1e-6, 10.0, default_learning_rate(optimizer), format="%g",
                         key=f"train_lr_{optimizer}")
    schedule = c1.selectbox("Schedule", SCHEDULES, index=SCHEDULES.index(DEFAULT_SCHEDULE), key="train_schedule",
                            help="step: divide by 10 when validation stalls (paper); plateau: halve when the "
                                 "validation loss stalls (Keras seed); cosine: smooth decay to zero")
    augments = list(AUGMENTATIONS)
    augment = c3.selectbox("Augmentation", augments, index=augments.index(DEFAULT_AUGMENT), key="train_augment")
    c3.caption(AUGMENTATIONS[augment])
    with st.expander("More settings", icon=":material/tune:"):
        m = st.columns(4)
        warmup = m[0].number_input("Warm-up epochs", 0.0, 100.0, 0.0, 0.5, key="train_warmup")
        smoothing = m[0].number_input("Label smoothing", 0.0, 0.5, 0.0, 0.05, key="train_smoothing")
        decay = m[1].number_input("Weight decay", 0.0, 0.1, 5e-4, format="%g", key="train_decay")
        seed = m[1].number_input("Seed", 0, 2**31 - 1, 0, key="train_seed")
        arch = get_arch(variant)
        norm = m[2].selectbox("Normalisation", NORMS, index=NORMS.index(arch.norm), key=f"train_norm_{variant}")
        dropout = m[2].slider("Dropout", 0.0, 0.9, float(arch.dropout), 0.05, key=f"train_dropout_{variant}")
        width = m[3].select_slider("Width", WIDTHS, arch.width, key=f"train_width_{variant}")
        mixed = m[3].selectbox("Mixed precision", MIXED_PRECISION, key="train_mixed",
                               help="auto: float16 compute on a GPU, float32 on a CPU")
    if kind == "folder" and not data:
        st.info("Enter the path of an image folder: PATH/<class>/<image> or PATH/train/<class>/<image>.")
        return
    try:
        config = TrainConfig(variant=variant, data=data, epochs=int(epochs), batch_size=int(batch),
                             optimizer=optimizer, learning_rate=float(lr), schedule=schedule,
                             warmup_epochs=float(warmup), label_smoothing=float(smoothing),
                             weight_decay=float(decay), augment=augment, val_split=float(val_split),
                             seed=int(seed), mixed_precision=mixed,
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
        classes, n_train, n_val, skipped = described
        b2.caption(f"{n_train:,} training and {n_val:,} validation images in {len(classes)} classes"
                   + (f"; {skipped} unreadable files will be skipped" if skipped else ""))
        if b1.button("Estimate time per epoch", icon=":material/timer:", key="train_estimate"):
            import json
            from dataclasses import asdict

            seconds = epoch_estimate(json.dumps(asdict(config), sort_keys=True), len(classes), n_train)
            b2.info(f"About **{format_duration(seconds)} per epoch** on this {info['kind']} "
                    f"({format_duration(seconds * config.epochs)} for {config.epochs} epochs), "
                    "measured from a few training steps.", icon=":material/timer:")
    if st.button("Start training", type="primary", icon=":material/play_arrow:", key="train_start"):
        try:
            run_dir = start(config, runs_root())
        except (runs.RunError, DataError, OSError) as exc:
            st.error(plain(exc, 600), icon=":material/block:")
            return
        st.session_state["train_show_next"] = run_dir.name  # selected before the picker is drawn
        st.query_params["run"] = run_dir.name
        st.rerun()


def live_view(run_id: str) -> None:
    run_dir = run_dir_of(run_id)
    if run_dir is None:
        st.warning(f"There is no run named {plain(run_id, 80)}.")
        return
    run = runs.read_run(run_dir)
    status, config, metrics, steps = run["status"], run["config"], run["metrics"], run["steps"]
    state = status.get("state", "unknown")
    state_badge(state)
    st.markdown(f"**{plain(run_id, 120)}**: {plain(config.get('variant', '?'))} on {plain(config.get('data', '?'))}. "
                f"{plain(status.get('message', ''), 600)}")
    for problem in run["problems"]:
        st.warning(f"Damaged: {plain(problem, 300)}", icon=":material/report:")
    epochs = int(config.get("epochs") or 1)
    per_epoch = int(status.get("steps_per_epoch") or 1)
    epoch = int(status.get("epoch") or 0)
    step = int(status.get("step") or 0)
    done = len(metrics)
    if runs.is_active(status):
        fraction = min(1.0, (max(epoch - 1, 0) + step / per_epoch) / epochs)
        speed = status.get("images_per_sec")
        phase = {"validating": ", validating", "saving": ", saving checkpoint"}.get(status.get("phase"), "")
        st.progress(fraction, text=f"epoch {epoch}/{epochs}, step {step}/{per_epoch}{phase}"
                    + (f", {speed:,.0f} images/s, about {format_duration(status.get('eta_seconds'))} left"
                       if speed else ""))
    else:
        st.progress(min(1.0, done / epochs), text=f"{done} of {epochs} epochs")
    m = st.columns(4)
    if "val_accuracy" in metrics and done:
        m[0].metric("Best validation accuracy", f"{metrics['val_accuracy'].max():.1%}")
        m[1].metric("Last validation accuracy", f"{metrics['val_accuracy'].iloc[-1]:.1%}",
                    delta=f"{metrics['val_accuracy'].iloc[-1] - metrics['val_accuracy'].iloc[-2]:+.1%}"
                    if done > 1 else None)
    if "loss" in metrics and done:
        m[2].metric("Training loss", f"{metrics['loss'].iloc[-1]:.3f}")
    m[3].metric("Epochs done", f"{done} / {epochs}")
    if done or not steps.empty:
        st.plotly_chart(training_curves(metrics, steps, per_epoch), width="stretch", key=f"curves_{run_id}")
    else:
        st.caption("Curves appear after the first logged steps.")
    log = runs.safe_file(run_dir, runs.LOG)
    if state == "failed" and log is not None:
        st.download_button("Trainer log (train.log)", log.read_bytes()[-1_000_000:], f"{run_id}-train.log",
                           mime="text/plain", icon=":material/download:", key="train_log")
    was_active = st.session_state.get("train_was_active")
    st.session_state["train_was_active"] = runs.is_active(status)
    if was_active and not runs.is_active(status):
        st.rerun()  # the run ended: redraw the page and stop polling


def run_actions(row: dict) -> None:
    """Stop / Resume for the selected run (outside the polling fragment; a finished run reruns the page)."""
    run_dir = Path(row["path"])
    if row["read_only"]:
        st.caption(":material/lock: Bundled with the app: read-only.")
    elif runs.is_active(row):
        if st.button("Stop", icon=":material/stop:", key="train_stop"):
            runs.request_stop(run_dir)
            st.toast("Stop requested: the run stops after its current step. Completed epochs are saved; "
                     "an unfinished epoch is redone from its start when you resume.")
    elif runs.can_resume(row):
        if st.button("Resume", icon=":material/play_arrow:", key="train_resume", type="primary"):
            try:
                resume(run_dir)
            except runs.RunError as exc:
                st.error(plain(exc, 600))
            else:
                st.rerun()


rows = all_runs()
by_id = {r["run_id"]: r for r in rows}
ids = list(by_id)
active = [r["run_id"] for r in rows if runs.is_active(r)]
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
                          format_func=lambda r: f"{r} ({by_id[r]['variant']})")
    if st.query_params.get("run") != run_id:
        st.query_params["run"] = run_id
    polling = runs.is_active(by_id[run_id])
    st.session_state["train_was_active"] = polling
    run_actions(by_id[run_id])
    st.fragment(live_view, run_every=2.0 if polling else None)(run_id)

with st.expander("Start a new run", expanded=not active, icon=":material/add_circle:"):
    new_run_form()

device_banner()
