import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "-1") if os.environ.get("ALEXNET_TEST_GPU") is None else None

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _isolated_runs_dir(tmp_path, monkeypatch):
    """No test reads or writes the user's ./runs, ./data or ./models."""
    monkeypatch.setenv("ALEXNET_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("ALEXNET_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("ALEXNET_MODELS_DIR", str(tmp_path / "models"))


@pytest.fixture(autouse=True, scope="session")
def _custom_layers_registered():
    """Tests load saved models with keras.models.load_model directly, as a user would after
    `import alexnet_core.models.layers` (which registers the project's layers)."""
    from alexnet_core.models import layers  # noqa: F401
