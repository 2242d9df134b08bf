"""The training loop: one `tf.function` step run through `strategy.run`, under any strategy.

`train(config, run_dir)` trains a run folder, fresh or resumed, and returns its final status.
Every epoch ends with a commit (checkpoints.py); an epoch is recorded only when all its steps
ran, so a stop or a kill mid-epoch loses that epoch's partial progress and nothing else: the
resumed run redoes it from the last commit, and the optimizer's step count always equals
completed epochs x steps per epoch.

Losses are averaged over the global batch (`tf.nn.compute_average_loss`) and the metrics are
sums reduced over every replica, so they are the same on one device or many.

Under MultiWorkerMirroredStrategy (TF_CONFIG) every worker runs this same loop on its own shard
of the data. The chief (worker 0) writes the run folder; every other worker reads it (to resume)
and writes only a scratch folder of its own, removed when it ends. Every decision that ends an
epoch early (a stop request, divergence) is taken from values reduced over all replicas, so all
workers take it at the same step; a worker that dies makes the others' next collective fail, and
they stop with a message naming it.
"""

from __future__ import annotations

import math
import os
import platform
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import asdict
from pathlib import Path

import numpy as np

from alexnet_core.settings.config import ConfigError, TrainConfig
from alexnet_core.store import fileio, layout, liveness
from alexnet_core.train.checkpoints import CheckpointStore
from alexnet_core.train.monitor import Monitor, Progress, StatusWriter, StepLog, identity

EXPLODE_FACTOR = 50.0  # a loss this many times its starting value has diverged
PLATEAU = {  # Keras ReduceLROnPlateau's settings for the two schedules that react to a plateau
    "step": {"factor": 0.1, "patience": 3, "mode": "max"},  # the paper: /10 when validation stalls
    "plateau": {"factor": 0.5, "patience": 2, "mode": "min"},  # the Keras seed: halve on a loss plateau
}
MIN_LR = 1e-6
MIN_DELTA = 1e-4


JOIN_PIPE_ENV = "ALEXNET_JOIN_PIPE"  # a pipe to the process that supervises this worker's join (join_watch.py)


def tell_supervisor(line: str) -> None:
    """One line to the supervising process, if there is one: `joining`, `joined`, `scratch PATH`."""
    fd = os.environ.get(JOIN_PIPE_ENV)
    if not fd:
        return
    try:
        os.write(int(fd), (line + "\n").encode())
    except (OSError, ValueError):
        pass


class WorkerLost(RuntimeError):
    """Another worker of a multi-worker run stopped answering."""


class StopBeforeTraining(Exception):
    """A stop (Stop, `stop RUN`, SIGTERM, Ctrl-C) that came before the first step: the run ends
    stopped as it was. `where` says what the trainer was doing."""

    def __init__(self, where: str):
        super().__init__(where)
        self.where = where


def strategy_name(strategy) -> str:
    """The strategy's public name (MultiWorkerMirroredStrategy's class is CollectiveAllReduceStrategy)."""
    import tensorflow as tf

    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return "MultiWorkerMirroredStrategy"
    return type(strategy).__name__


def environment(strategy=None, cluster=None) -> dict:
    import keras
    import tensorflow as tf

    from alexnet_core import __version__
    from alexnet_core.train.devices import describe

    env = {"alexnet_core": __version__, "tensorflow": tf.__version__, "keras": keras.__version__,
           "python": platform.python_version(), "device": describe()}
    if strategy is not None:
        env.update(strategy=strategy_name(strategy), replicas=int(strategy.num_replicas_in_sync))
    if cluster is not None:
        env.update(workers=list(cluster.workers))
    return env


def build_optimizer(config: TrainConfig, steps_per_epoch: int, loss_scaling: bool = False):
    """The configured optimizer and learning-rate schedule; wrapped for float16 loss scaling if asked."""
    import keras

    total = max(1, config.epochs * steps_per_epoch)
    warmup = int(config.warmup_epochs * steps_per_epoch)
    lr = config.lr
    if config.schedule == "cosine":
        lr = keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=lr / 100 if warmup else lr, decay_steps=max(1, total - warmup), alpha=0.0,
            warmup_target=lr if warmup else None, warmup_steps=warmup)
    if config.optimizer == "sgd":
        optimizer = keras.optimizers.SGD(lr, momentum=0.9, weight_decay=config.weight_decay or None)
    elif config.optimizer == "adamw":
        optimizer = keras.optimizers.AdamW(lr, weight_decay=config.weight_decay)
    else:
        optimizer = keras.optimizers.Adam(lr)
    return keras.optimizers.LossScaleOptimizer(optimizer) if loss_scaling else optimizer


def plateau_learning_rate(config: TrainConfig, history: list[dict], monitor: str) -> float:
    """The learning rate of the next epoch under `step`/`plateau`, from the metrics so far.

    The same rule as keras.callbacks.ReduceLROnPlateau (cooldown 0), computed from the committed
    history instead of kept in a callback, so it survives stops, kills and resumes exactly.
    """
    rule = PLATEAU[config.schedule]
    lr, best, wait = config.lr, None, 0
    for row in history:
        value = row.get(monitor)
        if value is None or not math.isfinite(value):
            continue
        improved = best is None or (value > best + MIN_DELTA if rule["mode"] == "max" else value < best - MIN_DELTA)
        if improved:
            best, wait = value, 0
            continue
        wait += 1
        if wait >= rule["patience"]:
            if lr > MIN_LR:
                lr = max(lr * rule["factor"], MIN_LR)
            wait = 0
    return lr


