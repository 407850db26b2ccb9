"""How the project's configuration is loaded (`settings.py`'s CONFIG_LOADER_ARGS), apart from the
settings so that a script reads `conf/` as a `kedro run` does without importing the hooks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kedro.config import OmegaConfigLoader

CONFIG_LOADER_ARGS: dict[str, Any] = {
    "base_env": "base",
    "default_run_env": "local",
    # An environment such as conf/erlangshen overrides single keys (model.max_length) without
    # repeating the whole `model` or `training` block.
    "merge_strategy": {"parameters": "soft", "globals": "soft"},
    # The parameters are also the globals, so that the catalog reads a path set as a parameter wherever
    # Kedro users set one: `raw_data_dir` in conf/base, conf/local/parameters.yml or another environment
    # (`${globals:raw_data_dir}`), and `--params` in front of them (`${runtime_params:raw_data_dir, ...}`).
    # (So a parameters file cannot use `${globals:...}` itself; it refers to other parameters directly.)
    "config_patterns": {"globals": ["globals.yml", "parameters*", "parameters*/**", "**/parameters*"]},
}


def load_parameters(conf_source: Path, env: str, changes: dict[str, Any]) -> dict[str, Any]:
    """The parameters a `kedro run --env <env>` reads from ``conf_source``, with ``changes`` as its
    runtime parameters (``--params``): for scripts that call the pipeline's nodes themselves."""
    arguments = {**CONFIG_LOADER_ARGS, "default_run_env": env}
    return OmegaConfigLoader(str(conf_source), **arguments, runtime_params=changes)["parameters"]
