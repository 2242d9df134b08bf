"""Races: two Starts or two Resumes at the same instant, from two processes or from two sessions
of the app's server (threads of one process), give one run and one trainer, and the loser a
clear message; writers of one file in one process never collide on a temp file.

No trainer really starts: launcher.spawn runs with a stand-in for subprocess.Popen whose pid is
the caller's (alive). To make a race certain rather than likely, every check of the one-run
rule waits, once it has passed, for the other contender to have passed it too (or for a few
seconds, when the other is kept out by the runs folder's lock)."""

import contextlib
import json
import multiprocessing
import os
import threading
import time
from dataclasses import asdict
from pathlib import Path

import pytest

from alexnet_core import locations
from alexnet_core.settings.config import TrainConfig
from alexnet_core.store import catalog, fileio, layout, liveness
from alexnet_core.train import launcher, lifecycle
from tests import helpers

ROOT = Path(__file__).resolve().parent.parent
MEET_S = 3.0  # how long a contender that passed the rule's check waits for the other one


def config() -> TrainConfig:
    return TrainConfig(variant="compact", data="sample", epochs=1, batch_size=8)


def meet_after_the_check(barrier, setattr_=setattr):
    """Make every catalog.check_no_active_run wait at `barrier` once it has passed."""
    check = catalog.check_no_active_run

    def checked_then_meet(*args, **kwargs):
        check(*args, **kwargs)
        with contextlib.suppress(threading.BrokenBarrierError):
            barrier.wait()

    setattr_(catalog, "check_no_active_run", checked_then_meet)


def run_folders(root):
    return sorted(p.name for p in root.iterdir() if (p / layout.CONFIG).exists()) if root.exists() else []


def outcome(call):
    try:
        call()
    except Exception as exc:  # what a tab would show
        return f"{type(exc).__name__}: {exc}"
    return "ok"


def at_once(*calls):
    """Run the calls in threads released together; their outcomes in order."""
    results = [None] * len(calls)
    ready = threading.Barrier(len(calls))

    def one(i):
        ready.wait()
        results[i] = outcome(calls[i])

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return results


@pytest.fixture
def no_trainer(monkeypatch):
    return helpers.without_trainers(monkeypatch)


# --- Start ----------------------------------------------------------------------------------------


def _start_in_a_process(root, run_id, ready, meet, done, results):
    launcher.subprocess = helpers.fake_subprocess()
    meet_after_the_check(meet)
    ready.wait()
    results.put((run_id, outcome(lambda: launcher.start(config(), root, run_id=run_id))))
    done.wait(60)  # alive until the test has looked, as the trainer whose pid the run records would be


def test_two_processes_pressing_start_at_once_make_one_run(tmp_path):
    root = tmp_path / "runs"
    ctx = multiprocessing.get_context("spawn")
    ready, meet, done, results = ctx.Barrier(2), ctx.Barrier(2, timeout=MEET_S), ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_start_in_a_process, args=(str(root), f"tab-{i}", ready, meet, done, results))
             for i in (1, 2)]
    for proc in procs:
        proc.start()
    try:
        outcomes = dict(results.get(timeout=120) for _ in procs)
        assert len(run_folders(root)) == 1, (run_folders(root), outcomes)
        winner = run_folders(root)[0]
        loser = "tab-2" if winner == "tab-1" else "tab-1"
        assert outcomes[winner] == "ok", outcomes
        assert outcomes[loser].startswith(f"ActiveRunError: Another run just started: {winner}"), outcomes
        assert liveness.read_status(root / winner)["state"] == "starting"
    finally:
        done.set()
        for proc in procs:
            proc.join(30)


def test_two_threads_pressing_start_at_once_make_one_run(tmp_path, no_trainer, monkeypatch):
    """Two sessions of the app's server are two threads of one process."""
    root = tmp_path / "runs"
    meet_after_the_check(threading.Barrier(2, timeout=MEET_S), monkeypatch.setattr)
    outcomes = at_once(lambda: launcher.start(config(), root, run_id="tab-1"),
                       lambda: launcher.start(config(), root, run_id="tab-2"))
    assert len(run_folders(root)) == 1, (run_folders(root), outcomes)
    winner = run_folders(root)[0]
    assert sorted(outcomes)[1] == "ok" and len(no_trainer) == 1, outcomes
    assert sorted(outcomes)[0].startswith(f"ActiveRunError: Another run just started: {winner} (Starting the trainer)")
    assert "One run trains at a time" in sorted(outcomes)[0]


