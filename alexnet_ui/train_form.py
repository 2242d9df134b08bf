"""The Train page's settings form: its widget keys, filled from a recipe or a run."""

from __future__ import annotations

import streamlit as st

from alexnet_ui.loaders import data_choices

BATCH_SIZES = [16, 32, 64, 128, 256, 512]
DEFAULT_RECIPE = "quick"


def form_state(settings: dict) -> dict:
    """{widget key: value} of the Train form for TrainConfig-like `settings` (a recipe's, or a
    run's config.json). Data is not included: see data_state. Raises ConfigError if invalid."""
    from alexnet_core.models.variants import get_arch
    from alexnet_core.settings.config import TrainConfig

    config = TrainConfig.from_dict({**settings, "data": settings.get("data") or "sample"})
    arch = get_arch(config.variant)
    switches = config.switches
    return {
        "train_variant": config.variant, "train_epochs": int(config.epochs), "train_batch": int(config.batch_size),
        "train_optimizer": config.optimizer, "train_lr": float(config.lr), "train_schedule": config.schedule,
        "train_augment": config.augment, "train_warmup": float(config.warmup_epochs),
        "train_smoothing": float(config.label_smoothing), "train_decay": float(config.weight_decay),
        "train_seed": int(config.seed), "train_val_split": float(config.val_split),
        "train_mixed": config.mixed_precision, "train_norm": switches.get("norm", arch.norm),
        "train_dropout": float(switches.get("dropout", arch.dropout)),
        "train_width": float(switches.get("width", arch.width)),
        "train_init_from": config.init_from or "", "train_freeze": bool(config.freeze_features),
    }


def data_state(data: str) -> dict:
    if data in ("sample", "cifar10") or data in data_choices(with_download=True):
        return {"train_data_kind": data}
    return {"train_data_kind": "folder", "train_folder": data}


def apply_recipe() -> None:
    """on_change of the recipe picker: every setting but the data takes the recipe's value."""
    from alexnet_core.settings.recipes import RECIPES

    recipe = RECIPES.get(st.session_state.get("train_recipe"))
    if recipe is not None:
        st.session_state.update(form_state(recipe.settings))


def clone_settings(config: dict, run_id: str) -> None:
    """Fill the Train form with a run's settings and data (shown next time the Train page runs)."""
    from alexnet_core.settings.config import ConfigError
    from alexnet_core.settings.recipes import RECIPES

    try:
        state = form_state(config)
    except (ConfigError, TypeError, ValueError) as exc:
        st.session_state["train_clone_problem"] = str(exc)
        return
    state.update(data_state(config.get("data") or "sample"))
    recipe = config.get("recipe")
    state["train_recipe"] = recipe if recipe in RECIPES else "custom"
    state["train_form_open"] = True
    state["train_cloned_from"] = run_id
    st.session_state.update(state)
