"""The Train page's "Start a new run" form, drawn from the settings' own descriptions.

Every widget of the form is a setting of settings.config (its label, key, kind of widget, range,
choices and column come from its `Setting`), so the form, the command line and the run record
cannot drift apart. TrainForm owns the form's session-state keys: the recipe picker, and Clone
settings on the Train and Runs pages, fill them through it, and it reads them back as a TrainConfig.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import streamlit as st

from alexnet_core.inputs import data as sources
from alexnet_core.models.variants import CPU_FRIENDLY
from alexnet_core.settings.config import SETTINGS, ConfigError, Setting, TrainConfig, each_setting
from alexnet_core.settings.recipes import RECIPES, Recipe
from alexnet_core.train.finetune import imagenet_bases
from alexnet_ui.loaders import data_choices, device_info, model_choices, prepared_description
from alexnet_ui.text import cpu_friendly_variants, plain

# The form's first recipe, by the data it opens on: CIFAR-10 when it is on this machine, else the
# bundled sample, whose 2,000 images need a run that starts from the bundled model's features.
FIRST_RECIPE = {"cifar10": "quick", "sample": "sample"}
DEFAULT_RECIPE = "quick"  # the first recipe on any other data
CUSTOM = "custom"  # the recipe picker's "your own settings"
CIFAR10_CACHE = "~/.keras/datasets/cifar-10-batches-py"  # where Keras keeps CIFAR-10 ($KERAS_HOME/datasets/...)
PARTS = ("top", "main", "more", "start")  # the form's parts (Setting.place), top to bottom

# The settings the form shows with a widget of their own, in field order (the recipe picker and
# the data have theirs, drawn by TrainForm).
FORM: dict[str, Setting] = {path: s for path, s in each_setting().items() if s.key and s.widget not in
                            ("recipe", "data")}


def _value(config: TrainConfig, path: str):
    """A setting's value in `config` ("switches.width": a switch; None if not set)."""
    name, _, switch = path.partition(".")
    value = getattr(config, name)
    return value.get(switch) if switch else value


def recipe_label(name: str) -> str:
    if name == CUSTOM:
        return "Custom: your own settings"
    recipe = RECIPES[name]
    return f"{recipe.title} ({name}): {recipe.settings['variant']}, {recipe.settings['epochs']} epochs"


@st.cache_data(show_spinner="Checking whether CIFAR-10 can be downloaded...", ttl=60)
def cifar10_can_download() -> bool:
    return sources.cifar10_reachable()


@dataclass
class NewRun:
    """What the form asks for, and what the page says about it before Start."""

    config: TrainConfig
    recipe: Recipe | None
    changed: list[str]  # the settings that differ from the recipe's, as "epochs 4 → 10"
    download: bool  # CIFAR-10 is not on this machine yet: the run downloads it
    blocked: bool  # ... and cannot, from here: Start stays disabled


