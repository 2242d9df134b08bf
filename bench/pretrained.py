"""The 224-px ImageNet networks side by side, in one process on this CPU, with the same weights:
torchvision's AlexNet and the BVLC AlexNet (the paper's network as trained in Caffe), each run by

  keras     our path: the converted model through alexnet_core.predict.inference.make_forward
            (the one compiled forward of Classify and Evaluate: standardisation, network, softmax;
            one image goes through its XLA compilation, predict.one_image)
  keras-plain  the same without XLA for one image (only when named in --runtimes)
  pytorch   PyTorch eager, the network's own structure (torchvision's; for BVLC the same layers
            with groups, LRN and rounded-up pooling), under torch.inference_mode
  onnxrt    ONNX Runtime on the ONNX graph (for BVLC the graph built as the zoo's Caffe2 export is)
  tflite    the TensorFlow Lite export of the converted model (alexnet_core.export.export_model)

All four take the same 224x224 pixels (0..255) and do their own preprocessing, so each figure is
pixels in, probabilities out. Single-image latency: p50 and p95 over `--calls` calls; evaluation
throughput: images/s at batch `--batch`. The runtimes take turns in `--rounds` blocks, so the
machine's swings fall on all of them alike. Then each file's conversion (onnx_import.convert,
torch_import.convert), and saving the .keras file as an install does, is timed in a child process
with its peak memory against the weights file's size.

Weights are generated in the published structures (seeded), since nothing can be downloaded here.

    python bench/pretrained.py [--calls 45] [--batch 32] [--batches 2] [--rounds 3] [--only bvlc|torchvision]
                               [--runtimes keras,pytorch,onnxrt,tflite] [--no-conversion]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def rss_mib() -> float:
    """This process's peak resident memory so far, in MiB: VmHWM, which starts afresh at exec
    (getrusage's ru_maxrss would carry over the parent's peak into the child)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --- Conversion in a child process: time and peak memory ----------------------------------------


def convert_child(kind: str, path: str, out: str) -> None:
    """Run in a fresh process: import what a conversion needs, then convert and save, reporting
    times and peak resident memory (before, after converting, after saving) as JSON."""
    import keras  # noqa: F401
    import tensorflow  # noqa: F401

    if kind == "bvlc":
        import onnx  # noqa: F401

        from alexnet_core.pretrained import onnx_import as converter
    else:
        import torch  # noqa: F401

        from alexnet_core.pretrained import torch_import as converter
    base = rss_mib()
    start = time.perf_counter()
    model, _ = converter.convert(path)
    converted = time.perf_counter()
    peak_convert = rss_mib()
    model.save(out)
    saved = time.perf_counter()
    print(json.dumps({"convert_s": converted - start, "save_s": saved - converted, "base_mib": base,
                      "peak_convert_mib": peak_convert, "peak_mib": rss_mib(),
                      "file_mib": os.path.getsize(path) / 2**20}))


