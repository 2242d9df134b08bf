"""The one place where pages catch what a user can act on.

Every refusal or failure alexnet_core raises for a user derives from errors.AlexNetError, whose
text is the message (ConfigError, RunError, DataError, DatasetError, ModelLoadError,
ImageDecodeError, ExportError). A disk that refuses a write or a read (OSError: full,
read-only, no permission) is said in words too. Anything else is a bug: it is not caught here
and Streamlit shows it (its type only; see client.showErrorDetails).

    with user_errors() as outcome:
        run_dir = start(config, runs_root())
        st.rerun()
    if outcome.failed:
        ...
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import streamlit as st

from alexnet_core.errors import AlexNetError
from alexnet_ui.text import plain


def user_message(exc: BaseException) -> str:
    """What to tell the user about `exc`: an AlexNetError's own text; for an OSError, which file
    the disk refused and why."""
    if isinstance(exc, OSError) and not isinstance(exc, AlexNetError):
        reason = exc.strerror or str(exc) or type(exc).__name__
        where = f" {exc.filename}" if exc.filename else ""
        return (f"The disk refused to read or write{where}: {reason}. Check the free space and the "
                "folder's permissions.")
    return str(exc)


@dataclass
class Outcome:
    """What happened inside a `user_errors` block: the error shown, if any."""

    error: BaseException | None = None

    @property
    def failed(self) -> bool:
        return self.error is not None


@contextlib.contextmanager
def user_errors(*also: type[BaseException], limit: int = 600, icon: str | None = ":material/error:",
                where=None):
    """Run the block; an AlexNetError or an OSError raised in it ends the block and is shown as
    an error message (user_message, Markdown-safe, cut to `limit`) in `where` (default: the page).
    `also`: further exception types a caller shows the same way. Yields an Outcome. Streamlit's
    st.rerun and st.stop pass through."""
    outcome = Outcome()
    try:
        yield outcome
    except (AlexNetError, OSError, *also) as exc:
        outcome.error = exc
        (where or st).error(plain(user_message(exc), limit), icon=icon)
