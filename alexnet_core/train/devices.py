"""Which device TensorFlow will use, and setting it up well (memory growth, precision)."""

from __future__ import annotations

# Imports inside functions are deliberate: TensorFlow and Keras, and the modules that reach them,
# load on first use, so importing this module (the app's pages, the command line) stays light.
import contextlib
import json
import os
import platform
import re
import shutil
import subprocess
from dataclasses import dataclass

from alexnet_core.settings.config import MIXED_PRECISION, ConfigError

ADDRESS = re.compile(r"^(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:]+\]):(\d{1,5})$")


@dataclass(frozen=True)
class Cluster:
    """This process's place in a multi-worker job, read from TF_CONFIG."""

    workers: tuple[str, ...]  # every task's address, the chief first
    position: int  # this task's index in `workers`
    has_chief: bool  # a separate "chief" job (else worker 0 is the chief)

    @property
    def is_chief(self) -> bool:
        return self.position == 0

    @property
    def size(self) -> int:
        return len(self.workers)

    def name(self, position: int) -> str:
        """How messages name a task: 'worker 1 (host:port)'."""
        if not 0 <= position < self.size:
            return f"task {position}"
        return f"{self._label(position)} ({self.workers[position]})"

    def _label(self, position: int) -> str:
        if self.has_chief:
            return "the chief" if position == 0 else f"worker {position - 1}"
        return f"worker {position}"

    def lost_task(self, message: str) -> str | None:
        """The task an error message from TensorFlow's collectives or RPCs names, in our words."""
        for job, task in re.findall(r"/job:(chief|worker)/replica:\d+/task:(\d+)", message):
            position = int(task) + (1 if job == "worker" and self.has_chief else 0)
            if position != self.position:
                return self.name(position)
        return None


def _check_address(address, where: str) -> str:
    if not isinstance(address, str) or not ADDRESS.match(address.strip()) or not 0 < int(address.rsplit(":", 1)[1]) < 65536:
        raise ConfigError(f"{where}: {address!r} is not HOST:PORT (e.g. 10.0.0.2:12345)")
    return address.strip()


def parse_tf_config(text: str) -> Cluster | None:
    """The cluster TF_CONFIG describes (TensorFlow's documented format), or None for one worker.

    {"cluster": {"chief": ["host:port"], "worker": ["host:port", ...]}, "task": {"type": "worker", "index": 0}}
    """
    try:
        spec = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"TF_CONFIG is not valid JSON ({exc}); see docs/DISTRIBUTED.md for its format") from exc
    if not isinstance(spec, dict) or not isinstance(spec.get("cluster"), dict) or not isinstance(spec.get("task"), dict):
        raise ConfigError('TF_CONFIG needs {"cluster": {"worker": [...]}, "task": {"type": ..., "index": ...}}')
    cluster, task = spec["cluster"], spec["task"]
    unknown = sorted(set(cluster) - {"chief", "worker"})
    if unknown:
        raise ConfigError(f"TF_CONFIG's cluster has {', '.join(unknown)} jobs; synchronous training uses only "
                          "'chief' and 'worker' (parameter servers are not supported)")
    chief, worker = cluster.get("chief", []), cluster.get("worker", [])
    if not isinstance(chief, list) or not isinstance(worker, list) or len(chief) > 1:
        raise ConfigError("TF_CONFIG's cluster needs a list of workers and at most one chief")
    addresses = [_check_address(a, "TF_CONFIG") for a in chief + worker]
    if not addresses:
        raise ConfigError("TF_CONFIG's cluster lists no workers")
    if len(set(addresses)) != len(addresses):
        raise ConfigError("TF_CONFIG lists an address twice: every worker needs its own HOST:PORT")
    kind, index = task.get("type"), task.get("index", 0)
    jobs = {"chief": chief, "worker": worker}
    if kind not in jobs or not isinstance(index, int) or not 0 <= index < len(jobs[kind]):
        raise ConfigError(f"TF_CONFIG's task {task!r} is not in its cluster (type chief or worker, index from 0)")
    position = index + (len(chief) if kind == "worker" else 0)
    if len(addresses) == 1:
        return None
    return Cluster(tuple(addresses), position, bool(chief))


def workers_tf_config(workers: str, index: int) -> str:
    """TF_CONFIG for `--workers HOST:PORT,HOST:PORT,... --worker-index I` (worker 0 is the chief)."""
    addresses = [_check_address(a, "--workers") for a in workers.split(",") if a.strip()]
    if len(addresses) < 2:
        raise ConfigError("--workers needs at least two HOST:PORT addresses, separated by commas")
    if len(set(addresses)) != len(addresses):
        raise ConfigError("--workers lists an address twice: every worker needs its own HOST:PORT")
    if index is None or not 0 <= index < len(addresses):
        raise ConfigError(f"--worker-index must be 0..{len(addresses) - 1} (this worker's place in --workers)")
    return json.dumps({"cluster": {"worker": addresses}, "task": {"type": "worker", "index": index}})


def cluster() -> Cluster | None:
    """This process's cluster from $TF_CONFIG, or None when it trains alone."""
    text = os.environ.get("TF_CONFIG", "").strip()
    return parse_tf_config(text) if text else None


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


def cpu_computes_bf16() -> bool:
    """Whether this CPU computes bfloat16 in hardware (AVX512-BF16 or AMX); elsewhere TensorFlow
    emulates it, many times slower than float32."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as info:
            flags = next((line.split(":", 1)[1].split() for line in info if line.startswith("flags")), [])
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def use_mixed_precision(setting: str = "auto") -> bool:
    """Set Keras' global dtype policy: `auto` picks mixed_float16 on a GPU, mixed_bfloat16 on a
    CPU that computes bfloat16 in hardware, float32 elsewhere; `on` is mixed_float16, `bf16`
    mixed_bfloat16, `off` float32. True when float16 needs loss scaling."""
    import keras
    import tensorflow as tf


    if setting not in MIXED_PRECISION:
        raise ConfigError(f"mixed_precision must be {', '.join(MIXED_PRECISION)}, got {setting!r}")
    gpu = setting == "auto" and bool(tf.config.list_physical_devices("GPU"))
    if setting == "bf16" or (setting == "auto" and not gpu and cpu_computes_bf16()):
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
        return False
    on = setting == "on" or gpu
    keras.mixed_precision.set_global_policy("mixed_float16" if on else "float32")
    return on


def compute_dtype() -> str:
    """What the global policy computes in, in words: bfloat16, float16 with loss scaling, float32."""
    import keras

    name = keras.mixed_precision.global_policy().compute_dtype
    return "float16 with loss scaling" if name == "float16" else name


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

    TF_CONFIG with several tasks -> MultiWorkerMirroredStrategy (every GPU of every worker, or
    each worker's CPU); several local GPUs -> MirroredStrategy; otherwise the default
    (single-device) strategy. The multi-worker strategy must be created before TensorFlow
    runs any operation.
    """
    import tensorflow as tf

    if cluster() is not None:
        options = tf.distribute.experimental.CommunicationOptions(
            implementation=tf.distribute.experimental.CommunicationImplementation.AUTO)
        return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
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
