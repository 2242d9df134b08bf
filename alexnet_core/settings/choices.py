"""The choices of evaluating and classifying that the command line and the pages both offer.

No TensorFlow, so the command line can build its flags without loading a model's code.
"""

# The split of a data source to evaluate on ("all": every split together). The pages add "auto",
# the command line's default: test if the data has one, else val.
EVAL_SPLITS = ("test", "val", "train", "all")
AUTO_SPLIT = "auto"

# How a photo of any shape becomes the network's square input.
FRAMINGS = {
    "crop": "Centre crop: the largest centred square, as the model saw its training images",
    "fit": "Whole image: all of it, fitted into the square, the border filled with its mean colour",
}
DEFAULT_FRAMING = "crop"


def framing_name(framing: str) -> str:
    """A framing in two words: "Centre crop", "Whole image"."""
    return FRAMINGS[framing].split(":", 1)[0]
