"""The Question the paper page's parts: the claim picker with each claim's verdict as a badge,
a claim's quote, the paper's figure beside ours, the verdict and where it comes from, the
experiment's curves overlaid (played epoch by epoch), its runs one click away on Runs, and
"Run it here", which queues the runs the experiment still needs.

The figure builder (`curves_figure`) is a pure function of a DataFrame, tested without a browser."""

from __future__ import annotations

# Imports inside functions are deliberate: TensorFlow and Keras, and the modules that reach them,
# load on first use, so importing this module (the app's pages, the command line) stays light.
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from alexnet_core.analysis import claims
from alexnet_core.analysis.charts import PALETTE
from alexnet_core.store import fileio, layout
from alexnet_ui import glossary
from alexnet_ui.feedback import user_errors
from alexnet_ui.loaders import device_info, runs_root
from alexnet_ui.text import format_duration, plain

PLAY_FRAME_MS = 250  # one epoch per quarter second: a 15-epoch experiment plays in about four seconds


def _error_label(metric: str) -> str:
    return {"train_error": "training error", "val_error": "validation error"}.get(metric, metric.replace("_", " "))


def curves_figure(frame: pd.DataFrame, arms: list[tuple[str, str]], metric: str = "val_error",
                  threshold: float | None = None, threshold_label: str = "", beside: str | None = None,
                  marks: dict[str, float] | None = None) -> go.Figure:
    """The experiment's runs overlaid: each run a thin line coloured by its arm, each arm's mean
    over its runs bold; `beside` (the training error, where the measure is the train-validation gap)
    as the arms' means dashed in the same colours; `threshold` a dashed horizontal line, and `marks`
    ({arm: epoch}, where each arm's mean reaches it) dotted vertical lines in the arms' colours. `frame`:
    one row per run and epoch (run_id, arm, seed, epoch from 1, the error columns). `arms`: (name,
    label) in the order drawn. The figure opens on the last epoch; its slider and Play replay the
    curves epoch by epoch (the frame's title says which)."""
    fig = go.Figure()
    frame = frame[frame["arm"].isin([name for name, _ in arms])] if len(frame) else frame
    last = int(frame["epoch"].max()) if len(frame) else 0
    colours = {name: PALETTE[i % len(PALETTE)] for i, (name, _) in enumerate(arms)}
    labels = dict(arms)
    series = []  # (trace, data over epochs) in trace order: every frame lists them in this order

    for name, _ in arms:
        for run_id, run in frame[frame["arm"] == name].groupby("run_id", sort=True):
            run = run.sort_values("epoch")
            seed = run["seed"].iloc[0]
            series.append((dict(name=f"{labels[name]}, seed {seed}", mode="lines", legendgroup=name, showlegend=False,
                                line=dict(color=colours[name], width=1), opacity=0.45,
                                hovertemplate=f"{labels[name]}, seed {seed} ({run_id})<br>epoch %{{x}}: %{{y:.1%}} "
                                              f"{_error_label(metric)}<extra></extra>"),
                           run[["epoch", metric]].dropna()))
    for column, dash, width in ((metric, None, 3.5), *(((beside, "dash", 2),) if beside else ())):
        for name, _ in arms:
            runs = frame[frame["arm"] == name]
            if not len(runs) or column not in runs:
                continue
            mean = runs.groupby("epoch", sort=True)[column].mean().dropna().reset_index()
            count = runs["run_id"].nunique()
            label = (f"{labels[name]}" + (f" (mean of {count} runs)" if count > 1 else "") if column == metric
                     else f"{labels[name]}: {_error_label(column)}")
            series.append((dict(name=label, mode="lines+markers" if last <= 40 else "lines", legendgroup=name,
                                line=dict(color=colours[name], width=width, dash=dash), marker=dict(size=5),
                                hovertemplate=f"{label}<br>epoch %{{x}}: %{{y:.1%}} {_error_label(column)}"
                                              "<extra></extra>"), mean))

    def points(data: pd.DataFrame, column: str, upto: int) -> dict:
        shown = data[data["epoch"] <= upto]
        return dict(x=shown["epoch"].tolist(), y=shown[column].tolist())

    def column_of(data: pd.DataFrame) -> str:
        return next(c for c in data.columns if c != "epoch")

    for style, data in series:
        fig.add_trace(go.Scatter(**style, **points(data, column_of(data), last)))
    values = [v for _, data in series for v in data[column_of(data)].tolist()]
    top = max([*values, threshold or 0.0, 0.1])
    fig.update_yaxes(title_text=_error_label(metric) + (f" (dashed: {_error_label(beside)})" if beside else ""),
                     tickformat=".0%", range=[0, min(1.0, top * 1.08 + 0.02)])
    fig.update_xaxes(title_text="epoch", range=[0.5, max(last, 1) + 0.5], dtick=1 if last <= 20 else None)
    if threshold is not None:
        fig.add_hline(y=threshold, line_dash="dash", line_color="#444", line_width=1.5,
                      annotation_text=threshold_label or f"{threshold:.0%}", annotation_position="top right")
    for name, epoch in (marks or {}).items():
        if name in colours and epoch is not None:
            fig.add_vline(x=epoch, line_dash="dot", line_color=colours[name], line_width=1.5,
                          annotation_text=f"{labels[name]}: {epoch:.1f} epochs", annotation_position="bottom right",
                          annotation_font_color=colours[name])

    def heading(upto: int) -> dict:  # the same font in every frame: a frame's title replaces the theme's
        return dict(text=f"Epoch {upto} of {last}" if last else "No epochs yet", x=0, xanchor="left",
                    font=dict(size=15, weight="bold"))

    if last:
        fig.frames = [go.Frame(name=str(k), data=[go.Scatter(**points(data, column_of(data), k)) for _, data in series],
                               traces=list(range(len(series))), layout=dict(title=heading(k)))
                      for k in range(1, last + 1)]
        steps = [dict(method="animate", label=str(k),
                      args=[[str(k)], dict(mode="immediate", frame=dict(duration=0, redraw=True),
                                           transition=dict(duration=0))]) for k in range(1, last + 1)]
        fig.update_layout(
            sliders=[dict(active=last - 1, steps=steps, x=0.12, len=0.88, y=0, yanchor="top", pad=dict(t=45),
                          currentvalue=dict(prefix="Epoch ", font=dict(size=13)))],
            updatemenus=[dict(type="buttons", direction="left", x=0.0, y=0, xanchor="left", yanchor="top",
                              pad=dict(t=52, r=10), showactive=False, buttons=[
                                  dict(label="▶ Play", method="animate",
                                       args=[None, dict(frame=dict(duration=PLAY_FRAME_MS, redraw=True),
                                                        fromcurrent=False, transition=dict(duration=0),
                                                        mode="immediate")]),
                                  dict(label="❚❚", method="animate",
                                       args=[[None], dict(frame=dict(duration=0, redraw=False), mode="immediate",
                                                          transition=dict(duration=0))])])])
    fig.update_layout(title=heading(last), height=500, margin=dict(l=10, r=10, t=60, b=10),
                      legend=dict(orientation="h", x=1, xanchor="right", y=1.02, yanchor="bottom"),
                      hovermode="closest")
    return fig



