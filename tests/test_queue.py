"""The run queue: runs wait in the runs folder (queue.json, state queued) and start one per free place,
the machine or one GPU, when a trainer ends, on `queue`, or on a view of the Train or Runs page.

Most tests start no trainer: launcher.spawn runs with a stand-in for subprocess.Popen that records
the command and environment and gives the caller's pid (alive), and a run "trains" while the test
holds its lock. Two tests run the real trainer on tiny runs: two queued runs back to back, and a
killed trainer that the next `queue` command notices."""

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from alexnet_core import locations
from alexnet_core.inputs.splits import DataError
from alexnet_core.settings.config import ConfigError, TrainConfig
from alexnet_core.store import catalog, fileio, layout, liveness
from alexnet_core.train import lifecycle, queue
from tests import helpers
from tests.helpers import TINY, TINY_ARGS, make_image_folder, wait_for

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def no_trainer(monkeypatch):
    return helpers.without_trainers(monkeypatch)


@pytest.fixture
def folder(tmp_path):
    return make_image_folder(tmp_path / "images", classes=3, per_class=6)


def tiny(folder, **fields) -> TrainConfig:
    return TrainConfig(**{**TINY, "data": str(folder), "epochs": 1, "steps_per_epoch": 1, **fields})


class Busy:
    """A run that trains (its lock held by this process) until `end()`: the machine is taken."""

    def __init__(self, root, run_id="busy", gpu=None):
        self.run_dir = catalog.create_run(root, run_id, {"variant": "compact", "data": "sample", "epochs": 1})
        self.lock = liveness.TrainerLock(self.run_dir).acquire()
        liveness.write_status(self.run_dir, state="running", pid=os.getpid(), gpu=gpu)

    def end(self, state="finished"):
        liveness.write_status(self.run_dir, state=state)
        self.lock.release()


def states(root):
    return {run_id: s.get("state") for run_id, s in catalog.statuses(root).items()}


def ids(root):
    return [e["run_id"] for e in queue.entries(root)]


def test_enqueue_lists_moves_and_cancels_and_a_queued_run_is_neither_active_nor_resumable(folder, no_trainer):
    root = locations.runs_root()
    busy = Busy(root)
    try:
        for name in ("a", "b", "c"):
            run_dir = queue.enqueue(tiny(folder), root, run_id=name, label={"name": f"run {name}", "claim": "relu"})
            assert liveness.read_status(run_dir)["state"] == "queued"
        assert not no_trainer  # the machine is taken: nothing started
        listed = queue.entries(root)
        assert [(e["position"], e["run_id"], e["gpu"], e["state"]) for e in listed] == [
            (1, "a", None, "queued"), (2, "b", None, "queued"), (3, "c", None, "queued")]
        assert listed[0]["run_dir"] == str(root.resolve() / "a") and listed[0]["queued_at"] <= listed[1]["queued_at"]
        assert fileio.read_json(root / "a" / layout.LABEL) == {"claim": "relu", "name": "run a", "notes": "", "tags": []}
        rows = {r["run_id"]: r for r in catalog.list_runs(root)}
        assert [rows[r]["queue_position"] for r in "abc"] == [1, 2, 3] and rows["busy"]["queue_position"] is None
        assert not catalog.is_active(rows["a"]) and not catalog.can_resume(rows["a"])
        with pytest.raises(layout.ActiveRunError, match="waiting in the queue"):
            lifecycle.check_resumable(root / "a")
        with pytest.raises(layout.RunError, match="waiting in the queue: cancel it first"):
            catalog.delete_run(root, "a")

        assert [e["run_id"] for e in queue.move("c", 1, root)] == ["c", "a", "b"]
        assert ids(root) == ["c", "a", "b"]
        for bad in (0, 4, -1):
            with pytest.raises(queue.QueueError, match="give 1 to 3"):
                queue.move("a", bad, root)
        queue.cancel("a", root)
        assert ids(root) == ["c", "b"] and liveness.read_status(root / "a")["state"] == "created"
        assert catalog.can_resume(catalog.run_summary(root / "a"))  # out of the queue: Resume starts it by hand
        with pytest.raises(queue.QueueError, match="not in the queue"):
            queue.cancel("a", root)
        with pytest.raises(queue.QueueError, match="There is no run 'nope'"):
            queue.cancel("nope", root)
        with pytest.raises(queue.QueueError, match="not in the queue"):
            queue.move("busy", 1, root)
        assert queue.advance(root) == [] and not no_trainer  # still busy
    finally:
        busy.end()


