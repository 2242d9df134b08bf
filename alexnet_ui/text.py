"""Text the pages write: what a user, a file or a folder name says, made safe inside Markdown,
and numbers in words (sizes, durations, shapes). No widgets and no caching."""

from __future__ import annotations

# Imports inside functions are deliberate: TensorFlow and Keras, and the modules that reach them,
# load on first use, so importing this module (the app's pages, the command line) stays light.
import re
from pathlib import Path

from alexnet_core.locations import runs_root

_MARKDOWN = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$:=])")


def _short_paths(text: str) -> str:
    """Server folders in a message named the way the app names them, not as absolute paths."""

    from alexnet_core.locations import ASSETS

    try:
        places = {str(runs_root().resolve()): "runs", str(ASSETS.parent): ".", str(Path.home()): "~"}
    except Exception:  # a broken runs folder setting must not break every message
        places = {str(ASSETS.parent): ".", str(Path.home()): "~"}
    for place in sorted(places, key=len, reverse=True):
        if len(place) > 1:
            text = text.replace(place, places[place])
    return text


def plain(text, limit: int = 200) -> str:
    """Text from a user, a file or a folder name, safe inside Markdown: server folders shortened,
    special characters escaped (no links, images, icons or colours), one line, cut to `limit`."""
    text = _short_paths(" ".join(str(text).split()))
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return _MARKDOWN.sub(r"\\\1", text)


def format_bytes(n: int | None) -> str:
    if n is None:
        return "unknown"
    for unit in ("GiB", "MiB", "KiB"):
        size = {"GiB": 2**30, "MiB": 2**20, "KiB": 2**10}[unit]
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def format_duration(seconds) -> str:
    if seconds is None or seconds != seconds:
        return "-"
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h {m:02d}m" if h else f"{m}m {s:02d}s"


def shape_text(shape) -> str:
    return " × ".join(str(s) for s in shape)


def cpu_friendly_variants() -> str:
    """The variants sized for a CPU, as Markdown prose: "`compact` and `compact-hires`"."""
    from alexnet_core.models.variants import CPU_FRIENDLY

    names = [f"`{name}`" for name in CPU_FRIENDLY]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
