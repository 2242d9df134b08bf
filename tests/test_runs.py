import os
import time

import pytest

from alexnet_core.store import catalog, fileio, layout, liveness


@pytest.mark.parametrize("bad", ["..", "../escape", "a/b", "", "/abs", ".", "x" * 300, "a\0b", None, ["a"]])
def test_run_ids_cannot_escape(tmp_path, bad):
    with pytest.raises(layout.RunError, match="Invalid run id"):
        layout.resolve_run(tmp_path, bad)


@pytest.mark.parametrize("name", ["my run (copy)", "x y", "run;rm", "été", "[x](example)"])
def test_any_folder_name_is_a_usable_run_id(tmp_path, name):
    path = catalog.create_run(tmp_path, name, {"variant": "compact", "data": "sample", "epochs": 1})
    assert catalog.find_run(name, tmp_path) == path and path.parent == tmp_path.resolve()
    assert [r["run_id"] for r in catalog.list_runs(tmp_path)] == [name]
    catalog.delete_run(tmp_path, name)
    assert not path.exists()


def test_resolve_and_create(tmp_path):
    path = catalog.create_run(tmp_path, "20261121-1-compact-sample", {"variant": "compact"})
    assert path == (tmp_path / "20261121-1-compact-sample").resolve()
    assert liveness.read_status(path)["state"] == "created"
    with pytest.raises(layout.RunError, match="already exists"):
        catalog.create_run(tmp_path, "20261121-1-compact-sample", {})


def test_new_run_id_is_valid():
    run_id = layout.new_run_id("paper", "/data/my images!/")
    assert layout.RUN_ID.match(run_id) and run_id.endswith("paper-my-images")


def test_readers_tolerate_a_half_written_line(tmp_path):
    (tmp_path / layout.METRICS).write_text("epoch,loss,val_accuracy\n0,1.5,0.3\n1,1.2,0.4\n2,1.")
    frame = layout.read_metrics(tmp_path)
    assert list(frame["epoch"]) == [1, 2] and list(frame["val_accuracy"]) == [0.3, 0.4]
    (tmp_path / layout.STATUS).write_text('{"state": "runn')
    assert liveness.read_status(tmp_path) == {}


def test_truncate_steps_drops_steps_to_be_redone(tmp_path):
    (tmp_path / layout.STEPS).write_text("step,epoch,loss\n5,1,1.0\n10,2,0.9\n15,3,0.8\n20,3,0.")
    layout.truncate_steps(tmp_path, 10)
    assert list(layout.read_steps(tmp_path)["step"]) == [5, 10]


def test_a_held_lock_means_alive_and_a_stale_heartbeat_matters_only_off_host(tmp_path):
    path = catalog.create_run(tmp_path, "r", {})
    liveness.write_status(path, state="running", pid=os.getpid())
    assert liveness.read_status(path)["state"] == "interrupted"  # no trainer holds the lock
    lock = liveness.TrainerLock(path).acquire()
    try:
        status = fileio.read_json(path / layout.STATUS)
        status["heartbeat"] = time.time() - 10 * liveness.STALE_AFTER_S
        fileio.write_json_atomic(path / layout.STATUS, status)
        assert liveness.read_status(path)["state"] == "running"  # the lock beats a stale heartbeat
        fileio.write_json_atomic(path / layout.STATUS, {**status, "host": "elsewhere"})
        assert liveness.read_status(path)["state"] == "interrupted"  # another host: the heartbeat decides
        fileio.write_json_atomic(path / layout.STATUS, {**status, "host": "elsewhere", "heartbeat": time.time()})
        assert liveness.read_status(path)["state"] == "running"
    finally:
        lock.release()


def test_a_launched_trainer_gets_a_grace_period_to_take_its_lock(tmp_path):
    path = catalog.create_run(tmp_path, "r", {})
    liveness.write_status(path, state="starting", pid=os.getpid())
    assert liveness.read_status(path)["state"] == "starting"
    liveness.write_status(path, state="starting", pid=2**22 + 12345)  # the launched process died
    assert liveness.read_status(path)["state"] == "interrupted"


def test_dead_pid_reads_as_interrupted(tmp_path):
    path = catalog.create_run(tmp_path, "r", {})
    liveness.write_status(path, state="running", pid=2**22 + 12345)
    assert liveness.read_status(path)["state"] == "interrupted"


def test_remove_run_leftovers_clears_every_folder_the_trainer_writes_and_nothing_else(tmp_path):
    run = tmp_path / "r"
    kept = [run / "metrics.csv", run / layout.CHECKPOINTS / "epoch-0001.keras", run / layout.SNAPSHOTS / "epoch-0001.npz"]
    left = [run / ".status.json.12.tmp", run / layout.CHECKPOINTS / ".epoch-0002.keras.12.tmp.keras",
            run / layout.SNAPSHOTS / ".epoch-0002.npz.12.tmp"]
    for path in kept + left:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x")
    assert sorted(layout.remove_run_leftovers(run)) == sorted(path.name for path in left)
    assert [path.exists() for path in kept + left] == [True] * 3 + [False] * 3
    assert layout.remove_run_leftovers(tmp_path / "missing") == []


def test_list_and_delete(tmp_path):
    a = catalog.create_run(tmp_path, "a", {"variant": "compact", "data": "sample", "epochs": 2})
    liveness.write_status(a, state="finished", started=1.0)
    (a / layout.METRICS).write_text("epoch,val_accuracy\n0,0.5\n1,0.7\n")
    b = catalog.create_run(tmp_path, "b", {"variant": "paper", "data": "x", "epochs": 1})
    liveness.write_status(b, state="running", pid=os.getpid(), started=2.0)
    lock = liveness.TrainerLock(b).acquire()
    rows = catalog.list_runs(tmp_path)
    assert [r["run_id"] for r in rows] == ["b", "a"]
    assert rows[1]["best_val_accuracy"] == 0.7 and rows[1]["epochs_done"] == 2
    with pytest.raises(layout.RunError, match="still training"):
        catalog.delete_run(tmp_path, "b")
    lock.release()
    (a / layout.READ_ONLY).write_text("")
    with pytest.raises(layout.RunError, match="cannot be deleted"):
        catalog.delete_run(tmp_path, "a")
    (a / layout.READ_ONLY).unlink()
    catalog.delete_run(tmp_path, "a")
    assert not a.exists()
    with pytest.raises(layout.RunError):
        catalog.delete_run(tmp_path, "../a")


def test_a_users_run_shadows_a_bundled_run_of_the_same_id(tmp_path):
    bundled = catalog.create_run(tmp_path / "assets", "demo", {"variant": "compact"})
    other = catalog.create_run(tmp_path / "assets", "extra", {"variant": "compact"})
    mine = catalog.create_run(tmp_path / "runs", "demo", {"variant": "paper"})
    rows = catalog.list_runs(tmp_path / "runs", extra=[bundled, other])
    assert [(r["run_id"], r["variant"]) for r in rows] == [("demo", "paper"), ("extra", "compact")]
    assert rows[0]["path"] == str(mine)