def test_the_next_run_starts_when_the_active_one_ends_and_not_before(folder, no_trainer):
    root = locations.runs_root()
    busy = Busy(root)
    queue.enqueue(tiny(folder), root, run_id="next")
    queue.enqueue(tiny(folder), root, run_id="after")
    assert queue.advance(root) == [] and not no_trainer
    # The trainer of the busy run calls this as it ends, its lock still held: counted as gone.
    assert queue.advance(root, finishing=busy.run_dir) == [root.resolve() / "next"]
    assert [s["run"] for s in no_trainer] == [str(root.resolve() / "next")]
    assert no_trainer[0]["args"][-3:] == ["train", "--resume", str(root.resolve() / "next")]  # no --allow-parallel
    assert no_trainer[0]["cuda"] == os.environ.get("CUDA_VISIBLE_DEVICES")  # no GPUs: left as it was
    assert states(root)["next"] == "starting" and ids(root) == ["after"]
    busy.end()
    assert queue.advance(root) == []  # "next" is starting now (its pid is alive): the machine is taken
    liveness.write_status(root / "next", state="stopped")  # it ended: stopped counts as an end too
    assert queue.advance(root) == [root.resolve() / "after"] and ids(root) == []
    assert not (root / layout.QUEUE).exists() or layout.read_queue(root)[0] == []


def test_a_run_started_when_nothing_trains_starts_at_once(folder, no_trainer):
    root = locations.runs_root()
    run_dir = queue.enqueue(tiny(folder), root)
    assert liveness.read_status(run_dir)["state"] == "starting" and len(no_trainer) == 1 and ids(root) == []
    with pytest.raises(DataError, match="does not exist"):  # data refused as for a Start: nothing is created
        queue.enqueue(tiny(folder.parent / "missing"), root)
    with pytest.raises(ConfigError, match="Cannot fine-tune from '/nowhere/model.keras'"):
        queue.enqueue(tiny(folder, init_from="/nowhere/model.keras"), root)
    assert [p.name for p in root.iterdir() if p.is_dir()] == [run_dir.name]


def test_one_run_per_gpu_a_third_waits_and_a_gpu_asked_for_is_waited_for(folder, no_trainer, monkeypatch):
    monkeypatch.setenv(queue.GPUS_ENV, "0,1")
    root = locations.runs_root()
    for name, gpu in (("r1", None), ("r2", None), ("r3", None), ("on1", 1)):
        queue.enqueue(tiny(folder), root, run_id=name, gpu=gpu)
    assert [(s["run"].rsplit("/", 1)[1], s["cuda"], s["gpus"], s["args"][-1]) for s in no_trainer] == [
        ("r1", "0", "0,1", "--allow-parallel"), ("r2", "1", "0,1", "--allow-parallel")]
    assert {r: liveness.read_status(root / r).get("gpu") for r in ("r1", "r2")} == {"r1": 0, "r2": 1}
    assert ids(root) == ["r3", "on1"]
    liveness.write_status(root / "r1", state="finished")  # GPU 0 is free: r3 takes it, on1 waits for GPU 1
    assert queue.advance(root) == [root.resolve() / "r3"] and no_trainer[-1]["cuda"] == "0"
    assert ids(root) == ["on1"]
    liveness.write_status(root / "r3", state="failed")
    assert queue.advance(root) == [] and ids(root) == ["on1"]  # GPU 0 is free, but on1 asked for GPU 1
    liveness.write_status(root / "r2", state="diverged")
    assert queue.advance(root) == [root.resolve() / "on1"] and no_trainer[-1]["cuda"] == "1"
    active = [s.get("gpu") for s in catalog.statuses(root).values() if s.get("state") in layout.ACTIVE_STATES]
    assert active == [1]
    with pytest.raises(queue.QueueError, match="There is no GPU 5 on this machine \\(GPUs: 0, 1\\)"):
        queue.enqueue(tiny(folder), root, gpu=5)
    # A run started without the queue trains on every GPU: nothing else starts beside it.
    liveness.write_status(root / "on1", state="finished")
    plain = Busy(root, "plain")
    try:
        queue.enqueue(tiny(folder), root, run_id="waits")
        assert ids(root) == ["waits"]
    finally:
        plain.end()
    monkeypatch.setenv(queue.GPUS_ENV, "")  # the GPUs went: a run that asked for one is taken out, and says why
    liveness.write_status(root / "waits", gpu=3)
    fileio.write_json_atomic(root / layout.QUEUE, {"entries": [{"run_id": "waits", "gpu": 3, "queued_at": 1.0}]})
    assert queue.advance(root) == []
    status = liveness.read_status(root / "waits")
    assert status["state"] == "created" and "asked for GPU 3" in status["message"] and ids(root) == []