# --- The page's parts -------------------------------------------------------------------------

BADGES = {"agrees": "green", "disagrees": "red", "within noise": "orange", "too few runs": "violet",
          "not run yet": "gray"}
PICK = "claims_pick"  # the claim shown (also ?claim=NAME in the address)
QUEUED = "claims_queued"  # (claim, run ids) queued by the last Run it here, said after the rerun
TIMED = "claims_timed"  # {(claim, size, data, scale, runs): seconds} timed here by "Time an epoch here"
SIZES = {"cpu": "CPU: CIFAR-10 and the compact network, as the bundled runs",
         "gpu": "GPU: the paper's network on your ImageNet-layout folder"}
CPU_DATA = {"cifar10": "CIFAR-10 (as the bundled runs; downloaded once, 170 MB)",
            "sample": "The bundled CIFAR-10 sample (2,000 training images: works offline, noisier)",
            "folder": "An image folder of your own"}
NOISE = ("Within noise: the arms' means differ by less than two standard errors of their difference "
         "(√(sd²/n) of each arm, added in quadrature), so these seeds cannot tell the arms apart.")


def badge(verdict: str) -> str:
    """A verdict as a coloured badge (Markdown)."""
    return f":{BADGES.get(verdict, 'gray')}-badge[{verdict}]"


def verdicts() -> dict[str, dict]:
    """Every claim's verdict from the runs as they are now: the user's, else the bundled ones."""
    return {v["name"]: v for v in claims.claims_json(runs_root())}


