"""One home for every setting: the `train` flags, the Train page's form and the run record are
written from TrainConfig's own field descriptions (settings.config), so none can miss a setting,
and Clone settings fills exactly the widgets the Train page's form reads."""

import dataclasses
import json

import pytest

from alexnet_core import locations
from alexnet_core.cli import _train_config, build_parser
from alexnet_core.settings.config import TrainConfig, each_setting
from alexnet_core.settings.recipes import RECIPES
from alexnet_core.store import catalog, layout
from alexnet_ui.train_form import FORM, TrainForm

# A run's settings with every setting away from its default (the network's included), except a
# base model to fine-tune from: the command line loads that model before it returns a config.
EVERY_FLAG = dict(variant="compact-hires", data="/photos/cats", input_size=24, epochs=3, batch_size=24, optimizer="adamw",
                  learning_rate=0.002, weight_decay=0.01, schedule="step", warmup_epochs=1.5, label_smoothing=0.1,
                  augment="cifar", val_split=0.2, seed=7, mixed_precision="off", jit=True, steps_per_epoch=5,
                  log_every=3, cache_budget_mb=512, recipe="quick", snapshots=False, data_service="10.0.0.5:5050",
                  train_per_class=50,
                  switches={"norm": "batchnorm", "groups": True, "overlapping_pool": False, "dropout": 0.25,
                            "width": 0.5, "activation": "tanh", "remove_conv": 3})
# ... and a run's settings as the Train page can make them: every setting on the form away from
# its default, the ones it does not offer at theirs.
EVERY_WIDGET = dict(variant="cifar-bn", data="/photos/pets", epochs=4, batch_size=32, optimizer="adam",
                    learning_rate=0.003, weight_decay=0.02, schedule="plateau", warmup_epochs=0.5,
                    label_smoothing=0.05, augment="keras-seed", val_split=0.25, seed=3, mixed_precision="bf16",
                    recipe="keras-seed", init_from="demo", freeze_features=True,
                    switches={"norm": "none", "dropout": 0.3, "width": 0.75, "activation": "tanh", "remove_conv": 2})


def leaves():
    """(path, Setting) of every setting a user gives: the fields, the switches for `switches`."""
    return list(each_setting().items())


def train_parser():
    return build_parser()._subparsers._group_actions[0].choices["train"]


def value_of(config: TrainConfig, path: str):
    name, _, switch = path.partition(".")
    return getattr(config, name).get(switch) if switch else getattr(config, name)


def argv_for(config: TrainConfig) -> list[str]:
    """The `train` arguments of `config`, written from its settings' descriptions alone."""
    argv = []
    for path, s in leaves():
        value = value_of(config, path)
        if value is None:
            continue
        if s.action == "on":
            argv += [s.cli_flag] if value else []
        elif s.action == "on-off":
            argv.append(s.cli_flag if value else s.cli_flag.replace("--", "--no-", 1))
        elif s.action == "off":
            argv += [] if value else [s.cli_flag]
        else:
            argv += [s.cli_flag, str(value)]
    return argv


def test_every_setting_has_a_train_flag_in_the_real_parser():
    flags = {option: action.dest for action in train_parser()._actions for option in action.option_strings}
    for path, s in leaves():
        assert flags.get(s.cli_flag) == s.name, f"{path}: no {s.cli_flag} flag on `train`"
    network = {option for command in ("summary", "profile")
               for action in build_parser()._subparsers._group_actions[0].choices[command]._actions
               for option in action.option_strings}
    assert {s.cli_flag for s in each_setting().values() if s.network} <= network
    assert {f.name for f in dataclasses.fields(TrainConfig)} == {path.split(".")[0] for path, _ in leaves()}


def test_every_setting_is_on_the_form_or_says_why_not():
    keys = [s.key for _, s in leaves() if s.key]
    assert len(keys) == len(set(keys)), keys
    for path, s in leaves():
        assert bool(s.key) != bool(s.cli_only), f"{path}: a widget key, or why the Train page leaves it out"
        if s.key:
            assert s.label and s.widget, path
            assert s.key in TrainForm.keys(), path
    assert TrainForm.keys() == {s.key for _, s in leaves() if s.key} | {TrainForm.FOLDER}


def test_command_line_flags_round_trip_to_the_same_config():
    config = TrainConfig(**EVERY_FLAG)
    defaults = TrainConfig()
    untried = {path for path, _ in leaves() if value_of(config, path) == value_of(defaults, path)}
    assert untried == {"init_from", "freeze_features"}, untried  # every other flag is exercised
    args = train_parser().parse_args(argv_for(config))
    assert _train_config(args) == config
    args = train_parser().parse_args(["--init-from", "demo", "--freeze-features"])
    assert (args.init_from, args.freeze_features) == ("demo", True)
    without = train_parser().parse_args(argv_for(dataclasses.replace(config, recipe=None)))
    assert _train_config(without) == dataclasses.replace(config, recipe=None)


