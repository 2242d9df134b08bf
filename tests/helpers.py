"""Small image folders written by the tests themselves (tests never need ../shared)."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

COLORS = [(220, 40, 40), (40, 200, 40), (40, 40, 220), (220, 220, 40)]


def make_image_folder(root, classes=3, per_class=12, size=(20, 24), fmt="png", seed=0):
    """root/<class>/<nnn>.<fmt>: noisy images of one colour per class (learnable in a few steps)."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    for c in range(classes):
        folder = root / f"class{c}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = np.clip(rng.normal(COLORS[c % len(COLORS)], 30, (size[0], size[1], 3)), 0, 255)
            Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{i:03d}.{fmt}")
    return root


def wait_for(predicate, timeout=180, what="condition"):
    """The first true value of `predicate()`, polled every 0.2 s; AssertionError after `timeout` s."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


WNIDS = {"n01440764": "tench, Tinca tinca", "n01443537": "goldfish, Carassius auratus",
         "n01484850": "great white shark, white shark"}


def make_ilsvrc_folder(root, train=6, val=2, size=(30, 40)):
    """root/{train,val}/<wnid>/*.JPEG and LOC_synset_mapping.txt, as ILSVRC is laid out."""
    root = Path(root)
    for split, n in (("train", train), ("val", val)):
        for c, wnid in enumerate(WNIDS):
            folder = root / split / wnid
            folder.mkdir(parents=True, exist_ok=True)
            rng = np.random.default_rng(c)
            for i in range(n):
                pixels = np.clip(rng.normal(COLORS[c], 30, (size[0], size[1], 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{wnid}_{i}.JPEG", format="JPEG")
    lines = [f"{wnid} {words}" for wnid, words in WNIDS.items()] + ["n99999999 not a class here", "garbage"]
    (root / "LOC_synset_mapping.txt").write_text("\n".join(lines) + "\n")
    return root


def with_keras_alone(model_path, expression):
    """JSON value of `expression` (over `m`, the model, and `np`) in a fresh Python that loads the
    model with Keras alone: nothing of this project is imported, so a project layer would fail."""
    code = ("import sys, json, keras, numpy as np; m = keras.models.load_model(sys.argv[1], safe_mode=True, "
            f"compile=False); assert 'alexnet_core' not in sys.modules; print(json.dumps({expression}))")
    path = Path(model_path).resolve()
    result = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120,
                            cwd=path.parent)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


# The smallest network the training tests use: compact at a quarter width on 16-px images.
TINY = {"variant": "compact", "batch_size": 8, "input_size": 16, "switches": {"width": 0.25}}
TINY_ARGS = ["--variant", "compact", "--width", "0.25", "--input-size", "16", "--batch-size", "8"]




# --- The command line in a fresh process, without paying TensorFlow's start each time ----------
#
# `python -m alexnet_core ...` spends most of a short command importing TensorFlow and Keras (about
# 7 s on two cores). The tests' commands are run instead in processes forked from one server that
# imported them once: each command still runs in a process of its own (its own pid, its own exit
# status, killed by a fault like any process, gone when it ends), from `alexnet_core.__main__`, with
# the environment and working folder the test gives; only the imports are shared.

_SERVER_CODE = r"""
import json, os, runpy, sys, threading, time, traceback
requests = os.fdopen(os.dup(0), "r")
replies = os.fdopen(os.dup(1), "w")
null = os.open(os.devnull, os.O_RDWR)
os.dup2(null, 0)
os.dup2(null, 1)
import tensorflow, keras  # noqa: the imports every command would otherwise repeat
import alexnet_core.cli
from alexnet_core.models import layers  # noqa


def command(request):
    code = 1
    try:
        requests.close()
        replies.close()
        for fd, path in ((1, request["out"]), (2, request["err"])):
            os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), fd)
        os.environ.clear()
        os.environ.update(request["env"])
        os.chdir(request["cwd"])
        alexnet_core.cli.STARTED = time.time()
        sys.argv = ["-m", *request["args"]]  # runpy puts the module's path first, as python -m does
        try:
            runpy.run_module("alexnet_core", run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as exc:
            if exc.code is None:
                code = 0
            elif isinstance(exc.code, int):
                code = exc.code
            else:
                print(exc.code, file=sys.stderr)
                code = 1
        except BaseException:
            traceback.print_exc()
            code = 1
        for thread in threading.enumerate():  # as at interpreter exit: wait for non-daemon threads
            if thread is not threading.main_thread() and not thread.daemon:
                thread.join()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code & 0xFF)


def reply(value):
    replies.write(json.dumps(value) + "\n")
    replies.flush()


reply("ready")
for line in requests:
    request = json.loads(line)
    if request["op"] == "start":
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            command(request)
        reply(pid)
    else:  # poll
        try:
            pid, status = os.waitpid(request["pid"], os.WNOHANG)
        except ChildProcessError:
            reply(None)
            continue
        reply(os.waitstatus_to_exitcode(status) if pid else None)
"""

_server = {}


def _ask(request):
    server = _server.get("process")
    if server is None or server.poll() is not None:
        server = subprocess.Popen([sys.executable, "-c", _SERVER_CODE], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL, text=True, cwd=Path(__file__).resolve().parent.parent)
        assert json.loads(server.stdout.readline()) == "ready", "the command server did not start"
        _server["process"] = server
    try:
        server.stdin.write(json.dumps(request) + "\n")
        server.stdin.flush()
        return json.loads(server.stdout.readline())
    except BaseException:  # a reply left unread (a test's timeout, Ctrl-C) would answer the next request
        server.kill()
        _server.pop("process", None)
        raise


def _decoded(text):
    return text.replace("\r\n", "\n").replace("\r", "\n")  # as subprocess reads text


class Command:
    """`python -m alexnet_core ARGS` started in a process of its own, as subprocess.Popen would
    start it (stdout and stderr to files): pid, poll(), wait(), kill(), and stderr to read."""

    def __init__(self, *args, env=None):
        import tempfile

        self.args = [sys.executable, "-m", "alexnet_core", *args]
        self.returncode = None
        self._folder = Path(tempfile.mkdtemp(prefix="alexnet-cli-"))
        out, err = self._folder / "stdout", self._folder / "stderr"
        out.touch()
        err.touch()
        self._out = open(out, "rb")
        self.stderr = open(err, encoding="utf-8", errors="replace")
        self.pid = _ask({"op": "start", "args": list(args), "env": {**os.environ, **(env or {})}, "cwd": os.getcwd(),
                         "out": str(out), "err": str(err)})

    def poll(self):
        if self.returncode is None:
            self.returncode = _ask({"op": "poll", "pid": self.pid})
            if self.returncode is not None:  # the open files stay readable
                import shutil

                shutil.rmtree(self._folder, ignore_errors=True)
        return self.returncode

    def wait(self, timeout=None):
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(self.args, timeout)
            time.sleep(0.02)
        return self.returncode

    def kill(self):
        if self.poll() is None:
            import signal

            os.kill(self.pid, signal.SIGKILL)

    def outputs(self):
        """(stdout, stderr), all of them, as subprocess.run(text=True) gives them."""
        self._out.seek(0)
        self.stderr.buffer.seek(0)
        texts = [_decoded(f.read().decode("utf-8", "replace")) for f in (self._out, self.stderr.buffer)]
        self._out.close()
        self.stderr.close()
        return texts


def cli(*args, env=None, timeout=300):
    """`python -m alexnet_core ARGS` in a fresh process, its output captured: a CompletedProcess, as
    subprocess.run gives."""
    command = Command(*args, env=env)
    try:
        command.wait(timeout)
    except subprocess.TimeoutExpired:
        command.kill()
        command.wait()
        raise subprocess.TimeoutExpired(command.args, timeout, *command.outputs()) from None
    return subprocess.CompletedProcess(command.args, command.returncode, *command.outputs())


class FakeTrainer:
    """Stands in for subprocess.Popen in train.launcher: a live pid (this process), nothing started.
    Each spawn is recorded in `spawned` as {"args", "run", "cuda", "gpus"}: the command, the run it
    was given, and the CUDA_VISIBLE_DEVICES and GPU list of its environment."""

    spawned: list = []

    def __init__(self, args, **kwargs):
        from alexnet_core.train import launcher

        env = kwargs.get("env") or {}
        self.pid = os.getpid()
        FakeTrainer.spawned.append({"args": args, "run": args[args.index("--resume") + 1],
                                    "cuda": env.get("CUDA_VISIBLE_DEVICES"), "gpus": env.get(launcher.GPUS_ENV)})

    def wait(self):
        return 0


def fake_subprocess():
    """A `subprocess` for train.launcher whose Popen is FakeTrainer."""
    import types

    return types.SimpleNamespace(Popen=FakeTrainer, DEVNULL=subprocess.DEVNULL, STDOUT=subprocess.STDOUT)


def without_trainers(monkeypatch) -> list:
    """Make train.launcher start no trainer (FakeTrainer); returns the list its spawns go to."""
    from alexnet_core.train import launcher

    monkeypatch.setattr(launcher, "subprocess", fake_subprocess())
    FakeTrainer.spawned = []
    return FakeTrainer.spawned
