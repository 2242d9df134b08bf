"""Training throughput of `paper` (227 px) and `torchvision` (224 px) on a GPU (issue #9).

Every line says its backend, device, variant, input size, precision and batch. Measured:

  (fit)      Keras model.fit, jit_compile on, synthetic tensors made once on the device (so the
             model alone is timed): float32, bf16 (mixed_bfloat16), fp16 (mixed_float16 with
             loss scaling, LossScaleOptimizer). SGD with momentum 0.9 and weight decay 5e-4 from
             alexnet_core.train.optimizer.build_optimizer, 1000 classes. Timed over --steps steps after
             --warmup steps (compilation); the epoch's loss is read back at the end, so every
             step has finished when the clock stops.
  TensorFlow backend only (tf.data needs TensorFlow):
  (a) step   our training step (loop.make_steps, read back every step as the trainer does)
             on the same synthetic tensors.
  (b) input  the real input pipeline alone: data.make_dataset over a folder of --images JPEGs of
             --jpeg-size in --data-classes classes that this script writes to a temporary folder,
             decoded every epoch (no cache: ImageNet-sized data does not fit), `paper` augmentation.
  (c) train  our training step fed by that pipeline (images/s of the whole loop).
  PyTorch reference (when PyTorch sees a CUDA device; --torch): torchvision's AlexNet at 224 px,
             channels_last, the same SGD settings, eager and torch.compile (--torch-compile), float32,
             bf16 autocast and fp16 autocast with GradScaler: what the card gives this network.

    KERAS_BACKEND=jax python bench/gpu_throughput.py --steps 200   # a GPU machine without TensorFlow
    python bench/gpu_throughput.py                                  # TensorFlow on a GPU: all of it
    python bench/gpu_throughput.py --steps 3 --warmup 1 --batch-size 8 --images 48 --precisions float32,bf16

Memory: under TensorFlow the script turns memory growth on (devices.configure_gpus, as the
trainer) and prints each measurement's peak; JAX has no memory growth: it preallocates 75% of
the GPU unless XLA_PYTHON_CLIENT_PREALLOCATE=false (or XLA_PYTHON_CLIENT_MEM_FRACTION), and
the peak it prints is the process's highest so far (JAX cannot reset it).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import keras  # noqa: E402

from alexnet_core.models.variants import build_model, get_arch  # noqa: E402
from bench.synthetic import write_jpegs  # noqa: E402

BACKEND = keras.backend.backend()
GOAL = 10_000  # img/s for `paper` training in bf16 on an H100 (issue #9)
POLICY = {"float32": "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}
SETTING = {"float32": "off", "bf16": "bf16", "fp16": "on"}  # TrainConfig.mixed_precision
LABEL = {"float32": "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16+loss scaling"}
rows: list[dict] = []
failures: list[str] = []


# --- Backend and device ---------------------------------------------------------------------


def setup_backend() -> str:
    """Memory growth (TensorFlow) and a one-line description of the device measurements run on."""
    if BACKEND == "tensorflow":
        import tensorflow as tf

        from alexnet_core.train.devices import configure_gpus

        gpus = configure_gpus()
        if gpus:
            details = tf.config.experimental.get_device_details(tf.config.list_physical_devices("GPU")[0])
            return f"GPU {details.get('device_name', '?')} x{len(gpus)} (memory growth on)"
        return f"CPU ({os.cpu_count()} cores)"
    if BACKEND == "jax":
        import jax

        device = jax.devices()[0]
        pre = os.environ.get("XLA_PYTHON_CLIENT_PREALLOCATE", "true (default)")
        fraction = os.environ.get("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.75 (default)")
        return (f"{device.platform.upper()} {device.device_kind} x{len(jax.devices())} "
                f"(XLA_PYTHON_CLIENT_PREALLOCATE={pre}, MEM_FRACTION={fraction})")
    return BACKEND


def reset_peak() -> None:
    if BACKEND == "tensorflow":
        import tensorflow as tf

        if tf.config.list_physical_devices("GPU"):
            tf.config.experimental.reset_memory_stats("GPU:0")


def peak_memory() -> str:
    try:
        if BACKEND == "tensorflow":
            import tensorflow as tf

            if tf.config.list_physical_devices("GPU"):
                return f"peak {tf.config.experimental.get_memory_info('GPU:0')['peak'] / 2**30:.2f} GiB"
        elif BACKEND == "jax":
            import jax

            stats = jax.devices()[0].memory_stats() or {}
            if "peak_bytes_in_use" in stats:
                return f"peak so far {stats['peak_bytes_in_use'] / 2**30:.2f} GiB"
    except Exception as exc:  # memory figures are a bonus, never a failure
        return f"peak ? ({type(exc).__name__})"
    return ""


def set_precision(precision: str) -> bool:
    """Keras' global policy for `precision`, as the trainer sets it; True when float16 needs loss scaling."""
    if BACKEND == "tensorflow":
        from alexnet_core.train.devices import use_mixed_precision

        return use_mixed_precision(SETTING[precision])
    keras.mixed_precision.set_global_policy(POLICY[precision])
    return precision == "fp16"


