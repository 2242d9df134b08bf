"""`pip install .` gives a working app: the wheel holds alexnet_core, alexnet_ui, app.py, the pages,
the bundled assets and the Streamlit settings (pyproject.toml), and an install of it, used from a
folder outside this checkout, predicts with the bundled model and serves the app.

The wheel is built offline from a copy of the checkout (no build/ or egg-info left here) and
installed with --no-deps into a virtual environment that sees this Python's packages
(--system-site-packages), so TensorFlow and Streamlit come from here and nothing is downloaded.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Top-level folders of a checkout that are not part of the package (runs and data are the user's).
NOT_SHIPPED = {"runs", "data", "exports", "build", "dist", "tests", "bench", "docs", "screenshots"}


def _not_copied(folder, names):
    top = Path(folder) == ROOT
    return {name for name in names if name == "__pycache__" or name.endswith(".egg-info")
            or (top and (name in NOT_SHIPPED or (name.startswith(".") and name != ".streamlit")))}


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    return {**env, "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PYTHONNOUSERSITE": "1"}


def _run(command, cwd, timeout=180) -> str:
    out = subprocess.run([str(c) for c in command], cwd=cwd, env=_env(), capture_output=True, text=True,
                         timeout=timeout)
    assert out.returncode == 0, f"{command} exited {out.returncode}:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The wheel, and a fresh environment with it installed: {src, wheel, python, script, app_dir, outside}."""
    tmp = tmp_path_factory.mktemp("packaging")
    src = tmp / "src"
    shutil.copytree(ROOT, src, ignore=_not_copied)
    # What `pip wheel --no-build-isolation` runs, called directly: the same backend, offline, in a
    # third less time (pip asks the backend for the metadata first, in a process of its own).
    _run([sys.executable, "-c", "import sys; from setuptools import build_meta; build_meta.build_wheel(sys.argv[1])",
          tmp / "dist"], cwd=src)
    (wheel,) = (tmp / "dist").glob("alexnet_explorer-*.whl")
    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", venv], cwd=tmp)
    python = venv / "bin" / "python"
    # This Python's pip, run by the environment's interpreter, installs into the environment;
    # --ignore-installed: an install of the checkout here (editable) is not the one under test.
    _run([python, "-m", "pip", "install", "--no-deps", "--ignore-installed", "--no-compile", "-q", wheel], cwd=tmp)
    outside = tmp / "elsewhere"  # no alexnet_core, app.py or assets here: only the install can answer
    outside.mkdir()
    found = json.loads(_run([python, "-c", "import json, alexnet_core; from alexnet_core import locations; "
                             "print(json.dumps([alexnet_core.__file__, str(locations.APP_DIR)]))"], cwd=outside))
    package, app_dir = (Path(p) for p in found)
    assert venv in package.parents, f"alexnet_core imported from {package}, not from the installed copy"
    assert venv in app_dir.parents and app_dir.name == "alexnet_explorer", app_dir
    return {"src": src, "wheel": wheel, "python": python, "script": venv / "bin" / "alexnet-explorer", "app_dir": app_dir,
            "outside": outside}


def test_the_wheel_holds_the_whole_app(installed):
    names = set(zipfile.ZipFile(installed["wheel"]).namelist())
    src = installed["src"]  # what the wheel was built from
    expected = {p.relative_to(src).as_posix() for package in ("alexnet_core", "alexnet_ui")
                for p in (src / package).rglob("*.py")}
    expected |= {f"alexnet_explorer/{p.relative_to(src).as_posix()}"
                 for p in [src / "app.py", src / ".streamlit" / "config.toml", *(src / "pages").glob("*.py"),
                           *(p for p in (src / "assets").rglob("*") if p.is_file())]}
    assert "alexnet_explorer/assets/runs/demo/.read-only" in expected  # the bundled run stays read-only
    assert not expected - names, f"missing from the wheel: {sorted(expected - names)[:20]}"
    stray = {n for n in names - expected if not n.startswith("alexnet_explorer-")}
    assert not stray, f"the wheel ships files the checkout does not: {sorted(stray)[:20]}"


