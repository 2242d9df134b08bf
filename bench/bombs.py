"""Peak memory of reading files that unpack to far more than they hold (issue #25, round three).

    python bench/bombs.py [--gib 3]

Builds, in a temporary folder, each bomb with GIB gibibytes of zeros (deflated at zlib's level
1: 5 MB per GiB) next to a good file of the same kind, then for each reads the good file and the bomb in a fresh Python, the way the app and the
CLI read them, and prints how much the process's peak resident memory (ru_maxrss) grew while
reading the bomb, and what the reader said:

- model: the bundled model with GIB of zeros after its weights (`inference.load_model`, what
  `predict`, `evaluate` and the Classify page call);
- snapshot, probe: a run's `snapshots/epoch-0002.npz` whose labels, and `probe.npz` whose
  images, are GIB of zeros (`snapshots.read_timeline`, the Runs and Evaluate pages);
- header: a snapshot whose header declares conv1 of shape (10**7, 10**7, 3, 48);
- evaluation, map: an evaluation cache whose probabilities, and an embedding-map cache whose
  thumbnails, are GIB of zeros (`evaluation.read_cache` and `embedding_map.read_cache` where
  they exist, else `runs.load_npz` as the Evaluate page called it).

Goal: at most +300 MB for each. Run it from another checkout to measure that checkout's code.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from tests.test_bombs import SNAPSHOT_ARRAYS, pad_member, write_npz  # noqa: E402

DEMO = ROOT / "assets" / "runs" / "demo"


def measure(setup: str, usual: str, bomb: str) -> tuple[float, float, str]:
    """(peak MiB after `usual`, peak MiB after `bomb` too, what `bomb` gave) in a fresh Python."""
    code = "\n".join(["import json, resource", setup, usual,
                      "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss",
                      "try:", f"    value = str({bomb})", "except BaseException as exc:",
                      "    value = f'{type(exc).__name__}: {exc}'",
                      "after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss",
                      "print(json.dumps([before / 1024, after / 1024, value[:160]]))"])
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    if done.returncode:
        return float("nan"), float("nan"), f"crashed ({done.returncode}): {done.stderr.strip().splitlines()[-1][:160]}"
    return tuple(json.loads(done.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gib", type=float, default=3.0, help="zeros in each bomb, in GiB")
    args = parser.parse_args()
    size = int(args.gib * 2**30)
    tmp = Path(tempfile.mkdtemp(prefix="bombs-"))
    try:
        run = tmp / "run"
        shutil.copytree(DEMO, run)
        (run / ".read-only").unlink()
        model = pad_member(DEMO / "model.keras", tmp / "bomb.keras", "model.weights.h5", size)
        write_npz(run / "snapshots" / "epoch-0002.npz", SNAPSHOT_ARRAYS, {"labels": ((size // 2,), "<i2", size)})
        side = int((size / 96) ** 0.5)
        probe_run = tmp / "probe-run"
        shutil.copytree(run, probe_run)
        shutil.copy(DEMO / "snapshots" / "epoch-0002.npz", probe_run / "snapshots" / "epoch-0002.npz")
        write_npz(probe_run / "snapshots" / "probe.npz", {"labels": np.arange(32) % 10},
                  {"images": ((32, side, side, 3), "|u1", 32 * side * side * 3)})
        header_run = tmp / "header-run"
        shutil.copytree(probe_run, header_run)
        shutil.copy(DEMO / "snapshots" / "probe.npz", header_run / "snapshots" / "probe.npz")
        write_npz(header_run / "snapshots" / "epoch-0002.npz", SNAPSHOT_ARRAYS,
                  {"conv1": ((10**7, 10**7, 3, 48), "<f2", 64)})
        good_eval = tmp / "good-eval.npz"
        np.savez_compressed(good_eval, probs=np.full((1000, 10), 0.1, np.float32), kept=np.arange(1000))
        bomb_eval = write_npz(tmp / "bomb-eval.npz", {"kept": np.arange(1000)},
                              {"probs": ((size // 40, 10), "<f4", size)})
        good_map = tmp / "good-map.npz"
        np.savez_compressed(good_map, xy=np.zeros((1000, 2), np.float32),
                            thumbnails=np.array(["data:image/jpeg;base64,AAAA"] * 1000))
        bomb_map = write_npz(tmp / "bomb-map.npz", {"xy": np.zeros((1000, 2), np.float32)},
                             {"thumbnails": ((size // 2**22,), "<U1048576", size)})

        # Each setup imports by the package layout of the checkout it runs in (grouped or flat), so
        # the same script measures this code and an older checkout for the "before" column.
        load = ("try:\n    from alexnet_core.predict.inference import ModelLoadError, load_model\n"
                "except ImportError:\n    from alexnet_core.inference import ModelLoadError, load_model\n"
                "def attempt(spec):\n"
                "    try:\n        return load_model(spec).path.name\n"
                "    except ModelLoadError as exc:\n        return str(exc)")
        timeline = ("try:\n    from alexnet_core.train.snapshots import read_timeline\n"
                    "except ImportError:\n    from alexnet_core.snapshots import read_timeline")
        usual_timeline = f"read_timeline({str(DEMO)!r}, 120, 10)"
        cache = ("try:\n    from alexnet_core.analysis import embedding_map, evaluation\n"
                 "    from alexnet_core.store import fileio as runs\n"
                 "except ImportError:\n    from alexnet_core import embedding_map, evaluation, runs\n"
                 "def read_eval(path):\n"
                 "    if hasattr(evaluation, 'read_cache'):\n        return evaluation.read_cache(path, 1000, 10)\n"
                 "    return runs.load_npz(path, ('probs', 'kept'))\n"
                 "def read_map(path):\n"
                 "    if hasattr(embedding_map, 'read_cache'):\n        return embedding_map.read_cache(path, 1000)\n"
                 "    return runs.load_npz(path, ('xy', 'thumbnails'))")
        cases = [
            ("model", model, load, "attempt('demo')", f"attempt({str(model)!r})"),
            ("snapshot", run / "snapshots" / "epoch-0002.npz", timeline, usual_timeline,
             f"read_timeline({str(run)!r}, 120, 10).notes"),
            ("probe", probe_run / "snapshots" / "probe.npz", timeline, usual_timeline,
             f"read_timeline({str(probe_run)!r}, 120, 10).notes"),
            ("header", header_run / "snapshots" / "epoch-0002.npz", timeline, usual_timeline,
             f"read_timeline({str(header_run)!r}, 120, 10).notes"),
            ("evaluation", bomb_eval, cache, f"read_eval({str(good_eval)!r})", f"read_eval({str(bomb_eval)!r}) is None"),
            ("map", bomb_map, cache, f"read_map({str(good_map)!r})", f"read_map({str(bomb_map)!r}) is None"),
        ]
        print("| bomb | file | peak: a good file read | then the bomb read | growth | what the reader said |\n"
              "|---|---|---|---|---|---|")
        for name, path, setup, usual, bomb in cases:
            before, after, said = measure(setup, usual, bomb)
            print(f"| {name} | {path.stat().st_size / 2**20:.1f} MiB | {before:,.0f} MiB | {after:,.0f} MiB | "
                  f"+{after - before:,.0f} MiB | {said} |", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
