"""Where the app's files are: the bundled assets (the demo run, the sample data, the example
images) and the folders that runs and built datasets go to.

The one home of these paths: every other module reads them from here. Module attributes are
read at call time (`locations.SAMPLE_DIR`), so a test may point one elsewhere. No TensorFlow and
no imports from the rest of the package: any layer may import this module.
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent  # the folder that holds alexnet_core: the project folder in a checkout
# The app's own files (app.py, pages/, assets/, .streamlit/) sit beside alexnet_core in a checkout;
# an installed wheel keeps them in the package alexnet_explorer instead (pyproject.toml).
APP_DIR = ROOT / "alexnet_explorer" if (ROOT / "alexnet_explorer" / "app.py").is_file() else ROOT
APP = APP_DIR / "app.py"  # what `streamlit run` and `alexnet-explorer app` start
ASSETS = APP_DIR / "assets"
SAMPLE_DIR = ASSETS / "sample"  # the bundled sample data (SOURCE `sample`)
EXAMPLES_DIR = ASSETS / "examples"  # the Classify page's example photos
BUNDLED_DIR = ASSETS / "runs"  # read-only runs that ship with the app
DEMO_RUN = BUNDLED_DIR / "demo"  # the bundled demo model's run (MODEL `demo`)
CLAIMS_DIR_ENV = "ALEXNET_CLAIMS_DIR"  # another folder of the paper's claims' measured runs (a test's copy)
# The paper's claims measured here: runs/ (their metrics, configs and snapshots) and verdicts.json
CLAIMS_DIR = Path(os.environ.get(CLAIMS_DIR_ENV) or ASSETS / "claims").expanduser()

RUNS_DIR_ENV = "ALEXNET_RUNS_DIR"  # where runs go (default ./runs)
DATA_DIR_ENV = "ALEXNET_DATA_DIR"  # where datasets built in the app go (default ./data)
MODELS_DIR_ENV = "ALEXNET_MODELS_DIR"  # where installed ImageNet models and opened models go (default ./models)


def runs_root(path: str | os.PathLike | None = None) -> Path:
    """The runs folder: `path`, else $ALEXNET_RUNS_DIR, else ./runs (it may not exist yet)."""
    return Path(path or os.environ.get(RUNS_DIR_ENV) or "runs").expanduser()


def data_root() -> Path:
    """The folder of datasets built in the app: $ALEXNET_DATA_DIR, else ./data (absolute)."""
    return Path(os.environ.get(DATA_DIR_ENV) or "data").expanduser().resolve()


def models_root() -> Path:
    """The folder of installed models (the ImageNet weights, the user's own opened models):
    $ALEXNET_MODELS_DIR, else ./models (it may not exist yet)."""
    return Path(os.environ.get(MODELS_DIR_ENV) or "models").expanduser()