def measure_conversion(kind: str, path: Path, out: Path) -> dict:
    result = subprocess.run([sys.executable, __file__, "--convert-child", kind, str(path), str(out)],
                            capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


# --- The networks in PyTorch, and their ONNX graphs ----------------------------------------------


def bvlc_module():
    """The BVLC AlexNet as a torch module: the paper's layers with Caffe's LRN and pooling."""
    import torch

    nn = torch.nn
    lrn = dict(size=5, alpha=1e-4, beta=0.75, k=1.0)  # torch divides alpha by size, as Caffe does
    features = nn.Sequential(
        nn.Conv2d(3, 96, 11, stride=4), nn.ReLU(), nn.LocalResponseNorm(**lrn), nn.MaxPool2d(3, 2, ceil_mode=True),
        nn.Conv2d(96, 256, 5, padding=2, groups=2), nn.ReLU(), nn.LocalResponseNorm(**lrn),
        nn.MaxPool2d(3, 2, ceil_mode=True),
        nn.Conv2d(256, 384, 3, padding=1), nn.ReLU(),
        nn.Conv2d(384, 384, 3, padding=1, groups=2), nn.ReLU(),
        nn.Conv2d(384, 256, 3, padding=1, groups=2), nn.ReLU(), nn.MaxPool2d(3, 2, ceil_mode=True))
    classifier = nn.Sequential(nn.Dropout(), nn.Linear(9216, 4096), nn.ReLU(), nn.Dropout(), nn.Linear(4096, 4096),
                               nn.ReLU(), nn.Linear(4096, 1000))
    return nn.Sequential(features, nn.Flatten(), classifier)


def scale_like_trained(module, seed: int) -> None:
    """Seeded weights of a size that keeps 0..255-scale activations finite through the network
    (He-scaled convolutions, a small last layer), so the probabilities compared are not all ties."""
    import torch

    torch.manual_seed(seed)
    with torch.no_grad():
        layers = [m for m in module.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
        for i, m in enumerate(layers):
            fan_in = m.weight[0].numel()
            m.weight.normal_(0, (2.0 / fan_in) ** 0.5 * (0.1 if i == len(layers) - 1 else 1.0))
            m.bias.normal_(0.05, 0.05)


def onnx_graph(module, bgr_caffe_style: bool, size: int = 224):
    """The module as an ONNX graph (a free batch). bgr_caffe_style: pooling rounded up written as
    end padding, as the Caffe2 export does; else the module's own (torchvision: no rounding)."""
    import numpy as np
    import torch
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits, current, side, count = [], [], "data_0", size, [0]

    def name(hint):
        count[0] += 1
        return f"{hint}_{count[0]}"

    def add(op, inputs, **attrs):
        nonlocal current
        out = name(op.lower())
        nodes.append(helper.make_node(op, [current, *inputs], [out], **attrs))
        current = out

    def const(array):
        n = name("w")
        inits.append(numpy_helper.from_array(np.ascontiguousarray(array), n))
        return n

    for m in module.modules():
        if isinstance(m, torch.nn.Conv2d):
            k, s, p = m.kernel_size[0], m.stride[0], m.padding[0]
            add("Conv", [const(m.weight.detach().numpy()), const(m.bias.detach().numpy())], kernel_shape=[k, k],
                strides=[s, s], pads=[p] * 4, group=m.groups)
            side = (side + 2 * p - k) // s + 1
        elif isinstance(m, torch.nn.ReLU):
            add("Relu", [])
        elif isinstance(m, torch.nn.LocalResponseNorm):
            add("LRN", [], size=m.size, alpha=m.alpha, beta=m.beta, bias=m.k)
        elif isinstance(m, torch.nn.MaxPool2d):
            out = -(-(side - 3) // 2) + 1 if m.ceil_mode else (side - 3) // 2 + 1
            end = out * 2 - 1 + 3 - side if bgr_caffe_style else 0
            add("MaxPool", [], kernel_shape=[3, 3], strides=[2, 2], pads=[0, 0, end, end])
            side = out
        elif isinstance(m, torch.nn.Linear):
            if len(m.weight.shape) == 2 and m.in_features == 9216 and not any(n.op_type == "Flatten" for n in nodes):
                add("Flatten", [], axis=1)  # torchvision's adaptive pool is the identity at 224 px (6x6 already)
            add("Gemm", [const(m.weight.detach().numpy()), const(m.bias.detach().numpy())], transB=1)
    add("Softmax", [], axis=1)
    graph = helper.make_graph(nodes, "alexnet", [helper.make_tensor_value_info("data_0", TensorProto.FLOAT,
                                                                               ["N", 3, size, size])],
                              [helper.make_tensor_value_info(current, TensorProto.FLOAT, ["N", 1000])],
                              initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 12)])


# --- Runners: pixels (N, 224, 224, 3 float32 0..255) in, probabilities out --------------------------


def keras_runner(keras_file: Path):
    """The app's path: the installed .keras file loaded by inference.load_model (safe_mode, its
    recorded preprocessing), then the one compiled forward. (The model object a converter returns
    is not what the app runs: its slice-assigned variables made it several times slower at batch 1
    on this machine, while the same file loaded runs at the figures below.)"""
    from alexnet_core.predict.inference import load_model, make_forward

    forward = make_forward(load_model(str(keras_file)))
    if hasattr(forward, "wait"):  # the one-image XLA compilation, made in the background, ready first
        forward.wait()
    return lambda x: forward(x).numpy()


def keras_plain_runner(keras_file: Path):
    """The app's path without XLA for one image (predict.one_image): the plain compiled forward,
    for the same calls side by side."""
    from alexnet_core.predict.inference import load_model, make_forward

    forward = make_forward(load_model(str(keras_file)))
    forward = getattr(forward, "plain", forward)
    return lambda x: forward(x).numpy()


def torch_runner(module, bgr_mean: bool):
    import numpy as np
    import torch

    module.eval()
    if bgr_mean:  # Caffe: BGR, the mean subtracted on 0..255
        scale = torch.ones(1, 3, 1, 1)
        offset = -torch.tensor([104.00698793, 116.66876762, 122.67891434]).view(1, 3, 1, 1)
    else:
        scale = 1.0 / (255.0 * torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
        offset = -torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)

    def run(x):
        with torch.inference_mode():
            t = torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2)
            t = t.flip(1) if bgr_mean else t.contiguous()  # NCHW, as PyTorch's convolutions take it
            return torch.softmax(module(t * scale + offset), dim=1).numpy()

    return run


