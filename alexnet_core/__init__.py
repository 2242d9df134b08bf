"""AlexNet Explorer's engine: models, anatomy, data, training, evaluation, explanation."""

from alexnet_core import quiet as _quiet

__version__ = "0.1.0"

_quiet.install()