def test_pyproject_lists_every_package():
    """pyproject.toml names the packages one by one (the app's files need a package of their own,
    mapped to this folder): a new subpackage needs its line there, or the wheel goes without it."""
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    packages = {".".join(p.parent.relative_to(ROOT).parts) for top in ("alexnet_core", "alexnet_ui")
                for p in (ROOT / top).rglob("__init__.py")}
    assert listed == packages | {"alexnet_explorer", "alexnet_explorer.pages"}, listed ^ packages


def test_installed_command_predicts_with_the_bundled_model(installed):
    cat = installed["app_dir"] / "assets" / "examples" / "cat.jpg"
    out = _run([installed["script"], "predict", "demo", cat, "--top-k", "3", "--json"], cwd=installed["outside"])
    (result,) = json.loads(out)
    assert result["error"] is None and result["image"] == str(cat), result
    assert result["predictions"][0]["label"] == "cat", result
    assert not any(installed["outside"].iterdir()), "predict wrote into the folder it ran in"


def test_installed_home_page_finds_the_bundled_model(installed):
    code = ("import json; from streamlit.testing.v1 import AppTest; from alexnet_core import locations; "
            "at = AppTest.from_file(str(locations.APP), default_timeout=120); at.run(); "
            "print(json.dumps({'exception': [e.value for e in at.exception], 'title': [t.value for t in at.title], "
            "'metrics': {m.label: m.value for m in at.metric}}))")
    page = json.loads(_run([installed["python"], "-c", code], cwd=installed["outside"]).splitlines()[-1])
    assert not page["exception"] and page["title"] == ["AlexNet Explorer"], page
    assert page["metrics"].get("Validation accuracy", "").endswith("%"), page


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, timeout=5.0) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.status, response.read().decode()


def test_installed_app_command_serves_the_app(installed, tmp_path):
    port = _free_port()
    log = tmp_path / "app.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([installed["script"], "app", "--server.headless", "true", "--server.port", str(port)],
                                cwd=installed["outside"], env=_env(), stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        deadline, health = time.time() + 90, None
        while time.time() < deadline and proc.poll() is None:
            try:
                health = _get(f"http://localhost:{port}/_stcore/health", timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        assert health == (200, "ok"), f"no health answer (exit {proc.poll()}):\n{log.read_text()[-3000:]}"
        # The command became `streamlit run` on the installed app.py ...
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes().split(b"\0")
        assert str(installed["app_dir"] / "app.py").encode() in cmdline, cmdline
        # ... whose web server (alexnet_ui.server's middleware) serves the Home page and deep links,
        for path in ("/", "/architecture"):
            status, html = _get(f"http://localhost:{port}{path}")
            assert status == 200 and "<title>Streamlit</title>" in html and "window.__streamlit" in html, html[:500]
        # ... with the installed .streamlit/config.toml read beside it: listening on localhost only.
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.2", port)) != 0, "the app listens beyond localhost: config.toml not read"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()


def test_app_command_passes_every_other_argument_to_streamlit_run(monkeypatch, tmp_path, capsys):
    from alexnet_core import cli, locations

    started = []
    monkeypatch.setattr(os, "execv", lambda path, argv: started.append((path, argv)))
    assert cli.main(["app", "--server.port", "8600", "--server.headless=true", "--theme.base", "dark"]) == 0
    assert cli.main(["app", "--", "--help"]) == 0  # after --, even --help is Streamlit's
    run = [sys.executable, "-m", "streamlit", "run", str(locations.APP)]
    assert started == [(sys.executable, [*run, "--server.port", "8600", "--server.headless=true", "--theme.base", "dark"]),
                       (sys.executable, [*run, "--help"])]
    with pytest.raises(SystemExit) as refused:  # other commands still refuse what they do not know
        cli.main(["predict", "demo", "cat.jpg", "--server.port", "8600"])
    assert refused.value.code == 2 and "unrecognized arguments: --server.port 8600" in capsys.readouterr().err
    monkeypatch.setattr(locations, "APP", tmp_path / "app.py")
    assert cli.main(["app"]) == 2 and "reinstall alexnet-explorer" in capsys.readouterr().err
    assert len(started) == 2