def _numpy_input(x, bgr_mean: bool):
    import numpy as np

    if bgr_mean:
        return np.ascontiguousarray((x[..., ::-1] - np.float32([104.00698793, 116.66876762, 122.67891434]))
                                    .transpose(0, 3, 1, 2))
    return np.ascontiguousarray(((x / 255.0 - np.float32(IMAGENET_MEAN)) / np.float32(IMAGENET_STD))
                                .transpose(0, 3, 1, 2), dtype=np.float32)


def ort_runner(path: Path, bgr_mean: bool):
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda x: session.run(None, {"data_0": _numpy_input(x, bgr_mean)})[0]


def tflite_runner(path: Path, record: dict):
    import numpy as np
    import tensorflow as tf

    interpreter = tf.lite.Interpreter(model_path=str(path), num_threads=os.cpu_count())
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    scale = np.float32([1.0 / (255.0 * s) for s in record["std"]])
    offset = np.float32([-m / s for m, s in zip(record["mean"], record["std"])])
    state = {"batch": None}

    def run(x):
        if state["batch"] != len(x):
            interpreter.resize_tensor_input(inp["index"], list(x.shape))
            interpreter.allocate_tensors()
            state["batch"] = len(x)
        interpreter.set_tensor(inp["index"], np.ascontiguousarray(x * scale + offset, dtype=np.float32))
        interpreter.invoke()
        return interpreter.get_tensor(out["index"]).copy()

    return run


# --- Timing ---------------------------------------------------------------------------------------


# Before each block: the worker threads a runtime leaves spinning after its last call (OpenMP's,
# ONNX Runtime's, TensorFlow's) go idle, so they do not take the cores from the next runtime.
PAUSE_S = 0.5


def timed(run, x, calls: int) -> list[float]:
    samples = []
    for _ in range(calls):
        start = time.perf_counter()
        run(x)
        samples.append(time.perf_counter() - start)
    return samples