def divergence(loss: float, initial: float | None) -> str | None:
    """Why the loss counts as diverged, or None."""
    if not math.isfinite(loss):
        return "became NaN" if math.isnan(loss) else "became infinite"
    if initial is not None and loss > EXPLODE_FACTOR * max(initial, 1.0):
        return f"exploded to {loss:.3g} (it started at {initial:.3g})"
    return None


PER_IMAGE = ("label", "predicted")  # what eval_step returns per image, beside its sums


def make_steps(model, optimizer, strategy, loss_fn, global_batch: int, top_k: int, jit: bool = False,
               per_image: bool = True):
    """(train_step(iterator, stop=None), eval_step(batch)): one compiled step each, run on every
    replica; each returns the batch's loss sum, correct, top-k correct and count summed over
    replicas. Batches of uint8 pixels are standardised in the step (preprocess.as_input).
    `stop` (a float scalar tensor, this worker's stop wish) comes back summed over every replica
    as "stop", so all workers see the same answer after the same step. `jit` compiles the
    training step with XLA. `per_image`: eval_step also returns every image's label and predicted
    class (PER_IMAGE), for the epoch snapshots."""
    import tensorflow as tf

    from alexnet_core.inputs.preprocess import as_input

    def sums(y, probs, per_example):
        labels = tf.argmax(y, axis=-1, output_type=tf.int32)
        probs = tf.cast(probs, tf.float32)
        hit = tf.equal(tf.argmax(probs, axis=-1, output_type=tf.int32), labels)
        return {"loss": tf.reduce_sum(tf.cast(per_example, tf.float32)),
                "correct": tf.reduce_sum(tf.cast(hit, tf.float32)),
                "top5": tf.reduce_sum(tf.cast(tf.math.in_top_k(labels, probs, top_k), tf.float32)),
                "count": tf.cast(tf.shape(y)[0], tf.float32)}

    def replica_train(x, y, stop):
        with tf.GradientTape() as tape:
            probs = model(as_input(x), training=True)
            per_example = loss_fn(y, probs)
            loss = tf.nn.compute_average_loss(per_example, global_batch_size=global_batch)
            if model.losses:
                loss += tf.nn.scale_regularization_loss(tf.add_n(model.losses))
            scaled = optimizer.scale_loss(loss)
        grads = tape.gradient(scaled, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return {**sums(y, probs, per_example), "stop": tf.identity(stop)}  # one value per replica

    def replica_eval(x, y):
        def run():
            probs = model(as_input(x), training=False)
            out = sums(y, probs, loss_fn(y, probs))
            if per_image:
                out.update(label=tf.argmax(y, axis=-1, output_type=tf.int32),
                           predicted=tf.argmax(tf.cast(probs, tf.float32), axis=-1, output_type=tf.int32))
            return out

        def nothing():  # a replica left without images at the end of an uneven split
            out = {key: tf.constant(0.0) for key in ("loss", "correct", "top5", "count")}
            if per_image:
                out.update(label=tf.zeros((0,), tf.int32), predicted=tf.zeros((0,), tf.int32))
            return out

        return tf.cond(tf.shape(x)[0] > 0, run, nothing)

    def reduce(per_replica):  # sums over every replica; per-image values gathered from all of them
        return {k: strategy.gather(v, axis=0) if k in PER_IMAGE else
                strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None) for k, v in per_replica.items()}

    # As Keras does: XLA compiles the per-replica step; reading the iterator stays outside it.
    replica_step = tf.function(replica_train, jit_compile=True, reduce_retracing=True) if jit else replica_train

    @tf.function
    def compiled_step(iterator, stop):
        x, y = next(iterator)
        return reduce(strategy.run(replica_step, args=(x, y, stop)))

    def train_step(iterator, stop=None):
        return compiled_step(iterator, tf.zeros((), tf.float32) if stop is None else stop)

    @tf.function(reduce_retracing=True)
    def eval_step(batch):
        x, y = batch
        return reduce(strategy.run(replica_eval, args=(x, y)))

    return train_step, eval_step


def distributed_eval_dataset(strategy, split, num_classes: int, size: int, batch: int,
                             cache_budget: int = 2**31):
    """`split` in global batches of `batch`, each worker reading its own shard: for eval_step."""
    from alexnet_core.inputs.data import make_dataset

    def shard(context):
        return make_dataset(split, num_classes, size, context.get_per_replica_batch_size(batch),
                            cache_budget=cache_budget,
                            shard=(context.num_input_pipelines, context.input_pipeline_id))

    return strategy.distribute_datasets_from_function(shard)


def evaluate_distributed(eval_step, dataset, prefix: str = "") -> dict:
    """Loss, top-1 and top-k accuracy over a whole distributed dataset: sums reduced over every
    replica (and worker) per batch, divided once at the end, so the numbers do not depend on how
    many replicas shared the work or how unevenly the last batches fell. Also every image's
    `label` and `predicted` class (int arrays, gathered from every replica; in file order on one
    worker)."""
    total = dict.fromkeys(("loss", "correct", "top5", "count"), 0.0)
    gathered: dict[str, list] = {key: [] for key in PER_IMAGE}
    for batch in dataset:
        out = eval_step(batch)
        for key in PER_IMAGE:
            if key in out:
                gathered[key].append(out.pop(key).numpy())
        out = _numbers(out)
        for key in total:
            total[key] += out[key]
    n = max(total["count"], 1.0)
    return {f"{prefix}loss": total["loss"] / n, f"{prefix}accuracy": total["correct"] / n,
            f"{prefix}top5_accuracy": total["top5"] / n, "images": int(total["count"]),
            **{key: np.concatenate(parts) if parts else np.zeros(0, np.int32) for key, parts in gathered.items()}}


