"""Project settings: Kedro defaults except where noted."""

from kedro.config import OmegaConfigLoader

from sentence_reduction.tracking import FoldTrackingHooks

CONFIG_LOADER_CLASS = OmegaConfigLoader
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    # An environment such as conf/erlangshen overrides single keys (model.max_length) without
    # repeating the whole `model` or `training` block.
    "merge_strategy": {"parameters": "soft"},
}

HOOKS = (FoldTrackingHooks(),)