def optimizer_for(variant: str, batch: int, precision: str, loss_scaling: bool):
    """The trainer's optimizer for an SGD run (momentum 0.9, weight decay 5e-4, constant rate)."""
    from alexnet_core.settings.config import TrainConfig
    from alexnet_core.train.optimizer import build_optimizer

    config = TrainConfig(variant=variant, data="synthetic", batch_size=batch, epochs=1, optimizer="sgd",
                         schedule="constant", mixed_precision=SETTING[precision], augment="paper", val_split=0.0)
    return config, build_optimizer(config, 1000, loss_scaling=loss_scaling)


def synthetic(batch: int, size: int, classes: int):
    """One batch of standardised-looking images and one-hot labels, made on the default device."""
    x = keras.random.normal((batch, size, size, 3), seed=0)
    y = keras.ops.one_hot(keras.random.randint((batch,), 0, classes, seed=1), classes)
    return x, keras.ops.cast(y, "float32")


def report(what: str, variant: str, size: int, precision: str, batch: int, rate: float, device: str,
           backend: str | None = None, note: str = "") -> None:
    backend = backend or f"keras/{BACKEND}"
    rows.append(dict(what=what, variant=variant, size=size, precision=precision, batch=batch, rate=rate,
                     backend=backend))
    print(f"{backend:<14} {device[:34]:<34} {variant:<11} {size}px {LABEL.get(precision, precision):<27} "
          f"batch {batch:<4} {what:<18} {rate:10.1f} img/s  {note}", flush=True)


# --- Keras: model.fit on synthetic tensors, and (TensorFlow) our step -------------------------


def keras_fit(variant, precision, batch, args, device):
    loss_scaling = set_precision(precision)
    keras.utils.set_random_seed(0)
    model = build_model(variant, num_classes=args.classes)
    size = model.input_shape[1]
    _, optimizer = optimizer_for(variant, batch, precision, loss_scaling)
    model.compile(optimizer=optimizer, loss=keras.losses.CategoricalCrossentropy(), jit_compile=True)
    x, y = synthetic(batch, size, args.classes)
    if BACKEND == "tensorflow":
        import tensorflow as tf

        def data():
            return tf.data.Dataset.from_tensors((x, y)).repeat().prefetch(2)
    else:
        def data():  # the same device arrays every step: nothing is copied to the device
            while True:
                yield x, y
    reset_peak()
    start = time.perf_counter()
    model.fit(data(), epochs=1, steps_per_epoch=args.warmup, shuffle=False, verbose=0)
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    history = model.fit(data(), epochs=1, steps_per_epoch=args.steps, shuffle=False, verbose=0)
    loss = float(history.history["loss"][-1])  # read back: every step has run
    wall = time.perf_counter() - start
    report("(fit) synthetic", variant, size, precision, batch, args.steps * batch / wall, device,
           note=f"loss {loss:.3f}; {wall / args.steps * 1e3:.1f} ms/step; warm-up {compile_s:.1f} s; {peak_memory()}")


