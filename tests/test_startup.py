"""A fast, quiet, offline start: no TensorFlow for pages that need no model, no TensorFlow chatter,
the web server's page fix, Streamlit settings and internals the speed depends on."""

import asyncio
import importlib
import os
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

from alexnet_ui import server, streamlit_internals

ROOT = Path(__file__).resolve().parent.parent


def _python(code: str, env=None, timeout=300):
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def test_home_page_and_device_facts_do_not_import_tensorflow(tmp_path):
    done = _python("""
        import sys
        from streamlit.testing.v1 import AppTest
        at = AppTest.from_file("app.py", default_timeout=120)
        at.run()
        assert not at.exception, at.exception
        assert at.title[0].value == "AlexNet Explorer"
        from alexnet_core.train.devices import describe
        print(describe()["kind"], "tensorflow" in sys.modules, "keras" in sys.modules)
    """, env={"ALEXNET_RUNS_DIR": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[-3:] == ["CPU", "False", "False"], done.stdout


def test_gpu_facts_come_from_nvidia_smi_and_follow_cuda_visible_devices(tmp_path, monkeypatch):
    from alexnet_core.train import devices

    fake = tmp_path / "nvidia-smi"
    fake.write_text("#!/bin/sh\necho '0, NVIDIA H100 80GB HBM3, 81559'\necho '1, NVIDIA H100 80GB HBM3, 81559'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    info = devices.describe()
    assert (info["kind"], info["count"], info["name"]) == ("GPU", 2, "NVIDIA H100 80GB HBM3")
    assert info["memory_bytes"] == 81559 * 2**20
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    assert devices.describe()["count"] == 1
    for hidden in ("", "-1"):
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", hidden)
        assert devices.describe()["kind"] == "CPU"
    fake.write_text("#!/bin/sh\necho 'NVIDIA-SMI has failed' >&2\nexit 9\n")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert devices.describe()["kind"] == "CPU"


def test_tensorflow_start_up_lines_are_kept_off_the_terminal():
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "ALEXNET_TF_LOGS")}
    quiet = subprocess.run(
        [sys.executable, "-c", "import alexnet_core, sys, tensorflow as tf; tf.constant(1) + 1; "
                               "print('still here', file=sys.stderr)"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stderr.strip() == "still here", quiet.stderr
    loud = subprocess.run([sys.executable, "-c", "import alexnet_core, tensorflow"], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env={**env, "ALEXNET_TF_LOGS": "1", "TF_CPP_MIN_LOG_LEVEL": "0"})
    assert loud.returncode == 0
    assert "oneDNN" in loud.stderr or "cuda" in loud.stderr.lower(), "TensorFlow no longer logs at start-up"


def test_noise_filter_keeps_other_lines():
    from alexnet_core.quiet import strip_noise

    text = (b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
            b"I0000 00:00:1795336818.014682    5896 port.cc:153] oneDNN custom operations are on.\n"
            b"E0000 00:00:1795336951.423942    7294 cuda_platform.cc:52] failed call to cuInit: UNKNOWN\n"
            b"Traceback (most recent call last):\n"
            b"ValueError: a real problem\n")
    assert strip_noise(text) == b"Traceback (most recent call last):\nValueError: a real problem\n"


def test_streamlit_run_serves_the_app_module_with_its_fixes(monkeypatch):
    """`streamlit run app.py` imports app.py as the module `app` and serves its `app` object; the
    import applies streamlit_internals before the first session."""
    import streamlit as st
    from streamlit.runtime.pages_manager import PagesManager
    from streamlit.runtime.scriptrunner import script_runner
    from streamlit.web.server.app_discovery import discover_asgi_app

    found = discover_asgi_app(ROOT / "app.py")
    assert found.is_asgi_app and found.app_name == "app"
    saved, saved_flag = script_runner._clean_problem_modules, PagesManager.uses_pages_directory
    monkeypatch.setattr(sys, "path", [str(ROOT), *sys.path])
    sys.modules.pop("app", None)
    try:
        PagesManager.uses_pages_directory = None
        module = importlib.import_module("app")
        assert isinstance(module.app, st.App)
        assert script_runner._clean_problem_modules is not saved  # Keras is no longer cleared per run
        assert PagesManager.uses_pages_directory is False  # app.py's st.navigation pages, from the first session
    finally:
        script_runner._clean_problem_modules = saved
        PagesManager.uses_pages_directory = saved_flag
        sys.modules.pop("app", None)


def test_imports_are_warmed_once_the_server_is_up():
    async def start_and_stop():
        async with server.warm_up_after_start(None) as state:
            return state["warm_up"]

    thread = asyncio.run(start_and_stop())
    assert thread.name == "warm-up"
    thread.join(timeout=120)
    assert not thread.is_alive()
    assert "alexnet_ui.loaders" in sys.modules and "alexnet_core.store.catalog" in sys.modules


def test_streamlit_still_clears_keras_after_each_run_unless_told_not_to():
    """keep_keras_state replaces a private Streamlit function; this fails if an upgrade drops it."""
    import inspect

    from streamlit.runtime.scriptrunner import script_runner

    assert "clear_session" in inspect.getsource(script_runner._clean_problem_modules)
    saved = script_runner._clean_problem_modules
    try:
        assert streamlit_internals.keep_keras_state()
        assert "clear_session" not in inspect.getsource(script_runner._clean_problem_modules)
    finally:
        script_runner._clean_problem_modules = saved


def test_private_streamlit_internals_are_used_on_checked_versions_only(monkeypatch):
    """streamlit_internals changes Streamlit only on the versions its premises were checked on: this
    fails after an upgrade until someone checks them again (this file and test_pages.py's guard)."""
    from streamlit.runtime.pages_manager import PagesManager
    from streamlit.runtime.scriptrunner import script_runner

    assert streamlit_internals.checked(), (
        f"Streamlit {streamlit_internals.streamlit_version()}: check alexnet_ui/streamlit_internals.py's "
        "premises, then add the version to CHECKED_VERSIONS")
    monkeypatch.setattr(streamlit_internals, "CHECKED_VERSIONS", ())
    saved, saved_flag = script_runner._clean_problem_modules, PagesManager.uses_pages_directory
    PagesManager.uses_pages_directory = None
    try:
        assert streamlit_internals.apply() == {"declare_navigation_app": False, "keep_keras_state": False}
        assert script_runner._clean_problem_modules is saved and PagesManager.uses_pages_directory is None
    finally:
        PagesManager.uses_pages_directory = saved_flag


def test_the_frontend_still_reads_the_server_location_the_pages_give_it():
    """BaseUrlHint sets window.__streamlit's BACKEND_BASE_URL and MAIN_PAGE_BASE_URL; this fails if
    the frontend Streamlit ships stops reading them (deep links would log 404s again)."""
    import streamlit

    bundle = "".join(p.read_text(errors="ignore")
                     for p in (Path(streamlit.__file__).parent / "static" / "static" / "js").glob("*.js"))
    assert "window.__streamlit" in bundle
    assert "BACKEND_BASE_URL" in bundle and "MAIN_PAGE_BASE_URL" in bundle


def test_streamlit_settings_the_speed_depends_on():
    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert config["runner"]["postScriptGC"] is False
    assert config["server"]["fileWatcherType"] == "none"


def _serve(middleware, path, body=b"<html><head><title>x</title></head></html>", content_type=b"text/html"):
    """One request through `middleware` over a fake app; (status, headers, body, headers the app saw)."""
    seen = {}

    async def inner(scope, receive, send):
        seen["headers"] = dict(scope["headers"])
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]})
        half = len(body) // 2
        await send({"type": "http.response.body", "body": body[:half], "more_body": True})
        await send({"type": "http.response.body", "body": body[half:]})

    sent = []

    async def send(message):
        sent.append(message)

    async def receive():
        return {"type": "http.request"}

    scope = {"type": "http", "method": "GET", "path": path, "headers": [(b"accept-encoding", b"gzip")]}
    asyncio.run(middleware(inner)(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    content = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], dict(start["headers"]), content, seen["headers"]


@pytest.mark.parametrize("path", ["/", "/train", "/evaluate"])
def test_every_page_tells_the_frontend_where_the_server_is(path):
    status, headers, content, asked = _serve(lambda app: server.BaseUrlHint(app, base_path=""), path)
    assert status == 200
    assert b"window.__streamlit" in content and b"BACKEND_BASE_URL" in content
    assert content.index(b"window.__streamlit") < content.index(b"<title>")  # before the frontend's own script
    assert int(headers[b"content-length"]) == len(content)
    assert b"accept-encoding" not in asked  # asked uncompressed so it can be edited


@pytest.mark.parametrize("path", ["/_stcore/health", "/train/_stcore/host-config", "/media/abc.png",
                                  "/static/js/index.js", "/app/static/x"])
def test_api_files_and_media_pass_through_untouched(path):
    body = b"<head>not a page</head>"
    _, headers, content, asked = _serve(lambda app: server.BaseUrlHint(app, base_path=""), path, body=body)
    assert content == body
    assert asked[b"accept-encoding"] == b"gzip"


def test_base_url_script_follows_the_base_path():
    assert b'"/"' in server.base_url_script("")
    assert b'"/explorer/"' in server.base_url_script("explorer")
    assert b'"/a/b/"' in server.base_url_script("/a/b/")
