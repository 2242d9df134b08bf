"""The training loop: one `tf.function` step run through `strategy.run`, under any strategy.

`Trainer(config, run_dir).run()` trains a run folder, fresh or resumed, and returns its final
status. Every epoch ends with a commit (checkpoints.py); an epoch is recorded only when all its
steps ran, so a stop or a kill mid-epoch loses that epoch's partial progress and nothing else:
the resumed run redoes it from the last commit, and the optimizer's step count always equals
completed epochs x steps per epoch.

Losses are averaged over the global batch (`tf.nn.compute_average_loss`) and the metrics are
sums reduced over every replica, so they are the same on one device or many. Under
MultiWorkerMirroredStrategy every worker runs this loop; what only a worker of several does
(scratch folder, join, agreeing on the epoch and the stop, naming a lost worker) is in
distributed.py.

Everything a run does besides training (status.json and its heartbeat, steps.csv, TensorBoard,
the epoch snapshots) is an observer (observers.py), called at fixed points of the loop: a new
feature is a new observer, given to the Trainer, not an edit here.
"""

from __future__ import annotations

# Imports inside functions are deliberate: TensorFlow and Keras, and the modules that reach them,
# load on first use, so importing this module (the app's pages, the command line) stays light.
import math
import platform
import shutil
import signal
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from alexnet_core.settings.config import ConfigError, TrainConfig
from alexnet_core.store import fileio, layout, liveness
from alexnet_core.train import distributed
from alexnet_core.train.checkpoints import CheckpointStore
from alexnet_core.train.distributed import WorkerLost
from alexnet_core.train.finetune import copy_features, fine_tune_source, run_preprocessing
from alexnet_core.train.monitor import StatusWriter, identity
from alexnet_core.train.observers import Observers, RunState, builtin_observers
from alexnet_core.train.optimizer import build_optimizer, current_learning_rate, plateau_learning_rate

EXPLODE_FACTOR = 50.0  # a loss this many times its starting value has diverged
PER_IMAGE = ("label", "predicted")  # what eval_step returns per image, beside its sums


class StopBeforeTraining(Exception):
    """A stop (Stop, `stop RUN`, SIGTERM, Ctrl-C) that came before the first step: the run ends
    stopped as it was. `where` says what the trainer was doing."""

    def __init__(self, where: str):
        super().__init__(where)
        self.where = where


def environment(strategy=None, cluster=None) -> dict:
    import keras
    import tensorflow as tf

    from alexnet_core import __version__
    from alexnet_core.train.devices import describe

    env = {"alexnet_core": __version__, "tensorflow": tf.__version__, "keras": keras.__version__,
           "python": platform.python_version(), "device": describe()}
    if strategy is not None:
        env.update(strategy=distributed.strategy_name(strategy), replicas=int(strategy.num_replicas_in_sync))
    if cluster is not None:
        env.update(workers=list(cluster.workers))
    return env


def divergence(loss: float, initial: float | None) -> str | None:
    """Why the loss counts as diverged, or None."""
    if not math.isfinite(loss):
        return "became NaN" if math.isnan(loss) else "became infinite"
    if initial is not None and loss > EXPLODE_FACTOR * max(initial, 1.0):
        return f"exploded to {loss:.3g} (it started at {initial:.3g})"
    return None