def tf_model_and_step(variant, precision, batch, classes):
    import tensorflow as tf

    from alexnet_core.train.loop import loss_function, make_steps

    loss_scaling = set_precision(precision)
    keras.utils.set_random_seed(0)
    model = build_model(variant, num_classes=classes)
    config, optimizer = optimizer_for(variant, batch, precision, loss_scaling)
    model.compile(optimizer=optimizer)
    optimizer.build(model.trainable_variables)
    train_step, _ = make_steps(model, optimizer, tf.distribute.get_strategy(), loss_function(config), batch,
                               min(5, classes))
    return model, config, train_step


def time_steps(train_step, iterator, steps, warmup):
    for _ in range(warmup):
        out = {k: float(v) for k, v in train_step(iterator).items()}
    start = time.perf_counter()
    for _ in range(steps):
        out = {k: float(v) for k, v in train_step(iterator).items()}  # read back every step, as the trainer
    return time.perf_counter() - start, out["loss"] / max(out["count"], 1.0)


def tf_step_synthetic(variant, precision, batch, args, device):
    import tensorflow as tf

    model, _, train_step = tf_model_and_step(variant, precision, batch, args.classes)
    size = model.input_shape[1]
    x, y = synthetic(batch, size, args.classes)
    iterator = iter(tf.data.Dataset.from_tensors((x, y)).repeat().prefetch(2))
    reset_peak()
    wall, loss = time_steps(train_step, iterator, args.steps, args.warmup)
    report("(a) step synthetic", variant, size, precision, batch, args.steps * batch / wall, device,
           note=f"loss {loss:.3f}; {wall / args.steps * 1e3:.1f} ms/step; {peak_memory()}")


# --- TensorFlow: the real input pipeline -------------------------------------------------------


def pipeline(split, classes, size, batch, precision):
    from alexnet_core.inputs.augment import dataset_options
    from alexnet_core.inputs.data import make_dataset

    set_precision(precision)  # before the augmentation is built, as the trainer
    return make_dataset(split, classes, size, batch, training=True, cache_budget=0, drop_remainder=True,
                        **dataset_options("paper", size, 0))


def tf_pipeline_alone(variant, batch, split, classes, args, device):
    size = get_arch(variant).input_size
    iterator = iter(pipeline(split, classes, size, batch, "float32"))
    for _ in range(args.warmup):
        next(iterator)
    start = time.perf_counter()
    for _ in range(args.steps):
        x, _ = next(iterator)
    x.numpy()
    wall = time.perf_counter() - start
    report("(b) input alone", variant, size, "float32", batch, args.steps * batch / wall, device,
           backend="tf.data", note=f"{args.jpeg_size} JPEG, decode + paper augmentation, {os.cpu_count()} CPU cores")


def tf_step_pipeline(variant, precision, batch, split, classes, args, device):
    model, _, train_step = tf_model_and_step(variant, precision, batch, classes)
    size = model.input_shape[1]
    iterator = iter(pipeline(split, classes, size, batch, precision))
    reset_peak()
    wall, loss = time_steps(train_step, iterator, args.steps, args.warmup)
    report("(c) step+input", variant, size, precision, batch, args.steps * batch / wall, device,
           note=f"loss {loss:.3f}; {classes} classes; {peak_memory()}")


# --- PyTorch reference --------------------------------------------------------------------------