def loss_function(config: TrainConfig):
    import keras

    return keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing, reduction=None)


def _learning_rate(optimizer) -> float:
    try:
        return float(optimizer.learning_rate)
    except (TypeError, ValueError):
        return float("nan")


def _numbers(out: dict) -> dict:
    return {k: float(v) for k, v in out.items()}


def fine_tune_source(config: TrainConfig):
    """(config with the base model's variant, switches and input size; the base Keras model) for
    a run that starts from a trained model's convolutional layers (`init_from`). The new head's
    dropout is the run's own when it sets one."""
    import dataclasses

    from alexnet_core.predict.inference import ModelLoadError, load_model

    try:
        base = load_model(config.init_from)
    except ModelLoadError as exc:
        raise ConfigError(f"Cannot fine-tune from {config.init_from!r}: {exc}") from exc
    record = fileio.read_object(base.run_dir / layout.CONFIG) if base.run_dir else {}
    if not isinstance(record.get("variant"), str):
        raise ConfigError(f"Cannot fine-tune from {config.init_from!r}: its settings are not recorded. Give a run "
                          "folder or 'demo'.")
    switches = dict(record["switches"]) if isinstance(record.get("switches"), dict) else {}
    if "dropout" in config.switches:  # only the new dense layers drop out
        switches["dropout"] = config.switches["dropout"]
    size = record.get("input_size") if isinstance(record.get("input_size"), int) else None
    try:
        tuned = dataclasses.replace(config, variant=record["variant"], switches=switches, input_size=size)
    except ConfigError as exc:
        raise ConfigError(f"Cannot fine-tune from {config.init_from!r}: its recorded network is not usable ({exc})") \
            from exc
    return tuned, base.model


def check_fine_tune(config: TrainConfig) -> TrainConfig:
    """The settings of a run that fine-tunes from `config.init_from`, once the base model has
    loaded (safely) and its convolutional layers fit the network the run will build; ConfigError
    naming the problem otherwise. Called before a run folder exists."""
    from alexnet_core.models.variants import build_model

    tuned, base = fine_tune_source(config)
    try:
        target = build_model(tuned.variant, num_classes=2, input_size=tuned.input_size, **tuned.switches)
    except ValueError as exc:
        raise ConfigError(f"Cannot fine-tune from {config.init_from!r}: its recorded network is not usable "
                          f"({exc})") from exc
    copy_features(base, target, dry_run=True)
    return tuned


def copy_features(source, target, freeze: bool = False, dry_run: bool = False) -> list[str]:
    """Copy the weights of `target`'s convolutional part (every layer before the flatten) from
    the layers of the same name in `source`; freeze them if asked. Returns the names copied.
    `dry_run`: only check that every one of them can be copied."""
    kept = []
    for layer in target.layers:
        if layer.name in ("flatten", "avgpool"):
            break
        if not layer.weights:
            continue
        try:
            weights = source.get_layer(layer.name).get_weights()
        except ValueError:
            raise ConfigError(f"The base model has no layer {layer.name!r} to fine-tune from") from None
        if [w.shape for w in weights] != [tuple(w.shape) for w in layer.weights]:
            raise ConfigError(f"The base model's {layer.name} has another shape: fine-tuning keeps its network")
        if dry_run:
            kept.append(layer.name)
            continue
        layer.set_weights(weights)
        layer.trainable = not freeze
        kept.append(layer.name)
    return kept


class Snapshots:
    """Writes a model's epoch snapshots (snapshots.py) into a run folder: every validation
    prediction (from evaluate_distributed), conv1's kernels and the probe images' top-5."""

    def __init__(self, run_dir: Path, model, probe):
        import tensorflow as tf

        self.run_dir, self.model, self.probe = run_dir, model, probe
        # Compiled once: half the time of an eager call, every epoch.
        self.predict = tf.function(lambda x: model(x, training=False), autograph=False)

    def write(self, epoch: int, validation: dict) -> Path:
        from alexnet_core.analysis.explain import conv1_kernels
        from alexnet_core.train.snapshots import write_epoch

        probs = np.asarray(self.predict(self.probe), dtype=np.float32)
        top = np.argsort(-probs, axis=1, kind="stable")[:, :min(5, probs.shape[1])]
        return write_epoch(self.run_dir, epoch, validation["label"], validation["predicted"],
                           conv1_kernels(self.model), top, np.take_along_axis(probs, top, axis=1))


