"""Measured cost per layer: `profile` on the command line, in the library and on the Architecture page."""

import json
import re

import pytest

from alexnet_core.analysis.profile import split, summarise
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
    assert all(r["ms"] >= 0 for r in layers) and doc["total_ms"] > 0 and doc["rounds"] == 20
    for _ in range(2):  # a machine busy with other work may spoil a measurement, which then says so
        assert doc["adds_up"] == adds_up(doc), doc  # the document's verdict is its numbers'
        if doc["adds_up"]:
            break
        assert "not trustworthy" in doc["note"]
        doc = json.loads(profile_cli("compact", "--json").stdout)
    assert adds_up(doc) and doc["adds_up"], doc  # layers timed one by one add up to the whole network


def adds_up(doc) -> bool:
    whole = doc["total_ms"] - doc["overhead_ms"]
    return abs(sum(r["ms"] for r in doc["layers"]) - whole) <= doc["tolerance"] * whole


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
    doc = at.session_state["arch_profile_result"][1]
    if doc["adds_up"]:  # else a busy machine, which the next test covers
        assert any(f"the fastest of {doc['rounds']} rounds" in c.value for c in at.caption)
        layers = next(d.value for d in at.dataframe if "gflops" in d.value.columns)
        assert "conv1" in list(layers["name"]) and (layers["ms"] >= 0).all()
    assert "None" not in screen_text(at)


def screen_text(at) -> str:
    """Everything a page shows in words: texts, metrics and every table cell."""
    parts = [e.value for kind in ("markdown", "caption", "warning", "info", "error", "success") for e in at.get(kind)]
    parts += [f"{m.label} {m.value}" for m in at.metric]
    parts += [d.value.astype(str).to_csv() for d in at.dataframe]
    return "\n".join(parts)


def fake_profile(rounds_of_conv5):
    """profile() as a busy machine measures it: conv5's rounds given, the rest quiet."""
    def profile(variant, batch_size, progress=None, **_):
        for done in range(4):
            progress(done, 3, "Timing")
        layers = rows(("conv1", [0.0061] * 3), ("conv5", rounds_of_conv5))
        layers.append({"name": "relu5", "type": "ReLU", "group": "other", "macs": 0, "params": 0, "seconds": [0.0001] * 3})
        doc = summarise(layers, [0.0001] * 3, [0.0101, 0.03, 0.04], batch_size)
        return {"variant": variant, "device": "CPU: test", "batch_size": batch_size, "input_size": 32, **doc}
    return profile


@pytest.mark.parametrize("conv5, adds", [([0.011, 0.02, 0.03], False), ([0.0041, 0.02, 0.03], True)])
def test_measured_time_on_a_busy_machine_says_so_and_never_shows_none(monkeypatch, conv5, adds):
    from alexnet_core.analysis import profile

    monkeypatch.setattr(profile, "profile", fake_profile(conv5))
    at = run_page("pages/architecture.py")
    at.selectbox(key="arch_variant").select("compact").run()
    at.button(key="arch_profile").click().run()
    assert not at.exception, at.exception
    assert metric(at, "Forward pass") == "10.1 ms"
    warning = " ".join(w.value for w in at.warning)
    assert "machine was busy" in warning and "longer than" in warning
    tables = [d.value for d in at.dataframe if "gflops" in d.value.columns]
    if adds:  # the layers shown, a dash for relu5's GFLOP/s
        assert list(tables[0]["gflops"])[-1] == "—"
    else:  # refused, in words
        assert not tables and "per-layer times are not shown" in warning and "not trustworthy" in warning
    assert not re.search(r"\bNone\b|\bnan\b", screen_text(at))


def rows(*names):
    return [{"name": n, "type": "Conv2D", "group": "conv", "macs": 1000, "params": 10, "seconds": s}
            for n, s in names]


def test_a_quiet_measurement_adds_up_and_keeps_each_fastest_round():
    doc = summarise(rows(("conv1", [0.0061, 0.0065, 0.0062]), ("conv2", [0.0041, 0.0040, 0.0043])),
                    [0.0001] * 3, [0.0101, 0.0105, 0.0102], batch_size=2)
    assert [r["ms"] for r in doc["layers"]] == pytest.approx([6.0, 3.9])  # fastest round less the empty call
    assert doc["total_ms"] == pytest.approx(10.1) and doc["sum_ms"] == pytest.approx(9.9)
    assert doc["adds_up"] and not doc["busy"] and doc["note"] == "" and doc["rounds"] == 3
    assert doc["layers"][1]["gflops"] == pytest.approx(2 * 1000 * 2 / 0.0039 / 1e9)


def test_a_busy_measurement_that_does_not_add_up_says_so():
    """Under load a layer's rounds can all be slow while the whole network had one quiet round:
    the layers then add up to far more than the whole, and the document refuses them in words."""
    doc = summarise(rows(("conv1", [0.009, 0.012, 0.011]), ("conv5", [0.0081, 0.02, 0.03])),
                    [0.0001] * 3, [0.0101, 0.03, 0.04], batch_size=2)
    assert not doc["adds_up"] and doc["busy"] and doc["spread"] == pytest.approx(0.030 / 0.0101 - 1)
    assert "not trustworthy" in doc["note"] and "busy" in doc["note"] and "+69%" in doc["note"]
    quiet_but_off = summarise(rows(("conv1", [0.02] * 3)), [0.0001] * 3, [0.0101] * 3, batch_size=2)
    assert not quiet_but_off["adds_up"] and not quiet_but_off["busy"] and "busy" not in quiet_but_off["note"]


def test_a_busy_measurement_that_adds_up_warns_with_the_spread():
    doc = summarise(rows(("conv1", [0.006, 0.02, 0.02]), ("conv2", [0.004, 0.012, 0.02])),
                    [0.0001] * 3, [0.0101, 0.025, 0.03], batch_size=1)
    assert doc["adds_up"] and doc["busy"] and "148% longer" in doc["note"]
