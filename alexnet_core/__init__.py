"""AlexNet Explorer's engine: models, anatomy, data, training, evaluation, explanation."""

__version__ = "0.1.0"