def test_the_command_line_counts_its_new_run_as_started_before_its_trainer_locks_it(tmp_path):
    """`train` creates its run `starting` with its own pid in the same step as the rule's check."""
    root = tmp_path / "runs"
    run_dir = lifecycle.new_run(config(), root, "cli", starter_pid=os.getpid())
    assert liveness.read_status(run_dir)["state"] == "starting" and liveness.lock_held(run_dir) is False
    with pytest.raises(layout.ActiveRunError, match="Another run just started: cli"):
        lifecycle.new_run(config(), root, "second")
    assert run_folders(root) == ["cli"]


def test_one_run_id_taken_twice_is_refused_by_name(tmp_path):
    root = tmp_path / "runs"
    outcomes = at_once(*[lambda: lifecycle.new_run(config(), root, "same", allow_parallel=True)] * 2)
    assert sorted(outcomes) == ["RunError: Run 'same' already exists in " + str(root.resolve()), "ok"], outcomes


def test_the_runs_lock_keeps_out_other_threads_and_lets_its_holder_in_again(tmp_path):
    root = tmp_path / "runs"

    def take_it():
        with liveness.runs_lock(root, wait_s=0.2):
            pass

    with liveness.runs_lock(root):
        take_it()  # its holder takes it again (new_run inside a caller's hold does not wait for itself)
        assert at_once(take_it) == [f"ActiveRunError: Another run is being started or resumed in {root} and has "
                                    "not finished after 0 s: try again in a moment."]
    assert at_once(take_it) == ["ok"]
    assert list(root.iterdir()) == []  # the folder is its own lock: no lock file among the runs


# --- Resume ---------------------------------------------------------------------------------------


def paused_run(root):
    run_dir = catalog.create_run(root, "paused", asdict(config()))
    liveness.write_status(run_dir, state="stopped", message="Stopped after epoch 1")
    return run_dir


def test_two_threads_pressing_resume_at_once_spawn_one_trainer(tmp_path, no_trainer, monkeypatch):
    run_dir = paused_run(tmp_path / "runs")
    meet_after_the_check(threading.Barrier(2, timeout=MEET_S), monkeypatch.setattr)
    outcomes = at_once(lambda: launcher.resume(run_dir), lambda: launcher.resume(run_dir))
    assert len(no_trainer) == 1, outcomes
    assert sorted(outcomes)[1] == "ok", outcomes
    assert sorted(outcomes)[0].startswith("ActiveRunError: Run paused is already starting"), outcomes
    assert liveness.read_status(run_dir)["state"] == "starting"


def test_a_resume_and_a_start_at_once_make_one_active_run(tmp_path, no_trainer, monkeypatch):
    root = tmp_path / "runs"
    run_dir = paused_run(root)
    meet_after_the_check(threading.Barrier(2, timeout=MEET_S), monkeypatch.setattr)
    outcomes = at_once(lambda: launcher.resume(run_dir), lambda: launcher.start(config(), root, run_id="new"))
    assert len(no_trainer) == 1 and outcomes.count("ok") == 1, outcomes
    assert [r["run_id"] for r in catalog.active_runs(root)] in (["paused"], ["new"])


# --- Temp files -------------------------------------------------------------------------------------