def test_two_threads_and_two_processes_adding_at_once_give_one_run_each(folder, no_trainer):
    root = locations.runs_root()
    busy = Busy(root)
    try:
        barrier, outcomes = threading.Barrier(2), []

        def add():
            barrier.wait()
            outcomes.append(queue.enqueue(tiny(folder), root).name)  # ids from the same second: made unique

        threads = [threading.Thread(target=add) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert len(set(outcomes)) == 2 and sorted(ids(root)) == sorted(outcomes)
        commands = [helpers.Command("train", *TINY_ARGS, "--data", str(folder), "--epochs", "1", "--queue",
                                    "--runs-dir", str(root), "--json") for _ in range(2)]
        for command in commands:
            assert command.wait(120) == 0, command.outputs()[1][-2000:]
        made = [json.loads(command.outputs()[0]) for command in commands]
        assert {m["state"] for m in made} == {"queued"} and sorted(m["position"] for m in made) == [3, 4]
        assert len(set(ids(root))) == 4 and set(ids(root)) == {*outcomes, *(m["run_id"] for m in made)}
        assert sorted(r for r, s in states(root).items() if s == "queued") == sorted(ids(root))
        assert not no_trainer
    finally:
        busy.end()


def test_a_damaged_queue_file_is_rebuilt_from_the_queued_runs(folder, no_trainer):
    root = locations.runs_root()
    busy = Busy(root)
    try:
        for name in ("first", "second"):
            queue.enqueue(tiny(folder), root, run_id=name)
        (root / layout.QUEUE).write_text('{"entries": [{"run_id": "first", "gp')
        assert ids(root) == ["first", "second"]
        assert any("rebuilt from the 2 run folders in state queued" in p for p in queue.problems(root))
        assert queue.advance(root) == []
        assert layout.read_queue(root)[0] == [{"run_id": "first", "gpu": None, "queued_at": pytest.approx(
            liveness.read_status(root / "first")["queued_at"])}, {"run_id": "second", "gpu": None, "queued_at":
            pytest.approx(liveness.read_status(root / "second")["queued_at"])}]
        fileio.write_json_atomic(root / layout.QUEUE, {"entries": ["junk", {"run_id": "../x"}, {"run_id": "second",
                                                                                                "gpu": "zero"},
                                                                  {"run_id": "first", "gpu": None, "queued_at": 1}]})
        assert ids(root) == ["first"]
        told = queue.problems(root)
        assert any("entry 1" in p and "not an object" in p for p in told), told
        assert any("entry 3" in p and "gpu" in p for p in told), told
        result = helpers.cli("queue", "--runs-dir", str(root))
        assert result.returncode == 0 and "note: " in result.stderr and "  1. first" in result.stdout
        for text in ("[]", "nonsense", '{"entries": 3}'):
            (root / layout.QUEUE).write_text(text)
            assert ids(root) == ["first", "second"], text
    finally:
        busy.end()


def test_the_queue_command_lists_changes_and_refuses_clearly(folder, no_trainer):
    root = locations.runs_root()
    busy = Busy(root)
    try:
        for name in ("q1", "q2"):
            queue.enqueue(tiny(folder), root, run_id=name)
        listed = helpers.cli("queue", "--json", "--runs-dir", str(root))
        assert listed.returncode == 0, listed.stderr
        doc = json.loads(listed.stdout)
        assert [(e["position"], e["run_id"]) for e in doc["queue"]] == [(1, "q1"), (2, "q2")]
        assert doc["started"] == [] and doc["training"] == [{"run_id": "busy", "state": "running", "gpu": None}]
        moved = helpers.cli("queue", "move", "q2", "1", "--runs-dir", str(root))
        assert moved.returncode == 0 and ids(root) == ["q2", "q1"], moved.stderr
        for args, said in ((("move", "q2", "3"), "outside the queue: give 1 to 2"),
                           (("move", "nope", "1"), "There is no run 'nope'"),
                           (("cancel", "busy"), "not in the queue (it is running)")):
            refused = helpers.cli("queue", *args, "--runs-dir", str(root))
            assert refused.returncode == 2 and said in refused.stderr and "Traceback" not in refused.stderr, refused.stderr
        assert helpers.cli("queue", "cancel", "q1", "--runs-dir", str(root)).returncode == 0 and ids(root) == ["q2"]
        for args, said in ((("--gpu", "0"), "--gpu applies to a queued run"),
                           (("--queue", "--gpu", "0"), "There is no GPU 0 on this machine (GPUs: none)")):
            refused = helpers.cli("train", *TINY_ARGS, "--data", str(folder), *args, "--runs-dir", str(root),
                                  env={queue.GPUS_ENV: ""})
            assert refused.returncode == 2 and said in refused.stderr, refused.stderr
        refused = helpers.cli("train", "--resume", str(root / "q2"), "--queue")
        assert refused.returncode == 2 and "--queue cannot apply with --resume" in refused.stderr
        assert ids(root) == ["q2"]
    finally:
        busy.end()


def test_queued_runs_survive_a_restart_run_back_to_back_and_a_killed_trainer_does_not_strand_them(folder):
    """Real trainers: a long run is killed; the next `queue` notices and starts the first of two tiny
    queued runs, whose trainer starts the second as it ends, with no browser and no command."""
    root = locations.runs_root()
    long = ["--epochs", "3", "--steps-per-epoch", "1000"]
    short = ["--epochs", "1", "--steps-per-epoch", "1"]
    for run_id, length in (("long", long), ("b", short), ("c", short)):
        made = helpers.cli("train", *TINY_ARGS, "--data", str(folder), *length, "--queue", "--run-id", run_id,
                           "--runs-dir", str(root), "--json", timeout=120)
        assert made.returncode == 0, made.stderr[-2000:]
    assert json.loads(made.stdout) == {"run_dir": str(root.resolve() / "c"), "run_id": "c", "position": 2,
                                       "state": "queued", "gpu": None}
    # An app restart: a fresh process reads the queue from the runs folder.
    listed = json.loads(helpers.cli("queue", "--json", "--runs-dir", str(root)).stdout)
    assert [e["run_id"] for e in listed["queue"]] == ["b", "c"] and listed["training"][0]["run_id"] == "long"
    wait_for(lambda: liveness.lock_held(root / "long") and liveness.read_status(root / "long").get("state") == "running",
             timeout=120, what="the long run to train")
    os.killpg(fileio.read_json(root / "long" / layout.STATUS)["pid"], signal.SIGKILL)
    wait_for(lambda: liveness.read_status(root / "long")["state"] == "interrupted", timeout=30, what="the kill")
    time.sleep(1)
    assert states(root)["b"] == "queued"  # nothing noticed yet
    noticed = helpers.cli("queue", "--json", "--runs-dir", str(root))
    assert json.loads(noticed.stdout)["started"] == ["b"], noticed.stderr
    ended = wait_for(lambda: all(liveness.read_status(root / r).get("state") == "finished" for r in "bc"),
                     timeout=240, what="b and c to finish")
    assert ended and ids(root) == []
    b, c = (liveness.read_status(root / r) for r in "bc")
    assert c["started"] >= b["queued_at"] and fileio.read_json(root / "c" / layout.STATUS)["heartbeat"] >= b["finished"]
    assert "queue: started the next run, c" in (root / "b" / layout.LOG).read_text()
    assert layout.read_metrics(root / "c")["epoch"].tolist() == [1]


# --- The pages ------------------------------------------------------------------------------------


def page(path):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.switch_page(path)
    at.run()
    assert not at.exception, at.exception
    return at


def test_the_train_page_adds_to_the_queue_and_the_runs_page_shows_the_place(no_trainer):
    root = locations.runs_root()
    busy = Busy(root)
    try:
        at = page("pages/train.py")
        at.button(key="train_start").click().run()  # a run trains: Start is refused, and says what to do
        assert not at.exception and any("Add to queue" in e.value for e in at.error), [e.value for e in at.error]
        at.button(key="train_enqueue").click().run()
        assert not at.exception, at.exception
        queued = ids(root)
        assert len(queued) == 1 and states(root)[queued[0]] == "queued" and not no_trainer
        assert at.selectbox(key="train_run").value == queued[0]  # the page shows it, waiting, with Cancel
        assert not any(b.label in ("Resume", "Stop") for b in at.button) and any(b.key == "train_unqueue" for b in at.button)
        at.button(key="train_enqueue").click().run()
        assert len(ids(root)) == 2
        first, second = ids(root)
        assert any(b.key == f"queue_cancel_{first}" for b in at.button)
        at.button(key=f"queue_up_{second}").click().run()
        assert not at.exception and ids(root) == [second, first]
        at.button(key=f"queue_cancel_{first}").click().run()
        assert ids(root) == [second] and states(root)[first] == "created"

        runs = page("pages/runs.py")
        table = runs.dataframe[0].value
        assert dict(zip(table["run_id"], table["state"]))[second] == "queued #1"
    finally:
        busy.end()
    # No trainer now: the next view of a page starts the queued run.
    page("pages/runs.py")
    assert states(root)[second] == "starting" and len(no_trainer) == 1