def torch_reference(batch, args):
    try:
        import torch
        import torchvision
    except ImportError as exc:
        print(f"PyTorch reference skipped: {exc}")
        return
    if not torch.cuda.is_available():
        print("PyTorch reference skipped: PyTorch sees no CUDA device")
        return
    import torch.nn.functional as F

    device = f"GPU {torch.cuda.get_device_name(0)}"
    print(f"PyTorch {torch.__version__}, torchvision {torchvision.__version__}; TF32: cudnn "
          f"{torch.backends.cudnn.allow_tf32}, matmul {torch.backends.cuda.matmul.allow_tf32}", flush=True)
    compiled_for = set(args.torch_compile.split(",")) if args.torch_compile != "none" else set()
    for precision in args.precisions.split(","):
        for compiled in (False, True) if precision in compiled_for else (False,):
            torch.manual_seed(0)
            model = torchvision.models.alexnet(num_classes=args.classes).cuda().to(memory_format=torch.channels_last)
            optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
            x = torch.randn(batch, 3, 224, 224, device="cuda").contiguous(memory_format=torch.channels_last)
            y = torch.randint(0, args.classes, (batch,), device="cuda")
            dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
            scaler = torch.amp.GradScaler("cuda", enabled=precision == "fp16")
            run = torch.compile(model) if compiled else model

            def step(run=run, optimizer=optimizer, x=x, y=y, dtype=dtype, scaler=scaler):
                optimizer.zero_grad(set_to_none=True)
                with torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None):
                    loss = F.cross_entropy(run(x), y)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                return loss

            torch.cuda.reset_peak_memory_stats()
            try:
                start = time.perf_counter()
                for _ in range(max(args.warmup, 3 if compiled else 1)):
                    step()
                torch.cuda.synchronize()
                warm = time.perf_counter() - start
                start = time.perf_counter()
                for _ in range(args.steps):
                    loss = step()
                value = loss.item()  # waits for the last step
                torch.cuda.synchronize()
                wall = time.perf_counter() - start
            except Exception as exc:  # torch.compile can fail where eager works
                print(f"torch {'compiled' if compiled else 'eager'} {precision}: failed: {type(exc).__name__}: "
                      f"{str(exc).splitlines()[0][:200]}", flush=True)
                continue
            report(f"(fit) {'compiled' if compiled else 'eager'}", "torchvision", 224, precision, batch,
                   args.steps * batch / wall, device, backend="pytorch",
                   note=f"loss {value:.3f}; {wall / args.steps * 1e3:.1f} ms/step; warm-up {warm:.1f} s; "
                        f"peak {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")
            del model, optimizer, run
            torch.cuda.empty_cache()


def reason(exc: Exception) -> str:
    """The telling lines of an error (TensorFlow's wrap the cause in tracebacks of user code)."""
    lines = [re.sub(r"\x1b\[[0-9;]*m|\[0m|\[1m", "", line).strip() for line in str(exc).splitlines()]
    lines = [line for line in lines if line and not line.startswith(
        ("File ", "•", "Arguments received", "in user code", "lambda", "raise ", "return "))]
    called = [line for line in lines if line.startswith("Exception encountered when calling")]
    return " ".join((called[:1] + lines[-1:]) if lines else [type(exc).__name__])[:400]


def guarded(measure, *args) -> None:
    """Run one measurement; a failure is printed as a line of its own and the others go on."""
    try:
        measure(*args)
    except Exception as exc:
        print(f"FAILED {measure.__name__}{tuple(a for a in args if isinstance(a, (str, int)))}: "
              f"{type(exc).__name__}: {reason(exc)}", flush=True)
        failures.append(f"{measure.__name__} {[a for a in args if isinstance(a, (str, int))]}: {type(exc).__name__}")


# --- Summary ------------------------------------------------------------------------------------