class Trainer:
    """Trains one run folder. `run()` returns the final status; bad input raises
    DataError / ConfigError / RunError, anything else is an internal error."""

    def __init__(self, config: TrainConfig, run_dir: Path, log=print):
        from alexnet_core.train.devices import cluster

        self.config, self.run_dir, self.log = config, Path(run_dir), log
        self.shared_dir = self.run_dir  # the run folder; a worker other than the chief only reads it
        self.cluster = cluster()
        self.chief = self.cluster is None or self.cluster.is_chief
        self.stop = threading.Event()
        self.store = CheckpointStore(self.run_dir)
        self.checkpoint_bytes = 64 * 2**20

    def run(self) -> dict:
        if not self.chief:
            self.run_dir = self._scratch()
            tell_supervisor(f"scratch {self.run_dir}")  # removed by the supervisor if it has to end this process
            self.store = CheckpointStore(self.run_dir)
        try:
            return self._run()
        finally:
            if not self.chief:
                shutil.rmtree(self.run_dir, ignore_errors=True)

    def _scratch(self) -> Path:
        """A private folder for a non-chief worker, holding a copy of the run's last commit (read
        from the shared run folder, if this worker can see it) so it resumes where the chief does."""
        scratch = Path(tempfile.mkdtemp(prefix=f"alexnet-worker{self.cluster.position}-"))
        source = self.shared_dir / layout.CHECKPOINTS
        record = fileio.read_json(source / layout.STATE, None) if (source / layout.STATE).exists() else None
        (scratch / layout.CHECKPOINTS).mkdir()
        if isinstance(record, dict) and isinstance(record.get("last"), str) and "/" not in record["last"]:
            if (source / record["last"]).exists():
                shutil.copy2(source / record["last"], scratch / layout.CHECKPOINTS / record["last"])
                shutil.copy2(source / layout.STATE, scratch / layout.CHECKPOINTS / layout.STATE)
        if (self.shared_dir / layout.CONFIG).exists():
            shutil.copy2(self.shared_dir / layout.CONFIG, scratch / layout.CONFIG)
        return scratch

    def _run(self) -> dict:
        lock = liveness.TrainerLock(self.run_dir).acquire()
        reserve = fileio.Reserve(self.run_dir)
        reserve.claim()
        self.status = StatusWriter(self.run_dir)
        self.monitor = self.steplog = None
        self._install_signals()
        try:
            return self._train()
        except StopBeforeTraining as exc:
            return self._stopped_early(exc.where)
        except WorkerLost as exc:
            return self._end("failed", str(exc), reason="cluster")
        except OSError as exc:
            if not fileio.is_disk_error(exc):
                raise
            reserve.release()
            layout.remove_run_leftovers(self.run_dir)
            message = fileio.disk_message(exc, self.run_dir, 2 * self.checkpoint_bytes + 16 * 2**20)
            self.log(f"error: {message}")
            try:
                return self._end("failed", message, reason="disk")
            except OSError:
                return {"state": "failed", "message": message, "reason": "disk"}
        finally:
            if self.monitor:
                self.monitor.close()
            if self.steplog:
                self.steplog.close()
            reserve.release()
            lock.release()

    def _install_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stop.set())

    def _end(self, state: str, message: str, **fields) -> dict:
        if self.monitor:
            self.monitor.close()
        model = self.store.publish_model() if self.store.record else None
        status = self.status.update(state=state, message=message, finished=time.time(), phase=None,
                                    completed_epochs=self.store.completed_epochs,
                                    has_model=model is not None, **fields)
        if self.chief:  # answered: a request left behind would stop the next start
            (self.run_dir / layout.STOP_REQUEST).unlink(missing_ok=True)
        return status

    def _stop_wished(self) -> bool:
        """This process was asked to stop: a signal, or (read now, not at the monitor's next poll)
        the run's stop.request. A request from before this trainer was launched was cleared by
        whoever launched it (launcher._spawn, `train --resume`), never by the trainer."""
        if not self.stop.is_set() and self.chief and liveness.stop_requested(self.run_dir):
            self.stop.set()
        return self.stop.is_set()

    def _stop_point(self, where: str) -> None:
        """Between the phases before the first step: end the run stopped now if asked to. A worker
        of several decides with the others instead (the wish goes into the first collective)."""
        if self.cluster is None and self._stop_wished():
            raise StopBeforeTraining(where)

    def _stopped_early(self, where: str) -> dict:
        done = self.store.completed_epochs
        kept = (f"the run is kept as it was after epoch {done} of {self.config.epochs}" if done else
                "no epoch had been trained")
        self.log(f"Stop requested {where}")
        return self._end("stopped", f"Stopped {where}, before the first step: {kept}; resume to continue.")

    def _train(self) -> dict:
        import keras
        import tensorflow as tf

        from alexnet_core.inputs.augment import dataset_options
        from alexnet_core.inputs.data import load_source, make_dataset, steps_for
        from alexnet_core.inputs.preprocess import describe as describe_preprocessing
        from alexnet_core.models.variants import build_model, get_arch
        from alexnet_core.train.devices import compute_dtype, configure_gpus, use_mixed_precision
        from alexnet_core.train.devices import strategy as pick_strategy

        config, run_dir = self.config, self.run_dir
        status = self.status.status
        self.status.update(state="starting", message="Loading data", finished=None, phase="loading",
                           started=status.get("started") or time.time(), **identity())
        record = self.store.recover()
        self._stop_point("as the trainer started")  # e.g. Stop pressed while the process was starting
        base = None
        if config.init_from and not self.store.completed_epochs:  # fine-tuning: the base model's shape
            config, base = fine_tune_source(config)
            self.config = config
        progress = Progress(config.epochs, 0, config.batch_size)
        progress.epoch = self.store.completed_epochs
        self.monitor = Monitor(self.status, progress, self.stop, run_dir)
        self.monitor.start()  # heartbeats from here on, however long loading the data takes
        configure_gpus()
        mixed = use_mixed_precision(config.mixed_precision)
        if self.cluster:
            if self.chief and self._stop_wished():  # before the join, the chief decides alone
                raise StopBeforeTraining("before the workers joined")
            strategy = self._join(pick_strategy)
        else:
            strategy = pick_strategy()
        keras.utils.set_random_seed(config.seed + self.store.completed_epochs)

        source = load_source(config.data, config.val_split)
        self._stop_point("while loading the data")
        stored = fileio.read_object(run_dir / layout.CONFIG)
        if stored.get("class_names") and stored["class_names"] != source.class_names:
            raise layout.RunError(f"The data's classes {source.class_names} differ from the run's "
                                f"{stored['class_names']}: resume with the data the run started with.")
        arch = get_arch(config.variant, input_size=config.input_size, **config.switches)
        size, num_classes, batch = arch.input_size, len(source.class_names), config.batch_size
        replicas = strategy.num_replicas_in_sync
        if batch % replicas:
            raise ConfigError(f"batch_size {batch} must be a multiple of the {replicas} replicas")
        train_split = source.split("train")
        steps = min(steps_for(train_split, batch), config.steps_per_epoch or 10**12)
        has_val = bool(source.val is not None and len(source.val))
        best_monitor = "val_accuracy" if has_val else "accuracy"
        schedule_monitor = config.monitor(has_val)
        budget = config.cache_budget_mb * 2**20
        done = self.store.completed_epochs

        def train_fn(context):  # each worker reads its own shard, in batches of one replica's share
            return make_dataset(train_split, num_classes, size, context.get_per_replica_batch_size(batch),
                                training=True, seed=config.seed + done, cache_budget=budget, drop_remainder=True,
                                **dataset_options(config.augment, size, config.seed + done),
                                shard=(context.num_input_pipelines, context.input_pipeline_id))

        fileio.write_json_atomic(run_dir / layout.CONFIG, {
            **asdict(config), "class_names": list(source.class_names),
            **({"class_words": source.class_words} if source.class_words else {}),
            "environment": environment(strategy, self.cluster),
            "preprocessing": describe_preprocessing(size),
            "steps_per_epoch": steps,
            "monitor": {"best_checkpoint": best_monitor, "schedule": schedule_monitor,
                        "schedule_note": None if schedule_monitor is None or has_val else
                        "no validation set: the schedule watches the training metric instead"},
        })
        skipped = sum(source.skipped.values())
        precision = compute_dtype()
        where = f" on {self.cluster.size} workers; this is {self.cluster.name(self.cluster.position)}" if self.cluster else ""
        self.log(f"{strategy_name(strategy)} with {replicas} replica(s){where}; compute in {precision}"
                 + ("; XLA" if config.jit else ""))
        self.log(f"{source.name}: {len(train_split)} training and {len(source.val) if has_val else 0} validation "
                 f"images, {num_classes} classes" + (f"; skipped {skipped} unreadable files" if skipped else ""))
        if source.empty_classes:
            self.log(source.empty_note())

        with strategy.scope():
            if done:
                from alexnet_core.models import layers  # noqa: F401  (registers the custom layers the checkpoint may use)
                from alexnet_core.predict.inference import ModelLoadError, check_model_file

                try:  # nothing of a checkpoint that unpacks to more than it declares is read
                    check_model_file(self.store.latest_path())
                except ModelLoadError as exc:
                    raise layout.RunError(f"Cannot resume: {exc}") from exc
                model = keras.models.load_model(self.store.latest_path(), safe_mode=True)
                optimizer = model.optimizer
                self.log(f"Resuming after epoch {done} of {config.epochs}")
            else:
                model = build_model(config.variant, num_classes=num_classes, input_size=config.input_size,
                                    **config.switches)
                if base is not None:
                    kept = copy_features(base, model, freeze=config.freeze_features)
                    self.log(f"Fine-tuning from {config.init_from}: kept {len(kept)} layers ({', '.join(kept)})"
                             + (", frozen" if config.freeze_features else ""))
                optimizer = build_optimizer(config, steps, loss_scaling=mixed)
                model.compile(optimizer=optimizer)  # attaches the optimizer, so checkpoints carry it
                optimizer.build(model.trainable_variables)  # its slots, created here (mirrored), not in the step
        self._stop_point("while building the model")
        iterations = int(optimizer.iterations.numpy())
        if record.get("iterations") is not None and iterations != record["iterations"]:
            raise layout.RunError(f"{self.store.latest_path()} has taken {iterations} optimizer steps but the commit "
                                f"record says {record['iterations']}: the checkpoint is damaged. Start a new run.")
        if done and iterations != done * steps:
            self.log(f"note: the data now gives {steps} steps per epoch; the checkpoint has {iterations} steps "
                     f"for {done} epochs")
        self.checkpoint_bytes = max(model.count_params() * 4 * 3, 2**20)
        layout.truncate_steps(run_dir, iterations)

        self.steplog = StepLog(run_dir, config.log_every)
        progress.steps_per_epoch = steps
        train_step, eval_step = make_steps(model, optimizer, strategy, loss_function(config), batch,
                                           min(5, num_classes), jit=config.jit, per_image=config.snapshots)
        if self.cluster:
            self._check_workers_agree(strategy, done)
        self._stop_point("while preparing the first step")
        iterator = iter(strategy.distribute_datasets_from_function(train_fn))
        dist_val = distributed_eval_dataset(strategy, source.val, num_classes, size, batch, budget) if has_val else None
        probe = self._probe(source.val, num_classes, size) if config.snapshots and has_val else None
        self.snapshots = None if probe is None else Snapshots(run_dir, model, probe)
        initial_loss = record.get("initial_loss")
        writers = self._tensorboard()
        self.status.update(state="running", steps_per_epoch=steps, skipped_files=skipped,
                           mixed_precision=precision != "float32",
                           completed_epochs=done, message=f"Training from epoch {done + 1}")

        try:
            return self._epochs(model, optimizer, train_step, eval_step, iterator, dist_val, progress, writers,
                                steps, done, initial_loss, best_monitor, schedule_monitor)
        except tf.errors.OpError as exc:
            self._raise_if_lost(exc)
            raise

    def _epochs(self, model, optimizer, train_step, eval_step, iterator, dist_val, progress, writers, steps, done,
                initial_loss, best_monitor, schedule_monitor) -> dict:
        import tensorflow as tf

        config = self.config
        alone = self.cluster is None  # a worker of several decides to stop only from the reduced wish
        stop_agreed = False
        for epoch in range(done + 1, config.epochs + 1):
            if stop_agreed or (alone and self._stop_wished()):
                return self._stopped(epoch, 0, steps)
            if schedule_monitor:
                optimizer.learning_rate = plateau_learning_rate(config, self.store.metrics, schedule_monitor)
            progress.begin_epoch(epoch)
            self.status.update(epoch=epoch, step=0, phase="training", message=f"Epoch {epoch} of {config.epochs}")
            started = time.perf_counter()
            total = dict.fromkeys(("loss", "correct", "top5", "count"), 0.0)
            for step in range(1, steps + 1):
                if self.monitor.error:
                    raise self.monitor.error
                out = _numbers(train_step(iterator, tf.constant(1.0 if self.stop.is_set() else 0.0)))
                for key in total:
                    total[key] += out[key]
                loss = out["loss"] / max(out["count"], 1.0)
                initial_loss = loss if initial_loss is None else initial_loss
                why = divergence(loss, initial_loss)
                if why:
                    return self._diverged(epoch, step, why)
                progress.stepped()
                global_step = (epoch - 1) * steps + step
                if global_step % config.log_every == 0:
                    self.steplog.log(global_step, epoch, loss, out["correct"] / max(out["count"], 1.0),
                                     _learning_rate(optimizer))
                stop_agreed = out["stop"] > 0 or (alone and self.stop.is_set())
                if stop_agreed and step < steps:
                    return self._stopped(epoch, step, steps)
            row = {"epoch": epoch - 1, "loss": total["loss"] / total["count"],
                   "accuracy": total["correct"] / total["count"], "top5_accuracy": total["top5"] / total["count"],
                   "learning_rate": _learning_rate(optimizer)}
            why = divergence(row["loss"], initial_loss)
            if why:
                return self._diverged(epoch, steps, why)
            if dist_val is not None:
                progress.phase = "validating"
                self.status.update(phase="validating", message=f"Epoch {epoch} of {config.epochs}: validating")
                validation = evaluate_distributed(eval_step, dist_val, prefix="val_")
                if self.snapshots is not None:  # before the commit: a committed epoch has its snapshot
                    self.snapshots.write(epoch, validation)
                for key in ("images", *PER_IMAGE):
                    validation.pop(key)
                row.update(validation)
            row["epoch_seconds"] = time.perf_counter() - started
            progress.phase = "saving"
            self.status.update(phase="saving", step=steps, message=f"Epoch {epoch} of {config.epochs}: saving checkpoint")
            self.store.commit(model, epoch, row, best_monitor, "max", int(optimizer.iterations.numpy()),
                              extra={"initial_loss": initial_loss, "steps_per_epoch": steps})
            self.status.update(completed_epochs=epoch, phase="training")
            self._write_tensorboard(writers, epoch, row)
            self.log(f"epoch {epoch}/{config.epochs}: " + ", ".join(
                f"{k} {v:.4f}" for k, v in row.items() if k not in ("epoch", "epoch_seconds")))
        return self._end("finished", f"Finished {config.epochs} epochs")

    def _probe(self, split, num_classes: int, size: int):
        """The probe set's network inputs, written once to snapshots/probe.npz as thumbnails."""
        from alexnet_core.inputs.data import Split, make_dataset
        from alexnet_core.inputs.preprocess import MEAN, STD
        from alexnet_core.train.snapshots import choose_probe, write_probe

        chosen = choose_probe(split.labels)
        part = Split(split.labels[chosen], paths=None if split.paths is None else [split.paths[i] for i in chosen],
                     images=None if split.images is None else split.images[chosen])
        batches = list(make_dataset(part, num_classes, size, len(chosen)))  # unreadable files dropped
        if not batches:
            return None
        x = np.concatenate([b[0].numpy() for b in batches])
        labels = np.concatenate([np.argmax(b[1].numpy(), axis=-1) for b in batches])
        thumbnails = np.clip((x * np.array(STD) + np.array(MEAN)) * 255 + 0.5, 0, 255).astype(np.uint8)
        write_probe(self.run_dir, thumbnails, labels)
        return x

    def _join(self, pick_strategy):
        """MultiWorkerMirroredStrategy, created once every worker has joined.

        TensorFlow waits for the other workers inside C++ holding Python's lock, so nothing of
        Python runs in this process meanwhile (no thread, no signal handler; SIGTERM is taken by
        TensorFlow's preemption watcher). `train` therefore runs a multi-worker trainer as the
        child of a small supervising process (cli.py), told here when the wait starts and ends:
        it says whom the wait is for, and ends this process on the join timeout, Stop, SIGTERM
        or Ctrl-C. Alone (no supervisor), Ctrl-C keeps its default meaning for the wait."""
        self.status.update(phase="joining", message=f"Waiting for the other workers to join ({self.cluster.size} in all)")
        main = threading.current_thread() is threading.main_thread()
        supervised = bool(os.environ.get(JOIN_PIPE_ENV))
        if main:  # supervised: the supervisor answers Ctrl-C until the join ends
            signal.signal(signal.SIGINT, signal.SIG_IGN if supervised else signal.SIG_DFL)
        tell_supervisor("joining")
        try:
            strategy = pick_strategy()
        finally:
            if main:
                self._install_signals()
        tell_supervisor("joined")
        self.status.update(phase="loading", message="Loading data")
        self.log(f"All {self.cluster.size} workers joined")
        return strategy

    def _raise_if_lost(self, exc) -> None:
        """Raise WorkerLost naming the worker that a failed collective or RPC points to (multi-worker
        runs; it failed during the epoch after the last commit); return for any other error."""
        import tensorflow as tf

        who = self.cluster.lost_task(str(exc)) if self.cluster else None
        cluster_error = isinstance(exc, (tf.errors.UnavailableError, tf.errors.CancelledError, tf.errors.AbortedError,
                                         tf.errors.DeadlineExceededError))
        if self.cluster is None or not (who or cluster_error):
            return
        text = str(exc)
        grpc = re.search(r'grpc_message:"([^"]{1,200})"', text)
        if "stopped sending heartbeats" in text:
            detail = "it stopped sending heartbeats"
        else:
            detail = f"{type(exc).__name__}: {grpc.group(1)}" if grpc else type(exc).__name__
        kept = self.store.completed_epochs
        raise WorkerLost(f"Lost contact with {who or 'another worker'} during epoch {kept + 1} "
                         f"({detail}). The run is kept as it was after epoch {kept}; "
                         "start every worker again with --resume to continue from there.") from exc

    def _check_workers_agree(self, strategy, done: int) -> None:
        """Every worker must resume from the same epoch; a worker that cannot see the run folder
        would start from scratch while the others resume."""
        import tensorflow as tf

        @tf.function
        def gather(stop):
            wish = tf.stack([tf.constant(float(done)), tf.constant(float(done) ** 2), tf.constant(1.0), stop])
            return strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(lambda: tf.identity(wish)), axis=None)

        try:  # with the first collective, every worker's stop wish so far: all stop together
            total, squares, count, stop = (float(v) for v in gather(tf.constant(float(self._stop_wished()))).numpy())
        except tf.errors.OpError as exc:
            self._raise_if_lost(exc)
            raise
        if stop > 0:
            raise StopBeforeTraining("before the first step (a worker was asked to stop)")
        if abs(total * total - count * squares) > 1e-6 * max(1.0, squares * count):
            raise layout.RunError(
                f"The workers disagree on where this run stands: this one sees {done} completed epochs, the "
                f"average over all of them is {total / count:g}. Every worker must read the same run folder "
                f"({self.shared_dir}): put it on storage they all share, as docs/DISTRIBUTED.md says.")

    def _stopped(self, epoch: int, step: int, steps: int) -> dict:
        total = self.config.epochs
        if step == 0:
            message = f"Stopped after epoch {epoch - 1} of {total}; resume to continue."
        else:
            message = (f"Stopped during epoch {epoch} of {total}, after {step} of its {steps} steps. An epoch is "
                       f"saved only when it is complete, so the run is kept as it was after epoch {epoch - 1}; "
                       f"resume redoes epoch {epoch} from its start.")
            if self.steplog:  # the curves show only steps that stay part of the run
                self.steplog.close()
                self.steplog = None
            layout.truncate_steps(self.run_dir, self.store.iterations)
        return self._end("stopped", message)

    def _diverged(self, epoch: int, step: int, why: str) -> dict:
        kept = self.store.completed_epochs
        message = (f"The training loss {why} at epoch {epoch}, step {step}: the learning rate {self.config.lr:g} is "
                   "too high for this setup. Start a new run with a lower learning rate (e.g. a tenth) or "
                   "warm-up epochs." + (f" The model of epoch {kept} is kept." if kept else ""))
        return self._end("diverged", message)

    def _tensorboard(self):
        import tensorflow as tf

        folder = self.run_dir / layout.TENSORBOARD
        return {"train": tf.summary.create_file_writer(str(folder / "train")),
                "validation": tf.summary.create_file_writer(str(folder / "validation"))}

    @staticmethod
    def _write_tensorboard(writers, epoch: int, row: dict) -> None:
        import tensorflow as tf

        for key, value in row.items():
            if key == "epoch":
                continue
            side = "validation" if key.startswith("val_") else "train"
            with writers[side].as_default():
                tf.summary.scalar(f"epoch_{key.removeprefix('val_')}", value, step=epoch)
        for writer in writers.values():
            writer.flush()