def claim_picker(found: dict[str, dict]) -> str:
    """The seven claims, each with its verdict's badge; returns the picked claim's name."""
    names = list(claims.CLAIMS)
    if st.session_state.get(PICK) not in names:
        wanted = st.query_params.get("claim")
        st.session_state[PICK] = wanted if wanted in names else names[0]
    name = st.radio("Claim", names, key=PICK, label_visibility="collapsed",
                    format_func=lambda n: f"{claims.CLAIMS[n].number}. {claims.CLAIMS[n].title} "
                                          f"{badge(found[n]['verdict'])}")
    if st.query_params.get("claim") != name:
        st.query_params["claim"] = name
    return name


# The terms each claim's title and quote lean on, for the tooltip beside its title.
TERMS = {"relu": ("ReLU", "tanh", "error rate", "epoch"), "lrn": ("LRN", "error rate"),
         "overlapping-pool": ("overlapping pooling", "error rate"), "dropout": ("dropout", "overfitting", "epoch"),
         "augmentation": ("augmentation", "PCA lighting", "overfitting"), "groups": ("groups", "filter", "GPU"),
         "depth": ("conv", "layer", "percentage points")}


def quote(claim) -> None:
    """The claim in the paper's words, with where it is said."""
    st.subheader(f"{claim.number}. {claim.title}", help=glossary.helps(*TERMS.get(claim.name, ("AlexNet",))))
    st.markdown(f"> *\u201c{claim.quote}\u201d*\n>\n> \u2014 Krizhevsky, Sutskever and Hinton (2012), "
                f"{claim.section}")


def _unit(metric: str) -> str:
    return claims.METRICS[metric][0]


def _figure(value: float | None, metric: str, signed: bool = False) -> str:
    """A figure in its unit: "4.1x" for a ratio, "+0.8 points" (ours, signed) or "2 points" (the paper's)."""
    if value is None:
        return "-"
    if claims.METRICS[metric][1]:
        return f"{value:.1f}x" if signed else f"{value:g}x"
    return f"{value:+.1f} points" if signed else f"{value:g} points"


def _arm_figure(stats: dict, unit: str) -> str:
    if not stats.get("n"):
        return "no finished run"
    spread = f" ± {stats['sd']:.1f}" if stats.get("sd") is not None else ""
    if unit == "points":
        return f"{stats['mean']:.1f}%{spread}"
    cut = sum(stats.get("censored") or [])
    return (">= " if cut else "") + f"{stats['mean']:.1f}{spread} epochs" + (
        f" ({cut} of {stats['n']} runs never reached it)" if cut else "")


def _runs_data(runs: list[dict]) -> set:
    return {r.get("data") for r in runs}


def split_words(metric: str, runs: list[dict]) -> str:
    """Which images a measure was taken on, from the runs' data: "5,000 held-out CIFAR-10 images"."""
    base = claims.CPU_BASE
    data = _runs_data(runs)
    if data <= {"cifar10"}:
        held_out = f"{round(claims.CIFAR10_TRAIN_IMAGES * base['val_split']):,} held-out CIFAR-10 images"
        train = f"{base['train_per_class'] * 10:,} CIFAR-10 training images"
    else:
        named = ", ".join(sorted(plain(d, 80) for d in data if d)) or "their data"
        held_out, train = f"the validation images of {named}", f"the training images of {named}"
    return {"epochs_to_error": f"training error on {train}",
            "val_error": f"validation error, {held_out}",
            "gap": f"training accuracy on {train} minus validation accuracy on {held_out}",
            "converge": f"validation accuracy, {held_out}"}.get(metric, held_out)


