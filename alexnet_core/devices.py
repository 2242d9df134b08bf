"""Which device TensorFlow will use, and setting it up well (memory growth, precision)."""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import subprocess

from .config import ConfigError


class MultiWorkerUnsupported(ConfigError):
    """TF_CONFIG asks for multi-worker training, which Keras 3's fit cannot do."""


def configure_gpus() -> list:
    """Turn on memory growth on every GPU so several processes can share a card.

    Must run before TensorFlow touches a GPU; later calls are harmless no-ops.
    """
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:  # the device is already initialised
            pass
    return gpus


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _ram_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def _visible(indices: list[int]) -> list[int]:
    """The GPU indices CUDA_VISIBLE_DEVICES leaves to TensorFlow (all when unset)."""
    setting = os.environ.get("CUDA_VISIBLE_DEVICES")
    if setting is None:
        return indices
    wanted = [part.strip() for part in setting.split(",") if part.strip()]
    if not wanted or wanted[0].startswith("-"):
        return []
    return [i for i in indices if str(i) in wanted]


def nvidia_gpus() -> list[dict]:
    """[{'index', 'name', 'memory_bytes'}] of the NVIDIA GPUs this process may use, from
    `nvidia-smi` (no TensorFlow import: the app's sidebar asks on every start)."""
    if not shutil.which("nvidia-smi"):
        return []
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=index,name,memory.total", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    gpus = {}
    for line in out.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 3:
            continue
        try:
            gpus[int(parts[0])] = {"index": int(parts[0]), "name": parts[1],
                                   "memory_bytes": int(float(parts[2])) * 1024 * 1024}
        except ValueError:
            continue
    return [gpus[i] for i in _visible(sorted(gpus))]


def describe() -> dict:
    """{'kind': 'GPU'|'CPU', 'name', 'count', 'memory_bytes', 'cores'} of the training device,
    without importing TensorFlow."""
    gpus = nvidia_gpus()
    if gpus:
        return {"kind": "GPU", "name": gpus[0]["name"], "count": len(gpus),
                "memory_bytes": gpus[0]["memory_bytes"], "cores": os.cpu_count()}
    return {"kind": "CPU", "name": _cpu_name(), "count": 1, "memory_bytes": _ram_bytes(),
            "cores": os.cpu_count()}


def use_mixed_precision(setting: str = "auto") -> bool:
    """Set Keras' global dtype policy: mixed_float16 on a GPU when `auto` (or `on`),
    mixed_bfloat16 for `bf16`, else float32. True when float16 needs loss scaling."""
    import keras
    import tensorflow as tf

    from .config import MIXED_PRECISION

    if setting not in MIXED_PRECISION:
        raise ConfigError(f"mixed_precision must be {', '.join(MIXED_PRECISION)}, got {setting!r}")
    if setting == "bf16":
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
        return False
    on = setting == "on" or (setting == "auto" and bool(tf.config.list_physical_devices("GPU")))
    keras.mixed_precision.set_global_policy("mixed_float16" if on else "float32")
    return on


@contextlib.contextmanager
def precision_policy(setting: str = "auto"):
    """use_mixed_precision(setting) for a block (yields whether float16 loss scaling is needed),
    then Keras' previous global policy again: for work inside a long-lived process (the app)."""
    import keras

    previous = keras.mixed_precision.global_policy()
    try:
        yield use_mixed_precision(setting)
    finally:
        keras.mixed_precision.set_global_policy(previous)


def strategy():
    """The tf.distribute strategy for this process.

    Several GPUs -> MirroredStrategy; otherwise the default (single-device) strategy.
    TF_CONFIG (several workers) is refused with a message: Keras 3's model.fit cannot consume
    MultiWorkerMirroredStrategy's per-replica batches (keras-team/keras#20585).
    """
    import tensorflow as tf

    if os.environ.get("TF_CONFIG"):
        raise MultiWorkerUnsupported(
            "TF_CONFIG is set, but multi-worker training is not available: Keras 3's model.fit does not "
            "support MultiWorkerMirroredStrategy (keras-team/keras#20585). Train on one machine (all its "
            "GPUs are used through MirroredStrategy) and unset TF_CONFIG.")
    gpus = tf.config.list_logical_devices("GPU")
    if len(gpus) > 1:
        return tf.distribute.MirroredStrategy()
    cpus = tf.config.list_logical_devices("CPU")
    if len(cpus) > 1:
        # Only when asked for (ALEXNET_LOGICAL_CPUS): the distributed path, tested on one CPU.
        return tf.distribute.MirroredStrategy([d.name for d in cpus])
    return tf.distribute.get_strategy()


def split_cpu(n: int = 2) -> None:
    """Expose the CPU as `n` logical devices (before TensorFlow initialises)."""
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * n)