def train(config: TrainConfig, run_dir: Path, log=print) -> dict:
    """Train into `run_dir` (fresh or resumed) and return the final status."""
    return Trainer(config, run_dir, log).run()


def configure_threads() -> None:
    """Cap TensorFlow's thread pools at $ALEXNET_THREADS when set (to share a machine).

    Left alone otherwise: on this project's 2-core reference machine TensorFlow's defaults
    (one thread per core) spend about 3% of training time in system calls (bench/train_throughput.py).
    """
    import tensorflow as tf

    threads = os.environ.get("ALEXNET_THREADS")
    if not threads:
        return
    try:
        tf.config.threading.set_intra_op_parallelism_threads(int(threads))
        tf.config.threading.set_inter_op_parallelism_threads(min(2, int(threads)))
    except RuntimeError:  # already initialised (e.g. inside a test process)
        pass


_TENSORFLOW_READY = []


def prepare_tensorflow() -> None:
    """Thread pools and logical CPUs ($ALEXNET_THREADS, $ALEXNET_LOGICAL_CPUS): once, before
    TensorFlow first runs anything."""
    if _TENSORFLOW_READY:
        return
    _TENSORFLOW_READY.append(True)
    if os.environ.get("ALEXNET_LOGICAL_CPUS"):
        from alexnet_core.train.devices import split_cpu

        split_cpu(int(os.environ["ALEXNET_LOGICAL_CPUS"]))
    configure_threads()


