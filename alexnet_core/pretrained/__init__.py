"""Published ImageNet weights in: the sources, download or a file at hand, conversion identified
by the graph's structure, and parity with the reference runtimes. PyTorch and ONNX are imported
only here, only when a command needs them (the `pretrained` extra)."""