class TrainForm:
    """The form's values in `state` (st.session_state unless given): one key per setting on the
    form (Setting.key), the recipe's and the data's, and what the page says once (CLONED, PROBLEM)."""

    RECIPE = SETTINGS["recipe"].key
    DATA = SETTINGS["data"].key  # a source: "sample", "cifar10", a dataset's folder, or "folder"...
    FOLDER = "train_folder"  # ... and then the folder's path
    OPEN = "train_form_open"  # the "Start a new run" expander is open
    CLONED = "train_cloned_from"  # the run whose settings were just filled in
    PROBLEM = "train_clone_problem"  # why a run's settings could not be

    def __init__(self, state=None):
        self.state = st.session_state if state is None else state

    @classmethod
    def keys(cls) -> set[str]:
        """Every key of the form's values: what Clone fills and the widgets read."""
        return {s.key for s in FORM.values()} | {cls.RECIPE, cls.DATA, cls.FOLDER}

    # --- Filling the form -------------------------------------------------------------------

    @staticmethod
    def values(settings: dict) -> dict:
        """{widget key: value} for TrainConfig-like `settings` (a recipe's, or a run's config.json):
        every setting but the data (data_values) and the recipe. Raises ConfigError if invalid."""
        config = TrainConfig.from_dict({**settings, "data": settings.get("data") or "sample"})
        values = {}
        for path, s in FORM.items():
            value = _value(config, path)
            if value is None and s.unset:  # the default it stands for: the optimizer's, the variant's
                value = s.unset(_value(config, s.follows))
            values[s.key] = s.kind() if value is None else s.kind(value)
        return values

    @classmethod
    def data_values(cls, data: str) -> dict:
        if data in ("sample", "cifar10") or data in data_choices(with_download=True):
            return {cls.DATA: data}
        return {cls.DATA: "folder", cls.FOLDER: data}

    def use_recipe(self) -> None:
        """on_change of the recipe picker: every setting but the data takes the recipe's value."""
        recipe = RECIPES.get(self.state.get(self.RECIPE))
        if recipe is not None:
            self.state.update(self.values(recipe.settings))

    def clone(self, config: dict, run_id: str) -> None:
        """Fill the form with a run's settings and data (shown next time the Train page runs)."""
        try:
            state = self.values(config)
        except (ConfigError, TypeError, ValueError) as exc:
            self.state[self.PROBLEM] = str(exc)
            return
        state.update(self.data_values(self.cloned_data(config)))
        recipe = config.get("recipe")
        state[self.RECIPE] = recipe if recipe in RECIPES else CUSTOM
        state[self.OPEN] = True
        state[self.CLONED] = run_id
        self.state.update(state)

    @staticmethod
    def cloned_data(config: dict) -> str:
        """The data a clone trains on: the run's own, except a folder that is not on this machine
        holding CIFAR-10's ten classes (the bundled run trained on one elsewhere), which is CIFAR-10
        itself here, rather than a path from another machine."""
        from pathlib import Path

        data = config.get("data") or "sample"
        if data not in ("sample", "cifar10") and not Path(data).exists() \
                and tuple(config.get("class_names") or ()) == sources.CIFAR10_CLASSES:
            return "cifar10"
        return data

    def follow(self, path: str) -> None:
        """on_change of `path`'s widget: the settings that follow it take the value it implies (a
        new variant's own switches, a new optimizer's learning rate)."""
        value = self.state[FORM[path].key]
        self.state.update({s.key: s.kind(s.unset(value)) for s in FORM.values() if s.follows == path})

    # --- Reading it back --------------------------------------------------------------------

    def config(self, data: str, recipe: Recipe | None) -> TrainConfig:
        """The form's settings with `data`; ConfigError (a ValueError) naming a bad one."""
        fields, switches = {}, {}
        for path, s in FORM.items():
            value = self.state[s.key]
            if s.needs and not self.state.get(FORM[s.needs].key):
                value = s.kind()  # off without what it needs
            name, _, switch = path.partition(".")
            (switches if switch else fields)[switch or name] = None if s.optional and value == "" else s.kind(value)
        return TrainConfig(**fields, data=data, switches=switches, recipe=recipe.name if recipe else None)

    def changed_from(self, recipe: Recipe) -> list[str]:
        """The settings that differ from `recipe`'s, as 'epochs 4 → 10', in the form's order."""
        wanted = self.values(recipe.settings)
        changed = []
        for s in sorted(FORM.values(), key=lambda s: PARTS.index(s.place[0])):
            if s.key not in self.state or self.state[s.key] == wanted[s.key]:
                continue
            was, now = wanted[s.key], self.state[s.key]
            if s.choices and s.names:  # a choice with a name of its own: "removed convolution none → conv3"
                was, now = s.names(was), s.names(now)
            changed.append(f"{s.in_words} {was:g} → {now:g}" if isinstance(was, float) and isinstance(now, (int, float))
                           else f"{s.in_words} {was} → {now}")
        return changed

    # --- Drawing it -------------------------------------------------------------------------

    def draw(self) -> NewRun | None:
        """The form; its settings as a NewRun, or None (with a message) while they cannot start a run."""
        if FORM["variant"].key not in self.state:  # first visit: the data's first recipe fills the form
            data = self.state.setdefault(self.DATA, "cifar10" if sources.cifar10_available() else "sample")
            self.state.setdefault(self.RECIPE, FIRST_RECIPE.get(data, DEFAULT_RECIPE))
            self.state.update(self.values(RECIPES.get(self.state[self.RECIPE], RECIPES[DEFAULT_RECIPE]).settings))
        problem = self.state.pop(self.PROBLEM, None)
        if problem:
            st.error(f"That run's settings cannot be reused: {plain(problem, 400)}", icon=":material/error:")
        cloned = self.state.pop(self.CLONED, None)
        if cloned:
            st.success(f"Settings and data of {plain(cloned, 80)} filled in below: change what you like, then "
                       "start.", icon=":material/content_copy:")
        recipe, changed = self._recipe_picker()
        places = {"main": st.columns(3)}
        with st.expander("More settings", icon=":material/tune:"):
            places["more"] = st.columns(4)
            places["start"] = st.columns([2, 2])
        data, download, blocked = None, False, False
        self.prepared_data = False  # a prepared dataset picked: its splits are its own (no validation fraction)
        for path, s in each_setting().items():
            if s.widget == "data":
                data, download, blocked = self._data_picker(places["main"][s.place[1]])
            elif path in FORM:
                self._widget(path, s, places[s.place[0]][s.place[1]])
        if not data:
            st.info("Enter the path of an image folder: PATH/<class>/<image> or PATH/train/<class>/<image>.")
            return None
        try:
            config = self.config(data, recipe)
        except ValueError as exc:
            st.error(f"{plain(exc, 400)}. Change the setting above.", icon=":material/error:")
            return None
        return NewRun(config, recipe, changed, download, blocked)

    def _recipe_picker(self) -> tuple[Recipe | None, list[str]]:
        described = SETTINGS["recipe"]
        name = st.selectbox(described.label, [*RECIPES, CUSTOM], key=self.RECIPE, format_func=recipe_label,
                            on_change=self.use_recipe, help=described.tip)
        recipe = RECIPES.get(name)
        changed = self.changed_from(recipe) if recipe is not None else []
        if recipe is not None:
            st.caption(f"{recipe.description} Settings: {recipe.summary()}. Made for {recipe.made_for}. "
                       f"{recipe.result}")
            if changed:
                st.caption(":material/edit: Changed from the recipe: " + "; ".join(changed) + ".")
        return recipe, changed

    def _data_picker(self, where) -> tuple[str, bool, bool]:
        """(the source, whether CIFAR-10 must be downloaded, whether it cannot be)."""
        cached = sources.cifar10_available()
        labels = data_choices(with_download=True)
        if not cached:
            labels["cifar10"] = "CIFAR-10 (download, 170 MB)"
        self.state.setdefault(self.DATA, "cifar10" if cached else "sample")
        kind = where.radio(SETTINGS["data"].label, list(labels), format_func=labels.get, horizontal=True,
                           key=self.DATA)
        download = kind == "cifar10" and not cached
        blocked = download and not cifar10_can_download()
        if download and not blocked:
            where.caption("CIFAR-10 is not on this machine yet: the run downloads it first (170 MB, once; Keras "
                          f"keeps it in {CIFAR10_CACHE}).")
        elif blocked:
            where.warning("CIFAR-10 is not on this machine, and its download server cannot be reached from here. "
                          "Keras downloads it once (cifar-10-python.tar.gz, 170 MB, from www.cs.toronto.edu) and "
                          f"keeps it unpacked in {CIFAR10_CACHE}: connect this machine to the internet and pick "
                          "CIFAR-10 again, or copy that folder here from a machine that has it. A folder of class "
                          "subfolders (PATH/<class>/<image>) works too, as does the bundled sample.",
                          icon=":material/cloud_off:")
        if kind == "folder":
            kind = where.text_input("Folder", placeholder="/path/to/images (class folders inside, or a prepared "
                                    "dataset)", key=self.FOLDER).strip()
        described = prepared_description(kind) if kind not in ("sample", "cifar10") else None
        self.prepared_data = bool(described)
        if described:  # a prepared dataset: how it was made; its splits were fixed when it was prepared
            where.caption(f":material/inventory_2: {plain(described, 600)} Its splits are its own: the validation "
                          "fraction does not apply.")
        return kind, download, blocked

    def _widget(self, path: str, s: Setting, where) -> None:
        """One setting's widget, as its Setting describes it."""
        options = {"key": s.key, "help": s.tip}
        if any(other.follows == path for other in FORM.values()):
            options["on_change"] = functools.partial(self.follow, path)
        if s.widget == "selectbox":
            where.selectbox(s.label, s.offered(), format_func=s.names or str, **options)
        elif s.widget == "select_slider":  # the current value stays on the scale (a recipe's or a run's)
            where.select_slider(s.label, sorted({*s.offered(), s.kind(self.state[s.key])}), **options)
        elif s.widget == "number_input":
            where.number_input(s.label, *s.bounds, step=s.step, format=s.format, **options)
        elif s.widget == "slider":
            where.slider(s.label, *s.bounds, step=s.step,
                         disabled=path == "val_split" and getattr(self, "prepared_data", False), **options)
        elif s.widget == "toggle":
            where.toggle(s.label, disabled=bool(s.needs) and not self.state.get(FORM[s.needs].key), **options)
        elif s.widget == "model":
            starts = {"": "Random weights (from scratch)", **model_choices()}
            for name in imagenet_bases()[0]:  # installed ImageNet models: their features through fc7
                starts.setdefault(name, f"{name}: ImageNet features (224 px)")
            if self.state.get(s.key) not in starts:  # a cloned run's base that is not listed
                starts[self.state[s.key]] = self.state[s.key]
            where.selectbox(s.label, list(starts), format_func=starts.get, **options)
        else:
            raise ValueError(f"{path}: no widget {s.widget!r}")
        if s.notes:
            where.caption(s.notes[self.state[s.key]])
        if path == "variant" and device_info()["kind"] == "CPU" and self.state[s.key] not in CPU_FRIENDLY:
            where.caption(f":material/info: On a CPU, {cpu_friendly_variants()} train in minutes; ImageNet-sized "
                          "variants take hours.")