BAD_INPUT_EXIT = 2
INTERNAL_EXIT = 1


def run_training(config: TrainConfig, run_dir: Path, log=None) -> int:
    """train() with every ending recorded in status.json; returns a process exit code:
    0 finished or stopped, 1 diverged, failed or an internal error (traceback in train.log),
    2 bad input (a message naming it), 130 interrupted."""
    from alexnet_core.inputs.data import DataError
    from alexnet_core.train.devices import cluster

    log = log or (lambda m: print(m, file=sys.stderr, flush=True))
    try:
        place = cluster()
    except ConfigError as exc:
        log(f"error: {exc}")
        return BAD_INPUT_EXIT
    writes = place is None or place.is_chief  # only the chief writes the run folder
    try:
        status = train(config, run_dir, log=log)
    except layout.ActiveRunError as exc:  # another trainer owns this run: leave its status alone
        log(f"error: {exc}")
        return BAD_INPUT_EXIT
    except (DataError, ConfigError, layout.RunError) as exc:
        if writes:
            _record_failure(run_dir, str(exc), "data" if isinstance(exc, DataError) else "settings")
        log(f"error: {exc}")
        return BAD_INPUT_EXIT
    except Exception as exc:
        if not writes:
            log(traceback.format_exc())
            log(f"error: internal error: {type(exc).__name__}: {exc}")
            return INTERNAL_EXIT
        _record_failure(run_dir, f"Internal error: {type(exc).__name__}: {exc} (details in {layout.LOG})", "internal")
        _log_traceback(run_dir)
        log(f"error: internal error: {type(exc).__name__}: {exc}; the traceback is in {Path(run_dir) / layout.LOG}")
        return INTERNAL_EXIT
    log(status.get("message", ""))
    return 0 if status["state"] in ("finished", "stopped") else INTERNAL_EXIT


