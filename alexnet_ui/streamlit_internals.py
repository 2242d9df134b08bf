"""The app's only uses of private Streamlit internals, applied once when the server starts
(app.py), and only on the Streamlit versions they were checked against (CHECKED_VERSIONS).

On any other version `apply` changes nothing and logs why: the app still works, with the two
costs below back. tests/test_startup.py (the runner clean-up, the version gate) and
tests/test_pages.py (the pages flag) fail when an upgrade changes what these rely on; check the
internals again, then add the version here.

1. Legacy multipage mode (PagesManager.uses_pages_directory).
   Why Streamlit enters it: once per process, when the first browser session starts, Streamlit
   decides whether the app is a multipage app of the old kind by one test, whether the main
   script's folder holds an entry named `pages` (runtime/pages_manager.py). app.py's folder holds
   pages/, so the answer is yes, and until some script run calls st.navigation (which clears the
   class flag) every run goes through `_mpa_v1` (runtime/scriptrunner/script_runner.py): it lists
   pages/*.py itself and, for a link straight to a page (/train after a restart, a bookmark), runs
   that page without app.py: no page config, and Streamlit's own page list in the sidebar (file
   names, app.py as "app").
   The cause cannot go without changing what the project keeps: the page scripts stay in a
   top-level pages/ folder, and the main script stays app.py. Renaming the folder would end it;
   so would a main script in another folder (st.App("elsewhere/main.py")), but Streamlit resolves
   every relative page path (st.Page, st.page_link, st.switch_page, AppTest.switch_page) against
   the main script's folder, so each "pages/x.py" in the pages and the tests would change, and the
   tests, which run app.py, would still see the old mode while the server did not.
   So: app.py declares every page with st.navigation; the app has no pages of the old kind, and
   `declare_navigation_app` says so before the first session, setting the flag to the value
   st.navigation itself sets. Pages need no workaround of their own.
   (AppTest resets the flag before each run, so in tests a page opened with switch_page runs in
   the old mode, as it always has; its content is the same.)

2. Keras cleared after every script run (script_runner._clean_problem_modules).
   Streamlit calls `keras.backend.clear_session()` at the end of every script run once Keras is
   imported, which forces a full garbage collection: about 0.6 s per click once a model is
   loaded, for every session. No setting turns it off (`streamlit config show`:
   runner.postScriptGC, which the app sets false, is a different collection). The app builds its
   models inside cached functions with explicit layer names and never relies on Keras' global
   state, so `keep_keras_state` keeps only the matplotlib half of that clean-up.
"""

from __future__ import annotations

# Imports inside functions are deliberate: Streamlit's internals are reached only when used, on the
# versions checked, so importing this module never fails on another version.
import logging
import sys

CHECKED_VERSIONS = ("1.67",)  # Streamlit major.minor versions whose internals were checked

_LOG = logging.getLogger(__name__)


def streamlit_version() -> str:
    """Streamlit's major.minor version, e.g. "1.67"."""
    import streamlit

    return ".".join(streamlit.__version__.split(".")[:2])


def checked() -> bool:
    """True if the installed Streamlit is one these internals were checked against."""
    return streamlit_version() in CHECKED_VERSIONS


def declare_navigation_app() -> bool:
    """Tell Streamlit, before the first session, that the app declares its pages with
    st.navigation (point 1 above). False (and nothing changed) if Streamlit has no such flag."""
    try:
        from streamlit.runtime.pages_manager import PagesManager
    except ImportError:  # pragma: no cover - a Streamlit without the old mode
        return False
    if "uses_pages_directory" not in vars(PagesManager):
        return False
    PagesManager.uses_pages_directory = False
    return True


def keep_keras_state() -> bool:
    """Stop Streamlit clearing Keras after every script run (point 2 above); matplotlib figures
    are still closed. False (and nothing changed) if Streamlit no longer has the function."""
    try:
        from streamlit.runtime.scriptrunner import script_runner
    except ImportError:  # pragma: no cover - a Streamlit without that module
        return False
    if not callable(getattr(script_runner, "_clean_problem_modules", None)):
        return False

    def clean_matplotlib_only() -> None:
        plt = sys.modules.get("matplotlib.pyplot")
        if plt is not None:
            try:
                plt.close("all")
            except Exception:  # same as Streamlit: never fail a run over clean-up
                pass

    script_runner._clean_problem_modules = clean_matplotlib_only
    return True


def apply() -> dict[str, bool]:
    """Both changes above, on a checked Streamlit version only: {change: applied}."""
    if not checked():
        _LOG.warning("Streamlit %s is not among the versions alexnet_ui.streamlit_internals was checked "
                     "against (%s): running without its two changes.", streamlit_version(),
                     ", ".join(CHECKED_VERSIONS))
        return {"declare_navigation_app": False, "keep_keras_state": False}
    return {"declare_navigation_app": declare_navigation_app(), "keep_keras_state": keep_keras_state()}