def test_many_threads_writing_one_file_never_collide(tmp_path):
    path = tmp_path / layout.STATUS
    errors, start = [], threading.Barrier(8)

    def writer(i):
        start.wait()
        for n in range(30):
            try:
                fileio.write_json_atomic(path, {"writer": i, "n": n, "pad": "x" * 20_000})
            except Exception as exc:
                errors.append(f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors[:3]
    assert json.loads(path.read_text())["pad"] == "x" * 20_000  # whole
    assert [p.name for p in tmp_path.iterdir()] == [layout.STATUS]  # no temp file left


def test_temp_names_are_unique_per_writer_and_cleaned_up(tmp_path):
    path = tmp_path / "a.json"
    with fileio.atomic_write(path) as one, fileio.atomic_write(path) as two:
        one.write_text("1")
        two.write_text("2")
    assert one != two and path.read_text() in ("1", "2")
    assert f".a.json.{os.getpid()}-{threading.get_ident()}-" in one.name  # process, thread, a random part
    with pytest.raises(RuntimeError), fileio.atomic_write(path) as tmp:
        tmp.write_text("half")
        raise RuntimeError("failed mid-write")
    assert not tmp.exists() and path.read_text() in ("1", "2")
    tmp.write_text("left by a kill")  # what a killed writer leaves is still found and removed
    assert fileio.remove_leftovers(tmp_path) == [tmp.name]


# --- The Train page: a tab and another tab at the same instant ------------------------------------
# AppTest runs one script at a time (it swaps a process-wide mock Runtime in and out), so the other
# tab is what its session does in the server: the same launcher call, in another thread, which is
# let in first and holds at the rendezvous while this tab presses its button.

PAGE_MEET_S = 6.0  # long enough for the page to render and reach the rule's check on a busy machine


def train_page(**session):
    from streamlit.testing.v1 import AppTest

    tab = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    tab.switch_page("pages/train.py")
    for key, value in session.items():
        tab.session_state[key] = value
    tab.run()
    assert not tab.exception, tab.exception
    return tab


def shown(elements):
    return [e.value.replace("\\", "") for e in elements]


def another_tab(call, barrier):
    """Run `call` in a thread; return once it has passed the one-run rule's check and waits for a rival."""
    outcomes = []
    thread = threading.Thread(target=lambda: outcomes.append(outcome(call)))
    thread.start()
    deadline = time.monotonic() + 60
    while barrier.n_waiting < 1:
        assert thread.is_alive() and time.monotonic() < deadline, outcomes
        time.sleep(0.01)
    return thread, outcomes


def test_two_tabs_pressing_start_at_once_make_one_run(no_trainer, monkeypatch):
    root = locations.runs_root()
    tab = train_page()
    barrier = threading.Barrier(2, timeout=PAGE_MEET_S)
    meet_after_the_check(barrier, monkeypatch.setattr)
    other, outcomes = another_tab(lambda: launcher.start(config(), root, run_id="other-tab"), barrier)
    tab.button(key="train_start").click().run()
    other.join(60)
    assert not tab.exception, tab.exception
    assert run_folders(root) == ["other-tab"] and outcomes == ["ok"] and len(no_trainer) == 1, run_folders(root)
    refused = shown(tab.error)
    assert len(refused) == 1 and refused[0].startswith("Another run just started: other-tab"), refused


def test_two_tabs_pressing_resume_at_once_start_one_trainer_and_show_no_error(no_trainer, monkeypatch):
    run_dir = paused_run(locations.runs_root())
    tab = train_page()  # shows the paused run, the only one of the user's
    barrier = threading.Barrier(2, timeout=PAGE_MEET_S)
    meet_after_the_check(barrier, monkeypatch.setattr)
    other, outcomes = another_tab(lambda: launcher.resume(run_dir), barrier)
    tab.button(key="train_resume").click().run()
    other.join(60)
    assert not tab.exception and not tab.error, (tab.exception, shown(tab.error))
    assert outcomes == ["ok"] and len(no_trainer) == 1 and liveness.read_status(run_dir)["state"] == "starting"
    told = shown(tab.info)
    assert any(text.startswith("Run paused is already starting") for text in told), told
    assert [b.label for b in tab.button if b.label in ("Stop", "Resume")] == ["Stop"]  # it shows the run starting


def test_the_start_button_shows_a_setting_refused_at_start_as_an_error(no_trainer):
    """new_run refuses a model to fine-tune from that is not there (ConfigError): an error, no traceback."""
    from alexnet_core.settings.recipes import RECIPES
    from alexnet_ui.train_form import TrainForm

    # The form as Clone settings fills it from a run whose base model has gone since.
    tab = train_page(**TrainForm.values({**RECIPES["quick"].settings, "init_from": "/nowhere/model.keras"}))
    tab.button(key="train_start").click().run()
    assert not tab.exception, tab.exception
    assert any("Cannot fine-tune from '/nowhere/model.keras'" in text for text in shown(tab.error)), shown(tab.error)
    assert run_folders(locations.runs_root()) == [] and not no_trainer