def _record_failure(run_dir: Path, message: str, reason: str) -> None:
    """status.json says failed, why in words (`message`) and in one word (`reason`: data,
    settings, internal; disk failures are recorded by the trainer itself)."""
    try:
        liveness.write_status(run_dir, state="failed", finished=time.time(), phase=None, message=message, reason=reason)
    except OSError:
        pass


def _log_traceback(run_dir: Path) -> None:
    """The traceback goes to train.log (once: the launcher already sends stderr there)."""
    text = traceback.format_exc()
    path = Path(run_dir) / layout.LOG
    try:
        same = path.exists() and os.path.samestat(os.fstat(2), path.stat())
    except OSError:
        same = False
    if same:
        print(text, file=sys.stderr, flush=True)
        return
    try:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(text)
    except OSError:
        print(text, file=sys.stderr, flush=True)


def estimate_epoch_seconds(config: TrainConfig, num_classes: int, num_images: int, steps: int = 5,
                           num_val: int = 0) -> float:
    """Seconds per epoch: the real training step fed by the real input pipeline (augmentation,
    standardisation, prefetch) from decoded images in memory, timed after two warm-up steps,
    plus the validation pass over `num_val` images, timed the same way, in the run's precision."""
    from alexnet_core.train.devices import precision_policy

    with precision_policy(config.mixed_precision) as loss_scaling:
        return _estimate_epoch_seconds(config, num_classes, num_images, steps, num_val, loss_scaling)


