"""The app's web server: Streamlit's own, with one fix for links straight to a page and the
page modules imported while the first browser loads.

Opened at `/train` (a bookmark, a reload, a shared link), Streamlit's frontend does not know
where the server's base path is, so it first tries `/train/_stcore/health` and
`/train/_stcore/host-config`, gets two 404s (console errors), then falls back to `/`
(streamlit/streamlit#7074). The frontend reads the base path from `window.__streamlit` when
the page defines it; `BaseUrlHint` writes that line into every page the server sends.

`window.__streamlit` is the frontend's configuration object for whoever hosts it (read once when
the page loads, then frozen; streamlit/streamlit#11378 and #11537): not in Streamlit's user
documentation, and no setting does the same (server.baseUrlPath moves the whole app instead).
tests/test_startup.py fails if the frontend Streamlit ships stops reading the two fields set here.
"""

from __future__ import annotations

# The one import inside a function (streamlit, in BaseUrlHint) reads the server's settings when the
# first page is served, once Streamlit has loaded them.
import contextlib
import importlib
import json
import threading

_HEAD = b"<head>"


def base_url_script(base_path: str) -> bytes:
    """The script that tells the frontend where the server is: the origin plus `base_path`."""
    path = "/" + "/".join(p for p in base_path.split("/") if p)
    path = path if path.endswith("/") else path + "/"
    target = f"location.origin + {json.dumps(path)}"
    return (f"<script>window.__streamlit = Object.assign({{}}, window.__streamlit, "
            f"{{BACKEND_BASE_URL: {target}, MAIN_PAGE_BASE_URL: {target}}});</script>").encode()


def is_page_request(scope) -> bool:
    """A browser asking for a page (index.html), not for the API, a file or the websocket."""
    if scope.get("type") != "http" or scope.get("method") != "GET":
        return False
    path = scope.get("path", "")
    last = path.rsplit("/", 1)[-1]
    return "/_stcore/" not in path and "/media/" not in path and "/component/" not in path \
        and "/app/static/" not in path and "." not in last


class BaseUrlHint:
    """ASGI middleware: inserts `base_url_script` at the top of every HTML page.

    Pages are asked for uncompressed (they are a few KB) so the script can be inserted;
    everything else passes through untouched.
    """

    def __init__(self, app, base_path: str | None = None):
        self.app = app
        self.base_path = base_path

    def _script(self) -> bytes:
        if self.base_path is None:
            import streamlit as st

            self.base_path = st.get_option("server.baseUrlPath") or ""
        return base_url_script(self.base_path)

    async def __call__(self, scope, receive, send):
        if not is_page_request(scope):
            await self.app(scope, receive, send)
            return
        scope = {**scope, "headers": [(k, v) for k, v in scope.get("headers", []) if k.lower() != b"accept-encoding"]}
        start = {}
        body = []

        async def hold(message):
            # The whole page is held (it is small) so its length can be corrected.
            if message["type"] == "http.response.start":
                start.update(message)
                return
            if message["type"] != "http.response.body":
                await send(message)
                return
            body.append(message.get("body", b""))
            if message.get("more_body"):
                return
            content = b"".join(body)
            headers = list(start.get("headers", []))
            html = any(k.lower() == b"content-type" and v.startswith(b"text/html") for k, v in headers)
            if html and _HEAD in content:
                content = content.replace(_HEAD, _HEAD + self._script(), 1)
                headers = [(k, v) for k, v in headers if k.lower() != b"content-length"]
                headers.append((b"content-length", str(len(content)).encode()))
            await send({**start, "headers": headers})
            await send({"type": "http.response.body", "body": content})

        await self.app(scope, receive, hold)


@contextlib.asynccontextmanager
async def warm_up_after_start(app):
    """st.App lifespan: the warm-up starts once the server is up, while browsers load the frontend."""
    yield {"warm_up": warm_up()}


def warm_up():
    """Import what the first page needs while the browser is still loading the frontend (a thread)."""

    def imports():
        for name in ("pandas", "plotly.graph_objects", "alexnet_ui.navigation", "alexnet_ui.loaders",
                     "alexnet_core.store.catalog", "alexnet_core.predict.inference"):
            try:
                importlib.import_module(name)
            except Exception:  # the page will import it again and show what is wrong
                return

    thread = threading.Thread(target=imports, name="warm-up", daemon=True)
    thread.start()
    return thread

