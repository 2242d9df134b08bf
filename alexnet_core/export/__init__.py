"""Models out: SavedModel, TensorFlow Lite and run bundles."""