def _estimate_epoch_seconds(config: TrainConfig, num_classes: int, num_images: int, steps: int, num_val: int,
                            loss_scaling: bool) -> float:
    import numpy as np
    import tensorflow as tf

    from alexnet_core.inputs.augment import dataset_options
    from alexnet_core.inputs.data import Split, make_dataset
    from alexnet_core.models.variants import build_model

    strategy = tf.distribute.get_strategy()
    model = build_model(config.variant, num_classes=num_classes, input_size=config.input_size, **config.switches)
    optimizer = build_optimizer(config, max(1, num_images // config.batch_size), loss_scaling=loss_scaling)
    size = model.input_shape[1]
    rng = np.random.default_rng(0)
    count = config.batch_size * 4
    split = Split(rng.integers(0, num_classes, count).astype(np.int32),
                  images=rng.integers(0, 256, (count, size, size, 3), dtype=np.uint8))
    train = make_dataset(split, num_classes, size, config.batch_size, training=True, drop_remainder=True,
                         **dataset_options(config.augment, size, config.seed))
    iterator = iter(train)
    train_step, eval_step = make_steps(model, optimizer, strategy, loss_function(config), config.batch_size,
                                       min(5, num_classes), per_image=config.snapshots)
    for _ in range(2):
        _numbers(train_step(iterator))
    start = time.perf_counter()
    for _ in range(steps):
        _numbers(train_step(iterator))
    seconds = (time.perf_counter() - start) / steps * math.ceil(num_images / config.batch_size)
    if num_val:
        batches = list(make_dataset(split, num_classes, size, config.batch_size).take(2))
        def evaluate(batch):  # as the trainer reads it, the snapshot's per-image outputs included
            out = eval_step(batch)
            return [out.pop(key).numpy() for key in PER_IMAGE if key in out], _numbers(out)

        evaluate(batches[0])
        start = time.perf_counter()
        for batch in batches:
            evaluate(batch)
        seconds += (time.perf_counter() - start) / len(batches) * math.ceil(num_val / config.batch_size)
    return seconds
