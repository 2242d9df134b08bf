"""The app's words for someone who is not an engineer: one plain-English line per term a page shows
(MACs, fc7, t-SNE, bf16, top-5...), for tooltips (`help(term)`) and the Glossary page.

One home for every definition, so a term reads the same wherever it appears. A term not here is a
KeyError, not an empty tooltip: a test finds the page that asks for it.
"""

from __future__ import annotations

# term: its one line. Keys are the term as a page writes it; lookups ignore case and the
# spellings in ALIASES.
TERMS: dict[str, str] = {
    # The network
    "AlexNet": "The image-recognition network by Krizhevsky, Sutskever and Hinton that won the ImageNet "
               "competition in 2012 and started the deep-learning era.",
    "layer": "One stage of the network: it takes the numbers the previous stage produced and computes new ones.",
    "parameters": "The numbers a network learns during training (its weights); more parameters means "
                  "a bigger model file and more to learn.",
    "MACs": "Multiply-accumulate operations: the multiplications (each added to a running sum) one image "
            "costs to go through a layer; a measure of compute, independent of the machine.",
    "conv": "A convolution layer: small filters slide over the image and each answers how strongly "
            "its pattern (an edge, a colour, a texture) appears at every place.",
    "filter": "One small learned pattern a convolution layer looks for everywhere in the image; conv1's "
              "filters can be shown as tiny pictures.",
    "feature map": "What one filter produces: a grid saying how strongly its pattern appears at each place.",
    "pooling": "A layer that shrinks a feature map by keeping the strongest answer of each small window, "
               "so later layers see more of the image at once.",
    "overlapping pooling": "Pooling windows that overlap (3x3 windows moved by 2, as in the paper) "
                           "instead of tiling (2x2 moved by 2); the paper found it overfits slightly less.",
    "ReLU": "Rectified linear unit: keeps positive numbers and turns negative ones into zero; "
            "it lets deep networks train much faster than the older tanh.",
    "tanh": "An older activation that squashes numbers into -1..1; it saturates, which slows training "
            "(the paper's Figure 1 compares it with ReLU).",
    "activation": "The function each layer applies to its outputs (ReLU or tanh here), and the numbers that come out.",
    "LRN": "Local response normalisation: each value is damped by its neighbours in nearby feature maps, "
           "as in the paper; later networks replaced it with batch normalisation.",
    "BatchNorm": "Batch normalisation: rescales each layer's outputs to a steady range during training; "
                 "a later idea than AlexNet that usually trains faster.",
    "groups": "The paper's split of some layers into two halves, one per GPU, each seeing only half "
              "of the previous layer's maps.",
    "dropout": "During training, randomly switch off half of a layer's outputs at each step so the "
               "network cannot rely on any single one; reduces overfitting.",
    "fc6": "The first fully connected layer (4,096 units in the paper): every value of the last "
           "feature maps feeds every unit.",
    "fc7": "The second fully connected layer: its 4,096 numbers are the network's summary of the "
           "image, used to find similar images.",
    "fc8": "The last layer: one score per class, turned into probabilities by softmax.",
    "fully connected": "A layer in which every input is connected to every output (fc6, fc7, fc8).",
    "softmax": "Turns the last layer's scores into probabilities that add up to 100%.",
    "receptive field": "How many pixels of the input image one value of a layer can see; it grows "
                       "layer after layer.",
    "stride": "How far a filter or pooling window moves between two positions; a stride of 2 halves the size.",
    "output shape": "The size of what a layer produces: height x width x number of feature maps.",
    "width": "A multiplier on the number of filters and units of every layer: 0.5 is half the network.",
    "variant": "One version of AlexNet: the paper's own, torchvision's, or smaller ones sized for a CPU.",
    # Training
    "training": "Showing the network labelled images over and over and nudging its parameters so "
                "its answers get better.",
    "epoch": "One pass of training over every training image.",
    "step": "One update of the network's parameters, from one batch of images.",
    "batch": "The group of images the network sees at once before one update; the paper used 128.",
    "batch size": "How many images go into one batch.",
    "learning rate": "How big a nudge each training step gives the parameters; too big and training "
                     "blows up, too small and it crawls.",
    "schedule": "How the learning rate changes during training (for example divided by 10 when "
                "progress stalls, as in the paper).",
    "optimizer": "The rule that turns each batch's errors into parameter changes (SGD with momentum in the paper).",
    "momentum": "Part of the optimizer: each update keeps some of the previous one's direction, which "
                "smooths training.",
    "weight decay": "A small pull of every parameter towards zero at each step, which keeps the model "
                    "simpler and reduces overfitting.",
    "loss": "The number training minimises: how wrong the network's probabilities are on the images it "
            "saw (lower is better).",
    "label smoothing": "Training towards slightly less than 100% for the right class (the rest spread "
                       "over the others), so the model is less overconfident.",
    "augmentation": "Random changes to training images (crops, mirror images, colour shifts) so the "
                    "network sees more variety and memorises less.",
    "PCA lighting": "The paper's colour augmentation: random shifts of an image's colours along the "
                    "main colour directions of the training images (found by PCA).",
    "overfitting": "When a model learns its training images by heart and does worse on new ones.",
    "fine-tuning": "Starting from a network already trained on other images and training it a little "
                   "more on yours; needs far fewer images and minutes instead of hours.",
    "from scratch": "Training a network that starts from random parameters.",
    "checkpoint": "A saved copy of the model during training, so a run can resume after a stop.",
    "recipe": "A named set of training settings ready to use (quick, demo, paper...).",
    "mixed precision": "Computing with 16-bit numbers where it is safe and 32-bit where it matters: "
                       "faster on modern GPUs, nearly the same results.",
    "bf16": "bfloat16, a 16-bit number format with float32's range but fewer digits; used for mixed "
            "precision on modern hardware.",
    "float32": "The usual 32-bit number format for a network's computations; the precision every "
               "saved model is evaluated in here.",
    "seed": "The starting number of the random choices (initial weights, order of images); the same "
            "seed repeats a run.",
    "queue": "Runs waiting their turn: each starts when the one before it has finished.",
    "images/s": "Throughput: how many images the machine processes per second.",
    # Data and measurement
    "dataset": "A collection of labelled images, one folder per class.",
    "class": "One of the categories the model can answer (airplane, cat, ...).",
    "validation split": "Images set aside from training and used only to measure the model, so the "
                        "score says how it does on images it never learned from.",
    "test split": "Images kept apart from both training and validation, measured once at the end.",
    "training split": "The images the model learns from.",
    "held-out": "Not used for training: validation or test images.",
    "accuracy": "The share of images whose top answer is the right class.",
    "top-1": "Accuracy counting only the model's first answer.",
    "top-5": "Accuracy counting an image as right when the true class is among the model's five best "
             "answers; the ImageNet competition's main measure.",
    "percentage points": "The difference between two percentages: 80% against 75% is 5 points "
                         "(not 5%, which would be 3.75).",
    "headline accuracy": "The one accuracy each model is quoted by, with the images, views and "
                         "precision it was measured with.",
    "in-training validation": "The accuracy measured on the validation images at the end of each epoch "
                              "during training, with the run's own precision and that epoch's weights.",
    "flip averaging": "Averaging each prediction with the prediction for the mirror image, which usually "
                      "adds a little accuracy.",
    "single view": "Each image judged once, as it is, with no mirror image averaged in.",
    "centre crop": "Resizing the photo so its shorter side fits and cutting the middle square, as "
                   "the network was trained.",
    "confusion matrix": "A table of true classes (rows) against predicted classes (columns): the "
                        "diagonal is right, everything else shows which classes get mixed up.",
    "probability": "How sure the model is of a class, from 0% to 100%.",
    "probe images": "A fixed handful of validation images whose answers are tracked epoch by epoch.",
    "calibration": "Measuring, on images of the model's classes, how far new images may be from them "
                   "before the app says an image looks like none of the classes.",
    "ImageNet": "The 1.2-million-photo, 1,000-class dataset of the 2012 competition that AlexNet won.",
    "CIFAR-10": "A small dataset of 60,000 tiny (32x32) photos in 10 classes, quick to train on.",
    # Explanations and maps
    "Grad-CAM": "A heat map of where in the image the network looked to decide on a class: red most, blue least.",
    "t-SNE": "A method that lays many images out on a flat map so that images the network sees as "
             "similar land close together.",
    "PCA": "Principal component analysis: finds the few directions along which the data varies most; "
           "used here to flatten the network's numbers before mapping them.",
    "embedding": "The list of numbers (fc7 here) the network turns an image into; similar images get similar lists.",
    "nearest neighbours": "The training images whose fc7 numbers are closest to an image's: what the network finds most similar.",
    # Hardware and speed
    "GPU": "A graphics processor: does the network's arithmetic many times faster than a CPU.",
    "CPU": "The computer's main processor; works everywhere, trains slowly.",
    "GFLOP/s": "Billions of arithmetic operations per second: how fast the machine actually computed "
               "(each MAC counts as 2).",
    "forward pass": "Running images through the network once to get its answers (no learning).",
    "latency": "How long one answer takes.",
    "spread": "How much repeated timings of the same thing differ; a wide spread means the machine was busy.",
    "SavedModel": "TensorFlow's format for serving a model from other programs.",
    # Models from elsewhere
    "ONNX": "Open Neural Network Exchange: a file format for networks that many tools read; one of "
            "the published AlexNets comes in it.",
    "checksum": "A fingerprint of a file's bytes: if it matches the one its publisher gives, the file "
                "is exactly the published one, undamaged.",
    "preprocessing": "How images were turned into numbers before training (the size, and how pixel "
                     "values were scaled); a model gives wrong answers when fed images scaled another way.",
    # Questioning the paper
    "arm": "One side of an experiment: runs that share every setting except the one switch being tested.",
    "error rate": "The share of images a model gets wrong: 100% minus its accuracy.",
    "standard error": "How far an average of a few runs may be from what many runs would give; two "
                      "standard errors is the noise bar a difference must clear.",
    "within noise": "The difference between the arms is smaller than the noise bar (two standard errors), "
                    "so these runs cannot tell the arms apart.",
    "verdict": "What the runs here say of a claim: agrees, disagrees, or within noise, measured, never rounded.",
    "TensorFlow Lite": "A compact model format for phones and small devices.",
}

