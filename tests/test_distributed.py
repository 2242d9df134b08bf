"""Multi-worker training on 127.0.0.1: two trainer processes joined by TF_CONFIG / --workers.

Each test starts real processes (MultiWorkerMirroredStrategy cannot be created twice in one
process), so they stay tiny: 3 classes, 16 px images, a quarter-width network.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from alexnet_core.settings.config import ConfigError
from alexnet_core.store import catalog, fileio, layout, liveness
from alexnet_core.train.devices import parse_tf_config, workers_tf_config
from tests import helpers
from tests.helpers import make_image_folder, wait_for

TINY = ["--variant", "compact", "--width", "0.25", "--input-size", "16", "--batch-size", "8"]
LOST_WITHIN_S = 60  # the bound for the surviving workers to stop


def free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@pytest.fixture
def folder(tmp_path):
    return make_image_folder(tmp_path / "data", classes=3, per_class=13)


def start_workers(args, tmp_path, tag, count=2):
    """`count` trainers with identical arguments and --workers/--worker-index; their private
    scratch folders go under tmp_path/tmp-<tag> so the test can check they are removed."""
    addresses = ",".join(f"127.0.0.1:{p}" for p in free_ports(count))
    scratch = tmp_path / f"tmp-{tag}"
    scratch.mkdir()
    env = {**os.environ, "TMPDIR": str(scratch), "PYTHONUNBUFFERED": "1"}
    env.pop("TF_CONFIG", None)
    procs = []
    for index in range(count):
        log = open(tmp_path / f"{tag}-{index}.log", "w")
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "alexnet_core", "train", *args, "--workers", addresses, "--worker-index", str(index)],
            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True))
    return procs, addresses.split(","), scratch


def finish(procs, timeout=240):
    codes = []
    for proc in procs:
        try:
            codes.append(proc.wait(timeout=timeout))
        except subprocess.TimeoutExpired:
            proc.kill()
            codes.append("hung")
    return codes


def epochs_logged(run_dir):
    return list(layout.read_metrics(run_dir)["epoch"])


def test_two_workers_train_one_run_to_finished(folder, tmp_path):
    root = tmp_path / "runs"
    args = [*TINY, "--data", str(folder), "--epochs", "3", "--runs-dir", str(root), "--run-id", "pair"]
    procs, addresses, scratch = start_workers(args, tmp_path, "pair")
    codes = finish(procs)
    logs = [(tmp_path / f"pair-{i}.log").read_text() for i in range(2)]
    assert codes == [0, 0], logs[0][-3000:] + logs[1][-3000:]
    run_dir = root / "pair"
    assert liveness.read_status(run_dir)["state"] == "finished"
    assert epochs_logged(run_dir) == [1, 2, 3]
    for name in (layout.CONFIG, layout.STATUS, layout.METRICS, layout.STEPS, layout.MODEL, layout.CHECKPOINTS, layout.TENSORBOARD):
        assert (run_dir / name).exists(), name
    environment = layout.read_config(run_dir)["environment"]
    assert environment["strategy"] == "MultiWorkerMirroredStrategy" and environment["replicas"] == 2
    assert environment["workers"] == addresses
    # Only the chief wrote the run folder: one run, no second status, and no scratch left behind.
    assert sorted(p.name for p in root.iterdir()) == ["pair"]
    assert list(scratch.iterdir()) == []
    assert "this is worker 1" in logs[1] and "Finished 3 epochs" in logs[1]
    # Both workers saw the same reduced metrics every epoch.
    epochs = [[line for line in log.splitlines() if line.startswith("epoch ")] for log in logs]
    assert len(epochs[0]) == 3 and epochs[0] == epochs[1]
    summary = catalog.run_summary(run_dir)
    assert summary["strategy"] == "MultiWorkerMirroredStrategy" and summary["replicas"] == 2
    assert catalog.trained_on(summary) == "2 workers, 2 replicas (MultiWorkerMirroredStrategy)"
    assert catalog.trained_on(summary, short=True) == "2 workers"


def completed(run_dir):
    record = fileio.read_json(run_dir / layout.CHECKPOINTS / layout.STATE, None) if (
        run_dir / layout.CHECKPOINTS / layout.STATE).exists() else None
    return record.get("completed_epochs", 0) if isinstance(record, dict) else 0


@pytest.mark.parametrize("how", ["killed", "frozen"])
def test_a_lost_worker_stops_the_others_and_resume_continues(folder, tmp_path, how):
    """SIGKILL closes the worker's sockets; SIGSTOP (a frozen or unreachable host) does not, and
    is found by the missing heartbeats. Either way the chief stops within 60 s, naming it."""
    root = tmp_path / "runs"
    args = [*TINY, "--data", str(folder), "--epochs", "8", "--runs-dir", str(root), "--run-id", "lossy"]
    procs, addresses, _ = start_workers(args, tmp_path, "lossy")
    run_dir = root / "lossy"
    try:
        wait_for(lambda: completed(run_dir) >= 2, 180, "two epochs")
        # The worker's whole process group: its supervising `train` process and the trainer it runs.
        os.killpg(procs[1].pid, signal.SIGKILL if how == "killed" else signal.SIGSTOP)
        lost_at = time.time()
        code = finish(procs[:1], timeout=LOST_WITHIN_S + 30)[0]
        took = time.time() - lost_at
    finally:
        os.killpg(procs[1].pid, signal.SIGKILL)
        procs[1].wait()
    log = (tmp_path / "lossy-0.log").read_text()
    assert code == 1, log[-3000:]
    assert took < LOST_WITHIN_S, f"the chief took {took:.0f} s to notice"
    status = liveness.read_status(run_dir)
    kept = completed(run_dir)
    assert status["state"] == "failed" and status["reason"] == "cluster"
    assert f"worker 1 ({addresses[1]})" in status["message"] and "--resume" in status["message"]
    assert f"kept as it was after epoch {kept}" in status["message"]
    assert catalog.can_resume(catalog.run_summary(run_dir))

    procs, _, _ = start_workers(["--resume", str(run_dir)], tmp_path, "again")
    codes = finish(procs)
    log = (tmp_path / "again-0.log").read_text()
    assert codes == [0, 0], log[-3000:]
    assert f"Resuming after epoch {kept} of 8" in log
    assert f"Resuming after epoch {kept} of 8" in (tmp_path / "again-1.log").read_text()
    assert liveness.read_status(run_dir)["state"] == "finished"
    assert epochs_logged(run_dir) == list(range(1, 9))


EVALUATE = """
import json, os, sys
from alexnet_core.train.devices import split_cpu, strategy
if os.environ.get("SPLIT_CPU"):
    split_cpu(2)