def test_form_values_round_trip_to_the_same_config():
    config = TrainConfig(**EVERY_WIDGET)
    defaults = TrainConfig()
    for path in FORM:
        assert value_of(config, path) != value_of(defaults, path) or path.startswith("switches."), path
    state = {**TrainForm.values(dataclasses.asdict(config)), **TrainForm.data_values(config.data),
             TrainForm.RECIPE: config.recipe}
    assert set(state) == TrainForm.keys()
    assert (state[TrainForm.DATA], state[TrainForm.FOLDER]) == ("folder", "/photos/pets")
    form = TrainForm(state)
    assert form.config(state[TrainForm.FOLDER], RECIPES[state[TrainForm.RECIPE]]) == config
    assert form.changed_from(RECIPES["keras-seed"])  # the recipe's and the form's differ ...
    assert not TrainForm(TrainForm.values(RECIPES["quick"].settings)).changed_from(RECIPES["quick"])  # ... or not


def test_the_run_record_schema_covers_every_field(tmp_path):
    for f in dataclasses.fields(TrainConfig):
        assert f.name in layout.CONFIG_SCHEMA, f.name
    record = dataclasses.asdict(TrainConfig(**EVERY_FLAG))
    path = tmp_path / layout.CONFIG
    path.write_text(json.dumps(record))
    assert layout.read_checked(path, layout.CONFIG_SCHEMA) == (record, [])
    path.write_text(json.dumps({**record, "learning_rate": "fast", "jit": 1}))
    assert layout.read_checked(path, layout.CONFIG_SCHEMA)[1] == [
        'config.json: learning_rate is "fast", expected a number', "config.json: jit is 1, expected true/false"]


def widgets_in(block) -> dict:
    """{key: value} of the widgets with a key inside an AppTest block (buttons act, they hold no value)."""
    found = {}
    for child in getattr(block, "children", {}).values():
        key = getattr(child, "key", None)
        if key and hasattr(child, "value") and getattr(child, "type", "") != "button":
            found[key] = child.value
        found.update(widgets_in(child))
    return found


@pytest.mark.parametrize("data", ["/photos/pets", "sample"])
def test_clone_writes_exactly_what_the_train_page_form_reads(data):
    from streamlit.testing.v1 import AppTest

    from tests.test_pages import ROOT, TIMEOUT

    settings = {**dataclasses.asdict(TrainConfig(**{**EVERY_WIDGET, "data": data})), "recipe": "quick"}
    catalog.create_run(locations.runs_root(), "cloned-a", settings)
    written = {}
    TrainForm(written).clone(layout.read_config(locations.runs_root() / "cloned-a"), "cloned-a")

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT)
    at.switch_page("pages/runs.py")
    at.query_params["run"] = "cloned-a"
    at.run()
    at.button(key="clone_cloned-a").click().run()  # the Runs page's Clone: on to the Train page
    assert not at.exception, at.exception
    assert [t.value for t in at.title] == ["Train"]
    assert any("Settings and data of cloned" in s.value for s in at.success)  # TrainForm.CLONED, read once
    (form,) = [e for e in at.expander if e.label == "Start a new run"]
    shown = widgets_in(form)
    assert set(shown) == set(written) - {TrainForm.OPEN, TrainForm.CLONED}
    assert shown == {k: v for k, v in written.items() if k in shown}
    assert at.session_state[TrainForm.OPEN] is True
    expected = TrainConfig(**{**EVERY_WIDGET, "data": data, "recipe": "quick"})
    source = shown[TrainForm.FOLDER] if shown[TrainForm.DATA] == "folder" else shown[TrainForm.DATA]
    assert TrainForm(at.session_state).config(source, RECIPES["quick"]) == expected


def test_a_clone_of_the_bundled_run_trains_on_cifar10_here_not_on_a_path_of_another_machine(tmp_path):
    demo = {**layout.read_config(locations.DEMO_RUN), "data": str(tmp_path / "elsewhere" / "cifar10" / "train")}
    assert TrainForm.cloned_data(demo) == "cifar10"  # CIFAR-10's classes, in a folder this machine lacks
    assert TrainForm.cloned_data({**demo, "class_names": ["cat", "dog"]}) == demo["data"]  # kept: Start says so
    assert TrainForm.cloned_data({**demo, "data": str(tmp_path)}) == str(tmp_path)  # here: used as it is
    assert TrainForm.cloned_data({"data": None}) == "sample"


def test_home_opens_on_the_headline_and_tours_every_page():
    """Home: what the app does and the bundled model's one figure before the device, and a tour
    card for every page app.py declares (but Home itself)."""
    import re
    from pathlib import Path

    from alexnet_core.locations import DEMO_RUN
    from alexnet_core.store import catalog
    from tests.test_pages import run_page

    at = run_page("pages/home.py")
    words = catalog.headline_words(catalog.headline_accuracy(DEMO_RUN))
    labels = [m.label for m in at.metric]
    assert labels[0] == words["label"] and at.metric[0].value == words["value"] and "Device" in labels[1:]
    assert any("The bundled model" in m.value and words["value"] in m.value.replace("\\", "") for m in at.markdown)
    pages = set(re.findall(r'st\.Page\("(pages/[a-z_]+\.py)"', (Path(__file__).parents[1] / "app.py").read_text()))
    toured = {link.proto.page for link in at.get("page_link")}
    assert pages - {"pages/home.py"} and {Path(p).stem for p in pages - {"pages/home.py"}} <= toured, toured
