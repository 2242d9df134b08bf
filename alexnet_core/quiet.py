"""TensorFlow without its start-up chatter on the terminal.

Importing TensorFlow (and its first look for a GPU) prints lines such as "oneDNN custom
operations are on", "Could not find cuda drivers" or "failed call to cuInit" straight to the
process's stderr, from C++, before any setting can silence them (TF_CPP_MIN_LOG_LEVEL applies
only later). `install()` puts an import hook in place: the first `import tensorflow`, by us or
by Keras, runs with file descriptor 2 captured, and what it printed goes back to stderr
without those lines. ALEXNET_TF_LOGS=1 keeps everything.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.util
import os
import re
import sys
import tempfile

# Start-up lines of TensorFlow/absl: "I0000 00:00:17953... port.cc:153] ...", the absl preamble,
# and the CPU feature note's second line.
NOISE = re.compile(
    rb"^([IWE]\d{4} [\d:.]+\s+\d+ \S+:\d+\] .*"
    rb"|WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    rb"|To enable the following instructions: .* in other operations, rebuild TensorFlow .*)$")


def strip_noise(text: bytes) -> bytes:
    """`text` without TensorFlow's start-up lines."""
    return b"".join(line for line in text.splitlines(keepends=True) if not NOISE.match(line.rstrip(b"\r\n")))


@contextlib.contextmanager
def quiet_stderr():
    """Capture file descriptor 2 (C++ and Python writes alike); give back all but the noise."""
    try:
        sys.stderr.flush()
    except (AttributeError, ValueError, OSError):
        pass
    with tempfile.TemporaryFile() as sink:
        saved = os.dup(2)
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            try:
                sys.stderr.flush()
            except (AttributeError, ValueError, OSError):
                pass
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            kept = strip_noise(sink.read())
            if kept:
                os.write(2, kept)


class _QuietLoader(importlib.abc.Loader):
    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        with quiet_stderr():
            self.loader.exec_module(module)
            with contextlib.suppress(Exception):
                # The first device query (cuInit) logs too; later ones are silent.
                module.config.list_physical_devices("GPU")


class _QuietFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        uninstall()
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader)
        return spec


_FINDER = _QuietFinder()


def install() -> None:
    """Quiet the first `import tensorflow` of this process (unless ALEXNET_TF_LOGS=1)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if os.environ.get("ALEXNET_TF_LOGS") == "1" or "tensorflow" in sys.modules or _FINDER in sys.meta_path:
        return
    sys.meta_path.insert(0, _FINDER)


def uninstall() -> None:
    with contextlib.suppress(ValueError):
        sys.meta_path.remove(_FINDER)