def make_steps(model, optimizer, strategy, loss_fn, global_batch: int, top_k: int, jit: bool = False,
               per_image: bool = True, standardisation: tuple | None = None):
    """(train_step(iterator, stop=None), eval_step(batch)): one compiled step each, run on every
    replica; each returns the batch's loss sum, correct, top-k correct and count summed over
    replicas. Batches of uint8 pixels are standardised in the step (preprocess.as_input), after
    the lighting shifts a prepared stream sends beside them are added (records.py).
    `stop` (a float scalar tensor, this worker's stop wish) comes back summed over every replica
    as "stop", so all workers see the same answer after the same step. `jit` compiles the
    training step with XLA. `per_image`: eval_step also returns every image's label and predicted
    class (PER_IMAGE), for the epoch snapshots. `standardisation`: the run's (mean, std), which
    uint8 batches are standardised with (default ImageNet's)."""
    import tensorflow as tf

    from alexnet_core.inputs.preprocess import MEAN, STD, normalize
    from alexnet_core.inputs.preprocess import as_input as standardise
    from alexnet_core.inputs.records import is_sent_unresized, resize_sent

    mean, std = standardisation or (MEAN, STD)

    def as_input(x, extras=None):
        if not extras:
            return standardise(x, mean, std)
        # What a prepared stream leaves to the step's device (records.train_batches, `on_device`):
        # each image's lighting shift, added as the bytes become floats and clipped to 0..255 as
        # the stream would.
        pixels = tf.cast(x, tf.float32) + tf.cast(extras["shift"], tf.float32)[:, None, None, :]
        return normalize(tf.clip_by_value(pixels, 0.0, 255.0), mean, std)

    def sums(y, probs, per_example):
        labels = tf.argmax(y, axis=-1, output_type=tf.int32)
        probs = tf.cast(probs, tf.float32)
        hit = tf.equal(tf.argmax(probs, axis=-1, output_type=tf.int32), labels)
        return {"loss": tf.reduce_sum(tf.cast(per_example, tf.float32)),
                "correct": tf.reduce_sum(tf.cast(hit, tf.float32)),
                "top5": tf.reduce_sum(tf.cast(tf.math.in_top_k(labels, probs, top_k), tf.float32)),
                "count": tf.cast(tf.shape(y)[0], tf.float32)}

    def replica_train(x, y, stop, *extras):
        with tf.GradientTape() as tape:
            probs = model(as_input(x, *extras), training=True)
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

    def replica_sent(x, y, stop, extras):
        # Random-resized crops sent unresized (records.train_batches, `resize_on_device`): resized
        # and flipped here, on the replica's device, before the (possibly XLA-compiled) step,
        # whose input shape stays fixed.
        pixels, rest = resize_sent(x, extras, model.input_shape[1])
        if rest:  # the lighting shifts: added, clipped and standardised in the step (as_input)
            return replica_step(pixels, y, stop, rest)
        return replica_step(normalize(pixels, mean, std), y, stop)  # float input is taken as standardised

    @tf.function
    def compiled_step(iterator, stop):
        x, y, *extras = next(iterator)  # (images, labels) or (images, labels, {"shift": ...})
        step = replica_sent if extras and is_sent_unresized(extras[0]) else replica_step
        return reduce(strategy.run(step, args=(x, y, stop, *extras)))

    def train_step(iterator, stop=None):
        return compiled_step(iterator, tf.zeros((), tf.float32) if stop is None else stop)

    @tf.function(reduce_retracing=True)
    def eval_step(batch):
        x, y = batch
        return reduce(strategy.run(replica_eval, args=(x, y)))

    return train_step, eval_step


def accelerated(strategy) -> bool:
    """Whether the strategy's replicas run on GPUs or TPUs (the default strategy: whether this
    process has one, where TensorFlow places the step)."""
    import tensorflow as tf

    try:
        devices = strategy.extended.worker_devices
    except RuntimeError:  # the default strategy has no device list of its own
        devices = [device.name for kind in ("GPU", "TPU") for device in tf.config.list_logical_devices(kind)]
    return any(tf.DeviceSpec.from_string(device).device_type in ("GPU", "TPU") for device in devices)


def distributed_eval_dataset(strategy, split, num_classes: int, size: int, batch: int,
                             cache_budget: int = 2**31, standardisation: tuple | None = None):
    """`split` in global batches of `batch`, each worker reading its own shard: for eval_step."""
    from alexnet_core.inputs.data import make_dataset

    def shard(context):
        return make_dataset(split, num_classes, size, context.get_per_replica_batch_size(batch),
                            cache_budget=cache_budget, standardisation=standardisation,
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
        out = numbers(out)
        for key in total:
            total[key] += out[key]
    n = max(total["count"], 1.0)
    return {f"{prefix}loss": total["loss"] / n, f"{prefix}accuracy": total["correct"] / n,
            f"{prefix}top5_accuracy": total["top5"] / n, "images": int(total["count"]),
            **{key: np.concatenate(parts) if parts else np.zeros(0, np.int32) for key, parts in gathered.items()}}


def loss_function(config: TrainConfig):
    import keras

    return keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing, reduction=None)


