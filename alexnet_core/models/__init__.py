"""The networks: architectures as data, their custom layers, the layer table."""