s = strategy()
import keras
from alexnet_core.settings.config import TrainConfig
from alexnet_core.inputs.data import load_folder
from alexnet_core.train.loop import distributed_eval_dataset, evaluate_distributed, loss_function, make_steps
from alexnet_core.models import layers  # registers the custom layers the saved model uses
source = load_folder(sys.argv[2], val_split=0.0)
with s.scope():
    model = keras.models.load_model(sys.argv[1])
_, eval_step = make_steps(model, None, s, loss_function(TrainConfig()), 8, 2)
data = distributed_eval_dataset(s, source.train, 3, 16, 8)
result = evaluate_distributed(eval_step, data)
pairs = sorted(zip(result.pop("label").tolist(), result.pop("predicted").tolist()))  # the snapshot's confusion
print("RESULT " + json.dumps({"replicas": s.num_replicas_in_sync, "pairs": pairs, **result}))
"""


def test_the_same_weights_give_the_same_metrics_on_one_or_two_replicas(folder, tmp_path):
    """39 images in batches of 8: the last batch is partial and, split over two replicas or two
    workers, one side gets fewer images (or none). Top-2 of 3 classes so top-k is not trivially 1."""
    import keras

    from alexnet_core.models.variants import build_model

    keras.utils.set_random_seed(3)
    model = build_model("compact", num_classes=3, input_size=16, width=0.25)
    model.save(tmp_path / "m.keras")
    script = tmp_path / "evaluate.py"
    script.write_text(EVALUATE)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    env.pop("TF_CONFIG", None)

    def run(extra, count=1):
        ports = free_ports(count)
        procs = []
        for index in range(count):
            e = {**env, **extra}
            if count > 1:
                e["TF_CONFIG"] = workers_tf_config(",".join(f"127.0.0.1:{p}" for p in ports), index)
            procs.append(subprocess.Popen([sys.executable, str(script), str(tmp_path / "m.keras"), str(folder)],
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=e))
        outs = [p.communicate(timeout=180) for p in procs]
        results = []
        for out, err in outs:
            line = next((x for x in out.splitlines() if x.startswith("RESULT ")), None)
            assert line, err[-3000:]
            results.append(json.loads(line[len("RESULT "):]))
        return results

    one = run({})[0]
    mirrored = run({"SPLIT_CPU": "1"})[0]
    workers = run({}, count=2)
    assert (one["replicas"], mirrored["replicas"], workers[0]["replicas"]) == (1, 2, 2)
    assert one["images"] == mirrored["images"] == workers[0]["images"] == workers[1]["images"] == 39
    assert 0 < one["top5_accuracy"] < 1 or 0 < one["accuracy"] < 1  # a check that can tell replicas apart
    for other in (mirrored, *workers):
        assert other["accuracy"] == one["accuracy"]
        assert other["top5_accuracy"] == one["top5_accuracy"]
        assert other["loss"] == pytest.approx(one["loss"], rel=1e-5)
        assert other["pairs"] == one["pairs"]  # every image's (label, prediction) gathered once
    assert len(one["pairs"]) == 39
    assert sum(label == predicted for label, predicted in one["pairs"]) == round(one["accuracy"] * 39)


def test_tf_config_is_read_as_tensorflow_documents_it():
    spec = {"cluster": {"chief": ["10.0.0.1:2222"], "worker": ["10.0.0.2:2222", "10.0.0.3:2222"]},
            "task": {"type": "worker", "index": 1}}
    place = parse_tf_config(json.dumps(spec))
    assert place.workers == ("10.0.0.1:2222", "10.0.0.2:2222", "10.0.0.3:2222")
    assert place.position == 2 and not place.is_chief and place.size == 3
    assert place.lost_task("from remote target /job:chief/replica:0/task:0 while") == "the chief (10.0.0.1:2222)"
    assert place.lost_task("/job:worker/replica:0/task:0 stopped") == "worker 0 (10.0.0.2:2222)"
    assert place.lost_task("/job:worker/replica:0/task:1") is None  # itself
    alone = {"cluster": {"worker": ["localhost:1"]}, "task": {"type": "worker", "index": 0}}
    assert parse_tf_config(json.dumps(alone)) is None
    shorthand = json.loads(workers_tf_config("a:1, b:2", 1))
    assert shorthand == {"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 1}}


@pytest.mark.parametrize("text, message", [
    ("{not json", "not valid JSON"),
    ('{"cluster": {"ps": ["a:1"], "worker": ["b:1"]}, "task": {"type": "worker", "index": 0}}', "parameter servers"),
    ('{"cluster": {"worker": ["a:1", "b"]}, "task": {"type": "worker", "index": 0}}', "'b' is not HOST:PORT"),
    ('{"cluster": {"worker": ["a:1", "a:1"]}, "task": {"type": "worker", "index": 0}}', "twice"),
    ('{"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 2}}', "not in its cluster"),
])
def test_bad_tf_config_is_named(text, message):
    with pytest.raises(ConfigError, match=message):
        parse_tf_config(text)


def test_bad_worker_flags_are_usage_errors(folder, tmp_path):
    def train(*extra, env=None):
        return helpers.cli("train", *TINY, "--data", str(folder), "--runs-dir", str(tmp_path / "runs"), *extra,
                           timeout=120, env=env)

    result = train("--workers", "127.0.0.1:1")
    assert result.returncode == 2 and "--workers and --worker-index go together" in result.stderr
    result = train("--workers", "127.0.0.1:1,127.0.0.1:x", "--worker-index", "0")
    assert result.returncode == 2 and "is not HOST:PORT" in result.stderr
    result = train("--workers", "127.0.0.1:1,127.0.0.1:2", "--worker-index", "5")
    assert result.returncode == 2 and "--worker-index must be 0..1" in result.stderr
    result = train(env={"TF_CONFIG": "{oops"})
    assert result.returncode == 2 and "TF_CONFIG is not valid JSON" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def kill_group(proc):
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def start_alone(tmp_path, tag, *extra):
    """Worker 0 of two whose peer never starts (nothing listens on worker 1's port)."""
    ports = free_ports(2)
    folder = make_image_folder(tmp_path / "data", classes=3, per_class=6)
    root = tmp_path / "runs"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("TF_CONFIG", None)
    log = open(tmp_path / f"{tag}.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "alexnet_core", "train", *TINY, "--data", str(folder), "--epochs", "1", "--runs-dir",
         str(root), "--run-id", tag, "--workers", ",".join(f"127.0.0.1:{p}" for p in ports), "--worker-index", "0",
         *extra], stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    return proc, root / tag, f"worker 1 (127.0.0.1:{ports[1]})"


def waiting_status(run_dir, timeout=120):
    return wait_for(lambda: "Waiting for" in (s := fileio.read_object(run_dir / layout.STATUS)).get("message", "") and s,
                    timeout, "the chief to wait for its peer")


def test_a_peer_that_never_starts_is_named_and_the_join_times_out(tmp_path):
    proc, run_dir, missing = start_alone(tmp_path, "lonely", "--join-timeout", "15")
    try:
        status = waiting_status(run_dir)
        status = wait_for(lambda: missing in (s := fileio.read_object(run_dir / layout.STATUS)).get("message", "") and s,
                          30, "the missing worker to be named")
        assert "join timeout" in status["message"] and status["phase"] == "joining"
        code = proc.wait(120)
    finally:
        kill_group(proc)
    log = (tmp_path / "lonely.log").read_text()
    status = liveness.read_status(run_dir)
    assert code == 1, log[-3000:]
    assert status["state"] == "failed" and status["reason"] == "cluster", status
    assert f"{missing} did not join within 15 s (--join-timeout)" in status["message"]
    assert f"Waiting for {missing} to join" in log and "did not join within 15 s" in log
    assert "Traceback" not in log


@pytest.mark.parametrize("how", ["stop", "sigterm"])
def test_stop_or_sigterm_while_waiting_for_a_peer_ends_the_run_stopped(tmp_path, how):
    proc, run_dir, missing = start_alone(tmp_path, "waiting")
    try:
        waiting_status(run_dir)
        if how == "stop":
            liveness.request_stop(run_dir)
        else:
            proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
    finally:
        kill_group(proc)
    log = (tmp_path / "waiting.log").read_text()
    status = liveness.read_status(run_dir)
    assert code == 0 and status["state"] == "stopped", log[-3000:]
    assert f"while waiting for {missing} to join" in status["message"]
    assert catalog.can_resume(catalog.run_summary(run_dir))


def test_join_timeout_is_a_multi_worker_flag(tmp_path):
    folder = make_image_folder(tmp_path / "data", classes=3, per_class=4)
    result = helpers.cli("train", *TINY, "--data", str(folder), "--runs-dir", str(tmp_path / "runs"),
                         "--join-timeout", "10", timeout=120)
    assert result.returncode == 2 and "--join-timeout applies to a multi-worker run" in result.stderr
    assert not (tmp_path / "runs").exists()
