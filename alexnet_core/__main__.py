import os
import sys

from alexnet_core.cli import main

try:
    code = main()
    sys.stdout.flush()  # a pipe closed early (`... | head`) shows here, inside the try
except BrokenPipeError:
    # The reader went away: what it wanted, it has. Quiet, as `cat file | head` is, instead of a
    # traceback; stdout goes to devnull so the interpreter's own flush at exit cannot fail again.
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    code = 1
sys.exit(code)