# Other spellings a page may use, to the key above.
ALIASES: dict[str, str] = {
    "mac": "MACs", "multiply-accumulates": "MACs", "params": "parameters", "weights": "parameters",
    "convolution": "conv", "filters": "filter", "max pooling": "pooling", "pool": "pooling",
    "local response normalization": "LRN", "local response normalisation": "LRN",
    "batch normalization": "BatchNorm", "batchnorm": "BatchNorm", "two-gpu groups": "groups",
    "epochs": "epoch", "steps": "step", "batches": "batch", "lr": "learning rate",
    "validation": "validation split", "val": "validation split", "validation accuracy": "accuracy",
    "top1": "top-1", "top5": "top-5", "top-5 accuracy": "top-5", "points": "percentage points",
    "mixed_bfloat16": "bf16", "bfloat16": "bf16", "mixed_float16": "mixed precision", "fp32": "float32",
    "gradcam": "Grad-CAM", "tsne": "t-SNE", "gflops": "GFLOP/s", "fine-tune": "fine-tuning",
    "finetune": "fine-tuning", "augment": "augmentation", "lighting": "PCA lighting",
    "cifar10": "CIFAR-10", "flip": "flip averaging", "headline": "headline accuracy",
    "receptive fields": "receptive field", "neighbours": "nearest neighbours",
    "arms": "arm", "error": "error rate", "se": "standard error", "noise": "within noise",
    "scaling": "preprocessing",
}