def figures(claim, result: dict, runs: list[dict]) -> None:
    """The paper's figure beside ours, measured the same way, with each arm's mean and the split."""
    measure = claim.measures[0]
    paper_arm, other_arm = claim.arm(measure.paper_arm), claim.arm(measure.other_arm)
    ratio = claims.METRICS[measure.metric][1]
    slow, fast = (paper_arm, other_arm) if measure.higher else (other_arm, paper_arm)
    first, second = (slow, fast) if ratio else (paper_arm, other_arm) if measure.higher else (other_arm, paper_arm)
    compared = f"{measure.title}: {first.label} {'÷' if ratio else 'minus'} {second.label}"
    st.markdown(f"**{compared[:1].upper()}{compared[1:]}**")
    c = st.columns(2)
    c[0].metric("The paper", _figure(measure.paper_effect, measure.metric) if measure.paper_effect else "no figure",
                help=f"The paper's own figure: {measure.paper}")
    c[0].caption(plain(measure.paper, 300))
    ours = result["ratio"] if ratio else result["effect"]
    shown = (_figure(ours, measure.metric, signed=True) if ours is not None
             else result["verdict"] if result["verdict"] in ("not run yet", "too few runs") else "-")
    c[1].metric("Ours", shown, help="Measured here, the same way as the paper's figure: positive is the "
                                    "paper's direction")
    if result.get("se") is not None:
        c[1].caption(f"2 standard errors: {2 * result['se']:.1f} {'epochs' if _unit(measure.metric) == 'epochs' else 'points'}")
    lines = [f"**{plain(result['arms'][arm.name]['label'], 80)}**: "
             f"{_arm_figure(result['arms'][arm.name], _unit(measure.metric))}" for arm in claim.arms
             if arm.name in result["arms"]]
    st.markdown("  \n".join(lines))
    seeds = min((s.get("n") or 0 for s in result["arms"].values()), default=0)
    count = seeds if seeds else len(claims.SEEDS)
    st.caption(f"{split_words(measure.metric, runs)}; mean ± sd over {count} seed{'s' if count != 1 else ''}"
               + ("" if seeds else ", once they have run"))


def verdict(claim, result: dict) -> None:
    """The verdict in words, its second parts, what differs from the paper, and where it comes from."""
    words = result["ours"]
    if result["verdict"] == "not run yet":
        words = ("No finished run of this experiment yet" + (": its runs are queued or training." if "queued" in words
                                                             else ". Run it here, below, queues its runs."))
    st.markdown(f"{badge(result['verdict'])} {plain(words, 1200)}",
                help=glossary.helps("verdict", "arm", "seed", "standard error", "within noise"))
    for part in result.get("parts") or []:
        st.markdown(f"{badge(part['verdict'])} **{plain(part['title'], 120)}** (the paper: "
                    f"{plain(part['paper'], 300)}): {plain(part['ours'], 1000)}")
    measured = ("agrees", "disagrees", "within noise")
    if result["verdict"] in measured or any(part["verdict"] in measured for part in result.get("parts") or []):
        st.caption(NOISE)
    st.caption(f"What differs from the paper's setting: {plain(result['differs'], 2000)}.")


def _count(n: int, thing: str) -> str:
    return f"{n:,} {thing}" + ("" if n == 1 else "s")


def _machine(runs: list[dict]) -> str:
    """Where runs were trained, from their recorded environment: "a 2-core AMD EPYC CPU"."""
    for run in runs:
        env = fileio.read_object(Path(run["path"]) / layout.CONFIG).get("environment")
        device = env.get("device") if isinstance(env, dict) else None
        if isinstance(device, dict) and device.get("kind"):
            cores = device.get("cores")
            size = f"{cores}-core " if device.get("kind") == "CPU" and isinstance(cores, int) else ""
            name = f"{plain(device['name'], 60)} " if device.get("name") else ""
            return f"a {size}{name}{device['kind']}"
    return "a 2-core CPU"


def source(result: dict, runs: list[dict]) -> None:
    """Whether the verdict is the bundled one or the user's own runs', in words."""
    yours = result.get("yours") or {}
    time = f", {format_duration(result['seconds'])} of training" if result.get("seconds") else ""
    if result["source"] == "bundled":
        mine = yours.get("finished", 0), len(yours.get("pending") or [])
        st.info(f"Bundled result (measured on {_machine(runs)} when the app was made: {_count(len(result['runs']), 'run')}"
                f"{time}). Your own runs of this experiment replace it once every arm has "
                f"{claims.MIN_SEEDS} finished seeds" + (f"; you have {mine[0]} finished and {mine[1]} on the way."
                                                         if any(mine) else "."), icon=":material/inventory_2:")
    elif result["runs"]:
        complete = result["verdict"] not in ("not run yet", "too few runs")
        bundle = claims.bundled_root()
        replaced = complete and bundle.is_dir() and any(p.is_dir() for p in bundle.iterdir())
        st.success(("Your runs replace the bundled result: " if replaced else "Measured from your runs: ")
                   + f"{_count(len(result['runs']), 'finished run')} in your runs folder{time}.", icon=":material/person:")


