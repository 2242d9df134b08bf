"""Images in: data sources, tf.data pipelines, augmentation, preprocessing, the app's own datasets."""