def bench_network(label: str, runners: dict, images, args) -> dict:
    import numpy as np

    one, batch = images[:1], images[:args.batch]
    probs = {name: run(batch) for name, run in runners.items()}  # warm-up (tracing), and the same answers?
    for name, run in runners.items():  # the first single image (tracing, once)
        start = time.perf_counter()
        run(one)
        print(f"  {label} {name}: first single image {1000 * (time.perf_counter() - start):.0f} ms", flush=True)
    reference = probs["pytorch"]
    for name, p in probs.items():
        agree = float(np.mean(p.argmax(1) == reference.argmax(1)))
        print(f"  {label} {name}: top-1 agreement with PyTorch {agree:.0%}, largest probability difference "
              f"{np.abs(p - reference).max():.2e}", flush=True)
    latency = {name: [] for name in runners}
    throughput = {name: [] for name in runners}
    per_round = max(1, args.calls // args.rounds)
    for _ in range(args.rounds):
        for name, run in runners.items():
            time.sleep(PAUSE_S)
            latency[name] += timed(run, one, per_round)
        for name, run in runners.items():
            time.sleep(PAUSE_S)
            seconds = sum(timed(run, batch, args.batches))
            throughput[name].append(args.batches * len(batch) / seconds)
    results = {}
    for name in runners:
        ms = np.array(latency[name]) * 1000
        results[name] = {"p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95)),
                         "images_per_s": float(np.median(throughput[name])),
                         "rounds_images_per_s": [round(v, 1) for v in throughput[name]]}
    return results


def print_table(label: str, results: dict) -> None:
    torch_ = results["pytorch"]
    print(f"\n{label}: single image (p50 / p95 ms), evaluation at batch (images/s), speed against PyTorch eager")
    for name, r in results.items():
        print(f"  {name:<8} p50 {r['p50_ms']:7.2f}  p95 {r['p95_ms']:7.2f} | {r['images_per_s']:7.1f} img/s "
              f"(rounds {r['rounds_images_per_s']}) | latency x{torch_['p50_ms'] / r['p50_ms']:.2f}, "
              f"throughput x{r['images_per_s'] / torch_['images_per_s']:.2f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=45)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--batches", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", choices=("bvlc", "torchvision"))
    parser.add_argument("--runtimes", default="keras,pytorch,onnxrt,tflite",
                        help="comma-separated, from keras, pytorch, onnxrt, tflite (pytorch always runs: "
                             "the reference)")
    parser.add_argument("--no-conversion", action="store_true", help="time the runtimes only")
    parser.add_argument("--convert-child", nargs=3, metavar=("KIND", "PATH", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.convert_child:
        convert_child(*args.convert_child)
        return

    import numpy as np
    import tensorflow as tf
    import torch

    print(f"threads: TensorFlow intra-op {tf.config.threading.get_intra_op_parallelism_threads() or 'default'}, "
          f"PyTorch {torch.get_num_threads()}, CPUs {os.cpu_count()}; TensorFlow {tf.__version__}, "
          f"PyTorch {torch.__version__}", flush=True)
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (args.batch, 224, 224, 3)).astype(np.float32)
    tmp = Path(tempfile.mkdtemp(prefix="bench-pretrained-"))
    try:
        summary = run_all(args, tmp, images)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # 1.6 GB of weights, graphs and exports
    print("\n" + json.dumps(summary, indent=1))


def run_all(args, tmp: Path, images) -> dict:
    import onnx
    import torch

    from alexnet_core.export.export_model import export_model
    from alexnet_core.predict.inference import write_class_names
    from alexnet_core.pretrained import onnx_import, torch_import

    summary = {}
    for net in ("torchvision", "bvlc"):
        if args.only and net != args.only:
            continue
        print(f"\n== {net} ==", flush=True)
        if net == "torchvision":
            module = torch_import.reference_module(1000)
            scale_like_trained(module, 0)
            weights = tmp / "alexnet-torchvision.pth"
            torch.save(module.state_dict(), weights)
            onnx.save(onnx_graph(module, False), tmp / "torchvision.onnx")
            conversion = None if args.no_conversion else measure_conversion("torchvision", weights,
                                                                            tmp / "torchvision.keras")
            model, _ = torch_import.convert(weights)
            record = {"input_size": 224, "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}
            graph = tmp / "torchvision.onnx"
        else:
            module = bvlc_module()
            scale_like_trained(module, 1)
            graph = tmp / "bvlcalexnet.onnx"
            onnx.save(onnx_graph(module, True), graph)
            weights = graph
            conversion = None if args.no_conversion else measure_conversion("bvlc", graph, tmp / "bvlc.keras")
            model, _ = onnx_import.convert(graph)
            record = onnx_import.preprocessing(224)
        keras_file = tmp / f"{net}.keras"
        model.save(keras_file)
        write_class_names(keras_file, [f"c{i}" for i in range(1000)], record)
        del model
        wanted = set(args.runtimes.split(",")) | {"pytorch"}
        if "tflite" in wanted:
            lite = export_model(str(keras_file), "tflite", tmp / f"{net}.tflite", parity_images=64)
            print(f"  TensorFlow Lite export: top-1 agreement {lite['parity']['top1_agreement']:.0%} on "
                  f"{lite['parity']['images']} images", flush=True)
        runners = {}
        for name in ("keras", "keras-plain", "pytorch", "onnxrt", "tflite"):
            if name not in wanted:
                continue
            if name == "keras":
                runners[name] = keras_runner(keras_file)
            elif name == "keras-plain":
                runners[name] = keras_plain_runner(keras_file)
            elif name == "pytorch":
                runners[name] = torch_runner(module, net == "bvlc")
            elif name == "onnxrt":
                runners[name] = ort_runner(graph, net == "bvlc")
            else:
                runners[name] = tflite_runner(tmp / f"{net}.tflite", record)
        results = bench_network(net, runners, images, args)
        print_table(net, results)
        if conversion is None:
            summary[net] = {"runtimes": results, "conversion": None, "weights_file": weights.name}
            del runners, module
            continue
        print(f"  conversion of the {conversion['file_mib']:.0f} MiB file: {conversion['convert_s']:.1f} s "
              f"(+{conversion['save_s']:.1f} s to save the .keras); peak memory {conversion['peak_mib']:.0f} MiB, "
              f"{conversion['peak_mib'] - conversion['base_mib']:.0f} MiB over the process after its imports "
              f"({conversion['base_mib']:.0f} MiB) = {(conversion['peak_mib'] - conversion['base_mib']) / conversion['file_mib']:.2f}x "
              f"the file; while converting {conversion['peak_convert_mib'] - conversion['base_mib']:.0f} MiB over", flush=True)
        summary[net] = {"runtimes": results, "conversion": conversion, "weights_file": weights.name}
        del runners, module
    return summary


if __name__ == "__main__":
    main()