def curve_columns(claim) -> tuple[str, float | None, str, str | None]:
    """(the error the curves show, the threshold, its label, the error drawn dashed beside it)."""
    metrics = [m.metric for m in claim.measures]
    if metrics[0] == "epochs_to_error":
        return "train_error", claim.threshold, f"{claim.threshold:.0%} training error: the paper's threshold", None
    return "val_error", None, "", "train_error" if "gap" in metrics else None


def curves(claim, result: dict, frame: pd.DataFrame) -> None:
    """The experiment's curves overlaid, with Play; for a threshold, where each arm's mean reaches it."""
    if not len(frame):
        st.info("No curves yet: this experiment has no runs here. Run it below.", icon=":material/show_chart:")
        return
    metric, threshold, threshold_label, beside = curve_columns(claim)
    arms = [(arm.name, arm.label.removeprefix("with ")) for arm in claim.arms]
    marks = None
    if threshold is not None:  # where each arm's mean reaches the threshold (none that did not in every run)
        marks = {name: stats["mean"] for name, stats in result["arms"].items()
                 if stats.get("n") and not any(stats.get("censored") or [])}
    fig = curves_figure(frame, arms, metric, threshold, threshold_label, beside, marks)
    st.plotly_chart(fig, key=f"claims_curves_{claim.name}", width="stretch", config={"displayModeBar": False})
    st.caption("Thin lines: each run (seed); bold: each arm's mean"
               + ("; dotted: the epoch each arm reaches the threshold, on average" if marks else "")
               + ". Press Play to replay the runs epoch by epoch, or drag the slider."
               + (" Dashed: the training error, for the gap between it and the validation error." if beside else ""))


def runs(claim, found: dict[str, list[dict]], frame: pd.DataFrame) -> None:
    """The runs the verdict reads, as a small table, each one click away on the Runs page."""
    rows = [r for arm in claim.arms for r in found.get(arm.name, [])]
    if not rows:
        return
    ends = frame.sort_values("epoch").groupby("run_id").tail(1).set_index("run_id") if len(frame) else None
    labels = {arm.name: arm.label for arm in claim.arms}
    arm_of = {r["run_id"]: arm for arm, runs_ in found.items() for r in runs_}

    def last(run_id: str, column: str):
        known = ends is not None and run_id in ends.index
        return (100 * float(ends.loc[run_id, column]) if column.endswith("error") else int(ends.loc[run_id, column])) \
            if known else None

    table = pd.DataFrame([{
        "run": r["run_id"], "arm": labels.get(arm_of[r["run_id"]], arm_of[r["run_id"]]), "seed": r["seed"],
        "state": r["state"], "epochs": last(r["run_id"], "epoch") or 0, "train_error": last(r["run_id"], "train_error"),
        "val_error": last(r["run_id"], "val_error"), "time": format_duration(r.get("elapsed_s")),
        "data": r.get("data") or ""} for r in rows])
    shown = [c for c in table.columns if c != "data" or set(table["data"]) != {claims.CPU_BASE["data"]}]
    st.dataframe(table[shown], hide_index=True, width="stretch", key=f"claims_runs_{claim.name}", column_config={
        "run": "Run", "arm": st.column_config.TextColumn("Arm", help=glossary.help("arm")),
        "seed": st.column_config.NumberColumn("Seed", help=glossary.help("seed")), "state": "State", "epochs": "Epochs",
        "train_error": st.column_config.NumberColumn("Training error", format="%.1f%%", help=(
            f"At the run's last epoch, on its training images. {glossary.help('error rate')}")),
        "val_error": st.column_config.NumberColumn("Validation error", format="%.1f%%", help=(
            f"At the run's last epoch, on its held-out images. {glossary.help('error rate')}")),
        "time": "Training time", "data": "Data"})
    st.caption("Open a run on the Runs page:")
    columns = st.columns(len(claim.arms))
    for column, arm in zip(columns, claim.arms):
        arm_runs = found.get(arm.name, [])
        seeds = [r["seed"] for r in arm_runs]
        column.markdown(f"**{plain(arm.label, 80)}**")
        for r in arm_runs:
            named = f": {r['run_id']}" if seeds.count(r["seed"]) > 1 else ""
            column.page_link("pages/runs.py", label=f"seed {r['seed']}{named}", icon=":material/folder_open:",
                             query_params={"run": r["run_id"]}, help=f"Run {r['run_id']} on the Runs page")