def summary() -> None:
    print("\nSummary (img/s, training):\n")
    keys = []
    for r in rows:
        key = (r["variant"], r["size"], r["precision"], r["batch"])
        if key not in keys:
            keys.append(key)
    columns = []
    for r in rows:
        column = (r["backend"], r["what"])
        if column not in columns:
            columns.append(column)
    print("| variant | input | precision | batch | " + " | ".join(f"{b} {w}" for b, w in columns) + " |")
    print("|---|---|---|---|" + "---|" * len(columns))
    for key in keys:
        cells = []
        for backend, what in columns:
            hit = [r["rate"] for r in rows if (r["variant"], r["size"], r["precision"], r["batch"]) == key
                   and (r["backend"], r["what"]) == (backend, what)]
            cells.append(f"{hit[0]:,.0f}" if hit else "")
        print(f"| {key[0]} | {key[1]} | {key[2]} | {key[3]} | " + " | ".join(cells) + " |")
    goal = [r for r in rows if r["variant"] == "paper" and r["precision"] == "bf16" and r["what"] == "(fit) synthetic"]
    for r in goal:
        print(f"\npaper bf16, batch {r['batch']}, {r['backend']}: {r['rate']:,.0f} img/s = {r['rate'] / GOAL:.2f}x "
              f"the {GOAL:,} img/s goal")
    if failures:
        print(f"\n{len(failures)} measurement(s) failed: " + "; ".join(failures))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", default="paper,torchvision")
    parser.add_argument("--precisions", default="float32,bf16,fp16", help="any of float32, bf16, fp16")
    parser.add_argument("--batch-size", default="256", help="one size or several, comma-separated")
    parser.add_argument("--steps", type=int, default=100, help="timed steps per measurement")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first (compilation)")
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--images", type=int, default=2000, help="JPEGs written for the input pipeline")
    parser.add_argument("--jpeg-size", default="500x375", help="WIDTHxHEIGHT of those JPEGs")
    parser.add_argument("--data-classes", type=int, default=10)
    parser.add_argument("--skip", default="", help="parts to leave out: fit, step, input, train, torch")
    parser.add_argument("--torch", choices=("auto", "off"), default="auto",
                        help="auto: the PyTorch reference when PyTorch sees a CUDA device")
    parser.add_argument("--torch-compile", default="bf16",
                        help="precisions also timed under torch.compile (comma-separated), or none")
    args = parser.parse_args()
    variants, precisions = args.variants.split(","), args.precisions.split(",")
    batches = [int(b) for b in args.batch_size.split(",")]
    skip = set(filter(None, args.skip.split(",")))
    unknown = set(precisions) - set(POLICY)
    if unknown:
        parser.error(f"unknown precision(s) {', '.join(sorted(unknown))}: use float32, bf16, fp16")

    device = setup_backend()
    print(f"backend {BACKEND} (Keras {keras.__version__}); device {device}; variants {variants}; precisions "
          f"{precisions}; batch {batches}; {args.steps} timed steps after {args.warmup} warm-up steps", flush=True)
    if BACKEND == "jax":
        import jax

        print(f"JAX {jax.__version__}, default matmul precision {jax.config.jax_default_matmul_precision}", flush=True)

    for batch in batches:
        if "fit" not in skip:
            for variant in variants:
                for precision in precisions:
                    guarded(keras_fit, variant, precision, batch, args, device)
        if BACKEND != "tensorflow":
            print("(a)-(c) skipped: our training step and input pipeline are TensorFlow (tf.function, tf.data); "
                  "run with KERAS_BACKEND=tensorflow where TensorFlow is installed", flush=True)
        else:
            if "step" not in skip:
                for variant in variants:
                    for precision in precisions:
                        guarded(tf_step_synthetic, variant, precision, batch, args, device)
            if not {"input", "train"} <= skip:
                from alexnet_core.inputs.data import load_folder

                width, height = (int(v) for v in args.jpeg_size.lower().split("x"))
                with tempfile.TemporaryDirectory(prefix="bench-gpu-") as tmp:
                    start = time.perf_counter()
                    root = write_jpegs(Path(tmp) / "data", args.images, args.data_classes, width, height)
                    source = load_folder(root, val_split=0.0)
                    split, classes = source.split("train"), len(source.class_names)
                    print(f"wrote {len(split)} JPEGs of {width}x{height} in {classes} classes in "
                          f"{time.perf_counter() - start:.1f} s", flush=True)
                    if "input" not in skip:
                        for variant in variants:
                            guarded(tf_pipeline_alone, variant, batch, split, classes, args, device)
                    if "train" not in skip:
                        for variant in variants:
                            for precision in precisions:
                                guarded(tf_step_pipeline, variant, precision, batch, split, classes, args, device)
        if args.torch == "auto" and "torch" not in skip:
            guarded(torch_reference, batch, args)
    keras.mixed_precision.set_global_policy("float32")
    summary()


if __name__ == "__main__":
    main()