_KEYS = {key.lower(): key for key in TERMS} | {alias.lower(): key for alias, key in ALIASES.items()}


def term(name: str) -> str:
    """The glossary's own spelling of `name` (any case, or an alias); KeyError for a term it lacks."""
    try:
        return _KEYS[name.strip().lower()]
    except KeyError:
        raise KeyError(f"{name!r} is not in the glossary (alexnet_ui/glossary.py)") from None


def help(name: str) -> str:  # noqa: A001 - the name the pages read: help=glossary.help("MACs")
    """The one-line definition of `name`, for a widget's `help=` tooltip."""
    return TERMS[term(name)]


def helps(*names: str) -> str:
    """Several definitions in one tooltip, each as 'term: line' on its own paragraph."""
    return "\n\n".join(f"**{term(n)}**: {help(n)}" for n in names)


def search(query: str = "") -> dict[str, str]:
    """{term: line} of the terms whose name, other spellings or definition hold `query` (any case),
    in alphabetical order; every term for an empty query."""
    needle = query.strip().lower()
    spelled = {key: [a for a, k in ALIASES.items() if k == key] for key in TERMS}
    return {key: TERMS[key] for key in sorted(TERMS, key=str.lower)
            if not needle or needle in key.lower() or needle in TERMS[key].lower()
            or any(needle in a.lower() for a in spelled[key])}
