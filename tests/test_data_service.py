"""Training input on a tf.data service: a dispatcher and two workers on 127.0.0.1 (processes of the
command line), one pass yielding each image exactly once, a short run, lost workers, no dispatcher."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from alexnet_core.settings.config import ConfigError, TrainConfig, service_address
from alexnet_core.store import layout, liveness
from alexnet_core.train import data_service
from tests import helpers
from tests.helpers import make_image_folder, wait_for

TINY = ["--variant", "compact", "--width", "0.25", "--input-size", "16", "--batch-size", "8"]
ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Servers:
    """Service processes (`python -m alexnet_core data-service ...`), each in its own process group."""

    def __init__(self, folder: Path):
        self.folder, self.processes = folder, []
        folder.mkdir(parents=True, exist_ok=True)

    def start(self, *args) -> subprocess.Popen:
        out = self.folder / f"server-{len(self.processes)}.out"
        with open(out, "wb") as stdout, open(out.with_suffix(".err"), "wb") as stderr:
            process = subprocess.Popen([sys.executable, "-m", "alexnet_core", "data-service", *args], cwd=ROOT,
                                       stdout=stdout, stderr=stderr, start_new_session=True)
        process.out = out
        self.processes.append(process)
        return process

    def wait_ready(self, process, timeout=120) -> str:
        """The first line the server prints (its address), once it has printed it."""
        def line():
            assert process.poll() is None, process.out.with_suffix(".err").read_text()[-2000:]
            text = process.out.read_text()
            return text.splitlines()[0] if "\n" in text else None

        return wait_for(line, timeout=timeout, what="the server's address")

    def dispatcher(self, port=None) -> str:
        port = port or free_port()
        self.dispatcher_process = self.start("dispatcher", "--port", str(port), "--host", "127.0.0.1")
        self.wait_ready(self.dispatcher_process)
        return f"127.0.0.1:{port}"

    def workers(self, address: str, count: int) -> list:
        started = [self.start("worker", "--dispatcher", address, "--host", "127.0.0.1") for _ in range(count)]
        for process in started:
            assert "serving the dispatcher at " + address in self.wait_ready(process)
        return started

    def kill(self, process) -> None:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait(timeout=30)

    def close(self) -> None:
        for process in self.processes:
            self.kill(process)


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    """A dispatcher and two workers on 127.0.0.1, for the tests that keep them alive."""
    servers = Servers(tmp_path_factory.mktemp("service"))
    try:
        address = servers.dispatcher()
        servers.workers(address, 2)
        yield address
    finally:
        servers.close()


@pytest.fixture
def folder(tmp_path):
    return make_image_folder(tmp_path / "data", classes=3, per_class=12)


def test_addresses_and_the_timeout_setting(monkeypatch):
    assert service_address("127.0.0.1:5050") == "grpc://127.0.0.1:5050"
    assert service_address("grpc://data-1.example:80") == "grpc://data-1.example:80"
    for bad in ("nohost", "host:0", "host:70000", "a b:1", "http://host:1", ""):
        assert service_address(bad) is None, bad
    assert TrainConfig(data_service="127.0.0.1:1").data_service == "127.0.0.1:1"
    with pytest.raises(ConfigError, match="data_service must be a dispatcher's address"):
        TrainConfig(data_service="dispatcher")
    monkeypatch.setenv(data_service.TIMEOUT_ENV, "soon")
    with pytest.raises(ConfigError, match=data_service.TIMEOUT_ENV):
        data_service.timeout_s()
    monkeypatch.setenv(data_service.TIMEOUT_ENV, "2.5")
    assert data_service.timeout_s() == 2.5


def test_the_watchdog_fires_only_when_a_step_waits_with_no_batch_arriving():
    watch = data_service.Watchdog("grpc://127.0.0.1:1", status=None, log=print, timeout=10)
    watch.on_epoch_begin(None)
    since = watch.waiting_since
    assert watch.starved_for(since + 11) is None  # no batch yet: the first step may trace for longer
    assert watch.starved_for(since + data_service.FIRST_BATCH_S + 1) is not None
    watch.arrived, watch.arrivals = since + 1, 1  # its batch came: the step computes, however long
    assert watch.starved_for(since + 100) is None
    watch.on_step(None)  # the next step waits from here, its batch not come yet
    watch.arrived = watch.waiting_since - 1
    assert watch.starved_for(watch.waiting_since + 9) is None
    assert watch.starved_for(watch.waiting_since + 11) == pytest.approx(11)
    watch.on_phase(None)  # validating or saving: nothing asked of the service
    assert watch.starved_for(watch.waiting_since or 10**9) is None


def test_one_pass_through_the_service_yields_each_image_exactly_once(service):
    """36 distinct images (each its own class), in batches of 5 cut across passes: the first 36
    images are each image once, so are the next 36, and the two passes are shuffled differently."""
    from alexnet_core.inputs.data import make_dataset
    from alexnet_core.inputs.splits import Split

    n = 36
    split = Split(labels=np.arange(n), images=np.repeat(np.arange(n, dtype=np.uint8), 8 * 8 * 3).reshape(n, 8, 8, 3))
    logs = []
    source = data_service.ServiceInput(service, status=None, log=logs.append)
    assert "distributed_epoch" in logs[0]

    def one_pass(**changes):
        return make_dataset(split, n, 8, 5, **{"training": True, "seed": 3, "drop_remainder": True, **changes})

    stream = source.stream(one_pass, 5, seed=3)
    seen = []
    for images, labels in stream.take(2 * n // 5 + 1).as_numpy_iterator():
        assert images.shape == (5, 8, 8, 3) and labels.shape == (5, n)
        seen.extend(np.argmax(labels, axis=1).tolist())
    first, second = seen[:n], seen[n:2 * n]
    assert sorted(first) == list(range(n)) and sorted(second) == list(range(n))
    assert first != second and first != list(range(n))  # shuffled, afresh each pass
    assert source.watchdog.arrivals >= 2 * n // 5


def test_a_short_run_trains_through_the_service(service, folder, tmp_path):
    result = helpers.cli("train", *TINY, "--data", str(folder), "--epochs", "1", "--steps-per-epoch", "3",
                         "--data-service", service, "--runs-dir", str(tmp_path / "runs"), "--run-id", "svc", "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    final = json.loads(result.stdout)
    assert final["state"] == "finished" and final["completed_epochs"] == 1
    run_dir = tmp_path / "runs" / "svc"
    assert layout.read_config(run_dir)["data_service"] == service  # resume keeps it
    assert "Training input from the tf.data service at " + service in result.stderr
    assert len(layout.read_metrics(run_dir)) == 1


def test_no_dispatcher_is_refused_at_once_and_no_run_folder_is_made(folder, tmp_path):
    address = f"127.0.0.1:{free_port()}"
    started = time.monotonic()
    result = helpers.cli("train", *TINY, "--data", str(folder), "--data-service", address,
                         "--runs-dir", str(tmp_path / "runs"), "--run-id", "none")
    assert result.returncode == 2
    assert f"No tf.data service dispatcher answers at {address}" in result.stderr
    assert "data-service dispatcher" in result.stderr
    assert time.monotonic() - started < 30
    assert not (tmp_path / "runs" / "none").exists()


def test_lost_workers_end_the_run_with_a_message_and_resume_continues(folder, tmp_path):
    servers = Servers(tmp_path / "service")
    trainer = None
    try:
        address = servers.dispatcher()
        workers = servers.workers(address, 2)
        run_dir = tmp_path / "runs" / "lost"
        env = {data_service.TIMEOUT_ENV: "5"}
        trainer = helpers.Command("train", *TINY, "--data", str(folder), "--epochs", "1000", "--data-service",
                                  address, "--runs-dir", str(tmp_path / "runs"), "--run-id", "lost", env=env)
        wait_for(lambda: liveness.read_status(run_dir).get("completed_epochs", 0) >= 1 or trainer.poll() is not None,
                 what="a committed epoch")
        assert trainer.poll() is None, trainer.outputs()[1][-3000:]
        for worker in workers:
            servers.kill(worker)
        started = time.monotonic()
        code = trainer.wait(timeout=90)
        assert time.monotonic() - started < 60
        _, stderr = trainer.outputs()
        assert code == 1, stderr[-3000:]
        status = liveness.read_status(run_dir)
        assert status["state"] == "failed" and status["reason"] == "data"
        message = status["message"]
        assert f"No training images came from the tf.data service at {address}" in message
        assert f"data-service worker --dispatcher {address}" in message and "--resume" in message
        assert f"data-service dispatcher --port {address.rpartition(':')[2]}" in message
        assert message in stderr
        kept = len(layout.read_metrics(run_dir))  # the committed epochs stay
        assert kept >= 1 and f"it continues after epoch {kept}," in message

        # As the message says: the dispatcher again on its port, a worker, then resume: it continues
        # after the committed epochs.
        servers.kill(servers.dispatcher_process)
        assert servers.dispatcher(int(address.rpartition(":")[2])) == address
        servers.workers(address, 1)
        trainer = helpers.Command("train", "--resume", str(run_dir), env={data_service.TIMEOUT_ENV: "30"})
        wait_for(lambda: len(layout.read_metrics(run_dir)) > kept or trainer.poll() is not None,
                 what="an epoch trained after resuming")
        assert trainer.poll() is None, trainer.outputs()[1][-3000:]
        liveness.request_stop(run_dir)
        assert trainer.wait(timeout=120) == 0
        status = liveness.read_status(run_dir)
        assert status["state"] == "stopped" and status["completed_epochs"] > kept
        epochs = list(layout.read_metrics(run_dir)["epoch"])
        assert epochs == list(range(1, len(epochs) + 1))  # no epoch twice, none missing
    finally:
        if trainer is not None:
            trainer.kill()
        servers.close()


def test_a_prepared_folders_stream_goes_through_the_service_each_record_once_per_pass(service, tmp_path):
    """Shards of 30 records (each its own label) as prepare writes them: one pass through the
    service is each record once, with the lighting shifts the training step adds."""
    import tensorflow as tf

    from alexnet_core.inputs.records import train_batches

    rng = np.random.default_rng(0)
    shards = []
    for i, labels in enumerate((range(0, 12), range(12, 22), range(22, 30))):
        path = tmp_path / f"train-{i:05d}-of-00003.tfrecord"
        with tf.io.TFRecordWriter(str(path)) as writer:
            for label in labels:
                jpeg = tf.io.encode_jpeg(rng.integers(0, 256, (18, 24, 3), dtype=np.uint8)).numpy()
                writer.write(tf.train.Example(features=tf.train.Features(feature={
                    "image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[jpeg])),
                    "image/class/label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label]))})
                ).SerializeToString())
        shards.append(str(path))
    source = data_service.ServiceInput(service, status=None, log=lambda line: None)

    def one_pass(seed, repeat, cache_budget, drop_remainder, shard):
        assert not repeat and shard is None
        return train_batches(shards, 30, 16, 5, seed=seed, crop="paper", lighting=0.1, epochs=None if repeat else 1,
                             on_device=True, drop_remainder=drop_remainder)

    seen = []
    for images, labels, extras in source.stream(one_pass, 5, seed=1).take(12).as_numpy_iterator():
        assert images.shape == (5, 16, 16, 3) and extras["shift"].shape == (5, 3)
        seen.extend(np.argmax(labels, axis=1).tolist())
    assert sorted(seen[:30]) == list(range(30)) and sorted(seen[30:]) == list(range(30))
    assert seen[:30] != seen[30:]
