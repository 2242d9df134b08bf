"""The map of what the network learned: fc7 features of an evaluation's images, PCA then t-SNE."""

import numpy as np
import pytest

from alexnet_core.analysis.embedding_map import _cache_path, build_map, features, is_cached, project, sample
from alexnet_core.store import fileio, layout


def test_sample_keeps_every_class_in_proportion():
    labels = np.repeat([0, 1, 2], [900, 90, 10])
    chosen = sample(labels, 100)
    assert len(chosen) == 100 and len(set(chosen)) == 100 and (np.diff(chosen) > 0).all()
    assert np.bincount(labels[chosen]).tolist() == [90, 9, 1]
    assert sample(labels, 100).tolist() == chosen.tolist()  # the same sample every time
    assert sample(labels[:50], 100).tolist() == list(range(50))
    assert len(sample(np.arange(30), 10)) == 10  # more classes than points


def test_project_separates_what_the_features_separate():
    rng = np.random.default_rng(0)
    feats = np.concatenate([rng.normal(0, 1, (40, 64)), rng.normal(8, 1, (40, 64))])
    xy = project(feats)
    assert xy.shape == (80, 2) and np.isfinite(xy).all()
    a, b = xy[:40], xy[40:]
    spread = max(a.std(axis=0).max(), b.std(axis=0).max())
    assert np.linalg.norm(a.mean(axis=0) - b.mean(axis=0)) > 3 * spread  # two islands
    assert project(feats[:2]).shape == (2, 2)


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    from alexnet_core.analysis.evaluation import evaluate
    from alexnet_core.predict.inference import load_model
    from tests.helpers import make_image_folder

    tmp = tmp_path_factory.mktemp("map")
    folder = make_image_folder(tmp / "data", classes=3, per_class=14, size=(40, 30))
    loaded = load_model("demo")
    # The demo knows CIFAR-10's classes: name the folders after three of them.
    for old, new in zip(sorted(p for p in folder.iterdir()), ("cat", "dog", "ship")):
        old.rename(folder / new)
    return loaded, evaluate(loaded, str(folder), "all", use_cache=False)


def test_features_are_fc7_of_the_images_as_evaluated(evaluated):
    from alexnet_core.analysis.explain import _tap, embedding_layer

    loaded, result = evaluated
    indices = np.array([0, 5, 17, 41])
    feats, thumbs = features(loaded, result, indices)
    assert feats.shape == (4, loaded.model.get_layer("fc7").units) and len(thumbs) == 4
    assert all(t.startswith("data:image/jpeg;base64,") for t in thumbs)
    tap = _tap(loaded.model, embedding_layer(loaded.model))
    direct = np.asarray(tap(np.stack([loaded.preprocess(im) for im in result.images(indices)]), training=False))
    np.testing.assert_allclose(feats, direct, rtol=1e-3, atol=1e-3)


def test_map_is_cached_and_a_damaged_cache_is_made_again(evaluated, tmp_path, monkeypatch):
    monkeypatch.setenv("ALEXNET_RUNS_DIR", str(tmp_path))  # the bundled run is read-only: caches go here
    loaded, result = evaluated
    assert not is_cached(loaded, result)
    first = build_map(loaded, result)
    assert first.xy.shape == (result.n, 2) and first.total == result.n and is_cached(loaded, result)
    again = build_map(loaded, result)
    np.testing.assert_array_equal(again.xy, first.xy)
    path = _cache_path(loaded, result, first.indices)
    assert path.parent == tmp_path / ".cache" / "eval" and not layout.is_read_only(tmp_path)
    path.write_bytes(b"PK\x03\x04 damaged")
    remade = build_map(loaded, result)
    np.testing.assert_allclose(remade.xy, first.xy, atol=1e-3)  # same seed, same map
    assert fileio.load_npz(path, ("xy", "thumbnails")) is not None  # and the cache is whole again


def test_a_damaged_evaluation_cache_is_evaluated_again(evaluated, tmp_path, monkeypatch):
    from alexnet_core.analysis.evaluation import evaluate
    from alexnet_core.store import cache

    monkeypatch.setenv("ALEXNET_RUNS_DIR", str(tmp_path))
    loaded, result = evaluated
    folder = result.source
    first = evaluate(loaded, folder, "all")
    (cached,) = cache.folder(loaded.run_dir).glob("*.npz")
    assert cached.parent == tmp_path / ".cache" / "eval"  # the bundled run is read-only
    assert "evaluated again" not in evaluate(loaded, folder, "all").note  # read back as it was saved
    cached.write_bytes(b"PK\x03\x04 damaged")  # a zip header, then garbage: np.load raises BadZipFile
    again = evaluate(loaded, folder, "all")
    np.testing.assert_allclose(again.probs, first.probs, atol=1e-6)
    assert f"The saved evaluation ({cached.name}) was damaged" in again.note
    assert fileio.load_npz(cached, ("probs", "kept")) is not None  # and the cache is whole again
