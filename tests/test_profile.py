"""Measured cost per layer: `profile` on the command line, in the library and on the Architecture page."""

import json

import pytest

from alexnet_core.analysis.profile import split
from tests import helpers
from tests.test_pages import metric, run_page


def profile_cli(*args):
    result = helpers.cli("profile", *args, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_profile_compact_json_times_every_layer_and_adds_up():
    """The issue's acceptance check, with the command's defaults (batch 32, 20 timed calls)."""
    doc = json.loads(profile_cli("compact", "--json").stdout)
    assert {"variant", "device", "batch_size", "total_ms", "layers"} <= set(doc)
    assert doc["variant"] == "compact" and doc["batch_size"] == 32
    layers = doc["layers"]
    assert len(layers) >= 8 and all({"name", "macs", "params", "ms"} <= set(r) for r in layers)
    summary = json.loads(helpers.cli("summary", "compact", "--json", timeout=120).stdout)
    counted = {r["name"]: r["macs"] for r in summary["layers"]}
    assert all(r["macs"] == counted[r["name"]] for r in layers)  # the same MACs as the layer table
    assert [r["name"] for r in layers] == [r["name"] for r in summary["layers"]][1:]  # every layer but the input
    assert all(r["ms"] >= 0 for r in layers) and doc["total_ms"] > 0
    for _ in range(2):  # timings from a machine busy with other work may disagree: measure again
        if abs(sum(r["ms"] for r in doc["layers"]) - doc["total_ms"]) <= 0.35 * doc["total_ms"]:
            break
        doc = json.loads(profile_cli("compact", "--json").stdout)
    assert abs(sum(r["ms"] for r in doc["layers"]) - doc["total_ms"]) <= 0.35 * doc["total_ms"]


def test_profile_table_on_the_command_line_names_the_split():
    out = profile_cli("compact", "--width", "0.25", "--batch-size", "2", "--repeats", "2").stdout
    assert "ms per forward pass" in out and "conv1" in out and "of the arithmetic" in out


def test_bad_profile_flags_are_usage_errors():
    result = helpers.cli("profile", "compact", "--batch-size", "0", timeout=120)
    assert result.returncode == 2 and "--batch-size must be 1..4096" in result.stderr


def test_split_shares():
    rows = [{"group": "conv", "macs": 90, "ms": 2.0}, {"group": "dense", "macs": 10, "ms": 1.0},
            {"group": "lrn", "macs": 0, "ms": 1.0}]
    groups = split(rows)
    assert groups["conv"]["macs_share"] == pytest.approx(0.9) and groups["conv"]["time_share"] == pytest.approx(0.5)
    assert groups["lrn"]["macs_share"] == 0 and groups["lrn"]["time_share"] == pytest.approx(0.25)
    assert "other" not in groups


def test_architecture_page_measures_time_per_layer():
    at = run_page("pages/architecture.py")
    at.selectbox(key="arch_variant").select("compact").run()
    at.selectbox(key="arch_profile_batch").select(1).run()
    at.button(key="arch_profile").click().run()
    assert not at.exception, at.exception
    assert metric(at, "Forward pass").endswith(" ms")
    assert any("median of 10 runs" in c.value for c in at.caption)
    layers = next(d.value for d in at.dataframe if "gflops" in d.value.columns)
    assert "conv1" in list(layers["name"]) and (layers["ms"] >= 0).all()