def numbers(out: dict) -> dict:
    """A step's outputs as Python floats (reading them back waits for the step)."""
    return {k: float(v) for k, v in out.items()}


@dataclass(eq=False)
class _Plan:
    """What the loop runs with, beside the RunState its observers share."""

    strategy: Any
    train_split: Any = None
    has_val: bool = False  # the data has a validation set
    best_monitor: str = "accuracy"  # the metric that picks the best checkpoint
    schedule_monitor: str | None = None  # the metric the plateau schedules watch
    budget: int = 0  # bytes the input pipeline may cache
    skipped: int = 0  # unreadable files left out of the data
    train_step: Any = None
    eval_step: Any = None
    iterator: Any = None
    validation: Any = None  # the distributed validation set, or None
    initial_loss: float | None = None  # the run's first step's loss (divergence is measured against it)


class Trainer:
    """Trains one run folder. `run()` returns the final status; bad input raises
    DataError / ConfigError / RunError, anything else is an internal error. `observers` are
    called after the run's own (observers.builtin_observers)."""

    def __init__(self, config: TrainConfig, run_dir: Path, log=print, observers=()):
        from alexnet_core.train.devices import cluster

        self.config, self.run_dir, self.log = config, Path(run_dir), log
        self.shared_dir = self.run_dir  # the run folder; a worker other than the chief only reads it
        self.cluster = cluster()
        self.chief = self.cluster is None or self.cluster.is_chief
        self.stop = threading.Event()
        self.store = CheckpointStore(self.run_dir)
        self.checkpoint_bytes = 64 * 2**20
        self.extra_observers = list(observers)
        self.observers = Observers()
        self.state = RunState(self.run_dir, config, chief=self.chief)

    def run(self) -> dict:
        if not self.chief:
            self.run_dir = distributed.scratch_folder(self.shared_dir, self.cluster.position)
            distributed.tell_supervisor(f"scratch {self.run_dir}")  # removed by the supervisor if it ends this process
            self.store = CheckpointStore(self.run_dir)
        try:
            return self._run()
        finally:
            if not self.chief:
                shutil.rmtree(self.run_dir, ignore_errors=True)

    # --- a run's life ----------------------------------------------------------------------------

    def _run(self) -> dict:
        lock = liveness.TrainerLock(self.run_dir).acquire()
        reserve = fileio.Reserve(self.run_dir)
        reserve.claim()
        self.status = StatusWriter(self.run_dir)
        self.state = RunState(self.run_dir, self.config, chief=self.chief)
        self.observers = Observers([*builtin_observers(self.status, self.stop), *self.extra_observers])
        self._install_signals()
        try:
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
        except BaseException as exc:  # the run ends with this error: its observers still end
            if not self.observers.ended:
                self.state.error = exc
                late = self.observers.end(self.state)
                if late is not None:
                    self.log(f"note: an observer could not end: {type(late).__name__}: {late}")
            raise
        finally:
            reserve.release()
            lock.release()

    def _install_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stop.set())

    def _end(self, outcome: str, message: str, **fields) -> dict:
        """End the run: its observers' on_end, then the final status (with the model of the last
        commit published). An observer's error is raised once the ending is recorded."""
        self.state.outcome, self.state.message = outcome, message
        error = self.observers.end(self.state)
        model = self.store.publish_model() if self.store.record else None
        status = self.status.update(state=outcome, message=message, finished=time.time(), phase=None,
                                    completed_epochs=self.store.completed_epochs,
                                    has_model=model is not None, **fields)
        if self.chief:  # answered: a request left behind would stop the next start
            (self.run_dir / layout.STOP_REQUEST).unlink(missing_ok=True)
        if error is not None:
            raise error
        return status

    def _stop_wished(self) -> bool:
        """This process was asked to stop: a signal, or (read now, not at the monitor's next poll)
        the run's stop.request. A request from before this trainer was launched was cleared by
        whoever launched it (launcher.spawn, `train --resume`), never by the trainer."""
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

    def _stopped(self, epoch: int, step: int, steps: int) -> dict:
        total = self.config.epochs
        self.state.epoch, self.state.step = epoch, step  # step 0: between epochs
        if step == 0:
            message = f"Stopped after epoch {epoch - 1} of {total}; resume to continue."
        else:
            message = (f"Stopped during epoch {epoch} of {total}, after {step} of its {steps} steps. An epoch is "
                       f"saved only when it is complete, so the run is kept as it was after epoch {epoch - 1}; "
                       f"resume redoes epoch {epoch} from its start.")
        return self._end("stopped", message)

    def _diverged(self, epoch: int, step: int, why: str) -> dict:
        kept = self.store.completed_epochs
        message = (f"The training loss {why} at epoch {epoch}, step {step}: the learning rate {self.config.lr:g} is "
                   "too high for this setup. Start a new run with a lower learning rate (e.g. a tenth) or "
                   "warm-up epochs." + (f" The model of epoch {kept} is kept." if kept else ""))
        return self._end("diverged", message)

    def _raise_if_lost(self, exc) -> None:
        """Raise WorkerLost naming the worker that a failed collective or RPC points to (multi-worker
        runs; it failed during the epoch after the last commit); return for any other error."""
        lost = distributed.lost_worker(exc, self.cluster, self.store.completed_epochs)
        if lost is not None:
            raise lost from exc

    # --- before the first step --------------------------------------------------------------------

    def _train(self) -> dict:
        import tensorflow as tf

        base = self._begin()
        plan = _Plan(self._strategy())
        self._phase("loading", "Loading the data")
        self._load_data(plan)
        self._record_config(plan)
        done = self.store.completed_epochs
        self._phase("building", f"Loading the checkpoint of epoch {done}" if done else "Building the model")
        self._build_model(plan, base)
        self._phase("preparing", "Preparing the input pipeline and the training step")
        self._compile(plan)
        self.observers.call("on_train_begin", self.state)
        state = self.state
        self.status.update(state="running", steps_per_epoch=state.steps_per_epoch, skipped_files=plan.skipped,
                           mixed_precision=self.precision != "float32",
                           completed_epochs=state.completed_epochs, message=f"Training from epoch "
                                                                            f"{state.completed_epochs + 1}")
        try:
            return self._epochs(plan)
        except tf.errors.OpError as exc:
            self._raise_if_lost(exc)
            raise

    def _phase(self, phase: str, message: str) -> None:
        """status.json says what the trainer does before its first step (loading, building, preparing),
        so the Train page's progress tells the truth while there are no steps to count."""
        self.state.phase = phase
        self.status.update(phase=phase, message=message)

    def _begin(self):
        """The run's last commit recovered, its settings (a fine-tuning run's network is its base
        model's) and the observers started. Returns the fine-tuning base model, or None."""
        status = self.status.status
        tunes = self.config.init_from and not self.store.completed_epochs
        self.status.update(state="starting", message="Loading the base model" if tunes else "Loading the data",
                           finished=None, phase="base" if tunes else "loading",
                           started=status.get("started") or time.time(), **identity())
        self.record = self.store.recover()
        self._stop_point("as the trainer started")  # e.g. Stop pressed while the process was starting
        base = None
        if self.config.init_from and not self.store.completed_epochs:  # fine-tuning: the base model's shape
            self.config, base = fine_tune_source(self.config)
        state = self.state
        state.config, state.completed_epochs = self.config, self.store.completed_epochs
        state.committed_steps, state.history = self.store.iterations, self.store.metrics
        state.metrics = state.history[-1] if state.history else {}
        self.observers.call("on_start", state)
        return base

    def _strategy(self):
        """The devices, the precision and the strategy (for a worker of several, once all joined)."""
        import keras

        from alexnet_core.train.devices import compute_dtype, configure_gpus, use_mixed_precision
        from alexnet_core.train.devices import strategy as pick_strategy

        configure_gpus()
        self.mixed = use_mixed_precision(self.config.mixed_precision)
        self.precision = compute_dtype()
        if self.cluster:
            if self.chief and self._stop_wished():  # before the join, the chief decides alone
                raise StopBeforeTraining("before the workers joined")
            strategy = distributed.join_workers(pick_strategy, self.cluster, self.status, self.log,
                                                self._install_signals)
        else:
            strategy = pick_strategy()
        keras.utils.set_random_seed(self.config.seed + self.store.completed_epochs)
        return strategy

    def _load_data(self, plan: _Plan) -> None:
        """The data, and what follows from it: classes, input size, steps per epoch, monitors."""
        from alexnet_core.inputs.data import load_source, steps_for
        from alexnet_core.models.variants import get_arch

        config, state = self.config, self.state
        source = load_source(config.data, config.val_split)
        if config.train_per_class and source.train is not None:  # a quick experiment's smaller training set
            source.train = source.train.first_per_class(config.train_per_class)
        self._stop_point("while loading the data")
        stored = fileio.read_object(self.run_dir / layout.CONFIG)
        if stored.get("class_names") and stored["class_names"] != source.class_names:
            raise layout.RunError(f"The data's classes {source.class_names} differ from the run's "
                                  f"{stored['class_names']}: resume with the data the run started with.")
        arch = get_arch(config.variant, input_size=config.input_size, **config.switches)
        replicas = plan.strategy.num_replicas_in_sync
        if config.batch_size % replicas:
            raise ConfigError(f"batch_size {config.batch_size} must be a multiple of the {replicas} replicas")
        plan.train_split = source.split("train")
        plan.has_val = has_val = bool(source.val is not None and len(source.val))
        plan.best_monitor = "val_accuracy" if has_val else "accuracy"
        plan.schedule_monitor = config.monitor(has_val)
        plan.budget = config.cache_budget_mb * 2**20
        plan.skipped = sum(source.skipped.values())
        state.source, state.num_classes, state.input_size = source, len(source.class_names), arch.input_size
        state.steps_per_epoch = min(steps_for(plan.train_split, config.batch_size), config.steps_per_epoch or 10**12)

    def _record_config(self, plan: _Plan) -> None:
        """config.json: the settings, the data's classes and what the run runs on; and the log's
        first lines."""
        config, state, source, has_val = self.config, self.state, self.state.source, plan.has_val
        preprocessing = run_preprocessing(config, state.input_size, self.run_dir)  # a fine-tuning base's
        state.standardisation = (tuple(preprocessing["mean"]), tuple(preprocessing["std"]))  # what training gives
        fileio.write_json_atomic(self.run_dir / layout.CONFIG, {
            **asdict(config), "class_names": list(source.class_names),
            **({"class_words": source.class_words} if source.class_words else {}),
            "environment": environment(plan.strategy, self.cluster),
            "preprocessing": preprocessing,
            "steps_per_epoch": state.steps_per_epoch,
            "monitor": {"best_checkpoint": plan.best_monitor, "schedule": plan.schedule_monitor,
                        "schedule_note": None if plan.schedule_monitor is None or has_val else
                        "no validation set: the schedule watches the training metric instead"},
        })
        cluster = self.cluster
        where = f" on {cluster.size} workers; this is {cluster.name(cluster.position)}" if cluster else ""
        self.log(f"{distributed.strategy_name(plan.strategy)} with {plan.strategy.num_replicas_in_sync} replica(s)"
                 f"{where}; compute in {self.precision}" + ("; XLA" if config.jit else ""))
        self.log(f"{source.name}: {len(plan.train_split)} training and {len(source.val) if has_val else 0} "
                 f"validation images, {state.num_classes} classes"
                 + (f"; skipped {plan.skipped} unreadable files" if plan.skipped else ""))
        if source.empty_classes:
            self.log(source.empty_note())

    def _build_model(self, plan: _Plan, base) -> None:
        """The model and its optimizer: the last commit's, or a new network (a fine-tuning run:
        with its base model's convolutional layers)."""
        import keras

        from alexnet_core.models.variants import build_model

        config, state, done = self.config, self.state, self.store.completed_epochs
        with plan.strategy.scope():
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
                model = build_model(config.variant, num_classes=state.num_classes, input_size=config.input_size,
                                    **config.switches)
                if base is not None:
                    kept = copy_features(base, model, freeze=config.freeze_features)
                    self.log(f"Fine-tuning from {config.init_from}: kept {len(kept)} layers ({', '.join(kept)})"
                             + (", frozen" if config.freeze_features else ""))
                optimizer = build_optimizer(config, state.steps_per_epoch, loss_scaling=self.mixed)
                model.compile(optimizer=optimizer)  # attaches the optimizer, so checkpoints carry it
                optimizer.build(model.trainable_variables)  # its slots, created here (mirrored), not in the step
        self._stop_point("while building the model")
        iterations = int(optimizer.iterations.numpy())
        if self.record.get("iterations") is not None and iterations != self.record["iterations"]:
            raise layout.RunError(f"{self.store.latest_path()} has taken {iterations} optimizer steps but the commit "
                                  f"record says {self.record['iterations']}: the checkpoint is damaged. Start a new run.")
        if done and iterations != done * state.steps_per_epoch:
            self.log(f"note: the data now gives {state.steps_per_epoch} steps per epoch; the checkpoint has "
                     f"{iterations} steps for {done} epochs")
        self.checkpoint_bytes = max(model.count_params() * 4 * 3, 2**20)
        state.model, state.optimizer, state.committed_steps = model, optimizer, iterations

    def _compile(self, plan: _Plan) -> None:
        """The compiled steps, the workers agreed, and the input pipelines."""
        from alexnet_core.inputs.augment import dataset_options
        from alexnet_core.inputs.data import make_dataset

        config, state, done = self.config, self.state, self.store.completed_epochs
        size, num_classes, batch, budget = state.input_size, state.num_classes, config.batch_size, plan.budget
        train_split = plan.train_split
        plan.train_step, plan.eval_step = make_steps(state.model, state.optimizer, plan.strategy,
                                                     loss_function(config), batch, min(5, num_classes),
                                                     jit=config.jit, per_image=config.snapshots,
                                                     standardisation=state.standardisation)
        if self.cluster:
            self._check_workers_agree(plan.strategy, done)
        self._stop_point("while preparing the first step")
        service = None
        if config.data_service:  # decoding and augmentation on a tf.data service's workers
            from alexnet_core.train.data_service import ServiceInput

            service = ServiceInput(config.data_service, self.status, self.log, self.cluster)
            self.observers.observers.append(service.watchdog)

        # On a GPU, a prepared folder's random-resized crops are resized by the step (records.py,
        # `resize_on_device`); not with a tf.data service, whose batches are cut anew here, and
        # whose workers are the spare cores.
        resize_on_device = service is None and accelerated(plan.strategy)

        def train_fn(context):  # each worker reads its own shard, in batches of one replica's share
            per_replica = context.get_per_replica_batch_size(batch)

            def pipeline(**changes):
                return make_dataset(train_split, num_classes, size, per_replica, **{
                    "training": True, "seed": config.seed + done, "cache_budget": budget, "drop_remainder": True,
                    "standardisation": state.standardisation, "resize_on_device": resize_on_device,
                    **dataset_options(config.augment, size, config.seed + done),
                    "shard": (context.num_input_pipelines, context.input_pipeline_id), **changes})

            return service.stream(pipeline, per_replica, config.seed + done) if service else pipeline()

        plan.iterator = iter(plan.strategy.distribute_datasets_from_function(train_fn))
        if plan.has_val:
            plan.validation = distributed_eval_dataset(plan.strategy, state.source.val, num_classes, size, batch,
                                                       budget, standardisation=state.standardisation)
        plan.initial_loss = self.record.get("initial_loss")

    def _check_workers_agree(self, strategy, done: int) -> None:
        import tensorflow as tf

        try:  # with the first collective, every worker's stop wish so far: all stop together
            stop = distributed.check_workers_agree(strategy, done, self._stop_wished(), self.shared_dir)
        except tf.errors.OpError as exc:
            self._raise_if_lost(exc)
            raise
        if stop:
            raise StopBeforeTraining("before the first step (a worker was asked to stop)")

    # --- the epochs -------------------------------------------------------------------------------

    def _epochs(self, plan: _Plan) -> dict:
        import tensorflow as tf

        config, state, stop, observers = self.config, self.state, self.stop, self.observers
        train_step, iterator, steps = plan.train_step, plan.iterator, state.steps_per_epoch
        on_step = observers.hooks("on_step")
        alone = self.cluster is None  # a worker of several decides to stop only from the reduced wish
        stop_agreed = False
        initial_loss = plan.initial_loss
        for epoch in range(self.store.completed_epochs + 1, config.epochs + 1):
            if stop_agreed or (alone and self._stop_wished()):
                return self._stopped(epoch, 0, steps)
            if plan.schedule_monitor:
                state.optimizer.learning_rate = plateau_learning_rate(config, self.store.metrics,
                                                                      plan.schedule_monitor)
            state.epoch, state.step, state.phase = epoch, 0, "training"
            observers.call("on_epoch_begin", state)
            started = time.perf_counter()
            total = dict.fromkeys(("loss", "correct", "top5", "count"), 0.0)
            for step in range(1, steps + 1):
                out = numbers(train_step(iterator, tf.constant(1.0 if stop.is_set() else 0.0)))
                for key in total:
                    total[key] += out[key]
                loss = out["loss"] / max(out["count"], 1.0)
                initial_loss = loss if initial_loss is None else initial_loss
                why = divergence(loss, initial_loss)
                if why:
                    state.step = step
                    return self._diverged(epoch, step, why)
                state.step, state.global_step, state.loss, state.batch = step, (epoch - 1) * steps + step, loss, out
                for hook in on_step:
                    hook(state)
                stop_agreed = out["stop"] > 0 or (alone and stop.is_set())
                if stop_agreed and step < steps:
                    return self._stopped(epoch, step, steps)
            plan.initial_loss = initial_loss
            ended = self._end_epoch(plan, epoch, total, started)
            if ended is not None:
                return ended
        return self._end("finished", f"Finished {config.epochs} epochs")

    def _end_epoch(self, plan: _Plan, epoch: int, total: dict, started: float) -> dict | None:
        """The epoch's metrics, validation and commit; the run's final status if it diverged."""
        config, state, observers = self.config, self.state, self.observers
        steps = state.steps_per_epoch
        row = {"epoch": epoch - 1, "loss": total["loss"] / total["count"],
               "accuracy": total["correct"] / total["count"], "top5_accuracy": total["top5"] / total["count"],
               "learning_rate": current_learning_rate(state.optimizer)}
        why = divergence(row["loss"], plan.initial_loss)
        if why:
            return self._diverged(epoch, steps, why)
        if plan.validation is not None:
            state.phase = "validating"
            observers.call("on_phase", state)
            validation = evaluate_distributed(plan.eval_step, plan.validation, prefix="val_")
            observers.call("on_validated", state, validation)
            for key in ("images", *PER_IMAGE):
                validation.pop(key)
            row.update(validation)
        row["epoch_seconds"] = time.perf_counter() - started
        state.phase = "saving"
        observers.call("on_phase", state)
        self.store.commit(state.model, epoch, row, plan.best_monitor, "max", int(state.optimizer.iterations.numpy()),
                          extra={"initial_loss": plan.initial_loss, "steps_per_epoch": steps})
        state.completed_epochs, state.committed_steps = epoch, self.store.iterations
        state.metrics, state.history = row, self.store.metrics
        observers.call("on_epoch_committed", state)
        self.log(f"epoch {epoch}/{config.epochs}: " + ", ".join(
            f"{k} {v:.4f}" for k, v in row.items() if k not in ("epoch", "epoch_seconds")))
        return None