def imagenet_layout_problem(path: str) -> str | None:
    """What keeps `path` from being an ImageNet-layout folder (PATH/train/<class>/* and
    PATH/val/<class>/*, or a prepared folder), in words; None when it is one."""
    from alexnet_core.inputs import prepared_format

    folder = Path(path).expanduser()
    if not folder.exists():
        return f"{plain(path, 200)} does not exist. Give the folder that holds train/ and val/."
    if not folder.is_dir():
        return f"{plain(path, 200)} is a file. Give the folder that holds train/ and val/."
    if prepared_format.is_prepared(folder):
        return None
    missing = [s for s in ("train", "val") if not (folder / s).is_dir()
               or not any(p.is_dir() for p in (folder / s).iterdir())]
    if missing:
        return (f"{plain(path, 200)} is not laid out as ImageNet: it has no {' and no '.join(f'{m}/' for m in missing)}"
                " with a folder per class. The GPU size needs PATH/train/<class>/<image> and "
                "PATH/val/<class>/<image> (as ILSVRC's), or a folder made by `python -m alexnet_core prepare`.")
    return None


def _estimate_words(estimate: dict, timed: float | None) -> str:
    runs_, epochs = estimate["runs"], estimate["epochs"]
    per_run = f"{runs_} runs of {epochs // runs_} epochs" if runs_ and epochs % runs_ == 0 else \
        f"{runs_} runs, {epochs} epochs in all"
    if timed is not None:
        return (f"About **{format_duration(timed)}** on this machine: {per_run}, from an epoch of each arm timed "
                "here (a few training and validation steps).")
    if estimate["seconds"] is None:
        return (f"**{per_run}**; how long they take is not known yet: {plain(estimate['measured'], 200)}. "
                "Time an epoch here, or let the first run tell (the Train page shows its time per epoch).")
    return (f"About **{format_duration(estimate['seconds'])}** on this machine: {per_run}, "
            f"{plain(estimate['measured'], 200)}.")


def _image_counts(data: str, val_split: float, per_class: int | None) -> tuple[int, int, int] | str:
    """(classes, training images an epoch, validation images) of the experiment's data, or why not."""
    from alexnet_ui.train_view import describe_source

    if data == "cifar10":  # known without loading it: 5,000 training images a class, the tail held out
        kept = 5_000 - round(5_000 * val_split)
        return 10, min(kept, per_class or kept) * 10, round(claims.CIFAR10_TRAIN_IMAGES * val_split)
    described = describe_source(data, val_split)
    if isinstance(described, str):
        return described
    classes, n_train, n_val = described[:3]
    return len(classes), min(n_train, per_class * len(classes)) if per_class else n_train, n_val


def time_here(name: str, size: str, data: str | None, scale: dict) -> float | str:
    """Seconds the experiment's missing runs need on this machine, from an epoch of each arm timed
    here (the Train page's estimate: the real step and input pipeline), or why it cannot be timed."""
    import json
    from dataclasses import asdict

    from alexnet_ui.train_view import epoch_estimate

    missing = claims.missing_runs(name, size, data, runs_root(), **scale)
    if not missing:
        return 0.0
    base = claims.base_settings(size, data, **scale)
    counts = _image_counts(base["data"], float(base["val_split"]), base.get("train_per_class"))
    if isinstance(counts, str):
        return counts
    per_arm = {}
    for arm, _, config in missing:
        if arm.name not in per_arm:
            per_arm[arm.name] = epoch_estimate(json.dumps(asdict(config), sort_keys=True), *counts)
    return sum(per_arm[arm.name] * config.epochs for arm, _, config in missing)


