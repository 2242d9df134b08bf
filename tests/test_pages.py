"""AppTest per page: run the script, set widgets, assert on elements and no exception."""

from pathlib import Path

from streamlit.testing.v1 import AppTest

TIMEOUT = 120
ROOT = Path(__file__).resolve().parent.parent


def run_page(path):
    """Run `path` as app.py's navigation runs it (so page links resolve)."""
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT)
    if path != "app.py":
        at.switch_page(path)
    at.run()
    assert not at.exception, at.exception
    return at


def metric(at, label):
    return next(m.value for m in at.metric if m.label == label)


def test_app_navigation_runs_home():
    at = run_page("app.py")
    assert at.title[0].value == "AlexNet Explorer"


def test_home_shows_device_and_links():
    at = run_page("pages/home.py")
    assert metric(at, "Device") in ("CPU", "GPU")
    links = at.get("page_link")
    assert any("Architecture" in link.proto.label for link in links)


def test_architecture_defaults_reproduce_the_paper():
    at = run_page("pages/architecture.py")
    assert metric(at, "Parameters") == "60,965,224"
    assert metric(at, "MACs per image") == "724.4 M"
    assert "60,965,224 ✓" in at.success[0].value and "724,406,816 ✓" in at.success[0].value
    assert not at.error


def test_architecture_switch_variant_and_settings():
    at = run_page("pages/architecture.py")
    at.selectbox(key="arch_variant").select("two-tower").run()
    assert not at.exception
    assert metric(at, "Parameters") == "56,910,602"
    at.toggle(key="arch_two-tower_groups").set_value(False).run()
    assert metric(at, "Parameters") != "56,910,602"
    assert not at.success  # switches off the defaults: no claim of reproducing the publication


def test_architecture_impossible_setting_shows_message():
    at = run_page("pages/architecture.py")
    at.number_input(key="arch_paper_size").set_value(32).run()
    assert not at.exception
    assert "input_size must be >= 67 for 'paper', got 32" in at.error[0].value
    at.number_input(key="arch_paper_size").set_value(227)
    at.number_input(key="arch_paper_classes").set_value(0).run()
    assert "num_classes must be >= 2, got 0" in at.error[0].value


def test_architecture_compare():
    at = run_page("pages/architecture.py")
    assert at.selectbox(key="arch_variant_b").value == "paper-ungrouped"
    assert metric(at, "Parameters (B)") == "62,378,344"
    table = at.dataframe[-1].value
    assert set(table["name"]) == {"conv2", "conv4", "conv5"}
    assert set(table["status"]) == {"changed"}
