"""The training crops, from a decoded image or from only the crop's blocks of a JPEG: the
paper's (a random square of side shorter*224/256, as resizing the shorter side to 256 and
cropping 224) and random-resized (8-100% of the area, aspect 3:4 to 4:3), each randomly flipped
and resized to the network's input. Used by the file pipelines (inputs/data.py) and the stream
over a prepared folder's shards (inputs/records.py); imports nothing else of the package.
"""

from __future__ import annotations

# TensorFlow loads on first use, inside the functions: importing this module stays light.


PAPER_RESIZE = 256 / 224  # the paper resizes to 256 and crops 224 (227 here)


def crop_window(shape, size: int, crop: str, seed):
    """(begin, extent) of one training crop, in the pixels of an image of `shape` (H, W, ...).

    paper: the paper resizes the shorter side to size*256/224 and takes a random size x size
    square; that is the square of side shorter*224/256 at a random place here, resized alone,
    which costs a fraction of resizing the whole image.
    random-resized: a random box of 8-100% of the area, aspect 3:4 to 4:3.
    `seed` is a stateless-random seed pair (one per image)."""
    import tensorflow as tf

    if crop == "paper":
        hw = tf.cast(shape[:2], tf.float32)
        side = tf.maximum(1.0, tf.floor(tf.reduce_min(hw) * size / round(size * PAPER_RESIZE)))
        begin = tf.floor(tf.random.stateless_uniform([2], seed) * (hw - side + 1.0))
        return tf.cast(begin, tf.int32), tf.cast(tf.stack([side, side]), tf.int32)
    begin, extent, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.concat([shape[:2], [3]], 0), bounding_boxes=tf.zeros([1, 0, 4]), seed=seed, area_range=(0.08, 1.0),
        aspect_ratio_range=(3 / 4, 4 / 3), max_attempts=10, use_image_if_no_bounding_boxes=True)
    return begin[:2], extent[:2]


def to_input(image, size: int, seed):
    # A random horizontal flip (of the small decoded crop: cheaper than of the float input), then
    # plain bilinear (no antialiasing filter) as the standard ImageNet training pipelines: a crop
    # is shrunk by about 1.5x at most for `paper`, and antialiasing would triple the cost.
    import tensorflow as tf

    image = tf.image.stateless_random_flip_left_right(image, tf.reverse(seed, [0]))
    return tf.image.resize(tf.cast(image, tf.float32), (size, size), method="bilinear")


def crop_image(image, size: int, crop: str, seed):
    """One training crop (crop_window) of a decoded HWC image, randomly flipped, as float32
    0..255 at size x size."""
    import tensorflow as tf

    begin, extent = crop_window(tf.shape(image), size, crop, seed)
    return to_input(tf.slice(image, tf.concat([begin, [0]], 0), tf.concat([extent, [-1]], 0)), size, seed)