def run_it_here(claim) -> None:
    """Queue the experiment's missing runs, with the time they need, then say what was queued."""
    st.subheader("Run it here")
    done = st.session_state.get(QUEUED)
    if done and done[0] == claim.name:
        _queued_note(done[1])
    size = st.radio("Size", list(SIZES), format_func=SIZES.get, horizontal=True, key="claims_size",
                    help=glossary.helps("CPU", "GPU", "seed"))
    data, scale = None, {}
    if size == "cpu":
        kind = st.radio("Data", list(CPU_DATA), format_func=CPU_DATA.get, horizontal=True, key="claims_data")
        if kind == "sample":
            data = "sample"
        elif kind == "folder":
            data = st.text_input("Image folder", key="claims_folder", placeholder="PATH/<class>/<image>").strip()
            if not data:
                st.info("Enter the path of an image folder laid out as PATH/<class>/<image>.")
                return
        if kind != "cifar10":
            st.caption("Runs on other data count for this experiment too: once every arm has "
                       f"{claims.MIN_SEEDS} finished seeds, their verdict replaces the bundled one (the table "
                       "names their data).")
    else:
        if device_info()["kind"] != "GPU":
            st.caption(":material/warning: This machine has no GPU: the paper's network takes hours an epoch here.")
        data = st.text_input("Your ImageNet-layout folder", key="claims_gpu_data",
                             placeholder="PATH with train/<class>/<image> and val/<class>/<image>").strip()
        c1, c2 = st.columns(2)
        epochs = c1.number_input("Epochs", 1, 1000, claims.GPU_BASE["epochs"], key="claims_gpu_epochs")
        per_class = c2.number_input("Training images per class (0: all)", 0, 100_000, 0, step=100,
                                    key="claims_gpu_per_class")
        scale = {"epochs": int(epochs), "train_per_class": int(per_class) or None}
        if not data:
            st.info("Enter the path of your ImageNet-layout folder.", icon=":material/folder:")
            return
        problem = imagenet_layout_problem(data)
        if problem:
            st.error(problem, icon=":material/folder_off:")
            return
    with user_errors() as outcome:
        estimate = claims.estimate_seconds(claim.name, size, runs_root(), data, **scale)
    if outcome.failed:
        return
    if size == "cpu" and data is not None:  # epochs measured on CIFAR-10 say nothing of other data: time one here
        estimate = {**estimate, "seconds": None,
                    "measured": "the measured epochs are CIFAR-10's, and this is other data"}
    if not estimate["runs"]:
        st.success("Every run of this experiment is in your runs folder already (finished, queued or training): "
                   "there is nothing to queue.", icon=":material/check_circle:")
        return
    key = (claim.name, size, data, tuple(sorted(scale.items())), estimate["runs"])
    timed = st.session_state.get(TIMED, {}).get(key)
    st.markdown(_estimate_words(estimate, timed))
    if timed is None and estimate["seconds"] is None:
        if st.button("Time an epoch here", icon=":material/timer:", key="claims_time",
                     help="Time a few training and validation steps of each arm on this machine (seconds to a "
                          "minute)"):
            with st.spinner("Timing a few training steps of each arm..."), user_errors() as outcome:
                seconds = time_here(claim.name, size, data, scale)
            if not outcome.failed:
                if isinstance(seconds, str):
                    st.error(plain(seconds, 600), icon=":material/folder_off:")
                else:
                    st.session_state.setdefault(TIMED, {})[key] = seconds
                    st.rerun()
    if st.button("Run it here", type="primary", icon=":material/play_arrow:", key="claims_run",
                 help="Queue the runs this experiment still needs; they train one after another, also with no "
                      "browser open"):
        with st.spinner("Checking the data and queueing the runs..."), user_errors() as outcome:
            queued = claims.queue_experiment(claim.name, size, data, runs_root(), **scale)
        if not outcome.failed:
            st.session_state[QUEUED] = (claim.name, [p.name for p in queued])
            st.rerun()


def _queued_note(run_ids: list[str]) -> None:
    from alexnet_core.train import queue

    positions = {e["run_id"]: e["position"] for e in queue.entries(runs_root())}
    waiting = [positions[r] for r in run_ids if r in positions]
    where = (f"; {len(waiting)} wait in the queue (positions {min(waiting)} to {max(waiting)})" if waiting else "")
    st.success(f"Queued {_count(len(run_ids), 'run')}{where}. They train one after another, also with the browser closed; "
               "the verdict updates as they finish.", icon=":material/queue:")
    c1, c2 = st.columns(2)
    c1.page_link("pages/train.py", label="Watch the first one on Train", icon=":material/model_training:",
                 query_params={"run": run_ids[0]} if run_ids else None)
    c2.page_link("pages/runs.py", label="See them on Runs", icon=":material/folder_open:")
