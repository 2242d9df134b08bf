"""Training settings: the validated TrainConfig and the named recipes."""
