"""The command line's exit codes: what each way a command ends means to a shell or a script.

docs/ARCHITECTURE.md (Command line) is the contract. Only the command line layer (cli.py and
the multi-worker supervisor, join_watch.py) turns endings into these numbers.
"""

from __future__ import annotations

OK = 0  # done: a training run finished or was stopped
FAILED = 1  # a run diverged or failed (disk full, an internal error: traceback in RUN/train.log)
USAGE = 2  # bad usage or bad input, with a message naming it
INTERRUPTED = 130  # Ctrl-C


def of_training(ending) -> int:
    """The exit code of a training run that ended as `ending` (train.training.Ending)."""
    return {"done": OK, "failed": FAILED, "bad input": USAGE}[ending.value]


def of_child(status: int) -> int:
    """A child process's exit status passed on: a death by signal N becomes 128 + N, as a shell says."""
    return 128 - status if status < 0 else status
