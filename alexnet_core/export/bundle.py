"""A run exported as a self-contained folder: model, config, evaluation on named data, card."""

from __future__ import annotations

# Imports inside functions are deliberate: TensorFlow and Keras, and the modules that reach them,
# load on first use, so importing this module (the app's pages, the command line) stays light.
import shutil
import time
from pathlib import Path

from alexnet_core.store import fileio, layout, liveness


def export_run(src: Path, dest: Path, evaluate_on: str | list[str] | None = None, split: str | None = None,
               read_only: bool = False, headline: str | None = None, data_description: str | None = None) -> Path:
    """A compact, read-only copy of a run: settings, curves, status and the model without its
    optimizer state; optionally with its accuracy on data sources recorded in status.json.

    `headline` describes the data of the last source in `evaluate_on` and makes its accuracy the
    one the app quotes the model by; `data_description` says in config.json what it trained on."""
    from alexnet_core.analysis.evaluation import evaluate
    from alexnet_core.predict.inference import float32_model, load_model

    src, dest = Path(src), Path(dest)
    if not (src / layout.CONFIG).exists():
        raise layout.RunError(f"{src} is not a run folder (no {layout.CONFIG})")
    if liveness.read_status(src).get("state") in layout.ACTIVE_STATES:
        raise layout.RunError(f"{src.name} is still training: stop it or wait for it to finish")
    if dest.exists():
        raise layout.RunError(f"{dest} already exists")
    sources = [evaluate_on] if isinstance(evaluate_on, str) else list(evaluate_on or [])
    if headline and not sources:
        raise layout.RunError("A headline describes an evaluation: give the data to evaluate on as well")
    loaded = load_model(str(src))
    dest.mkdir(parents=True)
    try:  # a copy that cannot be finished (bad data to evaluate on, a full disk) is not left half-made
        for name in (layout.CONFIG, layout.METRICS, layout.STEPS, layout.LABEL):
            if (src / name).exists():
                shutil.copyfile(src / name, dest / name)
        if (src / layout.SNAPSHOTS).is_dir():
            shutil.copytree(src / layout.SNAPSHOTS, dest / layout.SNAPSHOTS, ignore=shutil.ignore_patterns(".*"))
        model = float32_model(loaded.model, portable=True)  # loaded without its optimizer, in float32
        with fileio.atomic_write(dest / layout.MODEL, suffix=".keras") as tmp:
            model.save(tmp)
        status = fileio.read_object(src / layout.STATUS)
        status.update(pid=None, host=None, exported_from=str(src), exported=time.time())
        if sources:
            exported = load_model(str(dest / layout.MODEL))
            status["evaluations"] = []
            for source in sources:
                result = evaluate(exported, source, split, use_cache=False)
                status["evaluations"].append({"data": source, "split": result.split, "n": result.n,
                                              "accuracy": result.accuracy(), "top5_accuracy": result.top_k_accuracy(5)})
            if headline:
                status["evaluations"][-1].update(headline=True, description=headline)
        if data_description:
            fileio.write_json_atomic(dest / layout.CONFIG, {**fileio.read_object(dest / layout.CONFIG), "data_description": data_description})
        fileio.write_json_atomic(dest / layout.STATUS, status)
        if read_only:
            (dest / layout.READ_ONLY).write_text("bundled run: the app shows it but never changes it\n")
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    return dest
